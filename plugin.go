// Package caddywechat plugs caddy-wechat into Caddy builds:
//
//	xcaddy build --with github.com/caddy-wechat/caddy-wechat
//
// registers the wechat app and the wechat_token, wechat_token_value,
// wechat_jssdk and wechat_component_events handlers (package caddymodule).
package caddywechat

import _ "github.com/caddy-wechat/caddy-wechat/caddymodule" // registers the modules
