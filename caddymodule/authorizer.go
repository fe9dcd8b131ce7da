package caddymodule

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/caddy-wechat/caddy-wechat/caddymodule/token"
)

// Authorizers are the accounts that authorized a platform. Their refresh
// tokens are kept in the shared storage; their access tokens are held by
// managers made on an account's first request (a platform may serve
// 10,000 accounts, most of them idle: none is fetched before it is used,
// and after a restart the stored tokens are adopted, not fetched).

// errUnknownAuthorizer: the account has not authorized the platform.
var errUnknownAuthorizer = errors.New("this account has not authorized the platform")

// authorizerRecord is an account's authorization, in storage.
type authorizerRecord struct {
	AppID        string    `json:"authorizer_appid"`
	RefreshToken string    `json:"authorizer_refresh_token"`
	UpdatedAt    time.Time `json:"updated_at"`
}

func authorizerPrefix(componentAppID string) string {
	return "wechat_token/component/" + componentAppID + "/authorizers"
}

func authorizerKey(componentAppID, authorizerAppID string) string {
	return authorizerPrefix(componentAppID) + "/" + authorizerAppID + ".json"
}

// validAppID reports whether s can be an appid (a path segment naming an
// account): letters, digits, '_' and '-', at most 64.
func validAppID(s string) bool {
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

func (a *App) loadAuthorizer(ctx context.Context, c *component, appID string) (authorizerRecord, error) {
	var rec authorizerRecord
	data, err := a.storage.Load(ctx, authorizerKey(c.spec.appID, appID))
	if errors.Is(err, fs.ErrNotExist) {
		return rec, errUnknownAuthorizer
	}
	if err != nil {
		return rec, fmt.Errorf("read authorizer %s: %w", appID, err)
	}
	if err := json.Unmarshal(data, &rec); err != nil || rec.RefreshToken == "" {
		return rec, fmt.Errorf("authorizer %s: the stored record is unreadable", appID)
	}
	return rec, nil
}

func (a *App) storeAuthorizer(ctx context.Context, c *component, appID, refreshToken string) error {
	data, err := json.Marshal(authorizerRecord{AppID: appID, RefreshToken: refreshToken, UpdatedAt: time.Now()})
	if err != nil {
		return err
	}
	return a.storage.Store(ctx, authorizerKey(c.spec.appID, appID), data)
}

// authorizerSet holds the managers of one platform's accounts in this
// config.
type authorizerSet struct {
	mu       sync.Mutex
	managers map[string]*token.Manager
}

// authorizerManager returns the manager of an account's token, making and
// starting it on first use; errUnknownAuthorizer for an account with no
// record.
func (a *App) authorizerManager(ctx context.Context, c *component, appID string) (*token.Manager, error) {
	set := c.authorizers
	set.mu.Lock()
	m := set.managers[appID]
	set.mu.Unlock()
	if m != nil {
		return m, nil
	}
	if _, err := a.loadAuthorizer(ctx, c, appID); err != nil {
		return nil, err
	}
	compManager, err := c.ref.get(ctx)
	if err != nil {
		return nil, err
	}
	spec := c.spec
	m, err = token.NewManager(token.Options{AppID: appID, API: token.Authorizer, Clock: clock, Settings: token.Settings{
		Fetcher: &token.AuthorizerFetcher{
			BaseURL: spec.apiBase, ComponentAppID: spec.appID, AuthorizerAppID: appID, Component: compManager, Client: fetchClient,
			RejectedBy: DefaultRetryOn,
			RefreshToken: func(ctx context.Context) (string, error) {
				rec, err := a.loadAuthorizer(ctx, c, appID)
				return rec.RefreshToken, err
			},
			Save: func(ctx context.Context, refresh string) error { return a.storeAuthorizer(ctx, c, appID, refresh) },
		},
		RefreshAhead:       spec.refreshAhead,
		MinRefreshInterval: spec.minRefreshInterval,
		FetchTimeout:       spec.fetchTimeout,
		MinLifetime:        spec.minLifetime,
		Store:              a.storage,
		SecretID:           token.SecretFingerprint(spec.appID+"/"+appID, spec.secret),
		Logger:             a.logger.With(zap.String("component_appid", spec.appID), zap.String("authorizer_appid", appID)),
	}})
	if err != nil {
		return nil, err
	}
	set.mu.Lock()
	defer set.mu.Unlock()
	if existing := set.managers[appID]; existing != nil {
		return existing, nil // made by a request racing this one
	}
	if set.managers == nil {
		return nil, errors.New("the wechat app stopped")
	}
	set.managers[appID] = m
	m.Start()
	return m, nil
}

// forgetAuthorizer drops an account that ended its authorization.
func (a *App) forgetAuthorizer(ctx context.Context, c *component, appID string) error {
	set := c.authorizers
	set.mu.Lock()
	m := set.managers[appID]
	delete(set.managers, appID)
	set.mu.Unlock()
	if m != nil {
		m.Stop()
	}
	err := a.storage.Delete(ctx, authorizerKey(c.spec.appID, appID))
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	return err
}

// stopAuthorizers stops this config's account managers.
func (a *App) stopAuthorizers() {
	for _, c := range a.components {
		c.authorizers.mu.Lock()
		managers := c.authorizers.managers
		c.authorizers.managers = nil
		c.authorizers.mu.Unlock()
		for _, m := range managers {
			m.Stop()
		}
	}
}

// queryAuth exchanges an authorization code pushed by WeChat for the
// account's refresh token (api_query_auth) and keeps it.
func (a *App) queryAuth(ctx context.Context, c *component, code string) (string, error) {
	compManager, err := c.ref.get(ctx)
	if err != nil {
		return "", err
	}
	comp, err := compManager.Token(ctx)
	if err != nil {
		return "", err
	}
	info, err := token.QueryAuth(ctx, fetchClient, c.spec.apiBase, c.spec.appID, comp.Value, code)
	if err != nil {
		return "", err
	}
	return info.AuthorizerAppID, a.storeAuthorizer(ctx, c, info.AuthorizerAppID, info.RefreshToken)
}

// importAuthorizers is POST /wechat_token/components/{name}/authorizers:
// accounts authorized before the proxy, with their refresh tokens.
func importAuthorizers(w http.ResponseWriter, r *http.Request, lc liveComponent) error {
	var accounts []struct {
		AppID        string `json:"authorizer_appid"`
		RefreshToken string `json:"authorizer_refresh_token"`
	}
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 32<<20))
	if err := dec.Decode(&accounts); err != nil {
		return writeJSON(w, http.StatusBadRequest, map[string]string{"error": "want [{\"authorizer_appid\",\"authorizer_refresh_token\"}]: " + err.Error()})
	}
	for i, acc := range accounts {
		if !validAppID(acc.AppID) || acc.RefreshToken == "" {
			return writeJSON(w, http.StatusBadRequest, map[string]string{"error": fmt.Sprintf("entry %d: an authorizer_appid and its authorizer_refresh_token are required", i)})
		}
	}
	for _, acc := range accounts {
		if err := lc.app.storeAuthorizer(r.Context(), lc.comp, acc.AppID, acc.RefreshToken); err != nil {
			return writeJSON(w, http.StatusBadGateway, map[string]string{"error": "storage: " + err.Error()})
		}
	}
	return writeJSON(w, http.StatusOK, map[string]int{"imported": len(accounts)})
}

// authorizerCounts counts the platform's stored accounts and this
// config's accounts whose token fetch last failed.
func (a *App) authorizerCounts(ctx context.Context, c *component) (stored, failing int) {
	keys, err := a.storage.List(ctx, authorizerPrefix(c.spec.appID), false)
	if err == nil {
		for _, k := range keys {
			if strings.HasSuffix(k, ".json") {
				stored++
			}
		}
	}
	c.authorizers.mu.Lock()
	defer c.authorizers.mu.Unlock()
	for _, m := range c.authorizers.managers {
		if st := m.Status(); st.LastError != nil && !st.Valid {
			failing++
		}
	}
	return stored, failing
}
