package credential

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/caddy-wechat/caddy-wechat/caddymodule/token"
)

// Component is a third-party platform's component_access_token (POST
// /cgi-bin/component/api_component_token), fetched with the platform's
// secret and the latest component_verify_ticket WeChat pushed, which the
// fleet keeps in its storage.
var Component = &Kind{
	Name: "component", Noun: "component_access_token", Param: "component_access_token",
	RejectedBy: []int64{40001, 42001},
	Keys:       standardKeys,
	NewFetcher: func(s Spec, d Deps) token.Fetcher {
		return &componentFetcher{base: s.APIBase, appID: s.ID, secret: s.Secret, store: d.Store, client: d.Client}
	},
}

type componentFetcher struct {
	base, appID, secret string
	store               token.Store
	client              *http.Client
}

// Fetch implements token.Fetcher; force is meaningless here.
func (f *componentFetcher) Fetch(ctx context.Context, _ bool) (token.Fetched, error) {
	ticket, err := loadVerifyTicket(ctx, f.store, f.appID)
	if err != nil {
		return token.Fetched{}, fmt.Errorf("component_access_token needs a component_verify_ticket: %w", err)
	}
	endpoint := strings.TrimSuffix(f.base, "/") + "/cgi-bin/component/api_component_token"
	req, err := postJSON(ctx, endpoint, nil, map[string]string{
		"component_appid": f.appID, "component_appsecret": f.secret, "component_verify_ticket": ticket.Ticket,
	})
	if err != nil {
		return token.Fetched{}, err
	}
	return call(f.client, req, endpoint, "component_access_token", f.secret)
}

// VerifyTicket is the latest component_verify_ticket, as the fleet keeps it.
type VerifyTicket struct {
	Ticket     string    `json:"component_verify_ticket"`
	CreateTime int64     `json:"create_time"`
	ReceivedAt time.Time `json:"received_at"`
}

// loadVerifyTicket reads the platform's latest ticket.
func loadVerifyTicket(ctx context.Context, store token.Store, componentAppID string) (VerifyTicket, error) {
	var t VerifyTicket
	if store == nil {
		return t, errors.New("no storage to keep the component_verify_ticket in")
	}
	data, err := store.Load(ctx, verifyTicketKey(componentAppID))
	if err != nil {
		return t, fmt.Errorf("no component_verify_ticket received yet (WeChat pushes one every 10 minutes to the event URL): %w", err)
	}
	if err := json.Unmarshal(data, &t); err != nil || t.Ticket == "" {
		return t, errors.New("the stored component_verify_ticket is unreadable")
	}
	return t, nil
}

// withComponentToken calls call with the platform's component_access_token
// and, if WeChat rejects it, once more with a fresh one (the same single
// flight and budgets as a proxied request's).
func withComponentToken(ctx context.Context, comp Refresher, call func(componentToken string) error) error {
	tok, err := comp.Token(ctx)
	if err != nil {
		return err
	}
	err = call(tok.Value)
	var apiErr *token.APIError
	if !errors.As(err, &apiErr) || !slices.Contains(Component.RejectedBy, apiErr.Code) {
		return err
	}
	fresh, refreshErr := comp.Refresh(ctx, token.Rejection{Token: tok, Source: token.FromProxy})
	if refreshErr != nil {
		return fmt.Errorf("%w; no new component_access_token: %w", err, refreshErr)
	}
	return call(fresh.Value)
}
