package tests

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddy-wechat/caddy-wechat/emulator"
)

// wechatShaped checks that a is an answer of the proxy's own: WeChat's
// error shape, Content-Type exactly application/json, and status.
func wechatShaped(t *testing.T, what string, a answer, status int) {
	t.Helper()
	if a.Status != status || a.Errcode != -1 || !strings.HasPrefix(a.Errmsg, "wechat_token: ") {
		t.Fatalf("%s: %d %s, want %d in WeChat's shape", what, a.Status, a.Raw, status)
	}
	if got := a.Header.Values("Content-Type"); len(got) != 1 || got[0] != "application/json" {
		t.Fatalf("%s: Content-Type %q, want exactly application/json", what, got)
	}
}

// deadUpstream is a TCP listener that misbehaves with every connection:
// "reset" closes it at once with a RST, "hang" reads and never answers.
func deadUpstream(t *testing.T, mode string) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var conns sync.WaitGroup
	var mu sync.Mutex
	var open []net.Conn
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range open {
			c.Close()
		}
		mu.Unlock()
		conns.Wait()
	})
	conns.Add(1)
	go func() {
		defer conns.Done()
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			switch mode {
			case "reset":
				_ = conn.(*net.TCPConn).SetLinger(0)
				conn.Close()
			case "hang":
				mu.Lock()
				open = append(open, conn)
				mu.Unlock()
				conns.Add(1)
				go func() { defer conns.Done(); _, _ = io.Copy(io.Discard, conn) }()
			}
		}
	}()
	return ln.Addr().String()
}

// What the proxy answers by itself reaches SDKs as an error: refused,
// reset and timed-out upstreams, a refused endpoint, no token. Without
// the handler Caddy would answer an empty body.
func TestEveryOwnAnswerIsWeChatShaped(t *testing.T) {
	w := startWeChat(t, emulator.Config{})
	refused := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	reset := deadUpstream(t, "reset")
	hang := deadUpstream(t, "hang")
	block := func(upstream string) string {
		return fmt.Sprintf(`wechat_token {
			app_id %s
			app_secret {env.WX_IT_SECRET}
			api_base %s
			max_replay_body 1KiB
		}
		reverse_proxy %s {
			transport http {
				response_header_timeout 1s
			}
		}`, w.AppID, w.URL, upstream)
	}
	c := startCaddy(t, w, fmt.Sprintf(`
	handle_path /refused/* {
		%s
	}
	handle_path /reset/* {
		%s
	}
	handle_path /hang/* {
		%s
	}
	handle {
		%s
	}`, block(refused), block(reset), block(hang), w.tokenBlock("stable")))

	small := []byte(`{"touser":"o1"}`)
	large := bytes.Repeat([]byte("x"), 64<<10) // over max_replay_body: streams
	for _, tc := range []struct {
		prefix string
		status int
	}{{"/refused", http.StatusBadGateway}, {"/reset", http.StatusBadGateway}, {"/hang", http.StatusGatewayTimeout}} {
		wechatShaped(t, tc.prefix+" GET", get(t, c.url(tc.prefix+"/cgi-bin/user/info?openid=o1")), tc.status)
		wechatShaped(t, tc.prefix+" POST", post(t, c.url(tc.prefix+"/cgi-bin/message/custom/send"), "application/json", small), tc.status)
		wechatShaped(t, tc.prefix+" streamed upload", post(t, c.url(tc.prefix+"/cgi-bin/media/upload?type=image"), "application/octet-stream", large), tc.status)
		wechatShaped(t, tc.prefix+" passthrough", get(t, c.url(tc.prefix+"/sns/userinfo?access_token=user&openid=o1")), tc.status)
	}
	wechatShaped(t, "token endpoint", get(t, c.url("/cgi-bin/token?grant_type=client_credential")), http.StatusForbidden)

	// No token: the 503.
	busy := startWeChat(t, emulator.Config{})
	busy.SetFaults(emulator.Faults{TokenEndpoint: emulator.FaultBusy})
	c2 := startCaddy(t, busy, busy.tokenBlock("stable", "fetch_timeout 1s"))
	wechatShaped(t, "no token", get(t, c2.url("/cgi-bin/user/info?openid=o1")), http.StatusServiceUnavailable)

	for _, logs := range []string{c.logs.String(), c2.logs.String()} {
		for _, tok := range w.IssuedTokens() {
			if strings.Contains(logs, tok) {
				t.Fatal("a log line holds a token")
			}
		}
	}
}

// A replay that cannot reach WeChat is answered like a first attempt that
// could not: the client never sees the rejection it was spared, nor an
// empty 502.
func TestFailedReplayIsWeChatShaped(t *testing.T) {
	w := startWeChat(t, emulator.Config{})
	var calls atomic.Int32
	upstream := httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		if calls.Add(1)%2 == 1 {
			rw.Header().Set("Content-Type", "text/plain")
			fmt.Fprint(rw, `{"errcode":40001,"errmsg":"invalid credential"}`)
			return
		}
		conn, _, err := http.NewResponseController(rw).Hijack()
		if err == nil {
			_ = conn.(*net.TCPConn).SetLinger(0)
			conn.Close()
		}
	}))
	t.Cleanup(upstream.Close)
	c := startCaddy(t, w, fmt.Sprintf(`wechat_token {
		app_id %s
		app_secret {env.WX_IT_SECRET}
		api_base %s
	}
	reverse_proxy %s`, w.AppID, w.URL, upstream.URL))
	a := post(t, c.url("/cgi-bin/message/custom/send"), "application/json", []byte(`{"touser":"o1"}`))
	wechatShaped(t, "replay reset", a, http.StatusBadGateway)
	if n := calls.Load(); n != 2 {
		t.Fatalf("upstream saw %d calls, want the first and its replay", n)
	}
	if n := metric(t, c.scrape(t), "caddy_wechat_token_retried_requests_total", `outcome="error"`); n != 1 {
		t.Fatalf("retried error outcome counted %v times", n)
	}
}

// The replay budget: bodies held by a slow client count against it, a body
// that would pass it streams without replay (WeChat's rejection passed on,
// sent once, byte for byte), and once the slow body is held whole it is
// replayed from its temporary file, byte for byte, leaving no file behind.
func TestReplayBudgetIsSharedByRequestsInFlight(t *testing.T) {
	w := startWeChat(t, emulator.Config{})
	tmp := t.TempDir()
	c := startCaddyWith(t, w, w.tokenBlock("stable", "max_replay_body 4MiB"), caddyOptions{global: fmt.Sprintf(`wechat {
		replay_budget   1MiB
		replay_memory   16KiB
		replay_temp_dir %s
	}`, tmp)})
	if a := get(t, c.url("/cgi-bin/get_api_domain_ip")); a.Errcode != 0 {
		t.Fatalf("first request: %s", a.Raw)
	}

	// The slow client sends 900 KiB of a declared 1000 KiB, then waits.
	slow := bytes.Repeat([]byte("slow-upload-"), 1000<<10/12+1)
	slow = slow[:1000<<10]
	conn, err := net.Dial("tcp", c.site)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "POST /cgi-bin/media/upload?type=image HTTP/1.1\r\nHost: %s\r\nContent-Type: application/octet-stream\r\nContent-Length: %d\r\n\r\n", c.site, len(slow))
	if _, err := conn.Write(slow[:900<<10]); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the slow body to be held", func() bool {
		return metric(t, c.scrape(t), "caddy_wechat_replay_held_bytes") >= 900<<10
	})
	if entries, _ := os.ReadDir(tmp); len(entries) != 0 {
		t.Fatalf("a held body is visible in replay_temp_dir: %v", entries)
	}

	w.Revoke(w.AppID)
	before := w.Stats()
	other := bytes.Repeat([]byte("o"), 300<<10)
	a := post(t, c.url("/cgi-bin/media/upload?type=image"), "application/octet-stream", other)
	if a.Errcode != 40001 {
		t.Fatalf("a body past the budget: errcode %d, want WeChat's 40001 passed on", a.Errcode)
	}
	if calls := w.Stats().APICalls - before.APICalls; calls != 1 {
		t.Fatalf("a body past the budget was sent %d times", calls)
	}
	if n := metric(t, c.scrape(t), "caddy_wechat_replay_not_held_total", `reason="over_budget"`); n != 1 {
		t.Fatalf("over_budget counted %v times", n)
	}

	// The slow client finishes: its body is replayed from the file.
	if _, err := conn.Write(slow[900<<10:]); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(body), `"errcode":0`) || !strings.Contains(string(body), sha(slow)) {
		t.Fatalf("the slow upload after the revocation: %s", body)
	}
	scraped := c.scrape(t)
	if held := metric(t, scraped, "caddy_wechat_replay_held_bytes"); held != 0 {
		t.Fatalf("%v bytes still held after every request ended", held)
	}
	if spilled := metric(t, scraped, "caddy_wechat_replay_spilled_total"); spilled < 1 {
		t.Fatal("the slow body did not spill to a file")
	}
	if entries, _ := os.ReadDir(tmp); len(entries) != 0 {
		t.Fatalf("replay_temp_dir holds %v after the requests", entries)
	}
}

// waitFor polls cond until it holds, failing after 20 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for !cond() {
		select {
		case <-ctx.Done():
			t.Fatalf("timed out waiting for %s", what)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// 32 uploads of 4 MiB at once, right after WeChat revoked the token: every
// one is replayed byte for byte, and the proxy's memory grows by far less
// than the bodies it holds (they are in temporary files). Then 64 clients
// that declare 16 MiB and send 1 KiB cost what they sent, not what they
// declared.
func TestLargeUploadsAtOnceHoldLittleMemory(t *testing.T) {
	w, c := startProxy(t, emulator.Config{}, "stable")
	upload := func(body []byte) answer {
		return post(t, c.url("/cgi-bin/media/upload?type=image"), "application/octet-stream", body)
	}
	const n, size = 32, 4 << 20
	bodies := make([][]byte, n)
	for i := range bodies {
		bodies[i] = bytes.Repeat([]byte{byte('a' + i%26), byte(i)}, size/2)
	}
	if a := upload(bodies[0]); a.Errcode != 0 { // warm up buffers and connections
		t.Fatalf("warm-up upload: %s", a.Raw)
	}
	_, peakBefore := c.rss(t)
	w.Revoke(w.AppID)
	// The new token takes a second to come, so that every upload's first
	// attempt (its token is taken when its headers arrive) is sent with the
	// revoked one and replayed: the point of the test.
	w.SetFaults(emulator.Faults{TokenEndpoint: emulator.FaultSlow})
	before := w.Stats()
	var wg sync.WaitGroup
	answers := make([]answer, n)
	for i := range n {
		wg.Go(func() { answers[i] = upload(bodies[i]) })
	}
	wg.Wait()
	w.SetFaults(emulator.Faults{})
	for i, a := range answers {
		if a.Errcode != 0 || a.BodySHA256 != sha(bodies[i]) {
			t.Fatalf("upload %d after the revocation: %s", i, a.Raw)
		}
	}
	if calls := w.Stats().APICalls - before.APICalls; calls != 2*n {
		t.Fatalf("%d calls reached WeChat, want %d (each upload and its replay)", calls, 2*n)
	}
	_, peakAfter := c.rss(t)
	t.Logf("peak RSS growth: %d MiB for %d MiB of uploads", (peakAfter-peakBefore)>>20, n*size>>20)
	if growth := peakAfter - peakBefore; growth > 48<<20 {
		t.Fatalf("peak RSS grew by %d MiB holding %d MiB of uploads for replay", growth>>20, n*size>>20)
	}

	// Slow clients declaring 16 MiB each.
	var conns []net.Conn
	defer func() {
		for _, conn := range conns {
			conn.Close()
		}
	}()
	for range 64 {
		conn, err := net.Dial("tcp", c.site)
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, conn)
		fmt.Fprintf(conn, "POST /cgi-bin/media/upload?type=image HTTP/1.1\r\nHost: %s\r\nContent-Length: %d\r\n\r\n%s", c.site, 16<<20, bytes.Repeat([]byte("s"), 1<<10))
	}
	waitFor(t, "64 slow bodies to be read", func() bool {
		return metric(t, c.scrape(t), "caddy_wechat_replay_held_bytes") >= 64<<10
	})
	// Each holds what arrived and the chunk it is reading into.
	if held := metric(t, c.scrape(t), "caddy_wechat_replay_held_bytes"); held > 64*(1<<10+32<<10) {
		t.Fatalf("64 clients that sent 1 KiB each hold %v bytes", held)
	}
	_, peakSlow := c.rss(t)
	t.Logf("peak RSS growth: %d MiB for 64 slow clients declaring 16 MiB", (peakSlow-peakAfter)>>20)
	if growth := peakSlow - peakAfter; growth > 32<<20 {
		t.Fatalf("peak RSS grew by %d MiB for 64 clients declaring 16 MiB and sending 1 KiB", growth>>20)
	}
}
