package caddymodule

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/caddy-wechat/caddy-wechat/caddymodule/credential"
	"github.com/caddy-wechat/caddy-wechat/caddymodule/token"
)

func init() {
	caddy.RegisterModule(TokenValue{})
	httpcaddyfile.RegisterHandlerDirective("wechat_token_value", parseTokenValue)
	httpcaddyfile.RegisterDirectiveOrder("wechat_token_value", httpcaddyfile.Before, "respond")
}

// TokenValue answers the app's current access_token itself, for callers
// that must hold it (JS-SDK ticket signing, SDKs with a token hook). The
// proxy path (wechat_token) is preferred: every holder of the token is one
// more place it can leak from. Put this handler behind Caddy's access
// control (remote_ip, basic_auth); it has none of its own.
//
//	GET  -> {"access_token": "...", "expires_in": <seconds left>}
//	POST {"access_token": "<the token WeChat rejected>"} -> the same shape,
//	     after a refresh if (and only if) that token is still the current
//	     one, through the same single flight and rate limit as the proxy.
//
// Its credential options are wechat_token's; handlers naming the same app
// share one token.
type TokenValue struct {
	CredentialOptions

	cred *credential.Ref
}

// CaddyModule returns the Caddy module information.
func (TokenValue) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.wechat_token_value",
		New: func() caddy.Module { return new(TokenValue) },
	}
}

// Provision validates the configuration and declares the app's token to
// the wechat app.
func (v *TokenValue) Provision(ctx caddy.Context) error {
	const directive = "wechat_token_value"
	app, err := wechatApp(ctx, directive)
	if err != nil {
		return err
	}
	if v.Authorizer != "" {
		return fmt.Errorf("%s: authorizer does not apply: it answers one credential", directive)
	}
	res, err := v.resolve(app, directive)
	if err != nil {
		return err
	}
	v.cred = res.source.(fixedSource).ref
	return registerMetrics(ctx.GetMetricsRegistry())
}

func parseTokenValue(h httpcaddyfile.Helper) (caddyhttp.MiddlewareHandler, error) {
	var v TokenValue
	err := v.UnmarshalCaddyfile(h.Dispenser)
	return &v, err
}

// UnmarshalCaddyfile reads wechat_token's credential options (not its
// proxying options: this handler proxies nothing).
func (v *TokenValue) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	return v.unmarshalBlock(d, func(d *caddyfile.Dispenser, option string) (bool, error) {
		return notProxied(d, "wechat_token_value", option)
	})
}

// ServeHTTP answers the token; it never calls next.
func (v *TokenValue) ServeHTTP(w http.ResponseWriter, r *http.Request, _ caddyhttp.Handler) error {
	m, err := v.cred.Get(r.Context())
	if err != nil {
		return unavailable(w, err)
	}
	var tok token.Token
	switch r.Method {
	case http.MethodGet, http.MethodHead:
		tok, err = m.Token(r.Context())
	case http.MethodPost:
		var rejected string
		if rejected, err = rejectedToken(r); err != nil {
			return writeWeChatError(w, http.StatusBadRequest, "wechat_token: "+err.Error())
		}
		tok, err = m.Refresh(r.Context(), token.Rejection{Token: m.Known(rejected), Source: token.FromCaller})
		if errors.Is(err, token.ErrRefreshLimited) || errors.Is(err, token.ErrDailyRefreshLimit) {
			return writeWeChatError(w, http.StatusTooManyRequests, "wechat_token: refresh rate limit reached; retry later")
		}
	default:
		w.Header().Set("Allow", "GET, HEAD, POST")
		return writeWeChatError(w, http.StatusMethodNotAllowed, "wechat_token: "+r.Method+" not allowed; GET the token, or POST the one WeChat rejected")
	}
	if err != nil {
		if ctxErr := r.Context().Err(); ctxErr != nil {
			return ctxErr
		}
		return unavailable(w, err)
	}
	body, err := json.Marshal(struct {
		AccessToken string `json:"access_token"`
		ExpiresIn   int64  `json:"expires_in"`
	}{tok.Value, max(int64(time.Until(tok.ExpiresAt)/time.Second), 0)})
	if err != nil {
		return caddyhttp.Error(http.StatusInternalServerError, err)
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	_, err = w.Write(body)
	return err
}

// rejectedToken reads {"access_token": "..."} (or a form field of that
// name) from a POST body of at most 4 KiB.
func rejectedToken(r *http.Request) (string, error) {
	body, err := io.ReadAll(io.LimitReader(r.Body, 4<<10))
	if err != nil {
		return "", fmt.Errorf("read body: %w", err)
	}
	var req struct {
		AccessToken string `json:"access_token"`
	}
	if strings.HasPrefix(strings.TrimSpace(string(body)), "{") {
		if err := json.Unmarshal(body, &req); err != nil {
			return "", fmt.Errorf("body is not valid JSON: %w", err)
		}
	} else if r.ParseForm() == nil {
		req.AccessToken = r.PostForm.Get("access_token")
	}
	if req.AccessToken == "" {
		return "", errors.New(`POST needs the rejected token: {"access_token":"..."}`)
	}
	return req.AccessToken, nil
}

// Interface guards
var (
	_ caddy.Provisioner           = (*TokenValue)(nil)
	_ caddyhttp.MiddlewareHandler = (*TokenValue)(nil)
	_ caddyfile.Unmarshaler       = (*TokenValue)(nil)
)
