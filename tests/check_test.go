package tests

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/caddy-wechat/caddy-wechat/caddymodule/token"
	"github.com/caddy-wechat/caddy-wechat/emulator"
)

// `caddy wechat check`, run as an operator would on a host, against the
// emulator: it says whether each credential can be had, and WeChat sees
// nothing that changes anything.

// checkCaddyfile is a config with storage in dir, global options and one
// site. The check loads it, never runs it: nothing binds the site's port.
func checkCaddyfile(storage, global, site string) string {
	return fmt.Sprintf(`{
	admin off
	storage file_system %s
	%s
}

http://127.0.0.1:9 {
	%s
}
`, storage, global, site)
}

// checkRun is what one `caddy wechat check` printed (stdout and stderr)
// and its exit code.
type checkRun struct {
	out  string
	code int
}

// runCheck writes config to a file and checks it, with env added to the
// environment.
func runCheck(t *testing.T, config string, env ...string) checkRun {
	t.Helper()
	path := filepath.Join(t.TempDir(), "Caddyfile")
	if err := os.WriteFile(path, []byte(config), 0o600); err != nil {
		t.Fatal(err)
	}
	return runCheckOn(t, path, env...)
}

// runCheckOn checks the Caddyfile at path.
func runCheckOn(t *testing.T, path string, env ...string) checkRun {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	home := t.TempDir()
	cmd := exec.CommandContext(ctx, caddyBin, "wechat", "check", "--config", path, "--adapter", "caddyfile")
	cmd.Env = append(os.Environ(), "HOME="+home, "XDG_DATA_HOME="+filepath.Join(home, "data"), "XDG_CONFIG_HOME="+filepath.Join(home, "config"))
	cmd.Env = append(cmd.Env, env...)
	out, err := cmd.CombinedOutput()
	r := checkRun{out: string(out)}
	var exit *exec.ExitError
	switch {
	case ctx.Err() != nil:
		t.Fatalf("caddy wechat check did not end in time:\n%s", out)
	case errors.As(err, &exit):
		r.code = exit.ExitCode()
	case err != nil:
		t.Fatal(err)
	}
	if strings.Contains(r.out, "WARNING: DATA RACE") {
		t.Errorf("the race detector reported a race in caddy wechat check:\n%s", r.out)
	}
	return r
}

// wantOK fails the test unless the check passed, each of lines is a line
// of its output, and the summary counts n credentials.
func (r checkRun) wantOK(t *testing.T, n int, lines ...string) {
	t.Helper()
	if r.code != 0 {
		t.Fatalf("exit %d, want 0:\n%s", r.code, r.out)
	}
	r.want(t, append(lines, fmt.Sprintf("%d of %d WeChat credentials OK", n, n))...)
}

// wantFailed fails the test unless the check failed and its output holds
// each of parts.
func (r checkRun) wantFailed(t *testing.T, parts ...string) {
	t.Helper()
	if r.code == 0 {
		t.Fatalf("exit 0, want a failure:\n%s", r.out)
	}
	r.want(t, parts...)
}

func (r checkRun) want(t *testing.T, parts ...string) {
	t.Helper()
	for _, p := range parts {
		if !strings.Contains(r.out, p) {
			t.Errorf("the output lacks %q:\n%s", p, r.out)
		}
	}
}

// revealsNothing fails the test if the output holds one of secrets or
// anything w issued (tokens, tickets, a platform's secrets).
func (r checkRun) revealsNothing(t *testing.T, w *wechat, secrets ...string) {
	t.Helper()
	if w != nil {
		secrets = slices.Concat(secrets, w.IssuedTokens(), w.IssuedTickets(), w.IssuedPlatformSecrets())
	}
	for _, s := range secrets {
		if s != "" && strings.Contains(r.out, s) {
			t.Errorf("the output reveals a secret, token, ticket or key (%d characters):\n%s", len(s), r.out)
		}
	}
}

// changedNothing fails the test if WeChat saw a classic token call or a
// forced refresh: the calls that end a token.
func changedNothing(t *testing.T, w *wechat) {
	t.Helper()
	if st := w.Stats(); st.TokenCalls != 0 || st.ForcedIssued != 0 {
		t.Errorf("the check called /cgi-bin/token %d times and forced %d tokens", st.TokenCalls, st.ForcedIssued)
	}
}

// appLine is the start of the check's line for w's app.
func (w *wechat) appLine(status, directives, api string) string {
	return fmt.Sprintf("%s  %s app_id %s (token_api %s, %s): ", status, directives, w.AppID, api, w.URL)
}

func TestCheckRightSecret(t *testing.T) {
	apis(t, func(t *testing.T, api string) {
		w := startWeChat(t, emulator.Config{})
		options := fmt.Sprintf(`app_id %s
			app_secret {env.WX_IT_SECRET}
			token_api %s
			api_base %s`, w.AppID, api, w.URL)
		// Three handlers of one app, nested in handle and route blocks:
		// one credential, one line.
		site := fmt.Sprintf(`handle /api/* {
		wechat_token {
			%s
		}
		reverse_proxy %s
	}
	route /jssdk {
		wechat_jssdk {
			%s
		}
	}
	handle /token {
		wechat_token_value {
			%s
		}
	}`, options, w.URL, options, options)
		config := checkCaddyfile(t.TempDir(), "", site)
		r := runCheck(t, config, "WX_IT_SECRET="+w.Secret)
		r.wantOK(t, 1, "OK  ", "app_id "+w.AppID+" (token_api "+api+", "+w.URL+"): access_token obtained with stable_token", " s left")
		for _, d := range []string{"wechat_token", "wechat_jssdk", "wechat_token_value"} {
			r.want(t, d)
		}
		r.revealsNothing(t, w, w.Secret)
		changedNothing(t, w)
		if st := w.Stats(); st.StableCalls != 1 || st.StableIssued != 1 {
			t.Errorf("stable_token called %d times, %d tokens issued; want one call for the app, issuing its first token", st.StableCalls, st.StableIssued)
		}

		// Checking again issues nothing: normal mode hands out the
		// current token.
		runCheck(t, config, "WX_IT_SECRET="+w.Secret).wantOK(t, 1)
		changedNothing(t, w)
		if n := w.Stats().StableIssued; n != 1 {
			t.Errorf("a second check issued %d more stable tokens", n-1)
		}
	})
}

func TestCheckLeavesTheRunningProxysTokenAlone(t *testing.T) {
	apis(t, func(t *testing.T, api string) {
		w, c := startProxy(t, emulator.Config{}, api)
		before := w.Stats()
		// The running Caddy's own Caddyfile.
		r := runCheckOn(t, c.config, "WX_IT_SECRET="+w.Secret)
		r.wantOK(t, 1, w.appLine("OK  ", "wechat_token", api))
		r.revealsNothing(t, w, w.Secret)
		after := w.Stats()
		if after.TokenCalls != before.TokenCalls || after.ClassicIssued != before.ClassicIssued || after.ForcedIssued != 0 {
			t.Errorf("the check touched the classic tokens or forced one: before %+v, after %+v", before, after)
		}
		if api == "stable" && after.StableIssued != before.StableIssued {
			t.Errorf("the check issued %d stable tokens beside the proxy's current one", after.StableIssued-before.StableIssued)
		}
		// The proxy's token still works: the request needs no new one.
		if a := get(t, c.url("/cgi-bin/get_api_domain_ip")); a.Errcode != 0 {
			t.Fatalf("after the check: %s", a.Raw)
		}
		if st := w.Stats(); st.Issued() != after.Issued() || st.APIRejected[40001] != 0 {
			t.Errorf("the proxy's token was ended by the check: %+v", st)
		}
	})
}

func TestCheckWrongSecret(t *testing.T) {
	apis(t, func(t *testing.T, api string) {
		w := startWeChat(t, emulator.Config{})
		wrong := "wrong-" + w.Secret[:len(w.Secret)-3]
		r := runCheck(t, checkCaddyfile(t.TempDir(), "", w.tokenBlock(api)), "WX_IT_SECRET="+wrong)
		r.wantFailed(t, w.appLine("FAIL", "wechat_token", api), "0 of 1 WeChat credentials OK", "1 of 1 WeChat credentials cannot be obtained")
		if !strings.Contains(r.out, token.Explain(40125).Meaning) && !strings.Contains(r.out, token.Explain(40001).Meaning) {
			t.Errorf("the output does not say the secret is wrong:\n%s", r.out)
		}
		r.want(t, token.Explain(40125).Hint)
		r.revealsNothing(t, w, w.Secret, wrong)
		changedNothing(t, w)
	})
}

func TestCheckIPNotWhitelisted(t *testing.T) {
	t.Parallel()
	w := startWeChat(t, emulator.Config{Corps: map[string][]string{corpID: {corpSecretA}}})
	w.SetFaults(emulator.Faults{TokenEndpoint: emulator.FaultIPWhitelist})
	site := fmt.Sprintf(`handle /wecom/* {
		%s
	}
	handle {
		%s
	}`, w.wecomBlock(corpSecretA), w.tokenBlock("stable"))
	r := runCheck(t, checkCaddyfile(t.TempDir(), "", site), "WX_IT_SECRET="+w.Secret)
	// Both say what WeChat means and the IP it saw, the one to add.
	r.wantFailed(t, w.appLine("FAIL", "wechat_token", "stable"), token.Explain(40164).Meaning+"; WeChat saw the IP 127.0.0.1",
		"FAIL  wechat_token corp_id "+corpID, token.Explain(60020).Meaning+"; WeChat saw the IP 127.0.0.1", "0 of 2 WeChat credentials OK")
	r.revealsNothing(t, w, w.Secret, corpSecretA)
	changedNothing(t, w)
}

func TestCheckWeChatDown(t *testing.T) {
	t.Parallel()
	closed := fmt.Sprintf("http://127.0.0.1:%d", freePort(t))
	for _, c := range []struct {
		name, fault, apiBase, extra string
		want                        []string
	}{
		{name: "http_503", fault: emulator.FaultHTTP503, want: []string{"unexpected answer (HTTP 503", "is failing (try again later)"}},
		{name: "busy", fault: emulator.FaultBusy, want: []string{"errcode -1: " + token.Explain(-1).Meaning}},
		{name: "hang", fault: emulator.FaultHang, extra: "fetch_timeout 1s", want: []string{"no answer within 1s"}},
		{name: "closed port", apiBase: closed, want: []string{"WeChat is unreachable from this host", "connection refused"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			w := startWeChat(t, emulator.Config{})
			w.SetFaults(emulator.Faults{TokenEndpoint: c.fault})
			base := cmp.Or(c.apiBase, w.URL)
			site := fmt.Sprintf(`wechat_token {
		app_id %s
		app_secret {env.WX_IT_SECRET}
		api_base %s
		%s
	}`, w.AppID, base, c.extra)
			r := runCheck(t, checkCaddyfile(t.TempDir(), "", site), "WX_IT_SECRET="+w.Secret)
			r.wantFailed(t, append(c.want, "FAIL  wechat_token app_id "+w.AppID+" (token_api stable, "+base+"): ")...)
			r.revealsNothing(t, w, w.Secret)
			changedNothing(t, w)
		})
	}
}

func TestCheckWeCom(t *testing.T) {
	t.Parallel()
	w := startWeCom(t)
	site := fmt.Sprintf(`handle /a/* {
		%s
	}
	handle /b/* {
		%s
	}`, w.wecomBlock(corpSecretA), w.wecomBlock(wrongCorpKey))
	config := checkCaddyfile(t.TempDir(), "", site)
	r := runCheck(t, config)
	// Two apps of one corp, told apart as the admin API does.
	okLine := fmt.Sprintf("OK    wechat_token corp_id %s-%s (token_api wecom, %s): access_token obtained with gettoken, ", corpID, token.SecretFingerprint(corpID, corpSecretA)[:8], w.URL)
	failLine := fmt.Sprintf("FAIL  wechat_token corp_id %s-%s (token_api wecom, %s): ", corpID, token.SecretFingerprint(corpID, wrongCorpKey)[:8], w.URL)
	r.wantFailed(t, okLine, failLine, token.Explain(40001).Meaning, "1 of 2 WeChat credentials OK")
	r.revealsNothing(t, w, corpSecretA, corpSecretB, wrongCorpKey)
	// WeCom answers its current token: checking again issues none.
	runCheck(t, config).wantFailed(t, okLine)
	if st := w.Stats(); st.WeComIssued != 1 || st.WeComCalls != 4 {
		t.Errorf("gettoken: %d calls, %d tokens issued; want 4 calls (2 apps, 2 checks), 1 token", st.WeComCalls, st.WeComIssued)
	}
	changedNothing(t, w)
}

func TestCheckPlatform(t *testing.T) {
	t.Parallel()
	w := startPlatformWeChat(t)
	storage := t.TempDir()
	secrets := []string{componentSecret, componentAESKey, componentToken}
	subject := "component platform (component_appid " + componentAppID + "): "

	// Before any ticket: nothing to fetch the component_access_token with.
	r := runCheck(t, checkCaddyfile(storage, w.platformGlobal(), w.platformSite()))
	r.wantFailed(t, "FAIL  "+subject+"no component_verify_ticket received yet", "0 of 1 WeChat credentials OK")
	r.revealsNothing(t, w, secrets...)

	// A Caddy on that storage receives a ticket and fetches the token.
	c := startPlatform(t, w, storage)
	q, body, err := w.ComponentPush(componentAppID, "component_verify_ticket", nil, "")
	if err != nil {
		t.Fatal(err)
	}
	if status, got := c.push(t, q, body); status != 200 || got != "success" {
		t.Fatalf("ticket push: %d %q", status, got)
	}
	waitFor(t, "the component token", func() bool {
		return get(t, c.url("/cgi-bin/component/api_get_authorizer_list?x=1")).Errcode == 0
	})
	calls := w.Stats().ComponentCalls
	r = runCheckOn(t, c.config)
	r.wantOK(t, 1, "OK    "+subject+"component_verify_ticket received ", " s ago, component_access_token ", " s left (read from storage; api_component_token not called)")
	r.revealsNothing(t, w, secrets...)
	if n := w.Stats().ComponentCalls; n != calls {
		t.Errorf("the check called api_component_token %d times", n-calls)
	}

	// The same storage with another component_appsecret: the stored token
	// is not this config's.
	other := strings.Replace(w.platformGlobal(), componentSecret, "another-component-secret-0123456789", 1)
	r = runCheck(t, checkCaddyfile(storage, other, w.platformSite()))
	r.wantFailed(t, "FAIL  "+subject, "fetched with another component_appsecret than this config's")
	r.revealsNothing(t, w, append(secrets, "another-component-secret-0123456789")...)

	// A ticket 13 hours old, as the module stores it: expired.
	old, err := json.Marshal(map[string]any{"component_verify_ticket": "old-ticket-value", "create_time": time.Now().Add(-13 * time.Hour).Unix(),
		"received_at": time.Now().Add(-13 * time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	expired := t.TempDir()
	ticketFile := filepath.Join(expired, "wechat_token", "component", componentAppID+".verify_ticket.json")
	if err := os.MkdirAll(filepath.Dir(ticketFile), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(ticketFile, old, 0o600); err != nil {
		t.Fatal(err)
	}
	r = runCheck(t, checkCaddyfile(expired, w.platformGlobal(), w.platformSite()))
	r.wantFailed(t, "FAIL  "+subject+"the latest component_verify_ticket was received 13h0m", "expired")
	r.revealsNothing(t, w, append(secrets, "old-ticket-value")...)
	if n := w.Stats().ComponentCalls; n != calls {
		t.Errorf("the checks called api_component_token %d times", n-calls)
	}
}

func TestCheckPlatformWhoseTokenCannotBeFetched(t *testing.T) {
	t.Parallel()
	w := startPlatformWeChat(t)
	w.SetFaults(emulator.Faults{TokenEndpoint: emulator.FaultIPWhitelist})
	c := startPlatform(t, w, "")
	q, body, err := w.ComponentPush(componentAppID, "component_verify_ticket", nil, "")
	if err != nil {
		t.Fatal(err)
	}
	if status, got := c.push(t, q, body); status != 200 || got != "success" {
		t.Fatalf("ticket push: %d %q", status, got)
	}
	// The ticket is stored before the push is answered; the token never is.
	r := runCheckOn(t, c.config)
	r.wantFailed(t, "FAIL  component platform (component_appid "+componentAppID+"): component_verify_ticket received ",
		"no component_access_token stored", "GET /wechat_token/components/platform")
	r.revealsNothing(t, w, componentSecret, componentAESKey, componentToken)
}

func TestCheckMessagesKeys(t *testing.T) {
	t.Parallel()
	const (
		pushToken = "check-push-token-0123"
		goodKey   = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"
		shortKey  = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEF"
	)
	site := fmt.Sprintf(`handle /mp {
		wechat_messages {
			app_id wxmsg000000000001
			token {env.CHECK_PUSH_TOKEN}
			encoding_aes_key {env.CHECK_PUSH_KEY}
		}
	}
	handle /wecom {
		wechat_messages {
			corp_id wwmsg000000000001
			token %s
			encoding_aes_key %s
		}
	}`, pushToken, shortKey)
	r := runCheck(t, checkCaddyfile(t.TempDir(), "", site), "CHECK_PUSH_TOKEN="+pushToken, "CHECK_PUSH_KEY="+goodKey)
	r.wantFailed(t, "OK    wechat_messages app_id wxmsg000000000001: token and encoding_aes_key well-formed, nothing to call",
		"FAIL  wechat_messages: corp_id wwmsg000000000001: encoding_aes_key must be 43 characters", "1 of 2 WeChat credentials OK")
	r.revealsNothing(t, nil, pushToken, goodKey, shortKey)
}

func TestCheckWithoutCredentials(t *testing.T) {
	t.Parallel()
	r := runCheck(t, checkCaddyfile(t.TempDir(), "", "respond ok"))
	r.wantFailed(t, "names no WeChat credential")
}
