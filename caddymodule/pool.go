package caddymodule

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/certmagic"

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
// a config changing the secret gets a manager using the new one; so is the
// storage, so that a config moving to other storage coordinates through it.
func managerKey(appID string, api token.API, apiBase, secret, storage string) string {
	return "wechat_token/" + string(api) + "/" + apiBase + "/" + appID + "/" + hash(secret) + "/" + storage
}

// storageID names a storage backend without revealing its settings (a
// Redis password, say): its description, hashed.
func storageID(st certmagic.Storage) string {
	if s, ok := st.(fmt.Stringer); ok {
		return hash(fmt.Sprintf("%T %s", st, s.String()))
	}
	return hash(fmt.Sprintf("%T", st))
}

func hash(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:8])
}
