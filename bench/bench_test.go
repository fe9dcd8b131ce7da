package main

import (
	"bufio"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	vegeta "github.com/tsenart/vegeta/v12/lib"
)

// The benchmark's own logic: what decides its verdicts must be right. The
// whole driver runs in CI as `make bench-smoke`.

func TestPatternCheckFindsAlteredByte(t *testing.T) {
	media := make([]byte, 3000)
	for i := range media {
		media[i] = byte(i % 251)
	}
	good := &patternCheck{}
	_, _ = good.Write(media[:1000])
	_, _ = good.Write(media[1000:])
	if good.bad != -1 {
		t.Fatalf("intact media reported bad at %d", good.bad)
	}
	media[1500] ^= 1
	bad := &patternCheck{}
	_, _ = bad.Write(media[:1000])
	_, _ = bad.Write(media[1000:])
	if bad.bad != 1500 {
		t.Fatalf("altered byte 1500 reported at %d", bad.bad)
	}
}

func TestFailureOf(t *testing.T) {
	for _, c := range []struct {
		res  vegeta.Result
		want string
	}{
		{vegeta.Result{Code: 200, Body: []byte(`{"errcode":0,"errmsg":"ok"}`)}, ""},
		{vegeta.Result{Code: 200, Body: []byte(`{"errmsg":"ok","errcode":0}`)}, ""},
		{vegeta.Result{Code: 200, Body: []byte(`{"errcode":40001,"errmsg":"invalid credential"}`)}, "errcode 40001"},
		{vegeta.Result{Code: 503, Body: []byte(`{"errcode":-1}`)}, "HTTP 503"},
		{vegeta.Result{Code: 200, Body: []byte(`<html>`)}, "not a WeChat answer"},
		{vegeta.Result{Code: 200, Body: []byte(`{"openid":"o1"}`)}, "not a WeChat answer"},
		{vegeta.Result{Error: "connection reset"}, "transport: connection reset"},
	} {
		if got := failureOf(&c.res); got != c.want {
			t.Errorf("failureOf(%d %s %q) = %q, want %q", c.res.Code, c.res.Body, c.res.Error, got, c.want)
		}
	}
}

func TestPairedRatioPairsRounds(t *testing.T) {
	a := &cell{byRound: map[int]trial{0: {rps: 90}, 1: {rps: 200}, 2: {rps: 99}}}
	b := &cell{byRound: map[int]trial{0: {rps: 100}, 1: {rps: 200}, 2: {rps: 100}}}
	if got := pairedRatio(a, b, func(t trial) float64 { return t.rps }); got != 0.99 {
		t.Fatalf("median of 0.9, 1, 0.99 = %v, want 0.99", got)
	}
	if lo, hi := pairedRange(a, b, func(t trial) float64 { return t.rps }); lo != 0.9 || hi != 1 {
		t.Fatalf("range = %v–%v, want 0.9–1", lo, hi)
	}
	if got := median([]float64{4, 1, 3, 2}); got != 2.5 {
		t.Fatalf("median = %v, want 2.5", got)
	}
}

func TestSummariseWindow(t *testing.T) {
	t0 := time.Now()
	var samples []sample
	for i := range 100 {
		s := sample{at: t0.Add(time.Duration(i) * 10 * time.Millisecond), latency: time.Duration(i+1) * time.Millisecond}
		if i == 50 {
			s.failure = "errcode 40001"
		}
		samples = append(samples, s)
	}
	w := summarise(samples, t0.Add(500*time.Millisecond), t0.Add(time.Second))
	if w.requests != 50 || w.failed != 1 || w.p50 != 76*time.Millisecond || w.p99 != 100*time.Millisecond {
		t.Fatalf("window = %+v", w)
	}
	if !strings.Contains(w.reasonText(), "1× errcode 40001") {
		t.Fatalf("reasons = %q", w.reasonText())
	}
}

// The fast upstream answers success only with the token, as WeChat would:
// a contender that does not deliver it cannot pass check.
func TestFastUpstreamChecksToken(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(fastWeChat))
	defer srv.Close()
	withToken := &contender{name: "with", base: srv.URL, clientToken: true}
	if err := withToken.check(); err != nil {
		t.Fatal(err)
	}
	without := &contender{name: "without", base: srv.URL}
	if err := without.check(); err == nil || !strings.Contains(err.Error(), "40001") {
		t.Fatalf("a contender sending no token passed the check: %v", err)
	}
}

func TestParseWrkReport(t *testing.T) {
	// A stand-in for wrk printing what the Lua report prints.
	dir := t.TempDir()
	fake := "#!/bin/sh\necho 'Running 1s test'\necho 'WRK_RESULT 1000 2000000 150 900 0 1 0 2 0'\n"
	if err := os.WriteFile(dir+"/wrk", []byte(fake), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", dir+":"+os.Getenv("PATH"))
	res, err := runWrk(t.Context(), "x.lua", "http://127.0.0.1:1/", 1, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if res.requests != 1000 || res.rps() != 500 || res.p50 != 150*time.Microsecond || res.p99 != 900*time.Microsecond || res.errors != 3 {
		t.Fatalf("parsed %+v", res)
	}
}

func TestCommandStats(t *testing.T) {
	info := "# Commandstats\r\n" +
		"cmdstat_get:calls=12,usec=40,usec_per_call=3.33,rejected_calls=0,failed_calls=0\r\n" +
		"cmdstat_info:calls=7,usec=900,usec_per_call=128.57,rejected_calls=0,failed_calls=0\r\n" +
		"cmdstat_client|setinfo:calls=2,usec=3,usec_per_call=1.50,rejected_calls=0,failed_calls=0\r\n" +
		"cmdstat_evalsha:calls=3,usec=30,usec_per_call=10.00,rejected_calls=0,failed_calls=0\r\n"
	before, err := parseCommandStats(info)
	if err != nil {
		t.Fatal(err)
	}
	if before["info"] != 0 || before.total() != 17 {
		t.Fatalf("the benchmark's own INFO counted, or a command missed: %v", before)
	}
	after, err := parseCommandStats(strings.ReplaceAll(info, "cmdstat_get:calls=12", "cmdstat_get:calls=20") + "cmdstat_set:calls=1,usec=1\r\n")
	if err != nil {
		t.Fatal(err)
	}
	d := after.since(before)
	if d.total() != 9 || d.text() != "get 8, set 1" {
		t.Fatalf("since: %v %q", d, d.text())
	}
	if (commandCounts{}).text() != "none" {
		t.Fatal("no command")
	}
	if _, err := parseCommandStats("cmdstat_get:usec=1\r\n"); err == nil {
		t.Fatal("a line without calls was read")
	}
}

func TestReadReply(t *testing.T) {
	for _, c := range []struct{ in, want, err string }{
		{"+PONG\r\n", "PONG", ""},
		{":42\r\n", "42", ""},
		{"$5\r\nab\r\nc\r\n", "ab\r\nc", ""},
		{"-ERR unknown command\r\n", "", "ERR unknown command"},
		{"*1\r\n", "", "unexpected reply"},
	} {
		got, err := readReply(bufio.NewReader(strings.NewReader(c.in)))
		if got != c.want || (c.err == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), c.err)) {
			t.Errorf("readReply(%q) = %q, %v; want %q, %q", c.in, got, err, c.want, c.err)
		}
	}
}

// The platform scenario's verdict: what it fails on, and only that.
func TestPlatformFailures(t *testing.T) {
	p := platformParams{accounts: 2000, used: 200, probed: 100}
	good := &platformRun{params: p, firstUse: platformSpan{authorizerCalls: 200}, use: window{requests: 200}, probe: window{requests: 100},
		inUse: platformSpan{authorizerCalls: 150}, idle: platformSpan{length: 10 * time.Second, componentCalls: 2}}
	if errs := good.failures(); len(errs) != 0 {
		t.Fatalf("a good run failed: %v", errs)
	}
	for name, spoil := range map[string]func(r *platformRun){
		"a failed first request":       func(r *platformRun) { r.use.failed = 1 },
		"a failed request once idle":   func(r *platformRun) { r.probe.failed = 1 },
		"a fetch during the import":    func(r *platformRun) { r.imported.authorizerCalls = 1 },
		"two fetches for one account":  func(r *platformRun) { r.firstUse.authorizerCalls = 201 },
		"an account not fetched":       func(r *platformRun) { r.firstUse.authorizerCalls = 199 },
		"a renewal in the idle window": func(r *platformRun) { r.idle.authorizerCalls = 1 },
	} {
		r := *good
		spoil(&r)
		if errs := r.failures(); len(errs) != 1 {
			t.Errorf("%s: %v", name, errs)
		}
	}
	if !strings.Contains(good.markdown(), "| idle | 10.0 | 0 |") {
		t.Fatalf("markdown:\n%s", good.markdown())
	}
}

func TestOnlyPicksScenarios(t *testing.T) {
	all := options{scenarios: true}
	if !all.runs("platform") || !all.compares() {
		t.Fatal("no -only: everything runs")
	}
	one := options{scenarios: true, only: []string{"platform"}}
	if !one.runs("platform") || one.runs("jssdk") || one.compares() {
		t.Fatal("-only platform")
	}
	if got := neededTools(one); strings.Join(got, " ") != "go redis-server" {
		t.Fatalf("-only platform needs %v", got)
	}
	if (options{scenarios: false}).runs("platform") {
		t.Fatal("-scenarios=false runs a scenario")
	}
}
