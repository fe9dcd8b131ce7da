package tests

import (
	"compress/gzip"
	"encoding/json"
	"io"
	"net/http"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/caddy-wechat/caddy-wechat/emulator"
)

// A client that accepts gzip: WeChat (the emulator) compresses for whoever
// asks, so a proxy forwarding the client's Accept-Encoding would read the
// rejection's errcode from compressed bytes and pass it on. The proxy asks
// for gzip itself, decompresses, reads 40001 and retries.
func TestClientAcceptingGzipStillGetsTheRetry(t *testing.T) {
	w := startCompressingWeChat(t, emulator.Config{})
	c := startCaddy(t, w, w.tokenBlock("stable"))
	if a := get(t, c.url("/cgi-bin/get_api_domain_ip")); a.Errcode != 0 {
		t.Fatalf("first request: %s", a.Raw)
	}
	raw := &http.Client{Transport: &http.Transport{DisableCompression: true}, Timeout: 30 * time.Second}
	w.Revoke(w.AppID)
	req, _ := http.NewRequest(http.MethodGet, c.url("/cgi-bin/user/info?openid=o1"), nil)
	req.Header.Set("Accept-Encoding", "gzip")
	resp, err := raw.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body io.Reader = resp.Body
	if resp.Header.Get("Content-Encoding") == "gzip" {
		if body, err = gzip.NewReader(resp.Body); err != nil {
			t.Fatal(err)
		}
	}
	var a emulator.Echo
	if err := json.NewDecoder(body).Decode(&a); err != nil || a.Errcode != 0 {
		t.Fatalf("after a revocation, accepting gzip: errcode %d (%v)", a.Errcode, err)
	}
}

// Under passthrough a rejected token is passed on as it is, never
// retried. (That bad entries fail the load is
// TestBadPassthroughEntriesFailTheLoad.)
func TestPassthroughIsNeverRetried(t *testing.T) {
	w, c := startProxy(t, emulator.Config{}, "stable", "passthrough /sns/ /own/")
	before := w.Stats()
	// A client's own token, which WeChat rejects: its 40001 comes back.
	a := get(t, c.url("/own/cgi-bin/user/info?access_token=the-clients-own-stale-token"))
	if a.Errcode != 40001 {
		t.Fatalf("passthrough with a revoked token: %s, want WeChat's 40001", a.Raw)
	}
	after := w.Stats()
	if calls, issued := after.APICalls-before.APICalls, after.Issued()-before.Issued(); calls != 1 || issued != 0 {
		t.Fatalf("passthrough: %d calls reached WeChat and %d tokens were fetched, want 1 and 0", calls, issued)
	}
}

// What the README says of the metrics: adopted tokens, fetch errors,
// rejections not retried, and labels app_id and token_api (and the fixed
// result, outcome, spender) only.
func TestMetricsPromises(t *testing.T) {
	w := startWeChat(t, emulator.Config{})
	storage := filepath.Join(t.TempDir(), "shared")
	a := startCaddyWith(t, w, w.tokenBlock("stable"), caddyOptions{storage: storage})
	if r := get(t, a.url("/cgi-bin/get_api_domain_ip")); r.Errcode != 0 {
		t.Fatalf("first: %s", r.Raw)
	}
	b := startCaddyWith(t, w, w.tokenBlock("stable"), caddyOptions{storage: storage})
	if r := get(t, b.url("/cgi-bin/get_api_domain_ip")); r.Errcode != 0 {
		t.Fatalf("second: %s", r.Raw)
	}
	app := `app_id="` + w.AppID + `"`
	if v := metric(t, b.scrape(t), "caddy_wechat_token_adopted_total", app); v != 1 {
		t.Fatalf("adopted_total on the second instance: %v", v)
	}
	// The token endpoint fails and WeChat drops the token: no new token,
	// WeChat's answer passed on, counted.
	w.SetFaults(emulator.Faults{TokenEndpoint: emulator.FaultBusy})
	w.Revoke(w.AppID)
	if r := get(t, a.url("/cgi-bin/user/info?openid=o1")); r.Errcode != 40001 {
		t.Fatalf("no token to retry with: %s", r.Raw)
	}
	body := a.scrape(t)
	if v := metric(t, body, "caddy_wechat_token_retried_requests_total", app, `outcome="not_retried"`); v != 1 {
		t.Fatalf("not_retried: %v", v)
	}
	if v := metric(t, body, "caddy_wechat_token_fetches_total", app, `result="error"`); v < 1 {
		t.Fatalf("fetch errors: %v", v)
	}
	allowed := map[string]bool{"app_id": true, "token_api": true, "result": true, "outcome": true, "spender": true, "le": true, "reason": true}
	label := regexp.MustCompile(`([a-z_]+)="`)
	for _, line := range strings.Split(body, "\n") {
		if !strings.HasPrefix(line, "caddy_wechat_") {
			continue
		}
		for _, m := range label.FindAllStringSubmatch(line, -1) {
			if !allowed[m[1]] {
				t.Fatalf("metric labelled %s: %s", m[1], line)
			}
		}
	}
}

// The admin refresh answers 502 with WeChat's error when the token
// endpoint fails, and 429 when the admin's own budget is spent.
func TestAdminRefreshFailures(t *testing.T) {
	w, c := startProxy(t, emulator.Config{}, "classic", "min_refresh_interval 1h")
	path := "/wechat_token/apps/" + w.AppID + "/refresh"
	var results []struct {
		Renewed bool `json:"renewed"`
		Error   *struct {
			Errcode int64  `json:"errcode"`
			Meaning string `json:"meaning"`
		} `json:"error"`
	}
	w.SetFaults(emulator.Faults{TokenEndpoint: emulator.FaultIPWhitelist})
	if status := c.adminCall(t, http.MethodPost, path, &results); status != http.StatusBadGateway ||
		len(results) != 1 || results[0].Error == nil || results[0].Error.Errcode != 40164 {
		t.Fatalf("refresh with the token endpoint failing: %d %+v", status, results)
	}
	w.SetFaults(emulator.Faults{})
	// A burst of 3 for the admin (the failed one counted), then one per
	// min_refresh_interval.
	for i := range 2 {
		if status := c.adminCall(t, http.MethodPost, path, &results); status != http.StatusOK || !results[0].Renewed {
			t.Fatalf("refresh %d: %d %+v", i+2, status, results)
		}
	}
	if status := c.adminCall(t, http.MethodPost, path, &results); status != http.StatusTooManyRequests ||
		results[0].Error == nil || !strings.Contains(results[0].Error.Meaning, "min_refresh_interval") {
		t.Fatalf("past the admin's budget: %d %+v", status, results)
	}
}

// Between renewals an instance re-reads the shared storage: a token
// another instance renewed early is adopted before this one's own renewal
// falls due, without a fetch or a rejection.
func TestPeriodicStorageReadAdoptsAnotherInstancesRenewal(t *testing.T) {
	t.Parallel()
	// Tokens live 30 s; the early instance renews at 15 s (half-life), the
	// late one would at 28 s and re-reads every 30/8 s meanwhile.
	w := startWeChat(t, emulator.Config{TokenTTL: 30 * time.Second, StableWindow: 20 * time.Second})
	storage := filepath.Join(t.TempDir(), "shared")
	early := startCaddyWith(t, w, w.tokenBlock("stable", "refresh_ahead 20s"), caddyOptions{storage: storage})
	start := time.Now()
	if r := get(t, early.url("/cgi-bin/get_api_domain_ip")); r.Errcode != 0 {
		t.Fatalf("early: %s", r.Raw)
	}
	late := startCaddyWith(t, w, w.tokenBlock("stable", "refresh_ahead 2s"), caddyOptions{storage: storage})
	if r := get(t, late.url("/cgi-bin/get_api_domain_ip")); r.Errcode != 0 {
		t.Fatalf("late: %s", r.Raw)
	}
	app := `app_id="` + w.AppID + `"`
	deadline := start.Add(26 * time.Second) // before the late one's own renewal at 28 s
	for metric(t, late.scrape(t), "caddy_wechat_token_adopted_total", app) < 2 {
		if time.Now().After(deadline) {
			t.Fatalf("the late instance had not adopted the early renewal %s after the first token (issued %d)",
				time.Since(start).Round(time.Second), w.Stats().Issued())
		}
		time.Sleep(200 * time.Millisecond)
	}
	body := late.scrape(t)
	if v := metric(t, body, "caddy_wechat_token_fetches_total", app, `result="ok"`); v != 0 {
		t.Fatalf("the late instance fetched %v tokens itself", v)
	}
	if n := w.Stats().Issued(); n != 2 {
		t.Fatalf("%d tokens issued, want the first and the early renewal", n)
	}
}
