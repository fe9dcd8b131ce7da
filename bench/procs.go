package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// process is a server the benchmark started: the upstream, the emulator,
// a Caddy or nginx. pids are the processes whose CPU and memory count as
// its own (nginx: master and workers).
type process struct {
	name string
	cmd  *exec.Cmd
	pids []int
	log  string
}

// pinnedEnv carries the proxies' CPU list to the driver re-run on the
// load side's CPUs.
const pinnedEnv = "BENCH_PROXY_CPUS"

// proxyCPUs is the CPU list the proxies are pinned to ("" when not
// pinning), and proxyCPUCount its size.
var (
	proxyCPUs     = os.Getenv(pinnedEnv)
	proxyCPUCount = cpuListSize(proxyCPUs)
)

// pinLoadSide re-runs the benchmark on the lower half of the CPUs, leaving
// the upper half to the proxies: on a small machine, whether a proxy
// shares a core with wrk or the upstream otherwise changes its results by
// more than the handler costs. Children inherit the load side's CPUs;
// proxies are started on theirs with taskset.
func pinLoadSide() error {
	if proxyCPUs != "" {
		return nil // this is the re-run
	}
	n := runtime.NumCPU()
	if n < 2 {
		return fmt.Errorf("%d CPU", n)
	}
	taskset, err := exec.LookPath("taskset")
	if err != nil {
		return err
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	load, proxies := fmt.Sprintf("0-%d", n/2-1), fmt.Sprintf("%d-%d", n/2, n-1)
	env := append(os.Environ(), pinnedEnv+"="+proxies)
	return syscall.Exec(taskset, append([]string{"taskset", "-c", load, self}, os.Args[1:]...), env)
}

func cpuListSize(list string) int {
	var lo, hi int
	if _, err := fmt.Sscanf(list, "%d-%d", &lo, &hi); err == nil && hi >= lo {
		return hi - lo + 1
	}
	return 0
}

// startProxyProcess is start for a proxy: on the proxies' CPUs when pinning.
func startProxyProcess(dir, name string, env []string, bin string, args ...string) (*process, error) {
	if proxyCPUs == "" {
		return start(dir, name, env, bin, args...)
	}
	return start(dir, name, env, "taskset", append([]string{"-c", proxyCPUs, bin}, args...)...)
}

// start runs a server with its output in a log file in dir.
func start(dir, name string, env []string, bin string, args ...string) (*process, error) {
	logPath := filepath.Join(dir, name+".log")
	logFile, err := os.Create(logPath)
	if err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.Env = append(os.Environ(), env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		logFile.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	go func() { _ = cmd.Wait(); logFile.Close() }()
	return &process{name: name, cmd: cmd, pids: []int{cmd.Process.Pid}, log: logPath}, nil
}

// stop ends the server and everything it started.
func (p *process) stop() {
	if p == nil || p.cmd.Process == nil {
		return
	}
	_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGTERM)
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		if syscall.Kill(p.cmd.Process.Pid, 0) != nil {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
}

// logTail is the end of the server's log, for error messages.
func (p *process) logTail() string {
	b, _ := os.ReadFile(p.log)
	if len(b) > 2000 {
		b = b[len(b)-2000:]
	}
	return string(b)
}

// freePort finds a loopback port nobody listens on now.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("find a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// waitHTTP polls url until it answers at all (any status) or the process
// exits or timeout passes.
func waitHTTP(p *process, url string, timeout time.Duration) error {
	client := &http.Client{Timeout: time.Second}
	deadline := time.Now().Add(timeout)
	for {
		resp, err := client.Get(url)
		if err == nil {
			resp.Body.Close()
			return nil
		}
		if syscall.Kill(p.cmd.Process.Pid, 0) != nil || time.Now().After(deadline) {
			return fmt.Errorf("%s did not answer on %s: %v\n%s", p.name, url, err, p.logTail())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// clockTicks is the kernel's USER_HZ, the unit of CPU times in /proc.
const clockTicks = 100

// cpuSeconds is the CPU time (user + system) the processes used so far.
func cpuSeconds(pids []int) (float64, error) {
	var ticks int64
	for _, pid := range pids {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			return 0, fmt.Errorf("read CPU time: %w", err)
		}
		// The command name, field 2, may hold spaces: count after its ')'.
		fields := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
		if len(fields) < 13 {
			return 0, fmt.Errorf("read CPU time of %d: short stat line", pid)
		}
		for _, f := range fields[11:13] { // utime, stime
			n, err := strconv.ParseInt(f, 10, 64)
			if err != nil {
				return 0, fmt.Errorf("read CPU time of %d: %w", pid, err)
			}
			ticks += n
		}
	}
	return float64(ticks) / clockTicks, nil
}

// resetPeakRSS restarts the kernel's peak-RSS count of the processes
// (clear_refs 5), so that each trial reports its own peak. Where the
// kernel refuses, the peak covers the process's whole life; the report
// says which.
func resetPeakRSS(pids []int) bool {
	ok := true
	for _, pid := range pids {
		if err := os.WriteFile(fmt.Sprintf("/proc/%d/clear_refs", pid), []byte("5"), 0); err != nil {
			ok = false
		}
	}
	return ok
}

// peakRSS is the sum of the processes' peak resident set sizes, in bytes.
func peakRSS(pids []int) (int64, error) { return statusBytes(pids, "VmHWM:") }

// currentRSS is the sum of the processes' resident set sizes, in bytes.
func currentRSS(pids []int) (int64, error) { return statusBytes(pids, "VmRSS:") }

// statusBytes sums a kB field of the processes' /proc status.
func statusBytes(pids []int, field string) (int64, error) {
	var total int64
	for _, pid := range pids {
		f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
		if err != nil {
			return 0, fmt.Errorf("read %s: %w", field, err)
		}
		sc := bufio.NewScanner(f)
		found := false
		for sc.Scan() {
			if v, ok := strings.CutPrefix(sc.Text(), field); ok {
				kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
				if err != nil {
					f.Close()
					return 0, fmt.Errorf("read %s of %d: %w", field, pid, err)
				}
				total += kb << 10
				found = true
			}
		}
		f.Close()
		if !found {
			return 0, fmt.Errorf("read %s of %d: not in /proc status", field, pid)
		}
	}
	return total, nil
}

// childPids lists the processes whose parent is pid (nginx's workers).
func childPids(pid int) []int {
	entries, _ := os.ReadDir("/proc")
	var out []int
	for _, e := range entries {
		child, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		fields := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
		if len(fields) > 1 && fields[1] == strconv.Itoa(pid) {
			out = append(out, child)
		}
	}
	return out
}

// run runs a command to its end, returning its output, or an error with it.
func run(ctx context.Context, dir string, name string, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err != nil {
		var exit *exec.ExitError
		if errors.As(err, &exit) || len(out) > 0 {
			return out, fmt.Errorf("%s %s: %w\n%s", name, strings.Join(args, " "), err, out)
		}
		return out, fmt.Errorf("%s %s: %w", name, strings.Join(args, " "), err)
	}
	return out, nil
}
