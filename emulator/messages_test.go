package emulator

import (
	"bytes"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha1"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// The receiver below is written from WeChat's documentation, independently
// of the emulator's code (its own signing, AES and parsing), so that the
// emulator is not only checked against itself.

const (
	rxToken     = "push_token_0123"
	rxKey       = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"
	rxOtherKey  = "ZYXWVUTSRQPONMLKJIHGFEDCBA9876543210zyxwvut"
	rxAppID     = "wxmsgapp00000001"
	rxCorpID    = "wwmsgcorp0000001"
	rxComponent = "wxcomponent00001"
	rxAccount   = "wxaccount0000001"
)

func rxSign(parts ...string) string {
	s := append([]string(nil), parts...)
	sort.Strings(s)
	sum := sha1.Sum([]byte(strings.Join(s, "")))
	return hex.EncodeToString(sum[:])
}

func rxAES(t testing.TB, key string) []byte {
	k, err := base64.StdEncoding.DecodeString(key + "=")
	if err != nil || len(k) != 32 {
		t.Fatalf("bad test key %q", key)
	}
	return k
}

func rxSeal(t testing.TB, key string, msg []byte, receiverID string) string {
	k := rxAES(t, key)
	var plain []byte
	random := make([]byte, 16)
	_, _ = rand.Read(random)
	plain = append(plain, random...)
	plain = binary.BigEndian.AppendUint32(plain, uint32(len(msg)))
	plain = append(plain, msg...)
	plain = append(plain, receiverID...)
	pad := 32 - len(plain)%32
	plain = append(plain, bytes.Repeat([]byte{byte(pad)}, pad)...)
	block, _ := aes.NewCipher(k)
	out := make([]byte, len(plain))
	cipher.NewCBCEncrypter(block, k[:16]).CryptBlocks(out, plain)
	return base64.StdEncoding.EncodeToString(out)
}

func rxOpen(t testing.TB, key, enc string) ([]byte, string, error) {
	k := rxAES(t, key)
	data, err := base64.StdEncoding.DecodeString(enc)
	if err != nil || len(data) == 0 || len(data)%16 != 0 {
		return nil, "", fmt.Errorf("bad ciphertext")
	}
	block, _ := aes.NewCipher(k)
	plain := make([]byte, len(data))
	cipher.NewCBCDecrypter(block, k[:16]).CryptBlocks(plain, data)
	pad := int(plain[len(plain)-1])
	if pad < 1 || pad > 32 || pad > len(plain)-20 {
		return nil, "", fmt.Errorf("bad padding")
	}
	plain = plain[:len(plain)-pad]
	n := int(binary.BigEndian.Uint32(plain[16:20]))
	if n > len(plain)-20 {
		return nil, "", fmt.Errorf("bad length")
	}
	return plain[20 : 20+n], string(plain[20+n:]), nil
}

// rxFields reads the top-level fields of an XML or JSON message.
func rxFields(format PushFormat, data []byte) (map[string]string, error) {
	out := map[string]string{}
	if format == FormatJSON {
		var m map[string]any
		d := json.NewDecoder(bytes.NewReader(data))
		d.UseNumber()
		if err := d.Decode(&m); err != nil {
			return nil, err
		}
		for k, v := range m {
			out[k] = fmt.Sprint(v)
		}
		return out, nil
	}
	var doc struct {
		XMLName xml.Name
		Items   []struct {
			XMLName xml.Name
			Text    string `xml:",chardata"`
		} `xml:",any"`
	}
	if err := xml.Unmarshal(data, &doc); err != nil {
		return nil, err
	}
	if doc.XMLName.Local != "xml" {
		return nil, fmt.Errorf("root %s", doc.XMLName.Local)
	}
	for _, it := range doc.Items {
		out[it.XMLName.Local] = it.Text
	}
	return out, nil
}

type rxPush struct {
	Query  url.Values
	Path   string
	Body   string
	Fields map[string]string // the message, decrypted
}

// testReceiver is a message URL's handler as a user would write it: it
// checks the URL check and every push, and answers a passive reply
// ("echo: " and the content), encrypted when the push was.
type testReceiver struct {
	t          *testing.T
	kind       ReceiverKind
	format     PushFormat
	token, key string
	rid        string
	// answer, if set, may answer delivery n (1 for the first) itself.
	answer func(n int, w http.ResponseWriter, r *http.Request) bool
	// What to answer: "" a reply, "success", or "plain" (a plaintext reply
	// even to an encrypted push); how to sign and seal it, and whom to
	// address it to ("" right).
	reply      string
	replyToken string
	replyRID   string
	replyTo    string
	echoSuffix string

	mu       sync.Mutex
	n        int
	got      []rxPush
	rejected []string
	hangups  int
}

func newReceiver(t *testing.T, kind ReceiverKind, format PushFormat) *testReceiver {
	rid := rxAppID
	switch kind {
	case KindWeCom:
		rid = rxCorpID
	case KindAuthorizer:
		rid = rxComponent
	}
	return &testReceiver{t: t, kind: kind, format: format, token: rxToken, key: rxKey, rid: rid}
}

func (rx *testReceiver) reject(w http.ResponseWriter, why string) {
	rx.mu.Lock()
	rx.rejected = append(rx.rejected, why)
	rx.mu.Unlock()
	http.Error(w, why, http.StatusForbidden)
}

func (rx *testReceiver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	ts, err := strconv.ParseInt(q.Get("timestamp"), 10, 64)
	if err != nil || time.Since(time.Unix(ts, 0)).Abs() > 5*time.Minute {
		rx.reject(w, "timestamp")
		return
	}
	wecom := rx.kind == KindWeCom
	if !wecom && q.Get("signature") != rxSign(rx.token, q.Get("timestamp"), q.Get("nonce")) {
		rx.reject(w, "signature")
		return
	}
	if r.Method == http.MethodGet {
		echo := q.Get("echostr")
		if wecom {
			if q.Get("msg_signature") != rxSign(rx.token, q.Get("timestamp"), q.Get("nonce"), echo) {
				rx.reject(w, "msg_signature")
				return
			}
			plain, rid, err := rxOpen(rx.t, rx.key, echo)
			if err != nil {
				rx.reject(w, "decrypt")
				return
			}
			if rid != rx.rid {
				rx.reject(w, "receiver")
				return
			}
			echo = string(plain)
		}
		_, _ = io.WriteString(w, echo+rx.echoSuffix)
		return
	}
	body, _ := io.ReadAll(r.Body)
	encrypted := wecom || q.Get("encrypt_type") == "aes"
	fields, err := rxFields(rx.format, body)
	if err != nil {
		rx.reject(w, "body")
		return
	}
	if encrypted {
		enc := fields["Encrypt"]
		if q.Get("msg_signature") != rxSign(rx.token, q.Get("timestamp"), q.Get("nonce"), enc) {
			rx.reject(w, "msg_signature")
			return
		}
		plain, rid, err := rxOpen(rx.t, rx.key, enc)
		if err != nil {
			rx.reject(w, "decrypt")
			return
		}
		if rid != rx.rid {
			rx.reject(w, "receiver")
			return
		}
		if fields, err = rxFields(rx.format, plain); err != nil {
			rx.reject(w, "decrypt")
			return
		}
	}
	rx.mu.Lock()
	rx.n++
	n := rx.n
	rx.got = append(rx.got, rxPush{Query: q, Path: r.URL.Path, Body: string(body), Fields: fields})
	rx.mu.Unlock()
	if rx.answer != nil && rx.answer(n, w, r) {
		return
	}
	if rx.reply == "success" {
		_, _ = io.WriteString(w, "success")
		return
	}
	to := fields["FromUserName"]
	if rx.replyTo != "" {
		to = rx.replyTo
	}
	reply := rx.replyMessage(to, fields["ToUserName"], "echo: "+fields["Content"])
	if !encrypted || rx.reply == "plain" {
		_, _ = w.Write(reply)
		return
	}
	token, rid := rx.token, rx.rid
	if rx.replyToken != "" {
		token = rx.replyToken
	}
	if rx.replyRID != "" {
		rid = rx.replyRID
	}
	enc := rxSeal(rx.t, rx.key, reply, rid)
	now, nonce := strconv.FormatInt(time.Now().Unix(), 10), "reply_nonce"
	sig := rxSign(token, now, nonce, enc)
	if rx.format == FormatJSON {
		_, _ = fmt.Fprintf(w, `{"Encrypt":%q,"MsgSignature":%q,"TimeStamp":%s,"Nonce":%q}`, enc, sig, now, nonce)
		return
	}
	_, _ = fmt.Fprintf(w, "<xml><Encrypt><![CDATA[%s]]></Encrypt><MsgSignature><![CDATA[%s]]></MsgSignature><TimeStamp>%s</TimeStamp><Nonce><![CDATA[%s]]></Nonce></xml>", enc, sig, now, nonce)
}

func (rx *testReceiver) replyMessage(to, from, content string) []byte {
	if rx.format == FormatJSON {
		b, _ := json.Marshal(map[string]any{"ToUserName": to, "FromUserName": from, "CreateTime": time.Now().Unix(), "MsgType": "text", "Content": content})
		return b
	}
	return fmt.Appendf(nil, "<xml><ToUserName><![CDATA[%s]]></ToUserName><FromUserName><![CDATA[%s]]></FromUserName><CreateTime>%d</CreateTime><MsgType><![CDATA[text]]></MsgType><Content><![CDATA[%s]]></Content></xml>",
		to, from, time.Now().Unix(), content)
}

func (rx *testReceiver) pushes() []rxPush {
	rx.mu.Lock()
	defer rx.mu.Unlock()
	return append([]rxPush(nil), rx.got...)
}

func (rx *testReceiver) rejections() []string {
	rx.mu.Lock()
	defer rx.mu.Unlock()
	return append([]string(nil), rx.rejected...)
}

// serve starts rx; the server is closed (waiting for its handlers) at the
// end of the test.
func (rx *testReceiver) serve(t *testing.T) *httptest.Server {
	srv := httptest.NewServer(rx)
	t.Cleanup(srv.Close)
	return srv
}

// target is where rx is, as the console would know it.
func (rx *testReceiver) target(srv *httptest.Server, mode PushMode) PushTarget {
	t := PushTarget{URL: srv.URL + "/wechat", Kind: rx.kind, Mode: mode, Format: rx.format, Token: rxToken, ReceiverID: rx.rid}
	if mode != ModePlaintext {
		t.AESKey = rxKey
	}
	if rx.kind == KindAuthorizer {
		t.URL, t.Account = srv.URL+"/$APPID$", rxAccount
	}
	return t
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestMessageEncoding(t *testing.T) {
	m := Message{ToUserName: "gh_x", FromUserName: "openid", CreateTime: 1700000000, MsgType: "text", Content: "hi", MsgID: 1234567890123456}
	if got, want := string(m.XML()), "<xml><ToUserName><![CDATA[gh_x]]></ToUserName><FromUserName><![CDATA[openid]]></FromUserName><CreateTime>1700000000</CreateTime><MsgType><![CDATA[text]]></MsgType><Content><![CDATA[hi]]></Content><MsgId>1234567890123456</MsgId></xml>"; got != want {
		t.Errorf("XML:\n got %s\nwant %s", got, want)
	}
	if got, want := string(m.JSON()), `{"ToUserName":"gh_x","FromUserName":"openid","CreateTime":1700000000,"MsgType":"text","Content":"hi","MsgId":1234567890123456}`; got != want {
		t.Errorf("JSON:\n got %s\nwant %s", got, want)
	}
	ev := EventMessage("openid", "subscribe", Field{Name: "EventKey", Value: "qrscene_1"}, Field{Name: "Latitude", Value: "23.137466", Number: true})
	ev.ToUserName, ev.CreateTime = "gh_x", 1700000000
	if got, want := string(ev.XML()), "<xml><ToUserName><![CDATA[gh_x]]></ToUserName><FromUserName><![CDATA[openid]]></FromUserName><CreateTime>1700000000</CreateTime><MsgType><![CDATA[event]]></MsgType><Event><![CDATA[subscribe]]></Event><EventKey><![CDATA[qrscene_1]]></EventKey><Latitude>23.137466</Latitude></xml>"; got != want {
		t.Errorf("event XML:\n got %s\nwant %s", got, want)
	}
	if got, want := ev.Key(), "event:openid|1700000000|subscribe"; got != want {
		t.Errorf("event key %q, want %q", got, want)
	}
	if got, want := m.Key(), "msg:1234567890123456"; got != want {
		t.Errorf("key %q, want %q", got, want)
	}
	// "]]>" in a value cannot end the CDATA section early.
	tricky := TextMessage("u", "a]]><b>&")
	f, err := rxFields(FormatXML, tricky.XML())
	if err != nil || f["Content"] != "a]]><b>&" {
		t.Errorf("Content %q (%v) from %s", f["Content"], err, tricky.XML())
	}
	if f, err := rxFields(FormatJSON, tricky.JSON()); err != nil || f["Content"] != "a]]><b>&" {
		t.Errorf("JSON Content %q (%v)", f["Content"], err)
	}
	a, b := NewMsgID(), NewMsgID()
	if a == b || a >= 1<<53 || b >= 1<<53 || a < 1e15 {
		t.Errorf("MsgIds %d, %d: want distinct 16-digit ids below 2^53", a, b)
	}
}

func TestOpenSealed(t *testing.T) {
	enc, err := SealMessage(rxKey, []byte("<xml>x</xml>"), rxAppID)
	if err != nil {
		t.Fatal(err)
	}
	if msg, rid, err := rxOpen(t, rxKey, enc); err != nil || string(msg) != "<xml>x</xml>" || rid != rxAppID {
		t.Errorf("the test's open of SealMessage: %q %q %v", msg, rid, err)
	}
	if msg, rid, err := OpenSealed(rxKey, rxSeal(t, rxKey, []byte("hello"), rxCorpID)); err != nil || string(msg) != "hello" || rid != rxCorpID {
		t.Errorf("OpenSealed of the test's seal: %q %q %v", msg, rid, err)
	}
	if _, _, err := OpenSealed(rxOtherKey, enc); err == nil {
		t.Error("OpenSealed with the wrong key succeeded")
	}
	if _, _, err := OpenSealed(rxKey, "not base64!"); err == nil {
		t.Error("OpenSealed of garbage succeeded")
	}
}

func TestPushModesAndFormats(t *testing.T) {
	for _, tc := range []struct {
		kind   ReceiverKind
		mode   PushMode
		format PushFormat
	}{
		{KindOfficialAccount, ModePlaintext, FormatXML},
		{KindOfficialAccount, ModeCompatible, FormatXML},
		{KindOfficialAccount, ModeSafe, FormatXML},
		{KindMiniProgram, ModePlaintext, FormatJSON},
		{KindMiniProgram, ModeCompatible, FormatJSON},
		{KindMiniProgram, ModeSafe, FormatJSON},
		{KindMiniProgram, ModeSafe, FormatXML},
		{KindWeCom, ModeSafe, FormatXML},
		{KindAuthorizer, ModeSafe, FormatXML},
	} {
		t.Run(fmt.Sprintf("%s/%s/%s", tc.kind, tc.mode, tc.format), func(t *testing.T) {
			rx := newReceiver(t, tc.kind, tc.format)
			srv := rx.serve(t)
			target := rx.target(srv, tc.mode)
			content := "hi <&> 你好"
			msg := TextMessage("o_user_1", content)
			res, err := PushMessage(testCtx(t), target, msg, PushOptions{})
			if err != nil {
				t.Fatalf("push: %v (rejected: %v)", err, rx.rejections())
			}
			got := rx.pushes()
			if len(res.Attempts) != 1 || len(got) != 1 || !res.Delivered {
				t.Fatalf("%d attempts, %d received, delivered %v", len(res.Attempts), len(got), res.Delivered)
			}
			p := got[0]
			if p.Fields["Content"] != content || p.Fields["MsgId"] != strconv.FormatInt(msg.MsgID, 10) || p.Fields["FromUserName"] != "o_user_1" || p.Fields["MsgType"] != "text" {
				t.Errorf("received %v", p.Fields)
			}
			q := p.Query
			switch {
			case tc.kind == KindWeCom:
				if q.Has("signature") || q.Has("encrypt_type") || q.Has("openid") || !q.Has("msg_signature") {
					t.Errorf("WeCom query %v", q)
				}
				if p.Fields["ToUserName"] != rxCorpID || p.Fields["AgentID"] != "1000002" {
					t.Errorf("WeCom plaintext %v", p.Fields)
				}
				if !strings.Contains(p.Body, "<AgentID><![CDATA[1000002]]></AgentID>") || !strings.Contains(p.Body, "<ToUserName><![CDATA["+rxCorpID+"]]></ToUserName>") {
					t.Errorf("WeCom body %s", p.Body)
				}
			case tc.mode == ModePlaintext:
				if q.Has("encrypt_type") || q.Has("msg_signature") || q.Get("openid") != "o_user_1" {
					t.Errorf("plaintext query %v", q)
				}
			default:
				if q.Get("encrypt_type") != "aes" || !q.Has("msg_signature") || q.Get("openid") != "o_user_1" {
					t.Errorf("encrypted query %v", q)
				}
			}
			if tc.kind == KindAuthorizer && p.Path != "/"+rxAccount {
				t.Errorf("authorizer push to %s, want /%s", p.Path, rxAccount)
			}
			if rawContent := strings.Contains(p.Body, "Content"); rawContent != (tc.mode != ModeSafe) {
				t.Errorf("mode %s: the body shows Content: %v: %s", tc.mode, rawContent, p.Body)
			}
			if !strings.HasPrefix(res.Attempts[0].URL, target.URL[:len(srv.URL)]) {
				t.Errorf("attempt URL %s", res.Attempts[0].URL)
			}
			reply, err := rxFields(tc.format, res.Reply)
			if err != nil || reply["Content"] != "echo: "+content || reply["ToUserName"] != "o_user_1" {
				t.Errorf("reply %s (%v)", res.Reply, err)
			}
			if res.ReplyEncrypted != (tc.mode != ModePlaintext) {
				t.Errorf("reply encrypted %v in mode %s", res.ReplyEncrypted, tc.mode)
			}
		})
	}
}

func TestPushEventAndSuccess(t *testing.T) {
	rx := newReceiver(t, KindOfficialAccount, FormatXML)
	rx.reply = "success"
	srv := rx.serve(t)
	ev := EventMessage("o_user_2", "CLICK", Field{Name: "EventKey", Value: "V1001_TODAY_MUSIC"})
	res, err := PushMessage(testCtx(t), rx.target(srv, ModeSafe), ev, PushOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if res.Reply != nil {
		t.Errorf("reply %q to an answer of success", res.Reply)
	}
	f := rx.pushes()[0].Fields
	if f["MsgType"] != "event" || f["Event"] != "CLICK" || f["EventKey"] != "V1001_TODAY_MUSIC" || f["MsgId"] != "" || f["CreateTime"] == "" {
		t.Errorf("event received as %v", f)
	}
}

func TestPushRetriesSlowReceiver(t *testing.T) {
	for _, event := range []bool{false, true} {
		t.Run(fmt.Sprintf("event=%v", event), func(t *testing.T) {
			rx := newReceiver(t, KindOfficialAccount, FormatXML)
			// Slower than WeChat waits for the first three deliveries: it
			// answers only when WeChat hangs up.
			rx.answer = func(n int, w http.ResponseWriter, r *http.Request) bool {
				if n > 3 {
					return false
				}
				<-r.Context().Done()
				rx.mu.Lock()
				rx.hangups++
				rx.mu.Unlock()
				return true
			}
			srv := rx.serve(t)
			msg := TextMessage("o_user_3", "slow")
			if event {
				msg = EventMessage("o_user_3", "subscribe")
			}
			const timeout = 300 * time.Millisecond
			p := &MessagePusher{}
			res, err := p.Push(testCtx(t), rx.target(srv, ModeSafe), msg, PushOptions{Timeout: timeout, RetryGap: 10 * time.Millisecond})
			if err != nil {
				t.Fatal(err)
			}
			if len(res.Attempts) != 4 {
				t.Fatalf("%d deliveries, want 4", len(res.Attempts))
			}
			for i, a := range res.Attempts[:3] {
				if !a.TimedOut || a.Answered() || a.Duration < timeout || a.Duration > 5*time.Second {
					t.Errorf("delivery %d: timed out %v, answered %v, took %s", i+1, a.TimedOut, a.Answered(), a.Duration)
				}
			}
			if !res.Attempts[3].Answered() || res.Reply == nil {
				t.Errorf("last delivery %+v", res.Attempts[3])
			}
			srv.Close() // waits for the handlers
			if rx.hangups != 3 {
				t.Errorf("the receiver saw %d hang-ups, want 3", rx.hangups)
			}
			got := rx.pushes()
			nonces, sigs, bodies := map[string]bool{}, map[string]bool{}, map[string]bool{}
			for _, g := range got {
				first := got[0].Fields
				if event {
					for _, k := range []string{"FromUserName", "CreateTime", "Event"} {
						if g.Fields[k] != first[k] {
							t.Errorf("re-send %s %q, first %q", k, g.Fields[k], first[k])
						}
					}
				} else if g.Fields["MsgId"] != strconv.FormatInt(msg.MsgID, 10) {
					t.Errorf("re-send MsgId %s, want %d", g.Fields["MsgId"], msg.MsgID)
				}
				nonces[g.Query.Get("nonce")] = true
				sigs[g.Query.Get("msg_signature")] = true
				bodies[g.Body] = true
			}
			if len(got) != 4 || len(nonces) != 4 || len(sigs) != 4 || len(bodies) != 4 {
				t.Errorf("%d received, %d nonces, %d signatures, %d envelopes: want 4 re-signed deliveries", len(got), len(nonces), len(sigs), len(bodies))
			}
			if s := p.Stats(); s.Pushes != 1 || s.Deliveries != 4 || s.Resends != 3 || s.TimedOut != 3 || s.Delivered != 1 || s.Replies != 1 {
				t.Errorf("stats %+v", s)
			}
		})
	}
}

func TestPushNeverAnswered(t *testing.T) {
	rx := newReceiver(t, KindMiniProgram, FormatJSON)
	rx.answer = func(_ int, _ http.ResponseWriter, r *http.Request) bool { <-r.Context().Done(); return true }
	srv := rx.serve(t)
	res, err := PushMessage(testCtx(t), rx.target(srv, ModeSafe), TextMessage("o", "x"), PushOptions{Timeout: 200 * time.Millisecond, Attempts: 2, RetryGap: -1})
	if !errors.Is(err, ErrNotDelivered) || res == nil || len(res.Attempts) != 2 || res.Delivered {
		t.Fatalf("err %v, result %+v", err, res)
	}
	for _, a := range res.Attempts {
		if !a.TimedOut || !errors.Is(a.Err, context.DeadlineExceeded) {
			t.Errorf("delivery %+v", a)
		}
	}
}

func TestPushFailedThenAnswered(t *testing.T) {
	rx := newReceiver(t, KindWeCom, FormatXML)
	rx.answer = func(n int, w http.ResponseWriter, _ *http.Request) bool {
		if n == 1 {
			http.Error(w, "busy", http.StatusInternalServerError)
			return true
		}
		return false
	}
	srv := rx.serve(t)
	msg := TextMessage("lisi", "again")
	res, err := PushMessage(testCtx(t), rx.target(srv, ModeSafe), msg, PushOptions{RetryGap: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Attempts) != 2 || res.Attempts[0].Status != http.StatusInternalServerError || res.Attempts[0].TimedOut || !res.Attempts[1].Answered() {
		t.Fatalf("deliveries %+v", res.Attempts)
	}
	got := rx.pushes()
	if len(got) != 2 || got[0].Fields["MsgId"] != got[1].Fields["MsgId"] || got[0].Query.Get("nonce") == got[1].Query.Get("nonce") {
		t.Errorf("received %+v", got)
	}
}

func TestReplyVerification(t *testing.T) {
	for _, tc := range []struct {
		name   string
		kind   ReceiverKind
		mode   PushMode
		format PushFormat
		setup  func(*testReceiver)
		want   string // in the error; "" for no error
	}{
		{"bad MsgSignature", KindOfficialAccount, ModeSafe, FormatXML, func(rx *testReceiver) { rx.replyToken = "other_token" }, "MsgSignature"},
		{"bad MsgSignature JSON", KindMiniProgram, ModeSafe, FormatJSON, func(rx *testReceiver) { rx.replyToken = "other_token" }, "MsgSignature"},
		{"wrong receiver id", KindOfficialAccount, ModeSafe, FormatXML, func(rx *testReceiver) { rx.replyRID = "wxsomeoneelse" }, `receiver id "wxsomeoneelse"`},
		{"WeCom reply sealed for the app", KindWeCom, ModeSafe, FormatXML, func(rx *testReceiver) { rx.replyRID = rxAppID }, "receiver id"},
		{"authorizer reply sealed for the account", KindAuthorizer, ModeSafe, FormatXML, func(rx *testReceiver) { rx.replyRID = rxAccount }, "receiver id"},
		{"plaintext reply in safe mode", KindOfficialAccount, ModeSafe, FormatXML, func(rx *testReceiver) { rx.reply = "plain" }, "not encrypted"},
		{"plaintext reply in compatible mode", KindOfficialAccount, ModeCompatible, FormatXML, func(rx *testReceiver) { rx.reply = "plain" }, ""},
		{"reply to another user", KindOfficialAccount, ModePlaintext, FormatXML, func(rx *testReceiver) { rx.replyTo = "o_intruder" }, "ToUserName"},
		{"encrypted reply to another user", KindMiniProgram, ModeSafe, FormatJSON, func(rx *testReceiver) { rx.replyTo = "o_intruder" }, "ToUserName"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rx := newReceiver(t, tc.kind, tc.format)
			tc.setup(rx)
			srv := rx.serve(t)
			p := &MessagePusher{}
			res, err := p.Push(testCtx(t), rx.target(srv, tc.mode), TextMessage("o_user_4", "reply please"), PushOptions{})
			if tc.want == "" {
				if err != nil || res.Reply == nil || res.ReplyEncrypted {
					t.Fatalf("err %v, reply %q encrypted %v", err, res.Reply, res.ReplyEncrypted)
				}
				return
			}
			if !errors.Is(err, ErrBadReply) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err %v, want ErrBadReply about %s", err, tc.want)
			}
			if res == nil || !res.Delivered || len(res.Attempts) != 1 || res.Reply != nil {
				t.Errorf("a refused reply is no re-send and no reply: %+v", res)
			}
			if s := p.Stats(); s.BadReplies != 1 || s.Replies != 0 {
				t.Errorf("stats %+v", s)
			}
		})
	}
}

func TestForgedPushesRefused(t *testing.T) {
	for _, tc := range []struct {
		name  string
		kind  ReceiverKind
		mode  PushMode
		forge Forgery
		want  []string // the receiver's reasons, any of
	}{
		{"wrong token", KindOfficialAccount, ModeSafe, Forgery{Token: "forged"}, []string{"signature"}},
		{"wrong token plaintext", KindOfficialAccount, ModePlaintext, Forgery{Token: "forged"}, []string{"signature"}},
		{"wrong token WeCom", KindWeCom, ModeSafe, Forgery{Token: "forged"}, []string{"msg_signature"}},
		{"flipped ciphertext", KindOfficialAccount, ModeCompatible, Forgery{FlipCiphertext: true}, []string{"msg_signature"}},
		{"flipped ciphertext WeCom", KindWeCom, ModeSafe, Forgery{FlipCiphertext: true}, []string{"msg_signature"}},
		{"stale", KindOfficialAccount, ModeSafe, Forgery{Age: 10 * time.Minute}, []string{"timestamp"}},
		{"from the future", KindMiniProgram, ModePlaintext, Forgery{Age: -10 * time.Minute}, []string{"timestamp"}},
		{"sealed for another account", KindOfficialAccount, ModeSafe, Forgery{SealFor: "wxsomeoneelse"}, []string{"receiver"}},
		{"sealed for another platform", KindAuthorizer, ModeSafe, Forgery{SealFor: "wxotherplatform"}, []string{"receiver"}},
		{"another key", KindOfficialAccount, ModeSafe, Forgery{AESKey: rxOtherKey}, []string{"decrypt", "receiver"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rx := newReceiver(t, tc.kind, FormatXML)
			if tc.kind == KindMiniProgram {
				rx.format = FormatJSON
			}
			srv := rx.serve(t)
			res, err := PushMessage(testCtx(t), rx.target(srv, tc.mode), TextMessage("o_user_5", "forged"), PushOptions{Attempts: 1, Forge: tc.forge})
			if !errors.Is(err, ErrNotDelivered) || res == nil || len(res.Attempts) != 1 || res.Attempts[0].Status != http.StatusForbidden {
				t.Fatalf("err %v, result %+v", err, res)
			}
			why := rx.rejections()
			if len(rx.pushes()) != 0 || len(why) != 1 || !containsString(tc.want, why[0]) {
				t.Errorf("receiver accepted %d, refused for %v, want one of %v", len(rx.pushes()), why, tc.want)
			}
		})
	}
	if _, err := PushMessage(context.Background(), PushTarget{URL: "http://127.0.0.1:1/", Token: rxToken}, TextMessage("o", "x"), PushOptions{Forge: Forgery{FlipCiphertext: true}}); err == nil {
		t.Error("a plaintext push with a ciphertext to flip was accepted")
	}
}

func containsString(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

func TestVerifyURL(t *testing.T) {
	for _, kind := range []ReceiverKind{KindOfficialAccount, KindMiniProgram, KindWeCom} {
		t.Run(string(kind), func(t *testing.T) {
			rx := newReceiver(t, kind, FormatXML)
			srv := rx.serve(t)
			target := rx.target(srv, ModeSafe)
			check, err := VerifyURL(testCtx(t), target, PushOptions{})
			if err != nil {
				t.Fatalf("%v (rejected %v)", err, rx.rejections())
			}
			if string(check.Answer) != check.Expected || check.Query.Get("echostr") == "" {
				t.Errorf("check %+v", check)
			}
			if kind == KindWeCom {
				if check.Query.Get("echostr") == check.Expected || !check.Query.Has("msg_signature") || check.Query.Has("signature") {
					t.Errorf("WeCom's echostr must be encrypted and msg_signature'd: %v", check.Query)
				}
			} else if check.Query.Get("echostr") != check.Expected || !check.Query.Has("signature") {
				t.Errorf("query %v", check.Query)
			}

			// A forged check is refused, and that is a failed check.
			_, err = VerifyURL(testCtx(t), target, PushOptions{Forge: Forgery{Token: "forged"}})
			if !errors.Is(err, ErrURLCheckFailed) || !strings.Contains(err.Error(), "403") {
				t.Errorf("forged check: %v", err)
			}
			// An answer with a newline is not the echostr.
			rx.echoSuffix = "\n"
			if _, err := VerifyURL(testCtx(t), target, PushOptions{}); !errors.Is(err, ErrURLCheckFailed) || !strings.Contains(err.Error(), "exactly") {
				t.Errorf("echostr with a newline: %v", err)
			}
		})
	}
	t.Run("WeCom sealed for another corp", func(t *testing.T) {
		rx := newReceiver(t, KindWeCom, FormatXML)
		srv := rx.serve(t)
		if _, err := VerifyURL(testCtx(t), rx.target(srv, ModeSafe), PushOptions{Forge: Forgery{SealFor: "wwother"}}); !errors.Is(err, ErrURLCheckFailed) {
			t.Errorf("err %v", err)
		}
		if why := rx.rejections(); len(why) != 1 || why[0] != "receiver" {
			t.Errorf("refused for %v", why)
		}
	})
	t.Run("authorizer", func(t *testing.T) {
		rx := newReceiver(t, KindAuthorizer, FormatXML)
		srv := rx.serve(t)
		if check, err := VerifyURL(testCtx(t), rx.target(srv, ModeSafe), PushOptions{}); err == nil || check != nil || errors.Is(err, ErrURLCheckFailed) {
			t.Errorf("a platform's URL is not checked: %v", err)
		}
	})
}

func TestPushTargetMistakes(t *testing.T) {
	ok := PushTarget{URL: "http://127.0.0.1:1/wx", Token: rxToken, AESKey: rxKey, ReceiverID: rxAppID}
	for name, change := range map[string]func(*PushTarget){
		"WeCom in plaintext":  func(t *PushTarget) { t.Kind, t.Mode = KindWeCom, ModePlaintext },
		"JSON for an account": func(t *PushTarget) { t.Format = FormatJSON },
		"short key":           func(t *PushTarget) { t.AESKey = "short" },
		"no receiver id":      func(t *PushTarget) { t.ReceiverID = "" },
		"no token":            func(t *PushTarget) { t.Token = "" },
		"authorizer alone":    func(t *PushTarget) { t.Kind = KindAuthorizer },
		"not http":            func(t *PushTarget) { t.URL = "ftp://127.0.0.1/" },
		"unknown kind":        func(t *PushTarget) { t.Kind = "channel" },
		"unknown mode":        func(t *PushTarget) { t.Mode = "secure" },
	} {
		target := ok
		change(&target)
		if res, err := PushMessage(context.Background(), target, TextMessage("o", "x"), PushOptions{}); err == nil || res != nil {
			t.Errorf("%s: push accepted (%v)", name, err)
		}
	}
	if _, err := PushMessage(context.Background(), ok, Message{FromUserName: "o"}, PushOptions{}); err == nil {
		t.Error("a message without MsgType was pushed")
	}
}

func TestMessageControlEndpoints(t *testing.T) {
	emu := New(Config{})
	t.Cleanup(emu.Close)
	esrv := httptest.NewServer(emu)
	t.Cleanup(esrv.Close)
	rx := newReceiver(t, KindOfficialAccount, FormatXML)
	srv := rx.serve(t)
	post := func(path string, body any) (int, map[string]any) {
		t.Helper()
		b, _ := json.Marshal(body)
		resp, err := http.Post(esrv.URL+path, "application/json", bytes.NewReader(b))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		raw, _ := io.ReadAll(resp.Body)
		var out map[string]any
		_ = json.Unmarshal(raw, &out)
		return resp.StatusCode, out
	}
	target := map[string]any{"url": srv.URL + "/wechat", "kind": "official", "mode": "safe", "token": rxToken, "aes_key": rxKey, "receiver_id": rxAppID}
	with := func(extra map[string]any) map[string]any {
		m := map[string]any{}
		for k, v := range target {
			m[k] = v
		}
		for k, v := range extra {
			m[k] = v
		}
		return m
	}

	code, out := post("/_emulator/push_message", with(map[string]any{"content": "hi", "from_user": "o_user_6"}))
	if code != http.StatusOK || out["ok"] != true || out["delivered"] != true || !strings.Contains(fmt.Sprint(out["reply"]), "echo: hi") || out["reply_encrypted"] != true {
		t.Fatalf("push_message: %d %v", code, out)
	}
	if attempts, _ := out["attempts"].([]any); len(attempts) != 1 {
		t.Errorf("attempts %v", out["attempts"])
	}
	if got := rx.pushes(); len(got) != 1 || got[0].Fields["Content"] != "hi" || got[0].Fields["MsgId"] == "" {
		t.Errorf("received %+v", got)
	}

	code, out = post("/_emulator/push_message", with(map[string]any{"event": "subscribe", "attempts": 1, "forge": map[string]any{"age": "10m"}}))
	if code != http.StatusOK || out["ok"] != false || out["delivered"] != false || !strings.Contains(fmt.Sprint(out["error"]), "403") {
		t.Errorf("stale push: %d %v", code, out)
	}

	code, out = post("/_emulator/verify_url", with(nil))
	if code != http.StatusOK || out["ok"] != true || out["answer"] != out["expected"] {
		t.Errorf("verify_url: %d %v", code, out)
	}

	for name, body := range map[string]map[string]any{
		"not loopback":  with(map[string]any{"url": "http://example.com/wechat"}),
		"bad target":    with(map[string]any{"kind": "wecom", "mode": "plaintext"}),
		"unknown field": with(map[string]any{"contnet": "typo"}),
	} {
		if code, _ := post("/_emulator/push_message", body); code != http.StatusBadRequest {
			t.Errorf("%s: %d, want 400", name, code)
		}
	}
	if resp, err := http.Get(esrv.URL + "/_emulator/push_message"); err != nil || resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("GET push_message: %v %v", resp, err)
	} else {
		resp.Body.Close()
	}

	resp, err := http.Get(esrv.URL + "/_emulator/pushes")
	if err != nil {
		t.Fatal(err)
	}
	var stats PushStats
	err = json.NewDecoder(resp.Body).Decode(&stats)
	resp.Body.Close()
	if err != nil || stats.Pushes != 2 || stats.Delivered != 1 || stats.Undelivered != 1 || stats.URLChecks != 1 || stats.Forged != 1 || stats != emu.Messages().Stats() {
		t.Errorf("pushes %+v (%v)", stats, err)
	}
	if code, _ := post("/_emulator/reset", nil); code != http.StatusOK || emu.Messages().Stats() != (PushStats{}) {
		t.Errorf("reset: %d, %+v", code, emu.Messages().Stats())
	}
}

// A push that was hung up on leaves no goroutine or connection behind.
func TestPushLeavesNoGoroutines(t *testing.T) {
	before := runtime.NumGoroutine()
	func() {
		rx := newReceiver(t, KindOfficialAccount, FormatXML)
		rx.answer = func(n int, _ http.ResponseWriter, r *http.Request) bool {
			if n == 1 {
				<-r.Context().Done()
				return true
			}
			return false
		}
		srv := httptest.NewServer(rx)
		defer srv.Close()
		if _, err := PushMessage(testCtx(t), rx.target(srv, ModeSafe), TextMessage("o", "x"), PushOptions{Timeout: 200 * time.Millisecond, RetryGap: -1}); err != nil {
			t.Fatal(err)
		}
	}()
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > before && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > before {
		buf := make([]byte, 1<<16)
		t.Errorf("%d goroutines, %d before:\n%s", n, before, buf[:runtime.Stack(buf, true)])
	}
}
