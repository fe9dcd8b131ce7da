package caddymodule

import (
	"math"
	"slices"
	"strconv"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
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
//		fetch_timeout        <duration>
//		min_refresh_interval <duration>
//		min_token_lifetime   <duration>
//		daily_refresh_limit  <count>|off
//		component            <name>        (a platform of the wechat app
//		authorizer           path           instead of an app)
//		retry_on             <errcode...>
//		max_replay_body      <size>
//		passthrough          <path_prefix...>
//		app_secret_calls     inject|passthrough
//	}
func (h *Handler) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	return h.unmarshalBlock(d, h.unmarshalProxyOption)
}

// unmarshalProxyOption reads the options of the proxying itself.
func (h *Handler) unmarshalProxyOption(d *caddyfile.Dispenser, option string) (bool, error) {
	switch option {
	case "retry_on":
		args := d.RemainingArgs()
		if len(args) == 0 {
			return true, d.Errf("retry_on: at least one errcode is required")
		}
		for _, arg := range args {
			code, err := strconv.ParseInt(arg, 10, 64)
			if err != nil {
				return true, d.Errf("retry_on: %q is not a numeric errcode", arg)
			}
			h.RetryOn = append(h.RetryOn, code)
		}
	case "passthrough":
		h.Passthrough = d.RemainingArgs()
		if len(h.Passthrough) == 0 {
			return true, d.Errf("passthrough: at least one path prefix is required (like /sns/)")
		}
	case "app_secret_calls":
		return true, singleArg(d, &h.AppSecretCalls)
	case "max_replay_body":
		var size string
		if err := singleArg(d, &size); err != nil {
			return true, err
		}
		n, err := humanize.ParseBytes(size)
		if err != nil || n > 1<<40 {
			return true, d.Errf("max_replay_body: %q is not a size (like 16MiB)", size)
		}
		h.MaxReplayBody = int64(n)
	default:
		return false, nil
	}
	return true, nil
}

// proxyOptions are the options of wechat_token alone: handlers that
// proxy nothing say so rather than ignore them.
var proxyOptions = []string{"retry_on", "max_replay_body", "passthrough", "app_secret_calls"}

// notProxied refuses option, one of proxyOptions, for directive.
func notProxied(d *caddyfile.Dispenser, directive, option string) (bool, error) {
	if slices.Contains(proxyOptions, option) {
		return true, d.Errf("%s does not apply to %s, which proxies nothing", option, directive)
	}
	return false, nil
}

// unmarshalBlock reads the credential options of a wechat_* directive;
// extra, if set, reads the directive's own options first, reporting
// whether option was one.
func (o *CredentialOptions) unmarshalBlock(d *caddyfile.Dispenser, extra func(d *caddyfile.Dispenser, option string) (bool, error)) error {
	d.Next() // the directive name
	directive := d.Val()
	if d.NextArg() {
		return d.Errf("%s takes no arguments on its line; configure it in a block", directive)
	}
	values := map[string]*string{
		"app_id": &o.AppID, "app_secret": &o.AppSecret, "token_api": &o.TokenAPI, "api_base": &o.APIBase,
		"corp_id": &o.CorpID, "corp_secret": &o.CorpSecret, "component": &o.Component, "authorizer": &o.Authorizer,
	}
	durations := map[string]*caddy.Duration{
		"refresh_ahead": &o.RefreshAhead, "fetch_timeout": &o.FetchTimeout, "min_refresh_interval": &o.MinRefreshInterval,
		"min_token_lifetime": &o.MinTokenLifetime,
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
		if option != "daily_refresh_limit" {
			return d.Errf("unrecognized %s option %q", directive, option)
		}
		var limit string
		if err := singleArg(d, &limit); err != nil {
			return err
		}
		if limit == "off" {
			o.DailyRefreshLimit = -1
			continue
		}
		n, err := strconv.Atoi(limit)
		if err != nil || n < 1 {
			return d.Errf("daily_refresh_limit: %q is not a positive number of refreshes (or off)", limit)
		}
		o.DailyRefreshLimit = n
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

// parseGlobalOption reads the wechat global option:
//
//	wechat {
//		replay_budget   <size>
//		replay_memory   <size>
//		replay_temp_dir <dir>
//		component <name> {
//			component_appid     <appid>
//			component_appsecret <secret>
//			token               <message token>
//			encoding_aes_key    <43 characters>
//			api_base            <url>
//		}
//	}
func parseGlobalOption(d *caddyfile.Dispenser, _ any) (any, error) {
	var app App
	d.Next() // the option name
	if d.NextArg() {
		return nil, d.ArgErr()
	}
	seen := map[string]bool{}
	for d.NextBlock(0) {
		option := d.Val()
		if option == "component" {
			name, c, err := parseComponent(d)
			if err != nil {
				return nil, err
			}
			if app.Components == nil {
				app.Components = map[string]*ComponentConfig{}
			}
			if app.Components[name] != nil {
				return nil, d.Errf("wechat: component %s: given more than once", name)
			}
			app.Components[name] = c
			continue
		}
		if seen[option] {
			return nil, d.Errf("wechat: %s: given more than once", option)
		}
		seen[option] = true
		var arg string
		if !d.Args(&arg) || d.NextArg() {
			return nil, d.Errf("wechat: %s takes one value", option)
		}
		switch option {
		case "replay_budget", "replay_memory":
			n, err := humanize.ParseBytes(arg)
			if err != nil || n > math.MaxInt64 {
				return nil, d.Errf("wechat: %s: %q is not a size (like 512MiB)", option, arg)
			}
			if option == "replay_budget" {
				app.ReplayBudget = int64(n)
			} else {
				app.ReplayMemory = int64(n)
			}
		case "replay_temp_dir":
			app.ReplayTempDir = arg
		default:
			return nil, d.Errf("unrecognized wechat option %q", option)
		}
	}
	return httpcaddyfile.App{Name: "wechat", Value: caddyconfig.JSON(app, nil)}, nil
}

// parseComponent reads a component block of the wechat global option.
func parseComponent(d *caddyfile.Dispenser) (string, *ComponentConfig, error) {
	var name string
	if !d.Args(&name) || d.NextArg() {
		return "", nil, d.Errf("wechat: component takes one name, then a block")
	}
	c := &ComponentConfig{}
	fields := map[string]*string{
		"component_appid": &c.ComponentAppID, "component_appsecret": &c.ComponentAppSecret,
		"token": &c.Token, "encoding_aes_key": &c.EncodingAESKey, "api_base": &c.APIBase,
	}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		dst, ok := fields[d.Val()]
		if !ok {
			return "", nil, d.Errf("wechat: component %s: unrecognized option %q", name, d.Val())
		}
		if err := singleArg(d, dst); err != nil {
			return "", nil, err
		}
	}
	return name, c, nil
}

// Interface guard
var _ caddyfile.Unmarshaler = (*Handler)(nil)
