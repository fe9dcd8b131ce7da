// Command caddy is Caddy with its standard modules and wechat_token.
package main

import (
	caddycmd "github.com/caddyserver/caddy/v2/cmd"

	// The standard modules, as in the official Caddy build.
	_ "github.com/caddyserver/caddy/v2/modules/standard"

	_ "github.com/caddy-wechat/caddy-wechat"
)

func main() {
	caddycmd.Main()
}
