package emulator

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

type testClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *testClock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (c *testClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

const appID, secret = "wxapp", "s3cret"

func newEmu(t *testing.T) (*Server, *httptest.Server, *testClock) {
	clock := &testClock{now: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	emu := New(Config{Apps: map[string]string{appID: secret}, Now: clock.Now})
	srv := httptest.NewServer(emu)
	t.Cleanup(srv.Close)
	t.Cleanup(emu.Close)
	return emu, srv, clock
}

type answer struct {
	Token   string `json:"access_token"`
	Expires int    `json:"expires_in"`
	Errcode int    `json:"errcode"`
	Errmsg  string `json:"errmsg"`
}

func get(t *testing.T, url string) (answer, *http.Response) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var a answer
	body, _ := io.ReadAll(resp.Body)
	_ = json.Unmarshal(body, &a)
	return a, resp
}

func classic(t *testing.T, srv *httptest.Server, id, sec string) answer {
	a, _ := get(t, srv.URL+"/cgi-bin/token?grant_type=client_credential&appid="+id+"&secret="+sec)
	return a
}

func stable(t *testing.T, srv *httptest.Server, force bool) answer {
	t.Helper()
	body, _ := json.Marshal(map[string]any{"grant_type": "client_credential", "appid": appID, "secret": secret, "force_refresh": force})
	resp, err := http.Post(srv.URL+"/cgi-bin/stable_token", "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var a answer
	if err := json.NewDecoder(resp.Body).Decode(&a); err != nil {
		t.Fatal(err)
	}
	return a
}

func call(t *testing.T, srv *httptest.Server, tok string) int {
	t.Helper()
	a, _ := get(t, srv.URL+"/cgi-bin/user/info?openid=o1&access_token="+tok)
	return a.Errcode
}

func TestClassicInvalidatesPreviousAfterOverlap(t *testing.T) {
	_, srv, clock := newEmu(t)
	a := classic(t, srv, appID, secret)
	if a.Errcode != 0 || len(a.Token) != 136 || a.Expires != 7200 {
		t.Fatalf("first token: %+v", a)
	}
	b := classic(t, srv, appID, secret)
	if b.Token == a.Token {
		t.Fatal("classic handed out the same token twice")
	}
	if code := call(t, srv, a.Token); code != 0 {
		t.Fatalf("old token inside the overlap: errcode %d", code)
	}
	clock.Advance(5 * time.Minute)
	if code := call(t, srv, a.Token); code != 40001 {
		t.Fatalf("old token after the overlap: errcode %d, want 40001", code)
	}
	if code := call(t, srv, b.Token); code != 0 {
		t.Fatalf("new token: errcode %d", code)
	}
	clock.Advance(7200 * time.Second)
	if code := call(t, srv, b.Token); code != 42001 {
		t.Fatalf("expired token: errcode %d, want 42001", code)
	}
}

func TestCredentialErrors(t *testing.T) {
	_, srv, _ := newEmu(t)
	for _, c := range []struct {
		id, sec string
		code    int
	}{{"", secret, 41002}, {"wxother", secret, 40013}, {appID, "", 41004}, {appID, "wrong", 40125}} {
		if a := classic(t, srv, c.id, c.sec); a.Errcode != c.code || !strings.Contains(a.Errmsg, "rid: ") {
			t.Errorf("appid %q secret %q: %+v, want errcode %d with a rid", c.id, c.sec, a, c.code)
		}
	}
	if code := call(t, srv, ""); code != 41001 {
		t.Errorf("missing token: %d", code)
	}
	if code := call(t, srv, "made-up"); code != 40001 {
		t.Errorf("unknown token: %d", code)
	}
}

func TestClassicQuota(t *testing.T) {
	clock := &testClock{now: time.Now()}
	emu := New(Config{Apps: map[string]string{appID: secret}, ClassicDailyQuota: 2, Now: clock.Now})
	srv := httptest.NewServer(emu)
	defer srv.Close()
	classic(t, srv, appID, secret)
	classic(t, srv, appID, secret)
	if a := classic(t, srv, appID, secret); a.Errcode != 45009 {
		t.Fatalf("third call with quota 2: %+v", a)
	}
	emu.ResetStats()
	if a := classic(t, srv, appID, secret); a.Errcode != 0 {
		t.Fatalf("after reset: %+v", a)
	}
}

func TestStableSameTokenUntilWindowThenNext(t *testing.T) {
	emu, srv, clock := newEmu(t)
	a := stable(t, srv, false)
	clock.Advance(time.Hour)
	again := stable(t, srv, false)
	if again.Token != a.Token || again.Expires != 3600 {
		t.Fatalf("stable within life: %+v (first %q)", again, a.Token)
	}
	// Classic calls do not disturb stable tokens.
	classic(t, srv, appID, secret)
	if code := call(t, srv, a.Token); code != 0 {
		t.Fatalf("stable token after a classic call: %d", code)
	}
	clock.Advance(time.Hour - 4*time.Minute)
	next := stable(t, srv, false)
	if next.Token == a.Token || next.Expires != 7200 {
		t.Fatalf("in the last minutes: %+v", next)
	}
	if code := call(t, srv, a.Token); code != 0 {
		t.Fatalf("previous stable token before its expiry: %d", code)
	}
	if st := emu.Stats(); st.StableIssued != 2 || st.StableCalls != 3 {
		t.Fatalf("stats %+v", st)
	}
}

func TestStableForceRefreshLimits(t *testing.T) {
	emu, srv, clock := newEmu(t)
	a := stable(t, srv, false)
	b := stable(t, srv, true)
	if b.Token == a.Token {
		t.Fatal("force_refresh returned the same token")
	}
	if code := call(t, srv, a.Token); code != 40001 {
		t.Fatalf("token replaced by force_refresh: %d, want 40001", code)
	}
	if c := stable(t, srv, true); c.Errcode != 45011 {
		t.Fatalf("force_refresh 0 s later: %+v", c)
	}
	for range 19 {
		clock.Advance(31 * time.Second)
		if c := stable(t, srv, true); c.Errcode != 0 {
			t.Fatalf("force_refresh within quota: %+v", c)
		}
	}
	clock.Advance(31 * time.Second)
	if c := stable(t, srv, true); c.Errcode != 45009 {
		t.Fatalf("21st force_refresh: %+v", c)
	}
	if st := emu.Stats(); st.ForcedIssued != 20 {
		t.Fatalf("forced %d", st.ForcedIssued)
	}
}

func TestRevokeAndRejectAll(t *testing.T) {
	emu, srv, _ := newEmu(t)
	a := classic(t, srv, appID, secret)
	emu.SetFaults(Faults{RejectAll: true})
	if code := call(t, srv, a.Token); code != 40001 {
		t.Fatalf("reject_all: %d", code)
	}
	emu.SetFaults(Faults{})
	emu.Revoke(appID)
	if code := call(t, srv, a.Token); code != 40001 {
		t.Fatalf("revoked: %d", code)
	}
	if st := emu.Stats(); st.APIRejected[40001] != 2 || st.APICalls != 2 {
		t.Fatalf("stats %+v", st)
	}
}

func TestTokenEndpointFaults(t *testing.T) {
	emu, srv, _ := newEmu(t)
	emu.SetFaults(Faults{TokenEndpoint: FaultBusy})
	if a := classic(t, srv, appID, secret); a.Errcode != -1 {
		t.Fatalf("busy: %+v", a)
	}
	emu.SetFaults(Faults{TokenEndpoint: FaultHTTP503})
	if _, resp := get(t, srv.URL+"/cgi-bin/token"); resp.StatusCode != 503 {
		t.Fatalf("http_503: %d", resp.StatusCode)
	}
	emu.SetFaults(Faults{TokenEndpoint: FaultIPWhitelist})
	if a := classic(t, srv, appID, secret); a.Errcode != 40164 || !strings.Contains(a.Errmsg, "invalid ip 127.0.0.1") {
		t.Fatalf("ip_whitelist: %+v", a)
	}
}

func TestMediaStreamsAndErrorsAreTextPlain(t *testing.T) {
	_, srv, _ := newEmu(t)
	tok := classic(t, srv, appID, secret).Token
	resp, err := http.Get(srv.URL + "/cgi-bin/media/get?media_id=bytes-1000&access_token=" + tok)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	want, _ := io.ReadAll(io.LimitReader(MediaPattern(), 1000))
	if !bytes.Equal(body, want) || resp.Header.Get("Content-Type") != "image/jpeg" {
		t.Fatalf("media: %d bytes, %q", len(body), resp.Header.Get("Content-Type"))
	}
	a, resp := get(t, srv.URL+"/cgi-bin/media/get?media_id=bytes-1&access_token=bad")
	if a.Errcode != 40001 || resp.Header.Get("Content-Type") != "text/plain" {
		t.Fatalf("media error: %+v %q", a, resp.Header.Get("Content-Type"))
	}
}

func TestEchoReportsWhatArrived(t *testing.T) {
	_, srv, _ := newEmu(t)
	tok := classic(t, srv, appID, secret).Token
	resp, err := http.Post(srv.URL+"/cgi-bin/message/custom/send?b=2&access_token="+tok+"&a=%2F", "application/json", strings.NewReader(`{"touser":"o"}`))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var e Echo
	if err := json.NewDecoder(resp.Body).Decode(&e); err != nil {
		t.Fatal(err)
	}
	if e.Errcode != 0 || e.Query != "b=2&a=%2F" || e.TokenParams != 1 || e.BodyBytes != 14 || e.Method != "POST" || e.AppID != appID {
		t.Fatalf("echo %+v", e)
	}
}

func TestControlEndpoints(t *testing.T) {
	emu, srv, _ := newEmu(t)
	resp, err := http.Post(srv.URL+"/_emulator/faults", "application/json", strings.NewReader(`{"reject_all":true}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	tok := classic(t, srv, appID, secret).Token
	if code := call(t, srv, tok); code != 40001 {
		t.Fatalf("reject_all over HTTP: %d", code)
	}
	resp, err = http.Get(srv.URL + "/_emulator/stats")
	if err != nil {
		t.Fatal(err)
	}
	var st Stats
	_ = json.NewDecoder(resp.Body).Decode(&st)
	resp.Body.Close()
	if st.TokenCalls != 1 || st.APIRejected[40001] != 1 {
		t.Fatalf("stats over HTTP: %+v", st)
	}
	if got := emu.IssuedTokens(); len(got) != 1 || got[0] != tok {
		t.Fatalf("issued tokens: %v", got)
	}
}

func TestAnswersGzippedWhenAskedMediaNot(t *testing.T) {
	_, srv, _ := newEmu(t)
	// A transport that neither asks for gzip nor decompresses.
	raw := &http.Client{Transport: &http.Transport{DisableCompression: true}}
	do := func(path string, gzip bool) *http.Response {
		req, _ := http.NewRequest(http.MethodGet, srv.URL+path, nil)
		if gzip {
			req.Header.Set("Accept-Encoding", "gzip, deflate")
		}
		resp, err := raw.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp
	}
	if got := do("/cgi-bin/user/info?access_token=x", true).Header.Get("Content-Encoding"); got != "gzip" {
		t.Fatalf("JSON answer to a client accepting gzip: Content-Encoding %q", got)
	}
	if got := do("/cgi-bin/user/info?access_token=x", false).Header.Get("Content-Encoding"); got != "" {
		t.Fatalf("JSON answer to a client not accepting gzip: Content-Encoding %q", got)
	}
	if got := do("/_emulator/stats", true).Header.Get("Content-Encoding"); got != "" {
		t.Fatalf("control endpoint: Content-Encoding %q", got)
	}
}
