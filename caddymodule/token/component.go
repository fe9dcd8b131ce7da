package token

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"

	"github.com/tidwall/gjson"
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

// Authorizer is the access token of an account that authorized a
// platform (POST /cgi-bin/component/api_authorizer_token), fetched with
// the platform's component_access_token and the account's refresh token.
const Authorizer API = "authorizer"

// AuthorizerFetcher fetches an authorizer's access token. WeChat may hand
// out a new refresh token with it; Save keeps it for the fleet.
type AuthorizerFetcher struct {
	BaseURL         string
	ComponentAppID  string
	AuthorizerAppID string
	Component       *Manager // the platform's component_access_token
	RefreshToken    func(ctx context.Context) (string, error)
	Save            func(ctx context.Context, refreshToken string) error
	Client          *http.Client
	// RejectedBy are the errcodes meaning the component token was rejected.
	RejectedBy []int64
}

// Fetch implements Fetcher; force is meaningless here.
func (f *AuthorizerFetcher) Fetch(ctx context.Context, _ bool) (Fetched, error) {
	refresh, err := f.RefreshToken(ctx)
	if err != nil {
		return Fetched{}, fmt.Errorf("authorizer %s: %w", f.AuthorizerAppID, err)
	}
	comp, err := f.Component.Token(ctx)
	if err != nil {
		return Fetched{}, fmt.Errorf("authorizer %s needs the component_access_token: %w", f.AuthorizerAppID, err)
	}
	fetched, next, err := f.get(ctx, comp.Value, refresh)
	var apiErr *APIError
	if errors.As(err, &apiErr) && slices.Contains(f.RejectedBy, apiErr.Code) {
		fresh, refreshErr := f.Component.Refresh(ctx, Rejection{Token: comp, Source: FromProxy})
		if refreshErr != nil {
			return Fetched{}, fmt.Errorf("%w; no new component_access_token: %w", err, refreshErr)
		}
		fetched, next, err = f.get(ctx, fresh.Value, refresh)
	}
	if err == nil && next != "" && next != refresh && f.Save != nil {
		if saveErr := f.Save(ctx, next); saveErr != nil {
			return fetched, fmt.Errorf("authorizer %s: keep the new refresh token: %w", f.AuthorizerAppID, saveErr)
		}
	}
	return fetched, err
}

func (f *AuthorizerFetcher) get(ctx context.Context, componentToken, refresh string) (Fetched, string, error) {
	endpoint := strings.TrimSuffix(f.BaseURL, "/") + "/cgi-bin/component/api_authorizer_token"
	payload, err := json.Marshal(map[string]string{
		"component_appid": f.ComponentAppID, "authorizer_appid": f.AuthorizerAppID, "authorizer_refresh_token": refresh,
	})
	if err != nil {
		return Fetched{}, "", err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, endpoint+"?component_access_token="+url.QueryEscape(componentToken), bytes.NewReader(payload))
	if err != nil {
		return Fetched{}, "", fmt.Errorf("build request for %s: %w", endpoint, err)
	}
	req.Header.Set("Content-Type", "application/json")
	var next string
	fetched, err := callWith(f.Client, req, endpoint, "authorizer_access_token", componentToken, func(answer gjson.Result) {
		next = answer.Get("authorizer_refresh_token").String()
	})
	return fetched, next, err
}

// AuthorizationInfo is what api_query_auth answers of an account.
type AuthorizationInfo struct {
	AuthorizerAppID string
	RefreshToken    string
}

// QueryAuth exchanges an authorization code for the account's refresh
// token (POST /cgi-bin/component/api_query_auth). Errors never show the
// component token.
func QueryAuth(ctx context.Context, client *http.Client, baseURL, componentAppID, componentToken, code string) (AuthorizationInfo, error) {
	endpoint := strings.TrimSuffix(baseURL, "/") + "/cgi-bin/component/api_query_auth"
	payload, err := json.Marshal(map[string]string{"component_appid": componentAppID, "authorization_code": code})
	if err != nil {
		return AuthorizationInfo{}, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, endpoint+"?component_access_token="+url.QueryEscape(componentToken), bytes.NewReader(payload))
	if err != nil {
		return AuthorizationInfo{}, fmt.Errorf("build request for %s: %w", endpoint, err)
	}
	req.Header.Set("Content-Type", "application/json")
	var info AuthorizationInfo
	_, err = callWith(client, req, endpoint, "authorization_info.authorizer_access_token", componentToken, func(answer gjson.Result) {
		info.AuthorizerAppID = answer.Get("authorization_info.authorizer_appid").String()
		info.RefreshToken = answer.Get("authorization_info.authorizer_refresh_token").String()
	})
	if err == nil && (info.AuthorizerAppID == "" || info.RefreshToken == "") {
		err = fmt.Errorf("POST %s: the answer has no authorizer_appid or refresh token", endpoint)
	}
	return info, err
}
