package tests

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"math/rand/v2"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddy-wechat/caddy-wechat/emulator"
)

// TestSoak runs steady load through the proxy while WeChat misbehaves at
// random: tokens living 6 s, revocations, and token-endpoint outages. It
// counts every request and every token, and fails on any request that
// did not get WeChat's success, or on fetches beyond what revocations and
// renewals explain (more than 1.1 × that minimum).
//
// It runs for 30 s in make test, or for WECHAT_SOAK (a duration);
// WECHAT_SOAK_LOG names a file to save Caddy's own log in:
//
//	make soak                                  # 10 minutes, report printed
//	WECHAT_SOAK=1h go test -run TestSoak -v -timeout 2h ./tests
func TestSoak(t *testing.T) {
	w := startWeChat(t, emulator.Config{TokenTTL: soakTokenLife, Overlap: 2 * time.Second})
	runSoak(t, w, []*caddy{startCaddyWith(t, w, soakSite(w), soakOptions("", 0))}, nil)
}

// TestSoakFleetOnRedis is the soak against three instances sharing Redis,
// the load spread over them, their clocks ±150 ms apart (2.5 % of a token's
// life: as two minutes are of WeChat's two hours, doubled), and Redis
// restarted now and then: WeChat must see the tokens of one instance.
func TestSoakFleetOnRedis(t *testing.T) {
	w := startWeChat(t, emulator.Config{TokenTTL: soakTokenLife, Overlap: 2 * time.Second})
	redis := startRedisServer(t)
	storage := redisStorage(redis.port)
	var fleet []*caddy
	for _, offset := range soakClockOffsets {
		fleet = append(fleet, startCaddyWith(t, w, soakSite(w), soakOptions(storage, offset)))
	}
	runSoak(t, w, fleet, redis)
}

// soakClockOffsets are the clocks of the fleet soak's instances.
var soakClockOffsets = []time.Duration{-150 * time.Millisecond, 0, 150 * time.Millisecond}

// soakTokenLife is the emulator's token lifetime in the soaks.
const soakTokenLife = 6 * time.Second

// soakSite is the site of a soak instance. Time is compressed: tokens
// live seconds, so refreshes may come seconds apart too (the default
// limit is one a minute after a burst).
func soakSite(w *wechat) string {
	return w.tokenBlock("classic", "fetch_timeout 2s", "min_refresh_interval 1s")
}

// soakOptions run Caddy at info level without an access log: millions of
// requests would otherwise be logged into the test's memory, and pauses
// of seconds while it grows are hours of compressed WeChat time.
func soakOptions(storage string, clockOffset time.Duration) caddyOptions {
	return caddyOptions{logLevel: "INFO", noAccessLog: true, storageConfig: storage, clockOffset: clockOffset}
}

// runSoak loads fleet while WeChat misbehaves, for 30 s or WECHAT_SOAK,
// and reports and checks the outcome (see TestSoak). With redis, the
// fleet's Redis is restarted as one of the misbehaviours.
func runSoak(t *testing.T, w *wechat, fleet []*caddy, redis *redisServer) {
	duration := 30 * time.Second
	if v := os.Getenv("WECHAT_SOAK"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			t.Fatalf("WECHAT_SOAK=%q: %v", v, err)
		}
		duration = d
	}
	const ttl = soakTokenLife

	var (
		sent, ok atomic.Int64
		mu       sync.Mutex
		failures = map[string]int{}
		when     = map[string][2]time.Duration{} // first and last failure, since start
	)
	start := time.Now()
	fail := func(why string) {
		at := time.Since(start).Round(time.Millisecond)
		mu.Lock()
		if failures[why] == 0 {
			when[why] = [2]time.Duration{at, at}
		}
		failures[why]++
		when[why] = [2]time.Duration{when[why][0], at}
		mu.Unlock()
	}
	stop := make(chan struct{})
	var load sync.WaitGroup
	// The longest time this process was not scheduled: token lives are
	// compressed 1200-fold, so a pause of the machine of a few seconds is
	// hours of WeChat time, and the report should show one.
	var longestPause atomic.Int64
	load.Go(func() {
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		last := time.Now()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			now := time.Now()
			if gap := now.Sub(last); gap > time.Duration(longestPause.Load()) {
				longestPause.Store(int64(gap))
			}
			last = now
		}
	})
	soakClient := &http.Client{Timeout: 15 * time.Second}
	for worker := range 16 {
		load.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				sent.Add(1)
				if why := soakRequest(soakClient, fleet[worker%len(fleet)], worker, i); why != "" {
					fail(why)
				} else {
					ok.Add(1)
				}
			}
		})
	}

	// WeChat's misbehaviour, one thing at a time, 2 to 3.5 s apart: an
	// outage never hides a revocation, and outages (0.3 to 1.2 s) are
	// shorter than the 3 s between a renewal and the token's expiry, so
	// that every failure is one a retry could have fixed. (An outage
	// outlasting the token is covered by
	// TestOutageAcrossExpiryRecoversWithinSeconds.)
	var revocations []time.Time
	var outages, redisRestarts int
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 0))
	end := time.Now().Add(duration)
	for time.Now().Before(end) {
		time.Sleep(time.Duration(2000+rng.IntN(1500)) * time.Millisecond)
		kinds := 2
		if redis != nil {
			kinds = 3
		}
		switch rng.IntN(kinds) {
		case 0:
			revocations = append(revocations, time.Now())
			w.Revoke(w.AppID)
			continue
		case 2:
			// Redis crashes and comes back 0.3 to 1 s later.
			redisRestarts++
			redis.Stop()
			time.Sleep(time.Duration(300+rng.IntN(700)) * time.Millisecond)
			redis.Start()
			continue
		}
		outages++
		w.SetFaults(emulator.Faults{TokenEndpoint: []string{emulator.FaultBusy, emulator.FaultHTTP503, emulator.FaultReset}[rng.IntN(3)]})
		time.Sleep(time.Duration(300+rng.IntN(900)) * time.Millisecond)
		w.SetFaults(emulator.Faults{})
	}
	close(stop)
	load.Wait()

	// Tell each token's reason from WeChat's side: a revocation since the
	// previous token, or the previous one reaching half its life (the
	// proxy renews at half-life when tokens live less than 10 minutes; an
	// instance whose clock is ahead renews the tokens of one behind early
	// by the difference).
	skew := slices.Max(soakClockOffsets) - slices.Min(soakClockOffsets)
	if len(fleet) == 1 {
		skew = 0
	}
	history := w.History(w.AppID)
	reasons := map[string]int{"first": 1}
	for i := 1; i < len(history); i++ {
		prev, cur := history[i-1].At, history[i].At
		switch {
		case slices.ContainsFunc(revocations, func(r time.Time) bool { return !r.Before(prev) && r.Before(cur) }):
			reasons["after a revocation"]++
		case cur.Sub(prev) >= ttl/2-200*time.Millisecond-skew:
			reasons["renewal"]++
		default:
			reasons["unexplained"]++
			t.Logf("unexplained token at %s, %s after the previous", cur.Sub(start).Round(time.Millisecond), cur.Sub(prev).Round(time.Millisecond))
		}
	}
	minimum := len(history) - reasons["unexplained"]
	stats := w.Stats()

	var report strings.Builder
	fmt.Fprintf(&report, "soak of %s, %d instance(s): token life %s, %d revocations, %d token-endpoint outages", duration, len(fleet), ttl, len(revocations), outages)
	if redis != nil {
		fmt.Fprintf(&report, ", %d Redis restarts, clocks %s apart", redisRestarts, skew)
	}
	report.WriteString("\n")
	fmt.Fprintf(&report, "requests sent %d, answered OK %d, failed %d\n", sent.Load(), ok.Load(), sent.Load()-ok.Load())
	for why, n := range failures {
		fmt.Fprintf(&report, "  failed: %d × %s, from %s to %s into the run\n", n, why, when[why][0], when[why][1])
	}
	fmt.Fprintf(&report, "longest pause of the test process %s\n", time.Duration(longestPause.Load()).Round(time.Millisecond))
	var byReason []string
	for _, why := range slices.Sorted(maps.Keys(reasons)) {
		byReason = append(byReason, fmt.Sprintf("%s %d", why, reasons[why]))
	}
	fmt.Fprintf(&report, "tokens issued %d (minimum %d: %s), token endpoint calls %d\n", len(history), minimum, strings.Join(byReason, ", "), stats.TokenCalls)
	// "renewal" above only says a token came at least half a life after the
	// previous: a proxy renewing when WeChat answers 42001 would fit it.
	// Renewal before expiry means no request ever met an expired token.
	fmt.Fprintf(&report, "requests WeChat answered 42001 (expired token): %d\n", stats.APIRejected[42001])
	t.Log(report.String())
	if n := stats.APIRejected[42001]; n != 0 {
		t.Errorf("%d requests reached WeChat with an expired token: a renewal came too late", n)
	}

	if path := os.Getenv("WECHAT_SOAK_LOG"); path != "" {
		var logs strings.Builder
		for _, c := range fleet {
			logs.WriteString(c.logs.String())
		}
		if err := os.WriteFile(path, []byte(logs.String()), 0o600); err != nil {
			t.Errorf("saving Caddy's log: %v", err)
		}
	}
	if len(failures) > 0 {
		var state strings.Builder
		for i, c := range fleet {
			var apps any
			c.adminCall(t, http.MethodGet, "/wechat_token/apps", &apps)
			status, _ := json.Marshal(apps)
			fmt.Fprintf(&state, "instance %d status: %s\ngoroutines of its token manager:\n%s\n", i, status, c.managerGoroutines(t))
		}
		t.Errorf("requests failed under the soak:\n%s\n%s", report.String(), state.String())
	}
	if float64(len(history)) > 1.1*float64(minimum) {
		t.Errorf("%d tokens issued, more than 1.1 × the %d that revocations and renewals explain", len(history), minimum)
	}
	if sent.Load() < int64(duration/time.Second)*10 {
		t.Errorf("only %d requests in %s: the load did not run", sent.Load(), duration)
	}
}

// soakRequest makes one GET or POST through the proxy and says why it
// failed, or "" when WeChat's success came back intact.
func soakRequest(client *http.Client, c *caddy, worker, i int) string {
	var req *http.Request
	var body []byte
	if i%4 == 3 {
		body = fmt.Appendf(nil, `{"touser":"o%d","msgtype":"text","text":{"content":"%d"}}`, worker, i)
		req, _ = http.NewRequest(http.MethodPost, c.url("/cgi-bin/message/custom/send"), bytes.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
	} else {
		req, _ = http.NewRequest(http.MethodGet, c.url(fmt.Sprintf("/cgi-bin/user/info?openid=o%d-%d", worker, i)), nil)
	}
	resp, err := client.Do(req)
	if err != nil {
		return "transport: " + err.Error()
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		return "reading: " + err.Error()
	}
	var echo emulator.Echo
	if err := json.Unmarshal(raw, &echo); err != nil {
		return fmt.Sprintf("HTTP %d, not JSON", resp.StatusCode)
	}
	switch {
	case resp.StatusCode != http.StatusOK || echo.Errcode != 0:
		return fmt.Sprintf("HTTP %d errcode %d", resp.StatusCode, echo.Errcode)
	case body != nil && echo.BodySHA256 != sha(body):
		return "body altered"
	case echo.TokenParams != 1:
		return fmt.Sprintf("%d tokens sent", echo.TokenParams)
	}
	return ""
}

// managerGoroutines is the stacks of Caddy's goroutines in the token
// package, from the admin API's pprof endpoint, to show a stuck loop.
func (c *caddy) managerGoroutines(t *testing.T) string {
	resp, err := client.Get("http://" + c.admin + "/debug/pprof/goroutine?debug=2")
	if err != nil {
		return err.Error()
	}
	defer resp.Body.Close()
	all, _ := io.ReadAll(resp.Body)
	var out []string
	for _, g := range strings.Split(string(all), "\n\n") {
		if strings.Contains(g, "caddymodule/token") {
			out = append(out, g)
		}
	}
	return strings.Join(out, "\n\n")
}
