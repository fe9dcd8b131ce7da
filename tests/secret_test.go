package tests

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"testing"

	"github.com/caddy-wechat/caddy-wechat/emulator"
)

// rawGet returns the status and body of a GET, whatever the body is.
func rawGet(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := client.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

// Mini Program login and the OAuth code exchange through the proxy: the
// client sends only the code and grant_type (or a wrong appid and secret,
// and a token), WeChat sees exactly one appid and one secret, the app's,
// and no access_token; its answer comes back untouched; its errors
// refresh nothing; no log holds the secret or the session it hands out.
func TestAppSecretCallsGetTheAppsSecret(t *testing.T) {
	w, c := startProxy(t, emulator.Config{}, "stable")
	upstreamSaw := func(what string) {
		t.Helper()
		call := w.LastSecretCall()
		if call.AppIDs != 1 || call.Secrets != 1 || call.AccessTokens != 0 || call.AppID != w.AppID || !call.SecretOK {
			t.Fatalf("%s: WeChat saw %+v", what, call)
		}
	}

	status, body := rawGet(t, c.url("/sns/jscode2session?js_code="+w.LoginCode(w.AppID)+"&grant_type=authorization_code"))
	var login struct {
		OpenID     string `json:"openid"`
		SessionKey string `json:"session_key"`
		Errcode    int    `json:"errcode"`
	}
	if err := json.Unmarshal([]byte(body), &login); err != nil || status != 200 || login.OpenID == "" || login.SessionKey == "" {
		t.Fatalf("login: %d %s", status, body)
	}
	upstreamSaw("login")

	// What a client sent of its own is replaced, however spelled.
	status, body = rawGet(t, c.url("/sns/jscode2session?appid=wxevil&secret=client-guess&Secret=x&%61ppid=y&access_token=t&js_code="+
		w.LoginCode(w.AppID)+"&grant_type=authorization_code"))
	if status != 200 || !strings.Contains(body, "session_key") {
		t.Fatalf("login with the client's own appid and secret: %d %s", status, body)
	}
	upstreamSaw("login with the client's own credentials")

	// WeChat's errors about the code pass back unchanged and refresh no
	// token.
	code := w.LoginCode(w.AppID)
	rawGet(t, c.url("/sns/jscode2session?js_code="+code+"&grant_type=authorization_code"))
	before := w.Stats()
	for _, tc := range []struct {
		code    string
		errcode int
	}{{code, 40163}, {"never-issued", 40029}} {
		status, body := rawGet(t, c.url("/sns/jscode2session?js_code="+tc.code+"&grant_type=authorization_code"))
		var a emulator.Echo
		_ = json.Unmarshal([]byte(body), &a)
		if status != 200 || a.Errcode != tc.errcode || !strings.Contains(body, "rid:") {
			t.Fatalf("code %s: %d %s, want WeChat's %d passed back", tc.code, status, body, tc.errcode)
		}
	}
	if after := w.Stats(); after.Issued() != before.Issued() || after.StableCalls != before.StableCalls {
		t.Fatalf("a code error made the proxy fetch a token: %+v", after)
	}
	if v := metric(t, c.scrape(t), "caddy_wechat_token_passive_refreshes_total", `app_id="`+w.AppID+`"`); v != 0 {
		t.Fatalf("%v passive refreshes after code errors", v)
	}

	// The web OAuth code exchange. (The user token it hands out is not used
	// here: a client's request carrying it is logged by Caddy like any
	// URI, and this test holds every log to never showing it.)
	status, body = rawGet(t, c.url("/sns/oauth2/access_token?code="+w.LoginCode(w.AppID)+"&grant_type=authorization_code"))
	var oauth struct {
		AccessToken string `json:"access_token"`
		OpenID      string `json:"openid"`
	}
	if err := json.Unmarshal([]byte(body), &oauth); err != nil || status != 200 || oauth.AccessToken == "" {
		t.Fatalf("OAuth code exchange: %d %s", status, body)
	}
	upstreamSaw("OAuth code exchange")

	// The access log keeps what the client sent, not what WeChat got (the
	// secret; checkLogs looks for it and the sessions in every log).
	if access := c.accessLog(t); !strings.Contains(access, "secret=client-guess") {
		t.Fatal("the access log does not show the client's request")
	}
}

// A wrong secret in the config: WeChat's 40125 comes back as it is.
func TestAppSecretCallsWithAWrongConfiguredSecret(t *testing.T) {
	w := startWeChat(t, emulator.Config{})
	c := startCaddy(t, w, fmt.Sprintf(`wechat_token {
		app_id %[1]s
		app_secret not-the-secret
		api_base %[2]s
		fetch_timeout 1s
	}
	reverse_proxy %[2]s`, w.AppID, w.URL))
	c.secrets = append(c.secrets, "not-the-secret")
	status, body := rawGet(t, c.url("/sns/jscode2session?js_code="+w.LoginCode(w.AppID)+"&grant_type=authorization_code"))
	if status != 200 || !strings.Contains(body, `"errcode":40125`) {
		t.Fatalf("wrong configured secret: %d %s, want WeChat's 40125", status, body)
	}
	if call := w.LastSecretCall(); call.AppIDs != 1 || call.Secrets != 1 || call.SecretOK {
		t.Fatalf("WeChat saw %+v", call)
	}
}

// app_secret_calls passthrough forwards what the client sent, for
// operators whose clients keep their own secret. The client's URI then
// holds the secret: the access log needs it filtered out, and Caddy's
// reverse_proxy logs that URI at DEBUG, so the level is INFO here, as the
// README says.
func TestAppSecretCallsPassthrough(t *testing.T) {
	w := startWeChat(t, emulator.Config{})
	c := startCaddyWith(t, w, w.tokenBlock("stable", "app_secret_calls passthrough"), caddyOptions{accessFormat: `format filter {
			request>uri query {
				delete secret
			}
			wrap json
		}`, logLevel: "INFO"})
	status, body := rawGet(t, c.url("/sns/jscode2session?appid="+w.AppID+"&secret="+w.Secret+"&js_code="+w.LoginCode(w.AppID)+"&grant_type=authorization_code"))
	if status != 200 || !strings.Contains(body, "session_key") {
		t.Fatalf("passthrough with the client's secret: %d %s", status, body)
	}
	status, body = rawGet(t, c.url("/sns/jscode2session?js_code="+w.LoginCode(w.AppID)+"&grant_type=authorization_code"))
	if status != 200 || !strings.Contains(body, `"errcode":40013`) {
		t.Fatalf("passthrough without appid: %d %s, want WeChat's 40013", status, body)
	}
	if call := w.LastSecretCall(); call.AppIDs != 0 || call.Secrets != 0 {
		t.Fatalf("passthrough added credentials: %+v", call)
	}
}
