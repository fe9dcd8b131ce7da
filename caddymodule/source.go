package caddymodule

import (
	"context"
	"errors"
	"net/http"
	"net/url"
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

// locate cuts the account's segment from the path as it arrived (escaped),
// so that the rest goes on byte for byte: /wxA/x/a%2Fb goes on as
// /x/a%2Fb, not /x/a/b.
func (accountSource) locate(r *http.Request) (string, error) {
	appID, _, err := cutAccount(r)
	return appID, err
}

// cutAccount takes the first segment of r's escaped path, an appid, off
// the path, leaving the rest as it arrived.
func cutAccount(r *http.Request) (appID, path string, err error) {
	appID, escaped, found := strings.Cut(strings.TrimPrefix(r.URL.EscapedPath(), "/"), "/")
	if !found || !credential.ValidAppID(appID) {
		return "", "", errNoAccountInPath
	}
	escaped = "/" + escaped
	decoded, err := url.PathUnescape(escaped)
	if err != nil {
		return "", "", errNoAccountInPath
	}
	r.URL.Path, r.URL.RawPath = decoded, escaped
	return appID, decoded, nil
}

func (s accountSource) get(ctx context.Context, appID string) (Credential, error) {
	m, err := s.platform.Account(ctx, appID)
	if err != nil {
		return nil, err
	}
	return m, nil
}

var _ Credential = (*token.Manager)(nil)
