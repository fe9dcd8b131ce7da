// Package token holds WeChat access_tokens: it fetches them, renews them
// before they expire and on demand when WeChat rejects one, and hands the
// current one to callers. It knows nothing of Caddy.
package token

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
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
)

const (
	// refreshBurst passive refreshes may happen back to back before
	// MinRefreshInterval applies: enough for a token knocked out twice in a
	// row by another system, too few to dent the daily quota.
	refreshBurst = 3
	// WeChat allows force_refresh on stable_token 20 times a day, 30 s apart.
	forceMinGap     = 30 * time.Second
	forceDailyLimit = 20
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
}

// ValidAt reports whether the token may still be used at now.
func (t *Token) ValidAt(now time.Time) bool {
	return t != nil && t.Value != "" && now.Before(t.ExpiresAt)
}

// Options configure a Manager. AppID, API and Fetcher are required.
type Options struct {
	AppID   string
	API     API
	Fetcher Fetcher
	// RefreshAhead is how long before expiry the token is renewed. For
	// tokens living less than twice as long, renewal happens at half-life.
	RefreshAhead time.Duration
	// MinRefreshInterval spaces passive refreshes (after a rejection) once
	// a small burst is used up.
	MinRefreshInterval time.Duration
	// FetchTimeout bounds one call to the token endpoint.
	FetchTimeout time.Duration
	// Store, if set, shares the token with the other instances using it:
	// a token found there is used instead of fetching, and renewals are
	// made by one instance at a time under the store's lock.
	Store Store
	// LockWait bounds the wait for another instance's renewal before
	// renewing alone (default 15 s).
	LockWait time.Duration
	// SecretID is SecretFingerprint of the AppSecret, kept with stored
	// tokens to detect instances configured with different secrets.
	SecretID string
	Logger   *zap.Logger
	Clock    Clock
}

// Manager holds the token of one app for one token API. It is safe for
// concurrent use. Only one fetch runs at a time: with the classic API every
// fetch invalidates the previous token, so concurrent fetches would knock
// each other's tokens out.
type Manager struct {
	appID   string
	api     API
	fetcher Fetcher
	timeout time.Duration
	clock   Clock
	logger  atomic.Pointer[zap.Logger]

	current atomic.Pointer[Token]
	flights singleflight.Group

	store    Store
	lockWait time.Duration
	storeKey string
	lockName string
	secretID string

	mu           sync.Mutex
	refreshAhead time.Duration
	limiter      *rate.Limiter
	forcedAt     []time.Time // force_refresh calls in the last 24 hours
	lastErr      error
	lastErrAt    time.Time
	counts       counts
	latency      latency
	retries      map[string]int
	fetchedHere  bool              // this instance fetched the current token (not adopted it)
	recent       []held            // the last tokens installed, newest last (see noteRejection)
	rejections   []rejection       // first rejections noticed, oldest first
	warned       map[string]string // kind -> text of the last one-time warning
	// attempt is closed when the fetch under way ends; it exists from
	// construction until the first fetch ends, so that early requests wait
	// for the first token instead of failing.
	attempt chan struct{}

	wake     chan struct{}
	ctx      context.Context
	cancel   context.CancelFunc
	done     chan struct{}
	stopOnce sync.Once
}

// NewManager validates opts and starts the renewal loop, which fetches the
// first token at once. Call Stop to end it.
func NewManager(opts Options) (*Manager, error) {
	if opts.AppID == "" {
		return nil, errors.New("token manager: AppID is required")
	}
	if _, err := ParseAPI(string(opts.API)); err != nil {
		return nil, fmt.Errorf("token manager: %w", err)
	}
	if opts.Fetcher == nil {
		return nil, errors.New("token manager: Fetcher is required")
	}
	if opts.RefreshAhead < 0 || opts.MinRefreshInterval < 0 || opts.FetchTimeout < 0 {
		return nil, errors.New("token manager: durations must not be negative")
	}
	opts = withDefaults(opts)
	ctx, cancel := context.WithCancel(context.Background())
	m := &Manager{
		appID:        opts.AppID,
		api:          opts.API,
		fetcher:      opts.Fetcher,
		timeout:      opts.FetchTimeout,
		clock:        opts.Clock,
		refreshAhead: opts.RefreshAhead,
		limiter:      rate.NewLimiter(rate.Every(opts.MinRefreshInterval), refreshBurst),
		attempt:      make(chan struct{}),
		warned:       map[string]string{},
		store:        opts.Store,
		lockWait:     opts.LockWait,
		secretID:     opts.SecretID,
		wake:         make(chan struct{}, 1),
		ctx:          ctx,
		cancel:       cancel,
		done:         make(chan struct{}),
	}
	m.storeKey, m.lockName = StoreKey(m.appID, m.api)
	m.logger.Store(opts.Logger)
	go m.run()
	return m, nil
}

func withDefaults(opts Options) Options {
	if opts.RefreshAhead == 0 {
		opts.RefreshAhead = DefaultRefreshAhead
	}
	if opts.MinRefreshInterval == 0 {
		opts.MinRefreshInterval = DefaultMinRefreshInterval
	}
	if opts.FetchTimeout == 0 {
		opts.FetchTimeout = DefaultFetchTimeout
	}
	if opts.Logger == nil {
		opts.Logger = zap.NewNop()
	}
	if opts.Clock == nil {
		opts.Clock = systemClock{}
	}
	if opts.LockWait == 0 {
		opts.LockWait = lockWait
	}
	return opts
}

// Tunables are the settings a running Manager takes from a newer config.
// Zero values mean the defaults.
type Tunables struct {
	RefreshAhead       time.Duration
	MinRefreshInterval time.Duration
	Logger             *zap.Logger
}

// Reconfigure applies t to a running manager, as after a Caddy config reload
// that kept the app: the manager outlives the config that created it, so it
// must log through the newest config's logger and follow its timing.
func (m *Manager) Reconfigure(t Tunables) {
	o := withDefaults(Options{RefreshAhead: t.RefreshAhead, MinRefreshInterval: t.MinRefreshInterval, Logger: t.Logger})
	m.logger.Store(o.Logger)
	m.mu.Lock()
	m.refreshAhead = o.RefreshAhead
	m.limiter.SetLimitAt(m.clock.Now(), rate.Every(o.MinRefreshInterval))
	m.mu.Unlock()
	m.poke()
}

// Stop ends the renewal loop and waits for it. Requests still waiting for a
// first token are released.
func (m *Manager) Stop() {
	m.stopOnce.Do(func() {
		m.cancel()
		<-m.done
		m.log().Info("token manager stopped")
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
// fetch under way (such as the very first) and otherwise fails at once
// with an error wrapping ErrNoToken and the last fetch error: callers are
// answered promptly rather than queued behind a failing token endpoint.
func (m *Manager) Token(ctx context.Context) (Token, error) {
	if t := m.current.Load(); t.ValidAt(m.clock.Now()) {
		return *t, nil
	}
	m.mu.Lock()
	attempt := m.attempt
	m.mu.Unlock()
	if attempt != nil {
		select {
		case <-attempt:
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
		return Token{}, fmt.Errorf("%w for %s", ErrNoToken, m.appID)
	}
	return Token{}, fmt.Errorf("%w: %w", ErrNoToken, lastErr)
}

// Refresh is called when WeChat rejected the token value rejected. If the
// current token was fetched since that rejection was first noticed, it is
// returned with no fetch: many requests failing at once with one token
// cause one refresh. Otherwise one fetch is made (shared by all concurrent
// callers) unless the rate limit forbids it (ErrRefreshLimited). With the
// stable API, a fetch that answers the rejected token again is followed by
// one force_refresh, within WeChat's limits for it.
func (m *Manager) Refresh(ctx context.Context, rejected string) (Token, error) {
	since := m.noteRejection(rejected)
	for range 2 {
		if t := m.current.Load(); m.replaces(t, rejected, since) {
			return *t, nil
		}
		var ran atomic.Bool
		tok, err := m.fly(ctx, func() (Token, error) {
			ran.Store(true)
			return m.replace(rejected, since, true, "rejected")
		})
		switch {
		case err != nil:
			return Token{}, err
		case ran.Load() && tok.Value == rejected:
			return Token{}, fmt.Errorf("WeChat still answers the rejected token for %s", m.appID)
		case ran.Load() || m.replaces(&tok, rejected, since):
			return tok, nil
		}
		// We joined a fetch that began before the rejection was noticed: its
		// token may have been dropped by whatever dropped the rejected one.
		// Go again, this time with our own fetch.
	}
	return Token{}, fmt.Errorf("no token for %s fetched since WeChat rejected one", m.appID)
}

// replaces reports whether t can stand in for the token rejected: valid,
// another token, and answering rejections noticed from since on (see
// noteRejection and held).
func (m *Manager) replaces(t *Token, rejected string, since time.Time) bool {
	if !t.ValidAt(m.clock.Now()) || t.Value == rejected {
		return false
	}
	from := t.FetchedAt
	m.mu.Lock()
	if i := m.heldIndex(t.Value); i >= 0 && m.recent[i].answersFrom.After(from) {
		from = m.recent[i].answersFrom
	}
	m.mu.Unlock()
	return !from.Before(since)
}

// held is a token this manager installed. It answers the rejections
// noticed before its fetch began, or, when a refresh after a rejection
// installed it (perhaps adopting another instance's token, fetched before
// this instance noticed), before that refresh began.
type held struct {
	value       string
	fetchedAt   time.Time
	answersFrom time.Time
}

// heldIndex finds token among the recent ones, or returns -1; m.mu is held.
func (m *Manager) heldIndex(token string) int {
	return slices.IndexFunc(m.recent, func(h held) bool { return h.value == token })
}

// Bounds of what noteRejection remembers: a request is in flight for
// seconds, a token lives for hours, so only the last few matter.
const (
	rememberedTokens     = 4
	rememberedRejections = 16
)

// rejection is the first time WeChat was seen to reject a token.
type rejection struct {
	token string
	at    time.Time
}

// noteRejection records that WeChat rejected token and returns since: the
// first time, after token was fetched, that a rejection of a token not
// already known bad was noticed. Whatever dropped token (another system
// fetching tokens, a secret reset) happened between its fetch and now, and
// may have dropped tokens fetched meanwhile too, such as a renewal that
// raced it; only tokens fetched since are surely newer. Taking the first
// such notice rather than this one keeps one refresh for all the requests
// failing from one event, whichever of its tokens they carried.
func (m *Manager) noteRejection(token string) (since time.Time) {
	now := m.clock.Now()
	m.mu.Lock()
	defer m.mu.Unlock()
	i := m.heldIndex(token)
	if i < 0 {
		// Older than every token remembered, or not one of ours at all (the
		// token endpoint takes reports from callers): any other valid token
		// replaces it, and it says nothing about the newer ones.
		return time.Time{}
	}
	if !slices.ContainsFunc(m.rejections, func(r rejection) bool { return r.token == token }) {
		if len(m.rejections) == rememberedRejections {
			m.rejections = slices.Delete(m.rejections, 0, 1)
		}
		m.rejections = append(m.rejections, rejection{token, now})
	}
	for _, r := range m.rejections {
		if !r.at.Before(m.recent[i].fetchedAt) {
			return r.at
		}
	}
	return now // not reached: this rejection is in the list
}

// RenewNow replaces the current token at once, as an operator asks through
// the admin API: through the same single flight and rate limit as
// rejections. With the stable API, which answers the current token until
// its last minutes, only force (force_refresh, within WeChat's limits)
// gets a new one; renewed reports whether a new token came of it.
func (m *Manager) RenewNow(ctx context.Context, force bool) (tok Token, renewed bool, err error) {
	var current string
	if t := m.current.Load(); t != nil {
		current = t.Value
	}
	asked := m.clock.Now()
	tok, err = m.fly(ctx, func() (Token, error) { return m.replace(current, asked, force, "admin request") })
	return tok, err == nil && tok.Value != current, err
}

// replace replaces the token rejected with one fetched since; it runs
// inside a flight. With the stable API, allowForce permits a force_refresh
// when the normal call answers the rejected token again.
func (m *Manager) replace(rejected string, since time.Time, allowForce bool, reason string) (Token, error) {
	now := m.clock.Now()
	// A flight that ended just before this one may have replaced it already.
	if t := m.current.Load(); m.replaces(t, rejected, since) {
		return *t, nil
	}
	m.mu.Lock()
	allowed := m.limiter.AllowN(now, 1)
	m.mu.Unlock()
	if !allowed {
		m.log().Warn("access_token rejected by WeChat, but refresh rate limit reached; passing the error on",
			zap.Duration("min_refresh_interval", m.minRefreshInterval()))
		return Token{}, fmt.Errorf("refresh token for %s: %w", m.appID, ErrRefreshLimited)
	}
	tok, err := m.obtain(false, reason, rejected)
	if err == nil && tok.Value != rejected {
		m.replacedOnDemand(tok.Value, now)
	}
	if err != nil || tok.Value != rejected || m.api != Stable || !allowForce {
		return tok, err
	}
	// stable_token answers the same token until its last minutes; only a
	// force_refresh replaces one that WeChat no longer accepts.
	if err := m.reserveForce(now); err != nil {
		m.log().Warn("stable_token answered the rejected token again and force_refresh is not allowed now", zap.Error(err))
		return tok, err
	}
	tok, err = m.obtain(true, reason+", forced", rejected)
	if err == nil && tok.Value != rejected {
		m.replacedOnDemand(tok.Value, now)
	}
	return tok, err
}

// replacedOnDemand counts a token replaced by replace, begun at began,
// and vouches for the new one (see held).
func (m *Manager) replacedOnDemand(token string, began time.Time) {
	m.mu.Lock()
	m.counts.renewedOnDemand++
	if i := m.heldIndex(token); i >= 0 && began.After(m.recent[i].answersFrom) {
		m.recent[i].answersFrom = began
	}
	m.mu.Unlock()
}

func (m *Manager) minRefreshInterval() time.Duration {
	m.mu.Lock()
	defer m.mu.Unlock()
	return time.Duration(float64(time.Second) / float64(m.limiter.Limit()))
}

// reserveForce records a force_refresh about to be made, or says why WeChat
// would refuse it.
func (m *Manager) reserveForce(now time.Time) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	recent := m.forcedAt[:0]
	for _, t := range m.forcedAt {
		if now.Sub(t) < 24*time.Hour {
			recent = append(recent, t)
		}
	}
	m.forcedAt = recent
	if n := len(recent); n > 0 && now.Sub(recent[n-1]) < forceMinGap {
		return fmt.Errorf("force_refresh for %s was used %s ago; WeChat allows one every %s", m.appID, now.Sub(recent[n-1]).Round(time.Second), forceMinGap)
	}
	if len(recent) >= forceDailyLimit {
		return fmt.Errorf("force_refresh for %s was used %d times in 24 hours, WeChat's daily limit", m.appID, len(recent))
	}
	m.forcedAt = append(m.forcedAt, now)
	return nil
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

// fetch calls the token endpoint once and installs the result. It runs
// inside obtain, inside a flight.
func (m *Manager) fetch(force bool, reason string) (Token, error) {
	ctx, cancel := context.WithTimeout(m.ctx, m.timeout)
	defer cancel()
	start := m.clock.Now()
	began := time.Now()
	fetched, err := m.fetcher.Fetch(ctx, force)
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
		m.log().Error("access_token fetch failed", fields...)
		return Token{}, err
	}
	tok := &Token{Value: fetched.Value, FetchedAt: start, ExpiresAt: start.Add(fetched.ExpiresIn)}
	unchanged := prev != nil && prev.Value == tok.Value
	if unchanged {
		tok.FetchedAt = prev.FetchedAt
	}
	m.install(tok, true)
	if unchanged {
		m.log().Debug("token endpoint answered the current token",
			zap.String("reason", reason), zap.Duration("expires_in", fetched.ExpiresIn))
	} else {
		m.log().Info("access_token obtained",
			zap.String("reason", reason), zap.Bool("force_refresh", force), zap.Duration("expires_in", fetched.ExpiresIn))
		m.poke()
	}
	return *tok, nil
}

func (m *Manager) log() *zap.Logger { return m.logger.Load() }

// install makes tok current; fetched says whether this instance fetched it
// (or adopted it from shared storage).
func (m *Manager) install(tok *Token, fetched bool) {
	m.current.Store(tok)
	m.mu.Lock()
	defer m.mu.Unlock()
	m.lastErr = nil
	m.fetchedHere = fetched
	if n := len(m.recent); n == 0 || m.recent[n-1].value != tok.Value {
		if n == rememberedTokens {
			m.recent = slices.Delete(m.recent, 0, 1)
		}
		m.recent = append(m.recent, held{tok.Value, tok.FetchedAt, tok.FetchedAt})
	}
	if fetched {
		m.counts.fetches++
	} else {
		m.counts.adopted++
	}
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
	if m.store != nil {
		// Without a stored token, early requests keep waiting, now for the
		// first fetch, which takes over the same attempt.
		if stored, ok := m.loadShared(); ok && stored.ValidAt(m.clock.Now()) {
			end := m.beginAttempt()
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
		due := m.clock.Now().Add(m.nextDelay(failures, outage, unchanged))
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
		tok, err := m.fly(m.ctx, func() (Token, error) { return m.obtain(false, reason, replacing) })
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
		wait := due.Sub(m.clock.Now())
		if wait <= 0 {
			return true
		}
		sleep := wait
		if m.store != nil {
			sleep = min(wait, syncPeriod(m.current.Load()))
		}
		select {
		case <-m.ctx.Done():
			return false
		case <-m.wake:
			return false
		case <-m.clock.After(sleep):
		}
		if sleep < wait && m.syncFromStore() {
			return false // another instance renewed: a new schedule
		}
	}
}

// nextDelay says how long the loop waits before its next fetch.
func (m *Manager) nextDelay(failures, outage int, unchanged bool) time.Duration {
	now := m.clock.Now()
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
	m.mu.Lock()
	ahead := m.refreshAhead
	m.mu.Unlock()
	ahead = min(ahead, cur.ExpiresAt.Sub(cur.FetchedAt)/2)
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
