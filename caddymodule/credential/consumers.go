package credential

import (
	"context"

	"github.com/caddy-wechat/caddy-wechat/caddymodule/token"
)

// TokenSource is the smallest view of a credential: its current value
// (golang.org/x/oauth2's TokenSource, for WeChat's credentials). A
// *token.Manager is one.
type TokenSource interface {
	Token(ctx context.Context) (token.Token, error)
}

// Refresher is a TokenSource that can be told WeChat rejected a value,
// and then replaces it (once for every caller that met the rejection).
type Refresher interface {
	TokenSource
	Refresh(ctx context.Context, r token.Rejection) (token.Token, error)
}

var _ Refresher = (*token.Manager)(nil)
