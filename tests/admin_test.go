package tests

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/caddy-wechat/caddy-wechat/emulator"
)

type appStatus struct {
	AppID       string     `json:"app_id"`
	TokenAPI    string     `json:"token_api"`
	Valid       bool       `json:"valid"`
	ExpiresAt   *time.Time `json:"expires_at"`
	SecondsLeft int64      `json:"seconds_left"`
	Fetches     int        `json:"fetches"`
	Passive     int        `json:"passive_refreshes"`
	Holds       bool       `json:"holds_renewal"`
	LastError   *struct {
		Errcode int64  `json:"errcode"`
		Meaning string `json:"meaning"`
		Hint    string `json:"hint"`
	} `json:"last_error"`
}

// admin calls the admin endpoint and checks that no token or secret is in
// the answer.
func (c *caddy) adminCall(t *testing.T, method, path string, into any) int {
	t.Helper()
	req, _ := http.NewRequest(method, "http://"+c.admin+path, nil)
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	for _, tok := range append(c.wechat.IssuedTokens(), c.wechat.IssuedTickets()...) {
		if strings.Contains(string(body), tok) {
			t.Fatalf("%s %s reveals a token", method, path)
		}
	}
	if strings.Contains(string(body), c.wechat.Secret) {
		t.Fatalf("%s %s reveals the secret", method, path)
	}
	if into != nil {
		if err := json.Unmarshal(body, into); err != nil {
			t.Fatalf("%s %s: %d %s", method, path, resp.StatusCode, body)
		}
	}
	return resp.StatusCode
}

func TestAdminStatusAndRefresh(t *testing.T) {
	w, c := startProxy(t, emulator.Config{}, "classic")
	var apps []appStatus
	if code := c.adminCall(t, http.MethodGet, "/wechat_token/apps", &apps); code != 200 || len(apps) != 1 {
		t.Fatalf("status %d: %+v", code, apps)
	}
	before := apps[0]
	expiresBefore := *before.ExpiresAt // the next decode reuses the pointer
	if before.AppID != w.AppID || before.TokenAPI != "classic" || !before.Valid || before.Fetches != 1 || !before.Holds ||
		before.SecondsLeft < 7000 || before.LastError != nil {
		t.Fatalf("status before refresh: %+v", before)
	}

	var results []struct {
		Renewed   bool       `json:"renewed"`
		ExpiresAt *time.Time `json:"expires_at"`
	}
	if code := c.adminCall(t, http.MethodPost, "/wechat_token/apps/"+w.AppID+"/refresh", &results); code != 200 || len(results) != 1 || !results[0].Renewed {
		t.Fatalf("refresh %d: %+v", code, results)
	}
	if n := w.Stats().ClassicIssued; n != 2 {
		t.Fatalf("%d tokens issued after a refresh", n)
	}
	c.adminCall(t, http.MethodGet, "/wechat_token/apps", &apps)
	if after := apps[0]; after.Fetches != 2 || after.Passive != 1 || !after.ExpiresAt.After(expiresBefore) {
		t.Fatalf("status after refresh: %+v", after)
	}
	if a := get(t, c.url("/cgi-bin/user/info?openid=o1")); a.Errcode != 0 {
		t.Fatalf("request after refresh: %+v", a.Echo)
	}

	var apiErr struct {
		Error string `json:"error"`
	}
	if code := c.adminCall(t, http.MethodPost, "/wechat_token/apps/wxunknown/refresh", &apiErr); code != 404 || apiErr.Error == "" {
		t.Fatalf("unknown app: %d %+v", code, apiErr)
	}
	if code := c.adminCall(t, http.MethodGet, "/wechat_token/apps/"+w.AppID+"/refresh", &apiErr); code != 405 {
		t.Fatalf("GET refresh: %d", code)
	}
	if code := c.adminCall(t, http.MethodDelete, "/wechat_token/apps", &apiErr); code != 405 {
		t.Fatalf("DELETE apps: %d", code)
	}
}

func TestAdminStableRefreshForcesOnlyWhenAsked(t *testing.T) {
	w, c := startProxy(t, emulator.Config{}, "stable")
	var results []struct {
		Renewed bool   `json:"renewed"`
		Note    string `json:"note"`
	}
	c.adminCall(t, http.MethodPost, "/wechat_token/apps/"+w.AppID+"/refresh", &results)
	if len(results) != 1 || results[0].Renewed || !strings.Contains(results[0].Note, "force=1") ||
		!strings.Contains(results[0].Note, "this one expires in 1h59m") || w.Stats().ForcedIssued != 0 {
		t.Fatalf("refresh without force: %+v, %d forced", results, w.Stats().ForcedIssued)
	}
	c.adminCall(t, http.MethodPost, "/wechat_token/apps/"+w.AppID+"/refresh?force=1", &results)
	if len(results) != 1 || !results[0].Renewed || w.Stats().ForcedIssued != 1 {
		t.Fatalf("refresh with force: %+v, %d forced", results, w.Stats().ForcedIssued)
	}
	if a := get(t, c.url("/cgi-bin/user/info?openid=o1")); a.Errcode != 0 {
		t.Fatalf("request after forced refresh: %+v", a.Echo)
	}
	// WeChat allows one force_refresh every 30 s: the fleet's ledger
	// refuses a second one now, before WeChat would.
	var refused []struct {
		Error struct {
			Meaning string `json:"meaning"`
		} `json:"error"`
	}
	if status := c.adminCall(t, http.MethodPost, "/wechat_token/apps/"+w.AppID+"/refresh?force=1", &refused); status != http.StatusTooManyRequests ||
		len(refused) != 1 || !strings.Contains(refused[0].Error.Meaning, "force_refresh not allowed") {
		t.Fatalf("a second force within 30 s: %d %+v", status, refused)
	}
	// Logged as what it is: an operator's request refused, not a rejection.
	// (Caddy's log reaches the test through a pipe, maybe after the answer.)
	var logged string
	waitFor(t, "the refused force in Caddy's log", func() bool {
		for _, line := range strings.Split(c.logs.String(), "\n") {
			if strings.Contains(line, "force_refresh not allowed now") {
				logged = line
			}
		}
		return logged != ""
	})
	if !strings.Contains(logged, `"reason":"admin request"`) || strings.Contains(logged, "rejected") {
		t.Fatalf("the refused force is logged as %q", logged)
	}
	if n := w.Stats().ForcedIssued; n != 1 {
		t.Fatalf("%d force_refresh calls reached WeChat, want 1", n)
	}
	var statuses []struct {
		Operator *int `json:"operator_force_refreshes_left"`
	}
	c.adminCall(t, http.MethodGet, "/wechat_token/apps", &statuses)
	if len(statuses) != 1 || statuses[0].Operator == nil || *statuses[0].Operator != 19 {
		t.Fatalf("status after one operator force: %+v", statuses)
	}
	body := c.scrape(t)
	app := `app_id="` + w.AppID + `"`
	if v := metric(t, body, "caddy_wechat_token_force_refreshes_left", app, `spender="operator"`); v != 19 {
		t.Fatalf("operator force refreshes left in metrics: %v", v)
	}
	if v := metric(t, body, "caddy_wechat_token_force_refreshes_left", app, `spender="automatic"`); v != 10 {
		t.Fatalf("automatic force refreshes left in metrics: %v", v)
	}
}

func TestAdminStatusExplainsFetchErrors(t *testing.T) {
	w := startWeChat(t, emulator.Config{})
	w.SetFaults(emulator.Faults{TokenEndpoint: emulator.FaultIPWhitelist})
	c := startCaddy(t, w, w.tokenBlock("stable"))
	deadline := time.Now().Add(10 * time.Second)
	for {
		var apps []appStatus
		c.adminCall(t, http.MethodGet, "/wechat_token/apps", &apps)
		if len(apps) == 1 && apps[0].LastError != nil {
			e := apps[0].LastError
			if e.Errcode != 40164 || !strings.Contains(e.Meaning, "WeChat saw the IP 127.0.0.1") || !strings.Contains(e.Hint, "whitelist") || apps[0].Valid {
				t.Fatalf("last error %+v", e)
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("no error in status: %+v", apps)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
