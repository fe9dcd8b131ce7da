package caddymodule

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
)

// FuzzCaddyfile feeds arbitrary directive bodies to the Caddyfile parser
// and the validation behind Provision: they must fail with an error, never
// a panic, and never quote the secret.
func FuzzCaddyfile(f *testing.F) {
	for _, seed := range []string{
		"app_id wx1\napp_secret s3cr3t_value_0123",
		"app_id wx1\napp_secret {env.X}\ntoken_api classic\napi_base http://127.0.0.1:1\nrefresh_ahead 5m",
		"retry_on 40001 42001\nmax_replay_body 1MiB\nfetch_timeout 1s\nmin_refresh_interval 0s",
		"passthrough /sns/ /x\nretry_on 0", "app_id\n", "api_base ftp://x", "max_replay_body -1", "{\n}", "app_id \"a b\"",
		"refresh_ahead -5m", "passthrough cgi-bin", "unknown_option 1",
	} {
		f.Add(seed)
	}
	const secret = "fuzz_secret_value_that_must_not_leak"
	f.Fuzz(func(t *testing.T, body string) {
		if strings.Contains(body, secret) {
			return // an input quoting the secret elsewhere may see it quoted back
		}
		// The secret is always configured, for an Official Account or a
		// WeCom app, so that every error path, the parser's included, is
		// checked for it.
		head := "app_secret " + secret + "\n"
		if len(body)%2 == 1 {
			head = "corp_secret " + secret + "\n"
		}
		// Not NewTestDispenser: it exits the process on input it cannot
		// tokenize (a bad heredoc), which the fuzzer finds.
		tokens, err := caddyfile.Tokenize([]byte("wechat_token {\n"+head+body+"\n}"), "Caddyfile")
		if err != nil {
			if strings.Contains(err.Error(), secret) {
				t.Fatalf("tokenizer error quotes the secret: %v", err)
			}
			return
		}
		d := caddyfile.NewDispenser(tokens)
		var h Handler
		if err := h.UnmarshalCaddyfile(d); err != nil {
			if strings.Contains(err.Error(), secret) {
				t.Fatalf("parse error quotes the secret: %v", err)
			}
			return
		}
		if _, err := json.Marshal(h); err != nil {
			t.Fatalf("parsed config does not marshal: %v", err)
		}
		if _, err := h.spec(); err != nil && strings.Contains(err.Error(), secret) {
			t.Fatalf("validation error quotes the secret: %v", err)
		}
	})
}
