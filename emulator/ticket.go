package emulator

import (
	"crypto/sha1"
	"encoding/hex"
	"fmt"
	"net/http"
	"path"
	"strconv"
	"time"
)

// JS-SDK tickets: GET /cgi-bin/ticket/getticket?access_token=…&type=jsapi,
// and WeCom's GET /cgi-bin/get_jsapi_ticket?access_token=….
// Every call issues a new ticket, so that a client fetching more than it
// needs shows in the counts; earlier tickets stay valid until their own
// expiry, as signatures made with them must verify until then.

// ticket is one jsapi_ticket handed out.
type ticket struct {
	value   string
	appID   string
	expires time.Time
}

func (s *Server) serveTicket(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	s.mu.Lock()
	s.stats.TicketCalls++
	code, msg := s.checkToken(q)
	var t *ticket
	wecom := path.Clean(r.URL.Path) == "/cgi-bin/get_jsapi_ticket"
	if code == 0 && !wecom && q.Get("type") != "jsapi" && q.Get("type") != "wx_card" {
		code, msg = 40097, "invalid args"
	}
	if code == 0 {
		tok := s.tokens[q.Get("access_token")]
		t = &ticket{value: newTokenValue(86), appID: tok.appID, expires: s.cfg.Now().Add(s.cfg.TicketTTL)}
		if s.tickets == nil {
			s.tickets = map[string]*ticket{}
		}
		s.tickets[t.value] = t
		s.stats.TicketsIssued++
	}
	s.mu.Unlock()
	if code != 0 {
		wxError(w, jsonType, code, msg)
		return
	}
	writeJSON(w, jsonType, map[string]any{
		"errcode": 0, "errmsg": "ok", "ticket": t.value, "expires_in": int(s.cfg.TicketTTL / time.Second),
	})
}

// IssuedTickets lists every jsapi_ticket handed out, for tests that check
// none leaks.
func (s *Server) IssuedTickets() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]string, 0, len(s.tickets))
	for v := range s.tickets {
		out = append(out, v)
	}
	return out
}

// VerifySignature checks a wx.config signature as the JS-SDK does on the
// page: made with an unexpired ticket of appID over nonceStr, timestamp
// and url (without its #fragment).
func (s *Server) VerifySignature(appID, url, nonceStr string, timestamp int64, signature string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.cfg.Now()
	for _, t := range s.tickets {
		if t.appID != appID || !now.Before(t.expires) {
			continue
		}
		sum := sha1.Sum(fmt.Appendf(nil, "jsapi_ticket=%s&noncestr=%s&timestamp=%d&url=%s", t.value, nonceStr, timestamp, url))
		if hex.EncodeToString(sum[:]) == signature {
			return true
		}
	}
	return false
}

// serveVerify is /_emulator/jssdk_verify?appid=&url=&noncestr=&timestamp=&signature=:
// {"ok":true} when VerifySignature accepts it.
func (s *Server) serveVerify(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	ts, err := strconv.ParseInt(q.Get("timestamp"), 10, 64)
	ok := err == nil && s.VerifySignature(q.Get("appid"), q.Get("url"), q.Get("noncestr"), ts, q.Get("signature"))
	writeJSON(w, "application/json", map[string]bool{"ok": ok})
}
