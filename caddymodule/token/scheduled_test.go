package token

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"
)

func startScheduled(t *testing.T, f *fakeFetcher, clock *fakeClock, tweak func(*Options)) (*Manager, *atomic.Int32) {
	t.Helper()
	var pokes atomic.Int32
	m := startManager(t, Classic, f, clock, func(o *Options) {
		o.Scheduled, o.OnSchedule = true, func() { pokes.Add(1) }
		if tweak != nil {
			tweak(o)
		}
	})
	return m, &pokes
}

// A scheduled manager does nothing by itself: its first request fetches,
// once however many ask, and a renewal happens when the scheduler asks.
func TestScheduledManagerFetchesOnDemandAndRenewsWhenAsked(t *testing.T) {
	clock := newFakeClock()
	f := &fakeFetcher{answer: sequential(7200 * time.Second)}
	m, pokes := startScheduled(t, f, clock, nil)
	if f.count() != 0 {
		t.Fatal("a scheduled manager fetched before it was asked")
	}
	if _, ok := m.NextRenewal(); ok {
		t.Fatal("a renewal is due with no token held")
	}
	done := make(chan Token, 8)
	for range 8 {
		go func() { tok, _ := m.Token(context.Background()); done <- tok }()
	}
	for range 8 {
		if tok := <-done; tok.Value != "tok1" {
			t.Fatalf("on demand: %q", tok.Value)
		}
	}
	if f.count() != 1 || pokes.Load() == 0 {
		t.Fatalf("%d fetches for 8 requests, %d schedule notices", f.count(), pokes.Load())
	}
	due, ok := m.NextRenewal()
	earliest, latest := clock.Now().Add(7200*time.Second-DefaultRefreshAhead), clock.Now().Add(7200*time.Second-DefaultRefreshAhead/2)
	if !ok || due.Before(earliest) || due.After(latest) {
		t.Fatalf("renewal due %v, want within [%v, %v]", due, earliest, latest)
	}
	clock.AdvanceTo(due)
	if err := m.Renew(context.Background()); err != nil {
		t.Fatal(err)
	}
	if tok := mustToken(t, m); tok.Value != "tok2" || f.count() != 2 {
		t.Fatalf("after the renewal: %q, %d fetches", tok.Value, f.count())
	}
}

// A first request adopts what the fleet stored, fetching nothing.
func TestScheduledManagerAdoptsTheStoredToken(t *testing.T) {
	clock := newFakeClock()
	store := newMemStore()
	store.putToken(t, "stored", clock.Now(), time.Hour)
	f := &fakeFetcher{answer: sequential(time.Hour)}
	m, _ := startScheduled(t, f, clock, sharing(store, nil))
	if tok := mustToken(t, m); tok.Value != "stored" || f.count() != 0 {
		t.Fatalf("first request: %q, %d fetches", tok.Value, f.count())
	}
}

// After a failed fetch, requests are refused at once until the backoff
// has passed: a refused refresh token does not make every request a call.
func TestScheduledManagerBacksOffAfterAFailure(t *testing.T) {
	clock := newFakeClock()
	f := &fakeFetcher{answer: func(int, bool) (Fetched, error) { return Fetched{}, &APIError{Code: -1, Msg: "busy"} }}
	m, _ := startScheduled(t, f, clock, nil)
	for range 5 {
		if _, err := m.Token(context.Background()); !errors.Is(err, ErrNoToken) {
			t.Fatalf("error %v", err)
		}
	}
	if f.count() != 1 {
		t.Fatalf("%d fetches for 5 requests during the backoff", f.count())
	}
	clock.Advance(15 * time.Second) // past noTokenMaxBackoff
	f.set(sequential(time.Hour))
	if tok := mustToken(t, m); tok.Value == "" || f.count() != 2 {
		t.Fatalf("after the backoff: %q, %d fetches", tok.Value, f.count())
	}
}

// Offer installs a token got elsewhere, shares it, and tells the schedule.
func TestOfferedTokenIsSharedAndScheduled(t *testing.T) {
	clock := newFakeClock()
	store := newMemStore()
	f := &fakeFetcher{answer: sequential(time.Hour)}
	m, pokes := startScheduled(t, f, clock, sharing(store, nil))
	m.Offer("exchanged", time.Hour)
	if tok := mustToken(t, m); tok.Value != "exchanged" || f.count() != 0 || pokes.Load() == 0 {
		t.Fatalf("offered: %q, %d fetches, %d notices", tok.Value, f.count(), pokes.Load())
	}
	if rec := store.stored(t); rec.Token != "exchanged" {
		t.Fatalf("stored %q", rec.Token)
	}
}
