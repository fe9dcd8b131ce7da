package tests

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/caddy-wechat/caddy-wechat/emulator"
)

// jssdkBlock is a wechat_jssdk directive for w's app plus extra options.
func (w *wechat) jssdkBlock(extra ...string) string {
	return fmt.Sprintf(`wechat_jssdk {
			app_id %s
			app_secret {env.WX_IT_SECRET}
			api_base %s
			%s
		}`, w.AppID, w.URL, strings.Join(extra, "\n\t\t\t"))
}

// jssdkSite serves signatures on /jssdk and proxies everything else.
func (w *wechat) jssdkSite(extra ...string) string {
	return fmt.Sprintf(`handle /jssdk {
		%s
	}
	handle {
		%s
	}`, w.jssdkBlock(extra...), w.tokenBlock("stable", extra2(extra)...))
}

// extra2 keeps the options both handlers take (not allowed_hosts).
func extra2(extra []string) []string {
	var out []string
	for _, e := range extra {
		if !strings.HasPrefix(e, "allowed_hosts") {
			out = append(out, e)
		}
	}
	return out
}

type signed struct {
	AppID     string `json:"appId"`
	Timestamp int64  `json:"timestamp"`
	NonceStr  string `json:"nonceStr"`
	Signature string `json:"signature"`
	Errcode   int    `json:"errcode"`
	Errmsg    string `json:"errmsg"`
	status    int
	raw       string
	header    http.Header
}

// sign asks c to sign pageURL.
func (c *caddy) sign(t *testing.T, method, pageURL string) signed {
	t.Helper()
	req, _ := http.NewRequest(method, c.url("/jssdk?url="+url.QueryEscape(pageURL)), nil)
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	s := signed{status: resp.StatusCode, raw: string(raw), header: resp.Header}
	if err := json.Unmarshal(raw, &s); err != nil {
		t.Fatalf("signature answer %d is not JSON: %q", resp.StatusCode, raw)
	}
	for _, ticket := range c.wechat.IssuedTickets() {
		if strings.Contains(s.raw, ticket) {
			t.Fatal("the answer reveals the jsapi_ticket")
		}
	}
	return s
}

// verified checks s as the JS-SDK would on the page at pageURL.
func (s signed) verified(t *testing.T, w *wechat, pageURL string) {
	t.Helper()
	if s.status != http.StatusOK || s.AppID != w.AppID || len(s.NonceStr) != 16 {
		t.Fatalf("signature answer %d %s", s.status, s.raw)
	}
	if d := time.Since(time.Unix(s.Timestamp, 0)); d < -2*time.Second || d > 5*time.Second {
		t.Fatalf("timestamp %d is %s off", s.Timestamp, d)
	}
	if got := s.header.Get("Content-Type"); got != "application/json" || s.header.Get("Cache-Control") != "no-store" {
		t.Fatalf("Content-Type %q, Cache-Control %q", got, s.header.Get("Cache-Control"))
	}
	if !w.VerifySignature(w.AppID, pageURL, s.NonceStr, s.Timestamp, s.Signature) {
		t.Fatalf("WeChat would reject the signature for %s: %s", pageURL, s.raw)
	}
}

func TestJSSDKSignsWithTheTicketWeChatIssued(t *testing.T) {
	w := startWeChat(t, emulator.Config{})
	c := startCaddy(t, w, w.jssdkSite("allowed_hosts example.com *.shop.example.com"))
	page := "https://example.com/page?a=1&b=%E4%BD%A0"
	s := c.sign(t, http.MethodGet, page+"#/route?x=1")
	s.verified(t, w, page) // signed without the fragment
	if w.VerifySignature(w.AppID, page+"#/route?x=1", s.NonceStr, s.Timestamp, s.Signature) {
		t.Fatal("signed with the fragment")
	}
	for range 30 {
		c.sign(t, http.MethodGet, "https://a.shop.example.com/p").verified(t, w, "https://a.shop.example.com/p")
	}
	// The proxy and the signer share the access token; the ticket is
	// fetched once.
	if a := get(t, c.url("/cgi-bin/user/info?openid=o1")); a.Errcode != 0 {
		t.Fatalf("proxied call: %s", a.Raw)
	}
	if st := w.Stats(); st.TicketCalls != 1 || st.Issued() != 1 {
		t.Fatalf("%d getticket calls and %d tokens for 31 signatures and a call", st.TicketCalls, st.Issued())
	}

	for _, tc := range []struct {
		method, url string
		status      int
	}{
		{http.MethodGet, "", http.StatusBadRequest},
		{http.MethodGet, "/relative/page", http.StatusBadRequest},
		{http.MethodGet, "ftp://example.com/file", http.StatusBadRequest},
		{http.MethodGet, "javascript:alert(1)", http.StatusBadRequest},
		{http.MethodGet, "https://evil.example.net/", http.StatusForbidden},
		{http.MethodGet, "https://shop.example.com/", http.StatusForbidden},
		{http.MethodPost, "https://example.com/", http.StatusMethodNotAllowed},
	} {
		s := c.sign(t, tc.method, tc.url)
		if s.status != tc.status || s.Errcode != -1 || !strings.HasPrefix(s.Errmsg, "wechat_token: ") ||
			s.header.Get("Content-Type") != "application/json" {
			t.Errorf("%s %q: %d %s, want %d in WeChat's shape", tc.method, tc.url, s.status, s.raw, tc.status)
		}
	}

	// The ticket's health is in the admin status and the metrics, its
	// value in neither (adminCall and scrape check).
	var apps []appStatus
	c.adminCall(t, http.MethodGet, "/wechat_token/apps", &apps)
	found := false
	for _, a := range apps {
		if a.TokenAPI == "jsapi_ticket" && a.AppID == w.AppID && a.Valid && a.Fetches == 1 {
			found = true
		}
	}
	if !found {
		t.Fatalf("no healthy jsapi_ticket in the admin status: %+v", apps)
	}
	if v := metric(t, c.scrape(t), "caddy_wechat_token_seconds_until_expiry", `token_api="jsapi_ticket"`); v < 7000 {
		t.Fatalf("ticket's seconds until expiry: %v", v)
	}
}

// A ticket fetched when WeChat has dropped the access token: the token is
// refreshed once (the proxy's requests then use it too) and the ticket
// fetched again.
func TestJSSDKTicketFetchRefreshesARejectedToken(t *testing.T) {
	w := startWeChat(t, emulator.Config{})
	c := startCaddy(t, w, w.jssdkSite())
	c.sign(t, http.MethodGet, "https://example.com/").verified(t, w, "https://example.com/")
	w.Revoke(w.AppID)
	before := w.Stats()
	var results []struct {
		TokenAPI string `json:"token_api"`
		Renewed  bool   `json:"renewed"`
	}
	if status := c.adminCall(t, http.MethodPost, "/wechat_token/apps/"+w.AppID+"/refresh?token_api=jsapi_ticket", &results); status != http.StatusOK ||
		len(results) != 1 || !results[0].Renewed {
		t.Fatalf("ticket refresh after a revocation: %d %+v", status, results)
	}
	if a := get(t, c.url("/cgi-bin/user/info?openid=o1")); a.Errcode != 0 {
		t.Fatalf("proxied call after the revocation: %s", a.Raw)
	}
	after := w.Stats()
	if tokens, calls := after.Issued()-before.Issued(), after.TicketCalls-before.TicketCalls; tokens != 1 || calls != 2 {
		t.Fatalf("%d tokens and %d getticket calls, want 1 (shared with the proxy) and 2", tokens, calls)
	}
	c.sign(t, http.MethodGet, "https://example.com/").verified(t, w, "https://example.com/")
}

// Two instances on one storage fetch one ticket; a restarted instance and
// a reload fetch none.
func TestJSSDKFleetSharesOneTicket(t *testing.T) {
	w := startWeChat(t, emulator.Config{})
	storage := filepath.Join(t.TempDir(), "shared")
	site := w.jssdkSite()
	a := startCaddyWith(t, w, site, caddyOptions{storage: storage})
	b := startCaddyWith(t, w, site, caddyOptions{storage: storage})
	for _, c := range []*caddy{a, b} {
		c.sign(t, http.MethodGet, "https://example.com/x").verified(t, w, "https://example.com/x")
	}
	b.stop()
	c := startCaddyWith(t, w, site, caddyOptions{storage: storage})
	c.sign(t, http.MethodGet, "https://example.com/y").verified(t, w, "https://example.com/y")
	c.reload(t, site+"\n\theader X-Reloaded yes")
	c.sign(t, http.MethodGet, "https://example.com/y").verified(t, w, "https://example.com/y")
	if st := w.Stats(); st.TicketCalls != 1 || st.Issued() != 1 {
		t.Fatalf("a fleet of two, a restart and a reload: %d getticket calls and %d tokens, want 1 and 1", st.TicketCalls, st.Issued())
	}
}

// The ticket is renewed before it expires, while signatures go on.
func TestJSSDKTicketRenewedBeforeExpiry(t *testing.T) {
	t.Parallel() // long and mostly waiting: overlaps the others
	w := startWeChat(t, emulator.Config{TokenTTL: 6 * time.Second})
	c := startCaddy(t, w, w.jssdkSite("min_token_lifetime 1s"))
	c.sign(t, http.MethodGet, "https://example.com/x").verified(t, w, "https://example.com/x")
	first := w.Stats().TicketsIssued
	// Tickets live 6 s here and are renewed at half-life.
	deadline := time.Now().Add(20 * time.Second)
	for w.Stats().TicketsIssued < first+2 {
		if time.Now().After(deadline) {
			t.Fatalf("%d tickets after 20 s of 6 s tickets", w.Stats().TicketsIssued)
		}
		c.sign(t, http.MethodGet, "https://example.com/x").verified(t, w, "https://example.com/x")
		time.Sleep(50 * time.Millisecond)
	}
}

// Without a ticket (here: the app's secret is wrong, so there is no token
// to fetch one with) the page gets a 503 at once, WeChat-shaped.
func TestJSSDKWithoutTicketAnswers503(t *testing.T) {
	w := startWeChat(t, emulator.Config{})
	c := startCaddy(t, w, fmt.Sprintf(`handle /jssdk {
		wechat_jssdk {
			app_id %s
			app_secret not-the-secret
			api_base %s
			fetch_timeout 1s
		}
	}`, w.AppID, w.URL))
	c.secrets = append(c.secrets, "not-the-secret")
	s := c.sign(t, http.MethodGet, "https://example.com/")
	if s.status != http.StatusServiceUnavailable || s.Errcode != -1 || !strings.HasPrefix(s.Errmsg, "wechat_token: no valid jsapi_ticket") ||
		s.header.Get("Content-Type") != "application/json" {
		t.Fatalf("no ticket: %d %s", s.status, s.raw)
	}
	if strings.Contains(s.raw, "not-the-secret") {
		t.Fatal("the 503 reveals the secret")
	}
}
