package token

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
)

// Component is a third-party platform's component_access_token (POST
// /cgi-bin/component/api_component_token), fetched with the platform's
// secret and the latest component_verify_ticket WeChat pushed.
const Component API = "component"

// ComponentFetcher fetches a platform's component_access_token. Ticket
// returns the latest component_verify_ticket, which WeChat pushes to the
// platform every 10 minutes and the fleet keeps in its storage.
type ComponentFetcher struct {
	BaseURL   string
	AppID     string // component_appid
	AppSecret string // component_appsecret
	Ticket    func(ctx context.Context) (string, error)
	Client    *http.Client
}

// Fetch implements Fetcher; force is meaningless here.
func (f *ComponentFetcher) Fetch(ctx context.Context, _ bool) (Fetched, error) {
	ticket, err := f.Ticket(ctx)
	if err != nil {
		return Fetched{}, fmt.Errorf("component_access_token needs a component_verify_ticket: %w", err)
	}
	endpoint := strings.TrimSuffix(f.BaseURL, "/") + "/cgi-bin/component/api_component_token"
	payload, err := json.Marshal(map[string]string{
		"component_appid": f.AppID, "component_appsecret": f.AppSecret, "component_verify_ticket": ticket,
	})
	if err != nil {
		return Fetched{}, fmt.Errorf("encode api_component_token request: %w", err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, endpoint, bytes.NewReader(payload))
	if err != nil {
		return Fetched{}, fmt.Errorf("build request for %s: %w", endpoint, err)
	}
	req.Header.Set("Content-Type", "application/json")
	return call(f.Client, req, endpoint, "component_access_token", f.AppSecret)
}
