package caddymodule

import (
	"cmp"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"

	"github.com/caddy-wechat/caddy-wechat/caddymodule/credential"
	"github.com/caddy-wechat/caddy-wechat/caddymodule/token"
)

// Defaults of the credential options.
const (
	DefaultAPIBase      = "https://api.weixin.qq.com"
	DefaultWeComAPIBase = "https://qyapi.weixin.qq.com"
)

// CredentialOptions name the credential a handler uses and how it is
// renewed: an app's (app_id and app_secret, or for WeCom corp_id and
// corp_secret), or a third-party platform's (component, authorizer). Every
// wechat_* handler embeds them; handlers naming one credential share it.
type CredentialOptions struct {
	// The AppID of the Official Account or Mini Program. Placeholders such
	// as {env.WECHAT_APP_ID} are expanded.
	AppID string `json:"app_id"`

	// For WeCom (企业微信), instead of app_id and app_secret: the corp ID
	// and the secret of one of its apps. Tokens come from
	// /cgi-bin/gettoken, one per app secret; api_base defaults to
	// https://qyapi.weixin.qq.com and retry_on to 40014 42001; token_api
	// does not apply.
	CorpID string `json:"corp_id,omitempty"`
	// The WeCom app's secret, with corp_id. Give it as a placeholder, as app_secret.
	CorpSecret string `json:"corp_secret,omitempty"`

	// The AppSecret. Give it as a placeholder, {env.WECHAT_APP_SECRET} or
	// {file./run/secrets/wechat}: a literal value is visible to anyone who
	// can read Caddy's config through its admin API.
	AppSecret string `json:"app_secret"`

	// Which token endpoint to use: "stable" (default, POST
	// /cgi-bin/stable_token: the same token for every caller until it
	// expires, untouched by other systems' /cgi-bin/token calls) or
	// "classic" (GET /cgi-bin/token: each call invalidates the last token).
	TokenAPI string `json:"token_api,omitempty"`

	// Where tokens are fetched. Default: https://api.weixin.qq.com
	// (https://qyapi.weixin.qq.com with corp_id).
	APIBase string `json:"api_base,omitempty"`

	// How long before expiry the token is renewed. Default: 5m. Tokens
	// living less than twice as long are renewed at half-life.
	RefreshAhead caddy.Duration `json:"refresh_ahead,omitempty"`

	// Timeout of one call to the token endpoint. Requests arriving before
	// the first token wait at most this long and a second; a member of a
	// fleet waits for another's renewal as long as it may take. Default: 10s.
	FetchTimeout caddy.Duration `json:"fetch_timeout,omitempty"`

	// After a burst of 3, refreshes caused by rejected tokens happen at most
	// this often, so that a misbehaving upstream cannot spend the daily
	// token quota. Default: 1m.
	MinRefreshInterval caddy.Duration `json:"min_refresh_interval,omitempty"`

	// The shortest token lifetime (expires_in) accepted from the token
	// endpoint; a shorter one is an upstream error rather than a reason to
	// fetch again within seconds. Default: 5s (WeChat's tokens live 7200 s).
	MinTokenLifetime caddy.Duration `json:"min_token_lifetime,omitempty"`

	// With token_api classic, the most on-demand refreshes (after
	// rejections, from token-endpoint callers or operators) that the whole
	// fleet sharing the storage makes per day, Beijing time: N instances
	// together cannot spend WeChat's 2000 calls a day. Renewals before
	// expiry are not counted. Default: 1000. -1: no cap.
	DailyRefreshLimit int `json:"daily_refresh_limit,omitempty"`

	// A third-party platform of the wechat app, by name: its own calls
	// (/cgi-bin/component/...) get its component_access_token instead of
	// an app's access_token. No app_id or app_secret then.
	Component string `json:"component,omitempty"`

	// With component: "path" serves the accounts that authorized the
	// platform, the first path segment naming the account
	// (/<authorizer_appid>/<API path>); it is removed and the account's
	// access_token added. An account without an authorization gets 404.
	Authorizer string `json:"authorizer,omitempty"`
}

// resolved is what a handler's credential options come to.
type resolved struct {
	source credentialSource
	kind   *credential.Kind
	spec   credential.Spec // an app's; zero for a platform's
}

// resolve declares the credential the options name to the wechat app (or
// finds the platform's) and returns where the handler gets it.
func (o *CredentialOptions) resolve(app *App, directive string) (resolved, error) {
	if o.Component != "" {
		return o.resolvePlatform(app, directive)
	}
	if o.Authorizer != "" {
		return resolved{}, fmt.Errorf("%s: authorizer takes a component (a platform of the wechat app)", directive)
	}
	spec, err := o.spec()
	if err != nil {
		return resolved{}, o.errorf(directive, err)
	}
	ref, err := app.creds.Declare(spec, directive)
	if err != nil {
		return resolved{}, err
	}
	return resolved{source: fixedSource{ref}, kind: spec.Kind, spec: spec}, nil
}

// resolvePlatform finds a platform's credential: its
// component_access_token, or with authorizer path, its accounts' tokens.
func (o *CredentialOptions) resolvePlatform(app *App, directive string) (resolved, error) {
	if o.AppID != "" || o.AppSecret != "" || o.CorpID != "" || o.CorpSecret != "" || o.TokenAPI != "" {
		return resolved{}, fmt.Errorf("%s: component %s takes the platform's credentials from the wechat app; give no app_id, app_secret, corp_id, corp_secret or token_api", directive, o.Component)
	}
	p := app.creds.Platform(o.Component)
	if p == nil {
		return resolved{}, fmt.Errorf("%s: no component %q in the wechat global option", directive, o.Component)
	}
	switch o.Authorizer {
	case "":
		return resolved{source: fixedSource{p.ComponentToken()}, kind: credential.Component}, nil
	case "path":
		return resolved{source: accountSource{p}, kind: credential.Authorizer}, nil
	}
	return resolved{}, fmt.Errorf("%s: authorizer %q: only path is supported (/<authorizer_appid>/<API path>)", directive, o.Authorizer)
}

// errorf names the app in a configuration error, since a config may have
// several.
func (o *CredentialOptions) errorf(directive string, err error) error {
	label, raw := "app_id", o.AppID
	if o.CorpID != "" {
		label, raw = "corp_id", o.CorpID
	}
	if id := strings.TrimSpace(caddy.NewReplacer().ReplaceKnown(raw, "")); id != "" {
		return fmt.Errorf("%s (%s %s): %w", directive, label, id, err)
	}
	return fmt.Errorf("%s: %w", directive, err)
}

// wecom says whether the options name a WeCom app.
func (o *CredentialOptions) wecom() bool { return o.CorpID != "" || o.CorpSecret != "" }

// spec expands placeholders and checks an app's options, naming the
// option in the error. Errors never quote the secret.
func (o *CredentialOptions) spec() (credential.Spec, error) {
	repl := caddy.NewReplacer()
	idOption, secretOption, rawID, rawSecret := "app_id", "app_secret", o.AppID, o.AppSecret
	if o.wecom() {
		if o.AppID != "" || o.AppSecret != "" {
			return credential.Spec{}, errors.New("give corp_id and corp_secret (WeCom) or app_id and app_secret, not both")
		}
		if o.TokenAPI != "" {
			return credential.Spec{}, errors.New("token_api does not apply to WeCom (corp_id): its tokens come from /cgi-bin/gettoken")
		}
		idOption, secretOption, rawID, rawSecret = "corp_id", "corp_secret", o.CorpID, o.CorpSecret
	}
	s := credential.Spec{
		ID:      strings.TrimSpace(repl.ReplaceKnown(rawID, "")),
		Secret:  strings.TrimSpace(repl.ReplaceKnown(rawSecret, "")),
		APIBase: strings.TrimSpace(repl.ReplaceKnown(o.APIBase, "")),
	}
	switch {
	case rawID == "" && !o.wecom():
		return s, errors.New("app_id is required (or corp_id, for WeCom)")
	case rawID == "":
		return s, errors.New("corp_id is required")
	case s.ID == "":
		return s, fmt.Errorf("%s is empty once placeholders are expanded (%s)%s", idOption, rawID, unsetPlaceholders(rawID))
	case rawSecret == "":
		return s, fmt.Errorf("%s is required", secretOption)
	case s.Secret == "":
		return s, fmt.Errorf("%s is empty once placeholders are expanded (%s)%s", secretOption, placeholdersOnly(rawSecret), unsetPlaceholders(rawSecret))
	}
	switch {
	case o.wecom():
		s.Kind = credential.WeCom
	case o.TokenAPI == "" || o.TokenAPI == credential.Stable.Name:
		s.Kind = credential.Stable
	case o.TokenAPI == credential.Classic.Name:
		s.Kind = credential.Classic
	default:
		return s, fmt.Errorf("token_api: unknown token API %q (want %q or %q)", o.TokenAPI, credential.Stable.Name, credential.Classic.Name)
	}
	if o.APIBase == "" && o.wecom() {
		s.APIBase = DefaultWeComAPIBase
	}
	var err error
	if s.APIBase, err = checkAPIBase(s.APIBase); err != nil {
		return s, err
	}
	s.Timing, err = o.timing()
	return s, err
}

// checkAPIBase checks an api_base (default DefaultAPIBase) and returns it
// without a trailing slash.
func checkAPIBase(base string) (string, error) {
	base = cmp.Or(base, DefaultAPIBase)
	u, err := url.Parse(base)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.RawQuery != "" || u.Fragment != "" {
		return "", fmt.Errorf("api_base %q is not an http(s) URL of a host (like %s)", u.Redacted(), DefaultAPIBase)
	}
	if u.User != nil {
		// Whoever reads the config (the admin API shows it) would read them,
		// and the token endpoint needs none.
		return "", fmt.Errorf("api_base %q carries credentials; give it as a plain URL like %s", u.Redacted(), DefaultAPIBase)
	}
	return strings.TrimSuffix(base, "/"), nil
}

// timing checks the renewal options and fills in their defaults, so that
// handlers declaring one credential compare (and are reported) by the
// values in force.
func (o *CredentialOptions) timing() (credential.Timing, error) {
	var t credential.Timing
	for name, d := range map[string]caddy.Duration{"refresh_ahead": o.RefreshAhead, "fetch_timeout": o.FetchTimeout,
		"min_refresh_interval": o.MinRefreshInterval, "min_token_lifetime": o.MinTokenLifetime} {
		if d < 0 {
			return t, fmt.Errorf("%s must not be negative (got %s)", name, time.Duration(d))
		}
	}
	t.RefreshAhead = cmp.Or(time.Duration(o.RefreshAhead), token.DefaultRefreshAhead)
	t.FetchTimeout = cmp.Or(time.Duration(o.FetchTimeout), token.DefaultFetchTimeout)
	t.MinRefreshInterval = cmp.Or(time.Duration(o.MinRefreshInterval), token.DefaultMinRefreshInterval)
	t.MinLifetime = cmp.Or(time.Duration(o.MinTokenLifetime), token.DefaultMinLifetime)
	switch {
	case o.DailyRefreshLimit < -1:
		return t, fmt.Errorf("daily_refresh_limit must be a positive number of refreshes, or -1 for no cap (got %d)", o.DailyRefreshLimit)
	case o.DailyRefreshLimit == 0:
		t.DailyRefreshLimit = token.DefaultDailyRefreshLimit
	case o.DailyRefreshLimit > 0:
		t.DailyRefreshLimit = o.DailyRefreshLimit
	}
	return t, nil
}
