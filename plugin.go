// Package caddywechat plugs the wechat_token handler into Caddy builds:
//
//	xcaddy build --with github.com/caddy-wechat/caddy-wechat
//
// The module itself lives in package caddymodule.
package caddywechat

import _ "github.com/caddy-wechat/caddy-wechat/caddymodule" // registers http.handlers.wechat_token
