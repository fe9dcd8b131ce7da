// Command bench measures what the wechat_token proxy costs, side by side in
// one run with the same upstream: direct, Caddy's reverse_proxy alone, Caddy
// with wechat_token, and nginx appending a fixed token. Contenders are
// alternated within every round (A B C D, then B C D A ...) so that drift on
// a shared machine falls on all of them alike. Then come the scenarios of
// the token's life under load (revocation, large downloads, renewal),
// a third-party platform of 100,000 accounts, and message push through
// wechat_messages against reverse_proxy alone.
//
// Run it from the repository with ./bench/run.sh (which installs wrk, nginx
// and redis-server where it can); see bench/README.md.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// options are the command line.
type options struct {
	repo         string
	out          string
	rounds       int
	duration     time.Duration
	concurrency  []int
	scenarios    bool
	smoke        bool
	keep         bool
	pin          bool
	scenarioLoad time.Duration
	// only names the scenarios to run, without the comparison; nil: all.
	only []string
}

// runs says whether the scenario named is to run.
func (o options) runs(scenario string) bool {
	return o.scenarios && (len(o.only) == 0 || slices.Contains(o.only, scenario))
}

// compares says whether the side-by-side comparison is to run: not when
// -only picked scenarios.
func (o options) compares() bool { return len(o.only) == 0 }

func main() {
	if len(os.Args) > 1 && os.Args[1] == "upstream" {
		if err := serveUpstream(os.Args[2:]); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		return
	}
	if len(os.Args) > 1 && os.Args[1] == "messages-app" {
		if err := serveMessagesApp(os.Args[2:]); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		return
	}
	opts, err := parseFlags()
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(2)
	}
	if opts.pin {
		if err := pinLoadSide(); err != nil {
			fmt.Fprintln(os.Stderr, "bench: not pinning CPUs:", err)
		}
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := runBench(ctx, opts); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func parseFlags() (options, error) {
	var o options
	var conc, only string
	flag.StringVar(&o.repo, "repo", "..", "the repository's root, whose cmd/caddy and cmd/wechat-emulator are built")
	flag.StringVar(&o.out, "out", "out/latest.md", "where the results table is written (Markdown)")
	flag.IntVar(&o.rounds, "rounds", 5, "rounds of every contender at every workload and concurrency")
	flag.DurationVar(&o.duration, "duration", 3*time.Second, "length of one trial")
	flag.StringVar(&conc, "c", "1,16,64,256", "concurrencies (connections), comma-separated")
	flag.BoolVar(&o.scenarios, "scenarios", true, "run the scenarios (revocation, downloads, uploads, renewal, JS-SDK, platform, messages) after the comparison")
	flag.BoolVar(&o.smoke, "smoke", false, "a short run that proves the benchmark works (CI): 1 round of 1 s at 1 and 16 connections, short scenarios; fails on any failed request, never on timings")
	flag.BoolVar(&o.pin, "pin", true, "put the proxies on CPUs of their own (the upper half), the load generator and upstream on the rest, so that where the scheduler puts them does not decide the result")
	flag.BoolVar(&o.keep, "keep", false, "keep the working directory (configs, logs) after the run")
	flag.StringVar(&only, "only", "", "run only these scenarios, comma-separated, without the comparison: "+strings.Join(scenarioNames, ", "))
	flag.Parse()
	if o.smoke {
		o.rounds, o.duration, conc = 1, time.Second, "1,16"
	}
	o.scenarioLoad = 6 * time.Second
	if o.smoke {
		o.scenarioLoad = 2 * time.Second
	}
	for _, s := range strings.Split(conc, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n < 1 {
			return o, fmt.Errorf("-c: %q is not a positive number", s)
		}
		o.concurrency = append(o.concurrency, n)
	}
	if only != "" {
		o.scenarios = true
		for _, name := range strings.Split(only, ",") {
			name = strings.TrimSpace(name)
			if !slices.Contains(scenarioNames, name) {
				return o, fmt.Errorf("-only: %q is none of %s", name, strings.Join(scenarioNames, ", "))
			}
			o.only = append(o.only, name)
		}
	}
	if o.rounds < 1 || o.duration < time.Second {
		return o, errors.New("-rounds must be at least 1 and -duration at least 1s")
	}
	return o, nil
}

// binaries are the programs the run builds.
type binaries struct{ caddy, emulator, self string }

func build(ctx context.Context, repo, dir string) (binaries, error) {
	b := binaries{caddy: filepath.Join(dir, "caddy"), emulator: filepath.Join(dir, "wechat-emulator")}
	for out, pkg := range map[string]string{b.caddy: "./cmd/caddy", b.emulator: "./cmd/wechat-emulator"} {
		if _, err := run(ctx, repo, "go", "build", "-o", out, pkg); err != nil {
			return b, fmt.Errorf("build %s: %w", pkg, err)
		}
	}
	self, err := os.Executable()
	if err != nil {
		return b, fmt.Errorf("find the bench binary: %w", err)
	}
	b.self = self
	return b, nil
}

func runBench(ctx context.Context, o options) error {
	for _, tool := range neededTools(o) {
		if _, err := lookPath(tool); err != nil {
			return fmt.Errorf("%s is needed: run ./bench/run.sh, which installs wrk, nginx and redis-server with apt-get, or install them yourself", tool)
		}
	}
	dir, err := os.MkdirTemp("", "caddy-wechat-bench-")
	if err != nil {
		return err
	}
	if o.keep {
		fmt.Fprintln(os.Stderr, "working directory:", dir)
	} else {
		defer os.RemoveAll(dir)
	}
	fmt.Fprintln(os.Stderr, "building cmd/caddy and cmd/wechat-emulator ...")
	bins, err := build(ctx, o.repo, dir)
	if err != nil {
		return err
	}
	rep := &report{opts: o, started: time.Now()}
	rep.describeMachine(ctx, bins.caddy)

	if o.compares() {
		if rep.comparison, err = compare(ctx, o, dir, bins); err != nil {
			return err
		}
	}
	if o.scenarios {
		if rep.scenarios, err = runScenarios(ctx, o, dir, bins); err != nil {
			return err
		}
	}
	text := rep.markdown()
	fmt.Print(text)
	if err := os.MkdirAll(filepath.Dir(o.out), 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(o.out, []byte(text), 0o644); err != nil {
		return err
	}
	fmt.Fprintln(os.Stderr, "results written to", o.out)
	if o.smoke {
		return rep.functionalFailures()
	}
	return nil
}

// neededTools are the programs the run needs beyond what it builds.
func neededTools(o options) []string {
	tools := []string{"go"}
	if o.compares() || o.runs("jssdk") {
		tools = append(tools, "wrk")
	}
	if o.compares() {
		tools = append(tools, "nginx")
	}
	if o.runs("platform") || o.runs("messages") {
		tools = append(tools, "redis-server")
	}
	return tools
}

// compare starts the upstream and the three proxies and runs every
// workload at every concurrency, alternating the contenders.
func compare(ctx context.Context, o options, dir string, bins binaries) (*comparison, error) {
	upPort, err := freePort()
	if err != nil {
		return nil, err
	}
	upAddr := fmt.Sprintf("127.0.0.1:%d", upPort)
	up, err := start(dir, "upstream", nil, bins.self, "upstream", "-listen", upAddr)
	if err != nil {
		return nil, err
	}
	defer up.stop()
	if err := waitHTTP(up, "http://"+upAddr+"/cgi-bin/token", 10*time.Second); err != nil {
		return nil, err
	}

	// Both Caddy contenders are sites of one Caddy process: the same
	// binary, runtime and garbage collector, so that the handler is the only
	// difference between them. Separate processes differed by several per
	// cent from one start to the next, more than the handler costs.
	rpPort, err := freePort()
	if err != nil {
		return nil, err
	}
	wtPort, err := freePort()
	if err != nil {
		return nil, err
	}
	cfg := caddyGlobal(dir, "caddy") + caddySite(rpPort, upAddr, "") +
		caddySite(wtPort, upAddr, wechatTokenBlock(benchAppID, "{env.BENCH_APP_SECRET}", "classic", "http://"+upAddr))
	cdy, err := startCaddy(dir, bins.caddy, "caddy", cfg, wtPort)
	if err != nil {
		return nil, err
	}
	defer cdy.stop()
	contenders := []*contender{
		{name: direct, base: "http://" + upAddr, clientToken: true},
		{name: reverseProxy, base: fmt.Sprintf("http://127.0.0.1:%d", rpPort), clientToken: true, proc: cdy},
		{name: wechatToken, base: fmt.Sprintf("http://127.0.0.1:%d", wtPort), proc: cdy},
	}
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	ngx, err := startNginx(dir, port, upAddr)
	if err != nil {
		return nil, err
	}
	defer ngx.stop()
	contenders = append(contenders, &contender{name: nginxFixed, base: fmt.Sprintf("http://127.0.0.1:%d", port), proc: ngx})

	for _, c := range contenders {
		if err := c.check(); err != nil {
			return nil, err
		}
	}
	workloads, err := writeWorkloads(dir)
	if err != nil {
		return nil, err
	}
	cmp := &comparison{}
	for _, wl := range workloads {
		for _, conc := range o.concurrency {
			for round := range o.rounds {
				for i := range contenders {
					c := contenders[(i+round)%len(contenders)]
					t, err := measure(ctx, c, wl, conc, o.duration)
					if err != nil {
						return nil, err
					}
					t.round = round
					cmp.trials = append(cmp.trials, t)
					fmt.Fprintf(os.Stderr, "%-16s c=%-4d round %d  %-14s %9.0f req/s  p50 %6.2f ms  p99 %6.2f ms  errors %d\n",
						wl.name, conc, round+1, c.name, t.rps, ms(t.p50), ms(t.p99), t.errors)
				}
			}
		}
	}
	return cmp, nil
}

// trial is one wrk run against one contender.
type trial struct {
	workload   string
	conc       int
	contender  string
	round      int
	rps        float64
	p50, p99   time.Duration
	errors     int64
	cpuPer10k  float64 // proxy CPU seconds per 10k requests; -1 for direct
	peakRSS    int64   // bytes; -1 for direct
	peakIsLife bool    // the kernel would not reset the peak: it covers the proxy's life
}

func measure(ctx context.Context, c *contender, wl workload, conc int, d time.Duration) (trial, error) {
	t := trial{workload: wl.name, conc: conc, contender: c.name, cpuPer10k: -1, peakRSS: -1}
	var cpu0 float64
	if c.proc != nil {
		t.peakIsLife = !resetPeakRSS(c.proc.pids)
		var err error
		if cpu0, err = cpuSeconds(c.proc.pids); err != nil {
			return t, err
		}
	}
	res, err := runWrk(ctx, wl.script, c.target(wl.path), conc, d)
	if err != nil {
		return t, fmt.Errorf("%s through %s at %d: %w", wl.name, c.name, conc, err)
	}
	t.rps, t.p50, t.p99, t.errors = res.rps(), res.p50, res.p99, res.errors
	if c.proc != nil {
		cpu1, err := cpuSeconds(c.proc.pids)
		if err != nil {
			return t, err
		}
		if res.requests > 0 {
			t.cpuPer10k = (cpu1 - cpu0) / float64(res.requests) * 10000
		}
		if t.peakRSS, err = peakRSS(c.proc.pids); err != nil {
			return t, err
		}
	}
	return t, nil
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// lookPath finds a program in PATH or, for nginx, in the sbin directories
// that a non-root PATH may lack.
func lookPath(name string) (string, error) {
	p, err := exec.LookPath(name)
	if err == nil {
		return p, nil
	}
	for _, dir := range []string{"/usr/sbin", "/usr/local/sbin", "/usr/local/nginx/sbin"} {
		if p, err2 := exec.LookPath(filepath.Join(dir, name)); err2 == nil {
			return p, nil
		}
	}
	return "", err
}
