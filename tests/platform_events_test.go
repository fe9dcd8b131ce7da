package tests

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/caddy-wechat/caddy-wechat/emulator"
)

// A platform's authorizations are never lost: the bullets of the third
// round's platform issue, each against real processes.

// accountCall calls the API as account through c.
func accountCall(t *testing.T, c *caddy, account string) answer {
	t.Helper()
	return get(t, c.url("/authorizer/"+account+"/cgi-bin/user/info?openid=o1"))
}

// pushOK pushes what WeChat would to c's event URL and wants success.
func pushOK(t *testing.T, c *caddy, what string, q map[string][]string, body []byte) {
	t.Helper()
	if status, got := c.push(t, q, body); status != http.StatusOK || got != "success" {
		t.Fatalf("%s: %d %q", what, status, got)
	}
}

// authorize makes account authorize the platform and pushes it to c.
func authorize(t *testing.T, w *wechat, c *caddy, account string) {
	t.Helper()
	q, body, _, err := w.AuthorizedPush(componentAppID, account)
	if err != nil {
		t.Fatal(err)
	}
	pushOK(t, c, "authorized push of "+account, q, body)
}

// WeChat delivers an authorization again: success again, one exchange.
func TestRedeliveredAuthorizationIsAnsweredSuccess(t *testing.T) {
	t.Parallel()
	w := startPlatformWeChat(t)
	c := readyPlatform(t, w, "")
	q, body, _, err := w.AuthorizedPush(componentAppID, "wxredeliver00001")
	if err != nil {
		t.Fatal(err)
	}
	pushOK(t, c, "authorized", q, body)
	pushOK(t, c, "the same push again", q, body)
	if a := accountCall(t, c, "wxredeliver00001"); a.Errcode != 0 {
		t.Fatalf("the account: %s", a.Raw)
	}
	if st := w.Stats(); st.QueryAuthCalls != 1 || st.AuthorizerCalls != 0 {
		t.Fatalf("%d exchanges and %d token fetches for one authorization delivered twice", st.QueryAuthCalls, st.AuthorizerCalls)
	}
}

// The token api_query_auth hands over is used and shared: 50 accounts
// authorized through one instance, used through another, fetch nothing.
func TestPushedAuthorizationsNeedNoTokenFetch(t *testing.T) {
	t.Parallel()
	w := startPlatformWeChat(t)
	storage := filepath.Join(t.TempDir(), "shared")
	a := readyPlatform(t, w, storage)
	b := startPlatformSite(t, w, w.platformAccountsSite(), storage)
	const n = 50
	for i := range n {
		authorize(t, w, a, fmt.Sprintf("wxpushed%08d", i))
	}
	for i := range n {
		id := fmt.Sprintf("wxpushed%08d", i)
		if got := accountCall(t, b, id); got.Errcode != 0 || got.AppID != id {
			t.Fatalf("%s through the other instance: %s", id, got.Raw)
		}
	}
	if st := w.Stats(); st.AuthorizerCalls != 0 || st.QueryAuthCalls != n {
		t.Fatalf("%d api_authorizer_token calls (want 0) and %d exchanges for %d pushed accounts", st.AuthorizerCalls, st.QueryAuthCalls, n)
	}
}

// A 7 s exchange: WeChat hangs up after 5 s and re-delivers; the exchange
// goes on, the re-delivery waits for it, one exchange, the account served.
func TestSlowExchangeSurvivesWeChatHangingUp(t *testing.T) {
	t.Parallel()
	w := startPlatformWeChat(t)
	c := readyPlatform(t, w, "")
	w.SetFaults(emulator.Faults{QueryAuthDelay: emulator.Duration(7 * time.Second)})
	q, body, _, err := w.AuthorizedPush(componentAppID, "wxslowexchange01")
	if err != nil {
		t.Fatal(err)
	}
	// WeChat's own delivery: 5 s per attempt, re-sent up to 3 times.
	d, err := emulator.DeliverComponentPush(context.Background(), c.url("/events"), q, body, emulator.PushOptions{})
	if err != nil || d.AcceptedOn() < 2 || !d.Attempts[0].TimedOut {
		var seen []string
		for _, at := range d.Attempts {
			seen = append(seen, fmt.Sprintf("HTTP %d %q timed out %v", at.Status, at.Answer, at.TimedOut))
		}
		t.Fatalf("delivery: accepted on attempt %d (%v): %s", d.AcceptedOn(), err, strings.Join(seen, "; "))
	}
	w.SetFaults(emulator.Faults{})
	if a := accountCall(t, c, "wxslowexchange01"); a.Errcode != 0 {
		t.Fatalf("the account: %s", a.Raw)
	}
	if st := w.Stats(); st.QueryAuthCalls != 1 || st.AuthorizerCalls != 0 {
		t.Fatalf("%d exchanges, %d token fetches; want 1 and 0", st.QueryAuthCalls, st.AuthorizerCalls)
	}
}

// The storage fails right after the exchange: the push is still answered
// success (a re-delivery would meet a used code), the authorization is
// held in memory, and written once the storage is back.
func TestAuthorizationKeptThroughAStorageOutage(t *testing.T) {
	t.Parallel()
	r := startRedisServer(t)
	w := startPlatformWeChat(t)
	opts := caddyOptions{global: w.platformGlobal(), storageConfig: redisStorage(r.port)}
	c := startCaddyWith(t, w, w.platformAccountsSite(), opts)
	c.secrets = append(c.secrets, componentSecret, componentAESKey)
	q, body, _ := w.ComponentPush(componentAppID, "component_verify_ticket", nil, "")
	pushOK(t, c, "ticket", q, body)
	waitFor(t, "the component token", func() bool { return get(t, c.url("/cgi-bin/component/api_get_authorizer_list")).Errcode == 0 })

	const account = "wxoutage00000001"
	w.SetFaults(emulator.Faults{QueryAuthDelay: emulator.Duration(2 * time.Second)})
	q, body, _, _ = w.AuthorizedPush(componentAppID, account)
	pushed := make(chan error, 1)
	go func() {
		status, got := c.push(t, q, body)
		if status != http.StatusOK || got != "success" {
			pushed <- fmt.Errorf("authorized push during the outage: %d %q", status, got)
			return
		}
		pushed <- nil
	}()
	waitFor(t, "the exchange under way", func() bool { return w.Stats().QueryAuthCalls == 1 })
	r.Stop() // the storage goes down while WeChat answers the exchange
	if err := <-pushed; err != nil {
		t.Fatal(err)
	}
	w.SetFaults(emulator.Faults{})
	if a := accountCall(t, c, account); a.Errcode != 0 {
		t.Fatalf("the account during the outage: %s", a.Raw)
	}
	r.Start()
	// Another instance, which knows only the storage, serves the account
	// once the held authorization is written.
	other := startCaddyWith(t, w, w.platformAccountsSite(), opts)
	other.secrets = c.secrets
	waitFor(t, "the authorization written after the outage", func() bool { return accountCall(t, other, account).Errcode == 0 })
	if st := w.Stats(); st.QueryAuthCalls != 1 {
		t.Fatalf("%d exchanges", st.QueryAuthCalls)
	}
}

// An account authorized to two platforms sharing one storage has two
// tokens, each its platform's.
func TestTwoPlatformsSharingAnAccountNeverCross(t *testing.T) {
	t.Parallel()
	const otherAppID, otherSecret = "wxcomp0000000002", "component-secret-of-the-second"
	w := startWeChat(t, emulator.Config{Components: map[string]emulator.ComponentApp{
		componentAppID: {Secret: componentSecret, Token: componentToken, AESKey: componentAESKey},
		otherAppID:     {Secret: otherSecret, Token: componentToken, AESKey: componentAESKey},
	}})
	global := fmt.Sprintf(`wechat {
		component one {
			component_appid %s
			component_appsecret %s
			token %s
			encoding_aes_key %s
			api_base %s
		}
		component two {
			component_appid %s
			component_appsecret %s
			token %s
			encoding_aes_key %s
			api_base %s
		}
	}`, componentAppID, componentSecret, componentToken, componentAESKey, w.URL, otherAppID, otherSecret, componentToken, componentAESKey, w.URL)
	site := fmt.Sprintf(`handle /events/one {
		wechat_component_events one
	}
	handle /events/two {
		wechat_component_events two
	}
	handle_path /one/* {
		wechat_token {
			component one
			authorizer path
		}
		reverse_proxy %s
	}
	handle_path /two/* {
		wechat_token {
			component two
			authorizer path
		}
		reverse_proxy %s
	}`, w.URL, w.URL)
	c := startCaddyWith(t, w, site, caddyOptions{global: global})
	c.secrets = append(c.secrets, componentSecret, otherSecret, componentAESKey)
	for name, appID := range map[string]string{"one": componentAppID, "two": otherAppID} {
		q, body, _ := w.ComponentPush(appID, "component_verify_ticket", nil, "")
		resp, err := client.Post(c.url("/events/"+name+"?"+q.Encode()), "text/xml", bytes.NewReader(body))
		if err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("ticket of %s: %v %v", name, resp, err)
		}
		resp.Body.Close()
		refresh := w.ImportAuthorizers(appID, []string{"wxshared00000001"})["wxshared00000001"]
		payload, _ := json.Marshal([]map[string]string{{"authorizer_appid": "wxshared00000001", "authorizer_refresh_token": refresh}})
		resp, err = client.Post("http://"+c.admin+"/wechat_token/components/"+name+"/authorizers", "application/json", bytes.NewReader(payload))
		if err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("import into %s: %v %v", name, resp, err)
		}
		resp.Body.Close()
	}
	for name, appID := range map[string]string{"one": componentAppID, "two": otherAppID} {
		var a answer
		waitFor(t, "the account through "+name, func() bool {
			a = get(t, c.url("/"+name+"/wxshared00000001/cgi-bin/user/info?openid=o1"))
			return a.Errcode == 0
		})
		if a.AppID != "wxshared00000001" || a.ComponentAppID != appID {
			t.Fatalf("through %s: the token of %s for %s", name, a.ComponentAppID, a.AppID)
		}
	}
}

// Events apply in CreateTime order: a late withdrawal cannot undo a newer
// authorization, nor a late authorization a newer withdrawal.
func TestLateEventsChangeNothing(t *testing.T) {
	t.Parallel()
	w := startPlatformWeChat(t)
	c := readyPlatform(t, w, "")
	const account = "wxlateevents0001"
	now := time.Now().Unix()
	at := func(infoType string, createTime int64) (map[string][]string, []byte) {
		t.Helper()
		q, body, _, err := w.AuthorizationPushAt(componentAppID, account, infoType, createTime)
		if err != nil {
			t.Fatal(err)
		}
		return q, body
	}
	q1, b1 := at("authorized", now-30)
	pushOK(t, c, "authorized", q1, b1)
	qw, bw := at("unauthorized", now-20)
	pushOK(t, c, "unauthorized", qw, bw)
	wechatShaped(t, "after the withdrawal", accountCall(t, c, account), http.StatusNotFound)
	// A late delivery of the first authorization changes nothing.
	pushOK(t, c, "the first authorization again", q1, b1)
	wechatShaped(t, "after a late authorization", accountCall(t, c, account), http.StatusNotFound)
	// The account authorizes again; then the withdrawal is replayed.
	q3, b3 := at("authorized", now-10)
	pushOK(t, c, "authorized again", q3, b3)
	if a := accountCall(t, c, account); a.Errcode != 0 {
		t.Fatalf("authorized again: %s", a.Raw)
	}
	pushOK(t, c, "the withdrawal replayed", qw, bw)
	if a := accountCall(t, c, account); a.Errcode != 0 {
		t.Fatalf("after a replayed withdrawal: %s", a.Raw)
	}
}

// A withdrawal pushed to one instance stops the whole fleet serving the
// account within 60 s, never with another token meanwhile.
func TestWithdrawalReachesTheFleetWithin60s(t *testing.T) {
	t.Parallel()
	w := startPlatformWeChat(t)
	storage := filepath.Join(t.TempDir(), "shared")
	a := readyPlatform(t, w, storage)
	b := startPlatformSite(t, w, w.platformAccountsSite(), storage)
	const account = "wxwithdrawn00001"
	authorize(t, w, a, account)
	for _, c := range []*caddy{a, b} {
		if got := accountCall(t, c, account); got.Errcode != 0 {
			t.Fatalf("before the withdrawal: %s", got.Raw)
		}
	}
	q, body, err := w.UnauthorizedPush(componentAppID, account)
	if err != nil {
		t.Fatal(err)
	}
	pushOK(t, a, "unauthorized", q, body)
	withdrawn := time.Now()
	wechatShaped(t, "the instance told", accountCall(t, a, account), http.StatusNotFound)
	for {
		got := accountCall(t, b, account)
		if got.Status == http.StatusNotFound {
			break
		}
		if got.Errcode != 0 && got.Errcode != 40001 || got.Errcode == 0 && got.AppID != account {
			t.Fatalf("the other instance, meanwhile: %s", got.Raw)
		}
		if time.Since(withdrawn) > 60*time.Second {
			t.Fatal("the other instance still serves a withdrawn account after 60 s")
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Logf("the other instance stopped serving the account after %s", time.Since(withdrawn).Round(time.Second))
	before := w.Stats().AuthorizerCalls
	time.Sleep(time.Second)
	for _, c := range []*caddy{a, b} {
		wechatShaped(t, "a withdrawn account", accountCall(t, c, account), http.StatusNotFound)
	}
	if n := w.Stats().AuthorizerCalls - before; n != 0 {
		t.Fatalf("%d token fetches for a withdrawn account", n)
	}
}

// The storage is lost: WeChat's list gives every account back, by itself
// for the account a request names, or on the admin's sync.
func TestAuthorizationsRecoveredFromWeChatsList(t *testing.T) {
	t.Parallel()
	w := startPlatformWeChat(t)
	storage := filepath.Join(t.TempDir(), "shared")
	c := readyPlatform(t, w, storage)
	var ids []string
	for i := range 1200 {
		ids = append(ids, fmt.Sprintf("wxlisted%08d", i))
	}
	w.ImportAuthorizers(componentAppID, ids) // authorized before the proxy: it has no record
	if a := accountCall(t, c, ids[1100]); a.Errcode != 0 || a.AppID != ids[1100] {
		t.Fatalf("an account with no record: %s", a.Raw)
	}
	if n := w.Stats().AuthorizerListCalls; n != 3 {
		t.Fatalf("%d api_get_authorizer_list calls for 1200 accounts, want 3 pages", n)
	}
	// An account WeChat does not list: 404, and no new walk for a minute.
	wechatShaped(t, "an unlisted account", accountCall(t, c, "wxnotlisted00001"), http.StatusNotFound)
	wechatShaped(t, "an unlisted account again", accountCall(t, c, "wxnotlisted00002"), http.StatusNotFound)
	if n := w.Stats().AuthorizerListCalls; n != 3 {
		t.Fatalf("requests for unlisted accounts walked the list again: %d calls", n)
	}
	// The storage is wiped; the admin's sync writes every account back.
	if err := os.RemoveAll(filepath.Join(storage, "wechat_token", "component", componentAppID, "authorizers")); err != nil {
		t.Fatal(err)
	}
	var res struct {
		Listed  int `json:"listed"`
		Written int `json:"written"`
	}
	if status := c.adminCall(t, http.MethodPost, "/wechat_token/components/platform/authorizers/sync", &res); status != http.StatusOK || res.Listed != 1200 || res.Written != 1200 {
		t.Fatalf("sync: %d %+v", status, res)
	}
	if a := accountCall(t, c, ids[7]); a.Errcode != 0 {
		t.Fatalf("after the sync: %s", a.Raw)
	}
}

// A reload keeps a platform's accounts in use: no fetch, served at once
// through the new config, whose settings they take.
func TestReloadKeepsThePlatformsAccounts(t *testing.T) {
	t.Parallel()
	w := startPlatformWeChat(t)
	c := readyPlatform(t, w, "")
	for i := range 20 {
		authorize(t, w, c, fmt.Sprintf("wxreloaded%06d", i))
	}
	for i := range 20 {
		if a := accountCall(t, c, fmt.Sprintf("wxreloaded%06d", i)); a.Errcode != 0 {
			t.Fatalf("before the reload: %s", a.Raw)
		}
	}
	before := w.Stats()
	c.reload(t, w.platformAccountsSite()+"\n\theader X-Reloaded yes")
	for i := range 20 {
		a := accountCall(t, c, fmt.Sprintf("wxreloaded%06d", i))
		if a.Errcode != 0 || a.Header.Get("X-Reloaded") != "yes" {
			t.Fatalf("after the reload: %s (reloaded: %q)", a.Raw, a.Header.Get("X-Reloaded"))
		}
	}
	if after := w.Stats(); after.AuthorizerCalls != before.AuthorizerCalls || after.ComponentCalls != before.ComponentCalls {
		t.Fatalf("the reload fetched %d account and %d component tokens", after.AuthorizerCalls-before.AuthorizerCalls, after.ComponentCalls-before.ComponentCalls)
	}
	// WeChat drops an account's token: the refresh works through the new
	// config (its storage, its component token).
	w.Revoke("wxreloaded000003")
	if a := accountCall(t, c, "wxreloaded000003"); a.Errcode != 0 {
		t.Fatalf("a revoked account after the reload: %s", a.Raw)
	}
}
