package credential

import (
	"net/http"

	"github.com/caddy-wechat/caddy-wechat/caddymodule/token"
)

// Kind is a kind of credential: everything that differs between an
// Official Account's access token, a WeCom token, a jsapi_ticket, a
// platform's tokens. Each kind is one file of this package (stable.go,
// classic.go, wecom.go, jsapi_ticket.go, component.go, authorizer.go);
// nothing else branches on which kind it is.
type Kind struct {
	// Name names it in storage, the admin status (token_api) and metric
	// labels; Noun what it holds, in logs and errors.
	Name, Noun string
	// Param is the query parameter a proxied request carries it in.
	Param string
	// RejectedBy are the errcodes with which WeChat rejects it: the
	// default of retry_on, and what makes a dependent fetch refresh it.
	RejectedBy []int64
	// ForceRefresh: it can be forced while valid (stable_token's
	// force_refresh, 20 a day for the fleet).
	ForceRefresh bool
	// SharedAnswer: a normal fetch hands every caller the same current
	// value, so a refresh requests wait for need not coordinate through
	// the storage.
	SharedAnswer bool
	// DailyCapped: each fetch spends WeChat's daily quota (classic's 2000
	// calls), so on-demand refreshes count against daily_refresh_limit.
	DailyCapped bool
	// PerSecret: one credential per secret, not per ID (WeCom: one token
	// per app of a corp), told apart by a fingerprint of the secret.
	PerSecret bool
	// SecretCalls: the app has the calls WeChat authenticates with the
	// AppSecret itself (Mini Program login, OAuth code exchange).
	SecretCalls bool
	// ErrNone is what asking for it fails with when none is held.
	ErrNone error
	// TicketPath is where the JS-SDK's jsapi_ticket of an app holding
	// this kind of token is fetched, with the query beside the token (""
	// when it has none).
	TicketPath string
	// Needs, if set, is the spec of the credential it is fetched with (a
	// ticket needs its app's token); the registry declares and starts
	// that one first and hands it over in Deps.Needed.
	Needs func(Spec) Spec
	// Keys are where its record, ledger and locks live (keys.go).
	Keys func(Spec) token.Keys
	// NewFetcher makes its fetcher.
	NewFetcher func(Spec, Deps) token.Fetcher
}

// Deps are what a kind's fetcher is given beside its spec.
type Deps struct {
	// Store is the config's storage (a platform's token reads the latest
	// verify ticket there, an account its refresh token).
	Store token.Store
	// Needed is the running credential the kind Needs.
	Needed Refresher
	// Client calls WeChat.
	Client *http.Client
	// accounts are, for a platform's account, the platform's accounts:
	// where its refresh token is read and kept.
	accounts *accounts
}

// engine is what the token engine needs to know of k.
func (k *Kind) engine() token.Kind {
	return token.Kind{Name: k.Name, Noun: k.Noun, ErrNone: k.ErrNone, ForceRefresh: k.ForceRefresh, SharedAnswer: k.SharedAnswer}
}

// String is the kind's name.
func (k *Kind) String() string { return k.Name }
