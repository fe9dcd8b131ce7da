// Package caddymodule is the Caddy side of caddy-wechat: it registers the
// wechat app (which holds every credential, see package credential), the
// handlers wechat_token (adds the credential to proxied calls and retries
// them once when WeChat rejects it), wechat_token_value, wechat_jssdk and
// wechat_component_events, the admin routes under /wechat_token/ and the
// metrics; and the Caddyfile syntax of each.
package caddymodule

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"

	"github.com/caddy-wechat/caddy-wechat/caddymodule/credential"
	"github.com/caddy-wechat/caddy-wechat/caddymodule/replay"
	"github.com/caddy-wechat/caddy-wechat/caddymodule/token"
	"github.com/caddy-wechat/caddy-wechat/caddymodule/wxhttp"
)

func init() {
	caddy.RegisterModule(Handler{})
}

const (
	// DefaultMaxReplayBody is max_replay_body's default.
	DefaultMaxReplayBody = 16 << 20
	// inspectLimit is the largest response body held back to read its
	// errcode. WeChat's errors are far smaller; larger bodies stream.
	inspectLimit = 64 << 10
)

// Handler adds the credential's current value (an app's access_token, a
// platform's component_access_token, an account's token) to every
// request, replacing any the client sent, and retries once with a renewed
// one when WeChat rejects the one it used. It belongs before
// reverse_proxy, which the Caddyfile directive arranges by itself.
type Handler struct {
	CredentialOptions

	// Errcodes meaning the token was rejected: such an answer triggers one
	// refresh and one retry. Default: 40001 42001 (WeCom: 40014 42001).
	RetryOn []int64 `json:"retry_on,omitempty"`

	// Request bodies up to this many bytes are buffered so that the request
	// can be replayed byte for byte after a refresh; larger ones stream
	// through and are not retried. Default: 16 MiB, above WeChat's upload
	// limits.
	MaxReplayBody int64 `json:"max_replay_body,omitempty"`

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

	source      credentialSource
	replay      *replay.Pool
	secretCalls bool   // inject the AppSecret into its calls
	tokenKey    string // the query parameter the credential goes in
	appID       string // expanded, for the AppSecret calls
	secret      string
	apiBase     string   // where the AppSecret calls go
	passthrough []string // canonical prefixes
	retryOn     []int64
	logger      *zap.Logger
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

// Provision validates the configuration and declares the credential to
// the wechat app, which holds it once the config starts.
func (h *Handler) Provision(ctx caddy.Context) error {
	const directive = "wechat_token"
	h.logger = ctx.Logger()
	app, err := wechatApp(ctx, directive)
	if err != nil {
		return err
	}
	if err := h.checkProxyOptions(); err != nil {
		return h.errorf(directive, err)
	}
	res, err := h.resolve(app, directive)
	if err != nil {
		return err
	}
	h.source, h.tokenKey = res.source, res.kind.Param
	h.appID, h.secret, h.apiBase = res.spec.ID, res.spec.Secret, res.spec.APIBase
	h.secretCalls = h.AppSecretCalls != "passthrough" && res.kind.SecretCalls
	h.retryOn = h.RetryOn
	if h.retryOn == nil {
		h.retryOn = res.kind.RejectedBy
	}
	h.param = new(atomic.Pointer[escapedToken])
	h.passthrough = canonicalPrefixes(h.Passthrough)
	if h.MaxReplayBody == 0 {
		h.MaxReplayBody = DefaultMaxReplayBody
	}
	h.replay = app.replay
	return registerMetrics(ctx.GetMetricsRegistry())
}

// checkProxyOptions checks the options of the proxying itself.
func (h *Handler) checkProxyOptions() error {
	if h.MaxReplayBody < 0 {
		return fmt.Errorf("max_replay_body must not be negative (got %d)", h.MaxReplayBody)
	}
	for _, prefix := range h.Passthrough {
		if !strings.HasPrefix(prefix, "/") {
			return fmt.Errorf("passthrough: %q is not a path prefix (like /sns/)", prefix)
		}
		if wxhttp.IsTokenEndpoint(prefix) || wxhttp.HasPrefix("/cgi-bin/token", []string{wxhttp.CanonicalPrefix(prefix)}) {
			return fmt.Errorf("passthrough: %q would let clients reach WeChat's token endpoints", prefix)
		}
	}
	if h.AppSecretCalls != "" && h.AppSecretCalls != "inject" && h.AppSecretCalls != "passthrough" {
		return fmt.Errorf("app_secret_calls: %q is neither inject nor passthrough", h.AppSecretCalls)
	}
	if slices.Contains(h.RetryOn, 0) {
		return errors.New("retry_on: errcode 0 means success and cannot trigger a retry")
	}
	return nil
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

// ServeHTTP injects the token, passes the request on, and when WeChat
// answers that the token was rejected, refreshes it (once for all requests
// that failed with it) and replays the request once.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler) error {
	name, err := h.source.locate(r)
	if err != nil {
		return writeWeChatError(w, http.StatusNotFound, err.Error())
	}
	switch wxhttp.Route(r.URL.Path, h.passthrough, h.secretCalls) {
	case wxhttp.Refuse:
		return writeWeChatError(w, http.StatusForbidden, "wechat_token: "+r.URL.Path+
			" is not served through the token proxy: a client's token request would replace the token"+
			" every app server relies on. Call the API without a token; the proxy adds it.")
	case wxhttp.Passthrough:
		return h.forward(w, r, next, "") // the client's own (user) token, untouched
	case wxhttp.AppSecret:
		return h.forwardWithSecret(w, r)
	}
	m, err := h.source.get(r.Context(), name)
	if errors.Is(err, credential.ErrUnknownAuthorizer) {
		return writeWeChatError(w, http.StatusNotFound, "wechat_token: "+name+": "+err.Error())
	}
	if err != nil {
		if ctxErr := r.Context().Err(); ctxErr != nil {
			return ctxErr
		}
		return unavailable(w, err)
	}
	tok, err := m.Token(r.Context())
	if err != nil {
		if ctxErr := r.Context().Err(); ctxErr != nil {
			return ctxErr // the client is gone
		}
		return unavailable(w, err)
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
		return h.forwardUnreplayable(w, r, next, m, tok)
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

// forwardUnreplayable streams a request whose body could not be held for
// replay. WeChat's answer goes to the client as it is; if it rejects the
// token, the token is still refreshed (same single flight and budgets),
// beside the answer, so that the next request carries the new one.
func (h *Handler) forwardUnreplayable(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler, m Credential, tok token.Token) error {
	sniff := &headSniffer{ResponseWriterWrapper: &caddyhttp.ResponseWriterWrapper{ResponseWriter: w}}
	err := h.forward(sniff, r, next, tok.Value)
	if code, ok := wxhttp.Errcode(sniff.head.Bytes()); ok && slices.Contains(h.retryOn, code) {
		m.NoteRetry(token.RetryNotRetried)
		go func() {
			ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), time.Minute)
			defer cancel()
			if _, err := m.Refresh(ctx, token.Rejection{Token: tok, Source: token.FromProxy}); err != nil {
				h.logger.Debug("token rejected on a request that could not be replayed; no new token", zap.Error(err))
			}
		}()
	}
	return err
}

// headSniffer keeps the first bytes of a small answer that looks like
// JSON, for its errcode, while it streams on to the client.
type headSniffer struct {
	*caddyhttp.ResponseWriterWrapper
	head    bytes.Buffer
	decided bool
	keep    bool
}

func (s *headSniffer) Write(p []byte) (int, error) {
	if !s.decided && len(bytes.TrimLeft(p, " \t\r\n")) > 0 {
		s.decided = true
		s.keep = bytes.TrimLeft(p, " \t\r\n")[0] == '{'
	}
	if s.keep && s.head.Len() < inspectLimit {
		s.head.Write(p[:min(len(p), inspectLimit-s.head.Len())])
	}
	return s.ResponseWriterWrapper.Write(p)
}

// ReadFrom copies through Write, so that nothing passes unsniffed.
func (s *headSniffer) ReadFrom(r io.Reader) (int64, error) {
	return io.Copy(struct{ io.Writer }{s}, r)
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

// Interface guards
var (
	_ caddy.Provisioner           = (*Handler)(nil)
	_ caddyhttp.MiddlewareHandler = (*Handler)(nil)
)
