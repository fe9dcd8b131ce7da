package main

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// Names of the contenders, in the order they are run within a round.
const (
	direct       = "direct"
	reverseProxy = "reverse_proxy"
	wechatToken  = "wechat_token"
	nginxFixed   = "nginx"
)

// benchAppID is the app the product fetches tokens for; the fast upstream
// accepts any AppID and secret.
const benchAppID = "wxbench0000000001"

// contender is one way of reaching the upstream.
type contender struct {
	name string
	// base is the URL requests go to, without path.
	base string
	// clientToken: the client must send the token itself (direct and plain
	// reverse_proxy), as an app server would without a token proxy.
	clientToken bool
	// proc is the proxy whose CPU and memory are measured; nil for direct.
	proc *process
}

// target is the URL of a WeChat-shaped call through the contender.
func (c *contender) target(path string) string {
	u := c.base + path
	if c.clientToken {
		sep := "?"
		if strings.Contains(path, "?") {
			sep = "&"
		}
		u += sep + "access_token=" + benchToken
	}
	return u
}

// wechatTokenBlock is the product's directive for an app.
func wechatTokenBlock(appID, secret, tokenAPI, apiBase string) string {
	return fmt.Sprintf(`
	wechat_token {
		app_id %s
		app_secret %s
		token_api %s
		api_base %s
	}`, appID, secret, tokenAPI, apiBase)
}

// caddyGlobal is the global options block of every Caddy the benchmark
// runs; storage in dir.
func caddyGlobal(dir, name string) string {
	return fmt.Sprintf(`{
	admin off
	persist_config off
	storage file_system %s
}
`, filepath.Join(dir, name+"-data"))
}

// caddySite is a site on port proxying to upstream, with handler
// (wechatTokenBlock, or nothing) before reverse_proxy.
func caddySite(port int, upstream, handler string) string {
	return fmt.Sprintf(`
http://127.0.0.1:%d {%s
	reverse_proxy %s {
		transport http {
			keepalive_idle_conns_per_host 256
		}
	}
}
`, port, handler, upstream)
}

// startCaddy runs the benchmark's Caddy binary with a Caddyfile, waiting
// for port to answer.
func startCaddy(dir, caddyBin, name, caddyfile string, port int) (*process, error) {
	path := filepath.Join(dir, name+".Caddyfile")
	if err := os.WriteFile(path, []byte(caddyfile), 0o600); err != nil {
		return nil, fmt.Errorf("write %s: %w", path, err)
	}
	p, err := startProxyProcess(dir, name, []string{"BENCH_APP_SECRET=bench_app_secret_not_real", "XDG_DATA_HOME=" + dir, "XDG_CONFIG_HOME=" + dir},
		caddyBin, "run", "--config", path, "--adapter", "caddyfile")
	if err != nil {
		return nil, err
	}
	if err := waitHTTP(p, fmt.Sprintf("http://127.0.0.1:%d/", port), 20*time.Second); err != nil {
		p.stop()
		return nil, err
	}
	return p, nil
}

// nginxConfig is what a team would hand-roll: proxy_pass with a fixed
// token appended, keep-alive to the upstream as the Caddy contenders have.
func nginxConfig(dir string, port int, upstream string) string {
	workers := "auto"
	if proxyCPUCount > 0 {
		workers = strconv.Itoa(proxyCPUCount) // auto would count every CPU, not its own
	}
	return fmt.Sprintf(`worker_processes %[5]s;
pid %[1]s/nginx.pid;
error_log %[1]s/nginx-error.log warn;
events { worker_connections 4096; }
http {
	access_log off;
	client_body_temp_path %[1]s/nginx-body;
	proxy_temp_path %[1]s/nginx-proxy;
	fastcgi_temp_path %[1]s/nginx-fastcgi;
	uwsgi_temp_path %[1]s/nginx-uwsgi;
	scgi_temp_path %[1]s/nginx-scgi;
	upstream wechat {
		server %[3]s;
		keepalive 256;
	}
	server {
		listen 127.0.0.1:%[2]d;
		location / {
			set $args "${args}&access_token=%[4]s";
			proxy_http_version 1.1;
			proxy_set_header Connection "";
			proxy_pass http://wechat;
		}
	}
}
`, dir, port, upstream, benchToken, workers)
}

// startNginx runs nginx in the foreground with its own prefix in dir.
func startNginx(dir string, port int, upstream string) (*process, error) {
	path := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(path, []byte(nginxConfig(dir, port, upstream)), 0o600); err != nil {
		return nil, fmt.Errorf("write %s: %w", path, err)
	}
	bin, err := lookPath("nginx")
	if err != nil {
		return nil, err
	}
	p, err := startProxyProcess(dir, "nginx", nil, bin, "-p", dir, "-c", path, "-g", "daemon off;")
	if err != nil {
		return nil, err
	}
	if err := waitHTTP(p, fmt.Sprintf("http://127.0.0.1:%d/", port), 10*time.Second); err != nil {
		p.stop()
		return nil, err
	}
	p.pids = append(p.pids, childPids(p.cmd.Process.Pid)...)
	return p, nil
}

// check makes one GET and one POST through the contender and insists on
// WeChat's success answer: a contender that does not deliver the token is
// not measured.
func (c *contender) check() error {
	client := &http.Client{Timeout: 5 * time.Second}
	for _, method := range []string{http.MethodGet, http.MethodPost} {
		var body io.Reader
		if method == http.MethodPost {
			body = bytes.NewReader(postBody)
		}
		req, err := http.NewRequest(method, c.target(getPath), body)
		if err != nil {
			return err
		}
		resp, err := client.Do(req)
		if err != nil {
			return fmt.Errorf("check %s: %w", c.name, err)
		}
		got, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			return fmt.Errorf("check %s: %w", c.name, err)
		}
		if resp.StatusCode != http.StatusOK || !bytes.Equal(got, answerOK) {
			return fmt.Errorf("check %s: %s answered %d %q, not WeChat's success", c.name, method, resp.StatusCode, got)
		}
	}
	return nil
}
