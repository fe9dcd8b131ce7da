package caddymodule

import (
	"context"
	"errors"
	"net/http"
	"strings"

	"github.com/caddy-wechat/caddy-wechat/caddymodule/credential"
	"github.com/caddy-wechat/caddy-wechat/caddymodule/token"
)

// Credential is what the proxy needs of a credential: its value, a
// refresh when WeChat rejects it, and a count of the retries it caused.
// A *token.Manager is one.
type Credential interface {
	credential.Refresher
	NoteRetry(outcome string)
}

// A credentialSource is where a handler gets the credential of a request:
// one fixed credential, or one per account that authorized a platform.
type credentialSource interface {
	// locate finds what in r names the credential (an account) and takes
	// it off r's path; an error is answered 404.
	locate(r *http.Request) (string, error)
	// get returns the credential located, waiting for the config to
	// start; credential.ErrUnknownAuthorizer is answered 404.
	get(ctx context.Context, name string) (Credential, error)
}

// fixedSource is one credential for every request.
type fixedSource struct{ ref *credential.Ref }

func (fixedSource) locate(*http.Request) (string, error) { return "", nil }

func (s fixedSource) get(ctx context.Context, _ string) (Credential, error) {
	m, err := s.ref.Get(ctx)
	if err != nil {
		return nil, err
	}
	return m, nil
}

// accountSource is the token of the account named by the first path
// segment, /<authorizer_appid>/<API path>.
type accountSource struct{ platform *credential.Platform }

var errNoAccountInPath = errors.New("wechat_token: the path must start with the authorizer's appid: /<authorizer_appid>/<API path>")

func (accountSource) locate(r *http.Request) (string, error) {
	appID, rest, found := strings.Cut(strings.TrimPrefix(r.URL.Path, "/"), "/")
	if !found || !credential.ValidAppID(appID) {
		return "", errNoAccountInPath
	}
	r.URL.Path, r.URL.RawPath = "/"+rest, ""
	return appID, nil
}

func (s accountSource) get(ctx context.Context, appID string) (Credential, error) {
	m, err := s.platform.Account(ctx, appID)
	if err != nil {
		return nil, err
	}
	return m, nil
}

var _ Credential = (*token.Manager)(nil)
