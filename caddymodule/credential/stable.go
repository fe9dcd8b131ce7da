package credential

import (
	"context"
	"net/http"
	"strings"

	"github.com/caddy-wechat/caddy-wechat/caddymodule/token"
)

// Stable is an Official Account's or Mini Program's access token from
// POST /cgi-bin/stable_token: every caller gets the same token until its
// last minutes, and it is isolated from /cgi-bin/token, so other systems
// fetching tokens cannot knock it out. It can be forced (force_refresh).
var Stable = &Kind{
	Name: "stable", Noun: "access_token", Param: "access_token",
	RejectedBy:   []int64{40001, 42001},
	ForceRefresh: true, SharedAnswer: true, SecretCalls: true,
	TicketPath: "/cgi-bin/ticket/getticket?type=jsapi",
	Keys:       standardKeys,
	NewFetcher: func(s Spec, d Deps) token.Fetcher {
		return &stableFetcher{base: s.APIBase, appID: s.ID, secret: s.Secret, client: d.Client}
	},
}

type stableFetcher struct {
	base, appID, secret string
	client              *http.Client
}

// Fetch implements token.Fetcher. The secret travels in the body, and
// errors never show it.
func (f *stableFetcher) Fetch(ctx context.Context, force bool) (token.Fetched, error) {
	endpoint := strings.TrimSuffix(f.base, "/") + "/cgi-bin/stable_token"
	req, err := postJSON(ctx, endpoint, nil, struct {
		GrantType    string `json:"grant_type"`
		AppID        string `json:"appid"`
		Secret       string `json:"secret"`
		ForceRefresh bool   `json:"force_refresh"`
	}{"client_credential", f.appID, f.secret, force})
	if err != nil {
		return token.Fetched{}, err
	}
	return call(f.client, req, endpoint, "access_token", f.secret)
}
