package main

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"strings"
	"time"
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
