package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	vegeta "github.com/tsenart/vegeta/v12/lib"
)

// The scenarios run the product against the WeChat emulator, whose token
// rules (revocation, expiry, overlap) the fast upstream does not have.

// The emulator's demo app, which it knows without flags.
const (
	demoAppID     = "wxd000000000000001"
	demoAppSecret = "demo_app_secret_0123456789abcdef"
)

// scenarioWorkers is the load of the revocation and renewal scenarios.
const scenarioWorkers = 64

// downloads: 32 concurrent 16 MiB media downloads.
const (
	downloadClients = 32
	downloadSize    = 16 << 20
	// downloadPeakLimit is what the smoke run insists on: far below the
	// 512 MiB that buffering the downloads would take.
	downloadPeakLimit = 128 << 20
)

type scenarioResults struct {
	revocations []revocation
	downloads   []downloadRun
	uploads     []uploadRun
	renewal     *renewal
	jssdk       *jssdkRun
	platform    *platformRun
	messages    *messagesRun
}

// scenarioNames are the scenarios, in the order they run; -only picks
// some of them.
var scenarioNames = []string{"revocation", "downloads", "uploads", "renewal", "jssdk", "platform", "messages"}

// wechatEnv is an emulator with a proxy in front of it.
type wechatEnv struct {
	emulator *process
	emuBase  string
	caddy    *process
	base     string
}

func (e *wechatEnv) stop() {
	e.caddy.stop()
	e.emulator.stop()
}

// startEmulator runs the emulator on a free port with the given flags.
func startEmulator(dir string, bins binaries, name string, args ...string) (*process, string, error) {
	port, err := freePort()
	if err != nil {
		return nil, "", err
	}
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	p, err := start(dir, name, nil, bins.emulator, append([]string{"-listen", addr}, args...)...)
	if err != nil {
		return nil, "", err
	}
	base := "http://" + addr
	if err := waitHTTP(p, base+"/_emulator/stats", 10*time.Second); err != nil {
		p.stop()
		return nil, "", err
	}
	return p, base, nil
}

// startProxy runs a Caddy in front of the emulator at emuBase: with
// wechat_token for tokenAPI, or reverse_proxy alone when tokenAPI is "".
func startProxy(dir string, bins binaries, name, emuBase, tokenAPI string) (*process, string, error) {
	port, err := freePort()
	if err != nil {
		return nil, "", err
	}
	handler := ""
	if tokenAPI != "" {
		handler = wechatTokenBlock(demoAppID, demoAppSecret, tokenAPI, emuBase)
	}
	cfg := caddyGlobal(dir, name) + caddySite(port, strings.TrimPrefix(emuBase, "http://"), handler)
	p, err := startCaddy(dir, bins.caddy, name, cfg, port)
	if err != nil {
		return nil, "", err
	}
	return p, fmt.Sprintf("http://127.0.0.1:%d", port), nil
}

func startWeChatEnv(dir string, bins binaries, name, tokenAPI string, emuArgs ...string) (*wechatEnv, error) {
	emu, emuBase, err := startEmulator(dir, bins, name+"-emulator", emuArgs...)
	if err != nil {
		return nil, err
	}
	p, base, err := startProxy(dir, bins, name, emuBase, tokenAPI)
	if err != nil {
		emu.stop()
		return nil, err
	}
	return &wechatEnv{emulator: emu, emuBase: emuBase, caddy: p, base: base}, nil
}

// emulatorStats is the part of the emulator's counters the scenarios read.
type emulatorStats struct {
	TokenCalls    int `json:"token_calls"`
	StableCalls   int `json:"stable_token_calls"`
	ClassicIssued int `json:"classic_issued"`
	StableIssued  int `json:"stable_issued"`
	APICalls      int `json:"api_calls"`
	// A platform's: api_authorizer_token (its accounts' first fetches
	// and renewals) and api_component_token.
	AuthorizerCalls int `json:"authorizer_token_calls"`
	ComponentCalls  int `json:"component_token_calls"`
}

func (s emulatorStats) issued() int { return s.ClassicIssued + s.StableIssued }
func (s emulatorStats) calls() int  { return s.TokenCalls + s.StableCalls }

var controlClient = &http.Client{Timeout: 5 * time.Second}

func (e *wechatEnv) stats() (emulatorStats, error) {
	var s emulatorStats
	resp, err := controlClient.Get(e.emuBase + "/_emulator/stats")
	if err != nil {
		return s, fmt.Errorf("emulator stats: %w", err)
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(&s); err != nil {
		return s, fmt.Errorf("emulator stats: %w", err)
	}
	return s, nil
}

func (e *wechatEnv) control(path string) error {
	resp, err := controlClient.Post(e.emuBase+path, "application/json", nil)
	if err != nil {
		return fmt.Errorf("emulator %s: %w", path, err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("emulator %s: %s", path, resp.Status)
	}
	return nil
}

// setFaults sets the emulator's faults to the JSON object faults.
func (e *wechatEnv) setFaults(faults string) error {
	resp, err := controlClient.Post(e.emuBase+"/_emulator/faults", "application/json", strings.NewReader(faults))
	if err != nil {
		return fmt.Errorf("emulator faults: %w", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("emulator faults: %s", resp.Status)
	}
	return nil
}

// sample is one request of a vegeta attack, kept small.
type sample struct {
	at      time.Time
	latency time.Duration
	failure string // "" when WeChat's answer was a success
}

// attack sends GET requests to url from workers concurrent workers, as
// fast as they are answered, for d; during is called once the attack has
// run for duringAt.
func attack(ctx context.Context, url string, workers uint64, d, duringAt time.Duration, during func()) ([]sample, error) {
	targeter := vegeta.NewStaticTargeter(vegeta.Target{Method: http.MethodGet, URL: url})
	attacker := vegeta.NewAttacker(vegeta.Workers(workers), vegeta.MaxWorkers(workers), vegeta.Timeout(10*time.Second), vegeta.KeepAlive(true))
	var once sync.Once
	began := time.Now()
	var samples []sample
	for res := range attacker.Attack(targeter, vegeta.Rate{}, d, "scenario") {
		samples = append(samples, sample{at: res.Timestamp, latency: res.Latency, failure: failureOf(res)})
		if during != nil && time.Since(began) >= duringAt {
			once.Do(func() { go during() })
		}
		if ctx.Err() != nil {
			attacker.Stop()
		}
	}
	return samples, ctx.Err()
}

// failureOf says why a result is not WeChat's success, or "".
func failureOf(res *vegeta.Result) string {
	if res.Error != "" {
		return "transport: " + res.Error
	}
	if res.Code != http.StatusOK {
		return fmt.Sprintf("HTTP %d", res.Code)
	}
	var answer struct {
		Errcode *int `json:"errcode"`
	}
	if err := json.Unmarshal(res.Body, &answer); err != nil || answer.Errcode == nil {
		return "not a WeChat answer"
	}
	if *answer.Errcode != 0 {
		return fmt.Sprintf("errcode %d", *answer.Errcode)
	}
	return ""
}

// window summarises the samples started in [from, to).
type window struct {
	requests, failed int
	p50, p99         time.Duration
	reasons          map[string]int
}

func summarise(samples []sample, from, to time.Time) window {
	w := window{reasons: map[string]int{}}
	var lat []time.Duration
	for _, s := range samples {
		if s.at.Before(from) || !s.at.Before(to) {
			continue
		}
		w.requests++
		lat = append(lat, s.latency)
		if s.failure != "" {
			w.failed++
			w.reasons[s.failure]++
		}
	}
	if len(lat) > 0 {
		slices.Sort(lat)
		w.p50 = lat[len(lat)*50/100]
		w.p99 = lat[min(len(lat)-1, len(lat)*99/100)]
	}
	return w
}

func (w window) reasonText() string {
	if len(w.reasons) == 0 {
		return ""
	}
	var parts []string
	for k, v := range w.reasons {
		parts = append(parts, fmt.Sprintf("%d× %s", v, k))
	}
	slices.Sort(parts)
	return " (" + strings.Join(parts, ", ") + ")"
}
