package caddymodule

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"

	"github.com/caddy-wechat/caddy-wechat/caddymodule/credential"
	"github.com/caddy-wechat/caddy-wechat/caddymodule/replay"
	"github.com/caddy-wechat/caddy-wechat/caddymodule/token"
)

func init() {
	caddy.RegisterModule(App{})
	httpcaddyfile.RegisterGlobalOption("wechat", parseGlobalOption)
}

// App is the wechat app: it owns every WeChat credential of the running
// configs, so that they live as long as a config uses them, not as long as
// a handler. Handlers declare the credentials they need while they are
// provisioned; nothing runs until the app starts. Provision validates and
// wires (no network, no goroutine, no storage access, so that caddy
// validate and a config that fails to load touch nothing); Start attaches
// the config's credentials, Stop detaches them (package credential's
// Registry says what that keeps across a reload).
//
// An app declared by the inline wechat_token block needs no global option;
// `wechat` in the Caddyfile's global options (JSON apps.wechat) configures
// the app itself.
type App struct {
	// The most bytes of request bodies held for replay at once, by all
	// requests in flight together, in memory and in temporary files. A
	// body that would go past it streams on without replay: a rejected
	// token is then passed on to the client rather than retried. Default:
	// 1 GiB.
	ReplayBudget int64 `json:"replay_budget,omitempty"`

	// The most bytes of one held body kept in memory; past it the body
	// goes to a temporary file and is replayed from there. Default: 64 KiB,
	// above nearly every API call that is not an upload.
	ReplayMemory int64 `json:"replay_memory,omitempty"`

	// Where held bodies past replay_memory are written. Files are removed
	// as soon as they are created (on Unix), so nothing is left behind
	// even when the process is killed. Default: the system's temporary
	// directory ($TMPDIR or /tmp).
	ReplayTempDir string `json:"replay_temp_dir,omitempty"`

	// Third-party platforms (第三方平台), by the name handlers use
	// (wechat_component_events <name>, wechat_token { component <name> }).
	Components map[string]*ComponentConfig `json:"components,omitempty"`

	creds  *credential.Config
	replay *replay.Pool
	// messages: a wechat_messages handler of this config delivers
	// through the process's deliveries, which join the fleet on the
	// config's storage while the config runs (leaveFleet).
	messages   bool
	leaveFleet func()
}

// CaddyModule returns the Caddy module information.
func (App) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "wechat",
		New: func() caddy.Module { return new(App) },
	}
}

// registry holds the credentials of every running config of this process.
var registry = credential.NewRegistry(fetchClient)

// fetchClient calls WeChat's credential endpoints for every credential: a
// transport of its own, honouring the proxy environment variables like
// Go's default one.
var fetchClient = &http.Client{Transport: &http.Transport{
	Proxy:                 http.ProxyFromEnvironment,
	DialContext:           (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
	ForceAttemptHTTP2:     true,
	MaxIdleConns:          4,
	IdleConnTimeout:       90 * time.Second,
	TLSHandshakeTimeout:   5 * time.Second,
	ResponseHeaderTimeout: 10 * time.Second,
}}

// SetClock makes the token managers started from now on read time from c.
// It is for test builds that run a fleet whose clocks disagree (see
// tests/skewedcaddy); a Caddy binary never needs it.
func SetClock(c token.Clock) { registry.SetClock(c) }

// Provision takes the config's logger and storage (using neither) and
// validates the app's own options and platforms.
func (a *App) Provision(ctx caddy.Context) error {
	a.creds = registry.NewConfig(ctx.Storage(), ctx.Logger())
	if a.ReplayBudget < 0 || a.ReplayMemory < 0 {
		return errors.New("wechat: replay_budget and replay_memory must not be negative")
	}
	if a.ReplayMemory > 0 && a.ReplayBudget > 0 && a.ReplayMemory > a.ReplayBudget {
		return fmt.Errorf("wechat: replay_memory (%d bytes) is larger than replay_budget (%d bytes)", a.ReplayMemory, a.ReplayBudget)
	}
	dir := caddy.NewReplacer().ReplaceKnown(a.ReplayTempDir, "")
	if a.ReplayTempDir != "" {
		if info, err := os.Stat(dir); err != nil || !info.IsDir() {
			return fmt.Errorf("wechat: replay_temp_dir %q is not a directory", dir)
		}
	}
	a.replay = replay.NewPool(replay.Limits{Budget: a.ReplayBudget, MemoryPerBody: a.ReplayMemory, TempDir: dir}, &replayUsage)
	return a.provisionComponents()
}

// replayUsage counts the bodies held for replay by every config, so that
// configs overlapping during a reload share one budget.
var replayUsage replay.Usage

// Start attaches the config's credentials and starts the new ones.
func (a *App) Start() error {
	if err := a.creds.Start(); err != nil {
		return err
	}
	if a.messages {
		a.leaveFleet = deliveries.Attach(a.creds.Storage(), a.creds.Logger())
	}
	return nil
}

// Stop detaches this config's credentials.
func (a *App) Stop() error {
	if a.leaveFleet != nil {
		a.leaveFleet()
	}
	a.creds.Stop()
	return nil
}

// wechatApp is the wechat app of the config a handler (directive) is
// provisioned in.
func wechatApp(ctx caddy.Context, directive string) (*App, error) {
	app, err := ctx.App("wechat")
	if err != nil {
		return nil, fmt.Errorf("%s: %w", directive, err)
	}
	return app.(*App), nil
}

// Interface guards
var (
	_ caddy.App         = (*App)(nil)
	_ caddy.Provisioner = (*App)(nil)
)
