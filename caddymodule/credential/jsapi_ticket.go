package credential

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"

	"github.com/caddy-wechat/caddy-wechat/caddymodule/token"
)

// ErrNoTicket is what asking for a jsapi_ticket fails with when none is
// held.
var ErrNoTicket = errors.New("no valid jsapi_ticket")

// JSAPITicket is the JS-SDK's jsapi_ticket, held like a token (7200 s,
// calls "very limited"): fetched with the app's access token, from the
// path the token's kind names (TicketPath).
var JSAPITicket = &Kind{
	Name: "jsapi_ticket", Noun: "jsapi_ticket",
	ErrNone: ErrNoTicket,
	Needs:   func(s Spec) Spec { s.Kind, s.TokenKind = s.TokenKind, nil; return s },
	Keys:    standardKeys,
	NewFetcher: func(s Spec, d Deps) token.Fetcher {
		path, query, _ := strings.Cut(s.TokenKind.TicketPath, "?")
		q, _ := url.ParseQuery(query)
		return &ticketFetcher{endpoint: strings.TrimSuffix(s.APIBase, "/") + path, query: q,
			tokens: d.Needed, client: d.Client, rejectedBy: s.TokenKind.RejectedBy}
	},
}

// TicketOf is the spec of the jsapi_ticket fetched with the token of
// tokenSpec.
func TicketOf(tokenSpec Spec) (Spec, error) {
	if tokenSpec.Kind.TicketPath == "" {
		return Spec{}, fmt.Errorf("a %s token has no jsapi_ticket", tokenSpec.Kind.Name)
	}
	s := tokenSpec
	s.Kind, s.TokenKind = JSAPITicket, tokenSpec.Kind
	return s, nil
}

// ticketFetcher fetches the jsapi_ticket with the app's access token.
// When WeChat answers that the token was rejected (rejectedBy), the token
// is refreshed through tokens (the same single flight and budgets as a
// proxied request's) and the ticket fetched once more.
type ticketFetcher struct {
	endpoint   string
	query      url.Values // beside the token
	tokens     Refresher
	client     *http.Client
	rejectedBy []int64
}

// Fetch implements token.Fetcher; force is meaningless for tickets.
func (f *ticketFetcher) Fetch(ctx context.Context, _ bool) (token.Fetched, error) {
	tok, err := f.tokens.Token(ctx)
	if err != nil {
		return token.Fetched{}, fmt.Errorf("jsapi_ticket needs the access_token: %w", err)
	}
	fetched, err := f.get(ctx, tok.Value)
	var apiErr *token.APIError
	if !errors.As(err, &apiErr) || !slices.Contains(f.rejectedBy, apiErr.Code) {
		return fetched, err
	}
	fresh, refreshErr := f.tokens.Refresh(ctx, token.Rejection{Token: tok, Source: token.FromProxy})
	if refreshErr != nil {
		return token.Fetched{}, fmt.Errorf("%w; no new access_token to fetch the ticket with: %w", err, refreshErr)
	}
	return f.get(ctx, fresh.Value)
}

// get calls the ticket endpoint with accessToken; errors never contain it.
func (f *ticketFetcher) get(ctx context.Context, accessToken string) (token.Fetched, error) {
	q := url.Values{"access_token": {accessToken}}
	for k, v := range f.query {
		q[k] = v
	}
	req, err := getRequest(ctx, f.endpoint, q)
	if err != nil {
		return token.Fetched{}, err
	}
	return call(f.client, req, f.endpoint, "ticket", accessToken)
}
