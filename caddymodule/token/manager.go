// Package token holds WeChat access_tokens: it fetches them, renews them
// before they expire and on demand when WeChat rejects one, and hands the
// current one to callers. It knows nothing of Caddy.
package token

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
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

// Options configure a Manager. AppID, API and Fetcher are required.
type Options struct {
	AppID string
	API   API
	Clock Clock
	Settings
}

// Manager holds the token of one app for one token API. It is safe for
// concurrent use. Only one fetch runs at a time: with the classic API every
// fetch invalidates the previous token, so concurrent fetches would knock
// each other's tokens out.
type Manager struct {
	appID    string
	api      API
	clock    Clock
	settings atomic.Pointer[Settings]

	current atomic.Pointer[Token]
	flights singleflight.Group

	storeKey  string
	lockName  string
	ledgerKey string

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
	if !opts.API.known() {
		return nil, fmt.Errorf("token manager: unknown credential kind %q", opts.API)
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
		appID:   opts.AppID,
		api:     opts.API,
		clock:   opts.Clock,
		attempt: make(chan struct{}),
		epoch:   1,
		warned:  map[string]string{},
		wake:    make(chan struct{}, 1),
		ctx:     ctx,
		cancel:  cancel,
		done:    make(chan struct{}),
	}
	for i := range m.budgets {
		m.budgets[i] = rate.NewLimiter(rate.Every(settings.MinRefreshInterval), refreshBurst)
	}
	m.settings.Store(settings)
	m.storeKey, m.lockName = StoreKey(m.appID, m.api)
	m.ledgerKey = ledgerKey(m.appID, m.api)
	return m, nil
}

// Start begins the renewal loop, which fetches the first token at once (or
// adopts the stored one). Calls after the first do nothing.
func (m *Manager) Start() {
	if m.started.CompareAndSwap(false, true) {
		go m.run()
	}
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
		// The holder loads, fetches and stores under the lock.
		s.LockWait = s.FetchTimeout + 2*storeTimeout + time.Second
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
		m.cancel()
		if m.started.Load() {
			<-m.done
			m.log().Info("token manager stopped")
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
// otherwise fails at once with an error wrapping ErrNoToken (ErrNoTicket) and the last
// fetch error: callers are answered promptly rather than queued behind a
// failing token endpoint or a slow storage.
func (m *Manager) Token(ctx context.Context) (Token, error) {
	if t := m.current.Load(); t.ValidAt(m.clock.Now()) {
		return *t, nil
	}
	m.mu.Lock()
	attempt := m.attempt
	m.mu.Unlock()
	if attempt != nil {
		// A real timer: this bounds a client's wait, whatever the clock.
		patience := time.NewTimer(m.cfg().FetchTimeout + waitGrace)
		defer patience.Stop()
		select {
		case <-attempt:
		case <-patience.C:
			return Token{}, fmt.Errorf("%w for %s yet: it is still being fetched", errNone(m.api), m.appID)
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
		return Token{}, fmt.Errorf("%w for %s", errNone(m.api), m.appID)
	}
	return Token{}, fmt.Errorf("%w: %w", errNone(m.api), lastErr)
}

// fly runs fn unless a fetch is under way already, in which case its result
// is shared. ctx only bounds the wait: the fetch itself belongs to the
// manager, so one impatient caller cannot cancel it for the others.
func (m *Manager) fly(ctx context.Context, fn func() (Token, error)) (Token, error) {
	ch := m.flights.DoChan("fetch", func() (any, error) { return fn() })
	select {
	case <-ctx.Done():
		return Token{}, ctx.Err()
	case r := <-ch:
		tok, _ := r.Val.(Token)
		return tok, r.Err
	}
}

// fetch calls the token endpoint once and installs the result as a token
// of epoch. It runs inside obtain, inside a flight.
func (m *Manager) fetch(force bool, reason string, epoch uint64) (Token, error) {
	settings := m.cfg()
	ctx, cancel := context.WithTimeout(m.ctx, settings.FetchTimeout)
	defer cancel()
	start := m.clock.Now()
	began := time.Now()
	fetched, err := settings.Fetcher.Fetch(ctx, force)
	if err == nil && fetched.ExpiresIn < settings.MinLifetime {
		err = fmt.Errorf("answer's expires_in is %s, under the %s accepted (min_token_lifetime): treated as an upstream error",
			fetched.ExpiresIn, settings.MinLifetime)
	}
	m.mu.Lock()
	m.latency.observe(time.Since(began))
	m.mu.Unlock()
	prev := m.current.Load()
	if err != nil {
		err = fmt.Errorf("fetch %s token for %s: %w", m.api, m.appID, err)
		m.mu.Lock()
		m.lastErr, m.lastErrAt = err, m.clock.Now()
		m.counts.fetchFailures++
		m.mu.Unlock()
		fields := []zap.Field{zap.String("reason", reason), zap.Bool("force_refresh", force), zap.Error(err)}
		var apiErr *APIError
		if errors.As(err, &apiErr) {
			fields = append(fields, zap.Int64("errcode", apiErr.Code))
		}
		if prev.ValidAt(start) {
			fields = append(fields, zap.Duration("current_token_valid_for", prev.ExpiresAt.Sub(start).Round(time.Second)))
		} else {
			fields = append(fields, zap.Bool("requests_failing", true))
		}
		m.log().Error(m.api.Noun()+" fetch failed", fields...)
		return Token{}, err
	}
	tok := &Token{Value: fetched.Value, FetchedAt: start, ExpiresAt: start.Add(fetched.ExpiresIn), epoch: epoch}
	unchanged := prev != nil && prev.Value == tok.Value
	if unchanged {
		tok.FetchedAt = prev.FetchedAt
	}
	tok = m.install(tok, true)
	if unchanged {
		m.log().Debug("token endpoint answered the current token",
			zap.String("reason", reason), zap.Duration("expires_in", fetched.ExpiresIn))
	} else {
		m.log().Info(m.api.Noun()+" obtained",
			zap.String("reason", reason), zap.Bool("force_refresh", force), zap.Duration("expires_in", fetched.ExpiresIn))
		m.poke()
	}
	return *tok, nil
}

func (m *Manager) log() *zap.Logger { return m.cfg().Logger }

// install makes tok current and returns what was installed; fetched says
// whether this instance fetched it (or adopted it from shared storage). The
// current token answered again keeps its place in the refresh rules.
func (m *Manager) install(tok *Token, fetched bool) *Token {
	m.mu.Lock()
	defer m.mu.Unlock()
	if prev := m.current.Load(); prev != nil && prev.Value == tok.Value {
		again := *tok
		again.epoch, again.confirmed = max(prev.epoch, tok.epoch), prev.confirmed || tok.confirmed
		tok = &again
	}
	m.current.Store(tok)
	m.lastErr = nil
	m.fetchedHere = fetched
	m.rememberLocked(tok)
	if fetched {
		m.counts.fetches++
	} else {
		m.counts.adopted++
	}
	return tok
}

// poke makes the renewal loop recompute its schedule.
func (m *Manager) poke() {
	select {
	case m.wake <- struct{}{}:
	default:
	}
}

// run is the proactive renewal loop.
func (m *Manager) run() {
	defer close(m.done)
	if m.cfg().Store != nil {
		// Without a stored token, early requests keep waiting, now for the
		// first fetch, which takes over the same attempt.
		if stored, ok := m.loadShared(); ok && stored.ValidAt(m.clock.Now()) {
			end := m.beginAttempt()
			stored.epoch = m.epochNow()
			m.adopt(stored, "stored earlier by this or another instance")
			end()
		}
	}
	failures := 0      // consecutive failed attempts
	outage := 0        // of which made while no valid token was held
	unchanged := false // the last renewal got the current token back
	for {
		// The attempt is due at a fixed time: the re-reads of the store
		// while waiting must not restart the wait, or a backoff longer
		// than the re-read period would never end.
		scheduledFor := m.current.Load()
		// One reading of the clock: with two, a renewal could be scheduled
		// later than its token says by however long passed between them.
		now := m.clock.Now()
		due := now.Add(m.nextDelay(now, failures, outage, unchanged))
		m.log().Debug("next token attempt scheduled", zap.Time("at", due))
		if !m.sleepUntil(due) {
			if m.ctx.Err() != nil {
				return
			}
			continue // woken: a new token or new settings; reschedule
		}
		if m.ctx.Err() != nil {
			return
		}
		if m.current.Load() != scheduledFor {
			// A refresh installed a token just as this attempt fell due (its
			// wake-up is still pending): renewing it now would waste a fetch.
			continue
		}
		before := m.current.Load()
		hadToken := before.ValidAt(m.clock.Now())
		reason, replacing := "renewal", ""
		if before == nil {
			reason = "first token"
		} else {
			replacing = before.Value
		}
		tok, err := m.fly(m.ctx, func() (Token, error) {
			return m.obtain(job{reason: reason, replacing: replacing, epoch: m.epochNow(), renewal: true})
		})
		switch {
		case err != nil:
			failures++
			if hadToken {
				outage = 0
			} else {
				outage++
			}
			unchanged = false
		default:
			failures, outage = 0, 0
			unchanged = before != nil && tok.Value == before.Value
		}
	}
}

// sleepUntil waits until due, re-reading the shared store meanwhile. It
// returns false when woken early: by Stop, by a new token (fetched on
// demand or adopted from the store) or by new settings.
func (m *Manager) sleepUntil(due time.Time) bool {
	for {
		now := m.clock.Now()
		if !now.Before(due) {
			return true
		}
		wake := due
		if m.cfg().Store != nil {
			if reread := now.Add(syncPeriod(m.current.Load())); reread.Before(due) {
				wake = reread
			}
		}
		select {
		case <-m.ctx.Done():
			return false
		case <-m.wake:
			return false
		case <-m.clock.Until(wake):
		}
		if wake.Before(due) && m.syncFromStore() {
			return false // another instance renewed: a new schedule
		}
	}
}

// nextDelay says how long after now the loop makes its next fetch.
func (m *Manager) nextDelay(now time.Time, failures, outage int, unchanged bool) time.Duration {
	cur := m.current.Load()
	if !cur.ValidAt(now) {
		// Nothing can be served: try at once when the token has just run
		// out (whatever failed while it was valid), then back off afresh,
		// retrying a transient failure at least every noTokenMaxBackoff.
		if outage == 0 {
			return 0
		}
		m.mu.Lock()
		lastErr := m.lastErr
		m.mu.Unlock()
		return backoff(outage, min(maxBackoff(lastErr), noTokenMaxBackoff(lastErr)))
	}
	remaining := cur.ExpiresAt.Sub(now)
	ahead := min(m.cfg().RefreshAhead, cur.ExpiresAt.Sub(cur.FetchedAt)/2)
	renewIn := cur.ExpiresAt.Add(-ahead).Sub(now)
	// Retries never come before the renewal time: a failure or unchanged
	// answer may come from another caller's fetch, not from a renewal.
	switch {
	case failures > 0:
		// Retry while the token lasts, more often as its end nears.
		return max(renewIn, min(backoff(failures, maxBackoff(nil)), max(remaining/2, minRetryDelay)))
	case unchanged:
		// The stable API hands out the next token only in the last minutes
		// of the current one: ask again later, not in a loop.
		return max(renewIn, min(max(remaining/4, minRetryDelay), unchangedMaxDelay))
	}
	return renewIn
}

// maxBackoff is longer for errors that only a person can fix, so a wrong
// secret does not spend the day's quota.
func maxBackoff(err error) time.Duration {
	var apiErr *APIError
	if errors.As(err, &apiErr) {
		switch apiErr.Code {
		case 40001, 40013, 40125, 40164, 40243, 41002, 41004, 45009, 61004, 89501, 89503, 89506, 89507:
			return 5 * time.Minute
		}
	}
	return time.Minute
}

// noTokenMaxBackoff bounds the wait between attempts while no valid token
// is held, when every request is refused: a transient failure (busy, a 5xx,
// a network error) is retried within seconds of WeChat's recovery, while
// errors that need a person (a wrong secret, the IP whitelist, the quota)
// keep maxBackoff's minutes.
func noTokenMaxBackoff(err error) time.Duration {
	if maxBackoff(err) > time.Minute {
		return maxBackoff(err)
	}
	return 10 * time.Second
}

// backoff doubles from one second up to limit, with ±20 % jitter so that
// many instances do not retry in step.
func backoff(failures int, limit time.Duration) time.Duration {
	d := min(time.Second<<min(failures-1, 16), limit)
	return time.Duration(float64(d) * (0.8 + 0.4*rand.Float64()))
}
