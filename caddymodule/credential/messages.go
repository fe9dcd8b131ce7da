package credential

import (
	"context"
	"encoding/json"
	"errors"
	"path"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// Each message reaches the app once across the fleet, though WeChat
// re-delivers a push that got no answer within 5 s up to three times: a
// re-delivery of a message in flight waits for the first delivery's
// answer; of one answered, gets the same answer (for answerKept), on any
// instance sharing the storage. A single instance keeps them in memory
// (messages_fleet.go: the storage is used only while other instances
// deliver through it). In a fleet a read is on the message's path, and
// the answer is written before WeChat gets it, so that a re-delivery
// reaching another instance at once finds it; the mark that a message is
// being delivered is written beside it, for slow deliveries only: another
// instance needs it before WeChat's re-delivery, 5 s later at the
// earliest.

// Answer is the app's answer to a message (its passive reply, or empty).
type Answer struct {
	Body []byte `json:"body,omitempty"`
}

// ErrDeliveringElsewhere is returned for a re-delivery of a message that
// another instance is still delivering: WeChat will deliver it again.
var ErrDeliveringElsewhere = errors.New("another instance is delivering this message; its answer goes to WeChat's next delivery")

const (
	// answerKept is how long an answer is given to re-deliveries.
	answerKept = 5 * time.Minute
	// deliveryTimeout bounds the app's request, which runs on when WeChat
	// hangs up, so that a slow reply reaches the user on the re-delivery.
	deliveryTimeout = time.Minute
	// elsewhereWait is how long a re-delivery waits for another instance's
	// delivery before WeChat's next one.
	elsewhereWait = 4 * time.Second
	// spanMinutes: a record is filed in the folder of the span of this
	// many minutes in which its message first came (by the clock of the
	// instance that took it), and found by a re-delivery in its own span
	// or the one before; spans older than that are removed.
	spanMinutes = 10
	// clockSlack is how far the clocks of a fleet's instances may differ
	// around a span's bounds and a re-delivery still find the record.
	clockSlack = 30 * time.Second
	// markAfter: a delivery still under way this long is marked for the
	// fleet (see run).
	markAfter = time.Second
)

// Deliveries deliver messages once. A process has one; it keeps nothing
// that wakes up by itself.
type Deliveries struct {
	mu       sync.Mutex
	inflight map[msgRef]*delivery
	answered map[msgRef]answered
	replies  map[msgRef][]byte // the answers that are not empty
	expiry   []expiring        // answered messages, oldest first
	swept    map[string]int64
	// receivers are the receiver ids of msgRefs, by index.
	receivers   []string
	receiverIdx map[string]uint32

	company    *company
	shareUntil atomic.Int64 // Unix ns: until then the fleet is told of every message
}

// msgRef identifies a receiver's message in memory. It holds no
// pointer, nor do the tables keyed by it, so that the garbage collector
// has nothing to scan in them however many messages they hold.
type msgRef struct {
	receiver uint32   // index in receivers
	hash     [16]byte // of the message key, as in its storage key
}

type delivery struct {
	done     chan struct{}
	answer   Answer
	err      error
	storeKey string // "" when there is no storage

	// The mark that it is being delivered, written by a timer or a
	// handover, never after the delivery settled (which would hide its
	// answer from the fleet).
	markMu  sync.Mutex
	settled bool
	marked  bool
}

type answered struct {
	until  int64 // Unix ns
	minute int64 // of its storage key
}

type expiring struct {
	ref   msgRef
	until int64
}

// NewDeliveries returns an empty Deliveries.
func NewDeliveries() *Deliveries {
	return &Deliveries{inflight: map[msgRef]*delivery{}, answered: map[msgRef]answered{}, replies: map[msgRef][]byte{},
		swept: map[string]int64{}, receiverIdx: map[string]uint32{}, company: newCompany()}
}

// record is a message's record in the storage.
type record struct {
	State  string    `json:"state"` // delivering, answered
	At     time.Time `json:"at"`
	Answer Answer    `json:"answer"`
}

// Deliver delivers the message identified by key (MessageKey), received
// by receiverID, through deliver, unless it was delivered already or is
// being delivered: then the first delivery's answer is returned, repeat
// true. deliver runs detached from ctx, which bounds only a repeat's wait:
// a first delivery returns when deliver does (bounded by deliveryTimeout),
// WeChat hanging up or not. Its failure keeps nothing, so that WeChat's
// next delivery tries again.
func (d *Deliveries) Deliver(ctx context.Context, store Storage, receiverID string, key string,
	deliver func(context.Context) (Answer, error)) (answer Answer, repeat bool, err error) {
	hash := messageHash(key)
	id, a, f, ok := d.local(receiverID, hash)
	if ok {
		return a, true, nil
	} else if f != nil {
		return d.wait(ctx, f)
	}
	storeKey := ""
	if store != nil {
		d.awaitJoin(ctx)
	}
	now := time.Now() // after the join's wait: the span the record goes in
	minute := spanOf(now)
	if store != nil {
		storeKey = messageKeyOf(receiverID, minute, hash)
	}
	if store != nil && d.sharing(now) {
		// Another instance may have it (a re-delivery that came here).
		if span, rec, ok := find(ctx, store, receiverID, hash, now); ok {
			switch {
			case rec.State == "answered":
				d.remember(id, span, rec.Answer)
				return rec.Answer, true, nil
			case rec.State == "delivering":
				return d.waitElsewhere(ctx, store, messageKeyOf(receiverID, span, hash), id, span)
			}
		}
	}
	d.mu.Lock()
	if f := d.inflight[id]; f != nil { // began meanwhile here
		d.mu.Unlock()
		return d.wait(ctx, f)
	}
	f = &delivery{done: make(chan struct{}), storeKey: storeKey}
	d.inflight[id] = f
	d.mu.Unlock()
	// Here, to its end: nothing of ctx (WeChat hanging up) cancels it.
	d.run(store, receiverID, id, minute, f, deliver)
	return f.answer, false, f.err
}

// spanOf is the span (its first minute, Unix minutes) that t falls in.
func spanOf(t time.Time) int64 {
	m := t.Unix() / 60
	return m - m%spanMinutes
}

// spansToRead are the spans in which the record of a message that first
// came within answerKept of now may be, its own first: the one before
// early in a span, the next one at its very end (another instance's
// clock ahead of this one's).
func spansToRead(now time.Time) (spans [3]int64, n int) {
	span := spanOf(now)
	spans[0], n = span, 1
	start := time.Unix(span*60, 0)
	if now.Sub(start) < answerKept+clockSlack {
		spans[n], n = span-spanMinutes, n+1
	}
	if start.Add(spanMinutes*time.Minute).Sub(now) < clockSlack {
		spans[n], n = span+spanMinutes, n+1
	}
	return spans, n
}

// find reads the fleet's record of a message: an answer, or a delivery
// under way (not given up on), and the span it is filed in.
func find(ctx context.Context, store Storage, receiverID string, hash [16]byte, now time.Time) (int64, record, bool) {
	spans, n := spansToRead(now)
	for _, span := range spans[:n] {
		rec, ok := loadRecord(ctx, store, messageKeyOf(receiverID, span, hash))
		if ok && (rec.State == "answered" || rec.State == "delivering" && now.Sub(rec.At) < deliveryTimeout) {
			return span, rec, true
		}
	}
	return 0, record{}, false
}

// local is what this instance knows of a message: its answer, or its
// delivery under way; and its msgRef.
func (d *Deliveries) local(receiverID string, hash [16]byte) (msgRef, Answer, *delivery, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	idx, ok := d.receiverIdx[receiverID]
	if !ok {
		idx = uint32(len(d.receivers))
		d.receivers = append(d.receivers, receiverID)
		d.receiverIdx[receiverID] = idx
	}
	id := msgRef{receiver: idx, hash: hash}
	if a, ok := d.answered[id]; ok && time.Now().UnixNano() < a.until {
		return id, Answer{Body: d.replies[id]}, nil, true
	}
	return id, Answer{}, d.inflight[id], false
}

// wait is a re-delivery's wait for f, the delivery under way.
func (d *Deliveries) wait(ctx context.Context, f *delivery) (Answer, bool, error) {
	select {
	case <-f.done:
		return f.answer, true, f.err
	case <-ctx.Done():
		return Answer{}, false, ctx.Err()
	}
}

// run delivers, detached from the push's context, and tells the fleet
// (beside the push's path) while it shares.
func (d *Deliveries) run(store Storage, receiverID string, id msgRef, minute int64, f *delivery, deliver func(context.Context) (Answer, error)) {
	// The mark that the message is being delivered is needed only by a
	// re-delivery reaching another instance, 5 s from now at the earliest:
	// it is written beside the delivery, and only if the app has not
	// answered within markAfter (most answer in milliseconds). Sharing
	// may begin meanwhile: the handover marks what is under way then.
	var mark *time.Timer
	if store != nil && d.sharing(time.Now()) {
		mark = time.AfterFunc(markAfter, func() { f.markDelivering(store, d.sharing(time.Now())) })
	}
	ctx, cancel := context.WithTimeout(context.Background(), deliveryTimeout)
	f.answer, f.err = deliver(ctx)
	cancel()
	if mark != nil {
		mark.Stop()
	}
	f.markMu.Lock()
	f.settled = true // no mark from now on: it would hide the answer
	if f.err != nil && f.marked {
		// Before WeChat hears of the failure: its next delivery, on any
		// instance, must find nothing and deliver again.
		deleteRecord(store, f.storeKey)
	}
	f.markMu.Unlock()
	d.mu.Lock()
	delete(d.inflight, id)
	if f.err == nil {
		d.rememberLocked(id, minute, f.answer)
	}
	d.mu.Unlock()
	// Read after the answer is in memory: sharing that begins later hands
	// it over from there.
	share := store != nil && d.sharing(time.Now())
	if f.err == nil && share {
		// Before WeChat hears the answer: a re-delivery reaching another
		// instance right after must find it there.
		storeRecord(store, f.storeKey, record{State: "answered", At: time.Now(), Answer: f.answer})
	}
	close(f.done)
	if share {
		go d.sweep(store, receiverID)
	}
}

// markDelivering writes the mark that f is being delivered, if share and
// f has not settled.
func (f *delivery) markDelivering(store Storage, share bool) {
	f.markMu.Lock()
	defer f.markMu.Unlock()
	if share && !f.settled && f.storeKey != "" {
		storeRecord(store, f.storeKey, record{State: "delivering", At: time.Now()})
		f.marked = true
	}
}

// waitElsewhere waits for the answer another instance is getting.
func (d *Deliveries) waitElsewhere(ctx context.Context, store Storage, storeKey string, id msgRef, minute int64) (Answer, bool, error) {
	ctx, cancel := context.WithTimeout(ctx, elsewhereWait)
	defer cancel()
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return Answer{}, true, ErrDeliveringElsewhere
		case <-tick.C:
		}
		if rec, ok := loadRecord(ctx, store, storeKey); ok && rec.State == "answered" {
			d.remember(id, minute, rec.Answer)
			return rec.Answer, true, nil
		} else if !ok {
			return Answer{}, true, ErrDeliveringElsewhere // it failed there: WeChat's next delivery
		}
	}
}

func (d *Deliveries) remember(id msgRef, minute int64, a Answer) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.rememberLocked(id, minute, a)
}

// rememberLocked keeps an answer for answerKept and forgets expired ones:
// memory holds what answerKept brings, not more.
func (d *Deliveries) rememberLocked(id msgRef, minute int64, a Answer) {
	now := time.Now().UnixNano()
	for len(d.expiry) > 0 && now > d.expiry[0].until {
		old := d.expiry[0].ref
		if cur, ok := d.answered[old]; ok && now >= cur.until {
			delete(d.answered, old)
			delete(d.replies, old)
		}
		d.expiry = d.expiry[1:]
	}
	until := now + int64(answerKept)
	d.answered[id] = answered{until: until, minute: minute}
	if len(a.Body) > 0 {
		d.replies[id] = a.Body
	} else {
		delete(d.replies, id)
	}
	d.expiry = append(d.expiry, expiring{id, until})
}

func loadRecord(ctx context.Context, store Storage, key string) (record, bool) {
	if store == nil {
		return record{}, false
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	data, err := store.Load(ctx, key)
	if err != nil {
		return record{}, false // none, or the storage is out: deliver (once here at least)
	}
	var rec record
	if json.Unmarshal(data, &rec) != nil {
		return record{}, false
	}
	return rec, true
}

func storeRecord(store Storage, key string, rec record) {
	if store == nil {
		return
	}
	data, err := json.Marshal(rec)
	if err != nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = store.Store(ctx, key, data) // a lost mark costs a duplicate at worst
}

func deleteRecord(store Storage, key string) {
	if store == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	// A failed delete leaves a "delivering" mark, which is ignored once
	// deliveryTimeout has passed: at worst a re-delivery waits, then retries.
	_ = store.Delete(ctx, key)
}

// sweep removes a receiver's records of spans before the one before
// now's (10 to 20 minutes old), at most once a minute. A span ahead of the
// clock (the clock went back) is left until the clock passes it.
func (d *Deliveries) sweep(store Storage, receiverID string) {
	if store == nil {
		return
	}
	minute := time.Now().Unix() / 60
	d.mu.Lock()
	if d.swept[receiverID] == minute {
		d.mu.Unlock()
		return
	}
	d.swept[receiverID] = minute
	d.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	dirs, err := store.List(ctx, messagesPrefix(receiverID), false)
	if err != nil {
		return
	}
	oldest := spanOf(time.Now()) - spanMinutes
	for _, dir := range dirs {
		m, err := strconv.ParseInt(path.Base(dir), 10, 64)
		if err != nil || m >= oldest {
			continue
		}
		keys, err := store.List(ctx, dir, true)
		if err != nil {
			continue
		}
		for _, k := range keys {
			_ = store.Delete(ctx, k)
		}
		_ = store.Delete(ctx, dir)
	}
}
