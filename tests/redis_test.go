package tests

import (
	"bufio"
	"fmt"
	"net"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/caddy-wechat/caddy-wechat/emulator"
)

// redisServer is a throwaway redis-server on a loopback port, which a test
// may stop and start again on the same port.
type redisServer struct {
	t    *testing.T
	bin  string
	port int
	dir  string
	cmd  *exec.Cmd
}

// startRedis runs a throwaway redis-server and returns its port. The test
// fails, not skips, without one: make test and .ci/run install it.
func startRedis(t *testing.T) int { return startRedisServer(t).port }

func startRedisServer(t *testing.T) *redisServer {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		t.Fatal("redis-server is not installed (make test installs it; or apt-get install redis-server)")
	}
	r := &redisServer{t: t, bin: bin, port: freePort(t), dir: t.TempDir()}
	r.Start()
	t.Cleanup(r.Stop)
	return r
}

// Start runs the server (again) on its port and waits until it answers.
// Every write is in its append-only file before it is answered, as a Redis
// holding Caddy's storage (certificates too) is configured: a server killed
// and started again has what it acknowledged.
func (r *redisServer) Start() {
	r.t.Helper()
	r.cmd = exec.Command(r.bin, "--port", strconv.Itoa(r.port), "--bind", "127.0.0.1", "--save", "",
		"--appendonly", "yes", "--appendfsync", "always", "--dir", r.dir)
	if err := r.cmd.Start(); err != nil {
		r.t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		conn, err := net.Dial("tcp", r.addr())
		if err == nil {
			_, _ = conn.Write([]byte("PING\r\n"))
			line, _ := bufio.NewReader(conn).ReadString('\n')
			conn.Close()
			if line == "+PONG\r\n" {
				return
			}
		}
		if time.Now().After(deadline) {
			r.t.Fatalf("redis-server did not answer on port %d", r.port)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Stop kills the server, as a crash would.
func (r *redisServer) Stop() {
	if r.cmd == nil {
		return
	}
	_ = r.cmd.Process.Kill()
	_ = r.cmd.Wait()
	r.cmd = nil
}

func (r *redisServer) addr() string { return fmt.Sprintf("127.0.0.1:%d", r.port) }

// keys is the server's KEYS pattern (a test's server holds a few keys).
func (r *redisServer) keys(t *testing.T, pattern string) []string {
	t.Helper()
	conn, err := net.DialTimeout("tcp", r.addr(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
	fmt.Fprintf(conn, "*2\r\n$4\r\nKEYS\r\n$%d\r\n%s\r\n", len(pattern), pattern)
	rd := bufio.NewReader(conn)
	line, err := rd.ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "*") {
		t.Fatalf("KEYS %s: %q %v", pattern, line, err)
	}
	n, _ := strconv.Atoi(strings.TrimSpace(line[1:]))
	keys := make([]string, 0, n)
	for range n {
		if _, err := rd.ReadString('\n'); err != nil { // $<length>
			t.Fatal(err)
		}
		key, err := rd.ReadString('\n')
		if err != nil {
			t.Fatal(err)
		}
		keys = append(keys, strings.TrimSuffix(key, "\r\n"))
	}
	return keys
}

// redisStorage is the storage option for a redis-server on port.
func redisStorage(port int) string {
	return fmt.Sprintf("storage redis {\n\t\thost 127.0.0.1\n\t\tport %d\n\t\tkey_prefix wechat_it\n\t}", port)
}

// The fleet test again, with the instances coordinating through Redis.
func TestFleetOnRedisFetchesOncePerRotation(t *testing.T) {
	port := startRedis(t)
	w := startWeChat(t, emulator.Config{TokenTTL: 4 * time.Second, Overlap: time.Second})
	storage := redisStorage(port)
	var fleet []*caddy
	for range 3 {
		fleet = append(fleet, startCaddyWith(t, w, w.tokenBlock("classic", "refresh_ahead 1s", "min_token_lifetime 1s"), caddyOptions{storageConfig: storage}))
	}
	if a := get(t, fleet[0].url("/cgi-bin/user/info?openid=o1")); a.Errcode != 0 {
		t.Fatalf("first request: %+v", a.Echo)
	}
	// Counted from here, not from the first start (see the file-system
	// fleet test).
	start := time.Now()
	ok, failed := loadFleet(t, fleet, start.Add(10*time.Second))
	if len(failed) > 0 {
		t.Fatalf("%d of %d requests failed, first: %s", len(failed), ok+len(failed), failed[0])
	}
	// One instance alone renews every 3 s: 3 or 4 in 10 s.
	if n := w.issuedSince(start); n < 2 || n > 4 {
		t.Fatalf("the fleet fetched %d tokens in 10 s of 4 s lifetimes", n)
	}
	// Restarting the fleet's first member fetches nothing.
	before := w.issued()
	fleet[0].stop()
	again := startCaddyWith(t, w, w.tokenBlock("classic", "refresh_ahead 1s", "min_token_lifetime 1s"), caddyOptions{storageConfig: storage})
	if a := get(t, again.url("/cgi-bin/user/info?openid=o1")); a.Errcode != 0 {
		t.Fatalf("restarted: %+v", a.Echo)
	}
	if n := w.issued(); n > before+1 { // a renewal may fall due meanwhile
		t.Fatalf("restart fetched %d tokens", n-before)
	}
}
