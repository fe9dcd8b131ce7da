package main

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"
)

// Scenario (g)'s own logic: the envelope it seals pushes with, the app
// that counts them, and its verdict.

// emulatorVector was sealed by the emulator (emulator.SealMessage) with
// WeChat's sample key for the appid below, and signed with
// emulator.WeChatSignature("pamtest", "1409304348", "xxxxxx", Encrypt): the
// benchmark's envelope, written apart from the emulator's, must read it.
const (
	emulatorVector    = "d8yyM3N41HJUSGCQkyFwhOFEMPOLkQNJMLXN2RSm5u+JKQeeHEwwg67zsvg6e2hOI4c3txe0O3hZtGZ5R0cV3LLZO+FHCANGdQ6yUZynrQy6+2LBNEkCL6s4pGcx2nH1A9VFWqfqfFrHZPvjWBvcMXpDEsJVYr7K+jgLR+E9dEXRjOien92y2DdGZJ+bVTfDBklBhUY2oYGum0AF8Rt0zdwZ4pzADVE0TrgZPjD8MJh+lVm5zVvUd7YjzlL0nMU9"
	emulatorVectorSig = "1f5526bd645cc1a2994569e889bbcfda29fd2ee5"
	emulatorVectorMsg = "<xml><ToUserName><![CDATA[gh_benchmessages]]></ToUserName><Content><![CDATA[hello]]></Content><MsgId>1234567890123456</MsgId></xml>"
)

func TestEnvelopeReadsTheEmulators(t *testing.T) {
	k, err := newPushKeys("pamtest", "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG", "wxb11529c136998cb6")
	if err != nil {
		t.Fatal(err)
	}
	msg, receiver, err := k.open(emulatorVector)
	if err != nil || string(msg) != emulatorVectorMsg || receiver != "wxb11529c136998cb6" {
		t.Fatalf("open: %q %q %v", msg, receiver, err)
	}
	if got := pushSignature("pamtest", "1409304348", "xxxxxx", emulatorVector); got != emulatorVectorSig {
		t.Fatalf("msg_signature %s, the emulator's %s", got, emulatorVectorSig)
	}
	// What it seals it reads back; every seal is new (16 random bytes).
	a, b := k.seal([]byte(emulatorVectorMsg)), k.seal([]byte(emulatorVectorMsg))
	if a == b {
		t.Fatal("two seals alike")
	}
	if msg, receiver, err := k.open(a); err != nil || string(msg) != emulatorVectorMsg || receiver != "wxb11529c136998cb6" {
		t.Fatalf("round trip: %q %q %v", msg, receiver, err)
	}
	if _, _, err := k.open(a[:len(a)-8] + "AAAAAAA="); err == nil {
		t.Fatal("a tampered envelope opened")
	}
}

func TestPushRequestIsWeChats(t *testing.T) {
	k, err := newPushKeys(pushToken, pushAESKey, pushAppID)
	if err != nil {
		t.Fatal(err)
	}
	plain := textMessage(1700000000, 1234567890123456)
	query, body := k.pushRequest(plain, time.Unix(1700000000, 0))
	q, err := url.ParseQuery(query)
	if err != nil {
		t.Fatal(err)
	}
	ts, nonce := q.Get("timestamp"), q.Get("nonce")
	if ts != "1700000000" || len(nonce) < 9 || q.Get("encrypt_type") != "aes" || q.Get("openid") != pushOpenID ||
		q.Get("signature") != pushSignature(pushToken, ts, nonce) {
		t.Fatalf("query %s", query)
	}
	encrypted := strings.TrimSuffix(strings.TrimPrefix(string(body), "<xml><ToUserName><![CDATA["+pushOriginalID+"]]></ToUserName><Encrypt><![CDATA["), "]]></Encrypt></xml>")
	if q.Get("msg_signature") != pushSignature(pushToken, ts, nonce, encrypted) {
		t.Fatal("msg_signature is not over the Encrypt")
	}
	if msg, receiver, err := k.open(encrypted); err != nil || !bytes.Equal(msg, plain) || receiver != pushAppID {
		t.Fatalf("envelope: %q %q %v", msg, receiver, err)
	}
	if id, ok := msgIDOf(plain); !ok || id != 1234567890123456 {
		t.Fatalf("msgIDOf: %d %v", id, ok)
	}
}

func TestOpenReplyChecksWhatWeChatChecks(t *testing.T) {
	k, err := newPushKeys(pushToken, pushAESKey, pushAppID)
	if err != nil {
		t.Fatal(err)
	}
	sealed := func(keys *pushKeys, sig string) []byte {
		enc := keys.seal(appReply)
		if sig == "" {
			sig = pushSignature(pushToken, "1700000000", "n1", enc)
		}
		return []byte("<xml><Encrypt><![CDATA[" + enc + "]]></Encrypt><MsgSignature><![CDATA[" + sig + "]]></MsgSignature><TimeStamp>1700000000</TimeStamp><Nonce><![CDATA[n1]]></Nonce></xml>")
	}
	if msg, err := k.openReply(sealed(k, "")); err != nil || !bytes.Equal(msg, appReply) {
		t.Fatalf("a good reply: %q %v", msg, err)
	}
	if _, err := k.openReply(sealed(k, strings.Repeat("0", 40))); err == nil {
		t.Fatal("a reply with a wrong MsgSignature passed")
	}
	other, _ := newPushKeys(pushToken, pushAESKey, "wxsomeoneelse00001")
	if _, err := k.openReply(sealed(other, "")); err == nil {
		t.Fatal("a reply sealed for another appid passed")
	}
}

// The app counts what the verdict rests on: every request, every new
// MsgId, every duplicate, and what is not a plaintext message as the
// proxy must hand it over.
func TestAppCounts(t *testing.T) {
	srv := httptest.NewServer(&pushApp{seen: map[int64]struct{}{}})
	defer srv.Close()
	send := func(query string, body []byte, appID string) string {
		t.Helper()
		req, _ := http.NewRequest(http.MethodPost, srv.URL+"/?"+query, bytes.NewReader(body))
		req.Header.Set("X-WeChat-AppID", appID)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var b bytes.Buffer
		_, _ = b.ReadFrom(resp.Body)
		return b.String()
	}
	m1, m2 := textMessage(1700000000, 1000000000000001), textMessage(1700000000, 1000000000000002)
	if got := send(plainQuery(false), m1, pushAppID); got != "success" {
		t.Fatalf("answer %q", got)
	}
	if got := send(plainQuery(true), m2, pushAppID); got != string(appReply) {
		t.Fatalf("answer %q, want the passive reply", got)
	}
	send(plainQuery(false), m1, pushAppID)                              // a duplicate
	send(plainQuery(false)+"&timestamp=1&nonce=2", m2, pushAppID)       // WeChat's parameters not removed
	send(plainQuery(false), m2, "")                                     // no X-WeChat-AppID
	send(plainQuery(false), []byte("<xml><Encrypt>…</xml>"), pushAppID) // not the plaintext
	got, err := readAppCounts(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	if want := (appCounts{Requests: 6, Distinct: 2, Duplicates: 1, Malformed: 3}); got != want {
		t.Fatalf("counts %+v, want %+v", got, want)
	}
}

func TestCountGoroutines(t *testing.T) {
	profile := `goroutine profile: total 40
17 @ 0x49034e 0x451557
#	0x48f524	internal/poll.runtime_pollWait+0x84		/usr/local/go/src/runtime/netpoll.go:351

4 @ 0x4eb1a5 0x4e8d05
#	0x4eb1a4	syscall.Syscall+0x24	/usr/local/go/src/syscall/syscall_linux.go:74
#	0x1ee007b	github.com/caddy-wechat/caddy-wechat/caddymodule/credential.(*Deliveries).run+0x35b	/work/main/caddymodule/credential/messages.go:169
#	0x1ee007c	github.com/caddy-wechat/caddy-wechat/caddymodule/credential.(*Deliveries).run.func1+0x35b	/work/main/caddymodule/credential/messages.go:149

6 @ 0x1ee0121 0x4983e1
#	0x1ee0120	github.com/caddy-wechat/caddy-wechat/caddymodule/credential.(*Deliveries).run.func1+0x0	/work/main/caddymodule/credential/messages.go:147
`
	n, err := countGoroutines(strings.NewReader(profile), "(*Deliveries).run")
	if err != nil || n != 10 {
		t.Fatalf("counted %d (%v), want 10: each stack once", n, err)
	}
}

// Scenario (g)'s verdict: it fails on a failed push, a message missing at
// the app, one delivered twice, or a re-delivery reaching the app, and
// only on those (never on a rate).
func TestMessagesFailures(t *testing.T) {
	good := func() *messagesRun {
		t := pushTrial{trial: trial{contender: wechatMessages, rps: 1}, setup: "single, file storage", answer: "success", sent: 500,
			app: appCounts{Requests: 500, Distinct: 500}}
		plain := t
		plain.contender, plain.rps = reverseProxy, 1000
		return &messagesRun{rounds: 1, duration: time.Second, trials: []pushTrial{t, plain},
			setups: []*pushSetupRun{{setup: pushSetups[0], probes: 100, probesAnswered: 100}}}
	}
	if errs := good().failures(); len(errs) != 0 {
		t.Fatalf("a good run (however slow) failed: %v", errs)
	}
	for name, spoil := range map[string]func(r *messagesRun){
		"a failed push":                     func(r *messagesRun) { r.trials[0].errors = 1 },
		"a message missing at the app":      func(r *messagesRun) { r.trials[0].app.Requests, r.trials[0].app.Distinct = 499, 499 },
		"a message delivered twice":         func(r *messagesRun) { r.trials[0].app.Requests, r.trials[0].app.Duplicates = 501, 1 },
		"a plaintext message not the app's": func(r *messagesRun) { r.trials[1].app.Malformed, r.trials[1].app.Distinct = 1, 499 },
		"a re-delivery not answered":        func(r *messagesRun) { r.setups[0].probesAnswered = 99 },
		"a re-delivery reaching the app":    func(r *messagesRun) { r.setups[0].probeApp.Requests = 1 },
		"a push refused":                    func(r *messagesRun) { r.setups[0].refused = 1 },
	} {
		r := good()
		spoil(r)
		if errs := r.failures(); len(errs) != 1 {
			t.Errorf("%s: %v", name, errs)
		}
	}
	md := good().markdown()
	if !strings.Contains(md, "| single, file storage | success | 0.001 ✗") {
		t.Fatalf("markdown:\n%s", md)
	}
	if got := perPush(commandCounts{"get": 10, "set": 20, "zadd": 30}, 10); got != "6.0 Redis commands (zadd 3.0, set 2.0, get 1.0)" {
		t.Fatalf("perPush: %q", got)
	}
}
