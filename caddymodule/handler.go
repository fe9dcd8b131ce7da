// Package caddymodule registers the wechat_token HTTP handler: it holds
// WeChat access_tokens and adds the current one to every request passing to
// reverse_proxy, renewing it before expiry and when WeChat rejects it.
package caddymodule

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"

	"github.com/caddy-wechat/caddy-wechat/caddymodule/replay"
	"github.com/caddy-wechat/caddy-wechat/caddymodule/token"
	"github.com/caddy-wechat/caddy-wechat/caddymodule/wxhttp"
)

func init() {
	caddy.RegisterModule(Handler{})
}

// Defaults of the handler's options.
const (
	DefaultAPIBase       = "https://api.weixin.qq.com"
	DefaultWeComAPIBase  = "https://qyapi.weixin.qq.com"
	DefaultMaxReplayBody = 16 << 20
	// inspectLimit is the largest response body held back to read its
	// errcode. WeChat's errors are far smaller; larger bodies stream.
	inspectLimit = 64 << 10
)

// DefaultRetryOn are the errcodes meaning "this token was rejected":
// 40001 (invalid or not the latest) and 42001 (expired); for WeCom,
// DefaultWeComRetryOn: 40014 (invalid) and 42001 (expired).
var (
	DefaultRetryOn      = []int64{40001, 42001}
	DefaultWeComRetryOn = []int64{40014, 42001}
)

// Handler adds the app's current access_token to every request, replacing
// any the client sent, and retries once with a renewed token when WeChat
// rejects the one it used. It belongs before reverse_proxy, which the
// Caddyfile directive arranges by itself.
type Handler struct {
	// The AppID of the Official Account or Mini Program. Placeholders such
	// as {env.WECHAT_APP_ID} are expanded.
	AppID string `json:"app_id"`

	// For WeCom (企业微信), instead of app_id and app_secret: the corp ID
	// and the secret of one of its apps. Tokens come from
	// /cgi-bin/gettoken, one per app secret; api_base defaults to
	// https://qyapi.weixin.qq.com and retry_on to 40014 42001; token_api
	// does not apply.
	CorpID     string `json:"corp_id,omitempty"`
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

	// Where tokens are fetched. Default: https://api.weixin.qq.com.
	APIBase string `json:"api_base,omitempty"`

	// How long before expiry the token is renewed. Default: 5m. Tokens
	// living less than twice as long are renewed at half-life.
	RefreshAhead caddy.Duration `json:"refresh_ahead,omitempty"`

	// Errcodes meaning the token was rejected: such an answer triggers one
	// refresh and one retry. Default: 40001 42001.
	RetryOn []int64 `json:"retry_on,omitempty"`

	// Request bodies up to this many bytes are buffered so that the request
	// can be replayed byte for byte after a refresh; larger ones stream
	// through and are not retried. Default: 16 MiB, above WeChat's upload
	// limits.
	MaxReplayBody int64 `json:"max_replay_body,omitempty"`

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

	// What the proxy does with the calls WeChat authenticates with the
	// AppSecret instead of a token, /sns/jscode2session (Mini Program login)
	// and /sns/oauth2/access_token (web OAuth code exchange): "inject"
	// (default) sets appid and secret to the app's own, exactly one of
	// each, replacing whatever the client sent, and drops any
	// access_token, so that app servers never hold the secret;
	// "passthrough" forwards them as the client sent them.
	AppSecretCalls string `json:"app_secret_calls,omitempty"`

	// Path prefixes whose requests pass through untouched, with the
	// client's own access_token and no retry: /sns/ calls carry the user's
	// OAuth token, which the app's token must never replace. Matched on the
	// decoded, cleaned path regardless of case. Default: /sns/. Giving the
	// option replaces the default; an empty list (JSON) passes nothing.
	Passthrough []string `json:"passthrough,omitempty"`

	cred        *credentialRef
	replay      *replay.Pool
	secretCalls bool   // inject the AppSecret into its calls
	tokenKey    string // the query parameter the credential goes in
	// authorizer path mode: the app and platform the accounts belong to
	authorizerPath bool
	app            *App
	comp           *component
	appID          string // expanded, for the AppSecret calls
	secret         string
	passthrough    []string // canonical prefixes
	retryOn        []int64
	logger         *zap.Logger
	// param caches the escaped token parameter; a pointer because a
	// Handler is copied as a value before it is provisioned.
	param *atomic.Pointer[escapedToken]
}

// CaddyModule returns the Caddy module information.
func (Handler) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.wechat_token",
		New: func() caddy.Module { return new(Handler) },
	}
}

// Provision validates the configuration and declares the app's token to
// the wechat app, which holds it once the config starts.
func (h *Handler) Provision(ctx caddy.Context) error {
	return h.provision(ctx, "wechat_token")
}

// provision is Provision for the handler named by directive: it declares
// (or, for a platform, finds) the credential, then wires what every kind
// of handler shares.
func (h *Handler) provision(ctx caddy.Context, directive string) error {
	h.logger = ctx.Logger()
	h.tokenKey = "access_token"
	app, err := ctx.App("wechat")
	if err != nil {
		return fmt.Errorf("%s: %w", directive, err)
	}
	wechat := app.(*App)
	retryOn := DefaultRetryOn
	if h.Component != "" {
		if err := h.provisionComponent(wechat, directive); err != nil {
			return err
		}
	} else {
		spec, err := h.spec()
		if err != nil {
			if spec.appID != "" {
				// With several apps, which one.
				label := "app_id"
				if h.CorpID != "" {
					label = "corp_id"
				}
				return fmt.Errorf("%s (%s %s): %w", directive, label, spec.appID, err)
			}
			return fmt.Errorf("%s: %w", directive, err)
		}
		if h.cred, err = wechat.declare(spec, directive); err != nil {
			return err
		}
		h.appID, h.secret = spec.appID, spec.secret
		// WeCom has no AppSecret calls: its logins take the token.
		h.secretCalls = h.AppSecretCalls != "passthrough" && spec.api != token.WeCom
		if spec.api == token.WeCom {
			retryOn = DefaultWeComRetryOn
		}
	}
	h.param = new(atomic.Pointer[escapedToken])
	h.passthrough = canonicalPrefixes(h.Passthrough)
	h.retryOn = h.RetryOn
	if h.retryOn == nil {
		h.retryOn = retryOn
	}
	if h.MaxReplayBody == 0 {
		h.MaxReplayBody = DefaultMaxReplayBody
	}
	h.replay = wechat.replay
	return registerMetrics(ctx.GetMetricsRegistry())
}

// cutAuthorizer splits /<appid>/<rest> into the appid and /<rest>.
func cutAuthorizer(p string) (appID, rest string, ok bool) {
	trimmed := strings.TrimPrefix(p, "/")
	appID, rest, found := strings.Cut(trimmed, "/")
	if !found || !validAppID(appID) {
		return "", "", false
	}
	return appID, "/" + rest, true
}

// provisionComponent finds the credential of a platform's handler: the
// platform's component_access_token, which the wechat app declared, or
// with authorizer path, its accounts' tokens.
func (h *Handler) provisionComponent(app *App, directive string) error {
	if h.AppID != "" || h.AppSecret != "" || h.CorpID != "" || h.CorpSecret != "" || h.TokenAPI != "" {
		return fmt.Errorf("%s: component %s takes the platform's credentials from the wechat app; give no app_id, app_secret, corp_id, corp_secret or token_api", directive, h.Component)
	}
	comp := app.components[h.Component]
	if comp == nil {
		return fmt.Errorf("%s: no component %q in the wechat global option", directive, h.Component)
	}
	h.cred, h.tokenKey = comp.ref, "component_access_token"
	switch h.Authorizer {
	case "":
	case "path":
		h.authorizerPath, h.app, h.comp, h.tokenKey = true, app, comp, "access_token"
	default:
		return fmt.Errorf("%s: authorizer %q: only path is supported (/<authorizer_appid>/<API path>)", directive, h.Authorizer)
	}
	return nil
}

// spec expands placeholders and checks every field, naming it in the
// error. Errors never quote the secret.
func (h *Handler) spec() (credentialSpec, error) {
	repl := caddy.NewReplacer()
	idOption, secretOption, rawID, rawSecret := "app_id", "app_secret", h.AppID, h.AppSecret
	wecom := h.CorpID != "" || h.CorpSecret != ""
	if wecom {
		if h.AppID != "" || h.AppSecret != "" {
			return credentialSpec{}, errors.New("give corp_id and corp_secret (WeCom) or app_id and app_secret, not both")
		}
		if h.TokenAPI != "" {
			return credentialSpec{}, errors.New("token_api does not apply to WeCom (corp_id): its tokens come from /cgi-bin/gettoken")
		}
		idOption, secretOption, rawID, rawSecret = "corp_id", "corp_secret", h.CorpID, h.CorpSecret
	}
	s := credentialSpec{
		appID:   strings.TrimSpace(repl.ReplaceKnown(rawID, "")),
		secret:  strings.TrimSpace(repl.ReplaceKnown(rawSecret, "")),
		apiBase: strings.TrimSpace(repl.ReplaceKnown(h.APIBase, "")),
	}
	switch {
	case rawID == "" && !wecom:
		return s, errors.New("app_id is required (or corp_id, for WeCom)")
	case rawID == "":
		return s, errors.New("corp_id is required")
	case s.appID == "":
		return s, fmt.Errorf("%s is empty once placeholders are expanded (%s)%s", idOption, rawID, unsetPlaceholders(rawID))
	case rawSecret == "":
		return s, fmt.Errorf("%s is required", secretOption)
	case s.secret == "":
		return s, fmt.Errorf("%s is empty once placeholders are expanded (%s)%s", secretOption, placeholdersOnly(rawSecret), unsetPlaceholders(rawSecret))
	}
	var err error
	if wecom {
		s.api = token.WeCom
	} else if s.api, err = token.ParseAPI(cmp.Or(h.TokenAPI, string(token.Stable))); err != nil {
		return s, fmt.Errorf("token_api: %w", err)
	}
	if h.APIBase == "" && wecom {
		s.apiBase = DefaultWeComAPIBase
	}
	if s.apiBase == "" {
		s.apiBase = DefaultAPIBase
	}
	u, err := url.Parse(s.apiBase)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.RawQuery != "" || u.Fragment != "" {
		return s, fmt.Errorf("api_base %q is not an http(s) URL of a host (like %s)", u.Redacted(), DefaultAPIBase)
	}
	if u.User != nil {
		// Whoever reads the config (the admin API shows it) would read them,
		// and the token endpoint needs none.
		return s, fmt.Errorf("api_base %q carries credentials; give it as a plain URL like %s", u.Redacted(), DefaultAPIBase)
	}
	s.apiBase = strings.TrimSuffix(s.apiBase, "/")
	for name, d := range map[string]caddy.Duration{"refresh_ahead": h.RefreshAhead, "fetch_timeout": h.FetchTimeout,
		"min_refresh_interval": h.MinRefreshInterval, "min_token_lifetime": h.MinTokenLifetime} {
		if d < 0 {
			return s, fmt.Errorf("%s must not be negative (got %s)", name, time.Duration(d))
		}
	}
	// Defaults filled in here, so that handlers declaring one credential
	// compare (and are reported) by the values in force.
	s.refreshAhead = cmp.Or(time.Duration(h.RefreshAhead), token.DefaultRefreshAhead)
	s.fetchTimeout = cmp.Or(time.Duration(h.FetchTimeout), token.DefaultFetchTimeout)
	s.minRefreshInterval = cmp.Or(time.Duration(h.MinRefreshInterval), token.DefaultMinRefreshInterval)
	s.minLifetime = cmp.Or(time.Duration(h.MinTokenLifetime), token.DefaultMinLifetime)
	switch {
	case h.DailyRefreshLimit < -1:
		return s, fmt.Errorf("daily_refresh_limit must be a positive number of refreshes, or -1 for no cap (got %d)", h.DailyRefreshLimit)
	case h.DailyRefreshLimit == 0:
		s.dailyRefreshLimit = token.DefaultDailyRefreshLimit
	case h.DailyRefreshLimit > 0:
		s.dailyRefreshLimit = h.DailyRefreshLimit
	}
	if h.MaxReplayBody < 0 {
		return s, fmt.Errorf("max_replay_body must not be negative (got %d)", h.MaxReplayBody)
	}
	for _, prefix := range h.Passthrough {
		if !strings.HasPrefix(prefix, "/") {
			return s, fmt.Errorf("passthrough: %q is not a path prefix (like /sns/)", prefix)
		}
		if wxhttp.IsTokenEndpoint(prefix) || wxhttp.HasPrefix("/cgi-bin/token", []string{wxhttp.CanonicalPrefix(prefix)}) {
			return s, fmt.Errorf("passthrough: %q would let clients reach WeChat's token endpoints", prefix)
		}
	}
	if h.AppSecretCalls != "" && h.AppSecretCalls != "inject" && h.AppSecretCalls != "passthrough" {
		return s, fmt.Errorf("app_secret_calls: %q is neither inject nor passthrough", h.AppSecretCalls)
	}
	if slices.Contains(h.RetryOn, 0) {
		return s, errors.New("retry_on: errcode 0 means success and cannot trigger a retry")
	}
	return s, nil
}

// canonicalPrefixes are the passthrough prefixes as HasPrefix compares
// them; nil (the option not given) means the default.
func canonicalPrefixes(prefixes []string) []string {
	if prefixes == nil {
		prefixes = wxhttp.DefaultPassthrough
	}
	out := make([]string, len(prefixes))
	for i, p := range prefixes {
		out[i] = wxhttp.CanonicalPrefix(p)
	}
	return out
}

// fetchClient calls token endpoints for every credential: a transport of
// its own, honouring the proxy environment variables like Go's default one.
var fetchClient = &http.Client{Transport: &http.Transport{
	Proxy:                 http.ProxyFromEnvironment,
	DialContext:           (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
	ForceAttemptHTTP2:     true,
	MaxIdleConns:          4,
	IdleConnTimeout:       90 * time.Second,
	TLSHandshakeTimeout:   5 * time.Second,
	ResponseHeaderTimeout: 10 * time.Second,
}}

// ServeHTTP injects the token, passes the request on, and when WeChat
// answers that the token was rejected, refreshes it (once for all requests
// that failed with it) and replays the request once.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler) error {
	var authorizer string // the account, in authorizer path mode
	if h.authorizerPath {
		var rest string
		var ok bool
		if authorizer, rest, ok = cutAuthorizer(r.URL.Path); !ok {
			return writeWeChatError(w, http.StatusNotFound, "wechat_token: the path must start with the authorizer's appid: /<authorizer_appid>/<API path>")
		}
		r.URL.Path, r.URL.RawPath = rest, ""
	}
	switch wxhttp.Route(r.URL.Path, h.passthrough, h.secretCalls) {
	case wxhttp.Refuse:
		return writeWeChatError(w, http.StatusForbidden, "wechat_token: "+r.URL.Path+
			" is not served through the token proxy: a client's token request would replace the token"+
			" every app server relies on. Call the API without a token; the proxy adds it.")
	case wxhttp.Passthrough:
		return h.forward(w, r, next, "") // the client's own (user) token, untouched
	case wxhttp.AppSecret:
		return h.forwardWithSecret(w, r, next)
	}
	var m *token.Manager
	var err error
	if h.authorizerPath {
		m, err = h.app.authorizerManager(r.Context(), h.comp, authorizer)
		if errors.Is(err, errUnknownAuthorizer) {
			return writeWeChatError(w, http.StatusNotFound, "wechat_token: "+authorizer+": "+err.Error())
		}
	} else {
		m, err = h.cred.get(r.Context())
	}
	if err != nil {
		if ctxErr := r.Context().Err(); ctxErr != nil {
			return ctxErr
		}
		return h.unavailable(w, err)
	}
	tok, err := m.Token(r.Context())
	if err != nil {
		if ctxErr := r.Context().Err(); ctxErr != nil {
			return ctxErr // the client is gone
		}
		return h.unavailable(w, err)
	}

	// Without the client's Accept-Encoding the transport asks for gzip and
	// decompresses transparently, so errcodes stay readable.
	r.Header.Del("Accept-Encoding")

	body, err := h.holdBody(r)
	if err != nil {
		return writeWeChatError(w, http.StatusBadRequest, "wechat_token: "+err.Error())
	}
	defer body.Close()

	// Later handlers and error routes see the client's query, never ours.
	clientQuery := r.URL.RawQuery
	defer func() { r.URL.RawQuery = clientQuery }()
	stripped := wxhttp.StripKey(clientQuery, h.tokenKey)
	r.URL.RawQuery = wxhttp.WithToken(stripped, h.tokenParam(tok.Value))

	if body != nil && !body.Replayable() {
		return h.forward(w, r, next, tok.Value) // stream, no retry
	}

	headers := w.Header().Clone()
	holder := wxhttp.NewResponseHolder(w, inspectLimit)
	err = next.ServeHTTP(holder, r)
	if err != nil && !holder.Started() {
		return h.answerFailure(w, r, err, tok.Value)
	}
	answer, held := holder.Held()
	if err != nil || !held {
		if releaseErr := holder.Release(); err == nil {
			err = releaseErr
		}
		return err
	}
	code, ok := wxhttp.Errcode(answer)
	if !ok || !slices.Contains(h.retryOn, code) {
		return holder.Release()
	}
	fresh, err := m.Refresh(r.Context(), token.Rejection{Token: tok, Source: token.FromProxy})
	if err != nil {
		h.logger.Debug("token rejected and no new token to retry with; passing WeChat's answer on",
			zap.Int64("errcode", code), zap.String("path", r.URL.Path), zap.Error(err))
		m.NoteRetry(token.RetryNotRetried)
		return holder.Release()
	}
	h.logger.Debug("token rejected; retrying with the renewed token",
		zap.Int64("errcode", code), zap.String("path", r.URL.Path))

	// The first answer is dropped unseen: start the second from the headers
	// the response had before the first attempt.
	clear(w.Header())
	for k, v := range headers {
		w.Header()[k] = v
	}
	holder.Discard()
	r.URL.RawQuery = wxhttp.WithToken(stripped, h.tokenParam(fresh.Value))
	rewindBody(r, body)
	// The second answer goes to the client whatever it is; it is held
	// back only to count the outcome.
	second := wxhttp.NewResponseHolder(w, inspectLimit)
	err = next.ServeHTTP(second, withOwnVars(r))
	if err != nil && !second.Started() {
		m.NoteRetry(token.RetryError)
		return h.answerFailure(w, r, err, fresh.Value)
	}
	outcome := token.RetryOK
	if answer, held := second.Held(); err != nil {
		outcome = token.RetryError
	} else if code, ok := wxhttp.Errcode(answer); held && ok && code != 0 {
		outcome = token.RetryError
		if fresh.Value == tok.Value && slices.Contains(h.retryOn, code) {
			// WeChat handed back the token it rejected, and rejected it again
			// for this replay: a confirmed rejection. Report it, so that the
			// next requests get a forced token; this one has had its replay.
			if _, err := m.Refresh(r.Context(), token.Rejection{Token: fresh, Source: token.FromProxy}); err != nil {
				h.logger.Debug("token rejected again after WeChat confirmed it; no new token", zap.Error(err))
			}
		}
	}
	m.NoteRetry(outcome)
	if releaseErr := second.Release(); err == nil {
		err = releaseErr
	}
	return err
}

// forwardWithSecret passes on a call WeChat authenticates with the
// AppSecret, the app's appid and secret in its query. The answer (a
// user's session_key or OAuth token) streams back as it is, never read or
// logged, and a WeChat error in it refreshes nothing: it is about the
// code, not a token.
func (h *Handler) forwardWithSecret(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler) error {
	clientQuery := r.URL.RawQuery
	defer func() { r.URL.RawQuery = clientQuery }() // later handlers and logs see the client's
	r.URL.RawQuery = wxhttp.WithAppSecret(clientQuery, h.appID, h.secret)
	return h.forward(w, r, next, h.secret)
}

// tokenParam returns the query parameter for tok, escaped once per token
// rather than once per request.
func (h *Handler) tokenParam(tok string) string {
	render := wxhttp.TokenParam
	if h.tokenKey != "" && h.tokenKey != "access_token" {
		render = func(v string) string { return wxhttp.KeyParam(h.tokenKey, v) }
	}
	if h.param == nil {
		return render(tok)
	}
	if p := h.param.Load(); p != nil && p.token == tok {
		return p.param
	}
	p := &escapedToken{token: tok, param: render(tok)}
	h.param.Store(p)
	return p.param
}

// escapedToken is a token with its query parameter.
type escapedToken struct{ token, param string }

// withOwnVars gives a replay its own copy of the request's variables:
// the transport may still be dialing for the first attempt in the
// background, reading the variables that reverse_proxy writes again for
// the second.
func withOwnVars(r *http.Request) *http.Request {
	vars, ok := r.Context().Value(caddyhttp.VarsCtxKey).(map[string]any)
	if !ok {
		return r
	}
	return r.WithContext(context.WithValue(r.Context(), caddyhttp.VarsCtxKey, maps.Clone(vars)))
}

// holdBody holds the request body for replay (see package replay): nil
// when there is no body. A body that is not held is set up to stream on
// whole, and the request is not retried.
func (h *Handler) holdBody(r *http.Request) (*replay.Body, error) {
	// A server request with no body may still carry a wrapped empty Body
	// (Caddy wraps it); ContentLength 0 is what says there is nothing to
	// read, -1 being a body of unknown length.
	if r.Body == nil || r.Body == http.NoBody || r.ContentLength == 0 {
		return nil, nil
	}
	body, err := h.replay.Hold(r.Body, r.ContentLength, h.MaxReplayBody)
	if err != nil {
		return nil, err
	}
	if !body.Replayable() {
		h.logger.Debug("request body not held for replay; it streams and is not retried",
			zap.String("reason", string(body.Reason())), zap.String("path", r.URL.Path))
		r.Body = struct {
			io.Reader
			io.Closer
		}{body.Reader(), r.Body}
		return body, nil
	}
	if mem, ok := body.InMemory(); ok && isForm(r) {
		// A token in a form body would be a second one beside ours. (A form
		// too large for memory is sent as it came.)
		if stripped := wxhttp.StripToken(string(mem)); len(stripped) != len(mem) {
			body.SetInMemory([]byte(stripped))
		}
	}
	// A chunked upload now has a known length; WeChat prefers that.
	r.ContentLength = body.Size()
	r.TransferEncoding = nil
	r.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(body.Reader()), nil }
	rewindBody(r, body)
	return body, nil
}

// isForm reports whether the request body is URL-encoded form data.
func isForm(r *http.Request) bool {
	mediaType, _, _ := strings.Cut(r.Header.Get("Content-Type"), ";")
	return strings.EqualFold(strings.TrimSpace(mediaType), "application/x-www-form-urlencoded")
}

// rewindBody sets r.Body to read a held body from its start.
func rewindBody(r *http.Request, body *replay.Body) {
	if body == nil {
		return // no body at all: leave http.NoBody as it is
	}
	r.Body = io.NopCloser(body.Reader())
}

// Interface guards
var (
	_ caddy.Provisioner           = (*Handler)(nil)
	_ caddyhttp.MiddlewareHandler = (*Handler)(nil)
)
