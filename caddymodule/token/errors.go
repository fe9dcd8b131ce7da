package token

import (
	"errors"
	"fmt"
	"regexp"
)

// APIError is an answer from WeChat carrying a non-zero errcode.
// Msg is WeChat's errmsg, which never holds credentials; it is kept for the
// "rid:" request id that WeChat support asks for.
type APIError struct {
	Code int64
	Msg  string
}

func (e *APIError) Error() string {
	return fmt.Sprintf("errcode %d: %s (errmsg %q)", e.Code, Describe(e.Code, e.Msg), e.Msg)
}

// Explanation is what an errcode means to an operator, and what to do about it.
type Explanation struct {
	Meaning string
	Hint    string
}

// explanations covers every errcode the token endpoints are documented to
// return, plus the token errors API calls answer with.
var explanations = map[int64]Explanation{
	-1:    {"WeChat system busy", "transient; retried with backoff"},
	40001: {"AppSecret (WeCom: the app's secret) wrong, or access_token invalid or not the latest", "check app_secret (corp_secret); make sure no other system fetches tokens with /cgi-bin/token for this app"},
	40002: {"invalid grant_type", "report a bug: the module always sends client_credential"},
	40013: {"invalid AppID (or WeCom corp ID)", "check app_id (corp_id)"},
	40014: {"invalid access_token", "the token was malformed or cut short"},
	40125: {"invalid AppSecret", "check app_secret; it changes when reset in the WeChat admin console"},
	40164: {"caller IP is not in the API IP whitelist", "add the IP WeChat saw to the whitelist in the WeChat admin console"},
	40243: {"AppSecret is frozen", "unfreeze it in the WeChat admin console"},
	41001: {"access_token missing", ""},
	41002: {"appid missing", "check app_id"},
	41004: {"appsecret missing", "check app_secret"},
	42001: {"access_token expired", ""},
	43002: {"HTTP method not allowed", "report a bug"},
	45009: {"daily API quota reached", "the quota resets at midnight Beijing time; it can also be reset in the admin console"},
	45011: {"API called too often", "wait and retry; force_refresh is limited to 20 a day, 30 s apart"},
	47001: {"malformed request body", "report a bug"},
	61004: {"caller IP is not registered for this app", "add the IP WeChat saw to the whitelist in the WeChat admin console"},
	60020: {"caller IP is not a trusted IP of the WeCom app", "add the IP WeChat saw to the app's trusted IPs (企业可信IP) in the WeCom admin console"},
	61005: {"component_verify_ticket expired", "WeChat pushes a new one every 10 minutes to the platform's event URL: check that wechat_component_events receives them"},
	61006: {"component_verify_ticket invalid", "WeChat pushes a new one every 10 minutes to the platform's event URL: check that wechat_component_events receives them"},
	89501: {"the caller IP is waiting for an administrator to confirm it", "ask an administrator to confirm the call in WeChat"},
	89503: {"the caller IP needs an administrator's confirmation", "ask an administrator to confirm the call in WeChat"},
	89506: {"an administrator refused this IP twice in 24 hours", "calls from this IP are blocked for 24 hours"},
	89507: {"an administrator refused this IP within the last hour", "calls from this IP are blocked for 1 hour"},
}

// Explain returns what an errcode means; unknown codes get a generic text.
func Explain(code int64) Explanation {
	if e, ok := explanations[code]; ok {
		return e
	}
	return Explanation{Meaning: "unknown WeChat errcode", Hint: "see the WeChat global return code list"}
}

// ipInErrmsg finds the caller IP in WeChat's whitelist errors ("invalid ip
// 1.2.3.4 ...") and WeCom's ("... from ip: 1.2.3.4, ...").
var ipInErrmsg = regexp.MustCompile(`(?:invalid ip|from ip:) ([0-9a-fA-F.:]+[0-9a-fA-F])`)

// Describe renders an errcode as one line for logs and errors: its
// meaning (see Meaning) and what to do about it.
func Describe(code int64, errmsg string) string {
	s := Meaning(code, errmsg)
	if hint := Explain(code).Hint; hint != "" {
		s += "; " + hint
	}
	return s
}

// Meaning is what an errcode means, with the caller IP WeChat reports for
// whitelist errors added, since that IP (the proxy's egress address as
// WeChat sees it) is what the operator must add.
func Meaning(code int64, errmsg string) string {
	s := Explain(code).Meaning
	if m := ipInErrmsg.FindStringSubmatch(errmsg); m != nil && (code == 40164 || code == 61004 || code == 60020) {
		s += "; WeChat saw the IP " + m[1]
	}
	return s
}

// ErrRefreshLimited is returned by Manager.Refresh when refreshing now would
// exceed the rate limit that protects WeChat's daily quota.
var ErrRefreshLimited = errors.New("token refresh rate limit reached")

// ErrNoToken is wrapped by Manager.Token when no valid token is held (a
// Kind may name another error, such as one for tickets).
var ErrNoToken = errors.New("no valid access_token")
