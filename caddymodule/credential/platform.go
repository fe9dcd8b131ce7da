package credential

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"path"
	"strings"
	"sync/atomic"
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
	// accounts are the platform's accounts in use, shared with every
	// config holding the platform; set when the config starts.
	accounts atomic.Pointer[accounts]
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
	p := &Platform{Name: name, Cipher: cipher, spec: spec, ref: ref, cfg: c}
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

// StoredToken reads the platform's component_access_token record from the
// fleet's storage, fetching nothing, and says whether this config's secret
// fetched it: caddy wechat check reports on a platform without calling
// api_component_token.
func (p *Platform) StoredToken(ctx context.Context) (stored token.Stored, sameSecret bool, err error) {
	if p.cfg.store == nil {
		return token.Stored{}, false, errors.New("no storage to read the component_access_token from")
	}
	stored, err = token.LoadStored(ctx, p.cfg.store, p.spec.Kind.Keys(p.spec).Record, p.spec.Label(), p.spec.Kind.Name)
	return stored, err == nil && stored.SecretID == p.spec.secretID(), err
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

// Account returns the manager of an account's token, loading it on the
// account's first request; ErrUnknownAuthorizer for an account with no
// current authorization.
func (p *Platform) Account(ctx context.Context, appID string) (*token.Manager, error) {
	if _, err := p.ref.Get(ctx); err != nil { // waits for the config to start
		return nil, err
	}
	a := p.accounts.Load()
	if a == nil {
		return nil, errors.New("the wechat app did not start")
	}
	return a.get(ctx, appID)
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
	if a := p.accounts.Load(); a != nil {
		defer func() {
			a.mu.Lock()
			a.storedCountAt = time.Time{} // the admin status counts again
			a.mu.Unlock()
		}()
	}
	for _, acc := range accounts {
		rec := authorization{AppID: acc.AppID, RefreshToken: acc.RefreshToken, UpdatedAt: time.Now()}
		if err := storeAuthorization(ctx, p.cfg.store, p.spec.ID, rec); err != nil {
			return err
		}
		markWithdrawn(ctx, p.cfg.store, p.spec.ID, rec, p.cfg.logger)
	}
	return nil
}

// storedCountFor is how long the admin status's count of stored
// authorizations is reused: counting lists every record.
const storedCountFor = 30 * time.Second

// Counts are the platform's authorized accounts (stored authorizations
// not withdrawn; another instance's changes show within storedCountFor)
// and the accounts in use whose token fetch last failed. Neither holds a
// lock while it counts.
func (p *Platform) Counts(ctx context.Context) (stored, failing int) {
	a := p.accounts.Load()
	if a == nil {
		return 0, 0
	}
	a.mu.Lock()
	stored, fresh := a.storedCount, time.Since(a.storedCountAt) < storedCountFor
	inUse := make([]*token.Manager, 0, len(a.byID))
	for _, ac := range a.byID {
		inUse = append(inUse, ac.m)
	}
	a.mu.Unlock()
	if !fresh {
		if n, err := p.countAuthorized(ctx); err == nil {
			stored = n
			a.mu.Lock()
			a.storedCount, a.storedCountAt = stored, time.Now()
			a.mu.Unlock()
		}
	}
	for _, m := range inUse {
		if st := m.Status(); st.LastError != nil && !st.Valid {
			failing++
		}
	}
	return stored, failing
}

// MessageReceiver receives the messages of the platform's accounts (its
// 消息与事件接收URL): the platform's token and key, its component_appid
// as the receiver id.
func (p *Platform) MessageReceiver() *MessageReceiver {
	return &MessageReceiver{Kind: AuthorizerAccount, ID: p.spec.ID, Token: p.Cipher.Token(), Cipher: p.Cipher}
}

// countAuthorized counts the stored authorizations that are not withdrawn.
func (p *Platform) countAuthorized(ctx context.Context) (int, error) {
	keys, err := p.cfg.store.List(ctx, authorizationsPrefix(p.spec.ID), false)
	if err != nil {
		return 0, err
	}
	records := make(map[string]bool, len(keys))
	for _, k := range keys {
		if appID, ok := strings.CutSuffix(path.Base(k), ".json"); ok {
			records[appID] = true
		}
	}
	marks, err := p.cfg.store.List(ctx, withdrawnPrefix(p.spec.ID), false)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return 0, err
	}
	n := len(records)
	for _, k := range marks {
		if records[path.Base(k)] {
			n--
		}
	}
	return n, nil
}
