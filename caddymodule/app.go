package caddymodule

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/certmagic"
	"github.com/dustin/go-humanize"
	"go.uber.org/zap"

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
// provisioned; nothing runs until the app starts:
//
//   - Provision validates and wires: no network, no goroutine, no storage
//     access, so that caddy validate and a config that fails to load touch
//     nothing.
//   - Start attaches each declared credential: one that a running config
//     already holds keeps its token and renewal loop and takes this
//     config's storage, logger and options; a new one starts renewing.
//   - Stop detaches them: a credential no config holds any more stops; one
//     that an older config still holds (this config failed to start) goes
//     back to that config's settings.
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

	components map[string]*component

	replay   *replay.Pool
	declared map[string]*declaration
	order    []string // identities, in declaration order
	logger   *zap.Logger
	storage  certmagic.Storage
	attached []string // identities Start attached, for Stop
}

// CaddyModule returns the Caddy module information.
func (App) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "wechat",
		New: func() caddy.Module { return new(App) },
	}
}

// Provision takes the config's logger and storage; it uses neither.
func (a *App) Provision(ctx caddy.Context) error {
	a.logger = ctx.Logger()
	a.storage = ctx.Storage()
	a.declared = map[string]*declaration{}
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

// credentialSpec is one access token's configuration, placeholders
// expanded and validated. It is comparable: two handlers declaring one
// credential must declare the same.
type credentialSpec struct {
	appID, secret, apiBase string
	api                    token.API
	// tokenAPI is, for a jsapi_ticket (api token.JSAPITicket), the API of
	// the access token it is fetched with.
	tokenAPI           token.API
	refreshAhead       time.Duration
	fetchTimeout       time.Duration
	minRefreshInterval time.Duration
	minLifetime        time.Duration
	dailyRefreshLimit  int
}

// identity names the credential across configs: the record it keeps in
// storage. Two configs naming it hold the same token.
func (s credentialSpec) identity() string { return string(s.api) + "/" + s.managerID() }

// managerID names the credential in its manager, its storage record, the
// admin status and the metrics: the app ID; for WeCom, whose tokens are
// one per app secret, the corp ID and a fingerprint of the secret (two
// apps of one corp are two tokens, told apart without showing a secret).
func (s credentialSpec) managerID() string {
	if s.api == token.WeCom || s.tokenAPI == token.WeCom {
		return s.appID + "-" + token.SecretFingerprint(s.appID, s.secret)[:8]
	}
	return s.appID
}

// differences names the options in which two specs differ, never showing
// the secret.
func (s credentialSpec) differences(o credentialSpec) []string {
	var out []string
	add := func(option string, a, b any) {
		if a != b {
			out = append(out, fmt.Sprintf("%s (%v and %v)", option, a, b))
		}
	}
	if s.secret != o.secret {
		out = append(out, "app_secret (values not shown)")
	}
	add("api_base", s.apiBase, o.apiBase)
	add("token_api", s.tokenAPI, o.tokenAPI)
	add("refresh_ahead", s.refreshAhead, o.refreshAhead)
	add("fetch_timeout", s.fetchTimeout, o.fetchTimeout)
	add("min_refresh_interval", s.minRefreshInterval, o.minRefreshInterval)
	add("min_token_lifetime", s.minLifetime, o.minLifetime)
	add("daily_refresh_limit", s.dailyRefreshLimit, o.dailyRefreshLimit)
	return out
}

// declaration is a credential some handlers of this config need.
type declaration struct {
	spec credentialSpec
	by   string // the directive that declared it first, for errors
	ref  *credentialRef
}

// credentialRef is a handler's hold on a credential: empty until the app
// starts.
type credentialRef struct {
	manager atomic.Pointer[token.Manager]
	ready   chan struct{} // closed once manager is set, or the app stopped
	once    sync.Once
}

func newCredentialRef() *credentialRef { return &credentialRef{ready: make(chan struct{})} }

// resolve sets the manager and releases waiters; a nil m releases them
// with nothing (the config stopped without starting).
func (r *credentialRef) resolve(m *token.Manager) {
	r.once.Do(func() {
		if m != nil {
			r.manager.Store(m)
		}
		close(r.ready)
	})
}

// get returns the manager. Caddy starts apps in no fixed order, so a request
// reaching a new config's handler can precede the wechat app's Start by a
// moment: it waits for it.
func (r *credentialRef) get(ctx context.Context) (*token.Manager, error) {
	if m := r.manager.Load(); m != nil {
		return m, nil
	}
	select {
	case <-r.ready:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	if m := r.manager.Load(); m != nil {
		return m, nil
	}
	return nil, errors.New("the wechat app did not start")
}

// declare registers a credential a handler (named by directive) needs and
// returns the handler's hold on it. Handlers naming one credential with the
// same options share it; different options fail the load, naming both.
func (a *App) declare(spec credentialSpec, directive string) (*credentialRef, error) {
	id := spec.identity()
	if d, ok := a.declared[id]; ok {
		if diff := d.spec.differences(spec); len(diff) > 0 {
			return nil, fmt.Errorf("%s and %s both configure app_id %s (%s %s) but differ in %s: "+
				"one credential can have only one configuration; give every handler of this app the same options",
				d.by, directive, spec.appID, map[bool]string{true: "jsapi_ticket with token_api", false: "token_api"}[spec.api == token.JSAPITicket],
				cmp.Or(spec.tokenAPI, spec.api), strings.Join(diff, ", "))
		}
		return d.ref, nil
	}
	d := &declaration{spec: spec, by: directive, ref: newCredentialRef()}
	a.declared[id] = d
	a.order = append(a.order, id)
	return d.ref, nil
}

// ticketSpec is the spec of the jsapi_ticket fetched with the access token
// of spec.
func ticketSpec(spec credentialSpec) credentialSpec {
	spec.tokenAPI, spec.api = spec.api, token.JSAPITicket
	spec.dailyRefreshLimit = 0 // a classic token's cap; tickets have none
	return spec
}

// tokenSpec is the spec of the access token a jsapi_ticket's spec needs.
func (s credentialSpec) tokenSpec() credentialSpec {
	s.api, s.tokenAPI = s.tokenAPI, ""
	return s
}

// settings are what a manager takes from this config for spec; tokens is
// the manager of the access token a jsapi_ticket is fetched with.
func (a *App) settings(spec credentialSpec, tokens *token.Manager) token.Settings {
	var fetcher token.Fetcher = &token.HTTPFetcher{
		API: spec.api, BaseURL: spec.apiBase, AppID: spec.appID, AppSecret: spec.secret, Client: fetchClient,
	}
	if spec.api == token.Component {
		fetcher = &token.ComponentFetcher{BaseURL: spec.apiBase, AppID: spec.appID, AppSecret: spec.secret,
			Ticket: a.verifyTicketReader(spec.appID), Client: fetchClient}
	}
	if spec.api == token.JSAPITicket {
		fetcher = &token.TicketFetcher{BaseURL: spec.apiBase, Tokens: tokens, Client: fetchClient, RejectedBy: DefaultRetryOn}
		if spec.tokenAPI == token.WeCom {
			fetcher = &token.TicketFetcher{BaseURL: spec.apiBase, Tokens: tokens, Client: fetchClient, RejectedBy: DefaultWeComRetryOn, WeCom: true}
		}
	}
	return token.Settings{
		Fetcher:            fetcher,
		RefreshAhead:       spec.refreshAhead,
		MinRefreshInterval: spec.minRefreshInterval,
		FetchTimeout:       spec.fetchTimeout,
		MinLifetime:        spec.minLifetime,
		DailyRefreshLimit:  spec.dailyRefreshLimit,
		Store:              a.storage,
		SecretID:           token.SecretFingerprint(spec.appID, spec.secret),
		Logger:             a.logger.With(zap.String("app_id", spec.managerID()), zap.String("token_api", string(spec.api))),
	}
}

// clock is the time source of the token managers; nil is the system's.
var clock token.Clock

// SetClock makes the token managers started from now on read time from c.
// It is for test builds that run a fleet whose clocks disagree (see
// tests/skewedcaddy); a Caddy binary never needs it.
func SetClock(c token.Clock) { clock = c }

// live holds the credentials of every running config, by identity.
var live = struct {
	sync.Mutex
	credentials map[string]*liveCredential
}{credentials: map[string]*liveCredential{}}

// liveCredential is a running manager and the configs holding it.
type liveCredential struct {
	manager *token.Manager
	// holders are the apps that started with it, oldest first; the last
	// one's settings are in force.
	holders []holder
}

type holder struct {
	app      *App
	settings token.Settings
}

// Start attaches every declared credential and starts the new ones.
func (a *App) Start() error {
	live.Lock()
	defer live.Unlock()
	for _, id := range a.order {
		d := a.declared[id]
		var tokens *token.Manager
		if d.spec.api == token.JSAPITicket {
			// Declared before the ticket (see declareTicket), so started.
			dep := live.credentials[d.spec.tokenSpec().identity()]
			if dep == nil {
				a.detachLocked()
				return fmt.Errorf("wechat: the jsapi_ticket of %s has no access token", d.spec.appID)
			}
			tokens = dep.manager
		}
		settings := a.settings(d.spec, tokens)
		lc := live.credentials[id]
		if lc == nil {
			m, err := token.NewManager(token.Options{AppID: d.spec.managerID(), API: d.spec.api, Clock: clock, Settings: settings})
			if err != nil {
				a.detachLocked()
				return fmt.Errorf("wechat: %w", err)
			}
			lc = &liveCredential{manager: m}
			live.credentials[id] = lc
			m.Start()
		} else if err := lc.manager.Reconfigure(settings); err != nil {
			a.detachLocked()
			return fmt.Errorf("wechat: %w", err)
		}
		lc.holders = append(lc.holders, holder{a, settings})
		a.attached = append(a.attached, id)
		d.ref.resolve(lc.manager)
	}
	a.startComponents()
	return nil
}

// Stop detaches this config's credentials.
func (a *App) Stop() error {
	a.stopComponents()
	a.stopAuthorizers()
	live.Lock()
	defer live.Unlock()
	a.detachLocked()
	return nil
}

// detachLocked undoes what Start attached; live is locked.
func (a *App) detachLocked() {
	for _, id := range a.attached {
		lc := live.credentials[id]
		if lc == nil {
			continue
		}
		i := slices.IndexFunc(lc.holders, func(h holder) bool { return h.app == a })
		if i < 0 {
			continue
		}
		wasInForce := i == len(lc.holders)-1
		lc.holders = slices.Delete(lc.holders, i, i+1)
		switch {
		case len(lc.holders) == 0:
			lc.manager.Stop()
			delete(live.credentials, id)
		case wasInForce:
			// This was the newest config, stopped because it failed to
			// start: the config still running takes over again.
			prev := lc.holders[len(lc.holders)-1]
			if err := lc.manager.Reconfigure(prev.settings); err != nil {
				a.logger.Error("restoring the running config's settings", zap.Error(err))
			}
		}
	}
	a.attached = nil
	for _, d := range a.declared {
		d.ref.resolve(nil) // release requests waiting for a start that never came
	}
}

// liveManagers lists the managers of running configs, optionally only
// those for appID and api, in a stable order.
func liveManagers(appID string, api token.API) []*token.Manager {
	live.Lock()
	var out []*token.Manager
	for _, lc := range live.credentials {
		m := lc.manager
		if (appID == "" || m.AppID() == appID) && (api == "" || m.API() == api) {
			out = append(out, m)
		}
	}
	live.Unlock()
	slices.SortFunc(out, func(a, b *token.Manager) int {
		return strings.Compare(a.AppID()+string(a.API()), b.AppID()+string(b.API()))
	})
	return out
}

// parseGlobalOption reads the wechat global option:
//
//	wechat {
//		replay_budget   <size>
//		replay_memory   <size>
//		replay_temp_dir <dir>
//		component <name> {
//			component_appid     <appid>
//			component_appsecret <secret>
//			token               <message token>
//			encoding_aes_key    <43 characters>
//			api_base            <url>
//		}
//	}
func parseGlobalOption(d *caddyfile.Dispenser, _ any) (any, error) {
	var app App
	d.Next() // the option name
	if d.NextArg() {
		return nil, d.ArgErr()
	}
	seen := map[string]bool{}
	for d.NextBlock(0) {
		option := d.Val()
		if option == "component" {
			name, c, err := parseComponent(d)
			if err != nil {
				return nil, err
			}
			if app.Components == nil {
				app.Components = map[string]*ComponentConfig{}
			}
			if app.Components[name] != nil {
				return nil, d.Errf("wechat: component %s: given more than once", name)
			}
			app.Components[name] = c
			continue
		}
		if seen[option] {
			return nil, d.Errf("wechat: %s: given more than once", option)
		}
		seen[option] = true
		var arg string
		if !d.Args(&arg) || d.NextArg() {
			return nil, d.Errf("wechat: %s takes one value", option)
		}
		switch option {
		case "replay_budget", "replay_memory":
			n, err := humanize.ParseBytes(arg)
			if err != nil || n > math.MaxInt64 {
				return nil, d.Errf("wechat: %s: %q is not a size (like 512MiB)", option, arg)
			}
			if option == "replay_budget" {
				app.ReplayBudget = int64(n)
			} else {
				app.ReplayMemory = int64(n)
			}
		case "replay_temp_dir":
			app.ReplayTempDir = arg
		default:
			return nil, d.Errf("unrecognized wechat option %q", option)
		}
	}
	return httpcaddyfile.App{Name: "wechat", Value: caddyconfig.JSON(app, nil)}, nil
}

// Interface guards
var (
	_ caddy.App         = (*App)(nil)
	_ caddy.Provisioner = (*App)(nil)
)
