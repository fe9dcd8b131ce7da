package token

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
)

// memStore is a Store in memory. A lock is a one-slot channel per name.
type memStore struct {
	mu    sync.Mutex
	data  map[string][]byte
	locks map[string]chan struct{}
	err   error // when set, every call fails with it
	tries int   // calls of Lock
}

func newMemStore() *memStore {
	return &memStore{data: map[string][]byte{}, locks: map[string]chan struct{}{}}
}

func (s *memStore) lock(name string) chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.locks[name] == nil {
		s.locks[name] = make(chan struct{}, 1)
	}
	return s.locks[name]
}

func (s *memStore) failing() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}

func (s *memStore) Lock(ctx context.Context, name string) error {
	if err := s.failing(); err != nil {
		return err
	}
	s.mu.Lock()
	s.tries++
	s.mu.Unlock()
	select {
	case s.lock(name) <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Unlock releases a lock held, and fails for one not held, as Caddy's
// storages do: a double unlock is an error, not a hang.
func (s *memStore) Unlock(_ context.Context, name string) error {
	select {
	case <-s.lock(name):
		return nil
	default:
		return fmt.Errorf("unlock %s: not locked", name)
	}
}

func (s *memStore) Load(_ context.Context, key string) ([]byte, error) {
	if err := s.failing(); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	v, ok := s.data[key]
	if !ok {
		return nil, fs.ErrNotExist
	}
	return v, nil
}

func (s *memStore) Store(_ context.Context, key string, value []byte) error {
	if err := s.failing(); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.data[key] = value
	return nil
}

func (s *memStore) put(t *testing.T, rec record) {
	t.Helper()
	b, err := json.Marshal(rec)
	if err != nil {
		t.Fatal(err)
	}
	key, _ := testStoreKey(rec.AppID, Classic)
	_ = s.Store(context.Background(), key, b)
}

// putToken stores tok as another instance of the fleet (same secret) would.
func (s *memStore) putToken(t *testing.T, tok string, fetched time.Time, life time.Duration) {
	t.Helper()
	s.put(t, record{Version: recordVersion, AppID: "wxtest", Kind: Classic.Name, Token: tok,
		FetchedAt: fetched, ExpiresAt: fetched.Add(life), SecretID: SecretFingerprint("wxtest", "secret")})
}

// stored is the record in the store, waiting for it: a token is handed to
// waiting requests before it is written for the fleet.
func (s *memStore) stored(t *testing.T) record {
	t.Helper()
	key, _ := testStoreKey("wxtest", Classic)
	eventually(t, "the record stored", func() bool { _, err := s.Load(context.Background(), key); return err == nil })
	b, err := s.Load(context.Background(), key)
	if err != nil {
		t.Fatal(err)
	}
	var rec record
	if err := json.Unmarshal(b, &rec); err != nil {
		t.Fatal(err)
	}
	return rec
}

func sharing(store *memStore, logs *zap.Logger) func(*Options) {
	return func(o *Options) {
		o.Store = store
		o.SecretID = SecretFingerprint("wxtest", "secret")
		o.LockWait = 100 * time.Millisecond
		if logs != nil {
			o.Logger = logs
		}
	}
}

func TestStoredTokenIsUsedWithoutFetching(t *testing.T) {
	clock := newFakeClock()
	store := newMemStore()
	store.put(t, record{Version: 1, AppID: "wxtest", Kind: Classic.Name, Token: "stored",
		FetchedAt: clock.Now().Add(-time.Hour), ExpiresAt: clock.Now().Add(time.Hour), SecretID: SecretFingerprint("wxtest", "secret")})
	f := &fakeFetcher{answer: sequential(2 * time.Hour)}
	m := startManager(t, Classic, f, clock, sharing(store, nil))
	if tok := mustToken(t, m); tok.Value != "stored" {
		t.Fatalf("token %q", tok.Value)
	}
	if n := f.count(); n != 0 {
		t.Fatalf("%d fetches with a valid stored token", n)
	}
}

func TestTwoInstancesFetchOncePerRotation(t *testing.T) {
	clock := newFakeClock()
	store := newMemStore()
	f := &fakeFetcher{answer: sequential(100 * time.Second)} // one WeChat for both
	tweak := func(o *Options) { sharing(store, nil)(o); o.RefreshAhead = 20 * time.Second }
	a := startManager(t, Classic, f, clock, tweak)
	first := mustToken(t, a)
	if rec := store.stored(t); rec.Token != first.Value || rec.SecretID == "" {
		t.Fatalf("stored record %+v", rec)
	}
	b := startManager(t, Classic, f, clock, tweak)
	if tok := mustToken(t, b); tok.Value != first.Value || f.count() != 1 {
		t.Fatalf("second instance: %q after %d fetches", tok.Value, f.count())
	}

	// A rejection seen by both, B a little later: one fetch, B adopts it,
	// and B's later failures with the old token adopt nothing more though
	// A fetched before B noticed.
	next, err := a.Refresh(context.Background(), Rejection{Token: first})
	if err != nil {
		t.Fatal(err)
	}
	for range 3 {
		clock.Advance(10 * time.Millisecond)
		if tok, err := b.Refresh(context.Background(), Rejection{Token: first}); err != nil || tok.Value != next.Value {
			t.Fatalf("B's refresh: %q, %v (want %q)", tok.Value, err, next.Value)
		}
	}
	if n := f.count(); n != 2 {
		t.Fatalf("%d fetches after one rejection seen by two instances", n)
	}

	// Proactive renewals: both loops wake at once, one fetches.
	for round := range 3 {
		cur := mustToken(t, a)
		clock.AdvanceTo(cur.ExpiresAt.Add(-20 * time.Second))
		eventually(t, "both renewed", func() bool {
			ta, tb := mustToken(t, a), mustToken(t, b)
			return ta.Value != cur.Value && ta.Value == tb.Value
		})
		if n := f.count(); n != 3+round {
			t.Fatalf("round %d: %d fetches, want %d", round, n, 3+round)
		}
	}
}

func (s *memStore) lockTries() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.tries
}

// A refresh waiting while another instance holds the lock takes the token
// that instance stores, also when this instance's loop re-read and adopted
// it first; and the failures after it, from the same event, fetch nothing.
func TestRefreshWaitingForLockTakesTokenAdoptedMeanwhile(t *testing.T) {
	clock := newFakeClock()
	store := newMemStore()
	f := &fakeFetcher{answer: sequential(100 * time.Second)}
	m := startManager(t, Classic, f, clock, func(o *Options) { sharing(store, nil)(o); o.LockWait = time.Minute })
	first := mustToken(t, m)
	_, lockName := testStoreKey("wxtest", Classic)
	if err := store.Lock(context.Background(), lockName); err != nil { // another instance renews
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = store.Unlock(context.Background(), lockName) })
	tries := store.lockTries()
	clock.Advance(time.Second)
	fetchedElsewhere := clock.Now()
	clock.Advance(10 * time.Millisecond) // it fetched before this instance noticed

	refreshed := make(chan string, 1)
	go func() {
		tok, err := m.Refresh(context.Background(), Rejection{Token: first})
		if err != nil {
			refreshed <- err.Error()
			return
		}
		refreshed <- tok.Value
	}()
	eventually(t, "refresh waiting for the lock", func() bool { return store.lockTries() > tries })
	store.put(t, record{Version: 1, AppID: "wxtest", Kind: Classic.Name, Token: "theirs", FetchedAt: fetchedElsewhere,
		ExpiresAt: fetchedElsewhere.Add(100 * time.Second), SecretID: SecretFingerprint("wxtest", "secret")})
	if !m.syncFromStore() {
		t.Fatal("the loop's re-read did not adopt the stored token")
	}
	if got := <-refreshed; got != "theirs" {
		t.Fatalf("refresh: %q, want the token the other instance stored", got)
	}
	clock.Advance(10 * time.Millisecond)
	if tok, err := m.Refresh(context.Background(), Rejection{Token: first}); err != nil || tok.Value != "theirs" {
		t.Fatalf("a later failure with the old token: %q, %v", tok.Value, err)
	}
	if n := f.count(); n != 1 {
		t.Fatalf("%d fetches, want only the first", n)
	}
}

func TestBrokenStorageDegradesToLocal(t *testing.T) {
	clock := newFakeClock()
	store := newMemStore()
	store.err = errors.New("disk on fire")
	core, logs := observer.New(zap.WarnLevel)
	f := &fakeFetcher{answer: sequential(100 * time.Second)}
	m := startManager(t, Classic, f, clock, sharing(store, zap.New(core)))
	if tok := mustToken(t, m); tok.Value != "tok1" {
		t.Fatalf("token %q", tok.Value)
	}
	if _, err := m.Refresh(context.Background(), Rejection{Token: m.Known("tok1")}); err != nil {
		t.Fatal(err)
	}
	warnings := logs.FilterMessageSnippet("storage").Len() + logs.FilterMessageSnippet("lock").Len()
	if warnings == 0 || warnings > 3 {
		t.Fatalf("%d storage warnings for a lasting outage, want each kind once", warnings)
	}
	store.mu.Lock()
	store.err = nil
	store.mu.Unlock()
	if _, err := m.Refresh(context.Background(), Rejection{Token: m.Known("tok2")}); err != nil {
		t.Fatal(err)
	}
	m.saving.Wait()
	if rec := store.stored(t); rec.Token != "tok3" {
		t.Fatalf("after recovery the store holds %q", rec.Token)
	}
}

func TestCorruptOrForeignRecordsAreIgnored(t *testing.T) {
	for name, value := range map[string]string{
		"garbage":   "\x00not json",
		"other app": `{"version":1,"app_id":"wxother","token_api":"classic","access_token":"x","fetched_at":"2026-01-01T00:00:00Z","expires_at":"2026-01-01T01:00:00Z"}`,
		"no token":  `{"version":1,"app_id":"wxtest","token_api":"classic","fetched_at":"2026-01-01T00:00:00Z","expires_at":"2026-01-01T01:00:00Z"}`,
		"future":    `{"version":2,"app_id":"wxtest","token_api":"classic","access_token":"x","fetched_at":"2026-01-01T00:00:00Z","expires_at":"2026-01-01T01:00:00Z"}`,
	} {
		t.Run(name, func(t *testing.T) {
			clock := newFakeClock()
			store := newMemStore()
			key, _ := testStoreKey("wxtest", Classic)
			store.data[key] = []byte(value)
			core, logs := observer.New(zap.WarnLevel)
			f := &fakeFetcher{answer: sequential(100 * time.Second)}
			m := startManager(t, Classic, f, clock, sharing(store, zap.New(core)))
			if tok := mustToken(t, m); tok.Value != "tok1" {
				t.Fatalf("token %q", tok.Value)
			}
			if logs.FilterMessageSnippet("corrupt").Len() == 0 {
				t.Fatal("no warning about the record")
			}
			m.saving.Wait() // saved beside the waiting requests
			if rec := store.stored(t); rec.Token != "tok1" {
				t.Fatalf("record not replaced: %+v", rec)
			}
		})
	}
}

func TestDifferentSecretIsReportedNotFought(t *testing.T) {
	clock := newFakeClock()
	store := newMemStore()
	store.put(t, record{Version: 1, AppID: "wxtest", Kind: Classic.Name, Token: "theirs",
		FetchedAt: clock.Now(), ExpiresAt: clock.Now().Add(time.Hour), SecretID: SecretFingerprint("wxtest", "other")})
	core, logs := observer.New(zap.WarnLevel)
	f := &fakeFetcher{answer: sequential(time.Hour)}
	m := startManager(t, Classic, f, clock, sharing(store, zap.New(core)))
	if tok := mustToken(t, m); tok.Value != "theirs" || f.count() != 0 {
		t.Fatalf("token %q after %d fetches", tok.Value, f.count())
	}
	m.syncFromStore()
	m.syncFromStore()
	if n := logs.FilterMessageSnippet("different AppSecrets").Len(); n != 1 {
		t.Fatalf("%d reports of the different secret, want 1", n)
	}
}

func TestHeldLockIsWaitedForBoundedTime(t *testing.T) {
	clock := newFakeClock()
	store := newMemStore()
	_, lockName := testStoreKey("wxtest", Classic)
	if err := store.Lock(context.Background(), lockName); err != nil { // a holder that crashed
		t.Fatal(err)
	}
	core, logs := observer.New(zap.WarnLevel)
	f := &fakeFetcher{answer: sequential(time.Hour)}
	const wait = 300 * time.Millisecond
	began := time.Now()
	m := startManager(t, Classic, f, clock, func(o *Options) { sharing(store, zap.New(core))(o); o.LockWait = wait })
	if tok := mustToken(t, m); tok.Value != "tok1" {
		t.Fatalf("token %q", tok.Value)
	}
	// It waited for the holder, LockWait and no less (a lower bound: a
	// busy machine only makes it longer), then renewed alone.
	if waited := time.Since(began); waited < wait {
		t.Fatalf("fetched %s after the start, before the holder's lock wait of %s ran out", waited, wait)
	}
	if f.count() != 1 || logs.FilterMessageSnippet("renewing alone").Len() != 1 {
		t.Fatalf("%d fetches; warnings %v", f.count(), logs.All())
	}
	// The crashed holder's lock is still held; releasing a lock nobody
	// holds is an error.
	if err := store.Unlock(context.Background(), lockName); err != nil {
		t.Fatalf("the crashed holder's lock: %v", err)
	}
	if err := store.Unlock(context.Background(), lockName); err == nil {
		t.Fatal("a lock released twice")
	}
}

func TestSecretFingerprintHidesSecret(t *testing.T) {
	fp := SecretFingerprint("wx1", "0123456789abcdef")
	if len(fp) != 16 || strings.Contains(fp, "0123") || fp == SecretFingerprint("wx1", "other") || fp == SecretFingerprint("wx2", "0123456789abcdef") {
		t.Fatalf("fingerprint %q", fp)
	}
}

// Instances whose clocks disagree by seconds still fetch once per
// rotation: the one that is ahead renews, the other adopts its token.
func TestClockSkewBetweenInstances(t *testing.T) {
	clockA, clockB := newFakeClock(), newFakeClock()
	clockB.Advance(-3 * time.Second) // B runs 3 s behind
	store := newMemStore()
	f := &fakeFetcher{answer: func(n int, _ bool) (Fetched, error) {
		return Fetched{Value: fmt.Sprintf("tok%d", n), ExpiresIn: 100 * time.Second}, nil
	}}
	tweak := func(o *Options) { sharing(store, nil)(o); o.RefreshAhead = 20 * time.Second }
	a := startManager(t, Classic, f, clockA, tweak)
	first := mustToken(t, a)
	b := startManager(t, Classic, f, clockB, tweak)
	if tok := mustToken(t, b); tok.Value != first.Value {
		t.Fatalf("B: %q", tok.Value)
	}
	for round := range 3 {
		cur := mustToken(t, a)
		renewAt := cur.ExpiresAt.Add(-20 * time.Second)
		clockA.AdvanceTo(renewAt)
		eventually(t, "A renewed", func() bool { return mustToken(t, a).Value != cur.Value })
		// B reaches the same moment by its own clock 3 s later.
		clockB.AdvanceTo(renewAt)
		eventually(t, "B has A's token", func() bool { return mustToken(t, b).Value == mustToken(t, a).Value })
		if n := f.count(); n != 2+round {
			t.Fatalf("round %d: %d fetches, want %d", round, n, 2+round)
		}
	}
}

// A waiter for the fleet's renewal lock waits as long as the holder may
// still be working (its fetch_timeout and two storage calls; here several
// fetch timeouts of slow storage), and then adopts the holder's token: it
// never fetches beside a live holder (with classic, that would knock the
// holder's token out) while its own token is not about to run out.
func TestLockWaiterOutwaitsAWorkingHolder(t *testing.T) {
	clock := newFakeClock()
	store := newMemStore()
	now := clock.Now()
	store.putToken(t, "theirs", now, 20*time.Second)
	f := &fakeFetcher{answer: sequential(time.Hour)}
	m := startManager(t, Classic, f, clock, func(o *Options) {
		sharing(store, nil)(o)
		o.LockWait = 0 // derived from FetchTimeout
		o.FetchTimeout = 300 * time.Millisecond
		o.RefreshAhead = 10 * time.Second
	})
	if tok := mustToken(t, m); tok.Value != "theirs" {
		t.Fatalf("token %q", tok.Value)
	}
	// Another instance holds the lock, renewing.
	_, lockName := testStoreKey("wxtest", Classic)
	if err := store.Lock(context.Background(), lockName); err != nil {
		t.Fatal(err)
	}
	renewAt := now.Add(10 * time.Second)
	for clock.Now().Before(renewAt) { // through the loop's re-reads of the store
		eventually(t, "loop asleep", func() bool { due, _ := clock.Next(); return due.After(clock.Now()) })
		due, _ := clock.Next()
		clock.AdvanceTo(due)
	}
	eventually(t, "the renewal to wait for the lock", func() bool {
		store.mu.Lock()
		defer store.mu.Unlock()
		return store.tries == 2 // the holder's and the renewal's
	})
	// The holder works for five fetch timeouts.
	time.Sleep(1500 * time.Millisecond)
	if n := f.count(); n != 0 {
		t.Fatalf("fetched %d times beside the lock holder", n)
	}
	later := clock.Now()
	store.putToken(t, "theirs2", later, time.Hour)
	_ = store.Unlock(context.Background(), lockName)
	eventually(t, "the holder's token adopted", func() bool { tok, err := m.Token(context.Background()); return err == nil && tok.Value == "theirs2" })
	if n := f.count(); n != 0 {
		t.Fatalf("fetched %d times", n)
	}
}

// The lock wait follows fetch_timeout: a holder may work for a whole fetch
// and a storage call on either side, and a waiter outwaits that.
func TestLockWaitFollowsFetchTimeout(t *testing.T) {
	for _, timeout := range []time.Duration{time.Second, 30 * time.Second, 2 * time.Minute} {
		m, err := NewManager(Options{AppID: "wxtest", Kind: Classic, Keys: testKeys("wxtest", Classic), Settings: Settings{Fetcher: &fakeFetcher{}, FetchTimeout: timeout}})
		if err != nil {
			t.Fatal(err)
		}
		if got, least := m.cfg().LockWait, timeout+2*storeTimeout; got <= least {
			t.Errorf("fetch_timeout %s: lock wait %s, want more than %s", timeout, got, least)
		}
	}
}

// A renewal that cannot reach the fleet's storage waits for it while the
// token has more than half its renewal margin left, rather than fetch alone
// (every instance would): it renews as one fleet when the storage is back,
// and alone only when the token must not run out.
func TestRenewalWaitsOutAStorageOutage(t *testing.T) {
	for _, recovers := range []bool{true, false} {
		t.Run(fmt.Sprintf("storage back=%t", recovers), func(t *testing.T) {
			clock := newFakeClock()
			store := newMemStore()
			f := &fakeFetcher{answer: sequential(100 * time.Second)}
			m := startManager(t, Classic, f, clock, func(o *Options) { sharing(store, nil)(o); o.RefreshAhead = 30 * time.Second })
			start := clock.Now()
			mustToken(t, m)
			store.mu.Lock()
			store.err = errors.New("connection refused")
			store.mu.Unlock()
			stepLoop(t, clock, start.Add(75*time.Second), func() bool { return false })
			if n := f.count(); n != 1 {
				t.Fatalf("renewed alone with %s of the token left", start.Add(100*time.Second).Sub(clock.Now()))
			}
			if recovers {
				store.mu.Lock()
				store.err = nil
				store.mu.Unlock()
			}
			at := stepLoop(t, clock, start.Add(100*time.Second), func() bool { return f.count() == 2 })
			if f.count() != 2 {
				t.Fatalf("%d fetches by the token's end", f.count())
			}
			if left := start.Add(100 * time.Second).Sub(at); left <= 0 {
				t.Fatal("the token ran out before the renewal")
			} else if !recovers && left > 15*time.Second {
				t.Fatalf("renewed alone with %s left, more than half the 30 s margin", left)
			}
			if recovers {
				m.saving.Wait()
				if rec := store.stored(t); rec.Token != "tok2" {
					t.Fatalf("the renewal after the outage stored %q", rec.Token)
				}
			}
		})
	}
}

// The exception: with its token about to run out, a waiter renews beside a
// holder that takes too long (or a storage that hangs) rather than let it
// expire.
func TestLockWaiterRenewsBeforeItsTokenRunsOut(t *testing.T) {
	clock := newFakeClock()
	store := newMemStore()
	now := clock.Now()
	store.putToken(t, "theirs", now, 20*time.Second)
	f := &fakeFetcher{answer: sequential(time.Hour)}
	m := startManager(t, Classic, f, clock, func(o *Options) { sharing(store, nil)(o); o.LockWait = 0 })
	mustToken(t, m)
	_, lockName := testStoreKey("wxtest", Classic)
	if err := store.Lock(context.Background(), lockName); err != nil { // a holder that hangs
		t.Fatal(err)
	}
	clock.AdvanceTo(now.Add(19 * time.Second)) // past the renewal time, a second left
	eventually(t, "a renewal beside the hung holder", func() bool { return f.count() == 1 })
	if tok := mustToken(t, m); tok.Value != "tok1" {
		t.Fatalf("token %q", tok.Value)
	}
}
