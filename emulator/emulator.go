// Package emulator is a stand-in for WeChat's server API (api.weixin.qq.com)
// for tests, demos and CI: both token endpoints with WeChat's rules for
// issuing and invalidating tokens, token checks on every other call, JSON and
// binary endpoints, WeChat's unreliable content types, and fault modes. All
// of WeChat's durations are options, so hours of token life fit in seconds.
//
// It is a test double: it never holds real credentials and must not be
// exposed beyond the machine it runs on.
package emulator

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/url"
	"path"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Config describes the emulated WeChat. Zero values take WeChat's own.
type Config struct {
	// Apps maps each AppID to its AppSecret.
	Apps map[string]string
	// TokenTTL is the lifetime of a new token (WeChat: 7200 s). Rounded
	// down to whole seconds in expires_in, as WeChat does.
	TokenTTL time.Duration
	// Overlap is how long a classic token stays valid after the next one
	// is issued (WeChat: about 5 minutes).
	Overlap time.Duration
	// StableWindow is the end part of a stable token's life during which
	// stable_token hands out the next token (WeChat: 5 minutes).
	StableWindow time.Duration
	// Components are the third-party platforms it knows, by component_appid.
	Components map[string]ComponentApp
	// RotateRefreshTokens makes api_authorizer_token hand out a new
	// refresh token each call, ending the previous one (see platform.go).
	RotateRefreshTokens bool
	// AuthCodeTTL is how long an authorization code can be exchanged
	// (WeChat: 10 minutes).
	AuthCodeTTL time.Duration
	// TicketPushURL, if set, is the event URL a component_verify_ticket is
	// pushed to for every platform, at start and then every
	// TicketPushInterval (WeChat: 10 minutes), until Close.
	TicketPushURL      string
	TicketPushInterval time.Duration
	// Logf, if set, is told what background work (the ticket push) did.
	Logf func(format string, args ...any)
	// Corps are the WeCom corps it knows: corp ID to its apps' secrets.
	Corps map[string][]string
	// TicketTTL is the lifetime of JS-SDK tickets (default: TokenTTL).
	TicketTTL time.Duration
	// TokenLength is the length of issued tokens (WeChat: about 136 now,
	// up to 512 announced).
	TokenLength int
	// ClassicDailyQuota is how many /cgi-bin/token calls an app may make
	// before 45009 (WeChat: 2000).
	ClassicDailyQuota int
	// ForceMinInterval and ForceDailyQuota limit force_refresh (WeChat: 30 s
	// apart, 20 a day).
	ForceMinInterval time.Duration
	ForceDailyQuota  int
	// NoCompression keeps answers uncompressed whatever the client
	// accepts. WeChat compresses when asked (the default here too); a test
	// under load may turn it off, since compressing and decompressing every
	// answer with the race detector on cut its throughput four times.
	NoCompression bool
	// Now is the time source (time.Now by default).
	Now func() time.Time
}

// Fault modes of the token endpoints, for Faults.TokenEndpoint.
const (
	FaultNone        = ""
	FaultBusy        = "busy"         // errcode -1, system busy
	FaultHTTP503     = "http_503"     // HTTP 503 with an HTML page
	FaultGarbage     = "garbage"      // HTTP 200, not JSON
	FaultHang        = "hang"         // never answers (until the client gives up)
	FaultIPWhitelist = "ip_whitelist" // errcode 40164 naming the caller's IP
	FaultHTML        = "html"         // HTTP 200 with an HTML page (a proxy's or firewall's)
	FaultEmpty       = "empty"        // HTTP 200 with an empty body
	FaultSlow        = "slow"         // answers normally, after a second
	FaultReset       = "reset"        // the connection is reset halfway through the answer
	// The token is issued, but expires_in is 0, negative, absurdly large,
	// or missing from the answer.
	FaultExpiresZero     = "expires_zero"
	FaultExpiresNegative = "expires_negative"
	FaultExpiresHuge     = "expires_huge"
	FaultExpiresMissing  = "expires_missing"
)

// Fault modes of the API calls, for Faults.API.
const (
	// /cgi-bin/media/get sends half the media, then resets the connection.
	FaultResetMidBody = "reset_mid_body"
	// Calls whose token is refused get the error cut off mid-JSON, the
	// connection closed after it.
	FaultTruncatedJSON = "truncated_json"
	// Calls whose token is refused get the error labelled text/html.
	FaultRejectedAsHTML = "rejected_as_html"
)

// Faults switch on misbehaviour.
type Faults struct {
	// TokenEndpoint makes both token endpoints fail this way.
	TokenEndpoint string `json:"token_endpoint,omitempty"`
	// RejectAll makes every API call answer 40001, whatever its token.
	RejectAll bool `json:"reject_all,omitempty"`
	// API makes API calls fail this way (FaultResetMidBody ...).
	API string `json:"api,omitempty"`
	// StableStale makes normal-mode stable_token hand back the current
	// token even after it was revoked, until its expiry: WeChat holds a
	// token current that its APIs reject, and only force_refresh replaces it.
	StableStale bool `json:"stable_stale,omitempty"`
	// Third-party platform faults (platform.go): api_query_auth answers
	// after QueryAuthDelay (the code spent at the start of the call), or
	// answers QueryAuthErrcode spending nothing; api_authorizer_token and
	// api_get_authorizer_list answer their errcode; RotateRefreshTokens
	// as Config's.
	QueryAuthDelay         Duration `json:"query_auth_delay,omitempty"`
	QueryAuthErrcode       int      `json:"query_auth_errcode,omitempty"`
	AuthorizerTokenErrcode int      `json:"authorizer_token_errcode,omitempty"`
	AuthorizerListErrcode  int      `json:"authorizer_list_errcode,omitempty"`
	RotateRefreshTokens    bool     `json:"rotate_refresh_tokens,omitempty"`
}

// Stats counts what the emulator saw. Tests assert on these.
type Stats struct {
	TokenCalls    int            `json:"token_calls"`        // calls to /cgi-bin/token
	StableCalls   int            `json:"stable_token_calls"` // calls to /cgi-bin/stable_token
	ClassicIssued int            `json:"classic_issued"`     // new classic tokens
	StableIssued  int            `json:"stable_issued"`      // new stable tokens, forced ones included
	ForcedIssued  int            `json:"forced_issued"`      // new stable tokens from force_refresh
	IssuedByApp   map[string]int `json:"issued_by_app"`      // new tokens, both APIs
	APICalls      int            `json:"api_calls"`          // calls to anything else
	APIRejected   map[int]int    `json:"api_rejected"`       // API calls refused, by errcode
	APIOK         int            `json:"api_ok"`             // API calls answered with success
	TicketCalls   int            `json:"ticket_calls"`       // calls to /cgi-bin/ticket/getticket
	TicketsIssued int            `json:"tickets_issued"`     // jsapi_tickets handed out
	SecretCalls   int            `json:"secret_calls"`       // jscode2session and OAuth code exchanges
	WeComCalls    int            `json:"wecom_token_calls"`  // calls to WeCom's /cgi-bin/gettoken
	WeComIssued   int            `json:"wecom_issued"`       // new WeCom tokens
	// Calls to api_component_token, and component_access_tokens issued.
	ComponentCalls  int `json:"component_token_calls"`
	ComponentIssued int `json:"component_issued"`
	// Calls to api_query_auth and api_authorizer_token, and authorizer
	// tokens issued.
	QueryAuthCalls   int `json:"query_auth_calls"`
	AuthorizerCalls  int `json:"authorizer_token_calls"`
	AuthorizerIssued int `json:"authorizer_issued"`
	// Calls to api_get_authorizer_list, and the periodic ticket pushes
	// (Config.TicketPushURL) accepted and not accepted.
	AuthorizerListCalls int `json:"authorizer_list_calls"`
	TicketPushes        int `json:"ticket_pushes"`
	TicketPushFailures  int `json:"ticket_push_failures"`
}

// Issued is the total of new tokens handed out.
func (s Stats) Issued() int { return s.ClassicIssued + s.StableIssued + s.WeComIssued }

type token struct {
	value    string
	appID    string
	family   string // "classic" or "stable"
	expires  time.Time
	revoked  time.Time // zero unless invalidated before expiry
	issuedAt time.Time
	// component is the platform an authorizer token was issued to: one
	// account has a token per platform.
	component string
}

// deadline is when the token stops working and whether that is expiry.
func (t *token) deadline() (time.Time, bool) {
	if !t.revoked.IsZero() && t.revoked.Before(t.expires) {
		return t.revoked, false
	}
	return t.expires, true
}

type app struct {
	secret       string
	classic      *token
	stable       *token
	classicCalls int
	forced       []time.Time
}

// Server is the emulator; it is an http.Handler.
type Server struct {
	cfg  Config
	mu   sync.Mutex
	apps map[string]*app
	// tokens holds every token ever issued, by value.
	tokens map[string]*token
	// tickets holds every jsapi_ticket issued, by value.
	tickets map[string]*ticket
	// platform is the third-party platforms' state (platform.go).
	platform platformState
	// corpApps are the WeCom apps that asked for a token, by corp and secret.
	corpApps map[string]*corpApp
	// codes are the login codes LoginCode issued; sessions the session
	// keys and user tokens their exchange handed out.
	codes          map[string]*loginCode
	sessions       []string
	lastSecretCall SecretCall
	faults         Faults
	stats          Stats
	closed         chan struct{}
	once           sync.Once
	// pushes is the MessagePusher of the message push control endpoints
	// (messages_control.go).
	pushes MessagePusher
}

// New returns an emulator for cfg.
func New(cfg Config) *Server {
	if cfg.TokenTTL <= 0 {
		cfg.TokenTTL = 7200 * time.Second
	}
	if cfg.Overlap <= 0 {
		cfg.Overlap = 5 * time.Minute
	}
	if cfg.StableWindow <= 0 {
		cfg.StableWindow = 5 * time.Minute
	}
	if cfg.TicketTTL <= 0 {
		cfg.TicketTTL = cfg.TokenTTL
	}
	if cfg.TokenLength <= 0 {
		cfg.TokenLength = 136
	}
	if cfg.ClassicDailyQuota <= 0 {
		cfg.ClassicDailyQuota = 2000
	}
	if cfg.ForceMinInterval <= 0 {
		cfg.ForceMinInterval = 30 * time.Second
	}
	if cfg.ForceDailyQuota <= 0 {
		cfg.ForceDailyQuota = 20
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	s := &Server{cfg: cfg, apps: map[string]*app{}, tokens: map[string]*token{}, closed: make(chan struct{})}
	for id, secret := range cfg.Apps {
		s.apps[id] = &app{secret: secret}
	}
	s.stats = newStats()
	s.startTicketPush()
	return s
}

func newStats() Stats {
	return Stats{IssuedByApp: map[string]int{}, APIRejected: map[int]int{}}
}

// Close releases requests held by the "hang" fault and stops the ticket
// push, returning once it has stopped.
func (s *Server) Close() {
	s.once.Do(func() { close(s.closed) })
	s.platform.loops.Wait()
}

// Stats returns a copy of the counters.
func (s *Server) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := s.stats
	c.IssuedByApp = map[string]int{}
	for k, v := range s.stats.IssuedByApp {
		c.IssuedByApp[k] = v
	}
	c.APIRejected = map[int]int{}
	for k, v := range s.stats.APIRejected {
		c.APIRejected[k] = v
	}
	return c
}

// ResetStats zeroes the counters and the daily quotas.
func (s *Server) ResetStats() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.stats = newStats()
	s.pushes.ResetStats()
	for _, a := range s.apps {
		a.classicCalls = 0
		a.forced = nil
	}
}

// SetFaults replaces the active fault modes.
func (s *Server) SetFaults(f Faults) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults = f
}

// Revoke invalidates every token of appID at once, as resetting the
// AppSecret or another system's force_refresh would.
func (s *Server) Revoke(appID string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.cfg.Now()
	for _, t := range s.tokens {
		if t.appID == appID && t.revoked.IsZero() {
			t.revoked = now
		}
	}
}

// Issuance is one token handed out.
type Issuance struct {
	At     time.Time
	Family string // "classic" or "stable"
}

// History lists the tokens issued to appID, oldest first, so that a test
// can tell renewals from refreshes.
func (s *Server) History(appID string) []Issuance {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []Issuance
	for _, t := range s.tokens {
		if t.appID == appID {
			out = append(out, Issuance{At: t.issuedAt, Family: t.family})
		}
	}
	slices.SortFunc(out, func(a, b Issuance) int { return a.At.Compare(b.At) })
	return out
}

// IssuedTokens lists every token ever issued, so tests can check that none
// leaks into logs.
func (s *Server) IssuedTokens() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]string, 0, len(s.tokens))
	for v := range s.tokens {
		out = append(out, v)
	}
	slices.Sort(out)
	return out
}

// ServeHTTP routes to the token endpoints, the control endpoints under
// /_emulator/, or the emulated API.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	p := path.Clean("/" + r.URL.Path)
	if !s.cfg.NoCompression && acceptsGzip(r) && !strings.HasPrefix(p, "/_emulator/") {
		gz := newGzipWriter(w)
		defer gz.close()
		w = gz
	}
	// Routed as WeChat's front servers would: on the cleaned path.
	switch {
	case p == "/cgi-bin/token":
		s.serveClassic(w, r)
	case p == "/cgi-bin/stable_token":
		s.serveStable(w, r)
	case p == "/cgi-bin/component/api_component_token":
		s.serveComponentToken(w, r)
	case p == "/cgi-bin/component/api_query_auth":
		s.serveQueryAuth(w, r)
	case p == "/cgi-bin/component/api_authorizer_token":
		s.serveAuthorizerToken(w, r)
	case p == "/cgi-bin/component/api_get_authorizer_list" && r.Method == http.MethodPost:
		s.serveAuthorizerList(w, r)
	case p == "/cgi-bin/gettoken":
		s.serveWeComToken(w, r)
	case p == "/cgi-bin/ticket/getticket" || p == "/cgi-bin/get_jsapi_ticket":
		s.serveTicket(w, r)
	case strings.HasPrefix(p, "/_emulator/"):
		s.serveControl(w, r)
	case p == "/sns/jscode2session":
		s.serveCodeExchange(w, r, false)
	case p == "/sns/oauth2/access_token":
		s.serveCodeExchange(w, r, true)
	case strings.HasPrefix(p, "/sns/"):
		// OAuth calls carry the user's token, which is not modelled: echo.
		s.serveEcho(w, r)
	default:
		s.serveAPI(w, r)
	}
}

const jsonType = "application/json; encoding=utf-8"

func writeJSON(w http.ResponseWriter, contentType string, v any) {
	body, _ := json.Marshal(v)
	w.Header().Set("Content-Type", contentType)
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	_, _ = w.Write(body)
}

// wxError answers like WeChat: HTTP 200, errcode and errmsg with a rid.
func wxError(w http.ResponseWriter, contentType string, code int, msg string) {
	writeJSON(w, contentType, map[string]any{"errcode": code, "errmsg": msg + " rid: " + randomHex(12)})
}

// tokenFault answers per the active fault mode; it reports whether it did.
func (s *Server) tokenFault(w http.ResponseWriter, r *http.Request, fault string) bool {
	switch fault {
	case FaultBusy:
		wxError(w, jsonType, -1, "system error")
	case FaultHTTP503:
		w.Header().Set("Content-Type", "text/html")
		w.WriteHeader(http.StatusServiceUnavailable)
		_, _ = io.WriteString(w, "<html><body><h1>503 Service Temporarily Unavailable</h1></body></html>")
	case FaultGarbage:
		w.Header().Set("Content-Type", "text/plain")
		_, _ = io.WriteString(w, "\x00\x01 this is not json")
	case FaultSlow:
		select {
		case <-time.After(time.Second):
		case <-r.Context().Done():
		case <-s.closed:
		}
		return false // then answers as usual
	case FaultHang:
		select {
		case <-r.Context().Done():
		case <-s.closed:
		}
	case FaultHTML:
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		_, _ = io.WriteString(w, "<!DOCTYPE html><html><head><title>Access denied</title></head><body>blocked by firewall</body></html>")
	case FaultEmpty:
		w.Header().Set("Content-Type", jsonType)
		w.Header().Set("Content-Length", "0")
		w.WriteHeader(http.StatusOK)
	case FaultReset:
		hijackAndWrite(w, []byte("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 200\r\n\r\n{\"access_token\":\"ACCESS_TOKEN_CUT_SH"), true)
	case FaultIPWhitelist:
		ip := callerIP(r)
		wxError(w, jsonType, 40164, fmt.Sprintf("invalid ip %s ipv6 ::ffff:%s, not in whitelist", ip, ip))
	default:
		return false
	}
	return true
}

// tokenCallAnswered counts a token endpoint call and answers it if a fault
// mode is on.
func (s *Server) tokenCallAnswered(w http.ResponseWriter, r *http.Request, counter *int) bool {
	s.mu.Lock()
	*counter++
	fault := s.faults.TokenEndpoint
	s.mu.Unlock()
	return s.tokenFault(w, r, fault)
}

func (s *Server) serveClassic(w http.ResponseWriter, r *http.Request) {
	if s.tokenCallAnswered(w, r, &s.stats.TokenCalls) {
		return
	}
	if r.Method != http.MethodGet {
		wxError(w, jsonType, 43001, "require GET method")
		return
	}
	q := r.URL.Query()
	if q.Get("grant_type") != "client_credential" {
		wxError(w, jsonType, 40002, "invalid grant_type")
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	a, code, msg := s.authenticate(q.Get("appid"), q.Get("secret"))
	if a == nil {
		wxError(w, jsonType, code, msg)
		return
	}
	if a.classicCalls >= s.cfg.ClassicDailyQuota {
		wxError(w, jsonType, 45009, "reach max api daily quota limit")
		return
	}
	a.classicCalls++
	now := s.cfg.Now()
	if prev := a.classic; prev != nil {
		// The previous token keeps working for the overlap, no longer.
		if end := now.Add(s.cfg.Overlap); prev.revoked.IsZero() || end.Before(prev.revoked) {
			prev.revoked = end
		}
	}
	t := s.issue(q.Get("appid"), "classic", now)
	a.classic = t
	s.stats.ClassicIssued++
	s.writeToken(w, t, now)
}

// writeToken answers a token endpoint call with t; s.mu must be held. The
// expires_in fault modes garble the answer but not the token.
func (s *Server) writeToken(w http.ResponseWriter, t *token, now time.Time) {
	answer := map[string]any{"access_token": t.value, "expires_in": s.expiresIn(t, now)}
	switch s.faults.TokenEndpoint {
	case FaultExpiresZero:
		answer["expires_in"] = 0
	case FaultExpiresNegative:
		answer["expires_in"] = -7200
	case FaultExpiresHuge:
		answer["expires_in"] = int64(math.MaxInt64 / 2)
	case FaultExpiresMissing:
		delete(answer, "expires_in")
	}
	writeJSON(w, jsonType, answer)
}

// tokenError answers a call whose token was refused, garbled as the API
// fault mode says.
func (s *Server) tokenError(w http.ResponseWriter, r *http.Request, contentType string, code int, msg, apiFault string) {
	switch apiFault {
	case FaultRejectedAsHTML:
		wxError(w, "text/html", code, msg)
	case FaultTruncatedJSON:
		_, _ = io.Copy(io.Discard, r.Body)
		full, _ := json.Marshal(map[string]any{"errcode": code, "errmsg": msg + " rid: 5f0c1d2e-fault"})
		// The body ends where the connection does, mid-JSON.
		hijackAndWrite(w, append([]byte("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n"), full[:len(full)/2]...), false)
	default:
		wxError(w, contentType, code, msg)
	}
}

// hijackAndWrite writes raw bytes on the connection, then closes it; with
// reset, abortively (TCP RST), as a failing middlebox would.
func hijackAndWrite(w http.ResponseWriter, raw []byte, reset bool) {
	hijackAndCopy(w, bytes.NewReader(raw), reset)
}

func hijackAndCopy(w http.ResponseWriter, raw io.Reader, reset bool) {
	conn, buf, err := http.NewResponseController(w).Hijack()
	if err != nil {
		return
	}
	_, _ = io.Copy(buf, raw)
	_ = buf.Flush()
	if tcp, ok := conn.(*net.TCPConn); ok && reset {
		_ = tcp.SetLinger(0)
	}
	_ = conn.Close()
}

// serveMediaReset promises all of media_id "bytes-N", sends half, and
// resets the connection.
func (s *Server) serveMediaReset(w http.ResponseWriter, mediaID string) {
	n, ok := mediaSize(mediaID)
	if !ok || n < 2 {
		wxError(w, "text/plain", 40007, "invalid media_id")
		return
	}
	head := fmt.Sprintf("HTTP/1.1 200 OK\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n", n)
	hijackAndCopy(w, io.MultiReader(strings.NewReader(head), io.LimitReader(MediaPattern(), n/2)), true)
}

func (s *Server) serveStable(w http.ResponseWriter, r *http.Request) {
	if s.tokenCallAnswered(w, r, &s.stats.StableCalls) {
		return
	}
	if r.Method != http.MethodPost {
		wxError(w, jsonType, 43002, "require POST method")
		return
	}
	var req struct {
		GrantType    string `json:"grant_type"`
		AppID        string `json:"appid"`
		Secret       string `json:"secret"`
		ForceRefresh bool   `json:"force_refresh"`
	}
	if err := json.NewDecoder(io.LimitReader(r.Body, 64<<10)).Decode(&req); err != nil {
		wxError(w, jsonType, 47001, "data format error")
		return
	}
	if req.GrantType != "client_credential" {
		wxError(w, jsonType, 40002, "invalid grant_type")
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	a, code, msg := s.authenticate(req.AppID, req.Secret)
	if a == nil {
		wxError(w, jsonType, code, msg)
		return
	}
	now := s.cfg.Now()
	cur := a.stable
	if req.ForceRefresh {
		recent := a.forced[:0]
		for _, t := range a.forced {
			if now.Sub(t) < 24*time.Hour {
				recent = append(recent, t)
			}
		}
		a.forced = recent
		if n := len(recent); n > 0 && now.Sub(recent[n-1]) < s.cfg.ForceMinInterval {
			wxError(w, jsonType, 45011, "api minute-quota reach limit mustslower retry next minute")
			return
		}
		if len(recent) >= s.cfg.ForceDailyQuota {
			wxError(w, jsonType, 45009, "reach max api daily quota limit")
			return
		}
		a.forced = append(a.forced, now)
		if cur != nil && cur.revoked.IsZero() {
			cur.revoked = now // force_refresh ends the previous token at once
		}
		cur = nil
		s.stats.ForcedIssued++
	}
	if cur != nil {
		end, _ := cur.deadline()
		if s.faults.StableStale {
			end = cur.expires
		}
		if end.Sub(now) > s.cfg.StableWindow {
			s.writeToken(w, cur, now)
			return
		}
	}
	// No token yet, or in its last minutes: hand out the next one. The
	// previous one lives on until its own expiry.
	t := s.issue(req.AppID, "stable", now)
	a.stable = t
	s.stats.StableIssued++
	s.writeToken(w, t, now)
}

// authenticate checks credentials in WeChat's order; s.mu must be held.
func (s *Server) authenticate(appID, secret string) (*app, int, string) {
	if appID == "" {
		return nil, 41002, "appid missing"
	}
	a := s.apps[appID]
	if a == nil {
		return nil, 40013, "invalid appid"
	}
	if secret == "" {
		return nil, 41004, "appsecret missing"
	}
	if secret != a.secret {
		return nil, 40125, "invalid appsecret"
	}
	return a, 0, ""
}

// issue makes a new token; s.mu must be held.
func (s *Server) issue(appID, family string, now time.Time) *token {
	t := &token{value: newTokenValue(s.cfg.TokenLength), appID: appID, family: family, expires: now.Add(s.cfg.TokenTTL), issuedAt: now}
	s.tokens[t.value] = t
	s.stats.IssuedByApp[appID]++
	return t
}

func (s *Server) expiresIn(t *token, now time.Time) int {
	end, _ := t.deadline()
	if s.faults.StableStale && t.family == "stable" {
		end = t.expires // as far as stable_token says, it lives on
	}
	return int(math.Floor(end.Sub(now).Seconds()))
}

// tokenAlphabet is what WeChat tokens are made of.
const tokenAlphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-"

func newTokenValue(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	for i := range b {
		b[i] = tokenAlphabet[int(b[i])%len(tokenAlphabet)]
	}
	// WeChat tokens start with a numeric generation prefix.
	if n > 4 {
		copy(b, "93_")
	}
	return string(b)
}

func randomHex(n int) string {
	b := make([]byte, (n+1)/2)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)[:n]
}

// checkToken validates the access_token of an API call; s.mu must be held.
// It returns 0 or the errcode WeChat would answer.
func (s *Server) checkToken(q url.Values) (int, string) {
	values := q["access_token"]
	if len(values) == 0 || values[0] == "" {
		return 41001, "access_token missing"
	}
	if s.faults.RejectAll {
		return 40001, "invalid credential, access_token is invalid or not latest"
	}
	t := s.tokens[values[0]]
	if t == nil {
		return 40001, "invalid credential, access_token is invalid or not latest"
	}
	end, expiry := t.deadline()
	if !s.cfg.Now().Before(end) {
		if expiry {
			return 42001, "access_token expired"
		}
		if t.family == "wecom" {
			return 40014, "invalid access_token"
		}
		return 40001, "invalid credential, access_token is invalid or not latest"
	}
	return 0, ""
}

func (s *Server) serveAPI(w http.ResponseWriter, r *http.Request) {
	// Endpoints that answer binary on success answer errors as text/plain.
	binary := r.URL.Path == "/cgi-bin/media/get" || strings.HasPrefix(r.URL.Path, "/wxa/getwxacode")
	errType := jsonType
	if binary {
		errType = "text/plain"
	}
	q := r.URL.Query()
	if strings.HasPrefix(r.URL.Path, "/cgi-bin/component/") {
		// The platform's own calls carry component_access_token.
		q = url.Values{"access_token": q["component_access_token"]}
	}
	s.mu.Lock()
	s.stats.APICalls++
	apiFault := s.faults.API
	code, msg := s.checkToken(q)
	if code != 0 {
		s.stats.APIRejected[code]++
	} else {
		s.stats.APIOK++
	}
	s.mu.Unlock()
	if code != 0 {
		// WeChat's front servers take in the whole request before an API
		// answers, errors included: a client (or proxy) never sees an
		// answer while it is still sending the body.
		_, _ = io.Copy(io.Discard, r.Body)
		s.tokenError(w, r, errType, code, msg, apiFault)
		return
	}
	switch {
	case r.URL.Path == "/cgi-bin/media/get" && apiFault == FaultResetMidBody:
		s.serveMediaReset(w, q.Get("media_id"))
	case r.URL.Path == "/cgi-bin/media/get":
		s.serveMedia(w, q.Get("media_id"))
	case strings.HasPrefix(r.URL.Path, "/wxa/getwxacode"):
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "image/jpeg")
		_, _ = w.Write(fakeJPEG)
	default:
		s.serveEcho(w, r)
	}
}

// fakeJPEG is a small body that starts like a JPEG file.
var fakeJPEG = append([]byte{0xFF, 0xD8, 0xFF, 0xE0, 0x00, 0x10, 'J', 'F', 'I', 'F', 0x00}, make([]byte, 1024)...)

// serveMedia streams media_id "bytes-N" as N bytes of a repeating pattern,
// so that large downloads cost the emulator no memory.
func (s *Server) serveMedia(w http.ResponseWriter, mediaID string) {
	n, ok := mediaSize(mediaID)
	if !ok {
		wxError(w, "text/plain", 40007, "invalid media_id")
		return
	}
	w.Header().Set("Content-Type", "image/jpeg")
	w.Header().Set("Content-Disposition", `attachment; filename="`+mediaID+`.jpg"`)
	w.Header().Set("Content-Length", strconv.FormatInt(n, 10))
	_, _ = io.Copy(w, io.LimitReader(MediaPattern(), n))
}

// mediaSize is N of media_id "bytes-N".
func mediaSize(mediaID string) (int64, bool) {
	digits, ok := strings.CutPrefix(mediaID, "bytes-")
	n, err := strconv.ParseInt(digits, 10, 64)
	return n, ok && err == nil && n >= 0
}

// MediaPattern returns the endless byte pattern served by
// /cgi-bin/media/get: byte i is i mod 251.
func MediaPattern() io.Reader { return &patternReader{} }

type patternReader struct{ i int }

func (p *patternReader) Read(b []byte) (int, error) {
	for k := range b {
		b[k] = byte(p.i % 251)
		p.i++
	}
	return len(b), nil
}

// Echo is the success answer of any API path the emulator does not model:
// what it received, for tests to compare with what the client sent.
type Echo struct {
	Errcode int    `json:"errcode"`
	Errmsg  string `json:"errmsg"`
	Method  string `json:"method"`
	Path    string `json:"path"`
	// RawPath is the path as it arrived, escapes and all.
	RawPath      string `json:"raw_path"`
	Query        string `json:"query"` // the raw query minus access_token
	TokenParams  int    `json:"access_token_params"`
	AppID        string `json:"appid"` // the app the token belongs to
	ContentType  string `json:"content_type"`
	BodyBytes    int    `json:"body_bytes"`
	BodySHA256   string `json:"body_sha256"`
	ChunkedInput bool   `json:"chunked"`
	// UserToken is the access_token of a /sns/ call (a user's OAuth
	// token, not an app's), so tests can see it arrived untouched.
	UserToken string `json:"user_access_token,omitempty"`
	// ComponentAppID is the platform an authorizer token was issued to,
	// so tests can tell one platform's token for an account from another's.
	ComponentAppID string `json:"component_appid,omitempty"`
}

func (s *Server) serveEcho(w http.ResponseWriter, r *http.Request) {
	h := sha256.New()
	n, err := io.Copy(h, r.Body)
	if err != nil {
		wxError(w, jsonType, 47001, "data format error: "+err.Error())
		return
	}
	var kept []string
	params := 0
	for _, part := range strings.Split(r.URL.RawQuery, "&") {
		// Counted however the key is cased or encoded: WeChat's parser
		// may well read such a key as the token.
		if key, _, _ := strings.Cut(part, "="); isTokenKey(key, strings.HasPrefix(r.URL.Path, "/cgi-bin/component/")) {
			params++
			continue
		}
		if part != "" {
			kept = append(kept, part)
		}
	}
	s.mu.Lock()
	var appID, componentAppID string
	tokenKey := "access_token"
	if strings.HasPrefix(r.URL.Path, "/cgi-bin/component/") {
		tokenKey = "component_access_token"
	}
	if t := s.tokens[r.URL.Query().Get(tokenKey)]; t != nil {
		appID, componentAppID = t.appID, t.component
	}
	s.mu.Unlock()
	writeJSON(w, jsonType, Echo{
		Errmsg: "ok", AppID: appID, ComponentAppID: componentAppID, Method: r.Method, Path: r.URL.Path, RawPath: r.URL.EscapedPath(), Query: strings.Join(kept, "&"),
		TokenParams: params, ContentType: r.Header.Get("Content-Type"),
		BodyBytes: int(n), BodySHA256: hex.EncodeToString(h.Sum(nil)),
		ChunkedInput: slices.Contains(r.TransferEncoding, "chunked"),
		UserToken:    userToken(r),
	})
}

// userToken is the access_token of a /sns/ call; "" for any other.
func userToken(r *http.Request) string {
	if !strings.HasPrefix(path.Clean("/"+r.URL.Path), "/sns/") {
		return ""
	}
	return r.URL.Query().Get("access_token")
}

func (s *Server) serveControl(w http.ResponseWriter, r *http.Request) {
	switch r.URL.Path {
	case "/_emulator/stats":
		writeJSON(w, "application/json", s.Stats())
	case "/_emulator/reset":
		if r.Method != http.MethodPost {
			http.Error(w, "POST only", http.StatusMethodNotAllowed)
			return
		}
		s.ResetStats()
		writeJSON(w, "application/json", map[string]bool{"ok": true})
	case "/_emulator/revoke":
		if r.Method != http.MethodPost {
			http.Error(w, "POST only", http.StatusMethodNotAllowed)
			return
		}
		s.Revoke(r.URL.Query().Get("appid"))
		writeJSON(w, "application/json", map[string]bool{"ok": true})
	case "/_emulator/faults":
		if r.Method == http.MethodPost {
			var f Faults
			if err := json.NewDecoder(io.LimitReader(r.Body, 4096)).Decode(&f); err != nil {
				http.Error(w, "faults: "+err.Error(), http.StatusBadRequest)
				return
			}
			s.SetFaults(f)
		}
		s.mu.Lock()
		f := s.faults
		s.mu.Unlock()
		writeJSON(w, "application/json", f)
	case "/_emulator/tokens":
		writeJSON(w, "application/json", map[string][]string{"tokens": s.IssuedTokens()})
	case "/_emulator/jssdk_verify":
		s.serveVerify(w, r)
	case "/_emulator/login_code":
		if r.Method != http.MethodPost {
			http.Error(w, "POST only", http.StatusMethodNotAllowed)
			return
		}
		writeJSON(w, "application/json", map[string]string{"code": s.LoginCode(r.URL.Query().Get("appid"))})
	case "/_emulator/last_secret_call":
		writeJSON(w, "application/json", s.LastSecretCall())
	case "/_emulator/push_message", "/_emulator/verify_url", "/_emulator/pushes":
		s.serveMessageControl(w, r)
	case "/_emulator/component_push":
		s.serveComponentPush(w, r)
	case "/_emulator/import_authorizers":
		s.serveImportAuthorizers(w, r)
	default:
		http.NotFound(w, r)
	}
}

// isTokenKey reports whether a raw query key decodes to access_token (for
// a platform's call, component_access_token), in any case.
func isTokenKey(key string, component bool) bool {
	if decoded, err := url.QueryUnescape(key); err == nil {
		key = decoded
	}
	if component {
		return strings.EqualFold(key, "component_access_token")
	}
	return strings.EqualFold(key, "access_token")
}

// callerIP is the IP WeChat would see the request come from.
func callerIP(r *http.Request) string {
	ip, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return ip
}
