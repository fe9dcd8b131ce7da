package main

import (
	"bufio"
	"cmp"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// redisServer is a redis-server the benchmark started to hold a Caddy's
// storage, with a connection of the benchmark's own to read its command
// counts: what the proxy asks of its storage, counted by the storage.
type redisServer struct {
	proc *process
	port int
	conn net.Conn
	rd   *bufio.Reader
}

// startRedis runs redis-server on a free loopback port, without
// persistence (the benchmark counts commands, it keeps nothing), and waits
// until it answers PING.
func startRedis(dir, name string) (*redisServer, error) {
	bin, err := lookPath("redis-server")
	if err != nil {
		return nil, errors.New("redis-server is needed: run ./bench/run.sh, which installs it with apt-get, or install it yourself")
	}
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	data := filepath.Join(dir, name+"-data")
	if err := os.MkdirAll(data, 0o755); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p, err := start(dir, name, nil, bin, "--port", strconv.Itoa(port), "--bind", "127.0.0.1",
		"--save", "", "--appendonly", "no", "--dir", data)
	if err != nil {
		return nil, err
	}
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	deadline := time.Now().Add(10 * time.Second)
	for {
		conn, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			r := &redisServer{proc: p, port: port, conn: conn, rd: bufio.NewReader(conn)}
			reply, err := r.command("PING")
			if err == nil && reply == "PONG" {
				return r, nil
			}
			conn.Close()
		}
		if syscall.Kill(p.cmd.Process.Pid, 0) != nil || time.Now().After(deadline) {
			p.stop()
			return nil, fmt.Errorf("%s did not answer PING on %s: %v\n%s", name, addr, err, p.logTail())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// stop closes the benchmark's connection and ends the server.
func (r *redisServer) stop() {
	if r == nil {
		return
	}
	r.conn.Close()
	r.proc.stop()
}

// command sends one command and returns its reply, a simple or bulk
// string or an integer: all the benchmark asks (PING, INFO).
func (r *redisServer) command(args ...string) (string, error) {
	if err := r.conn.SetDeadline(time.Now().Add(5 * time.Second)); err != nil {
		return "", fmt.Errorf("redis %s: %w", args[0], err)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "*%d\r\n", len(args))
	for _, a := range args {
		fmt.Fprintf(&b, "$%d\r\n%s\r\n", len(a), a)
	}
	if _, err := io.WriteString(r.conn, b.String()); err != nil {
		return "", fmt.Errorf("redis %s: %w", args[0], err)
	}
	reply, err := readReply(r.rd)
	if err != nil {
		return "", fmt.Errorf("redis %s: %w", args[0], err)
	}
	return reply, nil
}

// readReply reads one RESP reply that is not an array.
func readReply(rd *bufio.Reader) (string, error) {
	line, err := rd.ReadString('\n')
	if err != nil {
		return "", err
	}
	line = strings.TrimSuffix(line, "\r\n")
	if line == "" {
		return "", errors.New("empty reply")
	}
	switch line[0] {
	case '+', ':':
		return line[1:], nil
	case '-':
		return "", errors.New(line[1:])
	case '$':
		n, err := strconv.Atoi(line[1:])
		if err != nil || n < 0 {
			return "", fmt.Errorf("bad bulk reply %q", line)
		}
		buf := make([]byte, n+2)
		if _, err := io.ReadFull(rd, buf); err != nil {
			return "", err
		}
		return string(buf[:n]), nil
	}
	return "", fmt.Errorf("unexpected reply %q", line)
}

// commandCounts are the commands Redis has run, by name (INFO
// commandstats), the benchmark's own INFO left out: what the storage's
// clients asked of it.
type commandCounts map[string]int64

func (r *redisServer) commandCounts() (commandCounts, error) {
	info, err := r.command("INFO", "commandstats")
	if err != nil {
		return nil, err
	}
	return parseCommandStats(info)
}

// parseCommandStats reads INFO commandstats's lines,
// cmdstat_<name>:calls=N,usec=...
func parseCommandStats(info string) (commandCounts, error) {
	counts := commandCounts{}
	for _, line := range strings.Split(info, "\n") {
		name, fields, ok := strings.Cut(strings.TrimSpace(line), ":")
		if !ok || !strings.HasPrefix(name, "cmdstat_") {
			continue
		}
		name = strings.TrimPrefix(name, "cmdstat_")
		if name == "info" {
			continue // the benchmark's own
		}
		calls, _, _ := strings.Cut(strings.TrimPrefix(fields, "calls="), ",")
		n, err := strconv.ParseInt(calls, 10, 64)
		if err != nil || !strings.HasPrefix(fields, "calls=") {
			return nil, fmt.Errorf("INFO commandstats: cannot read %q", line)
		}
		counts[name] = n
	}
	return counts, nil
}

// since is what ran after before.
func (c commandCounts) since(before commandCounts) commandCounts {
	d := commandCounts{}
	for name, n := range c {
		if n > before[name] {
			d[name] = n - before[name]
		}
	}
	return d
}

func (c commandCounts) total() int64 {
	var n int64
	for _, v := range c {
		n += v
	}
	return n
}

// text lists the commands, most run first: "get 12, zrange 4".
func (c commandCounts) text() string {
	names := make([]string, 0, len(c))
	for name := range c {
		names = append(names, name)
	}
	slices.SortFunc(names, func(a, b string) int {
		if byCount := cmp.Compare(c[b], c[a]); byCount != 0 {
			return byCount
		}
		return strings.Compare(a, b)
	})
	parts := make([]string, len(names))
	for i, name := range names {
		parts[i] = fmt.Sprintf("%s %d", name, c[name])
	}
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, ", ")
}
