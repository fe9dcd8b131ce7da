package token

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/tidwall/gjson"
)

// API names one of WeChat's two token endpoints.
type API string

const (
	// Stable is POST /cgi-bin/stable_token: every caller gets the same token
	// until its last minutes, and it is isolated from /cgi-bin/token.
	Stable API = "stable"
	// Classic is GET /cgi-bin/token: every call issues a new token and the
	// previous one dies after a short overlap.
	Classic API = "classic"
	// WeCom is WeCom's (企业微信) GET /cgi-bin/gettoken?corpid=&corpsecret=:
	// one token per app secret, the same to every caller while it is valid.
	WeCom API = "wecom"
	// JSAPITicket is the JS-SDK's jsapi_ticket (GET
	// /cgi-bin/ticket/getticket), held like a token: a credential of its
	// own kind, fetched with the app's access token (TicketFetcher).
	JSAPITicket API = "jsapi_ticket"
)

// known reports whether a is a kind of credential a Manager can hold.
func (a API) known() bool {
	switch a {
	case Stable, Classic, WeCom, JSAPITicket, Component, Authorizer:
		return true
	}
	return false
}

// Noun names what a manager of this API holds, for log lines.
func (a API) Noun() string {
	switch a {
	case JSAPITicket:
		return "jsapi_ticket"
	case Component:
		return "component_access_token"
	}
	return "access_token"
}

// ParseAPI accepts the names used in configuration.
func ParseAPI(s string) (API, error) {
	switch API(s) {
	case Stable, Classic:
		return API(s), nil
	}
	return "", fmt.Errorf("unknown token API %q (want %q or %q)", s, Stable, Classic)
}

// MaxLifetime is the longest lifetime WeChat documents for a token. Larger
// expires_in values are clamped to it, so that a garbled answer can never
// postpone renewal indefinitely.
const MaxLifetime = 7200 * time.Second

// maxTokenLen bounds what is accepted as a token. WeChat says tokens may grow
// to 512 characters; anything far beyond that is not a token.
const maxTokenLen = 4096

// maxAnswerSize bounds how much of a token endpoint answer is read.
const maxAnswerSize = 64 << 10

// Fetched is a token as WeChat handed it out.
type Fetched struct {
	Value     string
	ExpiresIn time.Duration
}

// Fetcher obtains a token from WeChat. force asks the stable API for a new
// token even if the current one is still valid; the classic API ignores it.
type Fetcher interface {
	Fetch(ctx context.Context, force bool) (Fetched, error)
}

// HTTPFetcher fetches tokens over HTTP from BaseURL (normally
// https://api.weixin.qq.com; https://qyapi.weixin.qq.com for WeCom, where
// AppID and AppSecret are the corp ID and the app's secret).
type HTTPFetcher struct {
	API       API
	BaseURL   string
	AppID     string
	AppSecret string
	Client    *http.Client
}

// Fetch implements Fetcher. Errors never contain the AppSecret: the classic
// endpoint takes it in the query string, so transport errors are unwrapped
// from *url.Error rather than printed with their URL.
func (f *HTTPFetcher) Fetch(ctx context.Context, force bool) (Fetched, error) {
	req, endpoint, err := f.newRequest(ctx, force)
	if err != nil {
		return Fetched{}, err
	}
	return call(f.Client, req, endpoint, "access_token", f.AppSecret)
}

// call sends a request to a credential endpoint and reads the credential
// named field from the answer. It never follows a redirect (that would
// re-send the secret, in a classic query or a 307's body, wherever it
// points), and its errors never contain redact (the secret, or the token a
// ticket is fetched with): transport errors are unwrapped from the
// *url.Error that would print the URL.
func call(client *http.Client, req *http.Request, endpoint, field, redact string) (Fetched, error) {
	return callWith(client, req, endpoint, field, redact, nil)
}

// callWith is call that also hands a successful answer to also, for the
// fields beside the credential (a new refresh token).
func callWith(client *http.Client, req *http.Request, endpoint, field, redact string, also func(gjson.Result)) (Fetched, error) {
	if client == nil {
		client = http.DefaultClient
	}
	noRedirect := *client
	noRedirect.CheckRedirect = func(next *http.Request, _ []*http.Request) error {
		return fmt.Errorf("%s redirected to %s; redirects are never followed (is api_base right?)", endpoint, next.URL.Host)
	}
	resp, err := noRedirect.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return Fetched{}, fmt.Errorf("%s %s: %w", req.Method, endpoint, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxAnswerSize))
	if err != nil {
		return Fetched{}, fmt.Errorf("%s %s: read answer: %w", req.Method, endpoint, err)
	}
	fetched, err := parseAnswer(resp.StatusCode, body, field, redact)
	if err != nil {
		return Fetched{}, fmt.Errorf("%s %s: %w", req.Method, endpoint, err)
	}
	if also != nil {
		also(gjson.ParseBytes(body))
	}
	return fetched, nil
}

func (f *HTTPFetcher) newRequest(ctx context.Context, force bool) (*http.Request, string, error) {
	base := strings.TrimSuffix(f.BaseURL, "/")
	switch f.API {
	case Classic:
		endpoint := base + "/cgi-bin/token"
		q := url.Values{"grant_type": {"client_credential"}, "appid": {f.AppID}, "secret": {f.AppSecret}}
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, endpoint+"?"+q.Encode(), nil)
		if err != nil {
			return nil, endpoint, fmt.Errorf("build request for %s: %w", endpoint, err)
		}
		return req, endpoint, nil
	case WeCom:
		endpoint := base + "/cgi-bin/gettoken"
		q := url.Values{"corpid": {f.AppID}, "corpsecret": {f.AppSecret}}
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, endpoint+"?"+q.Encode(), nil)
		if err != nil {
			return nil, endpoint, fmt.Errorf("build request for %s: %w", endpoint, err)
		}
		return req, endpoint, nil
	case Stable:
		endpoint := base + "/cgi-bin/stable_token"
		payload, err := json.Marshal(struct {
			GrantType    string `json:"grant_type"`
			AppID        string `json:"appid"`
			Secret       string `json:"secret"`
			ForceRefresh bool   `json:"force_refresh"`
		}{"client_credential", f.AppID, f.AppSecret, force})
		if err != nil {
			return nil, endpoint, fmt.Errorf("encode stable_token request: %w", err)
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, endpoint, bytes.NewReader(payload))
		if err != nil {
			return nil, endpoint, fmt.Errorf("build request for %s: %w", endpoint, err)
		}
		req.Header.Set("Content-Type", "application/json")
		return req, endpoint, nil
	}
	return nil, "", fmt.Errorf("unknown token API %q", f.API)
}

// parseAnswer reads a token endpoint answer. WeChat's Content-Type is not
// reliable, so the body decides; the HTTP status only matters when the body
// is not a WeChat answer at all.
// field names the credential in the answer (access_token, ticket).
func parseAnswer(status int, body []byte, field, secret string) (Fetched, error) {
	trimmed := bytes.TrimSpace(body)
	if len(trimmed) == 0 || trimmed[0] != '{' || !gjson.ValidBytes(trimmed) {
		return Fetched{}, fmt.Errorf("unexpected answer (HTTP %d, %d bytes, not a JSON object)", status, len(body))
	}
	answer := gjson.ParseBytes(trimmed)
	if code := answer.Get("errcode").Int(); code != 0 {
		msg := answer.Get("errmsg").String()
		if secret != "" {
			msg = strings.ReplaceAll(msg, secret, "[app_secret]")
		}
		if len(msg) > 300 {
			msg = msg[:300] + "..."
		}
		return Fetched{}, &APIError{Code: code, Msg: msg}
	}
	if status != http.StatusOK {
		return Fetched{}, fmt.Errorf("unexpected HTTP status %d", status)
	}
	value := answer.Get(field)
	if value.Type != gjson.String || value.Str == "" {
		return Fetched{}, fmt.Errorf("answer has no %s", field)
	}
	if len(value.Str) > maxTokenLen {
		return Fetched{}, fmt.Errorf("answer's %s is %d bytes long, more than the %d accepted", field, len(value.Str), maxTokenLen)
	}
	// expires_in sits beside the credential (authorization_info.* for
	// api_query_auth).
	expiresPath := "expires_in"
	if i := strings.LastIndexByte(field, '.'); i >= 0 {
		expiresPath = field[:i+1] + "expires_in"
	}
	expires := answer.Get(expiresPath)
	if expires.Type != gjson.Number {
		return Fetched{}, errors.New("answer has no numeric expires_in")
	}
	if expires.Num < 1 {
		return Fetched{}, fmt.Errorf("answer's expires_in is %v, not a positive number of seconds", expires.Num)
	}
	lifetime := MaxLifetime
	if expires.Num < MaxLifetime.Seconds() {
		lifetime = time.Duration(expires.Num * float64(time.Second))
	}
	return Fetched{Value: value.Str, ExpiresIn: lifetime}, nil
}
