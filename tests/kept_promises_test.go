package tests

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddy-wechat/caddy-wechat/emulator"
)

// Promises of the README and SECURITY.md that an earlier version did not
// keep (the issue "Promises the code does not keep yet").

// A rejection of a request that could not be replayed (a streamed upload)
// is passed on, and still refreshes the token: the next request carries
// the new one, with no wait for the next renewal.
func TestStreamedRejectionStillRefreshes(t *testing.T) {
	t.Parallel()
	w := startWeChat(t, emulator.Config{})
	c := startCaddy(t, w, w.tokenBlock("stable", "max_replay_body 1KiB"))
	big := bytes.Repeat([]byte("0123456789abcdef"), 4096) // 64 KiB: streams
	if a := post(t, c.url("/cgi-bin/media/uploadimg"), "application/octet-stream", big); a.Errcode != 0 {
		t.Fatalf("before: %s", a.Raw)
	}
	w.Revoke(w.AppID)
	before := w.Stats()
	if a := post(t, c.url("/cgi-bin/media/uploadimg"), "application/octet-stream", big); a.Errcode != 40001 {
		t.Fatalf("a streamed upload after a revocation: %s, want WeChat's 40001 as it came", a.Raw)
	}
	// The refresh runs beside the answer: wait until the proxy holds its
	// result (the emulator issuing the token comes a moment before that).
	waitFor(t, "the proxy's refresh after the streamed upload's rejection", func() bool {
		var st []struct {
			PassiveRefreshes int `json:"passive_refreshes"`
		}
		c.adminCall(t, http.MethodGet, "/wechat_token/apps", &st)
		return len(st) == 1 && st[0].PassiveRefreshes >= 1
	})
	if a := post(t, c.url("/cgi-bin/media/uploadimg"), "application/octet-stream", big); a.Errcode != 0 || a.BodySHA256 != sha(big) {
		t.Fatalf("the next upload: %s", a.Raw)
	}
	if n := w.Stats().Issued() - before.Issued(); n != 1 {
		t.Fatalf("%d tokens after one rejection", n)
	}
}

// The AppSecret reaches api_base's host and no other, whatever the
// reverse_proxy after the handler points at.
func TestAppSecretReachesOnlyAPIBase(t *testing.T) {
	t.Parallel()
	w := startWeChat(t, emulator.Config{})
	var sawSecret, requests atomic.Int32
	recorder := httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		requests.Add(1)
		body, _ := io.ReadAll(r.Body)
		if strings.Contains(r.URL.RawQuery+string(body), w.Secret) || strings.Contains(strings.ToLower(r.URL.RawQuery), "secret=") {
			sawSecret.Add(1)
		}
		rw.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(rw, `{"errcode":0,"errmsg":"recorded"}`)
	}))
	t.Cleanup(recorder.Close)
	site := fmt.Sprintf(`wechat_token {
		app_id %s
		app_secret {env.WX_IT_SECRET}
		api_base %s
	}
	reverse_proxy %s`, w.AppID, w.URL, recorder.URL)
	c := startCaddy(t, w, site)
	status, body := rawGet(t, c.url("/sns/jscode2session?js_code="+w.LoginCode(w.AppID)+"&grant_type=authorization_code"))
	if status != http.StatusOK || !strings.Contains(body, "session_key") {
		t.Fatalf("login through the proxy: %d %s", status, body)
	}
	status, body = rawGet(t, c.url("/sns/oauth2/access_token?code="+w.LoginCode(w.AppID)+"&grant_type=authorization_code"))
	if status != http.StatusOK || !strings.Contains(body, "access_token") {
		t.Fatalf("OAuth exchange through the proxy: %d %s", status, body)
	}
	if n := sawSecret.Load(); n != 0 {
		t.Fatalf("the next handler's upstream received the AppSecret %d times", n)
	}
	// Other calls still go through reverse_proxy.
	if a := get(t, c.url("/cgi-bin/user/info?openid=o1")); a.Errmsg != "recorded" || requests.Load() != 1 {
		t.Fatalf("an API call: %s (%d at the recorder)", a.Raw, requests.Load())
	}
}

// authorizer path cuts the account's segment off the escaped path: the
// rest goes on byte for byte.
func TestAuthorizerPathForwardedByteForByte(t *testing.T) {
	t.Parallel()
	w := startPlatformWeChat(t)
	c := readyPlatform(t, w, "")
	authorize(t, w, c, "wxbytes000000001")
	a := get(t, c.url("/authorizer/wxbytes000000001/cgi-bin/x/a%2Fb?openid=o1"))
	if a.Errcode != 0 || a.RawPath != "/cgi-bin/x/a%2Fb" {
		t.Fatalf("upstream path %q (raw %q), want /cgi-bin/x/a%%2Fb: %s", a.Path, a.RawPath, a.Raw)
	}
}

// Passthrough entries that are not path prefixes, or that would open
// WeChat's token endpoints, fail the load.
func TestBadPassthroughEntriesFailTheLoad(t *testing.T) {
	t.Parallel()
	w, c := startProxy(t, emulator.Config{}, "stable")
	for _, entry := range []string{"sns/", "/cgi-bin/", "/cgi-bin/token"} {
		status, body := c.loadRaw(t, c.caddyfile(w.tokenBlock("stable", "passthrough "+entry)))
		if status == http.StatusOK || !strings.Contains(body, "passthrough") {
			t.Fatalf("passthrough %s loaded: %d %s", entry, status, body)
		}
	}
	if a := get(t, c.url("/cgi-bin/get_api_domain_ip")); a.Errcode != 0 {
		t.Fatalf("the running config after the refused loads: %s", a.Raw)
	}
}

// A token in a form body is removed whether the body is held in memory or
// in a temporary file (past replay_memory), up to max_replay_body; the
// rest arrives byte for byte, and the request is still replayed.
func TestFormTokenStrippedFromABodyInAFile(t *testing.T) {
	t.Parallel()
	w := startWeChat(t, emulator.Config{})
	c := startCaddyWith(t, w, w.tokenBlock("stable"), caddyOptions{global: "wechat {\n\t\treplay_memory 4KiB\n\t}"})
	filler := strings.Repeat("a", 64<<10)
	form := []byte("touser=o1&content=" + filler + "&access_token=CLIENT&x=%E4%BD%A0&ACCESS_TOKEN=y")
	want := []byte("touser=o1&content=" + filler + "&x=%E4%BD%A0")
	a := post(t, c.url("/cgi-bin/message/custom/send"), "application/x-www-form-urlencoded", form)
	if a.Errcode != 0 || a.TokenParams != 1 || a.BodySHA256 != sha(want) || a.BodyBytes != len(want) {
		t.Fatalf("a form in a file: %d bytes arrived, errcode %d", a.BodyBytes, a.Errcode)
	}
	w.Revoke(w.AppID)
	if a := post(t, c.url("/cgi-bin/message/custom/send"), "application/x-www-form-urlencoded", form); a.Errcode != 0 || a.BodySHA256 != sha(want) {
		t.Fatalf("replayed after a revocation: %d bytes, errcode %d", a.BodyBytes, a.Errcode)
	}
}

// A request that meets a rejection does not wait on the storage: with
// every Redis round trip 2 s late, the stable token's refresh (which
// hands every caller the same token) and the replay take no round trip.
func TestRejectionRefreshWaitsOnNoStorage(t *testing.T) {
	t.Parallel()
	redis := startRedisServer(t)
	const delay = 2 * time.Second
	proxy := startDelayProxy(t, redis.addr(), delay)
	_, portText, _ := net.SplitHostPort(proxy)
	var port int
	fmt.Sscan(portText, &port)
	w := startWeChat(t, emulator.Config{})
	c := startCaddyWith(t, w, w.tokenBlock("stable"), caddyOptions{storageConfig: redisStorage(port)})
	waitFor(t, "the first token", func() bool { return get(t, c.url("/cgi-bin/get_api_domain_ip")).Errcode == 0 })
	for range 3 { // the refresh budget's burst
		w.Revoke(w.AppID)
		began := time.Now()
		if a := get(t, c.url("/cgi-bin/user/info?openid=o1")); a.Errcode != 0 {
			t.Fatalf("after a revocation: %s", a.Raw)
		}
		if took := time.Since(began); took >= delay {
			t.Fatalf("a request that met a rejection took %s: it waited on the storage (one round trip: %s)", took.Round(time.Millisecond), delay)
		}
	}
}
