package main

import (
	"context"
	"fmt"
	mrand "math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	vegeta "github.com/tsenart/vegeta/v12/lib"
)

// Scenario (g): message push. wechat_messages verifies, decrypts and
// de-duplicates every push WeChat makes, hands the app the plaintext
// through reverse_proxy and seals its passive reply. What that costs is
// measured against the same plaintext messages POSTed through
// reverse_proxy alone, to the same app, from the same Caddy (two sites),
// alternating within every round: single instance with the default file
// storage, single instance on Redis, and a fleet of two on one Redis with
// the load split between them. Every push is a new message (its own MsgId,
// a current timestamp), sealed and signed as WeChat does; the app counts
// what it gets, so that every push delivered exactly once is checked
// along with the speed.

// wechatMessages names the product's contender; reverseProxy the other.
const wechatMessages = "wechat_messages"

// pushWorkers is the load: closed loop, each sending as soon as answered.
const pushWorkers = 16

// pushProbes is how many messages of each setup are delivered again (as
// WeChat re-delivers, signed anew), to the other instance in the fleet:
// each must be answered as the first delivery was, without reaching the
// app.
const pushProbes = 100

// pushWorkload is what the app answers.
type pushWorkload struct {
	name  string
	reply bool // a passive reply, which wechat_messages seals; else "success"
}

var (
	answerSuccess = pushWorkload{name: "success"}
	answerReply   = pushWorkload{name: "passive reply", reply: true}
)

// pushSetup is one arrangement of the proxies and their storage.
type pushSetup struct {
	name      string
	redis     bool // else file storage (Caddy's default, file_system)
	instances int
	workloads []pushWorkload
}

var pushSetups = []pushSetup{
	{name: "single, file storage", instances: 1, workloads: []pushWorkload{answerSuccess, answerReply}},
	{name: "single, Redis", redis: true, instances: 1, workloads: []pushWorkload{answerSuccess}},
	{name: "fleet of 2, Redis", redis: true, instances: 2, workloads: []pushWorkload{answerSuccess}},
}

// pushTrial is one contender's trial: the comparison's figures (workload
// is setup and workload together) and what the scenario adds.
type pushTrial struct {
	trial
	setup, answer string
	elapsed       time.Duration
	sent          int64 // requests made
	reasons       map[string]int
	app           appCounts // what the app got during the trial
	redis         commandCounts
	diskWrite     int64         // bytes Caddy wrote to disk
	drain         time.Duration // after the load, until no message record was being written
	late          int64         // pushes built during the trial (too few built before)
	verified      int           // sealed replies checked in full
}

// cpuBusy is the share of one CPU the Caddy processes used.
func (t pushTrial) cpuBusy() float64 {
	if t.elapsed <= 0 || t.sent == 0 {
		return 0
	}
	return t.cpuPer10k / 10000 * float64(t.sent) / t.elapsed.Seconds()
}

// pushSetupRun is one setup's results beyond its trials.
type pushSetupRun struct {
	setup pushSetup
	// The re-deliveries: sent, answered as the first delivery was, and
	// what reached the app meanwhile (target none).
	probes, probesAnswered int
	probeReasons           map[string]int
	probeApp               appCounts
	// From the proxies' admin (GET /wechat_token/messages), summed over
	// the instances.
	received, forwarded, deduplicated, refused int64
	recordFiles                                int // message records in the file storage at the end
}

type messagesRun struct {
	rounds   int
	duration time.Duration
	trials   []pushTrial
	setups   []*pushSetupRun
}

func runMessages(ctx context.Context, o options, dir string, bins binaries) (*messagesRun, error) {
	appPort, err := freePort()
	if err != nil {
		return nil, err
	}
	appBase := fmt.Sprintf("http://127.0.0.1:%d", appPort)
	app, err := start(dir, "messages-app", nil, bins.self, "messages-app", "-listen", strings.TrimPrefix(appBase, "http://"))
	if err != nil {
		return nil, err
	}
	defer app.stop()
	if err := waitHTTP(app, appBase+"/_counts", 10*time.Second); err != nil {
		return nil, err
	}
	rds, err := startRedis(dir, "messages-redis")
	if err != nil {
		return nil, err
	}
	defer rds.stop()
	keys, err := newPushKeys(pushToken, pushAESKey, pushAppID)
	if err != nil {
		return nil, err
	}
	gen := newPushGen(keys)
	run := &messagesRun{rounds: o.rounds, duration: o.duration}
	for i, s := range pushSetups {
		env, err := startPushEnv(dir, bins, s, fmt.Sprintf("messages-%d", i+1), appBase, rds, keys)
		if err != nil {
			return nil, err
		}
		sr, trials, err := env.run(ctx, o, gen)
		env.stop()
		if err != nil {
			return nil, fmt.Errorf("%s: %w", s.name, err)
		}
		run.setups = append(run.setups, sr)
		run.trials = append(run.trials, trials...)
	}
	return run, nil
}

// pushEnv is one setup's Caddy processes, each with a wechat_messages
// site and a plain reverse_proxy site to the app.
type pushEnv struct {
	setup      pushSetup
	keys       *pushKeys // the app's, to check sealed replies
	name, dir  string
	appBase    string
	redis      *redisServer
	caddies    []*process
	admins     []string
	pushBases  []string // wechat_messages, per instance
	plainBases []string // reverse_proxy alone, per instance
	pids       []int
	storageDir string // file storage
}

func (e *pushEnv) stop() {
	for _, c := range e.caddies {
		c.stop()
	}
}

// pushCaddyfile is one instance: admin on (its pprof profiles Caddy
// under load), the storage, and the two sites.
func pushCaddyfile(adminPort, pushPort, plainPort int, storage, app string) string {
	return fmt.Sprintf(`{
	admin 127.0.0.1:%d
	persist_config off
	%s
}
`, adminPort, storage) + caddySite(pushPort, app, fmt.Sprintf(`
	wechat_messages {
		app_id %s
		token %s
		encoding_aes_key %s
	}`, pushAppID, pushToken, pushAESKey)) + caddySite(plainPort, app, "")
}

func startPushEnv(dir string, bins binaries, s pushSetup, name, appBase string, rds *redisServer, keys *pushKeys) (env *pushEnv, err error) {
	env = &pushEnv{setup: s, keys: keys, name: name, dir: dir, appBase: appBase, redis: rds}
	defer func() {
		if err != nil {
			env.stop()
		}
	}()
	storage := ""
	if s.redis {
		storage = fmt.Sprintf("storage redis {\n\t\thost 127.0.0.1\n\t\tport %d\n\t\tkey_prefix %s\n\t}", rds.port, name)
	} else {
		env.storageDir = filepath.Join(dir, name+"-data")
		storage = "storage file_system " + env.storageDir
	}
	for i := range s.instances {
		var ports [3]int
		for j := range ports {
			if ports[j], err = freePort(); err != nil {
				return nil, err
			}
		}
		instance := fmt.Sprintf("%s-%d", name, i+1)
		cdy, err := startCaddy(dir, bins.caddy, instance, pushCaddyfile(ports[0], ports[1], ports[2], storage, strings.TrimPrefix(appBase, "http://")), ports[2])
		if err != nil {
			return nil, err
		}
		env.caddies = append(env.caddies, cdy)
		env.pids = append(env.pids, cdy.pids...)
		env.admins = append(env.admins, fmt.Sprintf("http://127.0.0.1:%d", ports[0]))
		env.pushBases = append(env.pushBases, fmt.Sprintf("http://127.0.0.1:%d", ports[1]))
		env.plainBases = append(env.plainBases, fmt.Sprintf("http://127.0.0.1:%d", ports[2]))
		fmt.Fprintf(os.Stderr, "messages: %s, instance %d: admin (pprof) on %s\n", s.name, i+1, env.admins[i])
	}
	return env, nil
}

// pushGen makes pushes: every one a new message, MsgIds unique in the
// run.
type pushGen struct {
	keys  *pushKeys
	msgID atomic.Int64
}

func newPushGen(keys *pushKeys) *pushGen {
	g := &pushGen{keys: keys}
	g.msgID.Store(1e15 + mrand.Int64N(7e15)) // 16 digits, as WeChat's
	return g
}

// pushItem is one request of a trial.
type pushItem struct {
	url      string
	body     []byte
	msgID    int64
	created  int64
	instance int
}

// item makes the i-th request of a trial to bases (one per instance, the
// load split between them in turn): a push of a new message, or its
// plaintext for reverse_proxy alone.
func (g *pushGen) item(i int, push bool, wl pushWorkload, bases []string) pushItem {
	now := time.Now()
	it := pushItem{msgID: g.msgID.Add(1), created: now.Unix(), instance: i % len(bases)}
	plain := textMessage(it.created, it.msgID)
	if !push {
		it.url, it.body = pushURL(bases[it.instance], plainQuery(wl.reply)), plain
		return it
	}
	query, body := g.keys.pushRequest(plain, now)
	if wl.reply {
		query += "&" + replyParam + "=1"
	}
	it.url, it.body = pushURL(bases[it.instance], query), body
	return it
}

// redeliver is WeChat's re-delivery of it: the same message, signed anew,
// to instance.
func (g *pushGen) redeliver(it pushItem, base string) (string, []byte) {
	query, body := g.keys.pushRequest(textMessage(it.created, it.msgID), time.Now())
	return pushURL(base, query), body
}

// pushBatch is a trial's requests, made before it so that making them
// does not load the machine during the trial; more are made as needed.
type pushBatch struct {
	items []pushItem
	next  atomic.Int64
	late  atomic.Int64
	make  func(i int) pushItem
}

// pushHeader is every request's: WeChat's, and the header the proxy adds
// for the app, which the plain contender's client sends itself so that
// the app gets the same requests.
var pushHeader = http.Header{"Content-Type": {"text/xml"}, "User-Agent": {"Mozilla/4.0"}, "X-Wechat-Appid": {pushAppID}}

func (b *pushBatch) targeter() vegeta.Targeter {
	return func(t *vegeta.Target) error {
		i := int(b.next.Add(1) - 1)
		var it pushItem
		if i < len(b.items) {
			it = b.items[i]
		} else {
			it = b.make(i)
			b.late.Add(1)
		}
		t.Method, t.URL, t.Body, t.Header = http.MethodPost, it.url, it.body, pushHeader
		return nil
	}
}

func (e *pushEnv) bases(contender string) []string {
	if contender == wechatMessages {
		return e.pushBases
	}
	return e.plainBases
}

// run is the setup's rounds, its re-deliveries and its counts.
func (e *pushEnv) run(ctx context.Context, o options, gen *pushGen) (*pushSetupRun, []pushTrial, error) {
	sr := &pushSetupRun{setup: e.setup, probeReasons: map[string]int{}}
	for i := range e.setup.instances {
		if err := e.check(gen, i); err != nil {
			return nil, nil, err
		}
	}
	var trials []pushTrial
	var probes []pushItem
	// Made before each trial: the last rate seen of the contender, and
	// half as many again; a first guess for the first.
	estimate := map[string]float64{}
	for _, wl := range e.setup.workloads {
		for round := range o.rounds {
			order := []string{wechatMessages, reverseProxy}
			if round%2 == 1 {
				slices.Reverse(order)
			}
			for _, c := range order {
				rate := estimate[wl.name+c]
				if rate == 0 {
					rate = 15000
				}
				t, batch, err := e.trial(ctx, gen, wl, c, o.duration, int(rate*o.duration.Seconds()*1.5)+1000)
				if err != nil {
					return nil, nil, err
				}
				t.round = round
				estimate[wl.name+c] = t.rps
				trials = append(trials, t)
				if c == wechatMessages && wl == answerSuccess {
					probes = batch.items[:min(pushProbes, int(t.sent), len(batch.items))]
				}
				fmt.Fprintf(os.Stderr, "messages %-20s %-13s round %d  %-15s %7.0f req/s  p50 %6.2f ms  p99 %6.2f ms  CPU %3.0f%%  failed %d  app: %d new, %d duplicates, %d malformed  drain %s\n",
					e.setup.name, wl.name, round+1, c, t.rps, ms(t.p50), ms(t.p99), 100*t.cpuBusy(), t.errors,
					t.app.Distinct, t.app.Duplicates, t.app.Malformed, t.drain.Round(time.Millisecond))
			}
		}
	}
	if err := e.probe(gen, probes, sr); err != nil {
		return nil, nil, err
	}
	if err := e.adminCounts(sr); err != nil {
		return nil, nil, err
	}
	if e.storageDir != "" {
		sr.recordFiles = countRecords(e.storageDir)
	}
	return sr, trials, nil
}
