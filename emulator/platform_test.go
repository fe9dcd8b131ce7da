package emulator

import (
	"bytes"
	"context"
	"encoding/json"
	"encoding/xml"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// Two platforms, so that tests can check nothing crosses between them.
const (
	platformA   = "wxcompa000000001"
	platformB   = "wxcompb000000002"
	platformKey = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"
)

var testPlatforms = map[string]ComponentApp{
	platformA: {Secret: "secret-a", Token: "token-a", AESKey: platformKey},
	platformB: {Secret: "secret-b", Token: "token-b", AESKey: platformKey},
}

func newPlatformEmu(t *testing.T, cfg Config) (*Server, *httptest.Server, *testClock) {
	t.Helper()
	clock := &testClock{now: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	cfg.Components, cfg.Now = testPlatforms, clock.Now
	emu := New(cfg)
	srv := httptest.NewServer(emu)
	t.Cleanup(srv.Close)
	t.Cleanup(emu.Close)
	return emu, srv, clock
}

// openPush checks a platform push's signature and returns the fields of
// the message inside, as the platform's event handler would read them.
func openPush(t *testing.T, app ComponentApp, q url.Values, body []byte) map[string]string {
	t.Helper()
	var outer struct {
		Encrypt string `xml:"Encrypt"`
	}
	if err := xml.Unmarshal(body, &outer); err != nil {
		t.Fatalf("push body: %v", err)
	}
	if got, want := q.Get("msg_signature"), WeChatSignature(app.Token, q.Get("timestamp"), q.Get("nonce"), outer.Encrypt); got != want {
		t.Fatalf("msg_signature %s, want %s", got, want)
	}
	plain, _, err := OpenSealed(app.AESKey, outer.Encrypt)
	if err != nil {
		t.Fatalf("open push: %v", err)
	}
	fields := map[string]string{}
	d := xml.NewDecoder(bytes.NewReader(plain))
	for {
		tok, err := d.Token()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("push XML: %v", err)
		}
		if start, ok := tok.(xml.StartElement); ok && start.Name.Local != "xml" {
			var v struct {
				Text string `xml:",chardata"`
			}
			if err := d.DecodeElement(&v, &start); err != nil {
				t.Fatalf("push XML: %v", err)
			}
			fields[start.Name.Local] = v.Text
		}
	}
	return fields
}

// platformAnswer holds any answer of the platform's calls.
type platformAnswer struct {
	Errcode         int    `json:"errcode"`
	Errmsg          string `json:"errmsg"`
	ComponentToken  string `json:"component_access_token"`
	AuthorizerToken string `json:"authorizer_access_token"`
	RefreshToken    string `json:"authorizer_refresh_token"`
	Info            struct {
		AppID        string `json:"authorizer_appid"`
		Token        string `json:"authorizer_access_token"`
		RefreshToken string `json:"authorizer_refresh_token"`
	} `json:"authorization_info"`
	Total int `json:"total_count"`
	List  []struct {
		AppID        string `json:"authorizer_appid"`
		RefreshToken string `json:"refresh_token"`
		AuthTime     int64  `json:"auth_time"`
	} `json:"list"`
	raw string
}

func postPlatform(t *testing.T, ctx context.Context, rawURL string, req any) (platformAnswer, error) {
	t.Helper()
	body, _ := json.Marshal(req)
	r, err := http.NewRequestWithContext(ctx, http.MethodPost, rawURL, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	r.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(r)
	if err != nil {
		return platformAnswer{}, err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		return platformAnswer{}, err
	}
	a := platformAnswer{raw: string(raw)}
	if err := json.Unmarshal(raw, &a); err != nil {
		t.Fatalf("%s: not JSON: %q", rawURL, raw)
	}
	return a, nil
}

func post(t *testing.T, rawURL string, req any) platformAnswer {
	t.Helper()
	a, err := postPlatform(t, context.Background(), rawURL, req)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// componentToken pushes a ticket and trades it for a component token.
func componentToken(t *testing.T, emu *Server, srv *httptest.Server, component string) string {
	t.Helper()
	q, body, err := emu.ComponentPush(component, "component_verify_ticket", nil, "")
	if err != nil {
		t.Fatal(err)
	}
	ticket := openPush(t, testPlatforms[component], q, body)["ComponentVerifyTicket"]
	a := post(t, srv.URL+"/cgi-bin/component/api_component_token", map[string]string{
		"component_appid": component, "component_appsecret": testPlatforms[component].Secret, "component_verify_ticket": ticket,
	})
	if a.ComponentToken == "" {
		t.Fatalf("no component token: %s", a.raw)
	}
	return a.ComponentToken
}

func listURL(srv *httptest.Server, tok string) string {
	return srv.URL + "/cgi-bin/component/api_get_authorizer_list?component_access_token=" + tok
}

func queryAuthURL(srv *httptest.Server, tok string) string {
	return srv.URL + "/cgi-bin/component/api_query_auth?component_access_token=" + tok
}

func authorizerTokenURL(srv *httptest.Server, tok string) string {
	return srv.URL + "/cgi-bin/component/api_authorizer_token?component_access_token=" + tok
}

func refresh(t *testing.T, srv *httptest.Server, tok, component, account, refreshToken string) platformAnswer {
	t.Helper()
	return post(t, authorizerTokenURL(srv, tok), map[string]string{
		"component_appid": component, "authorizer_appid": account, "authorizer_refresh_token": refreshToken,
	})
}

func queryAuthReq(component, code string) map[string]string {
	return map[string]string{"component_appid": component, "authorization_code": code}
}

func TestAuthorizerListPagesCurrentAccountsInStableOrder(t *testing.T) {
	emu, srv, clock := newPlatformEmu(t, Config{})
	tok := componentToken(t, emu, srv, platformA)
	// wx3 and wx1 at the same second (ordered by appid), wx2 later, wx0
	// latest; wx9 withdrew; platform B's account is B's alone.
	emu.ImportAuthorizers(platformA, []string{"wx3", "wx1", "wx9"})
	clock.Advance(time.Second)
	emu.AuthorizeAccount(platformA, "wx2")
	clock.Advance(time.Second)
	emu.ImportAuthorizer(platformA, "wx0")
	emu.ImportAuthorizer(platformB, "wxb")
	emu.Unauthorize(platformA, "wx9")

	var got []string
	for offset := 0; ; offset += 2 {
		a := post(t, listURL(srv, tok), map[string]any{"component_appid": platformA, "offset": offset, "count": 2})
		if a.Errcode != 0 || a.Total != 4 {
			t.Fatalf("offset %d: %s", offset, a.raw)
		}
		if len(a.List) == 0 {
			if !strings.Contains(a.raw, `"list":[]`) {
				t.Fatalf("past the end: %s, want an empty list", a.raw)
			}
			break
		}
		for _, e := range a.List {
			if e.RefreshToken != emu.RefreshToken(platformA, e.AppID) || e.AuthTime < clock.Now().Unix()-2 {
				t.Fatalf("entry %+v: refresh token or auth time wrong", e)
			}
			got = append(got, e.AppID)
		}
	}
	if want := []string{"wx1", "wx3", "wx2", "wx0"}; !slices.Equal(got, want) {
		t.Fatalf("order %v, want %v (auth time, then appid)", got, want)
	}

	for _, c := range []struct {
		name string
		req  map[string]any
		code int
	}{
		{"another platform's appid", map[string]any{"component_appid": platformB, "offset": 0, "count": 10}, 40013},
		{"count 0", map[string]any{"component_appid": platformA, "offset": 0, "count": 0}, 40097},
		{"negative offset", map[string]any{"component_appid": platformA, "offset": -1, "count": 10}, 40097},
	} {
		if a := post(t, listURL(srv, tok), c.req); a.Errcode != c.code {
			t.Errorf("%s: %s, want %d", c.name, a.raw, c.code)
		}
	}
	if a := post(t, listURL(srv, "nonsense"), map[string]any{"component_appid": platformA, "count": 10}); a.Errcode != 40001 {
		t.Errorf("bad token: %s", a.raw)
	}
	if n := emu.Stats().AuthorizerListCalls; n != 7 { // 3 pages, 3 refused, 1 bad token
		t.Errorf("authorizer_list_calls %d, want 7", n)
	}
	// Only POST is modelled (as WeChat's is); anything else is echoed.
	var echo Echo
	resp, err := http.Get(listURL(srv, tok) + "&x=1")
	if err != nil {
		t.Fatal(err)
	}
	_ = json.NewDecoder(resp.Body).Decode(&echo)
	resp.Body.Close()
	if echo.AppID != platformA || echo.Query != "x=1" {
		t.Errorf("GET: %+v, want the echo", echo)
	}
}

func TestAuthorizerListClampsCountTo500(t *testing.T) {
	emu, srv, _ := newPlatformEmu(t, Config{})
	tok := componentToken(t, emu, srv, platformA)
	ids := make([]string, 600)
	for i := range ids {
		ids[i] = fmt.Sprintf("wx%04d", i)
	}
	emu.ImportAuthorizers(platformA, ids)
	a := post(t, listURL(srv, tok), map[string]any{"component_appid": platformA, "offset": 0, "count": 1000})
	if a.Total != 600 || len(a.List) != 500 {
		t.Fatalf("count 1000: total %d, %d listed; want 600, 500", a.Total, len(a.List))
	}
	a = post(t, listURL(srv, tok), map[string]any{"component_appid": platformA, "offset": 500, "count": 500})
	if len(a.List) != 100 || a.List[99].AppID != "wx0599" {
		t.Fatalf("second page: %d listed", len(a.List))
	}
}

// A platform of 100,000 accounts: set up at once, walked in pages of 500,
// and a token issued to every one without the cost growing with the
// tokens issued before (the old loop over every token made this hours).
func TestHundredThousandAccounts(t *testing.T) {
	if testing.Short() {
		t.Skip("100,000 accounts")
	}
	const n = 100_000
	// Compressing 200 pages and making 100,000 long tokens under the race
	// detector would be most of the time, and neither is what is tested.
	emu, srv, _ := newPlatformEmu(t, Config{NoCompression: true, TokenLength: 32})
	tok := componentToken(t, emu, srv, platformA)
	ids := make([]string, n)
	for i := range ids {
		ids[i] = fmt.Sprintf("wx%08d", i)
	}
	refreshTokens := emu.ImportAuthorizers(platformA, ids)
	if len(refreshTokens) != n {
		t.Fatalf("%d refresh tokens", len(refreshTokens))
	}
	seen := make(map[string]bool, n)
	for offset := 0; offset < n; offset += maxAuthorizerPage {
		a := post(t, listURL(srv, tok), map[string]any{"component_appid": platformA, "offset": offset, "count": maxAuthorizerPage})
		if a.Total != n || len(a.List) != maxAuthorizerPage {
			t.Fatalf("offset %d: total %d, %d listed", offset, a.Total, len(a.List))
		}
		for _, e := range a.List {
			if seen[e.AppID] || refreshTokens[e.AppID] != e.RefreshToken {
				t.Fatalf("offset %d: %s listed twice or with another refresh token", offset, e.AppID)
			}
			seen[e.AppID] = true
		}
	}
	emu.mu.Lock()
	for _, id := range ids {
		emu.issueAuthorizerLocked(platformA, id)
	}
	emu.mu.Unlock()
	// And the calls still work as they should for any one of them.
	first := refresh(t, srv, tok, platformA, ids[n/2], refreshTokens[ids[n/2]])
	second := refresh(t, srv, tok, platformA, ids[n/2], refreshTokens[ids[n/2]])
	if first.AuthorizerToken == "" || second.AuthorizerToken == first.AuthorizerToken {
		t.Fatalf("refresh: %s then %s", first.raw, second.raw)
	}
	if code := call(t, srv, first.AuthorizerToken); code != 0 {
		t.Fatalf("previous token within the overlap: %d", code)
	}
	if got := emu.Stats().AuthorizerIssued; got != n+2 {
		t.Fatalf("authorizer_issued %d, want %d", got, n+2)
	}
}

func BenchmarkIssueAuthorizerToken(b *testing.B) {
	emu := New(Config{Components: testPlatforms})
	defer emu.Close()
	emu.mu.Lock()
	defer emu.mu.Unlock()
	for i := range 100_000 {
		emu.issueAuthorizerLocked(platformA, fmt.Sprintf("wx%08d", i))
	}
	b.ResetTimer()
	for i := range b.N {
		emu.issueAuthorizerLocked(platformA, fmt.Sprintf("wx%08d", i%100_000))
	}
}

// One account authorized to two platforms has two tokens, never crossed.
func TestTokensArePerPlatformAndAccount(t *testing.T) {
	emu, srv, clock := newPlatformEmu(t, Config{Overlap: time.Minute})
	tokA, tokB := componentToken(t, emu, srv, platformA), componentToken(t, emu, srv, platformB)
	const account = "wxshared"
	rtA, rtB := emu.ImportAuthorizer(platformA, account), emu.ImportAuthorizer(platformB, account)
	a1 := refresh(t, srv, tokA, platformA, account, rtA).AuthorizerToken
	b1 := refresh(t, srv, tokB, platformB, account, rtB).AuthorizerToken
	if refresh(t, srv, tokB, platformB, account, rtA).Errcode != 61023 {
		t.Fatal("platform A's refresh token works for platform B")
	}
	if refresh(t, srv, tokA, platformA, account, rtA).Errcode != 0 {
		t.Fatal("second refresh")
	}
	clock.Advance(2 * time.Minute)
	if code := call(t, srv, a1); code != 40001 {
		t.Fatalf("A's previous token after the overlap: %d, want 40001", code)
	}
	if code := call(t, srv, b1); code != 0 {
		t.Fatalf("B's token after A's refresh: %d, want 0", code)
	}
	var echo Echo
	resp, err := http.Get(srv.URL + "/cgi-bin/user/info?access_token=" + b1)
	if err != nil {
		t.Fatal(err)
	}
	_ = json.NewDecoder(resp.Body).Decode(&echo)
	resp.Body.Close()
	if echo.AppID != account || echo.ComponentAppID != platformB {
		t.Fatalf("echo of B's token: appid %q component %q", echo.AppID, echo.ComponentAppID)
	}
	emu.Unauthorize(platformB, account)
	if code := call(t, srv, b1); code != 40001 {
		t.Fatalf("B's token after B's unauthorization: %d", code)
	}
	if refresh(t, srv, tokA, platformA, account, rtA).Errcode != 0 {
		t.Fatal("A's authorization ended with B's")
	}
	// A component token is no account's, and an account's no platform's.
	if a := post(t, listURL(srv, b1), map[string]any{"component_appid": platformB, "count": 1}); a.Errcode != 40001 {
		t.Fatalf("an account's token as component_access_token: %s", a.raw)
	}
}

func TestComponentTokenOverlap(t *testing.T) {
	emu, srv, clock := newPlatformEmu(t, Config{Overlap: time.Minute})
	first := componentToken(t, emu, srv, platformA)
	second := componentToken(t, emu, srv, platformA)
	list := func(tok string) int {
		return post(t, listURL(srv, tok), map[string]any{"component_appid": platformA, "count": 1}).Errcode
	}
	if list(first) != 0 || list(second) != 0 {
		t.Fatal("both should work within the overlap")
	}
	clock.Advance(61 * time.Second)
	if list(first) != 40001 || list(second) != 0 {
		t.Fatal("after the overlap only the second should work")
	}
}

func TestAuthorizationCodes(t *testing.T) {
	emu, srv, clock := newPlatformEmu(t, Config{AuthCodeTTL: time.Minute})
	tok := componentToken(t, emu, srv, platformA)

	code := emu.AuthorizeAccount(platformA, "wx1")
	if emu.RefreshToken(platformA, "wx1") == "" {
		t.Fatal("authorized when the account clicks, before the exchange")
	}
	if a := post(t, queryAuthURL(srv, tok), queryAuthReq(platformB, code)); a.Errcode != 61010 {
		t.Fatalf("another platform's appid: %s", a.raw)
	}
	a := post(t, queryAuthURL(srv, tok), queryAuthReq(platformA, code))
	if a.Info.AppID != "wx1" || a.Info.RefreshToken != emu.RefreshToken(platformA, "wx1") || call(t, srv, a.Info.Token) != 0 {
		t.Fatalf("exchange: %s", a.raw)
	}
	if a := post(t, queryAuthURL(srv, tok), queryAuthReq(platformA, code)); a.Errcode != 61010 {
		t.Fatalf("second exchange: %s", a.raw)
	}
	// Re-authorizing (updateauthorized) keeps the refresh token.
	if post(t, queryAuthURL(srv, tok), queryAuthReq(platformA, emu.AuthorizeAccount(platformA, "wx1"))).Info.RefreshToken != a.Info.RefreshToken {
		t.Fatal("re-authorization changed the refresh token")
	}

	expired := emu.AuthorizeAccount(platformA, "wx2")
	clock.Advance(time.Minute)
	if a := post(t, queryAuthURL(srv, tok), queryAuthReq(platformA, expired)); a.Errcode != 61010 {
		t.Fatalf("expired code: %s", a.raw)
	}
	withdrawn := emu.AuthorizeAccount(platformA, "wx3")
	emu.Unauthorize(platformA, "wx3")
	if a := post(t, queryAuthURL(srv, tok), queryAuthReq(platformA, withdrawn)); a.Errcode != 61010 {
		t.Fatalf("code of a withdrawn authorization: %s", a.raw)
	}
}

func TestQueryAuthFaults(t *testing.T) {
	emu, srv, _ := newPlatformEmu(t, Config{})
	tok := componentToken(t, emu, srv, platformA)

	// An errcode spends nothing: the code works once the fault is off.
	code := emu.AuthorizeAccount(platformA, "wx1")
	emu.SetFaults(Faults{QueryAuthErrcode: -1})
	if a := post(t, queryAuthURL(srv, tok), queryAuthReq(platformA, code)); a.Errcode != -1 {
		t.Fatalf("errcode fault: %s", a.raw)
	}
	emu.SetFaults(Faults{})
	if a := post(t, queryAuthURL(srv, tok), queryAuthReq(platformA, code)); a.Errcode != 0 {
		t.Fatalf("after the fault: %s", a.raw)
	}

	// Slow: the answer comes after the delay; the code is spent.
	const delay = 300 * time.Millisecond
	emu.SetFaults(Faults{QueryAuthDelay: Duration(delay)})
	code = emu.AuthorizeAccount(platformA, "wx2")
	start := time.Now()
	if a := post(t, queryAuthURL(srv, tok), queryAuthReq(platformA, code)); a.Errcode != 0 || a.Info.AppID != "wx2" {
		t.Fatalf("slow exchange: %s", a.raw)
	}
	if took := time.Since(start); took < delay {
		t.Fatalf("slow exchange answered in %s, before the %s delay", took, delay)
	}
	if a := post(t, queryAuthURL(srv, tok), queryAuthReq(platformA, code)); a.Errcode != 61010 {
		t.Fatalf("second exchange after a slow one: %s", a.raw)
	}
}

// WeChat slow, the caller hanging up: the exchange happened all the same,
// and the code is spent from the start of the call.
func TestQueryAuthDelayedExchangeSpendsTheCodeAtOnce(t *testing.T) {
	emu, srv, _ := newPlatformEmu(t, Config{})
	tok := componentToken(t, emu, srv, platformA)
	emu.SetFaults(Faults{QueryAuthDelay: Duration(time.Hour)})
	code := emu.AuthorizeAccount(platformA, "wx1")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	first := make(chan error, 1)
	go func() {
		_, err := postPlatform(t, ctx, queryAuthURL(srv, tok), queryAuthReq(platformA, code))
		first <- err
	}()
	spent := func() bool {
		emu.mu.Lock()
		defer emu.mu.Unlock()
		return emu.platform.codes[code] == nil
	}
	for deadline := time.Now().Add(10 * time.Second); !spent(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the first exchange never reached the emulator")
		}
	}
	emu.SetFaults(Faults{}) // the second is answered at once
	if a := post(t, queryAuthURL(srv, tok), queryAuthReq(platformA, code)); a.Errcode != 61010 {
		t.Fatalf("second exchange while the first is delayed: %s", a.raw)
	}
	select {
	case err := <-first:
		t.Fatalf("the first exchange ended early: %v", err)
	default:
	}
	cancel() // the caller hangs up, as WeChat's 5 s would make a proxy that did not detach
	if err := <-first; err == nil {
		t.Fatal("the first exchange was answered despite an hour's delay")
	}
	if s := emu.Stats(); s.AuthorizerIssued != 1 || s.QueryAuthCalls != 2 {
		t.Fatalf("stats %+v: the exchange should have issued the account's token", s)
	}
}

func TestAuthorizerTokenFaultAndRotation(t *testing.T) {
	emu, srv, _ := newPlatformEmu(t, Config{})
	tok := componentToken(t, emu, srv, platformA)
	rt := emu.ImportAuthorizer(platformA, "wx1")

	emu.SetFaults(Faults{AuthorizerTokenErrcode: 61023})
	if a := refresh(t, srv, tok, platformA, "wx1", rt); a.Errcode != 61023 {
		t.Fatalf("errcode fault: %s", a.raw)
	}
	emu.SetFaults(Faults{})
	if a := refresh(t, srv, tok, platformA, "wx1", rt); a.Errcode != 0 || a.RefreshToken != rt {
		t.Fatalf("without rotation the refresh token stays: %s", a.raw)
	}
	if n := emu.Stats().AuthorizerIssued; n != 1 {
		t.Fatalf("the fault issued a token: %d issued", n)
	}

	emu.SetFaults(Faults{RotateRefreshTokens: true})
	a := refresh(t, srv, tok, platformA, "wx1", rt)
	if a.Errcode != 0 || a.RefreshToken == rt || a.RefreshToken != emu.RefreshToken(platformA, "wx1") {
		t.Fatalf("rotation: %s", a.raw)
	}
	if old := refresh(t, srv, tok, platformA, "wx1", rt); old.Errcode != 61023 {
		t.Fatalf("the rotated-out refresh token: %s", old.raw)
	}
	next := refresh(t, srv, tok, platformA, "wx1", a.RefreshToken)
	if next.Errcode != 0 || next.RefreshToken == a.RefreshToken {
		t.Fatalf("the new refresh token: %s", next.raw)
	}
	secrets := emu.IssuedPlatformSecrets()
	for _, s := range []string{rt, a.RefreshToken, next.RefreshToken} {
		if !slices.Contains(secrets, s) {
			t.Fatalf("IssuedPlatformSecrets lacks a refresh token handed out")
		}
	}
}

func TestRotationFromConfig(t *testing.T) {
	emu, srv, _ := newPlatformEmu(t, Config{RotateRefreshTokens: true})
	tok := componentToken(t, emu, srv, platformA)
	rt := emu.ImportAuthorizer(platformA, "wx1")
	if a := refresh(t, srv, tok, platformA, "wx1", rt); a.RefreshToken == rt || a.RefreshToken == "" {
		t.Fatalf("Config.RotateRefreshTokens: %s", a.raw)
	}
}

func TestFaultsJSON(t *testing.T) {
	_, srv, _ := newPlatformEmu(t, Config{})
	set := func(body string) (int, string) {
		resp, err := http.Post(srv.URL+"/_emulator/faults", "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	status, got := set(`{"query_auth_delay":"7s","query_auth_errcode":-1,"authorizer_token_errcode":61023,"authorizer_list_errcode":45009,"rotate_refresh_tokens":true}`)
	var f Faults
	if err := json.Unmarshal([]byte(got), &f); status != 200 || err != nil {
		t.Fatalf("%d %s", status, got)
	}
	if want := (Faults{QueryAuthDelay: Duration(7 * time.Second), QueryAuthErrcode: -1, AuthorizerTokenErrcode: 61023, AuthorizerListErrcode: 45009, RotateRefreshTokens: true}); f != want {
		t.Fatalf("read back %+v, want %+v", f, want)
	}
	if !strings.Contains(got, `"query_auth_delay":"7s"`) {
		t.Fatalf("the delay is not written as a duration: %s", got)
	}
	if status, got := set(`{"query_auth_delay":7}`); status != http.StatusBadRequest || !strings.Contains(got, "duration") {
		t.Fatalf("a number of nanoseconds: %d %s, want 400", status, got)
	}
	if status, got := set(`{}`); status != 200 || strings.Contains(got, "query_auth") {
		t.Fatalf("cleared: %d %s", status, got)
	}
}

func TestAuthorizerListFault(t *testing.T) {
	emu, srv, _ := newPlatformEmu(t, Config{})
	tok := componentToken(t, emu, srv, platformA)
	emu.SetFaults(Faults{AuthorizerListErrcode: -1})
	if a := post(t, listURL(srv, tok), map[string]any{"component_appid": platformA, "count": 1}); a.Errcode != -1 {
		t.Fatalf("list fault: %s", a.raw)
	}
}

func TestAuthorizationPushes(t *testing.T) {
	emu, srv, clock := newPlatformEmu(t, Config{})
	tok := componentToken(t, emu, srv, platformA)
	app := testPlatforms[platformA]
	now := clock.Now().Unix()

	q, body, code, err := emu.AuthorizedPush(platformA, "wx1")
	if err != nil {
		t.Fatal(err)
	}
	f := openPush(t, app, q, body)
	want := map[string]string{
		"AppId": platformA, "CreateTime": strconv.FormatInt(now, 10), "InfoType": "authorized", "AuthorizerAppid": "wx1",
		"AuthorizationCode": code, "AuthorizationCodeExpiredTime": strconv.FormatInt(now+600, 10), "PreAuthCode": f["PreAuthCode"],
	}
	if !strings.HasPrefix(f["PreAuthCode"], "preauthcode@@@") || fmt.Sprint(f) != fmt.Sprint(want) {
		t.Fatalf("authorized push %v, want %v", f, want)
	}
	a := post(t, queryAuthURL(srv, tok), queryAuthReq(platformA, code))
	if a.Info.RefreshToken == "" || a.Info.RefreshToken != emu.RefreshToken(platformA, "wx1") {
		t.Fatalf("exchange of the pushed code: %s", a.raw)
	}

	q, body, code, err = emu.UpdateAuthorizedPush(platformA, "wx1")
	if err != nil || openPush(t, app, q, body)["InfoType"] != "updateauthorized" {
		t.Fatalf("updateauthorized: %v", err)
	}
	if b := post(t, queryAuthURL(srv, tok), queryAuthReq(platformA, code)); b.Info.RefreshToken != a.Info.RefreshToken {
		t.Fatalf("updateauthorized changed the refresh token: %s", b.raw)
	}

	q, body, err = emu.UnauthorizedPush(platformA, "wx1")
	if err != nil {
		t.Fatal(err)
	}
	if f := openPush(t, app, q, body); f["InfoType"] != "unauthorized" || f["AuthorizerAppid"] != "wx1" || f["AuthorizationCode"] != "" {
		t.Fatalf("unauthorized push %v", f)
	}
	if emu.RefreshToken(platformA, "wx1") != "" || call(t, srv, a.Info.Token) != 40001 {
		t.Fatal("the unauthorized push did not end the authorization")
	}
	if l := post(t, listURL(srv, tok), map[string]any{"component_appid": platformA, "count": 10}); l.Total != 0 {
		t.Fatalf("listed after withdrawal: %s", l.raw)
	}

	// Explicit CreateTime, for pushes that arrive out of order.
	q, body, _, err = emu.AuthorizationPushAt(platformA, "wx1", "unauthorized", now-3600)
	if err != nil || openPush(t, app, q, body)["CreateTime"] != strconv.FormatInt(now-3600, 10) {
		t.Fatalf("AuthorizationPushAt: %v", err)
	}
	q, body, err = emu.ComponentPushAt(platformA, "notify_third_fasteregister", 1234567890, map[string]string{"AuthorizerAppid": "wx1"}, "")
	if err != nil || openPush(t, app, q, body)["CreateTime"] != "1234567890" {
		t.Fatalf("ComponentPushAt: %v", err)
	}
	if _, _, _, err := emu.AuthorizationPushAt(platformA, "wx1", "component_verify_ticket", 0); err == nil {
		t.Fatal("AuthorizationPushAt of a ticket push")
	}
	if _, _, _, err := emu.AuthorizedPush("wxnobody", "wx1"); err == nil {
		t.Fatal("AuthorizedPush for an unknown platform")
	}
	secrets := emu.IssuedPlatformSecrets()
	if !slices.Contains(secrets, code) || !slices.Contains(secrets, f["PreAuthCode"]) {
		t.Fatal("IssuedPlatformSecrets lacks an exchanged code or a pre-auth code")
	}
}
