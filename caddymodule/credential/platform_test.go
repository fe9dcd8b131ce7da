package credential

import (
	"context"
	"encoding/json"
	"net/http"
	"testing"
	"time"

	"github.com/caddy-wechat/caddy-wechat/caddymodule/token"
	"github.com/caddy-wechat/caddy-wechat/caddymodule/wxcrypt"
	"github.com/caddy-wechat/caddy-wechat/emulator"
)

const testAESKey = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"

// testPlatforms are two platforms the emulator knows.
var testPlatforms = map[string]emulator.ComponentApp{
	"wxcompa": {Secret: "secret-of-platform-a", Token: "token-a", AESKey: testAESKey},
	"wxcompb": {Secret: "secret-of-platform-b", Token: "token-b", AESKey: testAESKey},
}

// startPlatform declares and starts the platform appID in a config of its
// own on store, and gives it a verify ticket as a push would.
func startPlatform(t *testing.T, reg *Registry, store Storage, emu *emulator.Server, base, appID string) *Platform {
	t.Helper()
	app := testPlatforms[appID]
	cipher, err := wxcrypt.New(app.Token, app.AESKey, appID)
	if err != nil {
		t.Fatal(err)
	}
	c := reg.NewConfig(store, nil)
	p, err := c.DeclarePlatform(appID, Spec{Kind: Component, ID: appID, Secret: app.Secret, APIBase: base, Timing: Timing{MinLifetime: time.Second}}, cipher)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Stop)
	q, body, err := emu.ComponentPush(appID, "component_verify_ticket", nil, "")
	if err != nil {
		t.Fatal(err)
	}
	var env struct {
		Encrypt string `xml:"Encrypt"`
	}
	if err := xmlUnmarshal(body, &env); err != nil {
		t.Fatal(err)
	}
	plain, err := cipher.Open(q.Get("timestamp"), q.Get("nonce"), q.Get("msg_signature"), env.Encrypt)
	if err != nil {
		t.Fatal(err)
	}
	var msg struct {
		Ticket     string `xml:"ComponentVerifyTicket"`
		CreateTime int64  `xml:"CreateTime"`
	}
	if err := xmlUnmarshal(plain, &msg); err != nil {
		t.Fatal(err)
	}
	if err := p.KeepVerifyTicket(context.Background(), msg.Ticket, msg.CreateTime); err != nil {
		t.Fatal(err)
	}
	// The ticket starts the token's fetch beside the push; a request made
	// before that fetch begins would meet the failure of the fetch made
	// without a ticket at the start.
	deadline := time.Now().Add(30 * time.Second)
	for m := p.ref.Current(); m == nil || !m.Status().Valid; m = p.ref.Current() {
		if time.Now().After(deadline) {
			t.Fatalf("no component_access_token for %s after its ticket", appID)
		}
		time.Sleep(10 * time.Millisecond)
	}
	return p
}

// whoseToken asks the emulator which platform and account a token is of.
func whoseToken(t *testing.T, base, tok string) (platform, account string) {
	t.Helper()
	resp, err := http.Get(base + "/cgi-bin/get_api_domain_ip?access_token=" + tok)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var echo emulator.Echo
	if err := json.NewDecoder(resp.Body).Decode(&echo); err != nil || echo.Errcode != 0 {
		t.Fatalf("echo: %+v %v", echo, err)
	}
	return echo.ComponentAppID, echo.AppID
}

// One account authorized to two platforms sharing a storage has two
// authorizations and two tokens, each its platform's.
func TestAccountsOfTwoPlatformsAreNeverCrossed(t *testing.T) {
	emu, base := emulatorServer(t, emulator.Config{Components: testPlatforms})
	store := newMemStorage()
	reg := NewRegistry(nil)
	var tokens []string
	for _, appID := range []string{"wxcompa", "wxcompb"} {
		p := startPlatform(t, reg, store, emu, base, appID)
		refresh := emu.ImportAuthorizers(appID, []string{"wxshared"})["wxshared"]
		if err := p.Import(context.Background(), []Imported{{AppID: "wxshared", RefreshToken: refresh}}); err != nil {
			t.Fatal(err)
		}
		m, err := p.Account(context.Background(), "wxshared")
		if err != nil {
			t.Fatal(err)
		}
		tok := mustToken(t, m)
		if platform, account := whoseToken(t, base, tok.Value); platform != appID || account != "wxshared" {
			t.Fatalf("%s's token for wxshared is %s's token for %s", appID, platform, account)
		}
		tokens = append(tokens, tok.Value)
	}
	if tokens[0] == tokens[1] {
		t.Fatal("two platforms share one token of an account")
	}
	for _, key := range []string{
		"wechat_token/component/wxcompa/authorizers/wxshared.json", "wechat_token/component/wxcompb/authorizers/wxshared.json",
		"wechat_token/component/wxcompa/authorizer_tokens/wxshared.json", "wechat_token/component/wxcompb/authorizer_tokens/wxshared.json",
	} {
		if !containsKey(store.keys(), key) {
			t.Errorf("no %s among %v", key, store.keys())
		}
	}
}

// A token stored under the first release's key (by appid alone) is
// adopted by the platform whose secret fetched it, and by no other.
func TestLegacyAccountTokenAdoptedOnlyByItsPlatform(t *testing.T) {
	emu, base := emulatorServer(t, emulator.Config{Components: testPlatforms})
	store := newMemStorage()
	reg := NewRegistry(nil)
	a := startPlatform(t, reg, store, emu, base, "wxcompa")
	refresh := emu.ImportAuthorizers("wxcompa", []string{"wxold"})["wxold"]
	if err := a.Import(context.Background(), []Imported{{AppID: "wxold", RefreshToken: refresh}}); err != nil {
		t.Fatal(err)
	}
	// What the first release stored: the account's token, keyed by appid.
	first, err := a.Account(context.Background(), "wxold")
	if err != nil {
		t.Fatal(err)
	}
	tok := mustToken(t, first)
	first.Flush() // its record is in the storage: the first release's is put in its place
	rec, _ := json.Marshal(map[string]any{"version": 1, "app_id": "wxold", "token_api": "authorizer", "access_token": tok.Value,
		"fetched_at": tok.FetchedAt, "expires_at": tok.ExpiresAt,
		"secret_id": token.SecretFingerprint("wxcompa/wxold", testPlatforms["wxcompa"].Secret)})
	legacy := "wechat_token/authorizer/wxold.json"
	if err := store.Store(context.Background(), legacy, rec); err != nil {
		t.Fatal(err)
	}
	if err := store.Delete(context.Background(), "wechat_token/component/wxcompa/authorizer_tokens/wxold.json"); err != nil {
		t.Fatal(err)
	}
	calls := emu.Stats().AuthorizerCalls

	// A restarted instance (a new registry) adopts it: no fetch.
	again := startPlatform(t, NewRegistry(nil), store, emu, base, "wxcompa")
	m, err := again.Account(context.Background(), "wxold")
	if err != nil {
		t.Fatal(err)
	}
	if got := mustToken(t, m); got.Value != tok.Value || emu.Stats().AuthorizerCalls != calls {
		t.Fatalf("the legacy record was not adopted: %d more fetches", emu.Stats().AuthorizerCalls-calls)
	}
	// Another platform serving the same account never takes it.
	b := startPlatform(t, NewRegistry(nil), store, emu, base, "wxcompb")
	refreshB := emu.ImportAuthorizers("wxcompb", []string{"wxold"})["wxold"]
	if err := b.Import(context.Background(), []Imported{{AppID: "wxold", RefreshToken: refreshB}}); err != nil {
		t.Fatal(err)
	}
	mb, err := b.Account(context.Background(), "wxold")
	if err != nil {
		t.Fatal(err)
	}
	if got := mustToken(t, mb); got.Value == tok.Value {
		t.Fatal("platform B adopted platform A's token of the account")
	}
}

// A reload keeps the accounts in use, and they take the new config's
// settings (its storage); a failed reload gives them the running one's.
func TestReloadKeepsAccountsWithTheNewSettings(t *testing.T) {
	emu, base := emulatorServer(t, emulator.Config{Components: testPlatforms})
	storeA, storeB := newMemStorage(), newMemStorage()
	reg := NewRegistry(nil)
	a := startPlatform(t, reg, storeA, emu, base, "wxcompa")
	refresh := emu.ImportAuthorizers("wxcompa", []string{"wxreload00000001"})["wxreload00000001"]
	imports := []Imported{{AppID: "wxreload00000001", RefreshToken: refresh}}
	if err := a.Import(context.Background(), imports); err != nil {
		t.Fatal(err)
	}
	m, err := a.Account(context.Background(), "wxreload00000001")
	if err != nil {
		t.Fatal(err)
	}
	mustToken(t, m)
	b := startPlatform(t, reg, storeB, emu, base, "wxcompa") // the new config starts...
	if err := b.Import(context.Background(), imports); err != nil {
		t.Fatal(err)
	}
	a.cfg.Stop() // ...and the old one stops
	again, err := b.Account(context.Background(), "wxreload00000001")
	if err != nil || again != m {
		t.Fatalf("after the reload: the same account's manager %v (%v)", again == m, err)
	}
	if err := m.Renew(context.Background()); err != nil {
		t.Fatal(err)
	}
	m.Flush()
	if !containsKey(storeB.keys(), "wechat_token/component/wxcompa/authorizer_tokens/wxreload00000001.json") {
		t.Fatalf("the account's renewal did not go to the new config's storage: %v", storeB.keys())
	}
}

// The admin status counts the accounts authorized now: an import, a
// withdrawal and a new authorization show at once, not after the count's
// reuse, and a withdrawn account (kept as a dated marker) is not counted.
func TestCountFollowsImportsAndWithdrawals(t *testing.T) {
	emu, base := emulatorServer(t, emulator.Config{Components: testPlatforms})
	store := newMemStorage()
	p := startPlatform(t, NewRegistry(nil), store, emu, base, "wxcompa")
	ctx := context.Background()
	count := func(want int, after string) {
		t.Helper()
		if stored, _ := p.Counts(ctx); stored != want {
			t.Fatalf("after %s: %d authorizers counted, want %d", after, stored, want)
		}
	}
	count(0, "the start")
	refresh := emu.ImportAuthorizers("wxcompa", []string{"wxacc1", "wxacc2", "wxacc3"})
	var imported []Imported
	for _, id := range []string{"wxacc1", "wxacc2", "wxacc3"} {
		imported = append(imported, Imported{AppID: id, RefreshToken: refresh[id]})
	}
	if err := p.Import(ctx, imported); err != nil {
		t.Fatal(err)
	}
	count(3, "an import of 3")
	now := time.Now().Unix()
	if err := p.Apply(ctx, Event{InfoType: "unauthorized", AuthorizerAppID: "wxacc2", CreateTime: now}); err != nil {
		t.Fatal(err)
	}
	count(2, "a withdrawal")
	code := emu.AuthorizeAccount("wxcompa", "wxacc2")
	if err := p.Apply(ctx, Event{InfoType: "authorized", AuthorizerAppID: "wxacc2", AuthorizationCode: code, CreateTime: now + 1}); err != nil {
		t.Fatal(err)
	}
	count(3, "the account's authorization again")
	// A change of permissions in the same second: a new code, exchanged;
	// WeChat's re-delivery of it: the same code, not exchanged again.
	exchanges := emu.Stats().QueryAuthCalls
	code = emu.AuthorizeAccount("wxcompa", "wxacc2")
	for range 2 {
		if err := p.Apply(ctx, Event{InfoType: "updateauthorized", AuthorizerAppID: "wxacc2", AuthorizationCode: code, CreateTime: now + 1}); err != nil {
			t.Fatal(err)
		}
	}
	if n := emu.Stats().QueryAuthCalls - exchanges; n != 1 {
		t.Fatalf("an updateauthorized of the same second as the authorized, delivered twice: %d exchanges, want 1", n)
	}
	if _, err := p.Account(ctx, "wxacc2"); err != nil {
		t.Fatalf("the account authorized again: %v", err)
	}
}
