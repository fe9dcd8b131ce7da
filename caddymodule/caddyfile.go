package caddymodule

import (
	"strconv"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/dustin/go-humanize"
)

func init() {
	httpcaddyfile.RegisterHandlerDirective("wechat_token", parseCaddyfile)
	// The token must be in place before reverse_proxy sends the request.
	httpcaddyfile.RegisterDirectiveOrder("wechat_token", httpcaddyfile.Before, "reverse_proxy")
}

func parseCaddyfile(h httpcaddyfile.Helper) (caddyhttp.MiddlewareHandler, error) {
	var handler Handler
	err := handler.UnmarshalCaddyfile(h.Dispenser)
	return &handler, err
}

// UnmarshalCaddyfile sets up the handler from Caddyfile tokens:
//
//	wechat_token {
//		app_id               <appid>      (or, for WeCom:
//		app_secret           <secret>      corp_id, corp_secret)
//		token_api            stable|classic
//		api_base             <url>
//		refresh_ahead        <duration>
//		retry_on             <errcode...>
//		max_replay_body      <size>
//		fetch_timeout        <duration>
//		min_refresh_interval <duration>
//		min_token_lifetime   <duration>
//		daily_refresh_limit  <count>|off
//		passthrough          <path_prefix...>
//		app_secret_calls     inject|passthrough
//		component            <name>        (a platform of the wechat app
//		authorizer           path           instead of an app)
//	}
func (h *Handler) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	return h.unmarshalBlock(d, nil)
}

// unmarshalBlock reads the app options of a wechat_token-like directive;
// extra, if set, reads the directive's own options first, reporting
// whether option was one.
func (h *Handler) unmarshalBlock(d *caddyfile.Dispenser, extra func(d *caddyfile.Dispenser, option string) (bool, error)) error {
	d.Next() // the directive name
	directive := d.Val()
	if d.NextArg() {
		return d.Errf("%s takes no arguments on its line; configure it in a block", directive)
	}
	values := map[string]*string{
		"app_id": &h.AppID, "app_secret": &h.AppSecret, "token_api": &h.TokenAPI, "api_base": &h.APIBase,
		"app_secret_calls": &h.AppSecretCalls, "corp_id": &h.CorpID, "corp_secret": &h.CorpSecret,
		"component": &h.Component, "authorizer": &h.Authorizer,
	}
	durations := map[string]*caddy.Duration{
		"refresh_ahead": &h.RefreshAhead, "fetch_timeout": &h.FetchTimeout, "min_refresh_interval": &h.MinRefreshInterval,
		"min_token_lifetime": &h.MinTokenLifetime,
	}
	seen := map[string]bool{}
	for d.NextBlock(0) {
		option := d.Val()
		if seen[option] {
			return d.Errf("%s: given more than once", option)
		}
		seen[option] = true
		if extra != nil {
			if handled, err := extra(d, option); handled || err != nil {
				if err != nil {
					return err
				}
				continue
			}
		}
		if dst, ok := values[option]; ok {
			if err := singleArg(d, dst); err != nil {
				return err
			}
			continue
		}
		if dst, ok := durations[option]; ok {
			if err := durationArg(d, dst); err != nil {
				return err
			}
			continue
		}
		switch option {
		case "retry_on":
			args := d.RemainingArgs()
			if len(args) == 0 {
				return d.Errf("retry_on: at least one errcode is required")
			}
			for _, arg := range args {
				code, err := strconv.ParseInt(arg, 10, 64)
				if err != nil {
					return d.Errf("retry_on: %q is not a numeric errcode", arg)
				}
				h.RetryOn = append(h.RetryOn, code)
			}
		case "passthrough":
			h.Passthrough = d.RemainingArgs()
			if len(h.Passthrough) == 0 {
				return d.Errf("passthrough: at least one path prefix is required (like /sns/)")
			}
		case "daily_refresh_limit":
			var limit string
			if err := singleArg(d, &limit); err != nil {
				return err
			}
			if limit == "off" {
				h.DailyRefreshLimit = -1
				continue
			}
			n, err := strconv.Atoi(limit)
			if err != nil || n < 1 {
				return d.Errf("daily_refresh_limit: %q is not a positive number of refreshes (or off)", limit)
			}
			h.DailyRefreshLimit = n
		case "max_replay_body":
			var size string
			if err := singleArg(d, &size); err != nil {
				return err
			}
			n, err := humanize.ParseBytes(size)
			if err != nil || n > 1<<40 {
				return d.Errf("max_replay_body: %q is not a size (like 16MiB)", size)
			}
			h.MaxReplayBody = int64(n)
		default:
			return d.Errf("unrecognized %s option %q", directive, option)
		}
	}
	return nil
}

func singleArg(d *caddyfile.Dispenser, dst *string) error {
	option := d.Val()
	if !d.NextArg() {
		return d.Errf("%s: a value is required", option)
	}
	*dst = d.Val()
	if d.NextArg() {
		return d.Errf("%s: takes one value, got more", option)
	}
	return nil
}

func durationArg(d *caddyfile.Dispenser, dst *caddy.Duration) error {
	option := d.Val()
	var s string
	if err := singleArg(d, &s); err != nil {
		return err
	}
	v, err := caddy.ParseDuration(s)
	if err != nil {
		return d.Errf("%s: %q is not a duration (like 5m or 30s)", option, s)
	}
	if v < 0 {
		return d.Errf("%s: must not be negative (got %s)", option, s)
	}
	*dst = caddy.Duration(v)
	return nil
}

// Interface guard
var _ caddyfile.Unmarshaler = (*Handler)(nil)
