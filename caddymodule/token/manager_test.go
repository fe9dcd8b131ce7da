package token

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeFetcher answers from a script and counts calls. A non-nil gate makes
// every Fetch wait until the gate is closed.
type fakeFetcher struct {
	mu     sync.Mutex
	calls  []bool // force flag of each call
	answer func(n int, force bool) (Fetched, error)
	gate   chan struct{}
}

func (f *fakeFetcher) Fetch(ctx context.Context, force bool) (Fetched, error) {
	f.mu.Lock()
	f.calls = append(f.calls, force)
	n := len(f.calls)
	gate, answer := f.gate, f.answer
	f.mu.Unlock()
	if gate != nil {
		select {
		case <-gate:
		case <-ctx.Done():
			return Fetched{}, ctx.Err()
		}
	}
	return answer(n, force)
}

func (f *fakeFetcher) count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.calls)
}

func (f *fakeFetcher) forced() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	for _, force := range f.calls {
		if force {
			n++
		}
	}
	return n
}

func (f *fakeFetcher) set(answer func(n int, force bool) (Fetched, error)) {
	f.mu.Lock()
	f.answer = answer
	f.mu.Unlock()
}

// sequential hands out tok1, tok2, ... each valid for ttl.
func sequential(ttl time.Duration) func(int, bool) (Fetched, error) {
	return func(n int, _ bool) (Fetched, error) {
		return Fetched{Value: fmt.Sprintf("tok%d", n), ExpiresIn: ttl}, nil
	}
}

func startManager(t *testing.T, api Kind, f *fakeFetcher, clock *fakeClock, tweak func(*Options)) *Manager {
	t.Helper()
	opts := Options{AppID: "wxtest", Kind: api, Keys: testKeys("wxtest", api), Clock: clock, Settings: Settings{Fetcher: f}}
	if tweak != nil {
		tweak(&opts)
	}
	m, err := NewManager(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m.Stop)
	m.Start()
	return m
}

func mustToken(t *testing.T, m *Manager) Token {
	t.Helper()
	tok, err := m.Token(context.Background())
	if err != nil {
		t.Fatalf("Token: %v", err)
	}
	return tok
}

// waitScheduled waits until the loop has gone to sleep until due.
func waitScheduled(t *testing.T, c *fakeClock, due time.Time) {
	t.Helper()
	eventually(t, "renewal scheduled for "+due.String(), func() bool {
		next, _ := c.Next()
		return next.Equal(due)
	})
}

func TestFirstRequestWaitsForFirstToken(t *testing.T) {
	clock := newFakeClock()
	f := &fakeFetcher{answer: sequential(7200 * time.Second), gate: make(chan struct{})}
	m := startManager(t, Classic, f, clock, nil)
	got := make(chan Token)
	go func() {
		tok, _ := m.Token(context.Background())
		got <- tok
	}()
	eventually(t, "first fetch to start", func() bool { return f.count() == 1 })
	close(f.gate)
	if tok := <-got; tok.Value != "tok1" {
		t.Fatalf("got %q, want tok1", tok.Value)
	}
}

func TestProactiveRenewalBeforeExpiry(t *testing.T) {
	clock := newFakeClock()
	f := &fakeFetcher{answer: sequential(7200 * time.Second)}
	m := startManager(t, Classic, f, clock, nil)
	start := clock.Now()
	if tok := mustToken(t, m); tok.Value != "tok1" {
		t.Fatalf("first token %q", tok.Value)
	}
	renewAt := start.Add(7200*time.Second - DefaultRefreshAhead)
	waitScheduled(t, clock, renewAt)

	clock.AdvanceTo(renewAt.Add(-time.Second))
	if n := f.count(); n != 1 {
		t.Fatalf("fetched %d times before the renewal time", n)
	}
	clock.AdvanceTo(renewAt)
	eventually(t, "renewal", func() bool { return f.count() == 2 })
	if tok := mustToken(t, m); tok.Value != "tok2" {
		t.Fatalf("after renewal token is %q", tok.Value)
	}
	waitScheduled(t, clock, renewAt.Add(7200*time.Second-DefaultRefreshAhead))
}

func TestShortLifetimeRenewsAtHalfLife(t *testing.T) {
	clock := newFakeClock()
	f := &fakeFetcher{answer: sequential(20 * time.Second)}
	m := startManager(t, Classic, f, clock, nil)
	start := clock.Now()
	mustToken(t, m)
	for i := 1; i <= 5; i++ {
		due := start.Add(time.Duration(i) * 10 * time.Second)
		waitScheduled(t, clock, due)
		clock.AdvanceTo(due)
		eventually(t, "renewal", func() bool { return f.count() == i+1 })
	}
}

// The stable API answers the current token until its last minutes: the
// loop must poll with growing urgency, never spin.
func TestStableSameTokenDoesNotSpin(t *testing.T) {
	clock := newFakeClock()
	var expires time.Time
	// WeChat's window is the last 5 minutes; our clock runs 40 s ahead.
	window := DefaultRefreshAhead - 40*time.Second
	f := &fakeFetcher{}
	f.set(func(n int, _ bool) (Fetched, error) {
		now := clock.Now()
		if n > 1 && expires.Sub(now) > window {
			return Fetched{Value: "tok1", ExpiresIn: expires.Sub(now).Truncate(time.Second)}, nil
		}
		expires = now.Add(7200 * time.Second)
		return Fetched{Value: fmt.Sprintf("tok%d", n), ExpiresIn: 7200 * time.Second}, nil
	})
	m := startManager(t, Stable, f, clock, nil)
	mustToken(t, m)
	for f.count() < 20 {
		due, _ := clock.Next()
		if !due.After(clock.Now()) {
			// The loop has not gone to sleep yet; let it.
			eventually(t, "loop to sleep", func() bool { d, _ := clock.Next(); return d.After(clock.Now()) })
			continue
		}
		if gap := due.Sub(clock.Now()); gap < minRetryDelay {
			t.Fatalf("loop asked again after %s", gap)
		}
		before := f.count()
		clock.AdvanceTo(due)
		eventually(t, "fetch", func() bool { return f.count() == before+1 })
		if tok := mustToken(t, m); tok.Value != "tok1" {
			// Renewed inside the window: done.
			if n := f.count(); n > 4 {
				t.Fatalf("took %d fetches to get the next stable token", n)
			}
			return
		}
	}
	t.Fatal("never renewed")
}

func TestFetchFailureKeepsTokenThenAnswersPromptly(t *testing.T) {
	clock := newFakeClock()
	f := &fakeFetcher{answer: sequential(100 * time.Second)}
	m := startManager(t, Classic, f, clock, func(o *Options) { o.RefreshAhead = 30 * time.Second })
	start := clock.Now()
	mustToken(t, m)
	f.set(func(int, bool) (Fetched, error) { return Fetched{}, &APIError{Code: -1, Msg: "system error"} })

	renewAt := start.Add(70 * time.Second)
	waitScheduled(t, clock, renewAt)
	clock.AdvanceTo(renewAt)
	eventually(t, "failed renewal", func() bool { return f.count() == 2 })
	// Retries follow with backoff while the old token keeps serving.
	for f.count() < 8 {
		eventually(t, "retry scheduled", func() bool { d, _ := clock.Next(); return d.After(clock.Now()) })
		due, _ := clock.Next()
		if due.After(start.Add(100 * time.Second)) {
			break
		}
		if tok := mustToken(t, m); tok.Value != "tok1" {
			t.Fatalf("token while renewal fails: %q", tok.Value)
		}
		n := f.count()
		clock.AdvanceTo(due)
		eventually(t, "retry", func() bool { return f.count() == n+1 })
	}
	if n := f.count(); n > 12 {
		t.Fatalf("%d fetches in 30 s of outage", n)
	}
	clock.AdvanceTo(start.Add(100 * time.Second))
	_, err := m.Token(context.Background())
	if !errors.Is(err, ErrNoToken) {
		t.Fatalf("after expiry: err = %v, want ErrNoToken", err)
	}
	var apiErr *APIError
	if !errors.As(err, &apiErr) || apiErr.Code != -1 {
		t.Fatalf("error does not carry the WeChat errcode: %v", err)
	}

	f.set(sequential(100 * time.Second))
	eventually(t, "retry scheduled", func() bool { d, _ := clock.Next(); return d.After(clock.Now()) })
	due, _ := clock.Next()
	clock.AdvanceTo(due)
	eventually(t, "recovery", func() bool {
		_, err := m.Token(context.Background())
		return err == nil
	})
}

// A wrong secret costs a bounded number of calls, yet is retried every few
// minutes, so that the token is back soon after a person fixes it. With
// shared storage too, which the loop re-reads every minute while it waits.
func TestBadSecretBacksOffUpToMinutes(t *testing.T) {
	for _, shared := range []bool{false, true} {
		t.Run(fmt.Sprintf("shared=%t", shared), func(t *testing.T) {
			clock := newFakeClock()
			f := &fakeFetcher{answer: func(int, bool) (Fetched, error) {
				return Fetched{}, &APIError{Code: 40125, Msg: "invalid appsecret"}
			}}
			m := startManager(t, Classic, f, clock, func(o *Options) {
				if shared {
					sharing(newMemStore(), nil)(o)
				}
			})
			_, err := m.Token(context.Background())
			if !errors.Is(err, ErrNoToken) || !strings.Contains(err.Error(), "invalid AppSecret") {
				t.Fatalf("err = %v", err)
			}
			stepLoop(t, clock, clock.Now().Add(time.Hour), func() bool { return false })
			if n := f.count(); n > 30 || n < 12 {
				t.Fatalf("%d fetches in an hour with a wrong secret, want 12 to 30 (every 5 min ±20 %% after the first few)", n)
			}
		})
	}
}

// stepLoop advances the fake clock to each time the renewal loop means to
// wake, waiting for it to go back to sleep each time, until done holds or
// the clock reaches end. It returns the clock's time then.
func stepLoop(t *testing.T, clock *fakeClock, end time.Time, done func() bool) time.Time {
	t.Helper()
	eventually(t, "loop asleep", func() bool { due, _ := clock.Next(); return due.After(clock.Now()) })
	for clock.Now().Before(end) {
		due, calls := clock.Next()
		clock.AdvanceTo(due)
		eventually(t, "loop asleep again", func() bool { due, c := clock.Next(); return c > calls && due.After(clock.Now()) })
		if done() {
			break
		}
	}
	return clock.Now()
}

func TestRefreshManyRejectionsOneFetch(t *testing.T) {
	clock := newFakeClock()
	f := &fakeFetcher{answer: sequential(7200 * time.Second)}
	m := startManager(t, Classic, f, clock, nil)
	old := mustToken(t, m)

	gate := make(chan struct{})
	f.mu.Lock()
	f.gate = gate
	f.mu.Unlock()
	var wg sync.WaitGroup
	results := make(chan string, 100)
	for range 100 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tok, err := m.Refresh(context.Background(), Rejection{Token: old})
			if err != nil {
				results <- "error: " + err.Error()
				return
			}
			results <- tok.Value
		}()
	}
	eventually(t, "refresh fetch", func() bool { return f.count() == 2 })
	close(gate)
	wg.Wait()
	close(results)
	for r := range results {
		if r != "tok2" {
			t.Fatalf("a caller got %q", r)
		}
	}
	if n := f.count(); n != 2 {
		t.Fatalf("%d fetches, want 2 (first + one refresh)", n)
	}
	// A late rejection of the old token fetches nothing more.
	if tok, err := m.Refresh(context.Background(), Rejection{Token: old}); err != nil || tok.Value != "tok2" {
		t.Fatalf("late refresh: %q, %v", tok.Value, err)
	}
	if n := f.count(); n != 2 {
		t.Fatalf("late rejection fetched: %d fetches", n)
	}
}

// WeChat drops every token (another system fetched some, or the secret was
// reset) just as a renewal lands: requests still carrying the previous
// token come back rejected after the renewed token was fetched. That token
// may be dropped too, so it is not trusted for the replay: one fetch, and
// then the stragglers of either token get the new one with no more fetches.
func TestRejectionRacingRenewalFetchesOnce(t *testing.T) {
	for _, joined := range []bool{false, true} {
		t.Run(fmt.Sprintf("rejection during the renewal fetch=%t", joined), func(t *testing.T) {
			clock := newFakeClock()
			f := &fakeFetcher{answer: sequential(100 * time.Second)}
			m := startManager(t, Classic, f, clock, func(o *Options) { o.RefreshAhead = 30 * time.Second })
			start := clock.Now()
			mustToken(t, m)
			waitScheduled(t, clock, start.Add(70*time.Second))
			gate := make(chan struct{})
			if joined {
				f.mu.Lock()
				f.gate = gate
				f.mu.Unlock()
			}
			clock.AdvanceTo(start.Add(70 * time.Second))
			eventually(t, "renewal fetch", func() bool { return f.count() == 2 })
			if !joined {
				eventually(t, "tok2 installed", func() bool { return mustToken(t, m).Value != "tok1" })
			}

			clock.Advance(10 * time.Millisecond)
			refreshed := make(chan string, 1)
			go func() {
				tok, err := m.Refresh(context.Background(), Rejection{Token: m.Known("tok1")})
				if err != nil {
					refreshed <- err.Error()
					return
				}
				refreshed <- tok.Value
			}()
			close(gate) // the renewal ends, before or after the refresh joined it
			if got := <-refreshed; got != "tok3" {
				t.Fatalf("refresh after tok1 was rejected gave %q, want tok3 (tok2 was fetched before the rejection)", got)
			}
			// A token not among ours (a caller's report) says nothing of ours.
			for _, rejected := range []string{"tok2", "tok1", "not-ours", "tok2"} {
				clock.Advance(10 * time.Millisecond)
				if tok, err := m.Refresh(context.Background(), Rejection{Token: m.Known(rejected)}); err != nil || tok.Value != "tok3" {
					t.Fatalf("late rejection of %s: %q, %v", rejected, tok.Value, err)
				}
			}
			if n := f.count(); n != 3 {
				t.Fatalf("%d fetches, want 3 (first, renewal, one refresh)", n)
			}
		})
	}
}

func TestRefreshRateLimited(t *testing.T) {
	clock := newFakeClock()
	f := &fakeFetcher{answer: sequential(7200 * time.Second)}
	m := startManager(t, Classic, f, clock, func(o *Options) { o.MinRefreshInterval = 10 * time.Second })
	tok := mustToken(t, m)
	for i := range refreshBurst {
		next, err := m.Refresh(context.Background(), Rejection{Token: tok})
		if err != nil {
			t.Fatalf("refresh %d: %v", i, err)
		}
		tok = next
	}
	if _, err := m.Refresh(context.Background(), Rejection{Token: tok}); !errors.Is(err, ErrRefreshLimited) {
		t.Fatalf("refresh beyond the burst: err = %v", err)
	}
	fetches := f.count()
	clock.Advance(10 * time.Second)
	if _, err := m.Refresh(context.Background(), Rejection{Token: tok}); err != nil {
		t.Fatalf("refresh after the interval: %v", err)
	}
	if n := f.count(); n != fetches+1 {
		t.Fatalf("fetches %d, want %d", n, fetches+1)
	}
}

// stableFetcher is WeChat's stable_token: the same token until forced.
func stableFetcher() *fakeFetcher {
	current := "stable1"
	f := &fakeFetcher{}
	f.set(func(n int, force bool) (Fetched, error) {
		if force {
			current = fmt.Sprintf("forced%d", n)
		}
		return Fetched{Value: current, ExpiresIn: 7200 * time.Second}, nil
	})
	return f
}

// A rejected stable token that normal mode hands back is current for
// WeChat: it is replayed, and only a rejection of a request sent after that
// spends a force_refresh. Late reports of requests sent before cost nothing.
func TestStableForceNeedsConfirmedRejection(t *testing.T) {
	clock := newFakeClock()
	f := stableFetcher()
	m := startManager(t, Stable, f, clock, func(o *Options) { o.MinRefreshInterval = time.Second })
	tok := mustToken(t, m)
	clock.Advance(time.Second)
	again, err := m.Refresh(context.Background(), Rejection{Token: tok})
	if err != nil || again.Value != tok.Value {
		t.Fatalf("first rejection: %q, %v; want the same token back for the replay", again.Value, err)
	}
	if n, forced := f.count(), f.forced(); n != 2 || forced != 0 {
		t.Fatalf("%d calls, %d forced; want one normal call and no force", n, forced)
	}
	// Another request sent before WeChat confirmed the token: nothing new.
	clock.Advance(time.Second)
	if late, err := m.Refresh(context.Background(), Rejection{Token: tok}); err != nil || late.Value != tok.Value {
		t.Fatalf("late report: %q, %v", late.Value, err)
	}
	// A caller's report, even of the confirmed token, never forces.
	if got, err := m.Refresh(context.Background(), Rejection{Token: m.Known(tok.Value), Source: FromCaller}); err != nil || got.Value != tok.Value {
		t.Fatalf("caller's report: %q, %v", got.Value, err)
	}
	if got, err := m.Refresh(context.Background(), Rejection{Token: again, Source: FromCaller}); err != nil || got.Value != tok.Value {
		t.Fatalf("caller's report of the confirmed token: %q, %v", got.Value, err)
	}
	if forced := f.forced(); forced != 0 {
		t.Fatalf("after reports sent before the confirmation and callers' reports: %d forced", forced)
	}
	// A request sent with the confirmed token is rejected too: force.
	next, err := m.Refresh(context.Background(), Rejection{Token: mustToken(t, m)})
	if err != nil || next.Value == tok.Value {
		t.Fatalf("confirmed rejection: %q, %v", next.Value, err)
	}
	if n := f.forced(); n != 1 {
		t.Fatalf("%d force_refresh calls, want 1", n)
	}
	st := m.Status()
	if st.AutomaticForces == nil || *st.AutomaticForces != autoForceLimit-1 || *st.OperatorForces != forceDailyLimit-1 {
		t.Fatalf("status budget after one force: %+v", st.Budget)
	}
}

// confirmAndForce makes m spend one automatic force_refresh.
func confirmAndForce(t *testing.T, m *Manager, clock *fakeClock) error {
	t.Helper()
	tok := mustToken(t, m)
	clock.Advance(time.Millisecond)
	confirmed, err := m.Refresh(context.Background(), Rejection{Token: tok})
	if err != nil {
		t.Fatalf("confirming rejection: %v", err)
	}
	clock.Advance(time.Millisecond)
	_, err = m.Refresh(context.Background(), Rejection{Token: confirmed})
	return err
}

// The force_refresh ledger is the fleet's, in the store: it survives a
// restart, keeps WeChat's 30 s gap, and leaves half the day to operators.
func TestForceLedgerIsSharedAndKeepsHalfForOperators(t *testing.T) {
	clock := newFakeClock()
	store := newMemStore()
	f := stableFetcher()
	shared := func(o *Options) { sharing(store, nil)(o); o.MinRefreshInterval = time.Millisecond }
	m := startManager(t, Stable, f, clock, shared)
	if err := confirmAndForce(t, m, clock); err != nil {
		t.Fatal(err)
	}
	clock.Advance(time.Second)
	if err := confirmAndForce(t, m, clock); !errors.Is(err, ErrForceLimited) || !strings.Contains(err.Error(), "30s") {
		t.Fatalf("a second force within 30 s: %v", err)
	}
	for i := 2; i <= autoForceLimit; i++ {
		clock.Advance(forceMinGap)
		if err := confirmAndForce(t, m, clock); err != nil {
			t.Fatalf("automatic force %d: %v", i, err)
		}
	}
	m.Stop()

	// A restarted instance reads the same ledger: the automatic share is spent.
	again := startManager(t, Stable, f, clock, shared)
	clock.Advance(forceMinGap)
	forced := f.forced()
	if err := confirmAndForce(t, again, clock); !errors.Is(err, ErrForceLimited) || !strings.Contains(err.Error(), "kept for operators") {
		t.Fatalf("automatic force beyond its share after a restart: %v", err)
	}
	if f.forced() != forced {
		t.Fatal("a force_refresh was made beyond the automatic share")
	}
	// Operators still have the other half.
	for i := range forceDailyLimit - autoForceLimit {
		clock.Advance(forceMinGap)
		if _, renewed, err := again.RenewNow(context.Background(), true); err != nil || !renewed {
			t.Fatalf("operator force %d: renewed %t, %v", i, renewed, err)
		}
	}
	clock.Advance(forceMinGap)
	if _, _, err := again.RenewNow(context.Background(), true); !errors.Is(err, ErrForceLimited) {
		t.Fatalf("force beyond WeChat's 20 a day: %v", err)
	}
	if st := again.Status(); *st.OperatorForces != 0 || *st.AutomaticForces != 0 {
		t.Fatalf("status after the day's forces: %+v", st.Budget)
	}
	// A day later the ledger is fresh.
	clock.Advance(24 * time.Hour)
	eventually(t, "a token a day later", func() bool { _, err := again.Token(context.Background()); return err == nil })
	if err := confirmAndForce(t, again, clock); err != nil {
		t.Fatalf("a day later: %v", err)
	}
}

// Each source of refreshes has its own budget: a token-endpoint caller
// that spends its own leaves the proxy's and the admin's untouched.
func TestSourcesHaveTheirOwnBudgets(t *testing.T) {
	clock := newFakeClock()
	f := &fakeFetcher{answer: sequential(7200 * time.Second)}
	m := startManager(t, Classic, f, clock, func(o *Options) { o.MinRefreshInterval = time.Hour })
	tok := mustToken(t, m)
	for range refreshBurst {
		next, err := m.Refresh(context.Background(), Rejection{Token: tok, Source: FromCaller})
		if err != nil {
			t.Fatal(err)
		}
		tok = next
	}
	if _, err := m.Refresh(context.Background(), Rejection{Token: tok, Source: FromCaller}); !errors.Is(err, ErrRefreshLimited) {
		t.Fatalf("caller beyond its budget: %v", err)
	}
	next, err := m.Refresh(context.Background(), Rejection{Token: tok, Source: FromProxy})
	if err != nil || next.Value == tok.Value {
		t.Fatalf("the proxy after a caller spent its budget: %q, %v", next.Value, err)
	}
	if _, renewed, err := m.RenewNow(context.Background(), false); err != nil || !renewed {
		t.Fatalf("the admin after a caller spent its budget: %t, %v", renewed, err)
	}
}

// Two instances together make at most daily_refresh_limit on-demand
// refreshes of a classic token a day; renewals and adoptions are not
// refused, and the count starts again the next Beijing day.
func TestClassicDailyRefreshLimitIsFleetWide(t *testing.T) {
	clock := newFakeClock()
	store := newMemStore()
	f := &fakeFetcher{answer: sequential(7200 * time.Second)}
	tweak := func(o *Options) {
		sharing(store, nil)(o)
		o.MinRefreshInterval = time.Millisecond
		o.DailyRefreshLimit = 4
	}
	a := startManager(t, Classic, f, clock, tweak)
	mustToken(t, a)
	b := startManager(t, Classic, f, clock, tweak)
	mustToken(t, b)
	refreshed := 0
	for i := range 6 {
		m := []*Manager{a, b}[i%2]
		clock.Advance(time.Second)
		a.saving.Wait() // the other's token is in the store (it is saved beside the refresh)
		b.saving.Wait()
		m.syncFromStore() // as its loop would: the other's token is rejected now
		tok := mustToken(t, m)
		if _, err := m.Refresh(context.Background(), Rejection{Token: tok}); err == nil {
			refreshed++
		} else if !errors.Is(err, ErrDailyRefreshLimit) {
			t.Fatalf("refresh %d: %v", i, err)
		}
	}
	if refreshed != 4 {
		t.Fatalf("%d on-demand refreshes across two instances, want the limit of 4", refreshed)
	}
	if st := a.Status(); st.Refreshes == nil || *st.Refreshes != 0 {
		t.Fatalf("status: %+v", st.Budget)
	}
	clock.Advance(24 * time.Hour)
	eventually(t, "a token a day later", func() bool { _, err := a.Token(context.Background()); return err == nil })
	tok := mustToken(t, a)
	if _, err := a.Refresh(context.Background(), Rejection{Token: tok}); err != nil {
		t.Fatalf("the next day: %v", err)
	}
}

// A token answer living less than min_token_lifetime is an upstream error:
// no token from it, and retries back off instead of fetching every half
// second.
func TestTinyExpiresInIsAnUpstreamError(t *testing.T) {
	clock := newFakeClock()
	f := &fakeFetcher{answer: sequential(time.Second)}
	m := startManager(t, Classic, f, clock, nil)
	_, err := m.Token(context.Background())
	if !errors.Is(err, ErrNoToken) || !strings.Contains(err.Error(), "expires_in is 1s") {
		t.Fatalf("err = %v", err)
	}
	stepLoop(t, clock, clock.Now().Add(time.Minute), func() bool { return false })
	// Backoff from 1 s to the 10 s of an outage: about 9 calls; taking the
	// tokens would renew at half-life, 120 calls.
	if n := f.count(); n > 12 {
		t.Fatalf("%d fetches in a minute of 1 s tokens", n)
	}
}

func TestStopEndsLoopAndReleasesWaiters(t *testing.T) {
	clock := newFakeClock()
	f := &fakeFetcher{answer: sequential(time.Hour), gate: make(chan struct{})}
	m, err := NewManager(Options{AppID: "wx", Kind: Classic, Keys: testKeys("wx", Classic), Clock: clock, Settings: Settings{Fetcher: f}})
	if err != nil {
		t.Fatal(err)
	}
	m.Start()
	errc := make(chan error)
	go func() {
		_, err := m.Token(context.Background())
		errc <- err
	}()
	eventually(t, "first fetch", func() bool { return f.count() == 1 })
	m.Stop() // cancels the blocked fetch
	select {
	case <-m.done:
	default:
		t.Fatal("renewal loop still running after Stop returned")
	}
	if err := <-errc; !errors.Is(err, ErrNoToken) {
		t.Fatalf("waiter got %v", err)
	}
	m.Stop() // idempotent
}

func TestReconfigureReschedules(t *testing.T) {
	clock := newFakeClock()
	f := &fakeFetcher{answer: sequential(7200 * time.Second)}
	m := startManager(t, Classic, f, clock, nil)
	start := clock.Now()
	mustToken(t, m)
	waitScheduled(t, clock, start.Add(7200*time.Second-DefaultRefreshAhead))
	if err := m.Reconfigure(Settings{Fetcher: f, RefreshAhead: 10 * time.Minute}); err != nil {
		t.Fatal(err)
	}
	waitScheduled(t, clock, start.Add(7200*time.Second-10*time.Minute))
}

func TestNewManagerRejectsBadOptions(t *testing.T) {
	f := &fakeFetcher{answer: sequential(time.Hour)}
	for name, opts := range map[string]Options{
		"no app":   {Kind: Classic, Keys: testKeys("wx", Classic), Settings: Settings{Fetcher: f}},
		"no kind":  {AppID: "wx", Keys: testKeys("wx", Classic), Settings: Settings{Fetcher: f}},
		"no keys":  {AppID: "wx", Kind: Classic, Settings: Settings{Fetcher: f}},
		"no fetch": {AppID: "wx", Kind: Classic, Keys: testKeys("wx", Classic)},
		"negative": {AppID: "wx", Kind: Classic, Keys: testKeys("wx", Classic), Settings: Settings{Fetcher: f, RefreshAhead: -time.Second}},
	} {
		if _, err := NewManager(opts); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
}

// After a failed renewal, a token obtained by a passive refresh resets the
// schedule: the loop must not fetch again on its backoff timer.
func TestPassiveRefreshAfterFailedRenewalReschedules(t *testing.T) {
	clock := newFakeClock()
	f := &fakeFetcher{answer: sequential(100 * time.Second)}
	m := startManager(t, Classic, f, clock, func(o *Options) { o.RefreshAhead = 30 * time.Second })
	start := clock.Now()
	mustToken(t, m)
	f.set(func(int, bool) (Fetched, error) { return Fetched{}, &APIError{Code: -1, Msg: "busy"} })
	waitScheduled(t, clock, start.Add(70*time.Second))
	clock.AdvanceTo(start.Add(70 * time.Second))
	eventually(t, "failed renewal", func() bool { return f.count() == 2 })
	eventually(t, "retry scheduled", func() bool { d, _ := clock.Next(); return d.After(clock.Now()) })

	f.set(sequential(100 * time.Second))
	fresh, err := m.Refresh(context.Background(), Rejection{Token: m.Known("tok1")})
	if err != nil || fresh.Value != "tok3" {
		t.Fatalf("passive refresh: %q, %v", fresh.Value, err)
	}
	waitScheduled(t, clock, fresh.ExpiresAt.Add(-30*time.Second))
}

// An outage that outlasts the token: once WeChat is back, the token is
// back within seconds, not after the minute-long backoff the failures
// while the token was valid would otherwise have built up. With shared
// storage too: its re-reads while the loop waits must not restart the
// wait (they did, and a backoff longer than the re-read period, an eighth
// of the token's life, never ended).
func TestOutageAcrossExpiryRecoversWithinSeconds(t *testing.T) {
	for _, tc := range []struct {
		name   string
		ttl    time.Duration
		shared bool
	}{
		{"alone", 100 * time.Second, false},
		{"shared storage", 100 * time.Second, true},
		{"shared storage, short-lived tokens", 8 * time.Second, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			clock := newFakeClock()
			f := &fakeFetcher{answer: sequential(tc.ttl)}
			m := startManager(t, Classic, f, clock, func(o *Options) {
				o.RefreshAhead = 30 * time.Second
				if tc.shared {
					sharing(newMemStore(), nil)(o)
				}
			})
			start := clock.Now()
			mustToken(t, m)
			back := start.Add(tc.ttl + 60*time.Second) // 60 s past expiry
			busy := &APIError{Code: -1, Msg: "system error"}
			f.set(func(n int, force bool) (Fetched, error) {
				if clock.Now().Before(back) {
					return Fetched{}, busy
				}
				return sequential(tc.ttl)(n, force)
			})
			recovered := stepLoop(t, clock, back.Add(time.Minute), func() bool {
				_, err := m.Token(context.Background())
				return err == nil && !clock.Now().Before(back)
			})
			if late := recovered.Sub(back); late > 12*time.Second {
				t.Fatalf("token back %s after WeChat was, want within the 10 s (+20 %% jitter) bound", late)
			}
			if n := f.count(); n > 25 {
				t.Fatalf("%d token calls for %s of outage", n, back.Sub(start))
			}
		})
	}
}
