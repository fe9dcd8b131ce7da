package tests

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/caddy-wechat/caddy-wechat/emulator"
)

// Invalid configs fail when loaded, with a message naming the field.
func TestInvalidConfigFailsAtLoadNamingTheField(t *testing.T) {
	dir := t.TempDir()
	for i, c := range []struct{ block, want, global string }{
		{"app_secret x", "app_id is required", ""},
		{"app_id wx1", "app_secret is required", ""},
		// The variable and the app are named: with several apps, which one.
		{"app_id wx1\n app_secret {env.WX_IT_UNSET}", "wechat_token (app_id wx1): app_secret is empty once placeholders are expanded ({env.WX_IT_UNSET}): environment variable WX_IT_UNSET is not set", ""},
		{"app_id wx1\n app_secret x", `replay_budget: "much" is not a size`, "wechat {\n replay_budget much\n}"},
		{"app_id wx1\n app_secret x", `replay_temp_dir "/nonexistent/tmp" is not a directory`, "wechat {\n replay_temp_dir /nonexistent/tmp\n}"},
		{"app_id wx1\n app_secret x", `replay_memory (1048576 bytes) is larger than replay_budget`, "wechat {\n replay_budget 64KiB\n replay_memory 1MiB\n}"},
		{"app_id wx1\n app_secret x\n token_api fast", "token_api", ""},
		{"app_id wx1\n app_secret x\n api_base ftp://x", "api_base", ""},
		{"app_id wx1\n app_secret x\n refresh_ahead -5m", "refresh_ahead: must not be negative", ""},
		{"app_id wx1\n app_secret x\n retry_on 40001 forty", `is not a numeric errcode`, ""},
		{"app_id wx1\n app_secret x\n max_replay_body much", "max_replay_body", ""},
		{"app_id wx1\n app_secret x\n passthrough cgi-bin", `passthrough: "cgi-bin" is not a path prefix`, ""},
		{"app_id wx1\n app_secret x\n passthrough /sns/ /cgi-bin/", `passthrough: "/cgi-bin/" would let clients reach WeChat's token endpoints`, ""},
		{"corp_id ww1\n corp_secret x\n token_api stable", "token_api does not apply to WeCom", ""},
	} {
		file := filepath.Join(dir, fmt.Sprintf("Caddyfile%d", i))
		config := fmt.Sprintf("{\n\tadmin off\n%s\n}\n:0 {\n\twechat_token {\n %s\n\t}\n\treverse_proxy 127.0.0.1:9\n}\n", c.global, c.block)
		if err := os.WriteFile(file, []byte(config), 0o600); err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command(caddyBin, "validate", "--config", file, "--adapter", "caddyfile")
		cmd.Env = append(os.Environ(), "HOME="+dir, "XDG_DATA_HOME="+dir, "XDG_CONFIG_HOME="+dir)
		out, err := cmd.CombinedOutput()
		if err == nil {
			t.Errorf("%q: validated", c.block)
			continue
		}
		if !strings.Contains(strings.ReplaceAll(string(out), `\"`, `"`), c.want) { // JSON log lines escape quotes
			t.Errorf("%q: output does not mention %q:\n%s", c.block, c.want, tail(string(out), 600))
		}
	}
}

func TestJSONConfig(t *testing.T) {
	w := startWeChat(t, emulator.Config{})
	c := &caddy{t: t, dir: t.TempDir(), wechat: w, logs: &syncBuffer{}, exited: make(chan struct{}),
		secrets: []string{w.Secret}}
	c.admin = fmt.Sprintf("127.0.0.1:%d", freePort(t))
	c.site = fmt.Sprintf("127.0.0.1:%d", freePort(t))
	config := map[string]any{
		"admin":   map[string]any{"listen": c.admin},
		"logging": map[string]any{"logs": map[string]any{"default": map[string]any{"level": "DEBUG"}}},
		"apps": map[string]any{"http": map[string]any{"servers": map[string]any{"wechat": map[string]any{
			"listen":          []string{c.site},
			"automatic_https": map[string]any{"disable": true},
			"routes": []any{map[string]any{"handle": []any{
				map[string]any{
					"handler":       "wechat_token",
					"app_id":        w.AppID,
					"app_secret":    "{env.WX_IT_SECRET}",
					"token_api":     "classic",
					"api_base":      w.URL,
					"refresh_ahead": "2m",
					"retry_on":      []int{40001, 42001, 40014},
				},
				map[string]any{"handler": "reverse_proxy", "upstreams": []any{map[string]any{"dial": strings.TrimPrefix(w.URL, "http://")}}},
			}}},
		}}}},
	}
	raw, _ := json.Marshal(config)
	file := filepath.Join(c.dir, "caddy.json")
	if err := os.WriteFile(file, raw, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := c.start(t, "--config", file); err != nil {
		t.Fatal(err)
	}
	if a := get(t, c.url("/cgi-bin/user/info?openid=o1")); a.Errcode != 0 || a.TokenParams != 1 {
		t.Fatalf("answer %+v", a.Echo)
	}
	w.Revoke(w.AppID)
	if a := get(t, c.url("/cgi-bin/user/info?openid=o1")); a.Errcode != 0 {
		t.Fatalf("after revocation %+v", a.Echo)
	}
}

func TestSeveralAppsByPath(t *testing.T) {
	other := "wxit000000000002"
	w := startWeChat(t, emulator.Config{Apps: map[string]string{other: "other-app-secret-value"}})
	site := fmt.Sprintf(`handle_path /first/* {
		%s
	}
	handle_path /second/* {
		wechat_token {
			app_id %s
			app_secret other-app-secret-value
			api_base %s
		}
		reverse_proxy %s
	}`, w.tokenBlock("stable"), other, w.URL, w.URL)
	c := startCaddy(t, w, site)
	c.secrets = append(c.secrets, "other-app-secret-value")
	for prefix, app := range map[string]string{"/first": w.AppID, "/second": other} {
		a := get(t, c.url(prefix+"/cgi-bin/user/info?openid=o1"))
		if a.Errcode != 0 || a.AppID != app || a.Path != "/cgi-bin/user/info" {
			t.Fatalf("%s: %+v", prefix, a.Echo)
		}
	}
	if st := w.Stats(); st.IssuedByApp[w.AppID] != 1 || st.IssuedByApp[other] != 1 {
		t.Fatalf("tokens by app %v", st.IssuedByApp)
	}
}

// The Caddyfiles shipped in the repository adapt without errors or warnings.
func TestShippedCaddyfilesAdapt(t *testing.T) {
	for _, file := range []string{"../Caddyfile.example", "../demo/Caddyfile"} {
		out, err := exec.Command(caddyBin, "adapt", "--config", file, "--adapter", "caddyfile").CombinedOutput()
		if err != nil {
			t.Errorf("%s: %v\n%s", file, err, tail(string(out), 1000))
			continue
		}
		if strings.Contains(string(out), `"level":"warn"`) {
			t.Errorf("%s: warnings:\n%s", file, tail(string(out), 1000))
		}
	}
}

// The README's access-log filter removes a token a client sent itself.
func TestAccessLogQueryFilterDeletesClientToken(t *testing.T) {
	w := startWeChat(t, emulator.Config{})
	c := startCaddyWith(t, w, w.tokenBlock("stable"), caddyOptions{accessFormat: `format filter {
			request>uri query {
				delete access_token
			}
			wrap json
		}`})
	const clientToken = "CLIENT-SENT-TOKEN-0123456789"
	if a := get(t, c.url("/cgi-bin/user/info?openid=o1&access_token="+clientToken)); a.Errcode != 0 {
		t.Fatalf("answer %+v", a.Echo)
	}
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(c.accessLog(t), "openid=o1") {
		if time.Now().After(deadline) {
			t.Fatalf("no access log entry:\n%s", c.accessLog(t))
		}
		time.Sleep(20 * time.Millisecond)
	}
	if log := c.accessLog(t); strings.Contains(log, clientToken) {
		t.Fatalf("access log holds the client's token:\n%s", log)
	}
}
