package tests

import (
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"

	"github.com/caddy-wechat/caddy-wechat/emulator"
)

// scrape reads the admin endpoint's /metrics and checks that it holds no
// token and no secret.
func (c *caddy) scrape(t *testing.T) string {
	t.Helper()
	resp, err := client.Get("http://" + c.admin + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("/metrics: %d %s", resp.StatusCode, body)
	}
	for _, tok := range append(c.wechat.IssuedTokens(), c.wechat.IssuedTickets()...) {
		if strings.Contains(string(body), tok) {
			t.Fatal("/metrics reveals a token")
		}
	}
	for _, secret := range c.secrets {
		if strings.Contains(string(body), secret) {
			t.Fatal("/metrics reveals the secret")
		}
	}
	return string(body)
}

// metric finds the value of name with all of labels (as `key="value"`).
func metric(t *testing.T, body, name string, labels ...string) float64 {
	t.Helper()
	for _, line := range strings.Split(body, "\n") {
		if !strings.HasPrefix(line, name+"{") && !strings.HasPrefix(line, name+" ") {
			continue
		}
		matches := true
		for _, l := range labels {
			matches = matches && strings.Contains(line, l)
		}
		if !matches {
			continue
		}
		v, err := strconv.ParseFloat(line[strings.LastIndexByte(line, ' ')+1:], 64)
		if err != nil {
			t.Fatalf("%s: %v", line, err)
		}
		return v
	}
	t.Fatalf("no %s{%s} in metrics", name, strings.Join(labels, ","))
	return 0
}

func TestMetrics(t *testing.T) {
	w, c := startProxy(t, emulator.Config{}, "classic")
	app, api := `app_id="`+w.AppID+`"`, `token_api="classic"`
	body := c.scrape(t)
	if v := metric(t, body, "caddy_wechat_token_fetches_total", app, api, `result="ok"`); v != 1 {
		t.Fatalf("fetches %v", v)
	}
	if v := metric(t, body, "caddy_wechat_token_seconds_until_expiry", app, api); v < 7000 {
		t.Fatalf("seconds until expiry %v", v)
	}
	if v := metric(t, body, "caddy_wechat_token_fetch_duration_seconds_count", app, api); v != 1 {
		t.Fatalf("fetch duration count %v", v)
	}

	w.Revoke(w.AppID)
	if a := get(t, c.url("/cgi-bin/user/info?openid=o1")); a.Errcode != 0 {
		t.Fatalf("after revocation: %+v", a.Echo)
	}
	body = c.scrape(t)
	if v := metric(t, body, "caddy_wechat_token_passive_refreshes_total", app, api); v != 1 {
		t.Fatalf("passive refreshes %v", v)
	}
	if v := metric(t, body, "caddy_wechat_token_retried_requests_total", app, api, `outcome="ok"`); v != 1 {
		t.Fatalf("retried ok %v", v)
	}
	if v := metric(t, body, "caddy_wechat_token_refreshes_left_today", app, api); v != 999 {
		t.Fatalf("refreshes left today after one of the default 1000: %v", v)
	}

	w.SetFaults(emulator.Faults{RejectAll: true})
	get(t, c.url("/cgi-bin/user/info?openid=o1"))
	body = c.scrape(t)
	if v := metric(t, body, "caddy_wechat_token_retried_requests_total", app, api, `outcome="error"`); v != 1 {
		t.Fatalf("retried with error %v", v)
	}
	w.SetFaults(emulator.Faults{})

	// A reload re-registers the collector in the new config's registry;
	// the counts, kept by the token manager, carry over.
	c.reload(t, w.tokenBlock("classic")+"\n\theader X-Reloaded yes")
	body = c.scrape(t)
	if v := metric(t, body, "caddy_wechat_token_fetches_total", app, api, `result="ok"`); v != 3 {
		t.Fatalf("fetches after reload %v", v)
	}
	if strings.Contains(c.logs.String(), "duplicate metrics collector") || strings.Contains(c.logs.String(), "register metrics") {
		t.Fatal("metrics registration failed on reload")
	}
}
