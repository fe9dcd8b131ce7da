package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"time"

	vegeta "github.com/tsenart/vegeta/v12/lib"
)

// Scenario (f): a third-party platform of 100,000 accounts in one Caddy,
// its storage on a real Redis so that what the proxy asks of the storage
// is counted by the storage itself (INFO commandstats). The proxy keeps a
// platform's accounts on one schedule: an account's token manager is made
// on its first request, renewed while the account is in use, and dropped
// once it is idle for a token's lifetime. What that costs is measured:
// memory per account in use, storage commands and WeChat calls per second
// once the accounts are idle, and the first request of an idle account.

// The platform, known to the emulator by -component and to the proxy by
// the wechat global option.
const (
	benchComponentAppID  = "wxbenchcomponent01"
	benchComponentSecret = "bench_component_secret_0123456789"
	benchComponentToken  = "bench_message_token"
	benchComponentAESKey = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"
	// benchPlatform is its name in the wechat app and the admin API.
	benchPlatform = "platform"
	// importBatch is how many accounts one call of the proxy's import
	// carries: about 2.4 MB of JSON, well under its 32 MiB cap.
	importBatch = 20_000
)

// platformParams size scenario (f).
type platformParams struct {
	accounts int           // imported
	used     int           // requested once each, spread over the imported
	probed   int           // of those, requested again once idle
	workers  int           // concurrency of the first use
	ttl      time.Duration // the emulator's token lifetime
}

// platformParamsFor: the full run has 100,000 accounts and tokens living
// 60 s. The scenario waits about 2.5 lifetimes (1.5 for the used accounts
// to go idle, one for the idle window), so 60 s keeps it to about three
// and a half minutes with the import, while staying 12 times the proxy's shortest accepted lifetime
// (5 s) and 4 times its 15 s poll of the fleet's withdrawals, which the
// idle window then sees several times. The smoke run proves the same
// targets with 2,000 accounts and 10 s lives in about 35 s.
func platformParamsFor(smoke bool) platformParams {
	if smoke {
		return platformParams{accounts: 2_000, used: 200, probed: 100, workers: 16, ttl: 10 * time.Second}
	}
	return platformParams{accounts: 100_000, used: 10_000, probed: 1_000, workers: 16, ttl: 60 * time.Second}
}

// inUseWindow is the window right after the first use: the accounts are
// in use, their first renewals not due before half a lifetime after
// their first request.
func (p platformParams) inUseWindow() time.Duration { return p.ttl / 4 }

// idleWindow is the window once the accounts are idle: a whole lifetime,
// so that a renewal of an idle account, were there any, falls in it.
func (p platformParams) idleWindow() time.Duration { return p.ttl }

// platformMark is the counters at one moment: the emulator's and Redis's.
type platformMark struct {
	at       time.Time
	stats    emulatorStats
	commands commandCounts
}

// platformSpan is what happened between two marks.
type platformSpan struct {
	length          time.Duration
	authorizerCalls int // api_authorizer_token: first fetches and renewals
	componentCalls  int // api_component_token
	commands        commandCounts
}

func (m platformMark) to(later platformMark) platformSpan {
	return platformSpan{
		length:          later.at.Sub(m.at),
		authorizerCalls: later.stats.AuthorizerCalls - m.stats.AuthorizerCalls,
		componentCalls:  later.stats.ComponentCalls - m.stats.ComponentCalls,
		commands:        later.commands.since(m.commands),
	}
}

// perSecond is the span's Redis commands per second.
func (s platformSpan) perSecond() float64 {
	if s.length <= 0 {
		return 0
	}
	return float64(s.commands.total()) / s.length.Seconds()
}

// platformRun is scenario (f)'s results.
type platformRun struct {
	params platformParams

	imported     platformSpan // the proxy's import of every account
	firstUse     platformSpan // one request for each account used
	use          window
	rssImported  int64 // after the import, before any request (bytes)
	rssUsed      int64 // after the first use
	heapImported uint64
	heapUsed     uint64
	afterUse     platformSpan // right after the first use: in use, no request
	inUse        platformSpan // from the end of the first use until idle: the renewals
	idle         platformSpan // once idle, no request
	probeSpan    platformSpan // the first request of accounts idle
	probe        window
}

// platformEnv is the scenario's processes: Redis, the emulator playing
// the platform's WeChat, and one Caddy with its admin endpoint.
type platformEnv struct {
	*wechatEnv
	redis *redisServer
	admin string
}

func (e *platformEnv) stop() {
	e.wechatEnv.stop()
	e.redis.stop()
}

func (e *platformEnv) mark() (platformMark, error) {
	m := platformMark{at: time.Now()}
	var err error
	if m.stats, err = e.stats(); err != nil {
		return m, err
	}
	if m.commands, err = e.redis.commandCounts(); err != nil {
		return m, fmt.Errorf("count Redis commands: %w", err)
	}
	return m, nil
}

// platformCaddyfile is one Caddy with the platform in the wechat app, its
// storage on Redis, its event URL and its accounts' route.
func platformCaddyfile(adminPort, sitePort, redisPort int, emuBase string) string {
	return fmt.Sprintf(`{
	admin 127.0.0.1:%[1]d
	persist_config off
	storage redis {
		host 127.0.0.1
		port %[2]d
		key_prefix wechat_bench
	}
	wechat {
		component %[3]s {
			component_appid %[4]s
			component_appsecret %[5]s
			token %[6]s
			encoding_aes_key %[7]s
			api_base %[8]s
		}
	}
}

http://127.0.0.1:%[9]d {
	handle /events {
		wechat_component_events %[3]s
	}
	handle_path /authorizer/* {
		wechat_token {
			component %[3]s
			authorizer path
		}
		reverse_proxy %[8]s {
			transport http {
				keepalive_idle_conns_per_host 256
			}
		}
	}
}
`, adminPort, redisPort, benchPlatform, benchComponentAppID, benchComponentSecret, benchComponentToken, benchComponentAESKey,
		emuBase, sitePort)
}

func startPlatformEnv(dir string, bins binaries, p platformParams) (env *platformEnv, err error) {
	var started []interface{ stop() }
	defer func() {
		if err != nil {
			for i := len(started) - 1; i >= 0; i-- {
				started[i].stop()
			}
		}
	}()
	rds, err := startRedis(dir, "platform-redis")
	if err != nil {
		return nil, err
	}
	started = append(started, rds)
	component := strings.Join([]string{benchComponentAppID, benchComponentSecret, benchComponentToken, benchComponentAESKey}, ":")
	emu, emuBase, err := startEmulator(dir, bins, "platform-emulator", "-ttl", p.ttl.String(), "-component", component)
	if err != nil {
		return nil, err
	}
	started = append(started, emu)
	sitePort, err := freePort()
	if err != nil {
		return nil, err
	}
	adminPort, err := freePort()
	if err != nil {
		return nil, err
	}
	cdy, err := startCaddy(dir, bins.caddy, "platform", platformCaddyfile(adminPort, sitePort, rds.port, emuBase), sitePort)
	if err != nil {
		return nil, err
	}
	return &platformEnv{
		wechatEnv: &wechatEnv{emulator: emu, emuBase: emuBase, caddy: cdy, base: fmt.Sprintf("http://127.0.0.1:%d", sitePort)},
		redis:     rds, admin: fmt.Sprintf("http://127.0.0.1:%d", adminPort),
	}, nil
}

// bulkClient carries the large calls: the emulator's list of 100,000
// accounts, the proxy's import.
var bulkClient = &http.Client{Timeout: 5 * time.Minute}

func runPlatform(ctx context.Context, o options, dir string, bins binaries) (*platformRun, error) {
	p := platformParamsFor(o.smoke)
	run := &platformRun{params: p}
	env, err := startPlatformEnv(dir, bins, p)
	if err != nil {
		return nil, err
	}
	defer env.stop()
	if err := env.pushTicket(); err != nil {
		return nil, err
	}
	if err := env.waitComponentToken(ctx, 20*time.Second); err != nil {
		return nil, err
	}

	// Import: the emulator makes the accounts, the proxy's admin API
	// takes them; no token is fetched for any.
	accounts, err := env.emulatorAccounts(p.accounts)
	if err != nil {
		return nil, err
	}
	before, err := env.mark()
	if err != nil {
		return nil, err
	}
	if err := env.importAccounts(accounts); err != nil {
		return nil, err
	}
	after, err := env.mark()
	if err != nil {
		return nil, err
	}
	run.imported = before.to(after)
	fmt.Fprintf(os.Stderr, "platform: %d accounts imported in %.1f s\n", p.accounts, run.imported.length.Seconds())
	if run.rssImported, run.heapImported, err = env.memory(); err != nil {
		return nil, err
	}

	// First use: one request for every used account, spread over the
	// imported ones.
	used := make([]string, p.used)
	for i := range used {
		used[i] = accounts[i*(p.accounts/p.used)].AppID
	}
	if before, err = env.mark(); err != nil {
		return nil, err
	}
	samples, err := callAccounts(ctx, env.base, used, p.workers)
	if err != nil {
		return nil, err
	}
	useEnd, err := env.mark()
	if err != nil {
		return nil, err
	}
	run.firstUse, run.use = before.to(useEnd), summarise(samples, time.Time{}, useEnd.at.Add(time.Hour))
	fmt.Fprintf(os.Stderr, "platform: %d accounts used in %.1f s, %d failed\n", p.used, run.firstUse.length.Seconds(), run.use.failed)
	if run.rssUsed, run.heapUsed, err = env.memory(); err != nil {
		return nil, err
	}

	// In use, no request: a window before the first renewals.
	if before, err = env.mark(); err != nil {
		return nil, err
	}
	if err := sleepCtx(ctx, p.inUseWindow()); err != nil {
		return nil, err
	}
	if after, err = env.mark(); err != nil {
		return nil, err
	}
	run.afterUse = before.to(after)

	// Renewed once, then dropped as idle.
	if err := env.waitIdle(ctx, useEnd, p.ttl); err != nil {
		return nil, err
	}
	idleStart, err := env.mark()
	if err != nil {
		return nil, err
	}
	run.inUse = useEnd.to(idleStart)
	fmt.Fprintf(os.Stderr, "platform: %d renewals while in use; idle window of %s ...\n", run.inUse.authorizerCalls, p.idleWindow())
	if err := sleepCtx(ctx, p.idleWindow()); err != nil {
		return nil, err
	}
	idleEnd, err := env.mark()
	if err != nil {
		return nil, err
	}
	run.idle = idleStart.to(idleEnd)

	// The first request of accounts dropped as idle, one at a time.
	samples, err = callAccounts(ctx, env.base, used[:p.probed], 1)
	if err != nil {
		return nil, err
	}
	probeEnd, err := env.mark()
	if err != nil {
		return nil, err
	}
	run.probeSpan, run.probe = idleEnd.to(probeEnd), summarise(samples, time.Time{}, probeEnd.at.Add(time.Hour))
	return run, nil
}

// sleepCtx waits d: a measuring window of a fixed length.
func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// pushTicket has the emulator push a component_verify_ticket to the
// proxy's event URL, as WeChat does every 10 minutes.
func (e *platformEnv) pushTicket() error {
	q := url.Values{"appid": {benchComponentAppID}, "info_type": {"component_verify_ticket"},
		"url": {e.base + "/events"}, "attempts": {"1"}}
	resp, err := bulkClient.Post(e.emuBase+"/_emulator/component_push?"+q.Encode(), "", nil)
	if err != nil {
		return fmt.Errorf("ticket push: %w", err)
	}
	defer resp.Body.Close()
	var answer struct {
		Accepted bool   `json:"accepted"`
		Error    string `json:"error"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&answer); err != nil || !answer.Accepted {
		return fmt.Errorf("ticket push: %s, not accepted (%v %s)\n%s", resp.Status, err, answer.Error, e.caddy.logTail())
	}
	return nil
}

// componentStatus is the part of GET /wechat_token/components/{name}
// the scenario reads.
type componentStatus struct {
	Token *struct {
		Valid bool `json:"valid"`
	} `json:"component_access_token"`
}

func (e *platformEnv) componentStatus() (componentStatus, error) {
	var st componentStatus
	resp, err := bulkClient.Get(e.admin + "/wechat_token/components/" + benchPlatform)
	if err != nil {
		return st, fmt.Errorf("platform status: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return st, fmt.Errorf("platform status: %s", resp.Status)
	}
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		return st, fmt.Errorf("platform status: %w", err)
	}
	return st, nil
}

// waitComponentToken waits until the proxy holds the platform's token,
// fetched with the ticket pushed.
func (e *platformEnv) waitComponentToken(ctx context.Context, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		st, err := e.componentStatus()
		if err == nil && st.Token != nil && st.Token.Valid {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("no component_access_token %s after the ticket (%v)\n%s", timeout, err, e.caddy.logTail())
		}
		if err := sleepCtx(ctx, 100*time.Millisecond); err != nil {
			return err
		}
	}
}

// importedAccount is an account and its refresh token, as the emulator
// answers them and the proxy's import takes them.
type importedAccount struct {
	AppID        string `json:"authorizer_appid"`
	RefreshToken string `json:"authorizer_refresh_token"`
}

// emulatorAccounts has the emulator make n accounts that authorized the
// platform.
func (e *platformEnv) emulatorAccounts(n int) ([]importedAccount, error) {
	q := url.Values{"appid": {benchComponentAppID}, "count": {fmt.Sprint(n)}, "prefix": {"wxbench"}}
	resp, err := bulkClient.Post(e.emuBase+"/_emulator/import_authorizers?"+q.Encode(), "", nil)
	if err != nil {
		return nil, fmt.Errorf("emulator import_authorizers: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 500))
		return nil, fmt.Errorf("emulator import_authorizers: %s %s", resp.Status, b)
	}
	var accounts []importedAccount
	if err := json.NewDecoder(resp.Body).Decode(&accounts); err != nil {
		return nil, fmt.Errorf("emulator import_authorizers: %w", err)
	}
	if len(accounts) != n {
		return nil, fmt.Errorf("emulator import_authorizers: %d accounts, asked for %d", len(accounts), n)
	}
	return accounts, nil
}

// importAccounts gives the proxy the accounts through its admin API, in
// batches.
func (e *platformEnv) importAccounts(accounts []importedAccount) error {
	for from := 0; from < len(accounts); from += importBatch {
		batch := accounts[from:min(from+importBatch, len(accounts))]
		body, err := json.Marshal(batch)
		if err != nil {
			return fmt.Errorf("import: %w", err)
		}
		resp, err := bulkClient.Post(e.admin+"/wechat_token/components/"+benchPlatform+"/authorizers", "application/json", bytes.NewReader(body))
		if err != nil {
			return fmt.Errorf("import accounts %d–%d: %w", from, from+len(batch), err)
		}
		answer, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		var got struct {
			Imported int `json:"imported"`
		}
		if err != nil || resp.StatusCode != http.StatusOK || json.Unmarshal(answer, &got) != nil || got.Imported != len(batch) {
			return fmt.Errorf("import accounts %d–%d: %s %.300s (%v)", from, from+len(batch), resp.Status, answer, err)
		}
	}
	return nil
}

// memory has Caddy collect its garbage (its admin's heap profile with
// gc=1), then reads its RSS and live heap (expvar's memstats): garbage
// not yet collected is no account's cost.
func (e *platformEnv) memory() (rss int64, heap uint64, err error) {
	resp, err := bulkClient.Get(e.admin + "/debug/pprof/heap?gc=1")
	if err != nil {
		return 0, 0, fmt.Errorf("collect Caddy's garbage: %w", err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp, err = bulkClient.Get(e.admin + "/debug/vars"); err != nil {
		return 0, 0, fmt.Errorf("memstats of Caddy: %w", err)
	}
	defer resp.Body.Close()
	var vars struct {
		MemStats struct {
			HeapAlloc uint64 `json:"HeapAlloc"`
		} `json:"memstats"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&vars); err != nil {
		return 0, 0, fmt.Errorf("memstats of Caddy: %w", err)
	}
	if rss, err = currentRSS(e.caddy.pids); err != nil {
		return 0, 0, err
	}
	return rss, vars.MemStats.HeapAlloc, nil
}

// waitIdle waits until every account used is dropped as idle. An account
// requested once at u has its token renewed once, at half to three
// quarters of a lifetime after it was fetched, and is dropped at its next
// renewal time, when it has had no request for a lifetime: by u + 1.5
// lifetimes, or three quarters of a lifetime after the last renewal if
// renewals ran late. So this waits for both (the renewals seen by polling
// the emulator), with slack for the scheduler, and at most three
// lifetimes after the first use: a proxy that goes on renewing idle
// accounts is then caught by the idle window that follows.
func (e *platformEnv) waitIdle(ctx context.Context, useEnd platformMark, ttl time.Duration) error {
	slack := ttl/10 + time.Second
	poll := min(max(ttl/60, 100*time.Millisecond), time.Second)
	seen, lastRenewal := useEnd.stats.AuthorizerCalls, useEnd.at
	latest := useEnd.at.Add(3 * ttl)
	for {
		until := useEnd.at.Add(ttl * 3 / 2)
		if late := lastRenewal.Add(ttl * 3 / 4); late.After(until) {
			until = late
		}
		until = until.Add(slack)
		if until.After(latest) {
			until = latest
		}
		left := time.Until(until)
		if left <= 0 {
			return nil
		}
		if err := sleepCtx(ctx, min(poll, left)); err != nil {
			return err
		}
		s, err := e.stats()
		if err != nil {
			return err
		}
		if s.AuthorizerCalls > seen {
			seen, lastRenewal = s.AuthorizerCalls, time.Now()
		}
	}
}

// callAccounts requests each account once through the proxy's accounts'
// route, from workers at once, and checks that the answer is WeChat's
// success with that account's own token (the emulator's echo names it).
func callAccounts(ctx context.Context, base string, ids []string, workers int) ([]sample, error) {
	client := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: workers}}
	defer client.CloseIdleConnections()
	next := make(chan string)
	var mu sync.Mutex
	samples := make([]sample, 0, len(ids))
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for id := range next {
				s := callAccount(ctx, client, base, id)
				mu.Lock()
				samples = append(samples, s)
				mu.Unlock()
			}
		}()
	}
	for _, id := range ids {
		if ctx.Err() != nil {
			break
		}
		next <- id
	}
	close(next)
	wg.Wait()
	return samples, ctx.Err()
}

func callAccount(ctx context.Context, client *http.Client, base, id string) sample {
	s := sample{at: time.Now()}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/authorizer/"+id+"/cgi-bin/user/info?openid=o1", nil)
	if err != nil {
		s.failure = err.Error()
		return s
	}
	res := vegeta.Result{}
	resp, err := client.Do(req)
	if err == nil {
		res.Code = uint16(resp.StatusCode)
		res.Body, err = io.ReadAll(resp.Body)
		resp.Body.Close()
	}
	s.latency = time.Since(s.at)
	if err != nil {
		res.Error = err.Error()
	}
	if s.failure = failureOf(&res); s.failure == "" {
		var echo struct {
			AppID     string `json:"appid"`
			Component string `json:"component_appid"`
		}
		if json.Unmarshal(res.Body, &echo) != nil || echo.AppID != id || echo.Component != benchComponentAppID {
			s.failure = "not the account's token"
		}
	}
	return s
}

func (r *platformRun) markdown() string {
	p := r.params
	var b strings.Builder
	fmt.Fprintf(&b, "\n### (f) A platform of %d accounts in one Caddy\n\n", p.accounts)
	fmt.Fprintf(&b, "%d accounts imported through the admin API, %d of them requested once each (%d at a time) through `authorizer path`, "+
		"storage on Redis (commands counted by Redis, `INFO commandstats`), tokens living %s. After the first use the accounts are in use "+
		"(renewed once), then idle (a lifetime without a request) and dropped; then %d of them are requested again, one at a time. "+
		"Targets: no failed request, no token fetched by the import, one per account at its first request, no renewal once idle.\n\n",
		p.accounts, p.used, p.workers, p.ttl, p.probed)
	b.WriteString("| phase | accounts | seconds | requests | failed | p50 ms | p99 ms | `api_authorizer_token` calls (target) | Redis commands | per account |\n")
	b.WriteString("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	row := func(phase string, n int, s platformSpan, w *window, calls string) {
		req, failed, p50, p99 := "–", "–", "–", "–"
		if w != nil {
			req, failed = fmt.Sprint(w.requests), fmt.Sprintf("%d%s", w.failed, w.reasonText())
			p50, p99 = fmt.Sprintf("%.2f", ms(w.p50)), fmt.Sprintf("%.2f", ms(w.p99))
		}
		fmt.Fprintf(&b, "| %s | %d | %.1f | %s | %s | %s | %s | %s | %d | %.1f |\n", phase, n, s.length.Seconds(), req, failed, p50, p99,
			calls, s.commands.total(), float64(s.commands.total())/float64(max(n, 1)))
	}
	target := func(got, want int) string { return fmt.Sprintf("%d (%d) %s", got, want, mark(got == want)) }
	row("import", p.accounts, r.imported, nil, target(r.imported.authorizerCalls, 0))
	row("first request", p.used, r.firstUse, &r.use, target(r.firstUse.authorizerCalls, p.used))
	row("in use until idle: renewals", p.used, r.inUse, nil, fmt.Sprint(r.inUse.authorizerCalls))
	row("first request once idle", p.probed, r.probeSpan, &r.probe, fmt.Sprint(r.probeSpan.authorizerCalls))

	b.WriteString("\nMemory of the Caddy process, each read after a forced garbage collection:\n\n")
	b.WriteString("| RSS after import MiB | RSS after first use MiB | RSS per account in use, bytes | live heap per account in use, bytes |\n")
	b.WriteString("|---:|---:|---:|---:|\n")
	fmt.Fprintf(&b, "| %.1f | %.1f | %.0f | %.0f |\n", float64(r.rssImported)/(1<<20), float64(r.rssUsed)/(1<<20),
		float64(r.rssUsed-r.rssImported)/float64(p.used), (float64(r.heapUsed)-float64(r.heapImported))/float64(p.used))

	b.WriteString("\nWithout requests: storage commands and WeChat calls.\n\n")
	b.WriteString("| window | seconds | accounts in use | Redis commands | per second | per account per hour | commands | `api_authorizer_token` calls (target) | per second | `api_component_token` calls |\n")
	b.WriteString("|---|---:|---:|---:|---:|---:|---|---:|---:|---:|\n")
	win := func(name string, inUse, per int, s platformSpan, calls string) {
		fmt.Fprintf(&b, "| %s | %.1f | %d | %d | %.2f | %.4f | %s | %s | %.2f | %d |\n", name, s.length.Seconds(), inUse, s.commands.total(),
			s.perSecond(), s.perSecond()*3600/float64(per), s.commands.text(), calls,
			float64(s.authorizerCalls)/max(s.length.Seconds(), 1e-9), s.componentCalls)
	}
	win("right after the first use", p.used, p.used, r.afterUse, fmt.Sprint(r.afterUse.authorizerCalls))
	win("idle", 0, p.accounts, r.idle, target(r.idle.authorizerCalls, 0))
	fmt.Fprintf(&b, "\n\"Per account per hour\" is per account in use right after the first use, per account imported (%d) once idle. "+
		"What remains once idle is the platform's own, whatever its number of accounts: its component_access_token "+
		"(renewed every half to three quarters of its %s lifetime, and re-read from the storage meanwhile, so that a fleet shares it) "+
		"and the fleet's withdrawals, read every 15 s.\n", p.accounts, p.ttl)
	return b.String()
}

// failures are scenario (f)'s targets that do not depend on speed.
func (r *platformRun) failures() []error {
	var errs []error
	p := r.params
	for _, c := range []struct {
		what string
		w    window
	}{{"first requests", r.use}, {"first requests once idle", r.probe}} {
		if c.w.failed > 0 {
			errs = append(errs, fmt.Errorf("platform: %d of %d %s failed%s", c.w.failed, c.w.requests, c.what, c.w.reasonText()))
		}
	}
	if n := r.imported.authorizerCalls; n != 0 {
		errs = append(errs, fmt.Errorf("platform: %d token fetches during the import of %d accounts, want none", n, p.accounts))
	}
	if n := r.firstUse.authorizerCalls; n != p.used {
		hint := ""
		if r.firstUse.length > p.ttl/2 {
			// Renewals begin half a lifetime after the first fetches.
			hint = fmt.Sprintf(" (the first use took %s, over half the tokens' %s lifetime: renewals may be counted)", r.firstUse.length.Round(time.Millisecond), p.ttl)
		}
		errs = append(errs, fmt.Errorf("platform: %d token fetches for the first requests of %d accounts, want one each%s", n, p.used, hint))
	}
	if n := r.idle.authorizerCalls; n != 0 {
		errs = append(errs, fmt.Errorf("platform: %d renewals in the %s idle window, want none once the accounts are idle", n, r.idle.length.Round(time.Second)))
	}
	return errs
}
