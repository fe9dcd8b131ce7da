package tests

import (
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caddy-wechat/caddy-wechat/emulator"
)

// The WeCom corp of these tests and the secrets of two of its apps.
const (
	corpID       = "wwit000000000001"
	corpSecretA  = "wecom-app-a-secret-0123456789abcdefghijklm"
	corpSecretB  = "wecom-app-b-secret-0123456789abcdefghijklm"
	wrongCorpKey = "wecom-wrong-secret-0123456789abcdefghijklm"
)

// startWeCom runs an emulator that knows the corp's two apps.
func startWeCom(t *testing.T) *wechat {
	t.Helper()
	return startWeChat(t, emulator.Config{Corps: map[string][]string{corpID: {corpSecretA, corpSecretB}}})
}

// wecomBlock is a WeCom wechat_token for the app with secret, before a
// reverse_proxy to the emulator.
func (w *wechat) wecomBlock(secret string, extra ...string) string {
	return fmt.Sprintf(`wechat_token {
		corp_id %s
		corp_secret %s
		api_base %s
		%s
	}
	reverse_proxy %s`, corpID, secret, w.URL, strings.Join(extra, "\n\t\t"), w.URL)
}

func startWeComCaddy(t *testing.T, w *wechat, site string, opts caddyOptions) *caddy {
	t.Helper()
	c := startCaddyWith(t, w, site, opts)
	c.secrets = append(c.secrets, corpSecretA, corpSecretB, wrongCorpKey)
	return c
}

func TestWeComInjectsAndRefreshesOnceUnderLoad(t *testing.T) {
	t.Parallel() // long and mostly waiting: overlaps the others
	w := startWeCom(t)
	c := startWeComCaddy(t, w, w.wecomBlock(corpSecretA), caddyOptions{})
	if a := get(t, c.url("/cgi-bin/user/get?userid=u1&access_token=client-sent")); a.Errcode != 0 || a.AppID != corpID || a.TokenParams != 1 {
		t.Fatalf("through the proxy: %s", a.Raw)
	}
	wechatShaped(t, "gettoken", get(t, c.url("/cgi-bin/gettoken?corpid="+corpID+"&corpsecret=x")), http.StatusForbidden)

	// WeCom ends the token early; 32 requests fail with 40014 at once:
	// one fetch, every request replayed.
	w.Revoke(corpID)
	before := w.Stats()
	var wg sync.WaitGroup
	answers := make([]answer, 32)
	for i := range answers {
		wg.Go(func() {
			answers[i] = post(t, c.url("/cgi-bin/message/send"), "application/json", []byte(fmt.Sprintf(`{"touser":"u%d"}`, i)))
		})
	}
	wg.Wait()
	for i, a := range answers {
		if a.Errcode != 0 {
			t.Fatalf("request %d after the revocation: %s", i, a.Raw)
		}
	}
	after := w.Stats()
	if issued, calls := after.WeComIssued-before.WeComIssued, after.WeComCalls-before.WeComCalls; issued != 1 || calls != 1 {
		t.Fatalf("%d tokens in %d gettoken calls after one revocation, want 1 and 1", issued, calls)
	}
	if n := after.APIRejected[40014] - before.APIRejected[40014]; n < 1 {
		t.Fatal("no request met the revoked token: the test proved nothing")
	}
}

// Two apps of one corp are two tokens: two records, two rows in the admin
// status, told apart without the secret.
func TestWeComTwoAppsOfOneCorp(t *testing.T) {
	w := startWeCom(t)
	storage := filepath.Join(t.TempDir(), "data")
	c := startWeComCaddy(t, w, fmt.Sprintf(`handle_path /a/* {
		%s
	}
	handle_path /b/* {
		%s
	}`, w.wecomBlock(corpSecretA), w.wecomBlock(corpSecretB)), caddyOptions{storage: storage})
	for _, p := range []string{"/a", "/b"} {
		if a := get(t, c.url(p+"/cgi-bin/user/get?userid=u1")); a.Errcode != 0 || a.AppID != corpID {
			t.Fatalf("%s: %s", p, a.Raw)
		}
	}
	if n := w.Stats().WeComIssued; n != 2 {
		t.Fatalf("two apps of one corp: %d tokens", n)
	}
	var apps []appStatus
	c.adminCall(t, http.MethodGet, "/wechat_token/apps", &apps)
	ids := map[string]bool{}
	for _, a := range apps {
		if a.TokenAPI == "wecom" && a.Valid && strings.HasPrefix(a.AppID, corpID+"-") {
			ids[a.AppID] = true
		}
	}
	if len(ids) != 2 {
		t.Fatalf("admin status: %+v, want two WeCom rows", apps)
	}
	records, _ := filepath.Glob(filepath.Join(storage, "wechat_token", "wecom", corpID+"-*.json"))
	if len(records) != 2 {
		t.Fatalf("records %v, want two", records)
	}
	for _, r := range records {
		data, _ := os.ReadFile(r)
		if strings.Contains(string(data), corpSecretA) || strings.Contains(string(data), corpSecretB) {
			t.Fatal("a stored record holds a secret")
		}
	}
	body := c.scrape(t)
	for id := range ids {
		if metric(t, body, "caddy_wechat_token_seconds_until_expiry", `app_id="`+id+`"`, `token_api="wecom"`) < 7000 {
			t.Fatalf("metrics for %s", id)
		}
	}
	if strings.Contains(body, corpSecretA) || strings.Contains(body, corpSecretB) {
		t.Fatal("metrics reveal a secret")
	}
}

// A wrong secret: the 503 at once, WeChat-shaped; the secret in no log.
// WeCom's untrusted-IP error is explained with the IP in the admin status.
func TestWeComFetchErrors(t *testing.T) {
	w := startWeCom(t)
	c := startWeComCaddy(t, w, `handle_path /wrong/* {
		`+w.wecomBlock(wrongCorpKey, "fetch_timeout 1s")+`
	}
	handle {
		`+w.wecomBlock(corpSecretA)+`
	}`, caddyOptions{})
	start := time.Now()
	a := get(t, c.url("/wrong/cgi-bin/user/get?userid=u1"))
	wechatShaped(t, "wrong corp_secret", a, http.StatusServiceUnavailable)
	if !strings.Contains(a.Errmsg, "errcode 40001") || strings.Contains(a.Raw, wrongCorpKey) {
		t.Fatalf("wrong corp_secret: %s", a.Raw)
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Fatalf("the 503 took %s", took.Round(time.Millisecond))
	}

	w.SetFaults(emulator.Faults{TokenEndpoint: emulator.FaultIPWhitelist})
	var results []struct {
		Error *struct {
			Errcode int64  `json:"errcode"`
			Meaning string `json:"meaning"`
			Hint    string `json:"hint"`
		} `json:"error"`
	}
	var apps []appStatus
	c.adminCall(t, http.MethodGet, "/wechat_token/apps", &apps)
	var good string
	for _, a := range apps {
		if a.Valid {
			good = a.AppID
		}
	}
	c.adminCall(t, http.MethodPost, "/wechat_token/apps/"+good+"/refresh", &results)
	if len(results) != 1 || results[0].Error == nil || results[0].Error.Errcode != 60020 ||
		!strings.Contains(results[0].Error.Meaning, "WeChat saw the IP 127.0.0.1") || !strings.Contains(results[0].Error.Hint, "trusted IP") {
		t.Fatalf("untrusted IP: %+v", results)
	}
}

// Two instances on one storage fetch one WeCom token.
func TestWeComFleetSharesOneToken(t *testing.T) {
	w := startWeCom(t)
	storage := filepath.Join(t.TempDir(), "shared")
	a := startWeComCaddy(t, w, w.wecomBlock(corpSecretA), caddyOptions{storage: storage})
	b := startWeComCaddy(t, w, w.wecomBlock(corpSecretA), caddyOptions{storage: storage})
	for _, c := range []*caddy{a, b} {
		if r := get(t, c.url("/cgi-bin/user/get?userid=u1")); r.Errcode != 0 {
			t.Fatalf("through %s: %s", c.site, r.Raw)
		}
	}
	if st := w.Stats(); st.WeComCalls != 1 || st.WeComIssued != 1 {
		t.Fatalf("a fleet of two: %d gettoken calls, %d tokens", st.WeComCalls, st.WeComIssued)
	}
}

// wechat_jssdk for a WeCom app: the corp's ticket from get_jsapi_ticket,
// appId the corp ID.
func TestWeComJSSDK(t *testing.T) {
	w := startWeCom(t)
	c := startWeComCaddy(t, w, fmt.Sprintf(`handle /jssdk {
		wechat_jssdk {
			corp_id %s
			corp_secret %s
			api_base %s
		}
	}`, corpID, corpSecretA, w.URL), caddyOptions{})
	s := c.sign(t, http.MethodGet, "https://work.example.com/page")
	if s.status != http.StatusOK || s.AppID != corpID {
		t.Fatalf("WeCom signature: %d %s", s.status, s.raw)
	}
	if !w.VerifySignature(corpID, "https://work.example.com/page", s.NonceStr, s.Timestamp, s.Signature) {
		t.Fatalf("the WeCom signature does not verify: %s", s.raw)
	}
}
