// Package token is the engine every WeChat credential runs on: a Manager
// fetches one credential, renews it before it expires and on demand when
// WeChat rejects it (once for all callers), shares it with a fleet through
// a storage, and hands the current value to callers. It knows neither the
// kinds of credential (package credential defines them) nor Caddy.
package token

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
	"golang.org/x/sync/singleflight"
	"golang.org/x/time/rate"
)

// Defaults for the zero values of Options.
const (
	DefaultRefreshAhead       = 5 * time.Minute
	DefaultMinRefreshInterval = time.Minute
	DefaultFetchTimeout       = 10 * time.Second
	// DefaultMinLifetime is low because it only guards against a broken or
	// hostile token endpoint: WeChat's tokens live 7200 s, and stable_token
	// hands out the next one 5 minutes before the end, so real answers are
	// never near it; emulators in tests use lifetimes of seconds.
	DefaultMinLifetime = 5 * time.Second
	// DefaultDailyRefreshLimit leaves half of classic's 2000 a day to
	// renewals and to whatever else uses the app's quota.
	DefaultDailyRefreshLimit = 1000
)

const (
	// refreshBurst passive refreshes may happen back to back before
	// MinRefreshInterval applies: enough for a token knocked out twice in a
	// row by another system, too few to dent the daily quota.
	refreshBurst = 3
	// WeChat allows force_refresh on stable_token 20 times a day, 30 s apart.
	forceMinGap     = 30 * time.Second
	forceDailyLimit = 20
	// waitGrace is what a request waiting for a token grants beyond
	// FetchTimeout: the fetch's own failure, with its reason, comes first.
	waitGrace = time.Second
	// minRetryDelay keeps the renewal loop from spinning on short lifetimes.
	minRetryDelay = 100 * time.Millisecond
	// unchangedMaxDelay bounds how long the loop waits before asking the
	// stable API again when it answered the token about to be renewed.
	unchangedMaxDelay = 30 * time.Second
)

// Token is an access_token and its lifetime.
type Token struct {
	Value     string
	FetchedAt time.Time
	ExpiresAt time.Time
	// epoch and confirmed place it in the refresh rules (refresh.go).
	epoch     uint64
	confirmed bool
}

// ValidAt reports whether the token may still be used at now.
func (t *Token) ValidAt(now time.Time) bool {
	return t != nil && t.Value != "" && now.Before(t.ExpiresAt)
}

// Settings are what a running Manager takes from the newest config: a Caddy
// reload replaces them all at once (Reconfigure). Zero durations mean the
// defaults.
type Settings struct {
	// Fetcher calls the token endpoint; it holds the secret. Required.
	Fetcher Fetcher
	// RefreshAhead is how long before expiry the token is renewed. For
	// tokens living less than twice as long, renewal happens at half-life.
	RefreshAhead time.Duration
	// MinRefreshInterval spaces on-demand refreshes of each source (see
	// Source) once a small burst is used up.
	MinRefreshInterval time.Duration
	// FetchTimeout bounds one call to the token endpoint, and (with
	// waitGrace) how long a request without a valid token waits for one.
	FetchTimeout time.Duration
	// MinLifetime is the shortest expires_in accepted: a shorter one is an
	// upstream error, not a reason to fetch again within seconds.
	MinLifetime time.Duration
	// DailyRefreshLimit caps the on-demand refreshes of a classic token per
	// day (Beijing time), counted across the fleet in Store: N instances
	// together cannot spend the 2000-a-day quota. 0: no cap.
	DailyRefreshLimit int
	// Store, if set, shares the token with the other instances using it:
	// a token found there is used instead of fetching, and renewals are
	// made by one instance at a time under the store's lock. It also keeps
	// the fleet's ledger of refreshes and force_refresh calls.
	Store Store
	// LockWait bounds the wait for another instance's renewal before
	// renewing alone. Default: long enough for the holder to finish
	// (FetchTimeout plus two storage calls), so that a waiter never
	// fetches while the holder is still working.
	LockWait time.Duration
	// SecretID is SecretFingerprint of the AppSecret, kept with stored
	// tokens to detect instances configured with different secrets.
	SecretID string
	Logger   *zap.Logger
}

// Options configure a Manager. AppID (the credential's ID: an app's,
// corp's or account's), Kind, Keys and Fetcher are required.
type Options struct {
	AppID string
	Kind  Kind
	Keys  Keys
	Clock Clock
	// Scheduled: no renewal loop of its own (see scheduled.go); OnSchedule,
	// if set, is told whenever its NextRenewal may have changed.
	Scheduled  bool
	OnSchedule func()
	Settings
}

// Manager holds one credential: an app's token for one token API, a
// ticket, a platform's token. It is safe for concurrent use. Only one
// fetch runs at a time: with the classic API every fetch invalidates the
// previous token, so concurrent fetches would knock each other's tokens
// out.
type Manager struct {
	appID    string
	kind     Kind
	keys     Keys
	clock    Clock
	settings atomic.Pointer[Settings]

	current atomic.Pointer[Token]
	flights singleflight.Group

	mu          sync.Mutex
	budgets     [numSources]*rate.Limiter
	ledger      ledgerRecord // the fleet's ledger as last seen (or kept alone)
	epoch       uint64       // see refresh.go
	epochBegan  time.Time
	lastErr     error
	lastErrAt   time.Time
	counts      counts
	latency     latency
	retries     map[string]int
	fetchedHere bool              // this instance fetched the current token (not adopted it)
	recent      []known           // the last tokens held, newest last (see Known)
	warned      map[string]string // kind -> text of the last one-time warning
	// attempt is closed when the fetch under way ends; it exists from
	// construction until the first fetch ends, so that early requests wait
	// for the first token instead of failing.
	attempt chan struct{}
	// ledgerMu serializes this instance's ledger updates (the store's lock
	// serializes the fleet's).
	ledgerMu sync.Mutex

	// saving counts the saves of fetched tokens under way (beside the
	// requests that wait for them); Stop waits for them.
	saving    sync.WaitGroup
	savingNow atomic.Int32
	saveMu    sync.Mutex // one save beside the requests at a time
	// stopping is set when Stop begins waiting for the saves; a save
	// after that is not counted in saving (see saveBeside).
	stopGate sync.Mutex
	stopping bool

	scheduled      bool
	onSchedule     func()
	demandFailures int       // consecutive failed on-demand fetches (scheduled)
	demandRetryAt  time.Time // no on-demand fetch before then

	wake     chan struct{}
	ctx      context.Context
	cancel   context.CancelFunc
	done     chan struct{}
	started  atomic.Bool
	stopOnce sync.Once
}

// NewManager validates opts and returns a manager that does nothing until
// Start: no network, no goroutine, no storage access, so that a config
// can be validated (caddy validate) or fail to load without side effects.
func NewManager(opts Options) (*Manager, error) {
	if opts.AppID == "" {
		return nil, errors.New("token manager: AppID is required")
	}
	if opts.Kind.Name == "" || opts.Kind.Noun == "" {
		return nil, errors.New("token manager: the credential's Kind (Name and Noun) is required")
	}
	if k := opts.Keys; k.Record == "" || k.Lock == "" || k.Ledger == "" || k.LedgerLock == "" {
		return nil, errors.New("token manager: the storage Keys are required")
	}
	settings, err := withDefaults(opts.Settings)
	if err != nil {
		return nil, fmt.Errorf("token manager: %w", err)
	}
	if opts.Clock == nil {
		opts.Clock = systemClock{}
	}
	ctx, cancel := context.WithCancel(context.Background())
	m := &Manager{
		appID:      opts.AppID,
		kind:       opts.Kind,
		keys:       opts.Keys,
		clock:      opts.Clock,
		scheduled:  opts.Scheduled,
		onSchedule: opts.OnSchedule,
		epoch:      1,
		warned:     map[string]string{},
		wake:       make(chan struct{}, 1),
		ctx:        ctx,
		cancel:     cancel,
		done:       make(chan struct{}),
	}
	for i := range m.budgets {
		m.budgets[i] = rate.NewLimiter(rate.Every(settings.MinRefreshInterval), refreshBurst)
	}
	if !opts.Scheduled {
		// Early requests wait for the loop's first token.
		m.attempt = make(chan struct{})
	}
	m.settings.Store(settings)
	return m, nil
}

// Start begins the renewal loop, which fetches the first token at once (or
// adopts the stored one). Calls after the first do nothing.
func (m *Manager) Start() {
	if !m.started.CompareAndSwap(false, true) {
		return
	}
	if m.scheduled {
		close(m.done) // no loop to wait for
		return
	}
	go m.run()
}

// withDefaults checks s and fills in its zero values.
func withDefaults(s Settings) (*Settings, error) {
	if s.Fetcher == nil {
		return nil, errors.New("Fetcher is required")
	}
	if s.RefreshAhead < 0 || s.MinRefreshInterval < 0 || s.FetchTimeout < 0 || s.MinLifetime < 0 || s.LockWait < 0 || s.DailyRefreshLimit < 0 {
		return nil, errors.New("durations and limits must not be negative")
	}
	if s.RefreshAhead == 0 {
		s.RefreshAhead = DefaultRefreshAhead
	}
	if s.MinRefreshInterval == 0 {
		s.MinRefreshInterval = DefaultMinRefreshInterval
	}
	if s.FetchTimeout == 0 {
		s.FetchTimeout = DefaultFetchTimeout
	}
	if s.MinLifetime == 0 {
		s.MinLifetime = DefaultMinLifetime
	}
	if s.Logger == nil {
		s.Logger = zap.NewNop()
	}
	if s.LockWait == 0 {
		// The holder's whole work under the lock: it loads, fetches and
		// stores; with a daily cap, it updates the fleet's ledger before
		// fetching (lock, load, store).
		s.LockWait = s.FetchTimeout + 2*storeTimeout + time.Second
		if s.DailyRefreshLimit > 0 {
			s.LockWait += 3 * storeTimeout
		}
	}
	return &s, nil
}

// Reconfigure replaces the settings of a running manager, as when a Caddy
// config that keeps the app starts: the manager outlives the config that
// created it, so it must use the newest config's storage, logger, secret
// and timing, never those of a config being unloaded.
func (m *Manager) Reconfigure(s Settings) error {
	settings, err := withDefaults(s)
	if err != nil {
		return fmt.Errorf("token manager for %s: %w", m.appID, err)
	}
	m.settings.Store(settings)
	m.mu.Lock()
	for _, b := range m.budgets {
		b.SetLimitAt(m.clock.Now(), rate.Every(settings.MinRefreshInterval))
	}
	m.mu.Unlock()
	m.poke()
	return nil
}

// cfg returns the settings in force.
func (m *Manager) cfg() *Settings { return m.settings.Load() }

// Stop ends the renewal loop and waits for it. Requests still waiting for a
// first token are released.
func (m *Manager) Stop() {
	m.stopOnce.Do(func() {
		m.stopGate.Lock()
		m.stopping = true
		m.stopGate.Unlock()
		m.saving.Wait() // a fetched token is kept for the fleet before the manager goes
		m.cancel()
		if m.started.Load() {
			<-m.done
			if m.scheduled {
				m.log().Debug("token manager stopped") // one of many: a platform's accounts
			} else {
				m.log().Info("token manager stopped")
			}
		}
		m.mu.Lock()
		m.releaseWaitersLocked()
		m.mu.Unlock()
	})
}

// beginAttempt marks a token attempt under way, for requests without a
// valid token to wait on; call the returned function when it ends.
func (m *Manager) beginAttempt() (end func()) {
	m.mu.Lock()
	if m.attempt == nil {
		m.attempt = make(chan struct{})
	}
	attempt := m.attempt
	m.mu.Unlock()
	return func() {
		m.mu.Lock()
		if m.attempt == attempt {
			m.releaseWaitersLocked()
		}
		m.mu.Unlock()
	}
}

// releaseWaitersLocked wakes requests waiting for a token; m.mu is held.
func (m *Manager) releaseWaitersLocked() {
	if m.attempt != nil {
		close(m.attempt)
		m.attempt = nil
	}
}

// Token returns the current token. Without a valid one it waits for a
// fetch under way (such as the very first), at most FetchTimeout and a
// second (for the storage calls around the fetch), and
// otherwise fails at once with an error wrapping ErrNoToken (or the
// kind's ErrNone) and the last
// fetch error: callers are answered promptly rather than queued behind a
// failing token endpoint or a slow storage.
func (m *Manager) Token(ctx context.Context) (Token, error) {
	if t := m.current.Load(); t.ValidAt(m.clock.Now()) {
		return *t, nil
	}
	m.mu.Lock()
	attempt := m.attempt
	m.mu.Unlock()
	if attempt == nil && m.scheduled {
		return m.onDemand(ctx)
	}
	if attempt != nil {
		// A real timer: this bounds a client's wait, whatever the clock.
		patience := time.NewTimer(m.cfg().FetchTimeout + waitGrace)
		defer patience.Stop()
		select {
		case <-attempt:
		case <-patience.C:
			return Token{}, fmt.Errorf("%w for %s yet: it is still being fetched", m.kind.errNone(), m.appID)
		case <-ctx.Done():
			return Token{}, ctx.Err()
		}
	}
	if t := m.current.Load(); t.ValidAt(m.clock.Now()) {
		return *t, nil
	}
	m.mu.Lock()
	lastErr := m.lastErr
	m.mu.Unlock()
	if lastErr == nil {
		return Token{}, fmt.Errorf("%w for %s", m.kind.errNone(), m.appID)
	}
	return Token{}, fmt.Errorf("%w: %w", m.kind.errNone(), lastErr)
}
