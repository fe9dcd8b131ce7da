package credential

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

	"github.com/caddy-wechat/caddy-wechat/caddymodule/token"
)

// maxAnswerSize bounds how much of a credential endpoint's answer is read.
const maxAnswerSize = 64 << 10

// call sends a request to a credential endpoint and reads the credential
// named field from the answer. It never follows a redirect (that would
// re-send the secret, in a classic query or a 307's body, wherever it
// points), and its errors never contain redact (the secret, or the token a
// ticket is fetched with): transport errors are unwrapped from the
// *url.Error that would print the URL.
func call(client *http.Client, req *http.Request, endpoint, field, redact string) (token.Fetched, error) {
	return callWith(client, req, endpoint, field, redact, nil)
}

// callWith is call that also hands a successful answer to also, for the
// fields beside the credential (a new refresh token).
func callWith(client *http.Client, req *http.Request, endpoint, field, redact string, also func(gjson.Result)) (token.Fetched, error) {
	answer, err := callJSON(client, req, endpoint, redact, maxAnswerSize)
	if err != nil {
		return token.Fetched{}, err
	}
	fetched, err := credentialIn(answer, field)
	if err != nil {
		return token.Fetched{}, fmt.Errorf("%s %s: %w", req.Method, endpoint, err)
	}
	if also != nil {
		also(answer)
	}
	return fetched, nil
}

// parseAnswer reads a token endpoint answer. WeChat's Content-Type is not
// reliable, so the body decides; the HTTP status only matters when the body
// is not a WeChat answer at all.
// field names the credential in the answer (access_token, ticket).
func parseAnswer(status int, body []byte, field, secret string) (token.Fetched, error) {
	answer, err := readAnswer(status, body, secret)
	if err != nil {
		return token.Fetched{}, err
	}
	return credentialIn(answer, field)
}

// credentialIn reads the credential named field, and its expires_in, from
// an answer.
func credentialIn(answer gjson.Result, field string) (token.Fetched, error) {
	value := answer.Get(field)
	if value.Type != gjson.String || value.Str == "" {
		return token.Fetched{}, fmt.Errorf("answer has no %s", field)
	}
	if len(value.Str) > token.MaxTokenLen {
		return token.Fetched{}, fmt.Errorf("answer's %s is %d bytes long, more than the %d accepted", field, len(value.Str), token.MaxTokenLen)
	}
	// expires_in sits beside the credential (authorization_info.* for
	// api_query_auth).
	expiresPath := "expires_in"
	if i := strings.LastIndexByte(field, '.'); i >= 0 {
		expiresPath = field[:i+1] + "expires_in"
	}
	expires := answer.Get(expiresPath)
	if expires.Type != gjson.Number {
		return token.Fetched{}, errors.New("answer has no numeric expires_in")
	}
	if expires.Num < 1 {
		return token.Fetched{}, fmt.Errorf("answer's expires_in is %v, not a positive number of seconds", expires.Num)
	}
	lifetime := token.MaxLifetime
	if expires.Num < token.MaxLifetime.Seconds() {
		lifetime = time.Duration(expires.Num * float64(time.Second))
	}
	return token.Fetched{Value: value.Str, ExpiresIn: lifetime}, nil
}

// readAnswer reads a WeChat answer: a JSON object without an errcode (an
// *token.APIError otherwise), with HTTP 200. The errmsg never shows
// redact.
func readAnswer(status int, body []byte, redact string) (gjson.Result, error) {
	trimmed := bytes.TrimSpace(body)
	if len(trimmed) == 0 || trimmed[0] != '{' || !gjson.ValidBytes(trimmed) {
		return gjson.Result{}, fmt.Errorf("unexpected answer (HTTP %d, %d bytes, not a JSON object)", status, len(body))
	}
	answer := gjson.ParseBytes(trimmed)
	if code := answer.Get("errcode").Int(); code != 0 {
		msg := answer.Get("errmsg").String()
		if redact != "" {
			msg = strings.ReplaceAll(msg, redact, "[app_secret]")
		}
		if len(msg) > 300 {
			msg = msg[:300] + "..."
		}
		return gjson.Result{}, &token.APIError{Code: code, Msg: msg}
	}
	if status != http.StatusOK {
		return gjson.Result{}, fmt.Errorf("unexpected HTTP status %d", status)
	}
	return answer, nil
}

// callJSON sends req and reads its answer (readAnswer), for calls that
// return data rather than a credential; like call, it follows no redirect
// and its errors never contain redact.
func callJSON(client *http.Client, req *http.Request, endpoint, redact string, maxSize int64) (gjson.Result, error) {
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
		return gjson.Result{}, fmt.Errorf("%s %s: %w", req.Method, endpoint, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxSize))
	if err != nil {
		return gjson.Result{}, fmt.Errorf("%s %s: read answer: %w", req.Method, endpoint, err)
	}
	answer, err := readAnswer(resp.StatusCode, body, redact)
	if err != nil {
		return gjson.Result{}, fmt.Errorf("%s %s: %w", req.Method, endpoint, err)
	}
	return answer, nil
}

// getRequest is a GET of endpoint with query q.
func getRequest(ctx context.Context, endpoint string, q url.Values) (*http.Request, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, endpoint+"?"+q.Encode(), nil)
	if err != nil {
		return nil, fmt.Errorf("build request for %s: %w", endpoint, err)
	}
	return req, nil
}

// postJSON is a POST of payload as JSON to endpoint, with query q (the
// platform's calls carry their token there).
func postJSON(ctx context.Context, endpoint string, q url.Values, payload any) (*http.Request, error) {
	body, err := json.Marshal(payload)
	if err != nil {
		return nil, fmt.Errorf("encode the request for %s: %w", endpoint, err)
	}
	target := endpoint
	if len(q) > 0 {
		target += "?" + q.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, target, bytes.NewReader(body))
	if err != nil {
		return nil, fmt.Errorf("build request for %s: %w", endpoint, err)
	}
	req.Header.Set("Content-Type", "application/json")
	return req, nil
}
