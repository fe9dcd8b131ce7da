package token

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
)

// TicketFetcher fetches the JS-SDK's jsapi_ticket with the app's access
// token, which Tokens holds: a Fetcher for a Manager of API JSAPITicket.
// When WeChat answers that the access token was rejected (RejectedBy), the
// token is refreshed through Tokens (the same single flight and budgets
// as a proxied request's) and the ticket fetched once more.
type TicketFetcher struct {
	BaseURL string
	Tokens  *Manager
	Client  *http.Client
	// RejectedBy are the errcodes meaning the access token was rejected.
	RejectedBy []int64
	// WeCom fetches the corp's ticket with GET /cgi-bin/get_jsapi_ticket.
	WeCom bool
}

// Fetch implements Fetcher; force is meaningless for tickets.
func (f *TicketFetcher) Fetch(ctx context.Context, _ bool) (Fetched, error) {
	tok, err := f.Tokens.Token(ctx)
	if err != nil {
		return Fetched{}, fmt.Errorf("jsapi_ticket needs the access_token: %w", err)
	}
	fetched, err := f.get(ctx, tok.Value)
	var apiErr *APIError
	if !errors.As(err, &apiErr) || !slices.Contains(f.RejectedBy, apiErr.Code) {
		return fetched, err
	}
	fresh, refreshErr := f.Tokens.Refresh(ctx, Rejection{Token: tok, Source: FromProxy})
	if refreshErr != nil {
		return Fetched{}, fmt.Errorf("%w; no new access_token to fetch the ticket with: %w", err, refreshErr)
	}
	return f.get(ctx, fresh.Value)
}

// get calls getticket with accessToken; errors never contain it.
func (f *TicketFetcher) get(ctx context.Context, accessToken string) (Fetched, error) {
	endpoint := strings.TrimSuffix(f.BaseURL, "/") + "/cgi-bin/ticket/getticket"
	q := url.Values{"access_token": {accessToken}, "type": {"jsapi"}}
	if f.WeCom {
		endpoint = strings.TrimSuffix(f.BaseURL, "/") + "/cgi-bin/get_jsapi_ticket"
		q = url.Values{"access_token": {accessToken}}
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, endpoint+"?"+q.Encode(), nil)
	if err != nil {
		return Fetched{}, fmt.Errorf("build request for %s: %w", endpoint, err)
	}
	return call(f.Client, req, endpoint, "ticket", accessToken)
}
