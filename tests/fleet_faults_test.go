package tests

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddy-wechat/caddy-wechat/emulator"
)

// Faults of the fleet's own parts, on a real redis-server: a member
// reloaded, Redis crashing, Redis slow, clocks that disagree. Each test
// checks that clients see no error and that WeChat sees the tokens of one
// instance.

// backgroundLoad sends requests to every member of a fleet until finished,
// two clients per member, counting answers that are not errcode 0 and the
// slowest answer.
type backgroundLoad struct {
	// retryDropped sends a request once more when its connection broke
	// without an answer, as clients do for an idempotent GET.
	retryDropped bool
	stop         chan struct{}
	wg           sync.WaitGroup
	mu           sync.Mutex
	ok           int
	failed       []string
	slowest      time.Duration
}

func startLoad(fleet []*caddy, cl *http.Client) *backgroundLoad {
	return startLoadWith(fleet, cl, false)
}

func startLoadWith(fleet []*caddy, cl *http.Client, retryDropped bool) *backgroundLoad {
	l := &backgroundLoad{stop: make(chan struct{}), retryDropped: retryDropped}
	for i := range 2 * len(fleet) {
		c := fleet[i%len(fleet)]
		l.wg.Go(func() {
			for {
				select {
				case <-l.stop:
					return
				default:
				}
				start := time.Now()
				why := loadRequest(cl, c, l.retryDropped)
				took := time.Since(start)
				l.mu.Lock()
				if why == "" {
					l.ok++
				} else {
					l.failed = append(l.failed, fmt.Sprintf("%s (after %s)", why, took.Round(time.Millisecond)))
				}
				l.slowest = max(l.slowest, took)
				l.mu.Unlock()
				time.Sleep(5 * time.Millisecond)
			}
		})
	}
	return l
}

// finish stops the load and fails the test on any failed request.
func (l *backgroundLoad) finish(t *testing.T) (ok int, slowest time.Duration) {
	t.Helper()
	close(l.stop)
	l.wg.Wait()
	if len(l.failed) > 0 {
		t.Fatalf("%d of %d requests failed, first: %s", len(l.failed), l.ok+len(l.failed), l.failed[0])
	}
	if l.ok == 0 {
		t.Fatal("the load sent nothing")
	}
	return l.ok, l.slowest
}

// startFleet runs n instances of block sharing the Redis on port.
func startFleet(t *testing.T, w *wechat, block string, n int, port int, offsets ...time.Duration) []*caddy {
	t.Helper()
	var fleet []*caddy
	for i := range n {
		opts := caddyOptions{storageConfig: redisStorage(port)}
		if i < len(offsets) {
			opts.clockOffset = offsets[i]
		}
		c := startCaddyWith(t, w, block, opts)
		// The first token may take longer than a request waits (a slow
		// storage): wait for it.
		deadline := time.Now().Add(time.Minute)
		for a := get(t, c.url("/cgi-bin/user/info?openid=o1")); a.Errcode != 0; a = get(t, c.url("/cgi-bin/user/info?openid=o1")) {
			if time.Now().After(deadline) {
				t.Fatalf("instance %d, first request: %+v", i, a.Echo)
			}
			time.Sleep(100 * time.Millisecond)
		}
		fleet = append(fleet, c)
	}
	return fleet
}

// issuedSince counts the tokens the emulator issued after since.
func (w *wechat) issuedSince(since time.Time) int {
	n := 0
	for _, is := range w.History(w.AppID) {
		if is.At.After(since) {
			n++
		}
	}
	return n
}

// A member reloaded again and again under load: the fleet still fetches
// as one and no client sees an error.
func TestFleetMemberReloadedUnderLoad(t *testing.T) {
	t.Parallel()
	port := startRedis(t)
	w := startWeChat(t, emulator.Config{TokenTTL: 4 * time.Second, Overlap: time.Second})
	block := w.tokenBlock("classic", "refresh_ahead 1s", "min_token_lifetime 1s")
	fleet := startFleet(t, w, block, 2, port)
	// A connection the old server accepted as it stopped is closed without
	// an answer (Caddy's, not the proxy's doing): such a request is sent
	// once more, as clients do with a GET. Any WeChat error still fails.
	start := time.Now()
	l := startLoadWith(fleet, client, true)
	for i := range 4 {
		time.Sleep(2500 * time.Millisecond)
		fleet[0].reload(t, fmt.Sprintf("%s\n\theader X-Reloaded %d", block, i))
	}
	time.Sleep(2500 * time.Millisecond)
	l.finish(t)
	// 12.5 s of 4 s tokens renewed at half-life: 4 to 5 tokens for one
	// instance; two fetching on their own would make about twice that.
	if n := w.issuedSince(start); n > 6 {
		t.Fatalf("the fleet fetched %d tokens in 12.5 s while a member was reloaded (one instance: 4 to 5)", n)
	}
}

// redis-server killed under load just before a renewal and started again:
// no client error, and the renewal waits for Redis rather than
// every member fetching alone: one token per renewal, fetched once Redis
// is back. (An outage longer than the storage calls' patience is
// TestRenewalWaitsOutAStorageOutage in package token.)
func TestRedisRestartUnderLoad(t *testing.T) {
	t.Parallel()
	redis := startRedisServer(t)
	w := startWeChat(t, emulator.Config{TokenTTL: 16 * time.Second, Overlap: 2 * time.Second})
	fleet := startFleet(t, w, w.tokenBlock("classic"), 2, redis.port)
	start := time.Now()
	l := startLoad(fleet, client)
	// Renewals fall due 8 s after each token: Redis is down from 7.5 s to
	// 10.5 s.
	for round := range 2 {
		history := w.History(w.AppID)
		last := history[len(history)-1].At
		time.Sleep(time.Until(last.Add(7500 * time.Millisecond)))
		redis.Stop()
		time.Sleep(time.Until(last.Add(10500 * time.Millisecond)))
		restarted := time.Now()
		redis.Start()
		deadline := time.Now().Add(10 * time.Second)
		for len(w.History(w.AppID)) == len(history) && time.Now().Before(deadline) {
			time.Sleep(50 * time.Millisecond)
		}
		if after := w.History(w.AppID); len(after) != len(history)+1 {
			t.Fatalf("round %d: %d tokens for one renewal across a Redis restart", round, len(after)-len(history))
		} else if at := after[len(after)-1].At; at.Before(restarted) {
			t.Fatalf("round %d: renewed %s before Redis was back, without the fleet", round, restarted.Sub(at).Round(time.Millisecond))
		}
	}
	time.Sleep(2 * time.Second)
	l.finish(t)
	if n := w.issuedSince(start); n != 2 {
		t.Fatalf("the fleet fetched %d tokens for two renewals across Redis restarts, want 2", n)
	}
}

// delayProxy forwards TCP connections to target, holding every chunk a
// client sends for delay: each round trip through it takes delay longer.
func startDelayProxy(t *testing.T, target string, delay time.Duration) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var closed atomic.Bool
	t.Cleanup(func() { closed.Store(true); ln.Close() })
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer conn.Close()
				upstream, err := net.Dial("tcp", target)
				if err != nil {
					return
				}
				defer upstream.Close()
				go func() { _, _ = io.Copy(conn, upstream); conn.Close() }()
				buf := make([]byte, 32<<10)
				for !closed.Load() {
					n, err := conn.Read(buf)
					if n > 0 {
						time.Sleep(delay)
						if _, werr := upstream.Write(buf[:n]); werr != nil {
							return
						}
					}
					if err != nil {
						return
					}
				}
			}()
		}
	}()
	return ln.Addr().String()
}

// A slow Redis (every round trip a second late) delays renewals, never
// requests: the token in hand serves while the fleet coordinates. (The
// delay is long beside the pauses of a race-built Caddy on a busy machine,
// so that a slow request means a wait on the storage.)
func TestSlowRedisDoesNotDelayRequests(t *testing.T) {
	t.Parallel()
	redis := startRedisServer(t)
	const delay = time.Second
	proxy := startDelayProxy(t, redis.addr(), delay)
	_, portText, _ := net.SplitHostPort(proxy)
	var port int
	fmt.Sscan(portText, &port)
	w := startWeChat(t, emulator.Config{TokenTTL: 24 * time.Second, Overlap: 6 * time.Second})
	fleet := startFleet(t, w, w.tokenBlock("classic"), 2, port)
	start := time.Now()
	l := startLoad(fleet, client)
	// Two renewals, due at 12 and 24 s; each takes several slow round
	// trips, more on a busy machine: wait for them rather than a fixed time.
	deadline := start.Add(90 * time.Second)
	for (time.Since(start) < 26*time.Second || w.issuedSince(start) < 2) && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
	}
	elapsed := time.Since(start)
	_, slowest := l.finish(t)
	if slowest >= delay {
		t.Fatalf("a request took %s: it waited on the storage (one round trip: %s)", slowest.Round(time.Millisecond), delay)
	}
	// One instance alone renews at half-life: 2 tokens by 24 s and the
	// renewals' round trips; 3 at most by then.
	if n := w.issuedSince(start); n < 2 || n > 3 {
		t.Fatalf("%d tokens in %s of 24 s tokens renewed at half-life, want 2 (3 at most)", n, elapsed.Round(time.Second))
	}
}

// Members whose clocks disagree by 3 s (almost a fifth of a token's life;
// two minutes are a sixtieth of WeChat's two hours) still fetch once per
// rotation, and never serve an expired token.
func TestSkewedClocksFetchOncePerRotation(t *testing.T) {
	t.Parallel()
	port := startRedis(t)
	w := startWeChat(t, emulator.Config{TokenTTL: 16 * time.Second, Overlap: 4 * time.Second})
	fleet := startFleet(t, w, w.tokenBlock("classic"), 2, port, 1500*time.Millisecond, -1500*time.Millisecond)
	start := time.Now()
	l := startLoad(fleet, client)
	time.Sleep(26 * time.Second)
	l.finish(t)
	// A token every 8 s (half-life), renewed up to 3 s early by the member
	// whose clock is ahead: 3 or 4 in 26 s. Each member on its own would
	// make twice as many.
	if n := w.issuedSince(start); n > 4 {
		t.Fatalf("%d tokens in 26 s of 16 s tokens with clocks 3 s apart", n)
	}
	if st := w.Stats(); st.APIRejected[42001]+st.APIRejected[40001] > 0 {
		t.Fatalf("WeChat rejected tokens: %v", st.APIRejected)
	}
}
