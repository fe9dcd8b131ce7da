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
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Third-party platforms (第三方平台): WeChat pushes a component_verify_ticket
// to the platform's event URL every 10 minutes, encrypted with the
// platform's EncodingAESKey and signed with its message token; the
// platform trades the latest ticket and its secret for a
// component_access_token at POST /cgi-bin/component/api_component_token.
// Here the pushes are made on demand (ComponentPush, AuthorizedPush ...)
// and sent by the test, by Pusher, or by the periodic ticket push
// (Config.TicketPushURL). What a platform with many accounts needs (the
// authorizer list, rotation, faults, scale) is in platform.go.

// ComponentApp is a platform the emulator knows.
type ComponentApp struct {
	Secret string
	Token  string // the message token
	AESKey string // the 43-character EncodingAESKey
}

// ComponentPush builds a push of infoType for the platform appID, as
// WeChat would POST it to the event URL: the query (timestamp, nonce,
// encrypt_type, msg_signature) and the XML body, its CreateTime now. For
// component_verify_ticket it issues a new ticket, which
// api_component_token then accepts. sealedFor, if set, is the appid
// written inside the envelope instead of appID (a push for someone else).
func (s *Server) ComponentPush(appID, infoType string, fields map[string]string, sealedFor string) (url.Values, []byte, error) {
	return s.ComponentPushAt(appID, infoType, 0, fields, sealedFor)
}

// ComponentPushAt is ComponentPush with the push's CreateTime given (unix
// seconds; 0 is now), for tests of pushes that arrive late or out of
// order: a platform orders an account's authorization events by it.
func (s *Server) ComponentPushAt(appID, infoType string, createTime int64, fields map[string]string, sealedFor string) (url.Values, []byte, error) {
	s.mu.Lock()
	app, ok := s.cfg.Components[appID]
	if !ok {
		s.mu.Unlock()
		return nil, nil, fmt.Errorf("component push: unknown component %s", appID)
	}
	now := s.cfg.Now()
	if createTime == 0 {
		createTime = now.Unix()
	}
	var inner strings.Builder
	fmt.Fprintf(&inner, "<xml><AppId><![CDATA[%s]]></AppId><CreateTime>%d</CreateTime><InfoType><![CDATA[%s]]></InfoType>",
		appID, createTime, infoType)
	if infoType == "component_verify_ticket" {
		ticket := "ticket@@@" + newTokenValue(64)
		if s.platform.tickets == nil {
			s.platform.tickets = map[string][]string{}
		}
		s.platform.tickets[appID] = append(s.platform.tickets[appID], ticket)
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
		return nil, nil, fmt.Errorf("component push for %s: %w", appID, err)
	}
	timestamp, nonce := strconv.FormatInt(now.Unix(), 10), randomHex(10)
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
		return "", errors.New("bad EncodingAESKey: want 43 base64 characters")
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
		return "", fmt.Errorf("seal message: %w", err)
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
	if !slices.Contains(s.platform.tickets[req.AppID], req.Ticket) {
		wxError(w, jsonType, 61006, "component ticket is invalid")
		return
	}
	// The previous component token keeps working for the overlap.
	t := s.issueCurrentLocked(tokenKey{family: "component", appID: req.AppID})
	s.stats.ComponentIssued++
	writeJSON(w, jsonType, map[string]any{"component_access_token": t.value, "expires_in": s.expiresIn(t, s.cfg.Now())})
}

// AuthorizeAccount makes authorizerAppID authorize the platform now (it
// is listed by api_get_authorizer_list from then on) and returns the
// authorization code WeChat would push (InfoType authorized, field
// AuthorizationCode), good for one api_query_auth within AuthCodeTTL. An
// account that has authorized the platform already keeps its refresh
// token, as on a change of permissions (updateauthorized).
func (s *Server) AuthorizeAccount(componentAppID, authorizerAppID string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.authCodeLocked(componentAppID, authorizerAppID).value
}

// ImportAuthorizer records an account that authorized the platform before
// (outside the test) and returns its refresh token, as the platform's old
// system would hold it. A previous authorization of the account is
// replaced: its refresh token stops working.
func (s *Server) ImportAuthorizer(componentAppID, authorizerAppID string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.platform.authorize(componentAppID, authorizerAppID, s.cfg.Now(), true).refreshToken
}

// Unauthorize ends an account's authorization of the platform: its refresh
// token, its codes not yet exchanged and its tokens (for this platform;
// another platform's are untouched) stop working at once, and it is no
// longer listed.
func (s *Server) Unauthorize(componentAppID, authorizerAppID string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.unauthorizeLocked(componentAppID, authorizerAppID)
}

func (s *Server) unauthorizeLocked(componentAppID, authorizerAppID string) {
	s.platform.end(componentAppID, authorizerAppID)
	s.endTokensLocked(tokenKey{family: "authorizer", owner: componentAppID, appID: authorizerAppID})
}

// componentCaller checks the component_access_token of a platform's call;
// s.mu is held. It returns the platform's appid, or an errcode.
func (s *Server) componentCaller(r *http.Request) (string, int, string) {
	q := url.Values{"access_token": r.URL.Query()["component_access_token"]}
	if code, msg := s.checkToken(q); code != 0 {
		return "", code, msg
	}
	t := s.tokens[q.Get("access_token")]
	if t.family != "component" {
		// Another kind of token (an account's, say) is no platform's.
		return "", 40001, "invalid credential, access_token is invalid or not latest"
	}
	return t.appID, 0, ""
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

// issueAuthorizerLocked issues the platform's token for an account; s.mu
// is held. The platform's previous token for the account keeps working
// for the overlap; other platforms' tokens for it are untouched.
func (s *Server) issueAuthorizerLocked(componentAppID, authorizerAppID string) *token {
	s.stats.AuthorizerIssued++
	return s.issueCurrentLocked(tokenKey{family: "authorizer", owner: componentAppID, appID: authorizerAppID})
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
	delay := time.Duration(s.faults.QueryAuthDelay)
	answer, code, msg := s.exchangeCodeLocked(caller, req.AppID, req.Code)
	s.mu.Unlock()
	if delay > 0 {
		// WeChat being slow: the exchange is done (the code spent, the
		// account's token issued) whether or not the caller waits for it.
		timer := time.NewTimer(delay)
		select {
		case <-timer.C:
		case <-r.Context().Done():
		case <-s.closed:
		}
		timer.Stop()
	}
	if code != 0 {
		wxError(w, jsonType, code, msg)
		return
	}
	writeJSON(w, jsonType, answer)
}

// exchangeCodeLocked is api_query_auth's work; s.mu is held. It answers
// the fault's errcode spending nothing; a code that is not the caller's is
// refused and left to its owner; an expired code, or one whose
// authorization has ended since, is spent and refused.
func (s *Server) exchangeCodeLocked(caller, componentAppID, value string) (map[string]any, int, string) {
	if code := s.faults.QueryAuthErrcode; code != 0 {
		return nil, code, faultMessage(code)
	}
	c := s.platform.codes[value]
	if c == nil || c.component != caller || componentAppID != caller {
		return nil, 61010, "code is expired or invalid"
	}
	s.platform.spend(value)
	now := s.cfg.Now()
	a := s.platform.current(c.component, c.account)
	if !now.Before(c.expires) || a != c.auth {
		return nil, 61010, "code is expired or invalid"
	}
	t := s.issueAuthorizerLocked(c.component, c.account)
	return map[string]any{"authorization_info": map[string]any{
		"authorizer_appid": c.account, "authorizer_access_token": t.value, "expires_in": s.expiresIn(t, now),
		"authorizer_refresh_token": a.refreshToken, "func_info": []any{},
	}}, 0, ""
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
	if code := s.faults.AuthorizerTokenErrcode; code != 0 {
		wxError(w, jsonType, code, faultMessage(code))
		return
	}
	a := s.platform.current(caller, req.Authorizer)
	if req.AppID != caller || a == nil || a.refreshToken != req.RefreshToken {
		wxError(w, jsonType, 61023, "refresh_token is invalid")
		return
	}
	t := s.issueAuthorizerLocked(caller, req.Authorizer)
	if s.cfg.RotateRefreshTokens || s.faults.RotateRefreshTokens {
		// The refresh token just used is spent: only the new one works.
		s.platform.rotate(a)
	}
	writeJSON(w, jsonType, map[string]any{
		"authorizer_access_token": t.value, "expires_in": s.expiresIn(t, s.cfg.Now()), "authorizer_refresh_token": a.refreshToken,
	})
}

// IssuedPlatformSecrets lists the component_verify_tickets, authorization
// codes (exchanged or not), pre-auth codes and authorizer refresh tokens
// (rotated out or ended included) handed out, for tests that check none
// is logged.
func (s *Server) IssuedPlatformSecrets() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := slices.Clone(s.platform.retired)
	for _, tickets := range s.platform.tickets {
		out = append(out, tickets...)
	}
	for code := range s.platform.codes {
		out = append(out, code)
	}
	for _, accounts := range s.platform.accounts {
		for _, a := range accounts.byAppID {
			out = append(out, a.refreshToken)
		}
	}
	return out
}
