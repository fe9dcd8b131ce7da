package credential

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"

	"go.uber.org/zap"

	"github.com/caddy-wechat/caddy-wechat/caddymodule/token"
)

// Registry holds the credentials of every running config, so that a
// credential lives as long as some config uses it, not as long as the
// config that first declared it. A Caddy process has one (the wechat app's).
//
// The lifecycle, for each config (Config):
//   - Declare and DeclarePlatform validate and wire: no network, no
//     goroutine, no storage access, so that validating a config, or one that
//     fails to load, touches nothing.
//   - Start attaches each declared credential: one a running config already
//     holds keeps its value and renewal and takes this config's storage,
//     logger and options; a new one starts renewing.
//   - Stop detaches them: a credential no config holds any more stops; one
//     an older config still holds (this config failed to start) goes back
//     to that config's settings.
type Registry struct {
	client *http.Client

	// clock is read without the lock: managers' schedule notices (which
	// run under it, during a reload) read it.
	clock atomic.Pointer[clockBox]

	mu        sync.Mutex
	live      map[string]*liveCredential // by identity
	platforms map[string][]*Platform     // by name, in the order their configs started
	accounts  map[string]*accounts       // platforms' accounts in use, by component_appid
}

// NewRegistry returns an empty registry whose credentials call WeChat
// with client.
func NewRegistry(client *http.Client) *Registry {
	return &Registry{client: client, live: map[string]*liveCredential{}, platforms: map[string][]*Platform{}, accounts: map[string]*accounts{}}
}

// SetClock makes the managers started from now on read time from c (nil:
// the system's), for test builds whose fleet's clocks disagree.
func (r *Registry) SetClock(c token.Clock) { r.clock.Store(&clockBox{c}) }

// clockBox holds a clock (nil: the system's) for an atomic pointer.
type clockBox struct{ c token.Clock }

func (r *Registry) clockOf() token.Clock {
	if b := r.clock.Load(); b != nil {
		return b.c
	}
	return nil
}

// liveCredential is a running manager and the configs holding it.
type liveCredential struct {
	manager *token.Manager
	// holders are the configs that started with it, oldest first; the
	// last one's settings are in force.
	holders []holder
}

type holder struct {
	config   *Config
	settings token.Settings
}

// Storage is the storage a config shares with its fleet: Caddy's
// (certmagic.Storage: the file system, Redis, ...) satisfies it.
type Storage interface {
	token.Store
	Delete(ctx context.Context, key string) error
	List(ctx context.Context, path string, recursive bool) ([]string, error)
}

// Config is what one Caddy config declares: its credentials, its
// platforms, and the storage and logger they take while it is in force.
type Config struct {
	reg      *Registry
	store    Storage
	logger   *zap.Logger
	declared map[string]*declaration
	order    []string // identities, in declaration order (a credential after what it Needs)
	attached []string // identities Start attached, for Stop
	// platforms are this config's, by name.
	platforms map[string]*Platform
}

// NewConfig begins a config's declarations; store and logger are the
// config's.
func (r *Registry) NewConfig(store Storage, logger *zap.Logger) *Config {
	if logger == nil {
		logger = zap.NewNop()
	}
	return &Config{reg: r, store: store, logger: logger, declared: map[string]*declaration{}, platforms: map[string]*Platform{}}
}

// declaration is a credential some handlers of this config need.
type declaration struct {
	spec Spec
	by   string // who declared it first, for errors
	ref  *Ref
}

// Ref is a handler's hold on a credential: empty until its config starts.
type Ref struct {
	manager atomic.Pointer[token.Manager]
	ready   chan struct{} // closed once manager is set, or the config stopped
	once    sync.Once
}

func newRef() *Ref { return &Ref{ready: make(chan struct{})} }

// resolve sets the manager and releases waiters; a nil m releases them
// with nothing (the config stopped without starting).
func (r *Ref) resolve(m *token.Manager) {
	r.once.Do(func() {
		if m != nil {
			r.manager.Store(m)
		}
		close(r.ready)
	})
}

// Current is the manager, or nil before the config started.
func (r *Ref) Current() *token.Manager { return r.manager.Load() }

// Get returns the manager. Caddy starts apps in no fixed order, so a
// request reaching a new config's handler can precede the config's start
// by a moment: it waits for it, as long as ctx lets it.
func (r *Ref) Get(ctx context.Context) (*token.Manager, error) {
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

// Declare registers a credential that by (a directive, for errors) needs,
// and what it Needs before it; it returns the hold on it. Declarations of
// one credential with the same options share it; different options are an
// error naming both and what differs.
func (c *Config) Declare(spec Spec, by string) (*Ref, error) {
	if spec.Kind.Needs != nil {
		if _, err := c.Declare(spec.Kind.Needs(spec), by); err != nil {
			return nil, err
		}
	}
	id := spec.Identity()
	if d, ok := c.declared[id]; ok {
		if diff := d.spec.Differences(spec); len(diff) > 0 {
			return nil, fmt.Errorf("%s and %s both configure app_id %s (%s) but differ in %s: "+
				"one credential can have only one configuration; give every handler of this app the same options",
				d.by, by, spec.ID, spec.describe(), strings.Join(diff, ", "))
		}
		return d.ref, nil
	}
	d := &declaration{spec: spec, by: by, ref: newRef()}
	c.declared[id] = d
	c.order = append(c.order, id)
	return d.ref, nil
}

// settings are what a manager of spec takes from this config; needed is
// the running credential spec's kind Needs.
func (c *Config) settings(spec Spec, needed Refresher) token.Settings {
	limit := 0
	if spec.Kind.DailyCapped {
		limit = spec.DailyRefreshLimit
	}
	logger := c.logger.With(zap.String("app_id", spec.Label()), zap.String("token_api", spec.Kind.Name))
	if spec.Platform != "" {
		logger = c.logger.With(zap.String("component_appid", spec.Platform), zap.String("authorizer_appid", spec.ID))
	}
	return token.Settings{
		Fetcher:            spec.Kind.NewFetcher(spec, Deps{Store: c.store, Needed: needed, Client: c.reg.client}),
		RefreshAhead:       spec.RefreshAhead,
		MinRefreshInterval: spec.MinRefreshInterval,
		FetchTimeout:       spec.FetchTimeout,
		MinLifetime:        spec.MinLifetime,
		DailyRefreshLimit:  limit,
		Store:              c.store,
		SecretID:           spec.secretID(),
		Logger:             logger,
	}
}

// newManager makes the (not yet started) manager of spec.
func newManager(spec Spec, settings token.Settings, clock token.Clock) (*token.Manager, error) {
	return token.NewManager(token.Options{AppID: spec.Label(), Kind: spec.Kind.engine(), Keys: spec.Kind.Keys(spec),
		Clock: clock, Settings: settings})
}

// Start attaches every declared credential and starts the new ones, then
// publishes the config's platforms. On an error nothing stays attached.
func (c *Config) Start() error {
	r := c.reg
	r.mu.Lock()
	defer r.mu.Unlock()
	// Handlers get their credentials only once every one is attached: a
	// start that fails part-way hands out none.
	resolved := map[*Ref]*token.Manager{}
	for _, id := range c.order {
		d := c.declared[id]
		var needed Refresher
		if d.spec.Kind.Needs != nil {
			// Declared before it (see Declare), so started.
			dep := r.live[d.spec.Kind.Needs(d.spec).Identity()]
			if dep == nil {
				c.detachLocked()
				return fmt.Errorf("wechat: the %s of %s has no %s", d.spec.Kind.Noun, d.spec.ID, d.spec.Kind.Needs(d.spec).Kind.Noun)
			}
			needed = dep.manager
		}
		settings := c.settings(d.spec, needed)
		lc := r.live[id]
		if lc == nil {
			m, err := newManager(d.spec, settings, r.clockOf())
			if err != nil {
				c.detachLocked()
				return fmt.Errorf("wechat: %w", err)
			}
			lc = &liveCredential{manager: m}
			r.live[id] = lc
			m.Start()
		} else if err := lc.manager.Reconfigure(settings); err != nil {
			c.detachLocked()
			return fmt.Errorf("wechat: %w", err)
		}
		lc.holders = append(lc.holders, holder{c, settings})
		c.attached = append(c.attached, id)
		resolved[d.ref] = lc.manager
	}
	for _, p := range c.platforms {
		a := r.accounts[p.spec.ID]
		if a == nil || a.ctx.Err() != nil {
			a = newAccounts(r, p.spec.ID)
			r.accounts[p.spec.ID] = a
		}
		p.accounts.Store(a)
		a.attach(p, resolved[p.ref]) // the platform's token is attached: accounts take it
	}
	for ref, m := range resolved {
		ref.resolve(m)
	}
	for name, p := range c.platforms {
		r.platforms[name] = append(r.platforms[name], p)
	}
	return nil
}

// Stop withdraws the config's platforms and detaches its credentials.
func (c *Config) Stop() {
	r := c.reg
	r.mu.Lock()
	for name, list := range r.platforms {
		list = slices.DeleteFunc(list, func(p *Platform) bool { return p.cfg == c })
		if len(list) == 0 {
			delete(r.platforms, name)
		} else {
			r.platforms[name] = list
		}
	}
	r.mu.Unlock()
	// Outside the registry's lock: the accounts' scheduler, waited for
	// here when the last holder goes, reads the registry's clock.
	for _, p := range c.platforms {
		if a := p.accounts.Load(); a != nil && a.detach(p) {
			r.mu.Lock()
			if r.accounts[p.spec.ID] == a {
				delete(r.accounts, p.spec.ID)
			}
			r.mu.Unlock()
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	c.detachLocked()
}

// detachLocked undoes what Start attached; c.reg.mu is held.
func (c *Config) detachLocked() {
	r := c.reg
	for _, id := range c.attached {
		lc := r.live[id]
		if lc == nil {
			continue
		}
		i := slices.IndexFunc(lc.holders, func(h holder) bool { return h.config == c })
		if i < 0 {
			continue
		}
		wasInForce := i == len(lc.holders)-1
		lc.holders = slices.Delete(lc.holders, i, i+1)
		switch {
		case len(lc.holders) == 0:
			lc.manager.Stop()
			delete(r.live, id)
		case wasInForce:
			// This was the newest config, stopped because it failed to
			// start: the config still running takes over again.
			prev := lc.holders[len(lc.holders)-1]
			if err := lc.manager.Reconfigure(prev.settings); err != nil {
				c.logger.Error("restoring the running config's settings", zap.Error(err))
			}
		}
	}
	c.attached = nil
	for _, d := range c.declared {
		d.ref.resolve(nil) // release requests waiting for a start that never came
	}
}

// Managers lists the managers of running configs, optionally only those
// labelled label and of the kind named kind, in a stable order.
func (r *Registry) Managers(label, kind string) []*token.Manager {
	r.mu.Lock()
	var out []*token.Manager
	for _, lc := range r.live {
		m := lc.manager
		if (label == "" || m.AppID() == label) && (kind == "" || m.Kind().Name == kind) {
			out = append(out, m)
		}
	}
	r.mu.Unlock()
	slices.SortFunc(out, func(a, b *token.Manager) int {
		return strings.Compare(a.AppID()+a.Kind().Name, b.AppID()+b.Kind().Name)
	})
	return out
}

// Platform returns the platform named name of the newest running config
// that has it, or nil: when that config stops (a reload that failed), the
// one before serves again.
func (r *Registry) Platform(name string) *Platform {
	r.mu.Lock()
	defer r.mu.Unlock()
	if list := r.platforms[name]; len(list) > 0 {
		return list[len(list)-1]
	}
	return nil
}

// Storage is the config's storage, shared with the fleet.
func (c *Config) Storage() Storage { return c.store }

// Logger is the config's logger.
func (c *Config) Logger() *zap.Logger { return c.logger }
