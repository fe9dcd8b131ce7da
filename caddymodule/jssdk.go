package caddymodule

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/caddy-wechat/caddy-wechat/caddymodule/credential"
	"github.com/caddy-wechat/caddy-wechat/caddymodule/jssdk"
)

func init() {
	caddy.RegisterModule(JSSDK{})
	httpcaddyfile.RegisterHandlerDirective("wechat_jssdk", parseJSSDK)
	httpcaddyfile.RegisterDirectiveOrder("wechat_jssdk", httpcaddyfile.Before, "respond")
}

// JSSDK signs wx.config for web pages: GET ?url=<the page URL> answers
// {"appId","timestamp","nonceStr","signature"}, made with the app's
// jsapi_ticket, which the wechat app holds like the access token (fetched
// once for the fleet, renewed before it expires, kept in storage) and
// which never leaves the proxy.
//
// Its app options are wechat_token's; a wechat_token for the same app
// shares its access token.
type JSSDK struct {
	CredentialOptions

	// Hosts whose pages may be signed: exact names (example.com) or
	// wildcards for subdomains (*.example.com, which does not match
	// example.com itself). Others get 403. Without it any http(s) page is
	// signed, which lets any site that can reach this endpoint configure
	// the JS-SDK as your Official Account (its JS-SDK domain setting still
	// applies at WeChat's end).
	AllowedHosts []string `json:"allowed_hosts,omitempty"`

	ticket *credential.Ref
	appID  string
}

// CaddyModule returns the Caddy module information.
func (JSSDK) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.wechat_jssdk",
		New: func() caddy.Module { return new(JSSDK) },
	}
}

// Provision validates the configuration and declares the app's access
// token and jsapi_ticket to the wechat app.
func (j *JSSDK) Provision(ctx caddy.Context) error {
	const directive = "wechat_jssdk"
	app, err := wechatApp(ctx, directive)
	if err != nil {
		return err
	}
	if j.Component != "" || j.Authorizer != "" {
		return fmt.Errorf("%s: component and authorizer do not apply: it signs for an app (app_id or corp_id)", directive)
	}
	spec, err := j.spec()
	if err != nil {
		return j.errorf(directive, err)
	}
	j.appID = spec.ID
	for _, p := range j.AllowedHosts {
		if err := jssdk.CheckHostPattern(p); err != nil {
			return j.errorf(directive, fmt.Errorf("allowed_hosts: %w", err))
		}
	}
	ticket, err := credential.TicketOf(spec)
	if err != nil {
		return j.errorf(directive, err)
	}
	if j.ticket, err = app.creds.Declare(ticket, directive); err != nil {
		return err
	}
	return registerMetrics(ctx.GetMetricsRegistry())
}

func parseJSSDK(h httpcaddyfile.Helper) (caddyhttp.MiddlewareHandler, error) {
	var j JSSDK
	err := j.UnmarshalCaddyfile(h.Dispenser)
	return &j, err
}

// UnmarshalCaddyfile reads wechat_token's app options and allowed_hosts:
//
//	wechat_jssdk {
//		app_id        <appid>
//		app_secret    <secret>
//		allowed_hosts <host...>
//		...           (wechat_token's timing options)
//	}
func (j *JSSDK) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	return j.unmarshalBlock(d, func(d *caddyfile.Dispenser, option string) (bool, error) {
		switch option {
		case "allowed_hosts":
			j.AllowedHosts = d.RemainingArgs()
			if len(j.AllowedHosts) == 0 {
				return true, d.Errf("allowed_hosts: at least one host is required (like example.com or *.example.com)")
			}
			return true, nil
		}
		return notProxied(d, "wechat_jssdk", option)
	})
}

// signature is the answer, ready for wx.config.
type signature struct {
	AppID     string `json:"appId"`
	Timestamp int64  `json:"timestamp"`
	NonceStr  string `json:"nonceStr"`
	Signature string `json:"signature"`
}

// ServeHTTP answers the signature for the page URL in ?url=; it never
// calls next.
func (j *JSSDK) ServeHTTP(w http.ResponseWriter, r *http.Request, _ caddyhttp.Handler) error {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		return writeWeChatError(w, http.StatusMethodNotAllowed, "wechat_token: "+r.Method+" not allowed; GET ?url=<the page URL>")
	}
	pageURL, host, err := jssdk.PageURL(r.URL.Query().Get("url"))
	if err != nil {
		return writeWeChatError(w, http.StatusBadRequest, "wechat_token: "+err.Error())
	}
	if !jssdk.HostAllowed(host, j.AllowedHosts) {
		return writeWeChatError(w, http.StatusForbidden, "wechat_token: pages on "+host+" are not signed here (allowed_hosts)")
	}
	m, err := j.ticket.Get(r.Context())
	if err == nil {
		ticket, tokErr := m.Token(r.Context())
		if tokErr == nil {
			return writeSignature(w, j.appID, ticket.Value, pageURL)
		}
		err = tokErr
	}
	if ctxErr := r.Context().Err(); ctxErr != nil {
		return ctxErr
	}
	return writeWeChatError(w, http.StatusServiceUnavailable, "wechat_token: "+err.Error())
}

// writeSignature answers a fresh signature of pageURL.
func writeSignature(w http.ResponseWriter, appID, ticket, pageURL string) error {
	s := signature{AppID: appID, Timestamp: time.Now().Unix(), NonceStr: jssdk.Nonce()}
	s.Signature = jssdk.Sign(ticket, s.NonceStr, s.Timestamp, pageURL)
	body, err := json.Marshal(s)
	if err != nil {
		return caddyhttp.Error(http.StatusInternalServerError, errors.New("encode the signature"))
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	_, err = w.Write(body)
	return err
}

// Interface guards
var (
	_ caddy.Provisioner           = (*JSSDK)(nil)
	_ caddyhttp.MiddlewareHandler = (*JSSDK)(nil)
	_ caddyfile.Unmarshaler       = (*JSSDK)(nil)
)
