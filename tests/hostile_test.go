package tests

import (
	"bytes"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/caddy-wechat/caddy-wechat/emulator"
)

// Hostile and broken input from clients and from WeChat: nothing lost,
// nothing leaked, the quota never burned.

func TestSNSCallsKeepTheUsersToken(t *testing.T) {
	w, c := startProxy(t, emulator.Config{}, "stable")
	for _, path := range []string{"/sns/userinfo", "/sns/auth", "/cgi-bin/../sns/userinfo", "/%73ns/userinfo"} {
		a := get(t, c.url(path+"?access_token=USER_OAUTH_TOKEN&openid=o1&lang=zh_CN"))
		if a.Errcode != 0 || a.UserToken != "USER_OAUTH_TOKEN" || a.TokenParams != 1 || a.AppID != "" {
			t.Fatalf("%s: the user's token did not pass untouched: %+v", path, a.Echo)
		}
	}
	// The app's token still goes everywhere else.
	if a := get(t, c.url("/cgi-bin/user/info?openid=o1")); a.Errcode != 0 || a.AppID != w.AppID {
		t.Fatalf("API call: %+v", a.Echo)
	}

	// A configured list replaces the default.
	w2 := startWeChat(t, emulator.Config{})
	c2 := startCaddy(t, w2, w2.tokenBlock("stable", "passthrough /custom/ /other"))
	if a := get(t, c2.url("/sns/userinfo?access_token=USER&openid=o1")); a.AppID != w2.AppID || a.UserToken == "USER" {
		t.Fatalf("with passthrough /custom/, /sns/ should get the app token: %+v", a.Echo)
	}
	// The emulator refuses the client's own token there: ours was not added.
	if a := get(t, c2.url("/custom/call?access_token=MINE")); a.Errcode != 40001 {
		t.Fatalf("/custom/ should pass through with the client's token: %+v", a.Echo)
	}
}

func TestTokenEndpointsAreRefusedHoweverSpelled(t *testing.T) {
	w, c := startProxy(t, emulator.Config{}, "classic")
	before := w.Stats()
	// A client holding the secret (not the test's: that one must never
	// reach a log, and the access log records the client's URI).
	const clientsCopy = "client-held-secret"
	query := "?grant_type=client_credential&appid=" + w.AppID + "&secret=" + clientsCopy
	for _, path := range []string{
		"/cgi-bin/token", "/cgi-bin/stable_token", "/CGI-BIN/Token", "/cgi-bin//token", "/cgi-bin/./token",
		"/cgi-bin/x/../token", "/cgi-bin/%74oken", "/cgi-bin/token/", "/cgi-bin/token;jsessionid=1",
		"//cgi-bin/stable_token", "/cgi-bin%2Ftoken",
	} {
		for _, method := range []string{http.MethodGet, http.MethodPost} {
			req, _ := http.NewRequest(method, c.url(path+query), strings.NewReader(`{"grant_type":"client_credential","appid":"`+w.AppID+`","secret":"`+clientsCopy+`"}`))
			a := do(t, req)
			if a.Status != http.StatusForbidden || a.Errcode != -1 || !strings.Contains(a.Errmsg, "not served through the token proxy") {
				t.Fatalf("%s %s: %d %s", method, path, a.Status, a.Raw)
			}
		}
	}
	if after := w.Stats(); after.TokenCalls != before.TokenCalls || after.StableCalls != before.StableCalls {
		t.Fatalf("a client reached the token endpoint: %+v then %+v", before, after)
	}
	// Paths that merely start alike are API calls as any other.
	if a := get(t, c.url("/cgi-bin/token_info?x=1")); a.Errcode != 0 || a.AppID != w.AppID {
		t.Fatalf("/cgi-bin/token_info: %+v", a.Echo)
	}
}

func TestClientTokensEndWithExactlyOurs(t *testing.T) {
	w, c := startProxy(t, emulator.Config{}, "stable")
	for _, query := range []string{
		"access_token=a&access_token=b&x=1",
		"ACCESS_TOKEN=a&x=1",
		"Access_Token=a&x=1",
		"access%5Ftoken=a&x=1",
		"%61ccess_token=a&x=1",
		"x=1&access_token=",
		"access_token&x=1",
	} {
		a := get(t, c.url("/cgi-bin/user/%69nfo?"+query))
		if a.Errcode != 0 || a.TokenParams != 1 || a.AppID != w.AppID || a.Query != "x=1" || a.Path != "/cgi-bin/user/info" {
			t.Fatalf("%q: %+v", query, a.Echo)
		}
	}
	// A token in a form body is dropped; the rest of the body is kept byte for byte.
	form := []byte("touser=o1&access_token=CLIENT&content=%E4%BD%A0%E5%A5%BD+hi&ACCESS_TOKEN=x")
	a := post(t, c.url("/cgi-bin/message/custom/send"), "application/x-www-form-urlencoded; charset=utf-8", form)
	want := []byte("touser=o1&content=%E4%BD%A0%E5%A5%BD+hi")
	if a.Errcode != 0 || a.TokenParams != 1 || a.AppID != w.AppID || a.BodySHA256 != sha(want) || a.BodyBytes != len(want) {
		t.Fatalf("form body: %+v", a.Echo)
	}
	// JSON bodies are never touched, whatever they hold.
	js := []byte(`{"access_token":"CLIENT","touser":"o1"}`)
	if a := post(t, c.url("/cgi-bin/message/custom/send"), "application/json", js); a.BodySHA256 != sha(js) {
		t.Fatalf("JSON body changed: %+v", a.Echo)
	}
}

// tokenFaultCase is a way WeChat's token endpoint can fail, and what the
// client and the log must say about it.
type tokenFaultCase struct {
	fault string
	// inErrmsg is in the 503's errmsg and in a log line.
	inErrmsg string
}

func TestTokenEndpointFaultsAreClearBoundedAndRecovered(t *testing.T) {
	for _, fc := range []tokenFaultCase{
		{emulator.FaultGarbage, "not a JSON object"},
		{emulator.FaultHTML, "not a JSON object"},
		{emulator.FaultEmpty, "0 bytes"},
		{emulator.FaultHTTP503, "HTTP 503"},
		{emulator.FaultReset, "connection reset"},
		{emulator.FaultBusy, "errcode -1"},
		{emulator.FaultExpiresZero, "expires_in is 0"},
		{emulator.FaultExpiresNegative, "expires_in is -7200"},
		{emulator.FaultExpiresMissing, "no numeric expires_in"},
	} {
		t.Run(fc.fault, func(t *testing.T) {
			t.Parallel()
			w := startWeChat(t, emulator.Config{})
			w.SetFaults(emulator.Faults{TokenEndpoint: fc.fault})
			c := startCaddy(t, w, w.tokenBlock("stable", "fetch_timeout 2s"))
			a := get(t, c.url("/cgi-bin/user/info?openid=o1"))
			if a.Status != http.StatusServiceUnavailable || a.Errcode != -1 || !strings.Contains(a.Errmsg, fc.inErrmsg) {
				t.Fatalf("answer %d %s, want 503 naming %q", a.Status, a.Raw, fc.inErrmsg)
			}
			if n := w.Stats().APICalls; n != 0 {
				t.Fatalf("%d requests forwarded without a token", n)
			}
			c.waitLog(t, fc.inErrmsg)
			// No busy loop: the endpoint is retried with backoff, not hammered.
			time.Sleep(3 * time.Second)
			if calls := w.Stats().StableCalls; calls > 4 {
				t.Fatalf("%d token calls in about 3 s of failure", calls)
			}
			// Recovered once WeChat is: within the backoff.
			w.SetFaults(emulator.Faults{})
			c.waitAnswer(t, "/cgi-bin/user/info?openid=o1", 20*time.Second)
		})
	}
}

func TestOddButValidTokenAnswers(t *testing.T) {
	t.Run("expires_in huge is clamped to 7200 s", func(t *testing.T) {
		t.Parallel()
		w := startWeChat(t, emulator.Config{})
		w.SetFaults(emulator.Faults{TokenEndpoint: emulator.FaultExpiresHuge})
		c := startCaddy(t, w, w.tokenBlock("stable"))
		c.waitAnswer(t, "/cgi-bin/user/info?openid=o1", 10*time.Second)
		var apps []struct {
			SecondsLeft float64 `json:"seconds_left"`
		}
		if code := c.adminCall(t, http.MethodGet, "/wechat_token/apps", &apps); code != http.StatusOK || len(apps) != 1 {
			t.Fatalf("status: %d %+v", code, apps)
		}
		if left := apps[0].SecondsLeft; left > 7200 || left < 7000 {
			t.Fatalf("seconds_left %v, want at most WeChat's 7200", left)
		}
	})
	t.Run("a 600-character token is kept whole", func(t *testing.T) {
		t.Parallel()
		w, c := startProxy(t, emulator.Config{TokenLength: 600}, "classic")
		if a := get(t, c.url("/cgi-bin/user/info?openid=o1")); a.Errcode != 0 || a.AppID != w.AppID {
			t.Fatalf("answer %+v", a.Echo)
		}
	})
}

func TestGarbledTokenErrorsStillTriggerOneRetry(t *testing.T) {
	for _, fault := range []string{emulator.FaultRejectedAsHTML, emulator.FaultTruncatedJSON} {
		t.Run(fault, func(t *testing.T) {
			t.Parallel()
			w, c := startProxy(t, emulator.Config{}, "classic")
			w.SetFaults(emulator.Faults{API: fault})
			w.Revoke(w.AppID)
			before := w.issued()
			if a := get(t, c.url("/cgi-bin/user/info?openid=o1")); a.Errcode != 0 || a.AppID != w.AppID {
				t.Fatalf("answer %+v", a.Echo)
			}
			if n := w.issued() - before; n != 1 {
				t.Fatalf("%d tokens fetched, want 1", n)
			}
		})
	}
}

func TestUpstreamResetMidDownload(t *testing.T) {
	w, c := startProxy(t, emulator.Config{}, "stable")
	w.SetFaults(emulator.Faults{API: emulator.FaultResetMidBody})
	resp, err := client.Get(c.url("/cgi-bin/media/get?media_id=bytes-8388608"))
	if err == nil {
		n, readErr := io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if readErr == nil && n == 8388608 {
			t.Fatal("a download cut off by WeChat arrived whole")
		}
		if n >= 8388608 {
			t.Fatalf("%d bytes of an 8 MiB download", n)
		}
	}
	c.waitLog(t, "reset")
	// The proxy lives on; the next download is whole.
	w.SetFaults(emulator.Faults{})
	resp, err = client.Get(c.url("/cgi-bin/media/get?media_id=bytes-8388608"))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	got, err := io.ReadAll(resp.Body)
	if err != nil || !bytes.Equal(got, mediaBytes(8388608)) {
		t.Fatalf("download after the reset: %d bytes, %v", len(got), err)
	}
}

// mediaBytes is what /cgi-bin/media/get?media_id=bytes-n sends.
func mediaBytes(n int64) []byte {
	b, _ := io.ReadAll(io.LimitReader(emulator.MediaPattern(), n))
	return b
}

// waitLog waits for a log line of c containing s.
func (c *caddy) waitLog(t *testing.T, s string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(c.logs.String(), s) {
		if time.Now().After(deadline) {
			t.Fatalf("no log line says %q:\n%s", s, tail(c.logs.String(), 3000))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// waitAnswer waits until a GET of path is answered with WeChat's success.
func (c *caddy) waitAnswer(t *testing.T, path string, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		a := get(t, c.url(path))
		if a.Errcode == 0 && a.Status == http.StatusOK {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("still failing after %s: %d %s", within, a.Status, a.Raw)
		}
		time.Sleep(200 * time.Millisecond)
	}
}
