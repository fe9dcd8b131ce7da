package credential

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/caddy-wechat/caddy-wechat/caddymodule/token"
	"github.com/caddy-wechat/caddy-wechat/caddymodule/wxcrypt"
)

// A Platform is a third-party platform (第三方平台) of a config: its
// component_access_token, the verify tickets WeChat pushes it, and the
// accounts that authorized it. The accounts' refresh tokens are kept in
// the shared storage; their access tokens are held by managers made on an
// account's first request (a platform may serve 10,000 accounts, most of
// them idle: none is fetched before it is used, and after a restart the
// stored tokens are adopted, not fetched).
type Platform struct {
	// Name is the platform's name in the config.
	Name string
	// Cipher checks and opens what WeChat pushes to the platform.
	Cipher *wxcrypt.Cipher

	spec Spec // of the component_access_token
	ref  *Ref
	cfg  *Config

	mu       sync.Mutex
	accounts map[string]*token.Manager // nil once the config stopped
}

// ErrUnknownAuthorizer is returned for an account that has not authorized
// the platform.
var ErrUnknownAuthorizer = errors.New("this account has not authorized the platform")

// ErrStorage wraps a failure of the storage, as opposed to bad input.
var ErrStorage = errors.New("storage")

// DeclarePlatform declares a platform named name whose
// component_access_token is spec (of kind Component).
func (c *Config) DeclarePlatform(name string, spec Spec, cipher *wxcrypt.Cipher) (*Platform, error) {
	if spec.Kind != Component {
		return nil, fmt.Errorf("platform %s: its credential must be a component_access_token", name)
	}
	if c.platforms[name] != nil {
		return nil, fmt.Errorf("platform %s declared twice", name)
	}
	ref, err := c.Declare(spec, "wechat component "+name)
	if err != nil {
		return nil, err
	}
	p := &Platform{Name: name, Cipher: cipher, spec: spec, ref: ref, cfg: c, accounts: map[string]*token.Manager{}}
	c.platforms[name] = p
	return p, nil
}

// Platform returns this config's platform named name, or nil.
func (c *Config) Platform(name string) *Platform { return c.platforms[name] }

// ComponentAppID is the platform's component_appid.
func (p *Platform) ComponentAppID() string { return p.spec.ID }

// ComponentToken is the platform's hold on its component_access_token.
func (p *Platform) ComponentToken() *Ref { return p.ref }

// VerifyTicket is the latest component_verify_ticket the fleet received.
func (p *Platform) VerifyTicket(ctx context.Context) (VerifyTicket, error) {
	return loadVerifyTicket(ctx, p.cfg.store, p.spec.ID)
}

// KeepVerifyTicket stores a pushed ticket for the fleet unless a newer one
// is there, and starts the platform's token fetch if it has none yet.
func (p *Platform) KeepVerifyTicket(ctx context.Context, ticket string, createTime int64) error {
	if prev, err := p.VerifyTicket(ctx); err == nil && prev.CreateTime > createTime {
		return nil // a repeat of an older push
	}
	data, err := json.Marshal(VerifyTicket{Ticket: ticket, CreateTime: createTime, ReceivedAt: time.Now()})
	if err != nil {
		return err
	}
	if err := p.cfg.store.Store(ctx, verifyTicketKey(p.spec.ID), data); err != nil {
		return fmt.Errorf("store the component_verify_ticket: %w", err)
	}
	if m := p.ref.Current(); m != nil && !m.Status().Valid {
		// The first ticket: fetch the token now rather than at the next
		// backoff of the renewal loop. WeChat wants its answer within 5 s,
		// so this does not wait.
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			if _, _, err := m.RenewNow(ctx, false); err != nil {
				p.cfg.logger.Warn("component_access_token not fetched with the new ticket", zap.String("component", p.Name), zap.Error(err))
			}
		}()
	}
	return nil
}

// authorization is an account's authorization, in storage.
type authorization struct {
	AppID        string    `json:"authorizer_appid"`
	RefreshToken string    `json:"authorizer_refresh_token"`
	UpdatedAt    time.Time `json:"updated_at"`
}

func loadAuthorization(ctx context.Context, store token.Store, componentAppID, appID string) (authorization, error) {
	var rec authorization
	data, err := store.Load(ctx, authorizationKey(componentAppID, appID))
	if errors.Is(err, fs.ErrNotExist) {
		return rec, ErrUnknownAuthorizer
	}
	if err != nil {
		return rec, fmt.Errorf("read authorizer %s: %w", appID, err)
	}
	if err := json.Unmarshal(data, &rec); err != nil || rec.RefreshToken == "" {
		return rec, fmt.Errorf("authorizer %s: the stored record is unreadable", appID)
	}
	return rec, nil
}

func storeAuthorization(ctx context.Context, store token.Store, componentAppID, appID, refreshToken string) error {
	data, err := json.Marshal(authorization{AppID: appID, RefreshToken: refreshToken, UpdatedAt: time.Now()})
	if err != nil {
		return err
	}
	return store.Store(ctx, authorizationKey(componentAppID, appID), data)
}

// ValidAppID reports whether s can be an appid (a path segment naming an
// account): letters, digits, '_' and '-', at most 64.
func ValidAppID(s string) bool {
	if s == "" || len(s) > 64 {
		return false
	}
	for _, c := range s {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

// Account returns the manager of an account's token, making and starting
// it on first use; ErrUnknownAuthorizer for an account with no
// authorization.
func (p *Platform) Account(ctx context.Context, appID string) (*token.Manager, error) {
	p.mu.Lock()
	m := p.accounts[appID]
	p.mu.Unlock()
	if m != nil {
		return m, nil
	}
	if _, err := loadAuthorization(ctx, p.cfg.store, p.spec.ID, appID); err != nil {
		return nil, err
	}
	comp, err := p.ref.Get(ctx)
	if err != nil {
		return nil, err
	}
	spec := p.spec
	spec.Kind, spec.ID, spec.Platform = Authorizer, appID, p.spec.ID
	m, err = newManager(spec, p.cfg.settings(spec, comp), p.cfg.reg.clockNow())
	if err != nil {
		return nil, err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if existing := p.accounts[appID]; existing != nil {
		return existing, nil // made by a request racing this one
	}
	if p.accounts == nil {
		return nil, errors.New("the wechat app stopped")
	}
	p.accounts[appID] = m
	m.Start()
	return m, nil
}

// Authorize exchanges an authorization code pushed by WeChat for the
// account's refresh token (api_query_auth) and keeps it; it returns the
// account's appid.
func (p *Platform) Authorize(ctx context.Context, code string) (string, error) {
	compManager, err := p.ref.Get(ctx)
	if err != nil {
		return "", err
	}
	comp, err := compManager.Token(ctx)
	if err != nil {
		return "", err
	}
	info, err := QueryAuth(ctx, p.cfg.reg.client, p.spec.APIBase, p.spec.ID, comp.Value, code)
	if err != nil {
		return "", err
	}
	return info.AuthorizerAppID, storeAuthorization(ctx, p.cfg.store, p.spec.ID, info.AuthorizerAppID, info.RefreshToken)
}

// Forget drops an account that ended its authorization.
func (p *Platform) Forget(ctx context.Context, appID string) error {
	p.mu.Lock()
	m := p.accounts[appID]
	delete(p.accounts, appID)
	p.mu.Unlock()
	if m != nil {
		m.Stop()
	}
	err := p.cfg.store.Delete(ctx, authorizationKey(p.spec.ID, appID))
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	return err
}

// Imported is an account authorized before the proxy, with its refresh
// token, as POST .../authorizers takes it.
type Imported struct {
	AppID        string `json:"authorizer_appid"`
	RefreshToken string `json:"authorizer_refresh_token"`
}

// Import keeps the authorizations of accounts authorized before the proxy.
func (p *Platform) Import(ctx context.Context, accounts []Imported) error {
	for i, acc := range accounts {
		if !ValidAppID(acc.AppID) || acc.RefreshToken == "" {
			return fmt.Errorf("entry %d: an authorizer_appid and its authorizer_refresh_token are required", i)
		}
	}
	for _, acc := range accounts {
		if err := storeAuthorization(ctx, p.cfg.store, p.spec.ID, acc.AppID, acc.RefreshToken); err != nil {
			return fmt.Errorf("%w: %w", ErrStorage, err)
		}
	}
	return nil
}

// Counts are the platform's stored accounts and this config's accounts
// whose token fetch last failed.
func (p *Platform) Counts(ctx context.Context) (stored, failing int) {
	keys, err := p.cfg.store.List(ctx, authorizationsPrefix(p.spec.ID), false)
	if err == nil {
		for _, k := range keys {
			if strings.HasSuffix(k, ".json") {
				stored++
			}
		}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, m := range p.accounts {
		if st := m.Status(); st.LastError != nil && !st.Valid {
			failing++
		}
	}
	return stored, failing
}

// stop stops the platform's account managers.
func (p *Platform) stop() {
	p.mu.Lock()
	accounts := p.accounts
	p.accounts = nil
	p.mu.Unlock()
	for _, m := range accounts {
		m.Stop()
	}
}
