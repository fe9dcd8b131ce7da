package tests

import (
	"bufio"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// emulatorBin is cmd/wechat-emulator, built on first use.
var emulatorBin = sync.OnceValues(func() (string, error) { return build("../cmd/wechat-emulator") })

// tourStep is one command of demo/tour.txt and what its answer must hold.
type tourStep struct {
	title, command, expect string
}

func readTour(t *testing.T) []tourStep {
	t.Helper()
	f, err := os.Open("../demo/tour.txt")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var steps []tourStep
	var title string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "## "):
			title = strings.TrimPrefix(line, "## ")
		case strings.HasPrefix(line, "$ "):
			steps = append(steps, tourStep{title: title, command: strings.TrimPrefix(line, "$ ")})
		case strings.HasPrefix(line, "expect: "):
			if len(steps) == 0 || steps[len(steps)-1].expect != "" {
				t.Fatalf("tour.txt: %q follows no command", line)
			}
			steps[len(steps)-1].expect = strings.TrimPrefix(line, "expect: ")
		}
	}
	if len(steps) < 10 {
		t.Fatalf("tour.txt has %d commands", len(steps))
	}
	return steps
}

// The demo's tour works: the emulator and Caddy as demo/run.sh starts
// them (on free ports), its setup, then every command of the tour, each
// answer checked against the tour's "expect:".
func TestDemoTour(t *testing.T) {
	t.Parallel()
	emu, err := emulatorBin()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	ports := map[string]string{}
	for _, name := range []string{"DEMO_EMULATOR_ADDR", "DEMO_PROXY_ADDR", "DEMO_APP_ADDR", "DEMO_ADMIN"} {
		ports[name] = fmt.Sprintf("127.0.0.1:%d", freePort(t))
	}
	// demo/env.sh's variables, with the ports moved.
	cmd := exec.Command("bash", "-c", ". ../demo/env.sh && env")
	cmd.Env = append(os.Environ(), "DEMO_DIR="+dir)
	for k, v := range ports {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("demo/env.sh: %v", err)
	}
	env := append(strings.Split(strings.TrimSpace(string(out)), "\n"), "DEMO_DIR="+dir, "HOME="+dir,
		"XDG_DATA_HOME="+filepath.Join(dir, "data"), "XDG_CONFIG_HOME="+filepath.Join(dir, "config"))
	lookup := func(name string) string {
		for _, kv := range env {
			if v, ok := strings.CutPrefix(kv, name+"="); ok {
				return v
			}
		}
		return ""
	}
	var logs syncBuffer
	start := func(bin string, args ...string) {
		c := exec.Command(bin, args...)
		c.Env, c.Stdout, c.Stderr = env, &logs, &logs
		if err := c.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = c.Process.Kill(); _ = c.Wait() })
	}
	start(emu, "-listen", lookup("DEMO_EMULATOR_ADDR"), "-ttl", "2m", "-overlap", "10s", "-stable-window", "10s",
		"-component", lookup("WX_COMPONENT_APPID")+":"+lookup("WX_COMPONENT_APPSECRET")+":"+lookup("WX_COMPONENT_TOKEN")+":"+lookup("WX_COMPONENT_AES_KEY"))
	start(caddyBin, "run", "--config", "../demo/Caddyfile", "--adapter", "caddyfile")
	waitFor(t, "the demo's Caddy", func() bool {
		resp, err := http.Get("http://" + lookup("DEMO_ADMIN") + "/config/")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
	run := func(what, command string) string {
		t.Helper()
		c := exec.Command("bash", "-c", command)
		c.Env, c.Dir = env, ".."
		out, err := c.CombinedOutput()
		if err != nil {
			t.Fatalf("%s: %v\n%s\ncaddy and the emulator:\n%s", what, err, out, tail(logs.String(), 4000))
		}
		return string(out)
	}
	run("demo/setup.sh", "demo/setup.sh")
	// Each command once, as a reader pastes it: the setup's pushes were
	// answered, so the accounts are authorized already.
	for _, step := range readTour(t) {
		if got := run(step.title, step.command); !strings.Contains(got, step.expect) {
			t.Fatalf("%s:\n$ %s\n%s\nwant it to contain %s\ncaddy and the emulator:\n%s", step.title, step.command, got, step.expect, tail(logs.String(), 4000))
		}
	}
	all := logs.String()
	for _, secret := range []string{"WECHAT_APP_SECRET", "WECHAT_PUSH_AES_KEY", "WECOM_APP_SECRET", "WX_COMPONENT_APPSECRET", "WX_COMPONENT_AES_KEY"} {
		if strings.Contains(all, lookup(secret)) {
			t.Errorf("the demo's logs show %s", secret)
		}
	}
}
