// Package tests drives real Caddy processes, built from cmd/caddy, in front
// of the WeChat emulator over loopback.
package tests

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/caddy-wechat/caddy-wechat/emulator"
)

var (
	binDir   string
	caddyBin string
)

func TestMain(m *testing.M) {
	var err error
	if binDir, err = os.MkdirTemp("", "wechat-token-it-"); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	if caddyBin, err = build("../cmd/caddy"); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(binDir)
	os.Exit(code)
}

// build compiles the command in dir (with the race detector when the
// tests have it) into binDir.
func build(dir string) (string, error) {
	bin := filepath.Join(binDir, filepath.Base(dir))
	args := []string{"build", "-o", bin}
	if raceEnabled {
		args = append(args, "-race")
	}
	if out, err := exec.Command("go", append(args, dir)...).CombinedOutput(); err != nil {
		return "", fmt.Errorf("building %s: %v\n%s", dir, err, out)
	}
	return bin, nil
}

// skewedCaddyBin is tests/skewedcaddy, built on first use.
var skewedCaddyBin = sync.OnceValues(func() (string, error) { return build("./skewedcaddy") })

// wechat is an emulator on loopback with one app.
type wechat struct {
	*emulator.Server
	URL    string
	AppID  string
	Secret string
}

// startWeChat runs the emulator with compression off: compressing every
// answer under the race detector slowed the suite by half.
// TestClientAcceptingGzipStillGetsTheRetry turns it on
// (startCompressingWeChat), which is where it matters.
func startWeChat(t *testing.T, cfg emulator.Config) *wechat {
	t.Helper()
	cfg.NoCompression = true
	return startEmulator(t, cfg)
}

// startCompressingWeChat is startWeChat with gzip for clients that ask.
func startCompressingWeChat(t *testing.T, cfg emulator.Config) *wechat {
	t.Helper()
	cfg.NoCompression = false
	return startEmulator(t, cfg)
}

func startEmulator(t *testing.T, cfg emulator.Config) *wechat {
	t.Helper()
	w := &wechat{AppID: "wxit000000000001", Secret: "it-secret-" + strconv.FormatInt(time.Now().UnixNano(), 36)}
	if cfg.Apps == nil {
		cfg.Apps = map[string]string{}
	}
	cfg.Apps[w.AppID] = w.Secret
	w.Server = emulator.New(cfg)
	srv := httptest.NewServer(w.Server)
	t.Cleanup(srv.Close)
	t.Cleanup(w.Server.Close) // before srv.Close: frees hanging requests
	w.URL = srv.URL
	return w
}

// tokenBlock is a wechat_token directive for w's app plus extra options.
func (w *wechat) tokenBlock(api string, extra ...string) string {
	return fmt.Sprintf(`wechat_token {
		app_id %s
		app_secret {env.WX_IT_SECRET}
		token_api %s
		api_base %s
		%s
	}
	reverse_proxy %s`, w.AppID, api, w.URL, strings.Join(extra, "\n\t\t"), w.URL)
}

// caddy is one running Caddy process.
type caddy struct {
	t       *testing.T
	cmd     *exec.Cmd
	dir     string
	admin   string
	site    string
	logs    *syncBuffer
	exited  chan struct{}
	secrets []string // what must never reach a log, besides issued tokens
	wechat  *wechat
	config  string
	opts    caddyOptions
}

// caddyOptions vary the config around the site.
type caddyOptions struct {
	// accessFormat is the access log's format block (default: json).
	accessFormat string
	// storage is the file_system storage directory (default: the
	// instance's own); instances given the same one form a fleet.
	storage string
	// storageConfig, if set, is the whole global storage option instead,
	// such as a storage redis block.
	storageConfig string
	// logLevel is the level of Caddy's own log (default DEBUG). Long runs
	// take INFO: at DEBUG every request writes two lines, which the test
	// holds in memory.
	logLevel string
	// noAccessLog leaves the access log out, for runs of millions of
	// requests; the leak check then reads Caddy's own log only.
	noAccessLog bool
	// global is more global options, such as a wechat block.
	global string
	// clockOffset, if set, runs tests/skewedcaddy with the token managers'
	// clock this far off.
	clockOffset time.Duration
}

type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func freePort(t *testing.T) int {
	t.Helper()
	// The kernel may hand the same free port to two listens in a row (it
	// is free again once closed): a port goes to one caller per run, or
	// a Caddy's site and its admin endpoint can meet on one.
	handedOut.Lock()
	defer handedOut.Unlock()
	for range 100 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port := ln.Addr().(*net.TCPAddr).Port
		ln.Close()
		if !handedOut.ports[port] {
			handedOut.ports[port] = true
			return port
		}
	}
	t.Fatal("no port that was not handed out already")
	return 0
}

// handedOut are the ports freePort gave this run.
var handedOut = struct {
	sync.Mutex
	ports map[int]bool
}{ports: map[int]bool{}}

// caddyfile wraps site directives in a config with Caddy's log on stderr,
// an access log (both as c.opts say), and storage in the test's own
// directory.
func (c *caddy) caddyfile(site string) string {
	accessLog := fmt.Sprintf("log {\n\t\toutput file %s\n\t\t%s\n\t}", filepath.Join(c.dir, "access.log"), c.opts.accessFormat)
	if c.opts.noAccessLog {
		accessLog = ""
	}
	return fmt.Sprintf(`{
	admin %s
	auto_https off
	persist_config off
	%s
	%s
	log {
		output stderr
		format json
		level %s
	}
}

http://%s {
	bind 127.0.0.1
	%s
	%s
}
`, c.admin, c.storageConfig(), c.opts.global, c.opts.logLevel, c.site, accessLog, site)
}

func (c *caddy) storageConfig() string {
	if c.opts.storageConfig != "" {
		return c.opts.storageConfig
	}
	return "storage file_system " + c.opts.storage
}

// startCaddy runs Caddy with site (directives for the one site) against w.
// At cleanup it stops Caddy and fails the test if any log holds a token w
// issued or the app secret, or if the race detector spoke.
func startCaddy(t *testing.T, w *wechat, site string) *caddy {
	t.Helper()
	return startCaddyWith(t, w, site, caddyOptions{})
}

// startCaddyWith is startCaddy with options.
func startCaddyWith(t *testing.T, w *wechat, site string, opts caddyOptions) *caddy {
	t.Helper()
	dir := t.TempDir()
	if opts.accessFormat == "" {
		opts.accessFormat = "format json"
	}
	if opts.logLevel == "" {
		opts.logLevel = "DEBUG"
	}
	if opts.storage == "" {
		opts.storage = filepath.Join(dir, "data")
	}
	var c *caddy
	// A port found free may be taken by a parallel test before Caddy binds
	// it: try again with other ports.
	for attempt := 0; ; attempt++ {
		c = &caddy{
			t: t, dir: dir, wechat: w, logs: &syncBuffer{}, exited: make(chan struct{}), opts: opts,
			admin: fmt.Sprintf("127.0.0.1:%d", freePort(t)),
			site:  fmt.Sprintf("127.0.0.1:%d", freePort(t)),
		}
		if w != nil {
			c.secrets = append(c.secrets, w.Secret)
		}
		c.config = filepath.Join(c.dir, "Caddyfile")
		if err := os.WriteFile(c.config, []byte(c.caddyfile(site)), 0o600); err != nil {
			t.Fatal(err)
		}
		err := c.start(t, "--config", c.config, "--adapter", "caddyfile")
		if err == nil {
			return c
		}
		if attempt < 3 && strings.Contains(c.logs.String(), "address already in use") {
			continue
		}
		t.Fatal(err)
	}
}

// start runs Caddy with args and waits for its admin endpoint.
func (c *caddy) start(t *testing.T, args ...string) error {
	bin := caddyBin
	env := append(os.Environ(), "HOME="+c.dir, "XDG_DATA_HOME="+filepath.Join(c.dir, "xdg-data"), "XDG_CONFIG_HOME="+filepath.Join(c.dir, "xdg-config"))
	if c.opts.clockOffset != 0 {
		var err error
		if bin, err = skewedCaddyBin(); err != nil {
			return err
		}
		env = append(env, "WECHAT_TEST_CLOCK_OFFSET="+c.opts.clockOffset.String())
	}
	c.cmd = exec.Command(bin, append([]string{"run"}, args...)...)
	if c.wechat != nil {
		env = append(env, "WX_IT_SECRET="+c.wechat.Secret)
	}
	c.cmd.Env = env
	c.cmd.Stdout = c.logs
	c.cmd.Stderr = c.logs
	if err := c.cmd.Start(); err != nil {
		return err
	}
	go func() {
		_ = c.cmd.Wait()
		close(c.exited)
	}()
	deadline := time.Now().Add(60 * time.Second)
	for {
		resp, err := http.Get("http://" + c.admin + "/config/")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				t.Cleanup(c.stop)
				return nil
			}
		}
		select {
		case <-c.exited:
			return fmt.Errorf("caddy exited at start:\n%s", c.logs)
		default:
		}
		if time.Now().After(deadline) {
			_ = c.cmd.Process.Kill()
			<-c.exited
			return fmt.Errorf("caddy did not start in time:\n%s", c.logs)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (c *caddy) stop() {
	select {
	case <-c.exited:
	default:
		_ = c.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-c.exited:
		case <-time.After(15 * time.Second):
			_ = c.cmd.Process.Kill()
			<-c.exited
		}
	}
	c.checkLogs()
}

// checkLogs fails the test if a token or secret reached any log output.
func (c *caddy) checkLogs() {
	t := c.t
	all := c.logs.String()
	if access, err := os.ReadFile(filepath.Join(c.dir, "access.log")); err == nil {
		all += string(access)
	}
	if strings.Contains(all, "WARNING: DATA RACE") {
		t.Errorf("the race detector reported a race in caddy:\n%s", all)
	}
	var leaked []string
	for _, s := range c.secrets {
		if strings.Contains(all, s) {
			leaked = append(leaked, "the app secret")
		}
	}
	if c.wechat != nil {
		for _, kind := range []struct {
			what   string
			values []string
		}{
			{"an access_token", c.wechat.IssuedTokens()},
			{"a jsapi_ticket", c.wechat.IssuedTickets()},
			{"a platform's ticket, authorization code or refresh token", c.wechat.IssuedPlatformSecrets()},
			{"a user's session_key or OAuth token", c.wechat.IssuedSessions()},
		} {
			if slices.ContainsFunc(kind.values, func(v string) bool { return strings.Contains(all, v) }) {
				leaked = append(leaked, kind.what)
			}
		}
	}
	if len(leaked) > 0 {
		t.Errorf("logs reveal %s", strings.Join(leaked, " and "))
	}
	if t.Failed() {
		// Caddy's own log without the access log's lines, which would crowd
		// it out under load.
		var own []string
		for _, line := range strings.Split(c.logs.String(), "\n") {
			if !strings.Contains(line, `"logger":"http.log.access`) {
				own = append(own, line)
			}
		}
		t.Logf("caddy's log (last 8 KiB, no access log):\n%s", tail(strings.Join(own, "\n"), 8<<10))
	}
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

// reload replaces the config through the admin API, as `caddy reload` does.
func (c *caddy) reload(t *testing.T, site string) {
	t.Helper()
	if status, body := c.loadRaw(t, c.caddyfile(site)); status != http.StatusOK {
		t.Fatalf("reload: %d %s", status, body)
	}
	// The old config's server closes its idle connections as it stops; a
	// request sent on one of them just then would see a reset that has
	// nothing to do with the proxy.
	client.CloseIdleConnections()
}

// loadRaw posts a whole Caddyfile to the admin endpoint and returns the
// status and body.
func (c *caddy) loadRaw(t *testing.T, config string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, "http://"+c.admin+"/load", strings.NewReader(config))
	req.Header.Set("Content-Type", "text/caddyfile")
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

// accessLog reads the access log written so far.
func (c *caddy) accessLog(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(c.dir, "access.log"))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func (c *caddy) url(pathAndQuery string) string { return "http://" + c.site + pathAndQuery }

// rss reads the process's resident set size and its peak, in bytes.
func (c *caddy) rss(t *testing.T) (now, peak int64) {
	t.Helper()
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", c.cmd.Process.Pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(status), "\n") {
		fields := strings.Fields(line)
		if len(fields) < 2 {
			continue
		}
		kb, _ := strconv.ParseInt(fields[1], 10, 64)
		switch fields[0] {
		case "VmRSS:":
			now = kb << 10
		case "VmHWM:":
			peak = kb << 10
		}
	}
	return now, peak
}

// client bounds every request: a hang fails the test instead of stalling it.
var client = &http.Client{Timeout: 30 * time.Second}

// answer is a WeChat-shaped reply: an errcode and, from the emulator's
// echo, what reached WeChat.
type answer struct {
	emulator.Echo
	Status int
	Header http.Header
	Raw    string
}

func do(t *testing.T, req *http.Request) answer {
	t.Helper()
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", req.Method, req.URL.Path, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: reading: %v", req.Method, req.URL.Path, err)
	}
	a := answer{Status: resp.StatusCode, Header: resp.Header, Raw: string(body)}
	if err := json.Unmarshal(body, &a.Echo); err != nil {
		t.Fatalf("%s %s: not JSON (%d): %q", req.Method, req.URL.Path, resp.StatusCode, tail(string(body), 300))
	}
	return a
}

func get(t *testing.T, url string) answer {
	t.Helper()
	req, err := http.NewRequestWithContext(context.Background(), http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	return do(t, req)
}

func post(t *testing.T, url, contentType string, body []byte) answer {
	t.Helper()
	req, err := http.NewRequestWithContext(context.Background(), http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", contentType)
	return do(t, req)
}

// apis runs f as a parallel subtest for each token API.
func apis(t *testing.T, f func(t *testing.T, api string)) {
	for _, api := range []string{"stable", "classic"} {
		t.Run(api, func(t *testing.T) {
			t.Parallel()
			f(t, api)
		})
	}
}

// startProxy runs an emulator and a Caddy with wechat_token for it in
// front, and checks that one request goes through.
func startProxy(t *testing.T, cfg emulator.Config, api string, options ...string) (*wechat, *caddy) {
	t.Helper()
	w := startWeChat(t, cfg)
	c := startCaddy(t, w, w.tokenBlock(api, options...))
	if a := get(t, c.url("/cgi-bin/get_api_domain_ip")); a.Errcode != 0 {
		t.Fatalf("first request: %+v", a.Echo)
	}
	return w, c
}

// issued is the number of tokens the emulator has handed out.
func (w *wechat) issued() int { return w.Stats().Issued() }
