// Command caddy is Caddy with its standard modules, wechat_token, and the
// Redis storage module with which a fleet of instances shares its token.
package main

import (
	caddycmd "github.com/caddyserver/caddy/v2/cmd"

	// The standard modules, as in the official Caddy build.
	_ "github.com/caddyserver/caddy/v2/modules/standard"

	// storage redis { ... }: one token for instances on several hosts.
	_ "github.com/pberkel/caddy-storage-redis"

	_ "github.com/caddy-wechat/caddy-wechat"
)

func main() {
	caddycmd.Main()
}
