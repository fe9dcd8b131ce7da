package credential

import (
	"context"
	"net/http"
	"net/url"
	"strings"

	"github.com/caddy-wechat/caddy-wechat/caddymodule/token"
)

// Classic is an Official Account's or Mini Program's access token from
// GET /cgi-bin/token: every call issues a new token, the previous one dying
// after a short overlap, and spends one of the app's 2000 calls a day.
var Classic = &Kind{
	Name: "classic", Noun: "access_token", Param: "access_token",
	RejectedBy:  []int64{40001, 42001},
	DailyCapped: true, SecretCalls: true,
	TicketPath: "/cgi-bin/ticket/getticket?type=jsapi",
	Keys:       standardKeys,
	NewFetcher: func(s Spec, d Deps) token.Fetcher {
		return &classicFetcher{base: s.APIBase, appID: s.ID, secret: s.Secret, client: d.Client}
	},
}

type classicFetcher struct {
	base, appID, secret string
	client              *http.Client
}

// Fetch implements token.Fetcher; force is meaningless here. The secret
// travels in the query, so errors are built never to print the URL.
func (f *classicFetcher) Fetch(ctx context.Context, _ bool) (token.Fetched, error) {
	endpoint := strings.TrimSuffix(f.base, "/") + "/cgi-bin/token"
	req, err := getRequest(ctx, endpoint, url.Values{"grant_type": {"client_credential"}, "appid": {f.appID}, "secret": {f.secret}})
	if err != nil {
		return token.Fetched{}, err
	}
	return call(f.client, req, endpoint, "access_token", f.secret)
}
