package emulator

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha1"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
)

// Third-party platforms (第三方平台): WeChat pushes a component_verify_ticket
// to the platform's event URL every 10 minutes, encrypted with the
// platform's EncodingAESKey and signed with its message token; the
// platform trades the latest ticket and its secret for a
// component_access_token at POST /cgi-bin/component/api_component_token.
// Here the pushes are made on demand (ComponentPush) and sent by the test.

// ComponentApp is a platform the emulator knows.
type ComponentApp struct {
	Secret string
	Token  string // the message token
	AESKey string // the 43-character EncodingAESKey
}

// ComponentPush builds a push of infoType for the platform appID, as
// WeChat would POST it to the event URL: the query (timestamp, nonce,
// encrypt_type, msg_signature) and the XML body. For
// component_verify_ticket it issues a new ticket, which
// api_component_token then accepts. sealedFor, if set, is the appid
// written inside the envelope instead of appID (a push for someone else).
func (s *Server) ComponentPush(appID, infoType string, fields map[string]string, sealedFor string) (url.Values, []byte, error) {
	s.mu.Lock()
	app, ok := s.cfg.Components[appID]
	if !ok {
		s.mu.Unlock()
		return nil, nil, fmt.Errorf("unknown component %s", appID)
	}
	var inner strings.Builder
	fmt.Fprintf(&inner, "<xml><AppId><![CDATA[%s]]></AppId><CreateTime>%d</CreateTime><InfoType><![CDATA[%s]]></InfoType>",
		appID, s.cfg.Now().Unix(), infoType)
	if infoType == "component_verify_ticket" {
		ticket := "ticket@@@" + newTokenValue(64)
		if s.verifyTickets == nil {
			s.verifyTickets = map[string][]string{}
		}
		s.verifyTickets[appID] = append(s.verifyTickets[appID], ticket)
		fmt.Fprintf(&inner, "<ComponentVerifyTicket><![CDATA[%s]]></ComponentVerifyTicket>", ticket)
	}
	keys := make([]string, 0, len(fields))
	for k := range fields {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		fmt.Fprintf(&inner, "<%s><![CDATA[%s]]></%s>", k, fields[k], k)
	}
	inner.WriteString("</xml>")
	s.mu.Unlock()
	if sealedFor == "" {
		sealedFor = appID
	}
	encrypted, err := SealMessage(app.AESKey, []byte(inner.String()), sealedFor)
	if err != nil {
		return nil, nil, err
	}
	timestamp, nonce := strconv.FormatInt(s.cfg.Now().Unix(), 10), randomHex(10)
	parts := []string{app.Token, timestamp, nonce, encrypted}
	sort.Strings(parts)
	sum := sha1.Sum([]byte(strings.Join(parts, "")))
	q := url.Values{"timestamp": {timestamp}, "nonce": {nonce}, "encrypt_type": {"aes"}, "msg_signature": {hex.EncodeToString(sum[:])}}
	body := fmt.Sprintf("<xml><AppId><![CDATA[%s]]></AppId><Encrypt><![CDATA[%s]]></Encrypt></xml>", appID, encrypted)
	return q, []byte(body), nil
}

// SealMessage encrypts msg for appID as WeChat does: 16 random bytes, the
// length (4 bytes, big-endian), the message and the appid, PKCS#7-padded
// to 32 bytes, AES-256-CBC with the key's first 16 bytes as IV.
func SealMessage(aesKey string, msg []byte, appID string) (string, error) {
	key, err := base64.StdEncoding.DecodeString(aesKey + "=")
	if err != nil || len(key) != 32 {
		return "", fmt.Errorf("bad EncodingAESKey")
	}
	var plain bytes.Buffer
	random := make([]byte, 16)
	_, _ = io.ReadFull(rand.Reader, random)
	plain.Write(random)
	_ = binary.Write(&plain, binary.BigEndian, uint32(len(msg)))
	plain.Write(msg)
	plain.WriteString(appID)
	pad := 32 - plain.Len()%32
	plain.Write(bytes.Repeat([]byte{byte(pad)}, pad))
	block, err := aes.NewCipher(key)
	if err != nil {
		return "", err
	}
	out := make([]byte, plain.Len())
	cipher.NewCBCEncrypter(block, key[:16]).CryptBlocks(out, plain.Bytes())
	return base64.StdEncoding.EncodeToString(out), nil
}

func (s *Server) serveComponentToken(w http.ResponseWriter, r *http.Request) {
	var req struct {
		AppID  string `json:"component_appid"`
		Secret string `json:"component_appsecret"`
		Ticket string `json:"component_verify_ticket"`
	}
	s.mu.Lock()
	s.stats.ComponentCalls++
	fault := s.faults.TokenEndpoint
	s.mu.Unlock()
	if s.tokenFault(w, r, fault) {
		return
	}
	if err := json.NewDecoder(io.LimitReader(r.Body, 4096)).Decode(&req); err != nil {
		wxError(w, jsonType, 47001, "data format error")
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	app, ok := s.cfg.Components[req.AppID]
	switch {
	case !ok:
		wxError(w, jsonType, 40013, "invalid appid")
		return
	case req.Secret != app.Secret:
		wxError(w, jsonType, 40125, "invalid appsecret")
		return
	}
	known := false
	for _, t := range s.verifyTickets[req.AppID] {
		known = known || t == req.Ticket
	}
	if !known {
		wxError(w, jsonType, 61006, "component ticket is invalid")
		return
	}
	now := s.cfg.Now()
	for _, t := range s.tokens {
		// The previous component token keeps working for the overlap.
		if t.appID == req.AppID && t.family == "component" && (t.revoked.IsZero() || now.Add(s.cfg.Overlap).Before(t.revoked)) {
			t.revoked = now.Add(s.cfg.Overlap)
		}
	}
	t := s.issue(req.AppID, "component", now)
	s.stats.ComponentIssued++
	writeJSON(w, jsonType, map[string]any{"component_access_token": t.value, "expires_in": s.expiresIn(t, now)})
}

// authorization is an account's authorization of a platform.
type authorization struct {
	refreshToken string
	revoked      bool
}

// AuthorizeAccount makes authorizerAppID authorize the platform and
// returns the authorization code WeChat would push (InfoType authorized,
// field AuthorizationCode), good for one api_query_auth.
func (s *Server) AuthorizeAccount(componentAppID, authorizerAppID string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	code := "queryauthcode@@@" + newTokenValue(40)
	if s.authCodes == nil {
		s.authCodes = map[string][2]string{}
	}
	s.authCodes[code] = [2]string{componentAppID, authorizerAppID}
	return code
}

// ImportAuthorizer records an account that authorized the platform before
// (outside the test) and returns its refresh token, as the platform's old
// system would hold it.
func (s *Server) ImportAuthorizer(componentAppID, authorizerAppID string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.authorizeLocked(componentAppID, authorizerAppID)
}

func (s *Server) authorizeLocked(componentAppID, authorizerAppID string) string {
	if s.authorizations == nil {
		s.authorizations = map[[2]string]*authorization{}
	}
	a := &authorization{refreshToken: "refreshtoken@@@" + newTokenValue(40)}
	s.authorizations[[2]string{componentAppID, authorizerAppID}] = a
	return a.refreshToken
}

// Unauthorize ends an account's authorization: its refresh token and
// tokens stop working.
func (s *Server) Unauthorize(componentAppID, authorizerAppID string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if a := s.authorizations[[2]string{componentAppID, authorizerAppID}]; a != nil {
		a.revoked = true
	}
	now := s.cfg.Now()
	for _, t := range s.tokens {
		if t.appID == authorizerAppID && t.family == "authorizer" && t.revoked.IsZero() {
			t.revoked = now
		}
	}
}

// componentCaller checks the component_access_token of a platform's call;
// s.mu is held. It returns the platform's appid, or an errcode.
func (s *Server) componentCaller(r *http.Request) (string, int, string) {
	q := url.Values{"access_token": r.URL.Query()["component_access_token"]}
	if code, msg := s.checkToken(q); code != 0 {
		return "", code, msg
	}
	return s.tokens[q.Get("access_token")].appID, 0, ""
}

// platformCall reads a platform's JSON call into req, counts it, and
// checks its component_access_token, answering the error if it fails.
func (s *Server) platformCall(w http.ResponseWriter, r *http.Request, req any, counter *int) (caller string, ok bool) {
	_ = json.NewDecoder(io.LimitReader(r.Body, 4096)).Decode(req)
	s.mu.Lock()
	defer s.mu.Unlock()
	*counter++
	caller, code, msg := s.componentCaller(r)
	if code != 0 {
		wxError(w, jsonType, code, msg)
		return "", false
	}
	return caller, true
}

// issueAuthorizerLocked issues a token for an account; s.mu is held.
func (s *Server) issueAuthorizerLocked(authorizerAppID string) *token {
	now := s.cfg.Now()
	for _, t := range s.tokens {
		if t.appID == authorizerAppID && t.family == "authorizer" && (t.revoked.IsZero() || now.Add(s.cfg.Overlap).Before(t.revoked)) {
			t.revoked = now.Add(s.cfg.Overlap)
		}
	}
	s.stats.AuthorizerIssued++
	return s.issue(authorizerAppID, "authorizer", now)
}

func (s *Server) serveQueryAuth(w http.ResponseWriter, r *http.Request) {
	var req struct {
		AppID string `json:"component_appid"`
		Code  string `json:"authorization_code"`
	}
	caller, ok := s.platformCall(w, r, &req, &s.stats.QueryAuthCalls)
	if !ok {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	pair, ok := s.authCodes[req.Code]
	if !ok || pair[0] != caller || req.AppID != caller {
		wxError(w, jsonType, 61010, "code is expired or invalid")
		return
	}
	delete(s.authCodes, req.Code)
	refresh := s.authorizeLocked(pair[0], pair[1])
	t := s.issueAuthorizerLocked(pair[1])
	writeJSON(w, jsonType, map[string]any{"authorization_info": map[string]any{
		"authorizer_appid": pair[1], "authorizer_access_token": t.value, "expires_in": s.expiresIn(t, s.cfg.Now()),
		"authorizer_refresh_token": refresh, "func_info": []any{},
	}})
}

func (s *Server) serveAuthorizerToken(w http.ResponseWriter, r *http.Request) {
	var req struct {
		AppID        string `json:"component_appid"`
		Authorizer   string `json:"authorizer_appid"`
		RefreshToken string `json:"authorizer_refresh_token"`
	}
	caller, ok := s.platformCall(w, r, &req, &s.stats.AuthorizerCalls)
	if !ok {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	a := s.authorizations[[2]string{caller, req.Authorizer}]
	if req.AppID != caller || a == nil || a.revoked || a.refreshToken != req.RefreshToken {
		wxError(w, jsonType, 61023, "refresh_token is invalid")
		return
	}
	t := s.issueAuthorizerLocked(req.Authorizer)
	writeJSON(w, jsonType, map[string]any{
		"authorizer_access_token": t.value, "expires_in": s.expiresIn(t, s.cfg.Now()), "authorizer_refresh_token": a.refreshToken,
	})
}

// IssuedPlatformSecrets lists the component_verify_tickets, authorization
// codes and authorizer refresh tokens handed out, for tests that check
// none is logged.
func (s *Server) IssuedPlatformSecrets() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for _, tickets := range s.verifyTickets {
		out = append(out, tickets...)
	}
	for code := range s.authCodes {
		out = append(out, code)
	}
	for _, a := range s.authorizations {
		out = append(out, a.refreshToken)
	}
	return out
}
