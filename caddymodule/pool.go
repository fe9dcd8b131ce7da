package caddymodule

import (
	"crypto/sha256"
	"encoding/hex"

	"github.com/caddyserver/caddy/v2"

	"github.com/caddy-wechat/caddy-wechat/caddymodule/token"
)

// managers holds one token manager per app, token API, token endpoint and
// secret, shared by every handler that names them and kept across config
// reloads: a reload provisions the new config before cleaning up the old,
// so the count never drops to zero and the renewal loop and token live on.
// When the last config using a manager is unloaded, it is stopped.
var managers = caddy.NewUsagePool()

// pooledManager lets the pool stop a manager.
type pooledManager struct{ *token.Manager }

// Destruct implements caddy.Destructor.
func (p pooledManager) Destruct() error {
	p.Stop()
	return nil
}

// managerKey identifies a manager. The secret is part of it, hashed, so that
// a config changing the secret gets a manager using the new one.
func managerKey(appID string, api token.API, apiBase, secret string) string {
	sum := sha256.Sum256([]byte(secret))
	return "wechat_token/" + string(api) + "/" + apiBase + "/" + appID + "/" + hex.EncodeToString(sum[:8])
}
