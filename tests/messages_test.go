package tests

import (
	"bytes"
	"context"
	"encoding/json"
	"encoding/xml"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caddy-wechat/caddy-wechat/emulator"
)

// wechat_messages against the emulator as WeChat's pusher and a real app
// server behind reverse_proxy.

const (
	pushToken  = "push-token-of-the-test-app"
	pushAESKey = "ZYXWVUTSRQPONMLKJIHGFEDCBAzyxwvutsrqponmlkj"
	pushSecret = "the-user-wrote-something-private" // a message's content: never logged
)

// appServer is the app behind the proxy: it records what it got and
// answers with reply (after delay), or a status.
type appServer struct {
	*httptest.Server
	mu    sync.Mutex
	got   []appRequest
	reply func(n int) (status int, body string, delay time.Duration)
}

// replyText is an app answering every message with a passive text reply.
func replyText(content string, delay time.Duration) func(n int) (int, string, time.Duration) {
	return func(int) (int, string, time.Duration) { return 200, "reply:" + content, delay }
}

type appRequest struct {
	Query, ContentType, AppID, Forged string
	Body                              []byte
}

func startApp(t *testing.T, reply func(n int) (int, string, time.Duration)) *appServer {
	t.Helper()
	a := &appServer{reply: reply}
	a.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		a.mu.Lock()
		a.got = append(a.got, appRequest{Query: r.URL.RawQuery, ContentType: r.Header.Get("Content-Type"),
			AppID: r.Header.Get("X-WeChat-AppID"), Forged: r.Header.Get("X-WeChat-Forged"), Body: body})
		n := len(a.got)
		a.mu.Unlock()
		status, answer, delay := a.reply(n)
		a.mu.Lock()
		last := a.got[n-1]
		a.mu.Unlock()
		if content, ok := strings.CutPrefix(answer, "reply:"); ok {
			answer = passiveReply(last, content)
		}
		time.Sleep(delay)
		w.WriteHeader(status)
		_, _ = io.WriteString(w, answer)
	}))
	t.Cleanup(a.Close)
	return a
}

func (a *appServer) requests() []appRequest {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]appRequest(nil), a.got...)
}

func answering(status int, body string) func(int) (int, string, time.Duration) {
	return func(int) (int, string, time.Duration) { return status, body, 0 }
}

// passiveReply is the app's passive text reply to the message it got (a
// real app's: addressed back to the sender, from the account), in the
// message's format; "{{to}}" and "{{from}}" in a reply body are filled in
// from it.
func passiveReply(got appRequest, content string) string {
	to, from := fieldOf(got.Body, "FromUserName"), fieldOf(got.Body, "ToUserName")
	if strings.HasPrefix(got.ContentType, "application/json") {
		return fmt.Sprintf(`{"ToUserName":%q,"FromUserName":%q,"CreateTime":%d,"MsgType":"text","Content":%q}`, to, from, time.Now().Unix(), content)
	}
	return fmt.Sprintf("<xml><ToUserName><![CDATA[%s]]></ToUserName><FromUserName><![CDATA[%s]]></FromUserName><CreateTime>%d</CreateTime><MsgType><![CDATA[text]]></MsgType><Content><![CDATA[%s]]></Content></xml>",
		to, from, time.Now().Unix(), content)
}

// fieldOf reads a top-level field of a message, XML or JSON.
func fieldOf(msg []byte, name string) string {
	if bytes.HasPrefix(bytes.TrimSpace(msg), []byte("{")) {
		var m map[string]any
		_ = json.Unmarshal(msg, &m)
		return fmt.Sprint(m[name])
	}
	var x struct {
		ToUserName   string `xml:"ToUserName"`
		FromUserName string `xml:"FromUserName"`
	}
	_ = xml.Unmarshal(msg, &x)
	if name == "ToUserName" {
		return x.ToUserName
	}
	return x.FromUserName
}

// summary is what a push's attempts came to, for failure messages.
func summary(res *emulator.PushResult) string {
	if res == nil {
		return "no result"
	}
	var out []string
	for _, a := range res.Attempts {
		out = append(out, fmt.Sprintf("HTTP %d timed out %v %q", a.Status, a.TimedOut, tail(string(a.Answer), 120)))
	}
	return fmt.Sprintf("delivered %v, reply %q; %s", res.Delivered, res.Reply, strings.Join(out, "; "))
}

// messagesSite is wechat_messages with options in front of the app.
func messagesSite(app *appServer, options string) string {
	return fmt.Sprintf("wechat_messages {\n\t\t%s\n\t}\n\treverse_proxy %s", options, app.URL)
}

func startMessages(t *testing.T, w *wechat, site string, opts caddyOptions) *caddy {
	t.Helper()
	c := startCaddyWith(t, w, site, opts)
	c.secrets = append(c.secrets, pushToken, pushAESKey, pushSecret)
	return c
}

// quick are push options for tests that want no re-delivery.
var quick = emulator.PushOptions{Timeout: 5 * time.Second, Attempts: 1}

func TestMessageURLChecks(t *testing.T) {
	t.Parallel()
	w := startWeChat(t, emulator.Config{})
	app := startApp(t, answering(200, "success"))
	official := startMessages(t, w, messagesSite(app, "app_id wxmsg00000000001\n\t\ttoken "+pushToken), caddyOptions{})
	wecom := startMessages(t, w, messagesSite(app, "corp_id wwmsg00000000001\n\t\ttoken "+pushToken+"\n\t\tencoding_aes_key "+pushAESKey), caddyOptions{})
	for _, target := range []emulator.PushTarget{
		{URL: official.url("/"), Kind: emulator.KindOfficialAccount, Mode: emulator.ModePlaintext, Token: pushToken, ReceiverID: "wxmsg00000000001"},
		{URL: wecom.url("/"), Kind: emulator.KindWeCom, Token: pushToken, AESKey: pushAESKey, ReceiverID: "wwmsg00000000001"},
	} {
		if _, err := emulator.VerifyURL(context.Background(), target, quick); err != nil {
			t.Fatalf("%s URL check: %v", target.Kind, err)
		}
		forged := quick
		forged.Forge = emulator.Forgery{Token: "not-the-token"}
		check, err := emulator.VerifyURL(context.Background(), target, forged)
		if err == nil || check.Status != http.StatusForbidden {
			t.Fatalf("%s URL check with a wrong signature: %v %+v", target.Kind, err, check)
		}
	}
	if n := len(app.requests()); n != 0 {
		t.Fatalf("URL checks reached the app %d times", n)
	}
}

// Every mode and format: the app gets the plaintext byte for byte, the
// account in X-WeChat-AppID, the query without the signature; its passive
// reply reaches WeChat sealed as WeChat checks it.
func TestMessagesDeliveredAndRepliesSealed(t *testing.T) {
	t.Parallel()
	w := startPlatformWeChat(t)
	app := startApp(t, replyText("hi back", 0))
	site := fmt.Sprintf(`handle /oa-plain {
		%s
	}
	handle /oa {
		%s
	}
	handle /wecom {
		%s
	}
	handle_path /authorizers/* {
		%s
	}`,
		messagesSite(app, "app_id wxmsg00000000001\n\t\ttoken "+pushToken),
		messagesSite(app, "app_id wxmsg00000000001\n\t\ttoken "+pushToken+"\n\t\tencoding_aes_key "+pushAESKey),
		messagesSite(app, "corp_id wwmsg00000000001\n\t\ttoken "+pushToken+"\n\t\tencoding_aes_key "+pushAESKey),
		messagesSite(app, "component platform\n\t\tauthorizer path"))
	c := startCaddyWith(t, w, site, caddyOptions{global: w.platformGlobal()})
	c.secrets = append(c.secrets, pushToken, pushAESKey, pushSecret, componentSecret, componentAESKey)
	cases := []struct {
		target  emulator.PushTarget
		account string
	}{
		{emulator.PushTarget{URL: c.url("/oa-plain"), Kind: emulator.KindOfficialAccount, Mode: emulator.ModePlaintext, Token: pushToken, ReceiverID: "wxmsg00000000001"}, "wxmsg00000000001"},
		{emulator.PushTarget{URL: c.url("/oa"), Kind: emulator.KindOfficialAccount, Mode: emulator.ModeCompatible, Token: pushToken, AESKey: pushAESKey, ReceiverID: "wxmsg00000000001"}, "wxmsg00000000001"},
		{emulator.PushTarget{URL: c.url("/oa"), Kind: emulator.KindOfficialAccount, Mode: emulator.ModeSafe, Token: pushToken, AESKey: pushAESKey, ReceiverID: "wxmsg00000000001"}, "wxmsg00000000001"},
		{emulator.PushTarget{URL: c.url("/oa"), Kind: emulator.KindMiniProgram, Mode: emulator.ModeSafe, Format: emulator.FormatJSON, Token: pushToken, AESKey: pushAESKey, ReceiverID: "wxmsg00000000001"}, "wxmsg00000000001"},
		{emulator.PushTarget{URL: c.url("/wecom"), Kind: emulator.KindWeCom, Token: pushToken, AESKey: pushAESKey, ReceiverID: "wwmsg00000000001", AgentID: "1000002"}, "wwmsg00000000001"},
		{emulator.PushTarget{URL: c.url("/authorizers/$APPID$"), Kind: emulator.KindAuthorizer, Token: componentToken, AESKey: componentAESKey, ReceiverID: componentAppID, Account: "wxaccount0000001"}, "wxaccount0000001"},
	}
	for i, tc := range cases {
		name := fmt.Sprintf("%s %s %s", tc.target.Kind, tc.target.Mode, tc.target.Format)
		res, err := emulator.PushMessage(context.Background(), tc.target, emulator.TextMessage("o6_bmjrPTlm6_2sgVt7hMZOPfL2M", pushSecret), quick)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		got := app.requests()
		if len(got) != i+1 {
			t.Fatalf("%s: the app got %d requests, want %d", name, len(got), i+1)
		}
		r := got[i]
		wantType := "text/xml"
		if tc.target.Format == emulator.FormatJSON {
			wantType = "application/json"
		}
		if !bytes.Equal(r.Body, res.Plaintext) || r.ContentType != wantType || r.AppID != tc.account {
			t.Fatalf("%s: the app got %q (%s, account %q), WeChat pushed %q", name, r.Body, r.ContentType, r.AppID, res.Plaintext)
		}
		for _, p := range []string{"signature=", "msg_signature=", "timestamp=", "nonce=", "encrypt_type="} {
			if strings.Contains(r.Query, p) {
				t.Fatalf("%s: the app's query %q has %s", name, r.Query, p)
			}
		}
		if tc.target.Kind == emulator.KindOfficialAccount && !strings.Contains(r.Query, "openid=") {
			t.Fatalf("%s: the app's query %q lost openid", name, r.Query)
		}
		if want := passiveReply(r, "hi back"); fieldOf(res.Reply, "ToUserName") != fieldOf([]byte(want), "ToUserName") || !strings.Contains(string(res.Reply), "hi back") {
			t.Fatalf("%s: WeChat read the reply %q", name, res.Reply)
		}
		if encrypted := tc.target.Mode != emulator.ModePlaintext; res.ReplyEncrypted != encrypted {
			t.Fatalf("%s: reply encrypted %v", name, res.ReplyEncrypted)
		}
	}
}

// Forged, tampered, stale and wrong-receiver pushes: 403, nothing reaches
// the app. An X-WeChat-* header from the client never does either.
func TestForgedPushesRefused(t *testing.T) {
	t.Parallel()
	w := startWeChat(t, emulator.Config{})
	app := startApp(t, answering(200, "success"))
	c := startMessages(t, w, messagesSite(app, "app_id wxmsg00000000001\n\t\ttoken "+pushToken+"\n\t\tencoding_aes_key "+pushAESKey), caddyOptions{})
	target := emulator.PushTarget{URL: c.url("/"), Kind: emulator.KindOfficialAccount, Mode: emulator.ModeSafe, Token: pushToken, AESKey: pushAESKey, ReceiverID: "wxmsg00000000001"}
	for name, forge := range map[string]emulator.Forgery{
		"wrong token":    {Token: "not-the-token"},
		"tampered":       {FlipCiphertext: true},
		"stale":          {Age: 6 * time.Minute},
		"other receiver": {SealFor: "wxsomeoneelse001"},
	} {
		opts := quick
		opts.Forge = forge
		res, err := emulator.PushMessage(context.Background(), target, emulator.TextMessage("o1", pushSecret), opts)
		if err == nil || res == nil || len(res.Attempts) != 1 || res.Attempts[0].Status != http.StatusForbidden {
			t.Fatalf("%s: %v: %s", name, err, summary(res))
		}
	}
	plain := target
	plain.Mode = emulator.ModePlaintext
	if res, err := emulator.PushMessage(context.Background(), plain, emulator.TextMessage("o1", pushSecret), quick); err == nil || res.Attempts[0].Status != http.StatusForbidden {
		t.Fatalf("a plaintext push to a safe-mode receiver: %v", err)
	}
	// Nothing to check at all (a browser, a scanner): a failed check too.
	for _, method := range []string{http.MethodGet, http.MethodPost} {
		req, err := http.NewRequest(method, c.url("/?openid=o1"), strings.NewReader("<xml><Content>hi</Content></xml>"))
		if err != nil {
			t.Fatal(err)
		}
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if res.StatusCode != http.StatusForbidden || res.Header.Get("Content-Type") != "application/json" || !strings.HasPrefix(string(body), `{"errcode":-1,"errmsg":"wechat_token: `) {
			t.Fatalf("an unsigned %s: %d %q %s", method, res.StatusCode, res.Header.Get("Content-Type"), body)
		}
	}
	if n := len(app.requests()); n != 0 {
		t.Fatalf("refused pushes reached the app %d times", n)
	}
	var st []struct {
		Refused map[string]int `json:"refused"`
		Recent  []struct {
			Reason string `json:"reason"`
		} `json:"recent_refusals"`
	}
	c.adminCall(t, http.MethodGet, "/wechat_token/messages", &st)
	if len(st) != 1 || st[0].Refused["signature"] != 2 || st[0].Refused["stale"] != 1 || st[0].Refused["receiver"] != 1 || st[0].Refused["mode"] != 1 || st[0].Refused["malformed"] != 2 || len(st[0].Recent) != 7 {
		t.Fatalf("admin view of refusals: %+v", st)
	}
}

// An app that takes 7 s: WeChat hangs up after 5 s and re-delivers; the
// re-delivery gets the app's reply, delivered once.
func TestSlowAppAnsweredOnWeChatsRetry(t *testing.T) {
	t.Parallel()
	w := startWeChat(t, emulator.Config{})
	app := startApp(t, replyText("late", 7*time.Second))
	c := startMessages(t, w, messagesSite(app, "app_id wxmsg00000000001\n\t\ttoken "+pushToken+"\n\t\tencoding_aes_key "+pushAESKey), caddyOptions{})
	target := emulator.PushTarget{URL: c.url("/"), Kind: emulator.KindOfficialAccount, Mode: emulator.ModeSafe, Token: pushToken, AESKey: pushAESKey, ReceiverID: "wxmsg00000000001"}
	res, err := emulator.PushMessage(context.Background(), target, emulator.TextMessage("o1", pushSecret), emulator.PushOptions{})
	if err != nil || !res.Delivered || !strings.Contains(string(res.Reply), "late") || !res.Attempts[0].TimedOut {
		t.Fatalf("a slow app: %v: %s", err, summary(res))
	}
	if n := len(app.requests()); n != 1 {
		t.Fatalf("the app got the message %d times", n)
	}
	var st []struct {
		Received, Forwarded, Deduplicated int
	}
	c.adminCall(t, http.MethodGet, "/wechat_token/messages", &st)
	if len(st) != 1 || st[0].Received != 2 || st[0].Forwarded != 1 || st[0].Deduplicated != 1 {
		t.Fatalf("admin counts for one message delivered twice by WeChat: %+v", st)
	}
}

// The app fails: 5xx to WeChat, nothing kept, the re-delivery delivered.
func TestFailingAppGetsTheMessageAgain(t *testing.T) {
	t.Parallel()
	w := startWeChat(t, emulator.Config{})
	app := startApp(t, func(n int) (int, string, time.Duration) {
		if n == 1 {
			return 500, "down", 0
		}
		return 200, "success", 0
	})
	c := startMessages(t, w, messagesSite(app, "app_id wxmsg00000000001\n\t\ttoken "+pushToken+"\n\t\tencoding_aes_key "+pushAESKey), caddyOptions{})
	target := emulator.PushTarget{URL: c.url("/"), Kind: emulator.KindOfficialAccount, Mode: emulator.ModeSafe, Token: pushToken, AESKey: pushAESKey, ReceiverID: "wxmsg00000000001"}
	opts := emulator.PushOptions{RetryGap: 100 * time.Millisecond}
	res, err := emulator.PushMessage(context.Background(), target, emulator.TextMessage("o1", pushSecret), opts)
	if err != nil || len(res.Attempts) != 2 || res.Attempts[0].Status < 500 {
		t.Fatalf("a failing app: %v: %s", err, summary(res))
	}
	if n := len(app.requests()); n != 2 {
		t.Fatalf("the app got the message %d times, want 2", n)
	}
}

// Two instances on Redis: WeChat's first delivery reaches one, its
// re-delivery the other, which answers the first's reply: one delivery.
func TestFleetDeliversEachMessageOnce(t *testing.T) {
	t.Parallel()
	port := startRedis(t)
	w := startWeChat(t, emulator.Config{})
	app := startApp(t, replyText("once", 6*time.Second))
	site := messagesSite(app, "app_id wxmsg00000000001\n\t\ttoken "+pushToken+"\n\t\tencoding_aes_key "+pushAESKey)
	a := startMessages(t, w, site, caddyOptions{storageConfig: redisStorage(port)})
	b := startMessages(t, w, site, caddyOptions{storageConfig: redisStorage(port)})
	// Deliveries alternate between the two, as a load balancer in front
	// of the fleet might send them.
	var n int
	var mu sync.Mutex
	client := &http.Client{Transport: roundTripFunc(func(r *http.Request) (*http.Response, error) {
		mu.Lock()
		n++
		host := a.site
		if n%2 == 0 {
			host = b.site
		}
		mu.Unlock()
		r = r.Clone(r.Context())
		r.URL.Host, r.Host = host, host
		return http.DefaultTransport.RoundTrip(r)
	})}
	target := emulator.PushTarget{URL: a.url("/"), Kind: emulator.KindOfficialAccount, Mode: emulator.ModeSafe, Token: pushToken, AESKey: pushAESKey, ReceiverID: "wxmsg00000000001"}
	res, err := emulator.PushMessage(context.Background(), target, emulator.TextMessage("o1", pushSecret), emulator.PushOptions{Client: client})
	if err != nil || !res.Delivered || !strings.Contains(string(res.Reply), "once") {
		t.Fatalf("a fleet of two: %v: %s", err, summary(res))
	}
	if got := len(app.requests()); got != 1 {
		t.Fatalf("the app got the message %d times across the fleet", got)
	}
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// A message answered by one instance and re-delivered at once to the
// other gets the first answer there, not a second delivery; a single
// instance writes nothing of its messages to the storage.
func TestFleetAnswersAReDeliveryElsewhereAtOnce(t *testing.T) {
	t.Parallel()
	rds := startRedisServer(t)
	w := startWeChat(t, emulator.Config{})
	app := startApp(t, replyText("first", 0))
	site := messagesSite(app, "app_id wxmsg00000000001\n\t\ttoken "+pushToken+"\n\t\tencoding_aes_key "+pushAESKey)
	a := startMessages(t, w, site, caddyOptions{storageConfig: redisStorage(rds.port)})
	target := func(c *caddy) emulator.PushTarget {
		return emulator.PushTarget{URL: c.url("/"), Kind: emulator.KindOfficialAccount, Mode: emulator.ModeSafe, Token: pushToken, AESKey: pushAESKey, ReceiverID: "wxmsg00000000001"}
	}
	alone := emulator.TextMessage("o1", pushSecret)
	if res, err := emulator.PushMessage(context.Background(), target(a), alone, emulator.PushOptions{}); err != nil || !res.Delivered {
		t.Fatalf("alone: %v: %s", err, summary(res))
	}
	if keys := rds.keys(t, "*messages/*"); len(keys) != 0 {
		t.Fatalf("a single instance stored its message: %v", keys)
	}
	b := startMessages(t, w, site, caddyOptions{storageConfig: redisStorage(rds.port)})
	for i, msg := range []emulator.Message{alone, emulator.TextMessage("o2", pushSecret)} {
		if i == 1 {
			if res, err := emulator.PushMessage(context.Background(), target(a), msg, emulator.PushOptions{}); err != nil || !res.Delivered {
				t.Fatalf("through the first instance: %v: %s", err, summary(res))
			}
		}
		res, err := emulator.PushMessage(context.Background(), target(b), msg, emulator.PushOptions{})
		if err != nil || !res.Delivered || !strings.Contains(string(res.Reply), "first") {
			t.Fatalf("message %d re-delivered to the other instance: %v: %s", i+1, err, summary(res))
		}
	}
	if got := len(app.requests()); got != 2 {
		t.Fatalf("the app got %d requests for two messages, each pushed to both instances", got)
	}
}
