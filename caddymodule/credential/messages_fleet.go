package credential

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io/fs"
	"path"
	"slices"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"
)

// Telling the fleet of every message costs a storage read on each push
// and writes beside it; a single instance needs neither. So an instance
// shares its messages only while it has company. Each instance that
// delivers messages through a storage says so every beat (its presence
// record) and reads the others'. Alone, it keeps its answers in memory.
// When another instance appears, it starts sharing, writes what a
// re-delivery reaching the newcomer needs (its deliveries under way, its
// answers of the last handoverSpan), and only then lists the newcomer as
// seen; the newcomer waits for that (handoverWait at most) before it
// starts. From then on every instance reads and writes every message's
// record, until no other instance has been seen for companyKept. An
// instance that stops writes the same and says it stopped: its successor
// shares for restartGrace after that, so that WeChat's re-deliveries of
// what the predecessor answered get its answers.

const (
	beatEvery    = time.Second
	aliveFor     = 5 * time.Second  // a presence unchanged this long is of an instance gone
	companyKept  = 2 * time.Minute  // sharing goes on this long after another instance was last seen
	handoverWait = 3 * time.Second  // a newcomer waits this long at most for the others to share
	handoverSpan = time.Minute      // the answers written on a handover: WeChat re-delivers within ~20 s
	restartGrace = time.Minute      // the contract: a re-delivery gets the answer for a minute at least
	presenceKept = 10 * time.Minute // presence records older than this are removed
)

// presence is an instance's presence record.
type presence struct {
	Beat    int64     `json:"beat"`
	At      time.Time `json:"at"`
	Seen    []string  `json:"seen,omitempty"` // the instances it shares with
	Stopped bool      `json:"stopped,omitempty"`
}

// company is what an instance knows of the others on its storage.
type company struct {
	id      string // this process's
	mu      sync.Mutex
	stores  []Storage // attached, the latest last: the one in use
	logger  *zap.Logger
	cancel  context.CancelFunc
	done    chan struct{}
	beat    int64
	peers   map[string]*peer
	failing bool // the last beat failed (logged once)
	// joined is closed once the first Attach has joined the fleet: a
	// config's handlers can serve before its wechat app starts (Caddy
	// starts apps in no set order), and a push before the join cannot
	// know whether to share.
	joined     chan struct{}
	joinedOnce sync.Once
}

type peer struct {
	beat       int64
	changed    time.Time // when its beat last changed, by this clock
	handedOver bool      // this instance's records were written for it
}

func newCompany() *company {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return &company{id: hex.EncodeToString(b[:]), peers: map[string]*peer{}, joined: make(chan struct{})}
}

// awaitJoin waits, if this process has not joined the fleet yet, until it
// has (or ctx ends, or a join that never comes is given up on).
func (d *Deliveries) awaitJoin(ctx context.Context) {
	select {
	case <-d.company.joined:
		return
	default:
	}
	t := time.NewTimer(handoverWait + time.Second)
	defer t.Stop()
	select {
	case <-d.company.joined:
	case <-ctx.Done():
	case <-t.C:
	}
}

// sharing reports whether the fleet is told of every message.
func (d *Deliveries) sharing(now time.Time) bool {
	return now.UnixNano() < d.shareUntil.Load()
}

// shareUntil extends sharing to t at least.
func (d *Deliveries) shareTill(t time.Time) {
	for {
		cur := d.shareUntil.Load()
		if t.UnixNano() <= cur || d.shareUntil.CompareAndSwap(cur, t.UnixNano()) {
			return
		}
	}
}

// Attach makes this process an instance of the fleet on store, for the
// messages of the config that attaches it (the app's Start), until the
// returned detach (its Stop). Configs overlap in a reload: the latest
// attached storage is used, and the fleet sees one instance throughout.
// The first Attach of a process joins the fleet: if other instances are
// delivering through store, it returns once they share (handoverWait at
// most).
func (d *Deliveries) Attach(store Storage, logger *zap.Logger) (detach func()) {
	if store == nil {
		return func() {}
	}
	c := d.company
	c.mu.Lock()
	c.stores = append(c.stores, store)
	first := len(c.stores) == 1
	if logger != nil {
		c.logger = logger
	}
	if first {
		ctx, cancel := context.WithCancel(context.Background())
		c.cancel, c.done = cancel, make(chan struct{})
		c.beatLocked(ctx, d, store)
		c.mu.Unlock()
		d.awaitHandover(ctx, store)
		c.joinedOnce.Do(func() { close(c.joined) })
		go d.beatLoop(ctx, c.done)
	} else {
		c.mu.Unlock()
	}
	var once sync.Once
	return func() { once.Do(func() { d.detach(store) }) }
}

func (d *Deliveries) detach(store Storage) {
	c := d.company
	c.mu.Lock()
	if i := slices.Index(c.stores, store); i >= 0 {
		c.stores = slices.Delete(c.stores, i, i+1)
	}
	if len(c.stores) > 0 {
		c.mu.Unlock()
		return
	}
	cancel, done := c.cancel, c.done
	c.mu.Unlock()
	cancel()
	<-done
	// The last config with messages stops (the process, most likely):
	// what a successor needs, then the word that this instance stopped.
	ctx, stop := context.WithTimeout(context.Background(), 10*time.Second)
	defer stop()
	d.handover(ctx, store)
	c.mu.Lock()
	defer c.mu.Unlock()
	c.beat++
	c.writePresence(ctx, store, presence{Beat: c.beat, At: time.Now(), Stopped: true})
	c.peers = map[string]*peer{}
}

func (d *Deliveries) beatLoop(ctx context.Context, done chan struct{}) {
	defer close(done)
	tick := time.NewTicker(beatEvery)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		c := d.company
		c.mu.Lock()
		if len(c.stores) > 0 {
			c.beatLocked(ctx, d, c.stores[len(c.stores)-1])
		}
		c.mu.Unlock()
	}
}

// beatLocked reads the others' presence, hands over to newcomers, and
// writes this instance's; c.mu is held (nothing else waits on it but
// Attach and detach).
func (c *company) beatLocked(ctx context.Context, d *Deliveries, store Storage) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	now := time.Now()
	keys, err := store.List(ctx, fleetPrefix(), false)
	if err != nil && !errors.Is(err, fs.ErrNotExist) { // none yet: the file storage's first beat
		c.noteFailure(err)
		return
	}
	listed := map[string]bool{}
	newcomer := false
	for _, key := range keys {
		id := strings.TrimSuffix(path.Base(key), ".json")
		if id == c.id {
			continue
		}
		data, err := store.Load(ctx, key)
		var rec presence
		if err != nil || json.Unmarshal(data, &rec) != nil {
			continue
		}
		listed[id] = true
		p := c.peers[id]
		switch {
		case p == nil:
			// First seen: by its clock, as nothing else is known yet.
			p = &peer{beat: rec.Beat}
			if !rec.Stopped && now.Sub(rec.At).Abs() < aliveFor {
				p.changed = now
			}
			c.peers[id] = p
		case rec.Beat != p.beat:
			p.beat = rec.Beat
			if !rec.Stopped {
				p.changed = now
			}
		}
		if rec.Stopped && now.Sub(rec.At) < restartGrace {
			d.shareTill(rec.At.Add(restartGrace)) // a predecessor's answers are in the storage
		}
		if !p.changed.IsZero() && now.Sub(p.changed) < aliveFor {
			d.shareTill(now.Add(companyKept))
			newcomer = newcomer || !p.handedOver
		} else {
			p.handedOver = false // gone: if it comes back, hand over again
			if now.Sub(rec.At) > presenceKept {
				_ = store.Delete(ctx, key) // long gone; any instance tidies
			}
		}
	}
	for id := range c.peers {
		if !listed[id] {
			delete(c.peers, id)
		}
	}
	if newcomer {
		// Sharing began above: what is delivered from now on is written
		// as it goes; what came before is written here, then the
		// newcomers are told.
		d.handover(ctx, store)
	}
	var seen []string
	for id, p := range c.peers {
		if !p.changed.IsZero() && now.Sub(p.changed) < aliveFor {
			p.handedOver = true
			seen = append(seen, id)
		}
	}
	slices.Sort(seen)
	c.beat++
	c.writePresence(ctx, store, presence{Beat: c.beat, At: now, Seen: seen})
}

func (c *company) writePresence(ctx context.Context, store Storage, rec presence) {
	data, err := json.Marshal(rec)
	if err == nil {
		err = store.Store(ctx, presenceKey(c.id), data)
	}
	if err != nil {
		c.noteFailure(err)
		return
	}
	if c.failing {
		c.failing = false
		c.log().Info("message fleet: the storage answers again")
	}
}

func (c *company) noteFailure(err error) {
	if !c.failing {
		c.failing = true
		// Sharing, once begun, goes on for companyKept: an outage shorter
		// than that changes nothing but what this instance learns.
		c.log().Warn("message fleet: the storage does not answer; the other instances are not seen", zap.Error(err))
	}
}

func (c *company) log() *zap.Logger {
	if c.logger == nil {
		return zap.NewNop()
	}
	return c.logger
}

// awaitHandover waits, handoverWait at most, until every instance seen
// alive lists this one: they write every message from then on.
func (d *Deliveries) awaitHandover(ctx context.Context, store Storage) {
	c := d.company
	c.mu.Lock()
	var waiting []string
	for id, p := range c.peers {
		if !p.changed.IsZero() {
			waiting = append(waiting, id)
		}
	}
	c.mu.Unlock()
	if len(waiting) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, handoverWait)
	defer cancel()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for len(waiting) > 0 {
		select {
		case <-ctx.Done():
			c.log().Warn("message fleet: joined before every instance shared its messages; a re-delivery of a message they answered in the last seconds may reach the app again",
				zap.Strings("instances", waiting))
			return
		case <-tick.C:
		}
		waiting = slices.DeleteFunc(waiting, func(id string) bool {
			data, err := store.Load(ctx, presenceKey(id))
			var rec presence
			if err != nil || json.Unmarshal(data, &rec) != nil {
				return err != nil && errors.Is(err, fs.ErrNotExist) // gone, or unreadable: waited for while the storage answers
			}
			return rec.Stopped || slices.Contains(rec.Seen, c.id)
		})
	}
}

// handover writes what another instance needs to answer re-deliveries of
// this one's messages: a mark for each delivery under way, the answers of
// the last handoverSpan, newest first.
func (d *Deliveries) handover(ctx context.Context, store Storage) {
	d.mu.Lock()
	inflight := make([]*delivery, 0, len(d.inflight))
	for _, f := range d.inflight {
		inflight = append(inflight, f)
	}
	cutoff := time.Now().Add(answerKept - handoverSpan).UnixNano() // answered after now-handoverSpan: until = answered+answerKept
	type answer struct {
		key string
		rec record
	}
	var answers []answer
	for i := len(d.expiry) - 1; i >= 0 && d.expiry[i].until > cutoff; i-- {
		e := d.expiry[i]
		if a, ok := d.answered[e.ref]; ok && a.until == e.until {
			key := messageKeyOf(d.receivers[e.ref.receiver], a.minute, e.ref.hash)
			at := time.Unix(0, a.until).Add(-answerKept)
			answers = append(answers, answer{key, record{State: "answered", At: at, Answer: Answer{Body: d.replies[e.ref]}}})
		}
	}
	d.mu.Unlock()
	for _, f := range inflight {
		f.markDelivering(store, true)
	}
	for _, a := range answers {
		if ctx.Err() != nil {
			return
		}
		storeRecord(store, a.key, a.rec)
	}
}
