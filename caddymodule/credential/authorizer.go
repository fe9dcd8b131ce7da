package credential

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"

	"github.com/tidwall/gjson"

	"github.com/caddy-wechat/caddy-wechat/caddymodule/token"
)

// Authorizer is the access token of an account that authorized a
// platform (POST /cgi-bin/component/api_authorizer_token), fetched with
// the platform's component_access_token (Deps.Needed) and the account's
// refresh token, which its authorization record in the storage holds
// (Deps.accounts: the platform's accounts).
// Its keys are the platform's: one account authorized to two platforms
// has two tokens.
var Authorizer = &Kind{
	Name: "authorizer", Noun: "access_token", Param: "access_token",
	RejectedBy: []int64{40001, 42001},
	Keys:       accountKeys,
	NewFetcher: func(s Spec, d Deps) token.Fetcher {
		return &AuthorizerFetcher{BaseURL: s.APIBase, ComponentAppID: s.Platform, AuthorizerAppID: s.ID,
			Component: d.Needed, Client: d.Client,
			RefreshToken: func(ctx context.Context) (string, error) { return d.accounts.refreshToken(ctx, s.ID) },
			Save:         func(refresh string) { d.accounts.keepRefreshToken(s.ID, refresh) },
			Recover:      d.accounts.recover,
		}
	},
}

// AuthorizerFetcher fetches an authorizer's access token. WeChat may hand
// out a new refresh token with it; Save keeps it for the fleet (never
// losing it: held in memory while the storage fails). A refresh token
// WeChat refuses (61023) makes it Recover the platform's authorizations
// from WeChat's list and try once more.
type AuthorizerFetcher struct {
	BaseURL         string
	ComponentAppID  string
	AuthorizerAppID string
	Component       Refresher // the platform's component_access_token
	RefreshToken    func(ctx context.Context) (string, error)
	Save            func(refreshToken string)
	Recover         func(ctx context.Context) error
	Client          *http.Client
}

// errRefreshTokenRefused is WeChat's "refresh_token is invalid".
const errRefreshTokenRefused = 61023

// Fetch implements Fetcher; force is meaningless here.
func (f *AuthorizerFetcher) Fetch(ctx context.Context, _ bool) (token.Fetched, error) {
	refresh, err := f.RefreshToken(ctx)
	if err != nil {
		return token.Fetched{}, fmt.Errorf("authorizer %s: %w", f.AuthorizerAppID, err)
	}
	var fetched token.Fetched
	var next string
	get := func(componentToken string) (err error) {
		fetched, next, err = f.get(ctx, componentToken, refresh)
		return err
	}
	err = withComponentToken(ctx, f.Component, get)
	var apiErr *token.APIError
	if errors.As(err, &apiErr) && apiErr.Code == errRefreshTokenRefused && f.Recover != nil {
		// The stored refresh token is stale (rotated elsewhere, restored
		// from a backup): WeChat's list of authorizations has the current one.
		if recoverErr := f.Recover(ctx); recoverErr != nil {
			return token.Fetched{}, fmt.Errorf("%w; recovering from api_get_authorizer_list: %w", err, recoverErr)
		}
		if again, loadErr := f.RefreshToken(ctx); loadErr == nil && again != refresh {
			refresh = again
			err = withComponentToken(ctx, f.Component, get)
		}
	}
	if err != nil && !errors.As(err, &apiErr) {
		return token.Fetched{}, fmt.Errorf("authorizer %s: %w", f.AuthorizerAppID, err)
	}
	if err == nil && next != "" && next != refresh && f.Save != nil {
		f.Save(next)
	}
	return fetched, err
}

func (f *AuthorizerFetcher) get(ctx context.Context, componentToken, refresh string) (token.Fetched, string, error) {
	endpoint := strings.TrimSuffix(f.BaseURL, "/") + "/cgi-bin/component/api_authorizer_token"
	req, err := postJSON(ctx, endpoint, url.Values{"component_access_token": {componentToken}}, map[string]string{
		"component_appid": f.ComponentAppID, "authorizer_appid": f.AuthorizerAppID, "authorizer_refresh_token": refresh,
	})
	if err != nil {
		return token.Fetched{}, "", err
	}
	var next string
	fetched, err := callWith(f.Client, req, endpoint, "authorizer_access_token", componentToken, func(answer gjson.Result) {
		next = answer.Get("authorizer_refresh_token").String()
	})
	return fetched, next, err
}

// AuthorizationInfo is what api_query_auth answers of an account: its
// refresh token, and its access token, which need not be fetched again.
type AuthorizationInfo struct {
	AuthorizerAppID string
	RefreshToken    string
	Token           token.Fetched
}

// QueryAuth exchanges an authorization code for the account's refresh
// token (POST /cgi-bin/component/api_query_auth). Errors never show the
// component token.
func QueryAuth(ctx context.Context, client *http.Client, baseURL, componentAppID, componentToken, code string) (AuthorizationInfo, error) {
	endpoint := strings.TrimSuffix(baseURL, "/") + "/cgi-bin/component/api_query_auth"
	req, err := postJSON(ctx, endpoint, url.Values{"component_access_token": {componentToken}},
		map[string]string{"component_appid": componentAppID, "authorization_code": code})
	if err != nil {
		return AuthorizationInfo{}, err
	}
	var info AuthorizationInfo
	info.Token, err = callWith(client, req, endpoint, "authorization_info.authorizer_access_token", componentToken, func(answer gjson.Result) {
		info.AuthorizerAppID = answer.Get("authorization_info.authorizer_appid").String()
		info.RefreshToken = answer.Get("authorization_info.authorizer_refresh_token").String()
	})
	if err == nil && (info.AuthorizerAppID == "" || info.RefreshToken == "") {
		err = fmt.Errorf("POST %s: the answer has no authorizer_appid or refresh token", endpoint)
	}
	return info, err
}

// Listed is one account of api_get_authorizer_list.
type Listed struct {
	AppID        string
	RefreshToken string
	AuthTime     int64
}

// listPage is the most accounts WeChat lists per call.
const listPage = 500

// ListAuthorizers reads one page of the platform's authorizations (POST
// /cgi-bin/component/api_get_authorizer_list) from offset: the accounts
// and the total. Errors never show the component token.
func ListAuthorizers(ctx context.Context, client *http.Client, baseURL, componentAppID, componentToken string, offset int) ([]Listed, int, error) {
	endpoint := strings.TrimSuffix(baseURL, "/") + "/cgi-bin/component/api_get_authorizer_list"
	req, err := postJSON(ctx, endpoint, url.Values{"component_access_token": {componentToken}},
		map[string]any{"component_appid": componentAppID, "offset": offset, "count": listPage})
	if err != nil {
		return nil, 0, err
	}
	// 500 entries of a few hundred bytes each.
	answer, err := callJSON(client, req, endpoint, componentToken, 1<<20)
	if err != nil {
		return nil, 0, err
	}
	var out []Listed
	for _, e := range answer.Get("list").Array() {
		l := Listed{AppID: e.Get("authorizer_appid").String(), RefreshToken: e.Get("refresh_token").String(), AuthTime: e.Get("auth_time").Int()}
		if ValidAppID(l.AppID) && l.RefreshToken != "" {
			out = append(out, l)
		}
	}
	return out, int(answer.Get("total_count").Int()), nil
}
