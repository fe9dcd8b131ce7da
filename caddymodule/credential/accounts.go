package credential

import (
	"container/heap"
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
	"golang.org/x/sync/singleflight"

	"github.com/caddy-wechat/caddy-wechat/caddymodule/token"
)

// accounts are the accounts of one platform in use by this process,
// shared by every running config that has the platform, so that a reload
// keeps them. There is nothing per account that wakes up by itself: one
// scheduler renews every account's token (a heap of due times, a few
// workers), an account idle for a token's lifetime is dropped instead of
// renewed (its next request fetches, or adopts what the fleet stored), and
// nothing re-reads the storage per account between renewals.
type accounts struct {
	reg            *Registry
	componentAppID string

	mu      sync.Mutex
	holders []*Platform // newest last: its config is in force
	byID    map[string]*account
	queue   schedule
	// pending are authorizations received but not yet written: the
	// storage failed; they are written as soon as it is back.
	pending map[string]authorization
	// walk is the list walk under way (sync.go); lastWalk when the last
	// one ended.
	walk     *walk
	lastWalk time.Time
	// withdrawn is the last withdrawal of the fleet's log seen (events.go).
	withdrawn int64
	// storedCount caches the number of stored authorizations for the
	// admin status.
	storedCount   int
	storedCountAt time.Time

	events  singleflight.Group // events in flight, by event
	ctx     context.Context    // ends when the last config holding the platform stops
	cancel  context.CancelFunc
	wake    chan struct{}
	jobs    chan *account
	stopped sync.WaitGroup
}

// account is one account in use.
type account struct {
	id       string
	m        *token.Manager
	lastUsed atomic.Int64 // unix nanoseconds of its last request
	due      time.Time    // when the scheduler looks at it next
	index    int          // in the heap
	renewing bool
	failures int
}

const (
	// renewWorkers renew due accounts at once; renewals are spread, so a
	// few keep up with 100,000 accounts.
	renewWorkers = 4
	// withdrawalsPoll is how often the fleet's withdrawals are read: an
	// account withdrawn on one instance stops being served everywhere
	// within it (and the contract's 60 s).
	withdrawalsPoll = 15 * time.Second
	// pendingRetry is how often unwritten authorizations are retried.
	pendingRetry = 2 * time.Second
)

func newAccounts(reg *Registry, componentAppID string) *accounts {
	ctx, cancel := context.WithCancel(context.Background())
	return &accounts{reg: reg, componentAppID: componentAppID, byID: map[string]*account{}, pending: map[string]authorization{},
		ctx: ctx, cancel: cancel, wake: make(chan struct{}, 1), jobs: make(chan *account, renewWorkers)}
}

// attach makes p's config the one in force, comp its running
// component_access_token; r.mu is held. The first holder starts the
// scheduler; a later one (a reload) gives every account its settings.
func (a *accounts) attach(p *Platform, comp *token.Manager) {
	a.mu.Lock()
	a.holders = append(a.holders, p)
	first := len(a.holders) == 1
	a.mu.Unlock()
	if first {
		a.stopped.Add(1 + renewWorkers)
		go a.run()
		for range renewWorkers {
			go a.work()
		}
		return
	}
	a.reconfigure(comp)
}

// detach withdraws p; it reports whether no holder is left, the scheduler
// and every account then stopped.
func (a *accounts) detach(p *Platform) bool {
	a.mu.Lock()
	wasInForce := len(a.holders) > 0 && a.holders[len(a.holders)-1] == p
	for i, h := range a.holders {
		if h == p {
			a.holders = append(a.holders[:i], a.holders[i+1:]...)
			break
		}
	}
	left := len(a.holders)
	a.mu.Unlock()
	switch {
	case left == 0:
		a.cancel()
		a.stopped.Wait()
		a.mu.Lock()
		all := a.byID
		a.byID, a.queue = map[string]*account{}, nil
		a.mu.Unlock()
		for _, ac := range all {
			ac.m.Stop()
		}
		return true
	case wasInForce:
		if p := a.inForce(); p != nil {
			a.reconfigure(p.ref.Current()) // a reload that failed: the running config again
		}
	}
	return false
}

// inForce is the platform of the config in force (nil once none is).
func (a *accounts) inForce() *Platform {
	a.mu.Lock()
	defer a.mu.Unlock()
	if len(a.holders) == 0 {
		return nil
	}
	return a.holders[len(a.holders)-1]
}

// spec is an account's credential spec, under the config in force.
func (a *accounts) spec(p *Platform, appID string) Spec {
	spec := p.spec
	spec.Kind, spec.ID, spec.Platform = Authorizer, appID, p.spec.ID
	return spec
}

// settings are an account's manager settings under p's config; comp is
// the platform's component_access_token.
func (a *accounts) settings(p *Platform, appID string, comp Refresher) token.Settings {
	spec := a.spec(p, appID)
	s := p.cfg.settings(spec, comp)
	s.Fetcher = spec.Kind.NewFetcher(spec, Deps{Store: p.cfg.store, Needed: comp, Client: a.reg.client, accounts: a})
	return s
}

// reconfigure gives every account the settings of the config in force,
// whose component_access_token is comp.
func (a *accounts) reconfigure(comp *token.Manager) {
	p := a.inForce()
	if p == nil || comp == nil {
		return
	}
	a.mu.Lock()
	list := make([]*account, 0, len(a.byID))
	for _, ac := range a.byID {
		list = append(list, ac)
	}
	a.mu.Unlock()
	for _, ac := range list {
		if err := ac.m.Reconfigure(a.settings(p, ac.id, comp)); err != nil {
			p.cfg.logger.Error("reconfiguring an account", zap.String("authorizer_appid", ac.id), zap.Error(err))
		}
	}
}

// get returns the manager of an account in use, loading it (its
// authorization checked) on its first request.
func (a *accounts) get(ctx context.Context, appID string) (*token.Manager, error) {
	a.mu.Lock()
	ac := a.byID[appID]
	a.mu.Unlock()
	if ac != nil {
		ac.lastUsed.Store(nowOf(a.reg.clockOf()).UnixNano())
		return ac.m, nil
	}
	if _, err := a.authorized(ctx, appID); err != nil {
		return nil, err
	}
	ac, err := a.load(appID, true)
	if err != nil {
		return nil, err
	}
	ac.lastUsed.Store(nowOf(a.reg.clockOf()).UnixNano())
	return ac.m, nil
}

// load returns the account's entry, making it (and its scheduled
// manager) if it is not in use yet; used marks it as requested, so that
// the scheduler does not take it for idle.
func (a *accounts) load(appID string, used bool) (*account, error) {
	p := a.inForce()
	if p == nil {
		return nil, errors.New("the wechat app stopped")
	}
	comp := p.ref.Current()
	if comp == nil {
		return nil, errors.New("the wechat app did not start")
	}
	a.mu.Lock()
	if ac := a.byID[appID]; ac != nil {
		a.mu.Unlock()
		return ac, nil
	}
	a.mu.Unlock()
	spec := a.spec(p, appID)
	m, err := token.NewManager(token.Options{AppID: spec.Label(), Kind: spec.Kind.engine(), Keys: spec.Kind.Keys(spec),
		Clock: a.reg.clockOf(), Scheduled: true, OnSchedule: func() { a.touch(appID) }, Settings: a.settings(p, appID, comp)})
	if err != nil {
		return nil, err
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if ac := a.byID[appID]; ac != nil {
		return ac, nil // made by a request racing this one
	}
	if a.ctx.Err() != nil {
		return nil, errors.New("the wechat app stopped")
	}
	now := nowOf(a.reg.clockOf())
	// The scheduler looks at it once it has a token (the manager tells
	// it), or in a while.
	ac := &account{id: appID, m: m, due: now.Add(renewTimeout)}
	if used {
		ac.lastUsed.Store(now.UnixNano())
	}
	a.byID[appID] = ac
	heap.Push(&a.queue, ac)
	m.Start()
	a.poke()
	return ac, nil
}

// touch makes the scheduler look at an account again: its token changed.
func (a *accounts) touch(appID string) {
	a.mu.Lock()
	if ac := a.byID[appID]; ac != nil && !ac.renewing && ac.index >= 0 {
		ac.due = nowOf(a.reg.clockOf())
		heap.Fix(&a.queue, ac.index)
	}
	a.mu.Unlock()
	a.poke()
}

func (a *accounts) poke() {
	select {
	case a.wake <- struct{}{}:
	default:
	}
}

// evict drops an account from memory: withdrawn, or idle.
func (a *accounts) evict(appID string) {
	a.mu.Lock()
	ac := a.byID[appID]
	if ac != nil {
		delete(a.byID, appID)
		if ac.index >= 0 {
			heap.Remove(&a.queue, ac.index)
		}
	}
	a.mu.Unlock()
	if ac != nil {
		ac.m.Stop()
	}
}

func nowOf(c token.Clock) time.Time {
	if c == nil {
		return time.Now()
	}
	return c.Now()
}

// schedule is a heap of accounts by due time.
type schedule []*account

func (s schedule) Len() int           { return len(s) }
func (s schedule) Less(i, j int) bool { return s[i].due.Before(s[j].due) }
func (s schedule) Swap(i, j int) {
	s[i], s[j] = s[j], s[i]
	s[i].index, s[j].index = i, j
}
func (s *schedule) Push(x any) {
	ac := x.(*account)
	ac.index = len(*s)
	*s = append(*s, ac)
}
func (s *schedule) Pop() any {
	old := *s
	ac := old[len(old)-1]
	old[len(old)-1] = nil
	ac.index = -1
	*s = old[:len(old)-1]
	return ac
}
