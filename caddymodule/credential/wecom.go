package credential

import (
	"context"
	"net/http"
	"net/url"
	"strings"

	"github.com/caddy-wechat/caddy-wechat/caddymodule/token"
)

// WeCom is a WeCom (企业微信) app's access token from GET
// /cgi-bin/gettoken?corpid=&corpsecret=: one token per app secret (so one
// credential per secret, not per corp), the same to every caller while it
// is valid. WeCom rejects a token with 40014 (invalid) or 42001 (expired).
var WeCom = &Kind{
	Name: "wecom", Noun: "access_token", Param: "access_token",
	RejectedBy: []int64{40014, 42001},
	PerSecret:  true, SharedAnswer: true,
	TicketPath: "/cgi-bin/get_jsapi_ticket",
	Keys:       standardKeys,
	NewFetcher: func(s Spec, d Deps) token.Fetcher {
		return &weComFetcher{base: s.APIBase, corpID: s.ID, secret: s.Secret, client: d.Client}
	},
}

type weComFetcher struct {
	base, corpID, secret string
	client               *http.Client
}

// Fetch implements token.Fetcher; force is meaningless here. The secret
// travels in the query, so errors are built never to print the URL.
func (f *weComFetcher) Fetch(ctx context.Context, _ bool) (token.Fetched, error) {
	endpoint := strings.TrimSuffix(f.base, "/") + "/cgi-bin/gettoken"
	req, err := getRequest(ctx, endpoint, url.Values{"corpid": {f.corpID}, "corpsecret": {f.secret}})
	if err != nil {
		return token.Fetched{}, err
	}
	return call(f.client, req, endpoint, "access_token", f.secret)
}
