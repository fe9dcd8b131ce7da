package credential

import (
	"context"
	"errors"
	"github.com/caddy-wechat/caddy-wechat/caddymodule/token"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddy-wechat/caddy-wechat/emulator"
)

const testSecret = "0123456789abcdef-very-secret"

func emulatorServer(t *testing.T, cfg emulator.Config) (*emulator.Server, string) {
	t.Helper()
	if cfg.Apps == nil {
		cfg.Apps = map[string]string{"wxapp": testSecret}
	}
	emu := emulator.New(cfg)
	srv := httptest.NewServer(emu)
	t.Cleanup(srv.Close)
	t.Cleanup(emu.Close)
	return emu, srv.URL
}

func TestHTTPFetcherBothAPIs(t *testing.T) {
	emu, base := emulatorServer(t, emulator.Config{TokenLength: 512})
	for _, api := range []*Kind{Classic, Stable} {
		f := httpFetcher(api, base+"/", "wxapp", testSecret, nil)
		got, err := f.Fetch(context.Background(), false)
		if err != nil {
			t.Fatalf("%s: %v", api, err)
		}
		if len(got.Value) != 512 || got.ExpiresIn != 7200*time.Second {
			t.Fatalf("%s: token of %d chars, expires in %s", api, len(got.Value), got.ExpiresIn)
		}
	}
	f := httpFetcher(Stable, base, "wxapp", testSecret, nil)
	if _, err := f.Fetch(context.Background(), true); err != nil {
		t.Fatalf("forced: %v", err)
	}
	if st := emu.Stats(); st.ClassicIssued != 1 || st.StableIssued != 2 || st.ForcedIssued != 1 {
		t.Fatalf("emulator saw %+v", st)
	}
}

func TestHTTPFetcherErrorsNameTheCauseNotTheSecret(t *testing.T) {
	emu, base := emulatorServer(t, emulator.Config{})
	wrong := httpFetcher(Classic, base, "wxapp", "wrong-secret-value", nil)
	_, err := wrong.Fetch(context.Background(), false)
	var apiErr *token.APIError
	if !errors.As(err, &apiErr) || apiErr.Code != 40125 {
		t.Fatalf("wrong secret: %v", err)
	}
	if strings.Contains(err.Error(), "wrong-secret-value") || !strings.Contains(err.Error(), "invalid AppSecret") {
		t.Fatalf("error text: %v", err)
	}

	emu.SetFaults(emulator.Faults{TokenEndpoint: emulator.FaultIPWhitelist})
	f := httpFetcher(Stable, base, "wxapp", testSecret, nil)
	if _, err := f.Fetch(context.Background(), false); err == nil || !strings.Contains(err.Error(), "WeChat saw the IP 127.0.0.1") {
		t.Fatalf("whitelist error does not name the IP: %v", err)
	}

	for fault, want := range map[string]string{
		emulator.FaultHTTP503: "HTTP 503",
		emulator.FaultGarbage: "not a JSON object",
	} {
		emu.SetFaults(emulator.Faults{TokenEndpoint: fault})
		if _, err := f.Fetch(context.Background(), false); err == nil || !strings.Contains(err.Error(), want) {
			t.Fatalf("%s: %v", fault, err)
		}
	}

	emu.SetFaults(emulator.Faults{TokenEndpoint: emulator.FaultHang})
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if _, err := f.Fetch(ctx, false); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("hang: %v", err)
	}
}

// A transport error's *url.Error would print the classic URL, secret and
// all; the fetcher must strip it.
func TestHTTPFetcherTransportErrorHidesSecret(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens there now
	f := httpFetcher(Classic, "http://"+addr, "wxapp", testSecret, &http.Client{})
	_, err = f.Fetch(context.Background(), false)
	if err == nil {
		t.Fatal("no error from a closed port")
	}
	if strings.Contains(err.Error(), testSecret) || strings.Contains(err.Error(), "secret=") {
		t.Fatalf("error reveals the secret: %v", err)
	}
}

func TestParseAnswer(t *testing.T) {
	for name, c := range map[string]struct {
		status int
		body   string
		want   string // substring of the error, or "" for success
	}{
		"ok":              {200, `{"access_token":"abc","expires_in":7200}`, ""},
		"plain text type": {200, ` {"access_token":"abc","expires_in":60}`, ""},
		"empty":           {200, ``, "not a JSON object"},
		"html":            {502, `<html>bad gateway</html>`, "HTTP 502"},
		"errcode":         {200, `{"errcode":45009,"errmsg":"reach max api daily quota limit rid: 1"}`, "daily API quota"},
		"no token":        {200, `{"expires_in":7200}`, "no access_token"},
		"zero expiry":     {200, `{"access_token":"abc","expires_in":0}`, "not a positive"},
		"negative":        {200, `{"access_token":"abc","expires_in":-5}`, "not a positive"},
		"missing expiry":  {200, `{"access_token":"abc"}`, "no numeric expires_in"},
		"truncated":       {200, `{"access_token":"abc","expi`, "not a JSON object"},
		"echoed secret":   {200, `{"errcode":40125,"errmsg":"bad ` + testSecret + `"}`, "[app_secret]"},
	} {
		got, err := parseAnswer(c.status, []byte(c.body), "access_token", testSecret)
		switch {
		case c.want == "" && err != nil:
			t.Errorf("%s: %v", name, err)
		case c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)):
			t.Errorf("%s: error %v, want it to mention %q", name, err, c.want)
		case err != nil && strings.Contains(err.Error(), testSecret):
			t.Errorf("%s: error reveals the secret", name)
		case c.want == "" && got.Value != "abc":
			t.Errorf("%s: token %q", name, got.Value)
		}
	}
	huge, err := parseAnswer(200, []byte(`{"access_token":"abc","expires_in":1e12}`), "access_token", "")
	if err != nil || huge.ExpiresIn != token.MaxLifetime {
		t.Fatalf("absurd expires_in: %v, %v", huge.ExpiresIn, err)
	}
}

// A token endpoint answering with a redirect is an error naming where it
// pointed; the secret is never sent there.
func TestHTTPFetcherFollowsNoRedirect(t *testing.T) {
	var reached atomic.Int32
	elsewhere := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { reached.Add(1) }))
	defer elsewhere.Close()
	for _, code := range []int{http.StatusFound, http.StatusTemporaryRedirect, http.StatusPermanentRedirect} {
		redirector := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			http.Redirect(w, r, elsewhere.URL+r.URL.Path, code)
		}))
		for _, api := range []*Kind{Classic, Stable} {
			f := httpFetcher(api, redirector.URL, "wxapp", testSecret, &http.Client{})
			_, err := f.Fetch(context.Background(), false)
			host := strings.TrimPrefix(elsewhere.URL, "http://")
			if err == nil || !strings.Contains(err.Error(), "redirected to "+host) {
				t.Errorf("%d, %s: err = %v", code, api, err)
			} else if strings.Contains(err.Error(), testSecret) {
				t.Errorf("%d, %s: error reveals the secret: %v", code, api, err)
			}
		}
		redirector.Close()
	}
	if n := reached.Load(); n != 0 {
		t.Fatalf("the redirect target got %d requests", n)
	}
}

func TestHTTPFetcherWeCom(t *testing.T) {
	const corpSecret = "corp-app-secret-0123456789"
	emu, base := emulatorServer(t, emulator.Config{Corps: map[string][]string{"ww1": {corpSecret}}})
	f := httpFetcher(WeCom, base, "ww1", corpSecret, nil)
	got, err := f.Fetch(context.Background(), false)
	if err != nil || got.Value == "" || got.ExpiresIn != token.MaxLifetime {
		t.Fatalf("gettoken: %+v, %v", got, err)
	}
	for secret, code := range map[string]int64{"wrong-corp-secret": 40001} {
		_, err := httpFetcher(WeCom, base, "ww1", secret, nil).Fetch(context.Background(), false)
		var apiErr *token.APIError
		if !errors.As(err, &apiErr) || apiErr.Code != code || strings.Contains(err.Error(), secret) {
			t.Fatalf("wrong secret: %v", err)
		}
	}
	emu.SetFaults(emulator.Faults{TokenEndpoint: emulator.FaultIPWhitelist})
	_, err = f.Fetch(context.Background(), false)
	if err == nil || !strings.Contains(err.Error(), "errcode 60020") || !strings.Contains(err.Error(), "WeChat saw the IP 127.0.0.1") ||
		strings.Contains(err.Error(), corpSecret) {
		t.Fatalf("WeCom's untrusted IP error: %v", err)
	}
}

// No fetch error shows the secret, whatever the token endpoint does: the
// classic endpoint takes it in the query, which transport errors print.
func TestNoFetchErrorShowsTheSecret(t *testing.T) {
	emu, base := emulatorServer(t, emulator.Config{})
	for _, fault := range []string{emulator.FaultBusy, emulator.FaultHTTP503, emulator.FaultGarbage, emulator.FaultHTML,
		emulator.FaultEmpty, emulator.FaultReset, emulator.FaultIPWhitelist, emulator.FaultHang, emulator.FaultExpiresZero} {
		emu.SetFaults(emulator.Faults{TokenEndpoint: fault})
		for _, api := range []*Kind{Classic, Stable} {
			f := httpFetcher(api, base, "wxapp", testSecret, &http.Client{Timeout: 300 * time.Millisecond})
			_, err := f.Fetch(context.Background(), false)
			if err == nil {
				t.Fatalf("%s, %s: no error", fault, api)
			}
			if strings.Contains(err.Error(), testSecret) {
				t.Fatalf("%s, %s: the error shows the secret: %v", fault, api, err)
			}
		}
	}
	// Nothing listening at all.
	f := httpFetcher(Classic, "http://127.0.0.1:1", "wxapp", testSecret, nil)
	if _, err := f.Fetch(context.Background(), false); err == nil || strings.Contains(err.Error(), testSecret) {
		t.Fatalf("refused connection: %v", err)
	}
}
