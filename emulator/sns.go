package emulator

import (
	"net/http"
	"net/url"
	"strings"
	"time"
)

// The calls WeChat authenticates with the AppSecret rather than a token:
// GET /sns/jscode2session (Mini Program login) and GET
// /sns/oauth2/access_token (the web OAuth code exchange). Codes come from
// LoginCode (the device's wx.login, or the OAuth redirect) and are good
// for one exchange within 5 minutes.

// codeTTL is how long a login code can be exchanged.
const codeTTL = 5 * time.Minute

type loginCode struct {
	appID   string
	expires time.Time
	used    bool
}

// SecretCall is what the emulator saw of the last call authenticated with
// the AppSecret: how many of each credential parameter arrived, so that
// tests can check that the proxy sent exactly one appid and one secret.
type SecretCall struct {
	Path         string `json:"path"`
	AppIDs       int    `json:"appid_params"`
	Secrets      int    `json:"secret_params"`
	AccessTokens int    `json:"access_token_params"`
	AppID        string `json:"appid"`
	SecretOK     bool   `json:"secret_ok"`
	Errcode      int    `json:"errcode"`
}

// LoginCode issues a code for appID, as wx.login does on the device.
func (s *Server) LoginCode(appID string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	code := "code-" + randomHex(24)
	if s.codes == nil {
		s.codes = map[string]*loginCode{}
	}
	s.codes[code] = &loginCode{appID: appID, expires: s.cfg.Now().Add(codeTTL)}
	return code
}

// LastSecretCall returns what arrived with the last jscode2session or
// OAuth code exchange.
func (s *Server) LastSecretCall() SecretCall {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.lastSecretCall
}

// IssuedSessions lists every session_key, user access_token and refresh
// token handed out, for tests that check none is logged.
func (s *Server) IssuedSessions() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.sessions...)
}

// count is how many times key appears in q, however cased.
func count(q url.Values, key string) (n int, first string) {
	for k, vs := range q {
		if strings.EqualFold(k, key) {
			if n == 0 && len(vs) > 0 {
				first = vs[0]
			}
			n += len(vs)
		}
	}
	return n, first
}

func (s *Server) serveCodeExchange(w http.ResponseWriter, r *http.Request, oauth bool) {
	q := r.URL.Query()
	call := SecretCall{Path: r.URL.Path}
	var secret string
	call.AppIDs, call.AppID = count(q, "appid")
	call.Secrets, secret = count(q, "secret")
	call.AccessTokens, _ = count(q, "access_token")
	codeParam := "js_code"
	if oauth {
		codeParam = "code"
	}
	s.mu.Lock()
	s.stats.SecretCalls++
	a := s.apps[call.AppID]
	call.SecretOK = a != nil && secret == a.secret && call.Secrets == 1
	code := q.Get(codeParam)
	c := s.codes[code]
	switch {
	case call.AppIDs != 1 || a == nil:
		call.Errcode = 40013 // invalid appid
	case !call.SecretOK:
		call.Errcode = 40125 // invalid appsecret
	case q.Get("grant_type") != "authorization_code":
		call.Errcode = 40002 // invalid grant_type
	case code == "":
		call.Errcode = 41008 // missing code
	case c == nil || c.appID != call.AppID || !s.cfg.Now().Before(c.expires):
		call.Errcode = 40029 // invalid code
	case c.used:
		call.Errcode = 40163 // code been used
	default:
		c.used = true
	}
	s.lastSecretCall = call
	var answer map[string]any
	if call.Errcode == 0 {
		openID := "o" + randomHex(27)
		if oauth {
			tok, refresh := newTokenValue(100), newTokenValue(100)
			s.sessions = append(s.sessions, tok, refresh)
			answer = map[string]any{"access_token": tok, "expires_in": 7200, "refresh_token": refresh, "openid": openID, "scope": "snsapi_base"}
		} else {
			key := newTokenValue(24)
			s.sessions = append(s.sessions, key)
			answer = map[string]any{"session_key": key, "openid": openID}
		}
	}
	s.mu.Unlock()
	if call.Errcode != 0 {
		wxError(w, "text/plain", call.Errcode, map[int]string{
			40013: "invalid appid", 40125: "invalid appsecret", 40002: "invalid grant_type",
			41008: "missing code", 40029: "invalid code", 40163: "code been used",
		}[call.Errcode])
		return
	}
	// jscode2session answers text/plain, as WeChat's does.
	writeJSON(w, "text/plain", answer)
}
