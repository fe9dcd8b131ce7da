package caddymodule

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"

	"github.com/caddyserver/certmagic"

	"github.com/caddy-wechat/caddy-wechat/caddymodule/token"
	"github.com/caddy-wechat/caddy-wechat/emulator"
)

// route is a route of a config's JSON with handlers.
func route(handlers ...map[string]any) map[string]any { return map[string]any{"handle": handlers} }

func TestCheckFindsEveryCredentialAndChangesNothing(t *testing.T) {
	const (
		appA, secretA = "wxcheck000000001", "check-secret-a-0123456789abcdef"
		appB, secretB = "wxcheck000000002", "check-secret-b-0123456789abcdef"
		corp, corpSec = "wwcheck000000001", "check-corp-secret-0123456789abcdef"
		aesKey        = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEF" // 42 characters: malformed
	)
	emu := emulator.New(emulator.Config{Apps: map[string]string{appA: secretA, appB: secretB},
		Corps: map[string][]string{corp: {corpSec}}, NoCompression: true})
	srv := httptest.NewServer(emu)
	t.Cleanup(srv.Close)
	t.Cleanup(emu.Close)
	t.Setenv("CHECK_SECRET_A", secretA)

	classicA := map[string]any{"app_id": appA, "app_secret": "{env.CHECK_SECRET_A}", "token_api": "classic", "api_base": srv.URL}
	with := func(m map[string]any, handler string) map[string]any {
		out := map[string]any{"handler": handler}
		for k, v := range m {
			out[k] = v
		}
		return out
	}
	platform := func(key string) map[string]any {
		return map[string]any{"component_appid": "wxcheckcomp00001", "component_appsecret": "check-component-secret",
			"token": "platform-token", "encoding_aes_key": key, "api_base": srv.URL}
	}
	config := map[string]any{"apps": map[string]any{"wechat": map[string]any{"components": map[string]any{
		"good": platform(aesKey + "G"), "bad": platform(aesKey),
	}}, "http": map[string]any{"servers": map[string]any{
		"srv0": map[string]any{"routes": []any{
			// Nested subroutes, and a handler inside reverse_proxy's
			// handle_response routes: found wherever they are.
			route(map[string]any{"handler": "subroute", "routes": []any{
				route(map[string]any{"handler": "subroute", "routes": []any{route(with(classicA, "wechat_token"))}}),
			}}),
			route(map[string]any{"handler": "reverse_proxy", "handle_response": []any{
				map[string]any{"routes": []any{route(with(classicA, "wechat_token_value"))}},
			}}),
			route(map[string]any{"handler": "wechat_jssdk", "app_id": appB, "app_secret": "not-" + secretB, "api_base": srv.URL}),
			route(map[string]any{"handler": "wechat_token", "corp_id": corp, "corp_secret": corpSec, "api_base": srv.URL}),
			route(map[string]any{"handler": "wechat_messages", "app_id": appA, "token": "push-token", "encoding_aes_key": aesKey}),
			route(map[string]any{"handler": "wechat_messages", "corp_id": corp, "token": "push-token"}),
			route(map[string]any{"handler": "wechat_component_events", "component": "nowhere"}),
			route(map[string]any{"handler": "wechat_token", "app_id": "wxcheck000000003", "app_secret": "{env.CHECK_UNSET_SECRET}"}),
			route(map[string]any{"handler": "wechat_token", "component": "nowhere"}),
			route(map[string]any{"handler": "wechat_token", "component": "good", "authorizer": "path"}),
			route(map[string]any{"handler": "wechat_messages", "component": "good", "authorizer": "path"}),
		}},
	}}}}
	raw, err := json.Marshal(config)
	if err != nil {
		t.Fatal(err)
	}
	lines, err := checkCredentials(context.Background(), raw, &certmagic.FileStorage{Path: t.TempDir()}, srv.Client())
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, l := range lines {
		got = append(got, l.String())
	}
	all := strings.Join(got, "\n")
	t.Logf("the check's lines:\n%s", all)

	want := []struct {
		ok       bool
		subject  string
		contains string
	}{
		{false, "", "wechat: component bad: encoding_aes_key must be 43 characters"},
		// No ticket in the storage, and none can come: this config has no
		// wechat_component_events for it.
		{false, "component good (component_appid wxcheckcomp00001)", "no component_verify_ticket received yet"},
		{true, "wechat_token, wechat_token_value app_id " + appA + " (token_api classic, " + srv.URL + ")", "obtained with stable_token"},
		{false, "wechat_jssdk app_id " + appB + " (token_api stable, " + srv.URL + ")", token.Explain(40125).Meaning},
		{true, "wechat_token corp_id " + corp + "-" + token.SecretFingerprint(corp, corpSec)[:8] + " (token_api wecom, " + srv.URL + ")", "obtained with gettoken"},
		{false, "wechat_messages", "encoding_aes_key must be 43 characters"},
		{false, "wechat_messages", "encoding_aes_key is required"}, // WeCom pushes are always encrypted
		{false, "wechat_component_events", `no component "nowhere"`},
		{false, "", "wechat_token (app_id wxcheck000000003): app_secret is empty once placeholders are expanded ({env.CHECK_UNSET_SECRET}): environment variable CHECK_UNSET_SECRET is not set"},
		{false, "", `wechat_token: no component "nowhere"`},
		{true, "wechat_messages component good", "the platform's token and encoding_aes_key, well-formed"},
	}
	if len(lines) != len(want) {
		t.Fatalf("%d lines, want %d", len(lines), len(want))
	}
	for i, w := range want {
		l := lines[i]
		if l.OK != w.ok || l.Subject != w.subject || !strings.Contains(l.Detail, w.contains) {
			t.Errorf("line %d: %q, want OK=%v, subject %q, detail with %q", i, l, w.ok, w.subject, w.contains)
		}
	}
	for _, secret := range append([]string{secretA, secretB, "not-" + secretB, corpSec, "push-token", aesKey, "check-component-secret", "platform-token"}, emu.IssuedTokens()...) {
		if strings.Contains(all, secret) {
			t.Errorf("the check's output shows a secret, token or key (%d characters)", len(secret))
		}
	}
	st := emu.Stats()
	if st.TokenCalls != 0 || st.ForcedIssued != 0 || st.ClassicIssued != 0 || st.ComponentCalls != 0 {
		t.Errorf("the check called /cgi-bin/token or api_component_token, or forced a token: %+v", st)
	}
	if st.StableCalls != 2 || st.WeComCalls != 1 {
		t.Errorf("stable_token calls %d (want 2: one per app), gettoken calls %d (want 1)", st.StableCalls, st.WeComCalls)
	}

	// Again: WeChat hands out the same tokens, no new one.
	issued := st.Issued()
	if _, err := checkCredentials(context.Background(), raw, &certmagic.FileStorage{Path: t.TempDir()}, srv.Client()); err != nil {
		t.Fatal(err)
	}
	if n := emu.Stats().Issued(); n != issued {
		t.Errorf("a second check issued %d new tokens", n-issued)
	}
}

func TestCheckLineFormat(t *testing.T) {
	for _, c := range []struct {
		line checkLine
		want string
	}{
		{checkLine{OK: true, Subject: "wechat_token app_id wx1 (token_api stable, https://api.weixin.qq.com)", Detail: "access_token obtained with stable_token, 7200 s left"},
			"OK    wechat_token app_id wx1 (token_api stable, https://api.weixin.qq.com): access_token obtained with stable_token, 7200 s left"},
		{checkLine{Subject: "component platform (component_appid wxc)", Detail: "no component_verify_ticket"},
			"FAIL  component platform (component_appid wxc): no component_verify_ticket"},
	} {
		if got := c.line.String(); got != c.want {
			t.Errorf("%q, want %q", got, c.want)
		}
	}
	var b strings.Builder
	failed := writeCheck(&b, []checkLine{{OK: true, Subject: "a", Detail: "b"}, {Subject: "c", Detail: "d"}})
	if failed != 1 || !slices.Contains(strings.Split(b.String(), "\n"), "1 of 2 WeChat credentials OK") {
		t.Errorf("writeCheck: %d failed, wrote %q", failed, b.String())
	}
}

func TestFindHandlersInOrder(t *testing.T) {
	raw := `{"servers":{"b":{"routes":[{"handle":[{"handler":"x","n":3}]}]},
		"a":{"routes":[{"handle":[{"handler":"subroute","routes":[{"handle":[{"handler":"x","n":1}]}]},{"handler":"x","n":2}]}]}}}`
	found, err := findHandlers(json.RawMessage(raw))
	if err != nil {
		t.Fatal(err)
	}
	var order []string
	for _, h := range found {
		order = append(order, handlerName(h))
		var n struct{ N int }
		_ = json.Unmarshal(h, &n)
		order[len(order)-1] += string(rune('0' + n.N))
	}
	if want := []string{"subroute0", "x1", "x2", "x3"}; !slices.Equal(order, want) {
		t.Errorf("handlers in the order %v, want %v", order, want)
	}
	if _, err := findHandlers(nil); err != nil {
		t.Errorf("no http app: %v", err)
	}
}

func TestCheckFollowsNoRedirect(t *testing.T) {
	const appID, secret = "wxcheck000000009", "check-redirect-secret-0123456789"
	emu := emulator.New(emulator.Config{Apps: map[string]string{appID: secret}, NoCompression: true})
	target := httptest.NewServer(emu)
	t.Cleanup(target.Close)
	t.Cleanup(emu.Close)
	// A 307 would re-send the body, secret and all, wherever it points.
	redirector := httptest.NewServer(http.RedirectHandler(target.URL+"/cgi-bin/stable_token", http.StatusTemporaryRedirect))
	t.Cleanup(redirector.Close)
	config := fmt.Sprintf(`{"apps":{"http":{"servers":{"s":{"routes":[{"handle":[{"handler":"wechat_token","app_id":%q,"app_secret":%q,"api_base":%q}]}]}}}}}`,
		appID, secret, redirector.URL)
	lines, err := checkCredentials(context.Background(), []byte(config), &certmagic.FileStorage{Path: t.TempDir()}, redirector.Client())
	if err != nil {
		t.Fatal(err)
	}
	if len(lines) != 1 || lines[0].OK || !strings.Contains(lines[0].Detail, "redirects are never followed") || strings.Contains(lines[0].String(), secret) {
		t.Fatalf("lines %q, want one failure saying the redirect was not followed", lines)
	}
	if n := emu.Stats().StableCalls; n != 0 {
		t.Errorf("the redirect was followed: %d stable_token calls reached its target", n)
	}
}
