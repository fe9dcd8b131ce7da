package tests

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"path/filepath"
	"strings"
	"testing"

	"github.com/caddy-wechat/caddy-wechat/emulator"
)

// The third-party platform of these tests.
const (
	componentAppID  = "wxcomp0000000001"
	componentSecret = "component-secret-0123456789abcdef"
	componentToken  = "platform-message-token"
	componentAESKey = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"
)

func startPlatformWeChat(t *testing.T) *wechat {
	t.Helper()
	return startWeChat(t, emulator.Config{Components: map[string]emulator.ComponentApp{
		componentAppID: {Secret: componentSecret, Token: componentToken, AESKey: componentAESKey},
	}})
}

// platformGlobal is the wechat global option naming the platform.
func (w *wechat) platformGlobal() string {
	return fmt.Sprintf(`wechat {
		component platform {
			component_appid %s
			component_appsecret %s
			token %s
			encoding_aes_key %s
			api_base %s
		}
	}`, componentAppID, componentSecret, componentToken, componentAESKey, w.URL)
}

// platformSite takes pushes on /events and proxies the platform's calls.
func (w *wechat) platformSite() string {
	return fmt.Sprintf(`handle /events {
		wechat_component_events platform
	}
	handle /cgi-bin/component/* {
		wechat_token {
			component platform
		}
		reverse_proxy %s
	}`, w.URL)
}

func startPlatform(t *testing.T, w *wechat, storage string) *caddy {
	t.Helper()
	return startPlatformSite(t, w, w.platformSite(), storage)
}

// startPlatformSite runs site with the platform in the wechat app.
func startPlatformSite(t *testing.T, w *wechat, site, storage string) *caddy {
	t.Helper()
	c := startCaddyWith(t, w, site, caddyOptions{global: w.platformGlobal(), storage: storage})
	c.secrets = append(c.secrets, componentSecret, componentAESKey)
	return c
}

// push POSTs what WeChat would to the event URL and returns the status
// and body.
func (c *caddy) push(t *testing.T, q url.Values, body []byte) (int, string) {
	t.Helper()
	resp, err := client.Post(c.url("/events?"+q.Encode()), "text/xml", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestPlatformTicketAndComponentToken(t *testing.T) {
	w := startPlatformWeChat(t)
	c := startPlatform(t, w, "")
	call := func() answer { return get(t, c.url("/cgi-bin/component/api_get_authorizer_list?x=1")) }

	// No ticket yet: no component token, the 503.
	wechatShaped(t, "before any ticket", call(), http.StatusServiceUnavailable)

	q, body, err := w.ComponentPush(componentAppID, "component_verify_ticket", nil, "")
	if err != nil {
		t.Fatal(err)
	}
	if status, got := c.push(t, q, body); status != 200 || got != "success" {
		t.Fatalf("ticket push: %d %q", status, got)
	}
	waitFor(t, "the component token", func() bool { return call().Errcode == 0 })
	if a := call(); a.AppID != componentAppID || a.TokenParams != 1 || a.Query != "x=1" {
		t.Fatalf("through the proxy: %s", a.Raw)
	}
	// A repeat of a push already handled: success again.
	if status, got := c.push(t, q, body); status != 200 || got != "success" {
		t.Fatalf("repeated push: %d %q", status, got)
	}
	// A bad signature, or a push sealed for another appid: 403, nothing kept.
	bad := url.Values{}
	for k, v := range q {
		bad[k] = v
	}
	bad.Set("msg_signature", strings.Repeat("0", 40))
	if status, _ := c.push(t, bad, body); status != http.StatusForbidden {
		t.Fatalf("bad signature: %d", status)
	}
	q2, body2, _ := w.ComponentPush(componentAppID, "component_verify_ticket", nil, "wxsomeoneelse")
	if status, _ := c.push(t, q2, body2); status != http.StatusForbidden {
		t.Fatalf("push for another appid: %d", status)
	}

	// A client's call of the platform's token endpoints is refused.
	wechatShaped(t, "api_component_token", post(t, c.url("/cgi-bin/component/api_component_token"), "application/json", []byte(`{}`)), http.StatusForbidden)
	wechatShaped(t, "api_authorizer_token", post(t, c.url("/cgi-bin/component/api_authorizer_token"), "application/json", []byte(`{}`)), http.StatusForbidden)

	// WeChat drops the component token: one refresh, the call replayed.
	before := w.Stats()
	w.Revoke(componentAppID)
	if a := call(); a.Errcode != 0 {
		t.Fatalf("after a revocation: %s", a.Raw)
	}
	if n := w.Stats().ComponentIssued - before.ComponentIssued; n != 1 {
		t.Fatalf("%d component tokens after one revocation", n)
	}
}

// Two instances on one storage: a ticket pushed to one serves both, and
// the fleet fetches one component token.
func TestPlatformFleetSharesTicketAndToken(t *testing.T) {
	w := startPlatformWeChat(t)
	storage := filepath.Join(t.TempDir(), "shared")
	a := startPlatform(t, w, storage)
	b := startPlatform(t, w, storage)
	q, body, err := w.ComponentPush(componentAppID, "component_verify_ticket", nil, "")
	if err != nil {
		t.Fatal(err)
	}
	if status, got := a.push(t, q, body); status != 200 || got != "success" {
		t.Fatalf("ticket push: %d %q", status, got)
	}
	for _, c := range []*caddy{a, b} {
		waitFor(t, "the component token on "+c.site, func() bool {
			return get(t, c.url("/cgi-bin/component/api_get_authorizer_list")).Errcode == 0
		})
	}
	if st := w.Stats(); st.ComponentIssued != 1 {
		t.Fatalf("a fleet of two: %d component tokens in %d calls", st.ComponentIssued, st.ComponentCalls)
	}
}

func TestPlatformAdminStatus(t *testing.T) {
	w := startPlatformWeChat(t)
	c := startPlatform(t, w, "")
	var st struct {
		Name           string `json:"name"`
		AppID          string `json:"component_appid"`
		TicketAge      *int64 `json:"verify_ticket_age_seconds"`
		TicketError    string `json:"verify_ticket_error"`
		ComponentToken *struct {
			Valid bool `json:"valid"`
		} `json:"component_access_token"`
	}
	c.adminCall(t, http.MethodGet, "/wechat_token/components/platform", &st)
	if st.Name != "platform" || st.AppID != componentAppID || st.TicketAge != nil || st.TicketError == "" {
		t.Fatalf("before a ticket: %+v", st)
	}
	q, body, _ := w.ComponentPush(componentAppID, "component_verify_ticket", nil, "")
	c.push(t, q, body)
	waitFor(t, "the component token", func() bool {
		c.adminCall(t, http.MethodGet, "/wechat_token/components/platform", &st)
		return st.ComponentToken != nil && st.ComponentToken.Valid
	})
	if st.TicketAge == nil || *st.TicketAge > 5 {
		t.Fatalf("after a ticket: %+v", st)
	}
	if status := c.adminCall(t, http.MethodGet, "/wechat_token/components/nosuch", nil); status != http.StatusNotFound {
		t.Fatalf("unknown component: %d", status)
	}
}

// platformAccountsSite adds the accounts' route to platformSite.
func (w *wechat) platformAccountsSite() string {
	return w.platformSite() + fmt.Sprintf(`
	handle_path /authorizer/* {
		wechat_token {
			component platform
			authorizer path
		}
		reverse_proxy %s
	}`, w.URL)
}

// readyPlatform starts a platform with the accounts' route, pushes a
// ticket and waits for the component token.
func readyPlatform(t *testing.T, w *wechat, storage string) *caddy {
	t.Helper()
	c := startPlatformSite(t, w, w.platformAccountsSite(), storage)
	q, body, err := w.ComponentPush(componentAppID, "component_verify_ticket", nil, "")
	if err != nil {
		t.Fatal(err)
	}
	if status, got := c.push(t, q, body); status != 200 || got != "success" {
		t.Fatalf("ticket push: %d %q", status, got)
	}
	waitFor(t, "the component token", func() bool {
		return get(t, c.url("/cgi-bin/component/api_get_authorizer_list")).Errcode == 0
	})
	return c
}

func TestPlatformAuthorizerLifecycle(t *testing.T) {
	w := startPlatformWeChat(t)
	c := readyPlatform(t, w, "")
	const account = "wxauth0000000001"
	wechatShaped(t, "an account that has not authorized", get(t, c.url("/authorizer/"+account+"/cgi-bin/user/info?openid=o1")), http.StatusNotFound)

	code := w.AuthorizeAccount(componentAppID, account)
	q, body, _ := w.ComponentPush(componentAppID, "authorized", map[string]string{"AuthorizerAppid": account, "AuthorizationCode": code}, "")
	if status, got := c.push(t, q, body); status != 200 || got != "success" {
		t.Fatalf("authorized push: %d %q", status, got)
	}
	a := get(t, c.url("/authorizer/"+account+"/cgi-bin/user/info?openid=o1"))
	if a.Errcode != 0 || a.AppID != account || a.TokenParams != 1 || a.Path != "/cgi-bin/user/info" {
		t.Fatalf("an authorized account: %s", a.Raw)
	}
	wechatShaped(t, "the account's token endpoint", post(t, c.url("/authorizer/"+account+"/cgi-bin/component/api_authorizer_token"), "application/json", []byte(`{}`)), http.StatusForbidden)

	// WeChat drops the account's token: one fetch, the call replayed.
	before := w.Stats()
	w.Revoke(account)
	if a := get(t, c.url("/authorizer/"+account+"/cgi-bin/user/info?openid=o1")); a.Errcode != 0 {
		t.Fatalf("after a revocation: %s", a.Raw)
	}
	if n := w.Stats().AuthorizerIssued - before.AuthorizerIssued; n != 1 {
		t.Fatalf("%d account tokens after one revocation", n)
	}

	// The account ends its authorization: forgotten.
	w.Unauthorize(componentAppID, account)
	q, body, _ = w.ComponentPush(componentAppID, "unauthorized", map[string]string{"AuthorizerAppid": account}, "")
	if status, got := c.push(t, q, body); status != 200 || got != "success" {
		t.Fatalf("unauthorized push: %d %q", status, got)
	}
	wechatShaped(t, "a forgotten account", get(t, c.url("/authorizer/"+account+"/cgi-bin/user/info?openid=o1")), http.StatusNotFound)
}

// 10,000 accounts imported: none fetched until used, each used one fetched
// once, memory bounded per account, and after a restart the stored tokens
// serve without a fetch.
func TestPlatformTenThousandAuthorizers(t *testing.T) {
	t.Parallel() // long and mostly waiting: overlaps the others
	w := startPlatformWeChat(t)
	storage := filepath.Join(t.TempDir(), "shared")
	c := readyPlatform(t, w, storage)
	const accounts, used = 10000, 500
	var imports []map[string]string
	for i := range accounts {
		id := fmt.Sprintf("wxacct%010d", i)
		imports = append(imports, map[string]string{"authorizer_appid": id, "authorizer_refresh_token": w.ImportAuthorizer(componentAppID, id)})
	}
	payload, _ := json.Marshal(imports)
	resp, err := client.Post("http://"+c.admin+"/wechat_token/components/platform/authorizers", "application/json", bytes.NewReader(payload))
	if err != nil {
		t.Fatal(err)
	}
	answer, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(answer), `"imported":10000`) {
		t.Fatalf("import: %d %s", resp.StatusCode, answer)
	}
	var st struct {
		Authorizers int `json:"authorizers"`
	}
	c.adminCall(t, http.MethodGet, "/wechat_token/components/platform", &st)
	if st.Authorizers != accounts {
		t.Fatalf("status counts %d accounts", st.Authorizers)
	}
	if n := w.Stats().AuthorizerCalls; n != 0 {
		t.Fatalf("%d account tokens fetched before any was used", n)
	}
	rssBefore, _ := c.rss(t)
	for i := range used {
		id := fmt.Sprintf("wxacct%010d", i*accounts/used)
		if a := get(t, c.url("/authorizer/"+id+"/cgi-bin/user/info?openid=o1")); a.Errcode != 0 || a.AppID != id {
			t.Fatalf("account %s: %s", id, a.Raw)
		}
	}
	if n := w.Stats().AuthorizerCalls; n != used {
		t.Fatalf("%d account tokens fetched for %d accounts used", n, used)
	}
	rssAfter, _ := c.rss(t)
	perAccount := (rssAfter - rssBefore) / used
	t.Logf("RSS growth per account in use: %d KiB", perAccount>>10)
	if perAccount > 256<<10 {
		t.Fatalf("each account in use costs %d KiB", perAccount>>10)
	}

	// A restart: the stored tokens serve, nothing is fetched.
	c.stop()
	again := startPlatformSite(t, w, w.platformAccountsSite(), storage)
	before := w.Stats()
	for i := range used {
		id := fmt.Sprintf("wxacct%010d", i*accounts/used)
		if a := get(t, again.url("/authorizer/"+id+"/cgi-bin/user/info?openid=o1")); a.Errcode != 0 {
			t.Fatalf("after a restart, account %s: %s", id, a.Raw)
		}
	}
	if after := w.Stats(); after.AuthorizerCalls != before.AuthorizerCalls || after.ComponentCalls != before.ComponentCalls {
		t.Fatalf("a restart fetched %d account and %d component tokens", after.AuthorizerCalls-before.AuthorizerCalls, after.ComponentCalls-before.ComponentCalls)
	}
}
