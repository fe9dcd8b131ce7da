package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// (e) JS-SDK signatures: wechat_jssdk answering ?url= (a SHA-1 over the
// held ticket and a fresh nonce) against a respond of a fixed JSON answer
// of the same size in the same Caddy: what signing costs beyond Caddy
// answering a request at all.
const jssdkConcurrency = 16

// staticSignature is the respond site's answer: a signature's shape and size.
const staticSignature = `{"appId":"wxd000000000000001","timestamp":1700000000,"nonceStr":"Wm3WZYTPz0wzccnW","signature":"0f9de62fce790f9a083d5c99e95740ceb90c27ed"}`

type jssdkRun struct {
	rounds      int
	signRPS     []float64 // per round
	staticRPS   []float64
	signP99     []time.Duration
	staticP99   []time.Duration
	errors      int64
	verified    bool // a signature checked by the emulator as the page would
	ticketCalls int
}

func runJSSDK(ctx context.Context, o options, dir string, bins binaries) (*jssdkRun, error) {
	emu, emuBase, err := startEmulator(dir, bins, "jssdk-emulator")
	if err != nil {
		return nil, err
	}
	defer emu.stop()
	signPort, err := freePort()
	if err != nil {
		return nil, err
	}
	staticPort, err := freePort()
	if err != nil {
		return nil, err
	}
	cfg := caddyGlobal(dir, "jssdk") + fmt.Sprintf(`
http://127.0.0.1:%d {
	wechat_jssdk {
		app_id %s
		app_secret %s
		api_base %s
	}
}
http://127.0.0.1:%d {
	header Content-Type application/json
	respond `+"`%s`"+` 200
}
`, signPort, demoAppID, demoAppSecret, emuBase, staticPort, staticSignature)
	cdy, err := startCaddy(dir, bins.caddy, "jssdk", cfg, staticPort)
	if err != nil {
		return nil, err
	}
	defer cdy.stop()
	page := "https://example.com/page?from=bench"
	signURL := fmt.Sprintf("http://127.0.0.1:%d/?url=%s", signPort, url.QueryEscape(page))
	staticURL := fmt.Sprintf("http://127.0.0.1:%d/?url=%s", staticPort, url.QueryEscape(page))

	run := &jssdkRun{rounds: o.rounds}
	if run.verified, err = verifyOne(emuBase, signURL, page); err != nil {
		return nil, err
	}
	script := filepath.Join(dir, "jssdk.lua")
	if err := os.WriteFile(script, []byte(reportLua), 0o600); err != nil {
		return nil, err
	}
	for round := range o.rounds {
		targets := []string{signURL, staticURL}
		if round%2 == 1 {
			slices.Reverse(targets)
		}
		for _, target := range targets {
			res, err := runWrk(ctx, script, target, jssdkConcurrency, o.duration)
			if err != nil {
				return nil, fmt.Errorf("jssdk: %w", err)
			}
			run.errors += res.errors
			if target == signURL {
				run.signRPS, run.signP99 = append(run.signRPS, res.rps()), append(run.signP99, res.p99)
			} else {
				run.staticRPS, run.staticP99 = append(run.staticRPS, res.rps()), append(run.staticP99, res.p99)
			}
		}
		fmt.Fprintf(os.Stderr, "jssdk c=%d round %d  signatures %9.0f req/s  static %9.0f req/s\n",
			jssdkConcurrency, round+1, run.signRPS[round], run.staticRPS[round])
	}
	var stats struct {
		TicketCalls int `json:"ticket_calls"`
	}
	resp, err := controlClient.Get(emuBase + "/_emulator/stats")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(&stats); err != nil {
		return nil, err
	}
	run.ticketCalls = stats.TicketCalls
	return run, nil
}

// verifyOne asks for a signature and has the emulator check it as the
// JS-SDK would: a benchmark of wrong signatures would measure nothing.
func verifyOne(emuBase, signURL, page string) (bool, error) {
	resp, err := controlClient.Get(signURL)
	if err != nil {
		return false, fmt.Errorf("jssdk: %w", err)
	}
	defer resp.Body.Close()
	var s struct {
		AppID     string `json:"appId"`
		Timestamp int64  `json:"timestamp"`
		NonceStr  string `json:"nonceStr"`
		Signature string `json:"signature"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&s); err != nil {
		return false, fmt.Errorf("jssdk answer: %w", err)
	}
	q := url.Values{"appid": {s.AppID}, "url": {page}, "noncestr": {s.NonceStr},
		"timestamp": {fmt.Sprint(s.Timestamp)}, "signature": {s.Signature}}
	check, err := controlClient.Get(emuBase + "/_emulator/jssdk_verify?" + q.Encode())
	if err != nil {
		return false, err
	}
	defer check.Body.Close()
	var v struct {
		OK bool `json:"ok"`
	}
	err = json.NewDecoder(check.Body).Decode(&v)
	return v.OK, err
}

func (r *jssdkRun) markdown() string {
	var b strings.Builder
	fmt.Fprintf(&b, "\n### (e) JS-SDK signatures at %d connections\n\n", jssdkConcurrency)
	b.WriteString("`wechat_jssdk` signing `?url=` against a `respond` of a fixed answer of the same size in the same Caddy: what signing costs beyond answering at all. ")
	b.WriteString("Medians over rounds; the ratio is taken within each round. Targets: the signature verifies as the page would check it, no failed request, one ticket fetched.\n\n")
	b.WriteString("| signatures/s | fixed answers/s | ratio | p99 ms, signatures | p99 ms, fixed | failed | verified | getticket calls |\n")
	b.WriteString("|---:|---:|---:|---:|---:|---:|---|---:|\n")
	ratios := make([]float64, len(r.signRPS))
	for i := range r.signRPS {
		ratios[i] = r.signRPS[i] / r.staticRPS[i]
	}
	p99 := func(v []time.Duration) float64 {
		f := make([]float64, len(v))
		for i, d := range v {
			f[i] = ms(d)
		}
		return median(f)
	}
	fmt.Fprintf(&b, "| %.0f | %.0f | %.2f | %.2f | %.2f | %d | %s | %d |\n", median(r.signRPS), median(r.staticRPS), median(ratios),
		p99(r.signP99), p99(r.staticP99), r.errors, mark(r.verified), r.ticketCalls)
	return b.String()
}

func (r *jssdkRun) failures() []error {
	var errs []error
	if r.errors > 0 {
		errs = append(errs, fmt.Errorf("jssdk: %d failed requests", r.errors))
	}
	if !r.verified {
		errs = append(errs, fmt.Errorf("jssdk: the signature does not verify"))
	}
	if r.ticketCalls != 1 {
		errs = append(errs, fmt.Errorf("jssdk: %d getticket calls, want 1", r.ticketCalls))
	}
	return errs
}
