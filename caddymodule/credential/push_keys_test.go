package credential

import (
	"context"
	"encoding/json"
	"errors"
	"io/fs"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/caddy-wechat/caddy-wechat/emulator"
)

// The receivers against pushes built by the emulator, WeChat's stand-in.
func TestMessageReceiverOpensWhatWeChatPushes(t *testing.T) {
	const key = "ZYXWVUTSRQPONMLKJIHGFEDCBAzyxwvutsrqponmlkj"
	safe, err := NewMessageReceiver(OfficialAccount, "wxapp", "tok", key)
	if err != nil {
		t.Fatal(err)
	}
	plain, err := NewMessageReceiver(OfficialAccount, "wxapp", "tok", "")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := NewMessageReceiver(WeComApp, "ww1", "tok", ""); err == nil {
		t.Fatal("a WeCom receiver without a key")
	}
	msg := emulator.TextMessage("o1", "hello")
	msg.ToUserName = "gh_1"
	now := time.Now()
	ts := strconv.FormatInt(now.Unix(), 10)
	encrypted, err := emulator.SealMessage(key, msg.XML(), "wxapp")
	if err != nil {
		t.Fatal(err)
	}
	q := url.Values{"timestamp": {ts}, "nonce": {"n"}, "encrypt_type": {"aes"},
		"msg_signature": {emulator.WeChatSignature("tok", ts, "n", encrypted)}, "signature": {emulator.WeChatSignature("tok", ts, "n")}}
	body := []byte("<xml><ToUserName><![CDATA[gh_1]]></ToUserName><Encrypt><![CDATA[" + encrypted + "]]></Encrypt></xml>")
	p, err := safe.Open(q, body, now)
	if err != nil || string(p.Plain) != string(msg.XML()) || !p.Encrypted || p.JSON {
		t.Fatalf("safe mode: %q %+v %v", p.Plain, p, err)
	}
	if k, err := safe.MessageKey(p); err != nil || k != "msg:"+strconv.FormatInt(msg.MsgID, 10) {
		t.Fatalf("key %q %v", k, err)
	}
	reasons := map[string]func() error{
		RefusedStale: func() error { _, err := safe.Open(q, body, now.Add(6*time.Minute)); return err },
		RefusedMode:  func() error { _, err := plain.Open(q, body, now); return err },
		RefusedSignature: func() error {
			bad := url.Values{}
			for k, v := range q {
				bad[k] = v
			}
			bad.Set("msg_signature", "0000")
			_, err := safe.Open(bad, body, now)
			return err
		},
		RefusedReceiver: func() error {
			other, _ := NewMessageReceiver(OfficialAccount, "wxother", "tok", key)
			_, err := other.Open(q, body, now)
			return err
		},
	}
	for want, f := range reasons {
		var r *Refusal
		if err := f(); !errors.As(err, &r) || r.Reason != want {
			t.Errorf("%s: %v", want, err)
		}
	}
	// The reply is sealed for the receiver, as WeChat opens it.
	sealed, err := safe.Seal(p, []byte("<xml>reply</xml>"), now)
	if err != nil {
		t.Fatal(err)
	}
	var env struct {
		Encrypt string `xml:"Encrypt"`
	}
	if err := xmlUnmarshal(sealed, &env); err != nil {
		t.Fatal(err)
	}
	if got, receiver, err := emulator.OpenSealed(key, env.Encrypt); err != nil || string(got) != "<xml>reply</xml>" || receiver != "wxapp" {
		t.Fatalf("sealed reply: %q %q %v", got, receiver, err)
	}
	// Events are told apart by sender, time and event; WeCom's by agent too.
	wecom, _ := NewMessageReceiver(WeComApp, "ww1", "tok", key)
	ev := Push{Plain: []byte("<xml><FromUserName>u</FromUserName><CreateTime>7</CreateTime><Event>click</Event><AgentID>100</AgentID></xml>")}
	if k, _ := wecom.MessageKey(ev); k != "event:u|7|click|100" {
		t.Fatalf("WeCom event key %q", k)
	}
}

// A message is delivered once: a repeat while it is in flight waits for
// it, a repeat after gets the same answer, also through another instance
// (another Deliveries) on the same storage; a failure keeps nothing.
func TestDeliveriesDeliverOnce(t *testing.T) {
	t.Parallel()
	store := newMemStorage()
	a, b := NewDeliveries(), NewDeliveries()
	t.Cleanup(a.Attach(store, nil))
	t.Cleanup(b.Attach(store, nil)) // returns once a shares
	release, entered := make(chan struct{}), make(chan struct{})
	calls := 0
	deliver := func(ctx context.Context) (Answer, error) {
		calls++
		close(entered)
		<-release
		return Answer{Body: []byte("reply")}, nil
	}
	done := make(chan Answer, 2)
	send := func() {
		ans, _, err := a.Deliver(context.Background(), store, "wxapp", "msg:1", deliver)
		if err != nil {
			t.Error(err)
		}
		done <- ans
	}
	go send()
	<-entered // the first delivery is in flight: the repeat comes now
	go send()
	close(release)
	for range 2 {
		if ans := <-done; string(ans.Body) != "reply" {
			t.Fatalf("answer %q", ans.Body)
		}
	}
	if calls != 1 {
		t.Fatalf("%d deliveries", calls)
	}
	waitAnswerStored(t, store, "wxapp", "msg:1")
	ans, repeat, err := b.Deliver(context.Background(), store, "wxapp", "msg:1", func(context.Context) (Answer, error) {
		t.Error("delivered again through another instance")
		return Answer{}, nil
	})
	if err != nil || !repeat || string(ans.Body) != "reply" {
		t.Fatalf("through another instance: %q %v %v", ans.Body, repeat, err)
	}
	// A failure keeps nothing: the next delivery delivers.
	fails := 0
	failing := func(context.Context) (Answer, error) { fails++; return Answer{}, errors.New("the app is down") }
	if _, _, err := a.Deliver(context.Background(), store, "wxapp", "msg:2", failing); err == nil {
		t.Fatal("a failed delivery answered")
	}
	if _, _, err := b.Deliver(context.Background(), store, "wxapp", "msg:2", failing); err == nil || fails != 2 {
		t.Fatalf("after a failure: %d deliveries, %v", fails, err)
	}
}

// A record is filed by the span in which its message first came, not by
// anything a re-delivery carries (a re-stamped CreateTime, a sample
// message's of 2012): a re-delivery through another instance finds it
// after a sweep, and the sweep removes the spans before the one before.
func TestRecordFiledByItsFirstArrival(t *testing.T) {
	t.Parallel()
	store := newMemStorage()
	a, b := NewDeliveries(), NewDeliveries()
	t.Cleanup(a.Attach(store, nil))
	t.Cleanup(b.Attach(store, nil))
	deliver := func(context.Context) (Answer, error) { return Answer{Body: []byte("reply")}, nil }
	if _, _, err := a.Deliver(context.Background(), store, "wxapp", "msg:sample", deliver); err != nil {
		t.Fatal(err)
	}
	waitAnswerStored(t, store, "wxapp", "msg:sample")
	// Spans long past, and the one before the one before now's.
	gone := []string{messageKey("wxapp", 60, "msg:old"), messageKey("wxapp", spanOf(time.Now())-2*spanMinutes, "msg:old")}
	for _, k := range gone {
		if err := store.Store(context.Background(), k, []byte(`{"state":"answered"}`)); err != nil {
			t.Fatal(err)
		}
	}
	NewDeliveries().sweep(store, "wxapp") // one that has not swept this minute
	for _, k := range gone {
		if _, err := store.Load(context.Background(), k); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("%s outlived the sweep: %v", k, err)
		}
	}
	ans, repeat, err := b.Deliver(context.Background(), store, "wxapp", "msg:sample", func(context.Context) (Answer, error) {
		t.Error("the message was delivered again through another instance")
		return Answer{}, nil
	})
	if err != nil || !repeat || string(ans.Body) != "reply" {
		t.Fatalf("re-delivered after the sweep: %q %v %v", ans.Body, repeat, err)
	}
}

// A re-delivery finds the record of a message answered within answerKept
// in its own span or the one before, and the next one when its clock is
// behind another instance's at a span's end.
func TestRecordFoundAcrossSpans(t *testing.T) {
	store := newMemStorage()
	start := time.Unix(29_000_000*60, 0) // a span's first minute
	hash := messageHash("msg:1")
	put := func(span int64) {
		data, _ := json.Marshal(record{State: "answered", At: start, Answer: Answer{Body: []byte("r")}})
		if err := store.Store(context.Background(), messageKeyOf("wxapp", span, hash), data); err != nil {
			t.Fatal(err)
		}
	}
	put(spanOf(start))
	for _, tc := range []struct {
		at    time.Duration // after the span's start
		found bool
	}{{0, true}, {9 * time.Minute, true}, {10*time.Minute + answerKept, true}, {10*time.Minute + answerKept + clockSlack, false}} {
		now := start.Add(tc.at)
		if _, rec, ok := find(context.Background(), store, "wxapp", hash, now); ok != tc.found || ok && rec.State != "answered" {
			t.Errorf("%s into the span: found %v, want %v", tc.at, ok, tc.found)
		}
	}
	store = newMemStorage()
	put(spanOf(start))
	if _, _, ok := find(context.Background(), store, "wxapp", hash, start.Add(-clockSlack/2)); !ok {
		t.Error("a record of the next span, read by a clock behind, not found")
	}
}

func waitAnswerStored(t *testing.T, store Storage, receiverID string, key string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		if _, rec, ok := find(context.Background(), store, receiverID, messageHash(key), time.Now()); ok && rec.State == "answered" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the answer to %s was never stored for the fleet", key)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// messageRecords are the message records in store.
func messageRecords(store *memStorage) []string {
	var out []string
	for _, k := range store.keys() {
		if strings.HasPrefix(k, prefix+"/messages/") {
			out = append(out, k)
		}
	}
	return out
}

// Alone on its storage, an instance keeps its messages in memory: the
// storage holds its presence and nothing of a message.
func TestAloneNothingOfAMessageIsStored(t *testing.T) {
	t.Parallel()
	store := newMemStorage()
	d := NewDeliveries()
	t.Cleanup(d.Attach(store, nil))
	loads := func() int { store.mu.Lock(); defer store.mu.Unlock(); return store.loads }
	before := loads()
	deliver := func(context.Context) (Answer, error) { return Answer{Body: []byte("r")}, nil }
	for i := range 20 {
		if _, repeat, err := d.Deliver(context.Background(), store, "wxapp", "msg:"+strconv.Itoa(i), deliver); err != nil || repeat {
			t.Fatalf("message %d: repeat %v, %v", i, repeat, err)
		}
	}
	if _, repeat, err := d.Deliver(context.Background(), store, "wxapp", "msg:3", deliver); err != nil || !repeat {
		t.Fatalf("a re-delivery alone: repeat %v, %v", repeat, err)
	}
	if n := loads() - before; n != 0 {
		t.Fatalf("%d storage reads for 21 pushes alone", n)
	}
	if recs := messageRecords(store); len(recs) != 0 {
		t.Fatalf("alone, message records were stored: %v", recs)
	}
	if got := store.keys(); len(got) != 1 || !strings.HasPrefix(got[0], fleetPrefix()+"/") {
		t.Fatalf("stored %v, want the presence record alone", got)
	}
}

// An instance joining one that was alone gets, before it starts, what it
// needs for re-deliveries: the answers given before it came and the
// deliveries under way; from then on each message is shared as it goes.
func TestNewcomerAnswersWhatTheFleetAnsweredBeforeIt(t *testing.T) {
	t.Parallel()
	store := newMemStorage()
	a, b := NewDeliveries(), NewDeliveries()
	t.Cleanup(a.Attach(store, nil))
	once := func(body string) func(context.Context) (Answer, error) {
		return func(context.Context) (Answer, error) { return Answer{Body: []byte(body)}, nil }
	}
	never := func(context.Context) (Answer, error) {
		t.Error("delivered again through the newcomer")
		return Answer{}, nil
	}
	if _, _, err := a.Deliver(context.Background(), store, "wxapp", "msg:1", once("before")); err != nil {
		t.Fatal(err)
	}
	release, entered := make(chan struct{}), make(chan struct{})
	inFlight := make(chan error, 1)
	go func() {
		_, _, err := a.Deliver(context.Background(), store, "wxapp", "msg:2", func(context.Context) (Answer, error) {
			close(entered)
			<-release
			return Answer{Body: []byte("slow")}, nil
		})
		inFlight <- err
	}()
	<-entered
	t.Cleanup(b.Attach(store, nil))
	if ans, repeat, err := b.Deliver(context.Background(), store, "wxapp", "msg:1", never); err != nil || !repeat || string(ans.Body) != "before" {
		t.Fatalf("answered before the newcomer came: %q %v %v", ans.Body, repeat, err)
	}
	waiting := make(chan Answer, 1)
	go func() {
		ans, _, err := b.Deliver(context.Background(), store, "wxapp", "msg:2", never)
		if err != nil {
			t.Error(err)
		}
		waiting <- ans
	}()
	time.Sleep(300 * time.Millisecond) // the re-delivery is waiting on the other instance
	close(release)
	if err := <-inFlight; err != nil {
		t.Fatal(err)
	}
	if ans := <-waiting; string(ans.Body) != "slow" {
		t.Fatalf("a re-delivery while the first was under way elsewhere: %q", ans.Body)
	}
	// Answered by a, at once re-delivered to b.
	if _, _, err := a.Deliver(context.Background(), store, "wxapp", "msg:3", once("now")); err != nil {
		t.Fatal(err)
	}
	waitAnswerStored(t, store, "wxapp", "msg:3")
	if ans, repeat, err := b.Deliver(context.Background(), store, "wxapp", "msg:3", never); err != nil || !repeat || string(ans.Body) != "now" {
		t.Fatalf("answered by the other instance just before: %q %v %v", ans.Body, repeat, err)
	}
}

// An instance that stops leaves its answers to its successor, which
// shares for a while after: a re-delivery across a restart is answered.
func TestSuccessorAnswersWhatThePredecessorAnswered(t *testing.T) {
	t.Parallel()
	store := newMemStorage()
	a := NewDeliveries()
	leave := a.Attach(store, nil)
	if _, _, err := a.Deliver(context.Background(), store, "wxapp", "msg:1", func(context.Context) (Answer, error) {
		return Answer{Body: []byte("first life")}, nil
	}); err != nil {
		t.Fatal(err)
	}
	leave()
	b := NewDeliveries()
	t.Cleanup(b.Attach(store, nil))
	ans, repeat, err := b.Deliver(context.Background(), store, "wxapp", "msg:1", func(context.Context) (Answer, error) {
		t.Error("delivered again after a restart")
		return Answer{}, nil
	})
	if err != nil || !repeat || string(ans.Body) != "first life" {
		t.Fatalf("after a restart: %q %v %v", ans.Body, repeat, err)
	}
}

// A first delivery is not a repeat; the re-delivery is.
func TestFirstDeliveryIsNoRepeat(t *testing.T) {
	d := NewDeliveries()
	store := newMemStorage()
	t.Cleanup(d.Attach(store, nil))
	deliver := func(context.Context) (Answer, error) { return Answer{Body: []byte("r")}, nil }
	if _, repeat, err := d.Deliver(context.Background(), store, "wxapp", "msg:9", deliver); err != nil || repeat {
		t.Fatalf("first delivery: repeat %v, %v", repeat, err)
	}
	if _, repeat, err := d.Deliver(context.Background(), store, "wxapp", "msg:9", deliver); err != nil || !repeat {
		t.Fatalf("re-delivery: repeat %v, %v", repeat, err)
	}
}

// A push that reaches an instance before it joined the fleet (its
// handlers serve before its wechat app starts) waits for the join, and
// then gets the answer another instance gave.
func TestPushBeforeTheJoinWaitsForIt(t *testing.T) {
	t.Parallel()
	store := newMemStorage()
	a, b := NewDeliveries(), NewDeliveries()
	t.Cleanup(a.Attach(store, nil))
	if _, _, err := a.Deliver(context.Background(), store, "wxapp", "msg:1", func(context.Context) (Answer, error) {
		return Answer{Body: []byte("from a")}, nil
	}); err != nil {
		t.Fatal(err)
	}
	type result struct {
		ans    Answer
		repeat bool
		err    error
	}
	early := make(chan result, 1)
	go func() {
		ans, repeat, err := b.Deliver(context.Background(), store, "wxapp", "msg:1", func(context.Context) (Answer, error) {
			t.Error("delivered again by an instance that had not joined")
			return Answer{}, nil
		})
		early <- result{ans, repeat, err}
	}()
	time.Sleep(100 * time.Millisecond) // the push is in, before the join
	t.Cleanup(b.Attach(store, nil))
	if r := <-early; r.err != nil || !r.repeat || string(r.ans.Body) != "from a" {
		t.Fatalf("a push before the join: %q %v %v", r.ans.Body, r.repeat, r.err)
	}
}
