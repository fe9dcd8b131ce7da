package tests

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/caddy-wechat/caddy-wechat/emulator"
)

// An instance reloaded with the same Redis storage keeps renewing as one
// with the fleet: its credential takes the new config's storage client,
// not the one the old config closed.
func TestReloadedInstanceKeepsSharingThroughRedis(t *testing.T) {
	t.Parallel()
	port := startRedis(t)
	w := startWeChat(t, emulator.Config{TokenTTL: 4 * time.Second, Overlap: time.Second})
	block := w.tokenBlock("classic", "refresh_ahead 1s", "min_token_lifetime 1s")
	opts := caddyOptions{storageConfig: redisStorage(port)}
	a := startCaddyWith(t, w, block, opts)
	b := startCaddyWith(t, w, block, opts)
	for _, c := range []*caddy{a, b} {
		if got := get(t, c.url("/cgi-bin/user/info?openid=o1")); got.Errcode != 0 {
			t.Fatalf("first request: %+v", got.Echo)
		}
	}
	for i := range 2 {
		a.reload(t, fmt.Sprintf("%s\n\theader X-Reloaded %d", block, i))
	}
	before := w.Stats().ClassicIssued
	ok, failed := loadFleet(t, []*caddy{a, b}, time.Now().Add(12*time.Second))
	if len(failed) > 0 {
		t.Fatalf("%d of %d requests failed, first: %s", len(failed), ok+len(failed), failed[0])
	}
	// One instance alone renews every 3 s: 4 or 5 tokens in 12 s. Two
	// renewing on their own would fetch about twice as many.
	if n := w.Stats().ClassicIssued - before; n > 5 {
		t.Fatalf("the pair fetched %d tokens in 12 s after a reload (one instance: 4 or 5)", n)
	}
	if logs := a.logs.String(); strings.Contains(logs, "renewing alone") || strings.Contains(logs, "client is closed") {
		t.Fatalf("the reloaded instance stopped sharing:\n%s", tail(logs, 4<<10))
	}
}

// caddy validate provisions the config and nothing more: no token call,
// nothing written to storage (no lock left behind), no warning about an
// unreachable WeChat.
func TestValidateTouchesNothing(t *testing.T) {
	t.Parallel()
	w := startWeChat(t, emulator.Config{})
	dir := t.TempDir()
	storage := filepath.Join(dir, "data")
	unreachable := fmt.Sprintf("http://127.0.0.1:%d", freePort(t)) // nothing listens: freePort hands it to no one else
	config := fmt.Sprintf(`{
	storage file_system %s
}
http://127.0.0.1:1 {
	handle_path /reachable/* {
		%s
	}
	handle_path /unreachable/* {
		wechat_token {
			app_id wxunreachable0001
			app_secret {env.WX_IT_SECRET}
			api_base %s
		}
		reverse_proxy %s
	}
}
`, storage, w.tokenBlock("classic"), unreachable, unreachable)
	file := filepath.Join(dir, "Caddyfile")
	if err := os.WriteFile(file, []byte(config), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(caddyBin, "validate", "--config", file, "--adapter", "caddyfile")
	cmd.Env = append(os.Environ(), "WX_IT_SECRET="+w.Secret, "HOME="+dir, "XDG_DATA_HOME="+filepath.Join(dir, "xdg"))
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "Valid configuration") {
		t.Fatalf("caddy validate: %v\n%s", err, out)
	}
	if st := w.Stats(); st.TokenCalls+st.StableCalls != 0 {
		t.Fatalf("caddy validate called the token endpoint %d times", st.TokenCalls+st.StableCalls)
	}
	var written []string
	_ = filepath.Walk(storage, func(path string, info os.FileInfo, err error) error {
		if err == nil && !info.IsDir() {
			written = append(written, path)
		}
		return nil
	})
	if len(written) > 0 {
		t.Fatalf("caddy validate wrote to storage: %v", written)
	}
	scanner := bufio.NewScanner(strings.NewReader(string(out)))
	for scanner.Scan() {
		var line struct{ Level, Logger, Msg string }
		if json.Unmarshal(scanner.Bytes(), &line) == nil && (line.Level == "warn" || line.Level == "error") &&
			(strings.Contains(line.Logger, "wechat") || strings.Contains(line.Msg, "token")) {
			t.Errorf("caddy validate logged: %s", scanner.Text())
		}
	}
	if strings.Contains(string(out), w.Secret) {
		t.Error("caddy validate's output reveals the secret")
	}
}

// Two handlers configuring one app differently fail the load, and the
// message names both handlers and what differs.
func TestConflictingHandlersFailTheLoad(t *testing.T) {
	t.Parallel()
	w := startWeChat(t, emulator.Config{})
	dir := t.TempDir()
	config := fmt.Sprintf(`http://127.0.0.1:1 {
	handle /token {
		wechat_token_value {
			app_id %s
			app_secret {env.WX_IT_SECRET}
			token_api classic
			api_base %s
			refresh_ahead 1m
		}
	}
	handle {
		%s
	}
}
`, w.AppID, w.URL, w.tokenBlock("classic"))
	file := filepath.Join(dir, "Caddyfile")
	if err := os.WriteFile(file, []byte(config), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(caddyBin, "validate", "--config", file, "--adapter", "caddyfile")
	cmd.Env = append(os.Environ(), "WX_IT_SECRET="+w.Secret, "HOME="+dir)
	out, err := cmd.CombinedOutput()
	if err == nil {
		t.Fatalf("a config with two handlers disagreeing on one app validated:\n%s", out)
	}
	msg := strings.ReplaceAll(string(out), "wechat_token_value and wechat_token", "wechat_token and wechat_token_value")
	msg = strings.ReplaceAll(msg, "(1m0s and 5m0s)", "(5m0s and 1m0s)")
	for _, want := range []string{"wechat_token and wechat_token_value", "differ in refresh_ahead (5m0s and 1m0s)", w.AppID} {
		if !strings.Contains(msg, want) {
			t.Errorf("the error does not say %q:\n%s", want, out)
		}
	}
}

// A reload that fails after provisioning (here: the new config's second
// site cannot bind its port) leaves the running credential exactly as it
// was: its api_base, not the failed config's.
func TestFailedReloadLeavesCredentialsAsTheyWere(t *testing.T) {
	t.Parallel()
	w, c := startProxy(t, emulator.Config{}, "classic")
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	unreachable := fmt.Sprintf("http://127.0.0.1:%d", freePort(t)) // nothing listens: freePort hands it to no one else
	site := strings.Replace(w.tokenBlock("classic"), "api_base "+w.URL, "api_base "+unreachable, 1)
	config := c.caddyfile(site) + fmt.Sprintf("\nhttp://%s {\n\tbind 127.0.0.1\n\trespond ok\n}\n", busy.Addr())
	if status, body := c.loadRaw(t, config); status == http.StatusOK {
		t.Fatalf("a config whose port is taken loaded: %s", body)
	}
	issued := w.issued()
	var results []struct {
		Renewed bool `json:"renewed"`
	}
	if status := c.adminCall(t, http.MethodPost, "/wechat_token/apps/"+w.AppID+"/refresh", &results); status != http.StatusOK || len(results) != 1 || !results[0].Renewed {
		t.Fatalf("renewal after the failed reload: %d %+v (the failed config's api_base in force?)", status, results)
	}
	if w.issued() != issued+1 {
		t.Fatalf("the renewal did not reach the running config's api_base")
	}
	if a := get(t, c.url("/cgi-bin/user/info?openid=o1")); a.Errcode != 0 {
		t.Fatalf("after the failed reload: %+v", a.Echo)
	}
}

// fetch_timeout changed by a reload applies to the running credential.
func TestReloadAppliesNewFetchTimeout(t *testing.T) {
	t.Parallel()
	w, c := startProxy(t, emulator.Config{}, "classic", "fetch_timeout 30s")
	c.reload(t, w.tokenBlock("classic", "fetch_timeout 1s"))
	w.SetFaults(emulator.Faults{TokenEndpoint: emulator.FaultHang})
	start := time.Now()
	status := c.adminCall(t, http.MethodPost, "/wechat_token/apps/"+w.AppID+"/refresh", nil)
	elapsed := time.Since(start)
	if status != http.StatusBadGateway {
		t.Fatalf("renewal against a hanging endpoint: %d", status)
	}
	// Bounded by the reloaded 1 s with room for a slow race-built Caddy;
	// the first config's 30 s would be far past it.
	if elapsed > 10*time.Second {
		t.Fatalf("the renewal gave up after %s; the reloaded fetch_timeout is 1s", elapsed.Round(time.Millisecond))
	}
}

// A stable token that WeChat rejects but normal-mode stable_token still
// hands back costs one force_refresh, and only once the rejection is
// confirmed: the replay with the handed-back token is rejected too.
func TestStableForceRefreshOnlyOnConfirmedRejection(t *testing.T) {
	t.Parallel()
	w, c := startProxy(t, emulator.Config{}, "stable")
	w.SetFaults(emulator.Faults{StableStale: true})
	w.Revoke(w.AppID)
	// This request's replay uses the token WeChat handed back, and fails:
	// WeChat's answer reaches the client, and the rejection is confirmed.
	if a := get(t, c.url("/cgi-bin/user/info?openid=o1")); a.Errcode != 40001 {
		t.Fatalf("first request after the revocation: %+v", a.Echo)
	}
	for range 3 {
		if a := get(t, c.url("/cgi-bin/user/info?openid=o1")); a.Errcode != 0 {
			t.Fatalf("after the confirmed rejection: %+v", a.Echo)
		}
	}
	if n := w.Stats().ForcedIssued; n != 1 {
		t.Fatalf("%d force_refresh calls, want 1", n)
	}
	var statuses []struct {
		Auto     *int `json:"automatic_force_refreshes_left"`
		Operator *int `json:"operator_force_refreshes_left"`
	}
	c.adminCall(t, http.MethodGet, "/wechat_token/apps", &statuses)
	if len(statuses) != 1 || statuses[0].Auto == nil || *statuses[0].Auto != 9 || *statuses[0].Operator != 19 {
		t.Fatalf("admin status after one automatic force: %+v", statuses)
	}
}

// valueBlock is a wechat_token_value directive for w's app with options.
func (w *wechat) valueBlock(api string, extra ...string) string {
	block := strings.Replace(w.tokenBlock(api, extra...), "wechat_token {", "wechat_token_value {", 1)
	return block[:strings.LastIndex(block, "reverse_proxy")]
}

// A token-endpoint caller that spends its refresh budget leaves the
// proxy's own: a real rejection afterwards is still refreshed and retried.
func TestCallerCannotSpendTheProxysRefreshes(t *testing.T) {
	t.Parallel()
	w := startWeChat(t, emulator.Config{})
	options := []string{"min_refresh_interval 1h"}
	site := fmt.Sprintf("handle /token {\n\t\t%s\n\t}\n\thandle {\n\t\t%s\n\t}", w.valueBlock("classic", options...), w.tokenBlock("classic", options...))
	c := startCaddy(t, w, site)
	// report reads the current token and reports it rejected.
	report := func() int {
		t.Helper()
		req, _ := http.NewRequest(http.MethodGet, c.url("/token"), nil)
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var tok tokenAnswer
		_ = json.NewDecoder(resp.Body).Decode(&tok)
		resp.Body.Close()
		body, _ := json.Marshal(map[string]string{"access_token": tok.AccessToken})
		resp, err = client.Post(c.url("/token"), "application/json", strings.NewReader(string(body)))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	for i := range 3 {
		if status := report(); status != http.StatusOK {
			t.Fatalf("report %d: %d", i, status)
		}
	}
	if status := report(); status != http.StatusTooManyRequests {
		t.Fatalf("a report past the callers' budget: %d, want 429", status)
	}
	w.Revoke(w.AppID)
	if a := get(t, c.url("/cgi-bin/user/info?openid=o1")); a.Errcode != 0 {
		t.Fatalf("a rejection after the callers spent their budget reached the client: %+v", a.Echo)
	}
}

// Two instances sharing storage together make at most daily_refresh_limit
// on-demand refreshes of a classic token: past it, WeChat's rejection
// reaches the client unretried rather than the quota being spent.
func TestClassicDailyRefreshLimitAcrossTheFleet(t *testing.T) {
	t.Parallel()
	w := startWeChat(t, emulator.Config{})
	storage := t.TempDir()
	block := w.tokenBlock("classic", "min_refresh_interval 1ms", "daily_refresh_limit 2")
	fleet := []*caddy{
		startCaddyWith(t, w, block, caddyOptions{storage: storage}),
		startCaddyWith(t, w, block, caddyOptions{storage: storage}),
	}
	for i, c := range fleet {
		if a := get(t, c.url("/cgi-bin/user/info?openid=o1")); a.Errcode != 0 {
			t.Fatalf("instance %d: %+v", i, a.Echo)
		}
	}
	before := w.issued()
	// Each revocation is met first by one instance, which refreshes; the
	// other then meets it too and adopts that token from the storage.
	for i := range 2 {
		w.Revoke(w.AppID)
		for j := range 2 {
			if a := get(t, fleet[(i+j)%2].url("/cgi-bin/user/info?openid=o1")); a.Errcode != 0 {
				t.Fatalf("revocation %d, instance %d, within the limit: %+v", i, (i+j)%2, a.Echo)
			}
		}
	}
	w.Revoke(w.AppID)
	a := get(t, fleet[0].url("/cgi-bin/user/info?openid=o1"))
	if a.Errcode != 40001 {
		t.Fatalf("past the fleet's limit: %+v, want WeChat's 40001 passed on", a.Echo)
	}
	if n := w.issued() - before; n != 2 {
		t.Fatalf("the fleet made %d refreshes with daily_refresh_limit 2", n)
	}
	var statuses []struct {
		Left *int `json:"refreshes_left_today"`
	}
	fleet[1].adminCall(t, http.MethodGet, "/wechat_token/apps", &statuses)
	if len(statuses) != 1 || statuses[0].Left == nil || *statuses[0].Left != 0 {
		t.Fatalf("the other instance's status: %+v", statuses)
	}
}

// The force_refresh ledger is kept in the storage: a restarted instance
// knows what the fleet spent.
func TestForceLedgerSurvivesRestart(t *testing.T) {
	t.Parallel()
	w := startWeChat(t, emulator.Config{})
	storage := t.TempDir()
	first := startCaddyWith(t, w, w.tokenBlock("stable"), caddyOptions{storage: storage})
	if a := get(t, first.url("/cgi-bin/user/info?openid=o1")); a.Errcode != 0 {
		t.Fatalf("first request: %+v", a.Echo)
	}
	if status := first.adminCall(t, http.MethodPost, "/wechat_token/apps/"+w.AppID+"/refresh?force=1", nil); status != http.StatusOK {
		t.Fatalf("force: %d", status)
	}
	first.stop()
	again := startCaddyWith(t, w, w.tokenBlock("stable"), caddyOptions{storage: storage})
	var statuses []struct {
		Operator *int `json:"operator_force_refreshes_left"`
	}
	again.adminCall(t, http.MethodGet, "/wechat_token/apps", &statuses)
	if len(statuses) != 1 || statuses[0].Operator == nil || *statuses[0].Operator != 19 {
		left := -1
		if len(statuses) == 1 && statuses[0].Operator != nil {
			left = *statuses[0].Operator
		}
		t.Fatalf("after a restart: %d force_refresh calls left, want 19", left)
	}
	if status := again.adminCall(t, http.MethodPost, "/wechat_token/apps/"+w.AppID+"/refresh?force=1", nil); status != http.StatusTooManyRequests {
		t.Fatalf("a second force within 30 s, after a restart: %d, want 429", status)
	}
}
