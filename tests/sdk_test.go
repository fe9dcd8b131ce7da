package tests

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/caddy-wechat/caddy-wechat/emulator"
)

// Real SDKs, pointed at the proxy as the README's "From your SDK" says,
// their token hooks returning a placeholder: normal calls, an upload, a
// download, calls after a revocation, and the proxy's own answers (502 from
// an upstream that refuses connections, 503 without a token) surfacing as
// errors. The SDK programs are in tests/sdk; make test installs what they
// need (npm ci; the Go one is its own module).
func TestRealSDKsThroughTheProxy(t *testing.T) {
	t.Parallel() // long and mostly waiting: overlaps the others
	sdks := []struct {
		name string
		cmd  func(ctx context.Context) (*exec.Cmd, error)
	}{
		{"node wechat-api", func(ctx context.Context) (*exec.Cmd, error) {
			if _, err := os.Stat("sdk/node/node_modules/wechat-api"); err != nil {
				return nil, fmt.Errorf("wechat-api is not installed: run make sdk-deps (npm ci in tests/sdk/node): %w", err)
			}
			return exec.CommandContext(ctx, "node", "sdk/node/check.js"), nil
		}},
		{"go silenceper/wechat", func(ctx context.Context) (*exec.Cmd, error) {
			bin := filepath.Join(binDir, "sdkcheck")
			build := exec.CommandContext(ctx, "go", "build", "-C", "sdk/go", "-o", bin, ".")
			if out, err := build.CombinedOutput(); err != nil {
				return nil, fmt.Errorf("building tests/sdk/go: %v\n%s", err, out)
			}
			return exec.CommandContext(ctx, bin), nil
		}},
	}
	for _, sdk := range sdks {
		t.Run(sdk.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
			defer cancel()
			w, c, env := sdkProxy(t)
			before := w.Stats()
			cmd, err := sdk.cmd(ctx)
			if err != nil {
				t.Fatal(err)
			}
			cmd.Env = env
			out, err := cmd.CombinedOutput()
			t.Logf("%s:\n%s", sdk.name, out)
			if err != nil {
				t.Fatalf("%s failed: %v", sdk.name, err)
			}
			n := 0
			for _, line := range strings.Split(string(out), "\n") {
				if strings.HasPrefix(line, "ok   ") {
					n++
				}
			}
			if n < 10 {
				t.Fatalf("%s ran %d checks", sdk.name, n)
			}
			// Two revocations: the proxy fetched two tokens for the SDK's
			// calls, and the SDK none (it has only a placeholder).
			after := w.Stats()
			if issued := after.IssuedByApp[w.AppID] - before.IssuedByApp[w.AppID]; issued != 2 {
				t.Fatalf("%d tokens issued during the SDK's run, want 2 (one per revocation)", issued)
			}
			if n := c.scrape(t); metric(t, n, "caddy_wechat_token_retried_requests_total", `token_api="stable"`, `outcome="ok"`) != 2 {
				t.Fatal("the proxy did not replay the two calls after the revocations")
			}
		})
	}
}

// sdkProxy runs an emulator and a Caddy for one SDK's run: the proxy at
// PROXY, DEAD (an upstream that refuses connections) and NOTOKEN (an app
// whose secret is wrong), passed to the SDK program in its environment.
func sdkProxy(t *testing.T) (*wechat, *caddy, []string) {
	t.Helper()
	w := startWeChat(t, emulator.Config{})
	dead := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	c := startCaddy(t, w, fmt.Sprintf(`handle_path /dead/* {
		wechat_token {
			app_id %[1]s
			app_secret {env.WX_IT_SECRET}
			api_base %[2]s
		}
		reverse_proxy %[3]s
	}
	handle_path /notoken/* {
		wechat_token {
			app_id %[1]s
			app_secret not-the-secret
			token_api classic
			api_base %[2]s
			fetch_timeout 1s
		}
		reverse_proxy %[2]s
	}
	handle {
		%[4]s
	}`, w.AppID, w.URL, dead, w.tokenBlock("stable")))
	c.secrets = append(c.secrets, "not-the-secret")
	// The first token, fetched as the config starts, is not the SDK's doing.
	if a := get(t, c.url("/cgi-bin/get_api_domain_ip")); a.Errcode != 0 {
		t.Fatalf("first request: %s", a.Raw)
	}
	return w, c, append(os.Environ(),
		"PROXY="+c.url(""), "DEAD="+c.url("/dead"), "NOTOKEN="+c.url("/notoken"),
		"EMULATOR="+w.URL, "APPID="+w.AppID)
}
