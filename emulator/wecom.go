package emulator

import (
	"fmt"
	"net/http"
)

// WeCom (企业微信, qyapi.weixin.qq.com): GET /cgi-bin/gettoken?corpid=&corpsecret=
// issues one token per app secret of a corp. Within its validity the same
// token comes back to every caller (WeCom's documented behaviour); once it
// expired or was revoked, the next call issues a new one. API calls with a
// WeCom token that is no longer valid answer 40014 (invalid) or 42001
// (expired), as WeCom's do; Revoke(corpid) ends every token of the corp
// early, as WeCom may.

// corpApp is one app of a WeCom corp, known by its secret.
type corpApp struct {
	corpID  string
	current *token
}

// corpApp returns the app of corpID whose secret is secret; s.mu is held.
func (s *Server) corpApp(corpID, secret string) (*corpApp, int, string) {
	secrets, ok := s.cfg.Corps[corpID]
	if !ok || corpID == "" {
		return nil, 40013, "invalid corpid"
	}
	for _, known := range secrets {
		if known == secret && secret != "" {
			if s.corpApps == nil {
				s.corpApps = map[string]*corpApp{}
			}
			key := corpID + "\x00" + secret
			if s.corpApps[key] == nil {
				s.corpApps[key] = &corpApp{corpID: corpID}
			}
			return s.corpApps[key], 0, ""
		}
	}
	return nil, 40001, "invalid credential, access_token is invalid or not latest"
}

func (s *Server) serveWeComToken(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	s.stats.WeComCalls++
	fault := s.faults.TokenEndpoint
	s.mu.Unlock()
	if fault == FaultIPWhitelist {
		ip := callerIP(r)
		wxError(w, jsonType, 60020, fmt.Sprintf("not allow to access from your ip, hint: [1700000000000000000], from ip: %s, more info at https://open.work.weixin.qq.com/devtool/query?e=60020", ip))
		return
	}
	if s.tokenFault(w, r, fault) {
		return
	}
	q := r.URL.Query()
	s.mu.Lock()
	defer s.mu.Unlock()
	a, code, msg := s.corpApp(q.Get("corpid"), q.Get("corpsecret"))
	if a == nil {
		wxError(w, jsonType, code, msg)
		return
	}
	now := s.cfg.Now()
	if t := a.current; t != nil {
		if end, _ := t.deadline(); now.Before(end) {
			writeJSON(w, jsonType, map[string]any{"errcode": 0, "errmsg": "ok", "access_token": t.value, "expires_in": s.expiresIn(t, now)})
			return
		}
	}
	a.current = s.issue(a.corpID, "wecom", now)
	s.stats.WeComIssued++
	writeJSON(w, jsonType, map[string]any{"errcode": 0, "errmsg": "ok", "access_token": a.current.value, "expires_in": s.expiresIn(a.current, now)})
}
