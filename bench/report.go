package main

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"strings"
	"time"
)

// comparison holds every trial of the side-by-side runs.
type comparison struct{ trials []trial }

// cell gathers the trials of one contender at one workload and concurrency.
type cell struct {
	rps, p50, p99, cpu []float64
	peak               int64
	peakIsLife         bool
	errors             int64
	byRound            map[int]trial
}

type cellKey struct {
	workload  string
	conc      int
	contender string
}

func (c *comparison) cells() (map[cellKey]*cell, []string, []int) {
	cells := map[cellKey]*cell{}
	var workloads []string
	var concs []int
	for _, t := range c.trials {
		k := cellKey{t.workload, t.conc, t.contender}
		if !slices.Contains(workloads, t.workload) {
			workloads = append(workloads, t.workload)
		}
		if !slices.Contains(concs, t.conc) {
			concs = append(concs, t.conc)
		}
		e := cells[k]
		if e == nil {
			e = &cell{byRound: map[int]trial{}}
			cells[k] = e
		}
		e.rps = append(e.rps, t.rps)
		e.p50 = append(e.p50, ms(t.p50))
		e.p99 = append(e.p99, ms(t.p99))
		e.cpu = append(e.cpu, t.cpuPer10k)
		e.peak = max(e.peak, t.peakRSS)
		e.peakIsLife = e.peakIsLife || t.peakIsLife
		e.errors += t.errors
		e.byRound[t.round] = t
	}
	return cells, workloads, concs
}

func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// pairedRatio is the median over rounds of a/b, each round's two trials
// having run next to each other.
func pairedRatio(a, b *cell, value func(trial) float64) float64 {
	var ratios []float64
	for round, ta := range a.byRound {
		if tb, ok := b.byRound[round]; ok && value(tb) > 0 {
			ratios = append(ratios, value(ta)/value(tb))
		}
	}
	return median(ratios)
}

// pairedRange is the smallest and largest per-round ratio a/b.
func pairedRange(a, b *cell, value func(trial) float64) (lo, hi float64) {
	first := true
	for round, ta := range a.byRound {
		if tb, ok := b.byRound[round]; ok && value(tb) > 0 {
			r := value(ta) / value(tb)
			if first || r < lo {
				lo = r
			}
			if first || r > hi {
				hi = r
			}
			first = false
		}
	}
	return lo, hi
}

// Targets from issue 5, checked in the report.
const (
	minThroughputRatio = 0.95
	maxP99Ratio        = 1.05
)

// report is the run's Markdown output.
type report struct {
	opts       options
	started    time.Time
	machine    []string
	comparison *comparison
	scenarios  *scenarioResults
}

func (r *report) describeMachine(ctx context.Context, caddyBin string) {
	r.machine = append(r.machine, fmt.Sprintf("%s/%s, %s", runtime.GOOS, runtime.GOARCH, runtime.Version()))
	if proxyCPUs != "" {
		r.machine = append(r.machine, fmt.Sprintf("proxies pinned to CPU %s, wrk, vegeta and the upstream to the other %d CPU(s)", proxyCPUs, runtime.NumCPU()))
	} else {
		r.machine = append(r.machine, fmt.Sprintf("%d CPUs shared by all (not pinned)", runtime.NumCPU()))
	}
	for _, probe := range [][]string{{caddyBin, "version"}, {"wrk", "-v"}, {"nginx", "-v"}, {"redis-server", "--version"}} {
		bin, err := lookPath(probe[0])
		if err != nil {
			continue
		}
		out, _ := run(ctx, "", bin, probe[1:]...)
		if line := strings.TrimSpace(strings.SplitN(string(out), "\n", 2)[0]); line != "" {
			if probe[0] == caddyBin {
				line = "caddy " + line
			}
			r.machine = append(r.machine, line)
		}
	}
}

func (r *report) markdown() string {
	var b strings.Builder
	mode := fmt.Sprintf("%d round(s) of %s per contender, workload and concurrency", r.opts.rounds, r.opts.duration)
	if r.opts.smoke {
		mode = "smoke run (proves the benchmark works; its timings mean little)"
	}
	if len(r.opts.only) > 0 {
		mode = fmt.Sprintf("the scenario(s) %s only, no comparison", strings.Join(r.opts.only, ", "))
		if r.opts.smoke {
			mode += "; smoke run (its timings mean little)"
		}
	}
	fmt.Fprintf(&b, "Run of %s: %s.\n\n", r.started.UTC().Format("2006-01-02 15:04 MST"), mode)
	for _, m := range r.machine {
		fmt.Fprintf(&b, "- %s\n", m)
	}
	if r.comparison != nil {
		r.comparisonMarkdown(&b)
	}
	if r.scenarios != nil {
		b.WriteString(r.scenarios.markdown())
	}
	return b.String()
}

// comparisonMarkdown is the tables of the side-by-side comparison.
func (r *report) comparisonMarkdown(b *strings.Builder) {
	cells, workloads, concs := r.comparison.cells()
	contenders := []string{direct, reverseProxy, wechatToken, nginxFixed}

	b.WriteString("\n### Targets: wechat_token against reverse_proxy alone\n\n")
	fmt.Fprintf(b, "Median over rounds of each round's ratio, with the lowest and highest round in brackets. Targets: throughput ≥ %.2f×, p99 ≤ %.2f×.\n\n", minThroughputRatio, maxP99Ratio)
	b.WriteString("| workload | connections | throughput ratio | p99 ratio | CPU/request ratio | wechat_token ÷ nginx | reverse_proxy ÷ nginx |\n")
	b.WriteString("|---|---:|---:|---:|---:|---:|---:|\n")
	rps := func(t trial) float64 { return t.rps }
	p99 := func(t trial) float64 { return ms(t.p99) }
	cpu := func(t trial) float64 { return t.cpuPer10k }
	for _, wl := range workloads {
		for _, conc := range concs {
			wt, rp, ng := cells[cellKey{wl, conc, wechatToken}], cells[cellKey{wl, conc, reverseProxy}], cells[cellKey{wl, conc, nginxFixed}]
			if wt == nil || rp == nil || ng == nil {
				continue
			}
			tr, pr := pairedRatio(wt, rp, rps), pairedRatio(wt, rp, p99)
			trLo, trHi := pairedRange(wt, rp, rps)
			prLo, prHi := pairedRange(wt, rp, p99)
			fmt.Fprintf(b, "| %s | %d | %.3f %s (%.2f–%.2f) | %.3f %s (%.2f–%.2f) | %.3f | %.2f | %.2f |\n", wl, conc,
				tr, mark(tr >= minThroughputRatio), trLo, trHi, pr, mark(pr <= maxP99Ratio), prLo, prHi,
				pairedRatio(wt, rp, cpu), pairedRatio(wt, ng, rps), pairedRatio(rp, ng, rps))
		}
	}

	b.WriteString("\n### All contenders\n\n")
	b.WriteString("Medians over rounds; CPU and peak RSS are the proxy's own (nginx: master and workers), so none for direct.\n\n")
	b.WriteString("| workload | connections | contender | req/s | p50 ms | p99 ms | CPU s / 10k req | peak RSS MiB | failed requests |\n")
	b.WriteString("|---|---:|---|---:|---:|---:|---:|---:|---:|\n")
	lifePeak := false
	for _, wl := range workloads {
		for _, conc := range concs {
			for _, name := range contenders {
				c := cells[cellKey{wl, conc, name}]
				if c == nil {
					continue
				}
				cpuText, rssText := "–", "–"
				if name != direct {
					cpuText = fmt.Sprintf("%.3f", median(c.cpu))
					rssText = fmt.Sprintf("%.1f", float64(c.peak)/(1<<20))
					lifePeak = lifePeak || c.peakIsLife
				}
				fmt.Fprintf(b, "| %s | %d | %s | %.0f | %.2f | %.2f | %s | %s | %d |\n",
					wl, conc, name, median(c.rps), median(c.p50), median(c.p99), cpuText, rssText, c.errors)
			}
		}
	}
	if lifePeak {
		b.WriteString("\nThe kernel refused to reset peak RSS between trials: peaks cover each proxy's whole life.\n")
	}
}

func mark(ok bool) string {
	if ok {
		return "✓"
	}
	return "✗"
}

// functionalFailures fails a smoke run on anything but timings: a failed
// request anywhere, or a scenario missing a target that does not depend on
// speed.
func (r *report) functionalFailures() error {
	var errs []error
	var trials []trial
	if r.comparison != nil {
		trials = r.comparison.trials
	}
	for _, t := range trials {
		if t.errors > 0 {
			errs = append(errs, fmt.Errorf("%s through %s at %d connections: %d failed requests", t.workload, t.contender, t.conc, t.errors))
		}
	}
	if r.scenarios != nil {
		errs = append(errs, r.scenarios.failures()...)
	}
	return errors.Join(errs...)
}
