package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	vegeta "github.com/tsenart/vegeta/v12/lib"
)

// Scenario (f), a platform of 100,000 accounts: its steps (ticket, import,
// calls, memory, idleness) and the report.

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
