package credential

import (
	"context"
	"fmt"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/caddy-wechat/caddy-wechat/emulator"
)

// Thousands of accounts in use: one schedule (no goroutine per account),
// a few KiB each, one fetch each on first use; once idle for a token's
// lifetime they are renewed no more, leave memory, and cost no storage
// reads.
func TestManyAccountsOneScheduleIdleOnesLeave(t *testing.T) {
	const n = 2000
	emu, base := emulatorServer(t, emulator.Config{Components: testPlatforms})
	store := newMemStorage()
	reg := NewRegistry(nil)
	clock := newFakeClock()
	reg.SetClock(clock)
	p := startPlatform(t, reg, store, emu, base, "wxcompa")
	var ids []string
	for i := range n {
		ids = append(ids, fmt.Sprintf("wxmany%010d", i))
	}
	var imports []Imported
	for id, refresh := range emu.ImportAuthorizers("wxcompa", ids) {
		imports = append(imports, Imported{AppID: id, RefreshToken: refresh})
	}
	if err := p.Import(context.Background(), imports); err != nil {
		t.Fatal(err)
	}
	runtime.GC()
	var before runtime.MemStats
	runtime.ReadMemStats(&before)
	goroutines := runtime.NumGoroutine()

	var wg sync.WaitGroup
	errs := make(chan error, n)
	sem := make(chan struct{}, 16)
	for _, id := range ids {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			m, err := p.Account(context.Background(), id)
			if err == nil {
				_, err = m.Token(context.Background())
			}
			if err != nil {
				errs <- fmt.Errorf("%s: %w", id, err)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if calls := emu.Stats().AuthorizerCalls; calls != n {
		t.Fatalf("%d fetches for %d accounts used once", calls, n)
	}
	runtime.GC()
	var after runtime.MemStats
	runtime.ReadMemStats(&after)
	perAccount := (int64(after.HeapAlloc) - int64(before.HeapAlloc)) / n
	t.Logf("heap per account in use: %d bytes", perAccount)
	if perAccount > 8<<10 {
		t.Errorf("each account in use holds %d bytes", perAccount)
	}
	// Connections to the emulator aside, nothing runs per account.
	if extra := runtime.NumGoroutine() - goroutines; extra > 40 {
		t.Errorf("%d more goroutines with %d accounts in use", extra, n)
	}

	waitUntil := func(what string, cond func() bool) {
		t.Helper()
		deadline := time.Now().Add(60 * time.Second)
		for !cond() {
			if time.Now().After(deadline) {
				a := p.accounts.Load()
				a.mu.Lock()
				var due time.Time
				if len(a.queue) > 0 {
					due = a.queue[0].due
				}
				renewing := 0
				for _, ac := range a.byID {
					if ac.renewing {
						renewing++
					}
				}
				a.mu.Unlock()
				t.Fatalf("timed out waiting for %s: %d fetches, next due %v (now %v), %d renewing, %d in memory", what, emu.Stats().AuthorizerCalls, due, clock.Now(), renewing, len(a.byID))
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	a := p.accounts.Load()
	inMemory := func() int {
		a.mu.Lock()
		defer a.mu.Unlock()
		return len(a.byID)
	}
	loads := func() int {
		store.mu.Lock()
		defer store.mu.Unlock()
		return store.loads
	}
	// WeChat's 7200 s tokens: every account in use is renewed before it
	// expires, spread over the renewal margin...
	clock.Advance(7200*time.Second - 5*time.Minute/2 + time.Second)
	waitUntil("every account renewed", func() bool { return emu.Stats().AuthorizerCalls == 2*n })
	// ...and, with no request for a token's lifetime, dropped instead of
	// renewed again.
	clock.Advance(7200 * time.Second)
	waitUntil("idle accounts dropped", func() bool { return inMemory() == 0 })
	if calls := emu.Stats().AuthorizerCalls; calls != 2*n {
		t.Fatalf("%d fetches: idle accounts were renewed", calls)
	}
	// Nothing is done for idle accounts as time passes: the storage is read
	// for the platform's own token's renewals, never per account.
	readsBefore := loads()
	for range 24 {
		clock.Advance(time.Hour)
		time.Sleep(10 * time.Millisecond) // the platform's token renews on its own loop
	}
	idle := loads() - readsBefore
	t.Logf("storage reads in a day with %d accounts idle: %d", n, idle)
	if perAccountHour := float64(idle) / (n * 24); perAccountHour > 0.01 || emu.Stats().AuthorizerCalls != 2*n {
		t.Fatalf("%d storage reads and %d fetches in a day with every account idle", idle, emu.Stats().AuthorizerCalls-2*n)
	}
	// An idle account's next request waits one fetch at most.
	m, err := p.Account(context.Background(), ids[0])
	if err != nil {
		t.Fatal(err)
	}
	mustToken(t, m)
	if calls := emu.Stats().AuthorizerCalls; calls != 2*n+1 {
		t.Fatalf("an idle account's next request: %d fetches", calls-2*n)
	}
}
