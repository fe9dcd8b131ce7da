package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	vegeta "github.com/tsenart/vegeta/v12/lib"
)

// Scenario (g), message push: the functional checks of a setup (every push
// delivered once, re-deliveries answered), and the report.

// check sends one push and one plaintext message to instance and insists
// on "success" from both: a setup that does not deliver is not measured.
func (e *pushEnv) check(gen *pushGen, instance int) error {
	for _, c := range []string{wechatMessages, reverseProxy} {
		it := gen.item(instance, c == wechatMessages, answerSuccess, e.bases(c))
		status, body, err := post(it.url, it.body)
		if err != nil || status != http.StatusOK || string(body) != "success" {
			return fmt.Errorf("check %s on instance %d: %d %q %v\n%s", c, instance+1, status, body, err, e.caddies[instance].logTail())
		}
	}
	return nil
}

var pushClient = &http.Client{Timeout: 10 * time.Second}

func post(url string, body []byte) (int, []byte, error) {
	req, err := http.NewRequest(http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return 0, nil, err
	}
	req.Header = pushHeader.Clone()
	resp, err := pushClient.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	got, err := io.ReadAll(resp.Body)
	return resp.StatusCode, got, err
}

// verifyEvery: one sealed reply in so many is opened and checked in full
// during the trials (every one has its shape checked); all would load the
// machine.
const verifyEvery = 64

// trial runs the contender for d with prepared requests made beforehand.
func (e *pushEnv) trial(ctx context.Context, gen *pushGen, wl pushWorkload, contender string, d time.Duration, prepared int) (pushTrial, *pushBatch, error) {
	t := pushTrial{trial: trial{workload: pushCellKey(e.setup.name, wl.name), conc: pushWorkers, contender: contender}, setup: e.setup.name, answer: wl.name, reasons: map[string]int{}}
	push, bases := contender == wechatMessages, e.bases(contender)
	batch := &pushBatch{items: make([]pushItem, prepared), make: func(i int) pushItem { return gen.item(i, push, wl, bases) }}
	for i := range batch.items {
		batch.items[i] = batch.make(i)
	}
	appBefore, err := readAppCounts(e.appBase)
	if err != nil {
		return t, nil, err
	}
	var redisBefore commandCounts
	if e.setup.redis {
		if redisBefore, err = e.redis.commandCounts(); err != nil {
			return t, nil, err
		}
	}
	diskBefore := diskWritten(e.pids)
	t.peakIsLife = !resetPeakRSS(e.pids)
	cpu0, err := cpuSeconds(e.pids)
	if err != nil {
		return t, nil, err
	}

	attacker := vegeta.NewAttacker(vegeta.Workers(pushWorkers), vegeta.MaxWorkers(pushWorkers), vegeta.Timeout(10*time.Second), vegeta.KeepAlive(true))
	var latencies []time.Duration
	began := time.Now()
	for res := range attacker.Attack(batch.targeter(), vegeta.Rate{}, d, "messages") {
		t.sent++
		latencies = append(latencies, res.Latency)
		if reason := e.failure(res, push, wl, &t); reason != "" {
			t.errors++
			t.reasons[reason]++
		}
		if ctx.Err() != nil {
			attacker.Stop()
		}
	}
	t.elapsed = time.Since(began)
	if ctx.Err() != nil {
		return t, nil, ctx.Err()
	}
	cpu1, err := cpuSeconds(e.pids)
	if err != nil {
		return t, nil, err
	}
	if t.peakRSS, err = peakRSS(e.pids); err != nil {
		return t, nil, err
	}
	// The app has had every message: wechat_messages answers once the app
	// has.
	appAfter, err := readAppCounts(e.appBase)
	if err != nil {
		return t, nil, err
	}
	t.app = appAfter.since(appBefore)
	// The records written beside the messages' path, before the next
	// trial: they would take its CPU.
	drainBegan := time.Now()
	if err := e.waitRecords(ctx, time.Minute); err != nil {
		return t, nil, err
	}
	t.drain = time.Since(drainBegan)
	t.diskWrite = diskWritten(e.pids) - diskBefore
	if e.setup.redis {
		after, err := e.redis.commandCounts()
		if err != nil {
			return t, nil, err
		}
		t.redis = after.since(redisBefore)
	}
	t.late = batch.late.Load()
	if t.sent > 0 {
		t.rps = float64(t.sent) / t.elapsed.Seconds()
		t.cpuPer10k = (cpu1 - cpu0) / float64(t.sent) * 10000
		slices.Sort(latencies)
		t.p50, t.p99 = latencies[len(latencies)*50/100], latencies[min(len(latencies)-1, len(latencies)*99/100)]
	}
	if t.late > 0 {
		fmt.Fprintf(os.Stderr, "messages: %d of %d requests made during the trial (too few made before)\n", t.late, t.sent)
	}
	return t, batch, nil
}

// failure says why an answer is not what the contender must answer, or "".
func (e *pushEnv) failure(res *vegeta.Result, push bool, wl pushWorkload, t *pushTrial) string {
	switch {
	case res.Error != "" && res.Code == 0:
		return "transport: " + res.Error
	case res.Code != http.StatusOK:
		return fmt.Sprintf("HTTP %d", res.Code)
	case !wl.reply:
		if string(res.Body) != "success" {
			return "not success"
		}
	case !push:
		if !bytes.Equal(res.Body, appReply) {
			return "not the app's reply"
		}
	case !bytes.HasPrefix(res.Body, []byte("<xml><Encrypt><![CDATA[")):
		return "not a sealed reply"
	case res.Seq%verifyEvery == 0:
		t.verified++
		msg, err := e.keys.openReply(res.Body)
		if err != nil {
			return "sealed reply: " + err.Error()
		}
		if !bytes.Equal(msg, appReply) {
			return "sealed reply: not the app's"
		}
	}
	return ""
}

// waitRecords waits until no instance is writing a message's record: the
// goroutines of credential.(*Deliveries).run in Caddy's goroutine profile.
func (e *pushEnv) waitRecords(ctx context.Context, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		busy := 0
		for _, admin := range e.admins {
			n, err := goroutinesIn(admin, "(*Deliveries).run")
			if err != nil {
				return err
			}
			busy += n
		}
		if busy == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%d message records still being written %s after the load", busy, timeout)
		}
		if err := sleepCtx(ctx, 50*time.Millisecond); err != nil {
			return err
		}
	}
}

// goroutinesIn counts the goroutines whose stack has function, from the
// admin's goroutine profile (debug=1: each stack once, with its count).
func goroutinesIn(admin, function string) (int, error) {
	resp, err := controlClient.Get(admin + "/debug/pprof/goroutine?debug=1")
	if err != nil {
		return 0, fmt.Errorf("goroutine profile: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("goroutine profile: %s", resp.Status)
	}
	return countGoroutines(resp.Body, function)
}

func countGoroutines(profile io.Reader, function string) (int, error) {
	sc := bufio.NewScanner(profile)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	total, stack, counted := 0, 0, false
	for sc.Scan() {
		line := sc.Text()
		if n, rest, ok := strings.Cut(line, " @ "); ok && rest != "" && !strings.HasPrefix(line, "#") {
			if c, err := strconv.Atoi(n); err == nil {
				stack, counted = c, false
				continue
			}
		}
		if !counted && strings.HasPrefix(line, "#") && strings.Contains(line, function) {
			total += stack
			counted = true
		}
	}
	return total, sc.Err()
}

// probe delivers again, as WeChat re-delivers (signed anew), messages
// delivered in the last trial of wechat_messages, each to the other
// instance of a fleet (the same for a single one): each must be answered
// "success" as the first delivery was, and none may reach the app.
func (e *pushEnv) probe(gen *pushGen, items []pushItem, sr *pushSetupRun) error {
	before, err := readAppCounts(e.appBase)
	if err != nil {
		return err
	}
	for _, it := range items {
		sr.probes++
		u, body := gen.redeliver(it, e.pushBases[(it.instance+1)%len(e.pushBases)])
		status, answer, err := post(u, body)
		switch {
		case err != nil:
			sr.probeReasons["transport: "+err.Error()]++
		case status != http.StatusOK:
			sr.probeReasons[fmt.Sprintf("HTTP %d", status)]++
		case string(answer) != "success":
			sr.probeReasons["not success"]++
		default:
			sr.probesAnswered++
		}
	}
	after, err := readAppCounts(e.appBase)
	if err != nil {
		return err
	}
	sr.probeApp = after.since(before)
	return nil
}

// adminCounts sums the instances' counts of the receiver.
func (e *pushEnv) adminCounts(sr *pushSetupRun) error {
	for _, admin := range e.admins {
		resp, err := controlClient.Get(admin + "/wechat_token/messages")
		if err != nil {
			return fmt.Errorf("admin messages: %w", err)
		}
		var statuses []struct {
			Receiver     string           `json:"receiver"`
			Received     int64            `json:"received"`
			Forwarded    int64            `json:"forwarded"`
			Deduplicated int64            `json:"deduplicated"`
			Refused      map[string]int64 `json:"refused"`
		}
		err = json.NewDecoder(resp.Body).Decode(&statuses)
		resp.Body.Close()
		if err != nil {
			return fmt.Errorf("admin messages: %w", err)
		}
		for _, s := range statuses {
			sr.received += s.Received
			sr.forwarded += s.Forwarded
			sr.deduplicated += s.Deduplicated
			for _, n := range s.Refused {
				sr.refused += n
			}
		}
	}
	return nil
}

// countRecords counts the message records in a file storage.
func countRecords(dir string) int {
	n := 0
	_ = filepath.WalkDir(filepath.Join(dir, "wechat_token", "messages"), func(_ string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() && strings.HasSuffix(d.Name(), ".json") {
			n++
		}
		return nil
	})
	return n
}

// diskWritten is the bytes the processes had written to disk
// (/proc/PID/io write_bytes); 0 where the kernel does not say.
func diskWritten(pids []int) int64 {
	var total int64
	for _, pid := range pids {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/io", pid))
		if err != nil {
			return 0
		}
		for _, line := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "write_bytes: "); ok {
				n, _ := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
				total += n
			}
		}
	}
	return total
}

// The report.
