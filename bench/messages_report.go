package main

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Scenario (g), message push: the report and the verdict.

func (r *messagesRun) cells() map[cellKey]*cell {
	cells, _, _ := (&comparison{trials: r.trialsOnly()}).cells()
	return cells
}

// pushCellKey is a setup and workload as the comparison's cells key them.
func pushCellKey(setup, answer string) string { return setup + " · " + answer }

func (r *messagesRun) trialsOnly() []trial {
	out := make([]trial, len(r.trials))
	for i, t := range r.trials {
		out[i] = t.trial
		out[i].workload, out[i].conc = pushCellKey(t.setup, t.answer), pushWorkers
	}
	return out
}

// minPushRatio is issue 23's target for a single instance: wechat_messages
// at least this share of reverse_proxy's rate.
const minPushRatio = 0.8

// of gathers the trials of one setup, answer and contender.
func (r *messagesRun) of(setup, answer, contender string) []pushTrial {
	var out []pushTrial
	for _, t := range r.trials {
		if t.setup == setup && t.answer == answer && t.contender == contender {
			out = append(out, t)
		}
	}
	return out
}

func (r *messagesRun) markdown() string {
	var b strings.Builder
	cells := r.cells()
	rps := func(t trial) float64 { return t.rps }
	p99 := func(t trial) float64 { return ms(t.p99) }
	cpu := func(t trial) float64 { return t.cpuPer10k }
	b.WriteString("\n### (g) Message push: wechat_messages against reverse_proxy alone\n\n")
	fmt.Fprintf(&b, "Safe-mode pushes (AES, msg_signature), every one a new message, through `wechat_messages` + `reverse_proxy` to an app, against the same plaintext "+
		"messages POSTed through `reverse_proxy` alone to the same app, from the same Caddy (two sites); %d workers, closed loop; %d round(s) of %s per contender, alternating. "+
		"The fleet: two Caddy processes on one Redis, each push to the next. Ratios are taken within each round, then the median. "+
		"Target (single instance): throughput ≥ %.1f× reverse_proxy's.\n\n", pushWorkers, r.rounds, r.duration, minPushRatio)
	b.WriteString("| setup | app answers | throughput ratio | p99 ratio | CPU/request ratio |\n|---|---|---:|---:|---:|\n")
	for _, s := range r.setups {
		for _, wl := range s.setup.workloads {
			key := pushCellKey(s.setup.name, wl.name)
			wm, rp := cells[cellKey{key, pushWorkers, wechatMessages}], cells[cellKey{key, pushWorkers, reverseProxy}]
			if wm == nil || rp == nil {
				continue
			}
			tr := pairedRatio(wm, rp, rps)
			lo, hi := pairedRange(wm, rp, rps)
			target := ""
			if s.setup.instances == 1 {
				target = " " + mark(tr >= minPushRatio)
			}
			fmt.Fprintf(&b, "| %s | %s | %.3f%s (%.2f–%.2f) | %.3f | %.3f |\n", s.setup.name, wl.name, tr, target, lo, hi,
				pairedRatio(wm, rp, p99), pairedRatio(wm, rp, cpu))
		}
	}

	b.WriteString("\nMedians over rounds. CPU is the Caddy processes' (user + system) per request, and their share of the one CPU they are pinned to; " +
		"storage is what `wechat_messages` asks of it per push (Redis: commands counted by Redis; file: bytes written to disk, `/proc/PID/io`); " +
		"drain is the longest wait after a trial until no message record was still being written.\n\n")
	b.WriteString("| setup | app answers | contender | req/s | p50 ms | p99 ms | CPU µs/request | CPU busy | storage per push | drain s | peak RSS MiB | failed |\n")
	b.WriteString("|---|---|---|---:|---:|---:|---:|---:|---|---:|---:|---:|\n")
	for _, s := range r.setups {
		for _, wl := range s.setup.workloads {
			for _, c := range []string{wechatMessages, reverseProxy} {
				ts := r.of(s.setup.name, wl.name, c)
				if len(ts) == 0 {
					continue
				}
				var rate, p50s, p99s, cpus, busy []float64
				var failed, sent, disk int64
				var peak int64
				var drain time.Duration
				redis := commandCounts{}
				reasons := window{reasons: map[string]int{}}
				for _, t := range ts {
					rate, p50s, p99s = append(rate, t.rps), append(p50s, ms(t.p50)), append(p99s, ms(t.p99))
					cpus, busy = append(cpus, t.cpuPer10k*100), append(busy, t.cpuBusy())
					failed, sent, disk, peak, drain = failed+t.errors, sent+t.sent, disk+t.diskWrite, max(peak, t.peakRSS), max(drain, t.drain)
					for k, v := range t.redis {
						redis[k] += v
					}
					for k, v := range t.reasons {
						reasons.reasons[k] += v
					}
				}
				storage := "–"
				switch {
				case c == reverseProxy:
				case s.setup.redis:
					storage = perPush(redis, sent)
				default:
					storage = fmt.Sprintf("%.1f KiB written", float64(disk)/float64(max(sent, 1))/1024)
				}
				fmt.Fprintf(&b, "| %s | %s | %s | %.0f | %.2f | %.2f | %.1f | %.0f %% | %s | %.2f | %.1f | %d%s |\n", s.setup.name, wl.name, c,
					median(rate), median(p50s), median(p99s), median(cpus), 100*median(busy), storage, drain.Seconds(),
					float64(peak)/(1<<20), failed, reasons.reasonText())
			}
		}
	}

	b.WriteString("\nDelivered exactly once, counted by the app (every request, every distinct MsgId; duplicates and requests that are not the plaintext message are failures); " +
		"then re-deliveries of delivered messages (signed anew, to the other instance in the fleet), which must be answered as the first delivery was without reaching the app. " +
		"Proxies' own counts from their admin (`GET /wechat_token/messages`).\n\n")
	b.WriteString("| setup | pushes | failed | app: requests | distinct | duplicates | malformed | replies opened and checked | re-deliveries answered (target) | re-deliveries reaching the app | forwarded / deduplicated / refused (proxies) | records on disk |\n")
	b.WriteString("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|\n")
	for _, s := range r.setups {
		var sent, failed int64
		var app appCounts
		verified := 0
		for _, t := range r.trials {
			if t.setup == s.setup.name && t.contender == wechatMessages {
				sent, failed, verified = sent+t.sent, failed+t.errors, verified+t.verified
				app = appCounts{Requests: app.Requests + t.app.Requests, Distinct: app.Distinct + t.app.Distinct,
					Duplicates: app.Duplicates + t.app.Duplicates, Malformed: app.Malformed + t.app.Malformed}
			}
		}
		files := "–"
		if !s.setup.redis {
			files = fmt.Sprint(s.recordFiles)
		}
		probeReasons := window{reasons: s.probeReasons}
		fmt.Fprintf(&b, "| %s | %d | %d | %d | %d %s | %d | %d | %d | %d (%d) %s%s | %d | %d / %d / %d | %s |\n", s.setup.name, sent, failed,
			app.Requests, app.Distinct, mark(app.Distinct == sent && app.Requests == sent), app.Duplicates, app.Malformed, verified,
			s.probesAnswered, s.probes, mark(s.probesAnswered == s.probes), probeReasons.reasonText(), s.probeApp.Requests,
			s.forwarded, s.deduplicated, s.refused, files)
	}
	b.WriteString("\nThe rows count `wechat_messages`' pushes; `reverse_proxy`'s plaintext messages are held to the same (each reaching the app once), in the failures of the smoke run.\n")
	return b.String()
}

// perPush is Redis's commands per push: "6.0 (get 1.0, zadd 3.0, set 2.0)".
func perPush(c commandCounts, pushes int64) string {
	if pushes == 0 {
		return "–"
	}
	parts := strings.Split(c.text(), ", ")
	for i, p := range parts {
		if name, n, ok := strings.Cut(p, " "); ok {
			v, _ := strconv.ParseFloat(n, 64)
			parts[i] = fmt.Sprintf("%s %.1f", name, v/float64(pushes))
		}
	}
	return fmt.Sprintf("%.1f Redis commands (%s)", float64(c.total())/float64(pushes), strings.Join(parts, ", "))
}

// failures are scenario (g)'s targets that do not depend on speed: no
// failed request, every message reaching the app exactly once, through
// either contender, and re-deliveries answered without reaching it.
func (r *messagesRun) failures() []error {
	var errs []error
	for _, t := range r.trials {
		what := fmt.Sprintf("messages (%s, %s, %s, round %d)", t.setup, t.answer, t.contender, t.round+1)
		if t.errors > 0 {
			w := window{reasons: t.reasons}
			errs = append(errs, fmt.Errorf("%s: %d of %d requests failed%s", what, t.errors, t.sent, w.reasonText()))
		}
		if t.app.Requests != t.sent || t.app.Distinct != t.sent || t.app.Duplicates != 0 || t.app.Malformed != 0 {
			errs = append(errs, fmt.Errorf("%s: %d sent, the app got %d requests, %d distinct messages, %d duplicates, %d malformed; want each once",
				what, t.sent, t.app.Requests, t.app.Distinct, t.app.Duplicates, t.app.Malformed))
		}
	}
	for _, s := range r.setups {
		if s.probesAnswered != s.probes || s.probeApp.Requests != 0 {
			w := window{reasons: s.probeReasons}
			errs = append(errs, fmt.Errorf("messages (%s): %d of %d re-deliveries answered as the first delivery%s, %d reached the app; want all, none",
				s.setup.name, s.probesAnswered, s.probes, w.reasonText(), s.probeApp.Requests))
		}
		if s.refused != 0 {
			errs = append(errs, fmt.Errorf("messages (%s): the proxies refused %d pushes", s.setup.name, s.refused))
		}
	}
	if len(r.setups) == 0 {
		errs = append(errs, errors.New("messages: no setup ran"))
	}
	return errs
}
