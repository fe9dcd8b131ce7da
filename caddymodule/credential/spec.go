package credential

import (
	"fmt"
	"time"

	"github.com/caddy-wechat/caddy-wechat/caddymodule/token"
)

// Spec is one credential as a config declares it, validated and with its
// defaults filled in. It is comparable: two handlers declaring one
// credential must declare the same.
type Spec struct {
	Kind *Kind
	// ID is the app's AppID, the WeCom corp ID, the platform's
	// component_appid or the account's appid.
	ID      string
	Secret  string
	APIBase string
	// TokenKind is, for a credential fetched with an app's token (a
	// jsapi_ticket), that token's kind.
	TokenKind *Kind
	// Platform is, for an account that authorized a platform, the
	// platform's component_appid.
	Platform string
	Timing
}

// Timing are a credential's renewal options (see token.Settings).
type Timing struct {
	RefreshAhead       time.Duration
	FetchTimeout       time.Duration
	MinRefreshInterval time.Duration
	MinLifetime        time.Duration
	// DailyRefreshLimit applies to the kinds that are DailyCapped.
	DailyRefreshLimit int
}

// perSecret says whether the credential is one per secret rather than
// per ID: WeCom's tokens, and the tickets fetched with them.
func (s Spec) perSecret() bool {
	return s.Kind.PerSecret || s.TokenKind != nil && s.TokenKind.PerSecret
}

// Label names the credential in its manager, stored record, admin status
// and metrics: the ID, or for one per secret, the ID and the first 8 hex
// digits of the secret's fingerprint (two apps of one corp are two tokens,
// told apart without showing a secret).
func (s Spec) Label() string {
	if s.perSecret() {
		return s.ID + "-" + token.SecretFingerprint(s.ID, s.Secret)[:8]
	}
	return s.ID
}

// Identity names the credential across configs: two configs naming it
// hold the same one.
func (s Spec) Identity() string {
	if s.Platform != "" {
		return s.Kind.Name + "/" + s.Platform + "/" + s.ID
	}
	return s.Kind.Name + "/" + s.Label()
}

// secretID is kept with stored values to tell instances configured with
// different secrets apart.
func (s Spec) secretID() string {
	if s.Platform != "" {
		return token.SecretFingerprint(s.Platform+"/"+s.ID, s.Secret)
	}
	return token.SecretFingerprint(s.ID, s.Secret)
}

// describe names the credential in a configuration error: "token_api
// stable", "jsapi_ticket with token_api classic".
func (s Spec) describe() string {
	if s.TokenKind != nil {
		return s.Kind.Name + " with token_api " + s.TokenKind.Name
	}
	return "token_api " + s.Kind.Name
}

// Differences names the options in which s and o differ, by their
// Caddyfile names, never showing the secret.
func (s Spec) Differences(o Spec) []string {
	var out []string
	add := func(option string, a, b any) {
		if a != b {
			out = append(out, fmt.Sprintf("%s (%v and %v)", option, a, b))
		}
	}
	if s.Secret != o.Secret {
		out = append(out, "app_secret (values not shown)")
	}
	add("api_base", s.APIBase, o.APIBase)
	add("token_api", kindName(s.TokenKind), kindName(o.TokenKind))
	add("refresh_ahead", s.RefreshAhead, o.RefreshAhead)
	add("fetch_timeout", s.FetchTimeout, o.FetchTimeout)
	add("min_refresh_interval", s.MinRefreshInterval, o.MinRefreshInterval)
	add("min_token_lifetime", s.MinLifetime, o.MinLifetime)
	add("daily_refresh_limit", s.DailyRefreshLimit, o.DailyRefreshLimit)
	return out
}

func kindName(k *Kind) string {
	if k == nil {
		return ""
	}
	return k.Name
}
