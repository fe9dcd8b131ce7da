package tests

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os/exec"
	"strings"
	"testing"

	"github.com/caddy-wechat/caddy-wechat/emulator"
)

type tokenAnswer struct {
	AccessToken string `json:"access_token"`
	ExpiresIn   int64  `json:"expires_in"`
	Errcode     int64  `json:"errcode"`
}

func TestTokenEndpointBehindAccessControl(t *testing.T) {
	w := startWeChat(t, emulator.Config{})
	// The lowest bcrypt cost: the test is about who gets through, and at
	// the default cost every check takes seconds under the race detector.
	hash, err := exec.Command(caddyBin, "hash-password", "--algorithm", "bcrypt", "--bcrypt-cost", "4", "--plaintext", "jssdk-password").Output()
	if err != nil {
		t.Fatal(err)
	}
	value := strings.Replace(w.tokenBlock("classic"), "wechat_token {", "wechat_token_value {", 1)
	value = value[:strings.LastIndex(value, "reverse_proxy")]
	site := fmt.Sprintf(`@inside {
		path /inside/token
		remote_ip 127.0.0.0/8
	}
	handle @inside {
		basic_auth {
			jssdk %s
		}
		%s
	}
	@outside {
		path /outside/token
		remote_ip 10.0.0.0/8
	}
	handle @outside {
		%s
	}
	handle /outside/token {
		respond "forbidden" 403
	}
	handle {
		%s
	}`, strings.TrimSpace(string(hash)), value, value, w.tokenBlock("classic"))
	c := startCaddy(t, w, site)

	call := func(method, path, body string, auth bool) (int, tokenAnswer) {
		t.Helper()
		req, _ := http.NewRequest(method, c.url(path), strings.NewReader(body))
		if auth {
			req.SetBasicAuth("jssdk", "jssdk-password")
		}
		if body != "" {
			req.Header.Set("Content-Type", "application/json")
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		raw, _ := io.ReadAll(resp.Body)
		var a tokenAnswer
		_ = json.Unmarshal(raw, &a)
		if resp.StatusCode == 200 && resp.Header.Get("Cache-Control") != "no-store" {
			t.Fatalf("token answer may be cached: %q", resp.Header.Get("Cache-Control"))
		}
		return resp.StatusCode, a
	}

	if code, _ := call(http.MethodGet, "/outside/token", "", true); code != 403 {
		t.Fatalf("caller outside the allowed range: %d", code)
	}
	if code, _ := call(http.MethodGet, "/inside/token", "", false); code != 401 {
		t.Fatalf("caller without credentials: %d", code)
	}
	code, first := call(http.MethodGet, "/inside/token", "", true)
	if code != 200 || first.AccessToken == "" || first.ExpiresIn < 7000 {
		t.Fatalf("token endpoint: %d %+v", code, first)
	}
	// The endpoint and the proxy share one token: it works at WeChat, and
	// nothing more was fetched for the proxy.
	if a := get(t, w.URL+"/cgi-bin/user/info?openid=o1&access_token="+first.AccessToken); a.Errcode != 0 {
		t.Fatalf("served token rejected by WeChat: %+v", a.Echo)
	}
	if a := get(t, c.url("/cgi-bin/user/info?openid=o1")); a.Errcode != 0 || w.issued() != 1 {
		t.Fatalf("proxy: %+v after %d fetches", a.Echo, w.issued())
	}

	// A caller reporting a token that is not the current one refreshes
	// nothing.
	if code, a := call(http.MethodPost, "/inside/token", `{"access_token":"some-old-token"}`, true); code != 200 || a.AccessToken != first.AccessToken || w.issued() != 1 {
		t.Fatalf("stale report: %d, same token %v, %d fetches", code, a.AccessToken == first.AccessToken, w.issued())
	}
	// Reporting the current one after WeChat revoked it: one refresh,
	// however many callers report it.
	w.Revoke(w.AppID)
	var renewed string
	for range 3 {
		code, a := call(http.MethodPost, "/inside/token", `{"access_token":"`+first.AccessToken+`"}`, true)
		if code != 200 || a.AccessToken == first.AccessToken {
			t.Fatalf("refresh: %d %+v", code, a.Errcode)
		}
		renewed = a.AccessToken
	}
	if n := w.issued(); n != 2 {
		t.Fatalf("%d fetches for three reports of one rejected token", n)
	}
	if a := get(t, w.URL+"/cgi-bin/user/info?openid=o1&access_token="+renewed); a.Errcode != 0 {
		t.Fatalf("renewed token rejected: %+v", a.Echo)
	}
	if code, a := call(http.MethodPost, "/inside/token", `{}`, true); code != 400 || a.Errcode != -1 {
		t.Fatalf("POST without a token: %d errcode %d", code, a.Errcode)
	}
	if code, a := call(http.MethodDelete, "/inside/token", "", true); code != 405 || a.Errcode != -1 {
		t.Fatalf("DELETE: %d errcode %d", code, a.Errcode)
	}
}
