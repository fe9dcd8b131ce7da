package emulator

import (
	"net/http/httptest"
	"testing"
	"time"
)

func TestWeComTokensPerAppSecret(t *testing.T) {
	clock := &testClock{now: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	emu := New(Config{Corps: map[string][]string{"ww1": {"secret-a", "secret-b"}}, Now: clock.Now})
	srv := httptest.NewServer(emu)
	t.Cleanup(srv.Close)
	gettoken := func(corp, secret string) answer {
		a, _ := get(t, srv.URL+"/cgi-bin/gettoken?corpid="+corp+"&corpsecret="+secret)
		return a
	}
	a1, a2, b := gettoken("ww1", "secret-a"), gettoken("ww1", "secret-a"), gettoken("ww1", "secret-b")
	if a1.Token == "" || a1.Token != a2.Token || b.Token == "" || b.Token == a1.Token || a1.Expires != 7200 {
		t.Fatalf("tokens %+v %+v %+v", a1, a2, b)
	}
	if e := gettoken("ww2", "secret-a"); e.Errcode != 40013 {
		t.Fatalf("unknown corp: %+v", e)
	}
	if e := gettoken("ww1", "wrong"); e.Errcode != 40001 {
		t.Fatalf("wrong secret: %+v", e)
	}
	call := func(tok string) int {
		a, _ := get(t, srv.URL+"/cgi-bin/user/get?userid=u1&access_token="+tok)
		return a.Errcode
	}
	if code := call(a1.Token); code != 0 {
		t.Fatalf("API call: errcode %d", code)
	}
	emu.Revoke("ww1")
	if code := call(a1.Token); code != 40014 {
		t.Fatalf("revoked token: errcode %d, want 40014", code)
	}
	renewed := gettoken("ww1", "secret-a")
	if renewed.Token == a1.Token || call(renewed.Token) != 0 {
		t.Fatalf("after a revocation: %+v", renewed)
	}
	clock.Advance(7201 * time.Second)
	if code := call(renewed.Token); code != 42001 {
		t.Fatalf("expired token: errcode %d, want 42001", code)
	}
	if s := emu.Stats(); s.WeComIssued != 3 || s.WeComCalls != 6 || s.IssuedByApp["ww1"] != 3 {
		t.Fatalf("stats %+v", s)
	}
}
