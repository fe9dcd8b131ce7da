package emulator

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

func exchange(t *testing.T, url string) (map[string]any, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	var m map[string]any
	if err := json.Unmarshal(body, &m); err != nil {
		t.Fatalf("%s: %q", url, body)
	}
	return m, resp.Header.Get("Content-Type")
}

func TestCodeExchanges(t *testing.T) {
	emu, srv, clock := newEmu(t)
	base := srv.URL + "/sns/jscode2session?grant_type=authorization_code&appid=" + appID
	code := emu.LoginCode(appID)
	m, ctype := exchange(t, base+"&secret="+secret+"&js_code="+code)
	if m["session_key"] == nil || m["openid"] == nil || ctype != "text/plain" {
		t.Fatalf("login: %v (%s)", m, ctype)
	}
	if call := emu.LastSecretCall(); call.AppIDs != 1 || call.Secrets != 1 || !call.SecretOK || call.Errcode != 0 {
		t.Fatalf("last call %+v", call)
	}
	for what, c := range map[string]struct {
		url  string
		want float64
	}{
		"reused code":  {base + "&secret=" + secret + "&js_code=" + code, 40163},
		"wrong secret": {base + "&secret=nope&js_code=" + emu.LoginCode(appID), 40125},
		"two secrets":  {base + "&secret=" + secret + "&secret=" + secret + "&js_code=" + emu.LoginCode(appID), 40125},
		"two appids":   {base + "&appid=" + appID + "&secret=" + secret + "&js_code=" + emu.LoginCode(appID), 40013},
		"unknown code": {base + "&secret=" + secret + "&js_code=made-up", 40029},
		"no code":      {base + "&secret=" + secret, 41008},
		"other app":    {base + "&secret=" + secret + "&js_code=" + emu.LoginCode("wxother"), 40029},
	} {
		if m, _ := exchange(t, c.url); m["errcode"] != c.want {
			t.Errorf("%s: %v, want errcode %v", what, m, c.want)
		}
	}
	expired := emu.LoginCode(appID)
	clock.Advance(6 * time.Minute)
	if m, _ := exchange(t, base+"&secret="+secret+"&js_code="+expired); m["errcode"] != float64(40029) {
		t.Errorf("expired code: %v", m)
	}
	m, _ = exchange(t, srv.URL+"/sns/oauth2/access_token?grant_type=authorization_code&appid="+appID+"&secret="+secret+"&code="+emu.LoginCode(appID))
	tok, _ := m["access_token"].(string)
	if tok == "" || m["refresh_token"] == nil || !strings.Contains(strings.Join(emu.IssuedSessions(), " "), tok) {
		t.Fatalf("OAuth: %v", m)
	}
	if s := emu.Stats(); s.SecretCalls != 10 {
		t.Fatalf("secret calls %d", s.SecretCalls)
	}
}
