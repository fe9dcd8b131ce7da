package emulator

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// What a third-party platform with many accounts needs of WeChat, beyond
// the token calls of component.go:
//
//   - POST /cgi-bin/component/api_get_authorizer_list: every account whose
//     authorization is current, in pages of at most 500, so a platform
//     that lost its records can recover them without an export.
//   - Authorizations as WeChat holds them: an account authorizes a
//     platform when it clicks (AuthorizeAccount, AuthorizedPush), not when
//     the platform exchanges the code; the code is good for one exchange
//     within Config.AuthCodeTTL; tokens are per platform and account.
//   - Refresh tokens that rotate (Config.RotateRefreshTokens), and faults of
//     the platform's calls (Faults.QueryAuthDelay ...).
//   - Scale: 100,000 accounts. Issuing a token touches only the tokens of
//     its (platform, account), never all tokens ever issued.

// defaultAuthCodeTTL is how long WeChat's authorization codes last.
const defaultAuthCodeTTL = 10 * time.Minute

// maxAuthorizerPage is the most accounts api_get_authorizer_list answers
// at once; a larger count is clamped to it.
const maxAuthorizerPage = 500

// platformState is what the emulator holds for third-party platforms;
// s.mu guards it, except loops.
type platformState struct {
	// tickets are the component_verify_tickets pushed, by platform.
	tickets map[string][]string
	// codes are the authorization codes not yet exchanged, by value.
	codes map[string]*authCode
	// accounts are the authorizations, by platform.
	accounts map[string]*platformAccounts
	// live are the component and authorizer tokens that may still work,
	// oldest first, by whom they were issued to: the index that makes
	// issuing and ending an account's tokens independent of how many
	// tokens exist.
	live map[tokenKey][]*token
	// retired are secrets no longer in use (codes exchanged, refresh
	// tokens replaced or rotated out, pre-auth codes), kept so that
	// IssuedPlatformSecrets still lists them.
	retired []string
	// loops are the background ticket pushes; Close waits for them.
	loops sync.WaitGroup
}

// tokenKey names whom a token was issued to: a platform (family
// "component", owner "") or a platform's account (family "authorizer",
// owner the platform).
type tokenKey struct{ family, owner, appID string }

// authCode is an authorization code pushed with an authorized event.
type authCode struct {
	value, component, account string
	auth                      *authorization // the authorization it reports
	expires                   time.Time
}

// authorization is an account's authorization of a platform.
type authorization struct {
	appID        string
	refreshToken string
	authTime     time.Time
	ended        bool // withdrawn (unauthorized)
}

// platformAccounts are a platform's authorizations.
type platformAccounts struct {
	byAppID map[string]*authorization
	// listed are the current authorizations in list order (auth time,
	// then appid), rebuilt when stale: built once for a whole list walk.
	listed []*authorization
	stale  bool
}

// accountsOf returns the platform's authorizations, creating them.
func (p *platformState) accountsOf(componentAppID string) *platformAccounts {
	if p.accounts == nil {
		p.accounts = map[string]*platformAccounts{}
	}
	pa := p.accounts[componentAppID]
	if pa == nil {
		pa = &platformAccounts{byAppID: map[string]*authorization{}, stale: true}
		p.accounts[componentAppID] = pa
	}
	return pa
}

// authorize makes account authorize the platform at now, with a new
// refresh token, unless it already has and replace is false.
func (p *platformState) authorize(componentAppID, account string, now time.Time, replace bool) *authorization {
	pa := p.accountsOf(componentAppID)
	old := pa.byAppID[account]
	if old != nil && !old.ended && !replace {
		return old
	}
	if old != nil {
		p.retired = append(p.retired, old.refreshToken)
	}
	a := &authorization{appID: account, refreshToken: newRefreshToken(), authTime: now}
	pa.byAppID[account] = a
	pa.stale = true
	return a
}

func newRefreshToken() string { return "refreshtoken@@@" + newTokenValue(40) }

// current is the account's authorization of the platform, nil if there
// is none or it ended.
func (p *platformState) current(componentAppID, account string) *authorization {
	pa := p.accounts[componentAppID]
	if pa == nil {
		return nil
	}
	if a := pa.byAppID[account]; a != nil && !a.ended {
		return a
	}
	return nil
}

// end withdraws the account's authorization; its record stays, ended.
func (p *platformState) end(componentAppID, account string) {
	if a := p.current(componentAppID, account); a != nil {
		a.ended = true
		p.accounts[componentAppID].stale = true
	}
}

// rotate gives a a new refresh token; the previous one stops working.
func (p *platformState) rotate(a *authorization) {
	p.retired = append(p.retired, a.refreshToken)
	a.refreshToken = newRefreshToken()
}

// spend removes an authorization code: it cannot be exchanged again.
func (p *platformState) spend(code string) {
	delete(p.codes, code)
	p.retired = append(p.retired, code)
}

// list returns the current authorizations in list order.
func (pa *platformAccounts) list() []*authorization {
	if !pa.stale {
		return pa.listed
	}
	pa.listed = make([]*authorization, 0, len(pa.byAppID))
	for _, a := range pa.byAppID {
		if !a.ended {
			pa.listed = append(pa.listed, a)
		}
	}
	slices.SortFunc(pa.listed, func(a, b *authorization) int {
		if c := a.authTime.Compare(b.authTime); c != 0 {
			return c
		}
		return strings.Compare(a.appID, b.appID)
	})
	pa.stale = false
	return pa.listed
}

// authCodeLocked makes the account authorize the platform (unless it has)
// and returns a new authorization code reporting it; s.mu is held.
func (s *Server) authCodeLocked(componentAppID, account string) *authCode {
	now := s.cfg.Now()
	ttl := s.cfg.AuthCodeTTL
	if ttl <= 0 {
		ttl = defaultAuthCodeTTL
	}
	c := &authCode{
		value: "queryauthcode@@@" + newTokenValue(40), component: componentAppID, account: account,
		auth: s.platform.authorize(componentAppID, account, now, false), expires: now.Add(ttl),
	}
	if s.platform.codes == nil {
		s.platform.codes = map[string]*authCode{}
	}
	s.platform.codes[c.value] = c
	return c
}

// issueCurrentLocked issues a token to k and makes it the current one;
// s.mu is held. The previous current token keeps working for the
// overlap. Only k's own tokens are touched, so this costs the same with
// one account or 100,000.
func (s *Server) issueCurrentLocked(k tokenKey) *token {
	now := s.cfg.Now()
	if s.platform.live == nil {
		s.platform.live = map[tokenKey][]*token{}
	}
	live := s.platform.live[k]
	// Tokens that can never work again leave the index (they stay in
	// s.tokens, which answers for them); deadlines grow with issue order.
	for len(live) > 0 {
		if end, _ := live[0].deadline(); now.Before(end) {
			break
		}
		live = live[1:]
	}
	// Earlier ones already end by the previous issue's overlap at the
	// latest: only the current one needs ending.
	if n := len(live); n > 0 {
		prev, end := live[n-1], now.Add(s.cfg.Overlap)
		if prev.revoked.IsZero() || end.Before(prev.revoked) {
			prev.revoked = end
		}
	}
	t := s.issue(k.appID, k.family, now)
	t.component = k.owner
	s.platform.live[k] = append(live, t)
	return t
}

// endTokensLocked ends every token of k at once; s.mu is held.
func (s *Server) endTokensLocked(k tokenKey) {
	now := s.cfg.Now()
	for _, t := range s.platform.live[k] {
		if t.revoked.IsZero() || now.Before(t.revoked) {
			t.revoked = now
		}
	}
	delete(s.platform.live, k)
}

// ImportAuthorizers is ImportAuthorizer for many accounts at once, so a
// test can set up 100,000 accounts in well under a second. It returns
// each account's refresh token by appid.
func (s *Server) ImportAuthorizers(componentAppID string, appIDs []string) map[string]string {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.cfg.Now()
	out := make(map[string]string, len(appIDs))
	for _, id := range appIDs {
		out[id] = s.platform.authorize(componentAppID, id, now, true).refreshToken
	}
	return out
}

// Limits of POST /_emulator/import_authorizers: at most this many
// accounts per call (100,000 answer about 12 MB of JSON), named by a
// prefix short enough to leave room for the index within the 64
// characters a proxy accepts as an appid.
const (
	maxImportCount  = 1_000_000
	maxImportPrefix = 40
)

// importedAuthorizer is one account of import_authorizers' answer, in the
// shape a proxy's import takes (the caddy-wechat admin API's
// POST /wechat_token/components/{name}/authorizers), so that a benchmark
// can hand the answer on as it is.
type importedAuthorizer struct {
	AppID        string `json:"authorizer_appid"`
	RefreshToken string `json:"authorizer_refresh_token"`
}

// serveImportAuthorizers is POST /_emulator/import_authorizers?appid=&count=
// [&prefix=]: ImportAuthorizers for count accounts named prefix and an
// index, zero-padded so that appids are 18 characters long as WeChat's
// are (when the prefix leaves room), answered in index order. It lets
// a test outside Go (the benchmark) set up a platform of 100,000 accounts
// at once.
func (s *Server) serveImportAuthorizers(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		http.Error(w, "POST only", http.StatusMethodNotAllowed)
		return
	}
	q := r.URL.Query()
	component, prefix := q.Get("appid"), q.Get("prefix")
	if prefix == "" {
		prefix = "wxacct"
	}
	s.mu.Lock()
	_, known := s.cfg.Components[component]
	s.mu.Unlock()
	count, err := strconv.Atoi(q.Get("count"))
	switch {
	case !known:
		http.Error(w, fmt.Sprintf("import_authorizers: unknown component %q", component), http.StatusBadRequest)
		return
	case err != nil || count < 1 || count > maxImportCount:
		http.Error(w, fmt.Sprintf("import_authorizers: count must be 1 to %d", maxImportCount), http.StatusBadRequest)
		return
	case len(prefix) > maxImportPrefix || strings.Trim(prefix, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-") != "":
		http.Error(w, fmt.Sprintf("import_authorizers: prefix must be at most %d letters, digits, '_' or '-'", maxImportPrefix), http.StatusBadRequest)
		return
	}
	width := max(18-len(prefix), len(strconv.Itoa(count-1)))
	ids := make([]string, count)
	for i := range ids {
		ids[i] = fmt.Sprintf("%s%0*d", prefix, width, i)
	}
	tokens := s.ImportAuthorizers(component, ids)
	out := make([]importedAuthorizer, len(ids))
	for i, id := range ids {
		out[i] = importedAuthorizer{AppID: id, RefreshToken: tokens[id]}
	}
	writeJSON(w, "application/json", out)
}

// RefreshToken is the account's current refresh token for the platform,
// "" if it has not authorized the platform or withdrew: what a proxy that
// keeps rotated tokens must hold.
func (s *Server) RefreshToken(componentAppID, authorizerAppID string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if a := s.platform.current(componentAppID, authorizerAppID); a != nil {
		return a.refreshToken
	}
	return ""
}

// AuthorizedPush makes authorizerAppID authorize the platform now and
// builds the authorized push WeChat sends for it (AuthorizerAppid,
// AuthorizationCode, AuthorizationCodeExpiredTime, PreAuthCode), with the
// code it carries.
func (s *Server) AuthorizedPush(componentAppID, authorizerAppID string) (q url.Values, body []byte, code string, err error) {
	return s.AuthorizationPushAt(componentAppID, authorizerAppID, "authorized", 0)
}

// UpdateAuthorizedPush is AuthorizedPush for a change of permissions
// (updateauthorized): the account keeps its refresh token.
func (s *Server) UpdateAuthorizedPush(componentAppID, authorizerAppID string) (q url.Values, body []byte, code string, err error) {
	return s.AuthorizationPushAt(componentAppID, authorizerAppID, "updateauthorized", 0)
}

// UnauthorizedPush ends the account's authorization at the emulator, as
// Unauthorize does, and builds the unauthorized push WeChat sends for it.
func (s *Server) UnauthorizedPush(componentAppID, authorizerAppID string) (q url.Values, body []byte, err error) {
	q, body, _, err = s.AuthorizationPushAt(componentAppID, authorizerAppID, "unauthorized", 0)
	return q, body, err
}

// AuthorizationPushAt does what AuthorizedPush, UpdateAuthorizedPush or
// UnauthorizedPush do (infoType authorized, updateauthorized or
// unauthorized), the push's CreateTime given (unix seconds; 0 is now):
// pushes that arrive out of order must be told apart by it, which pushes
// made within one second cannot be by the clock. code is "" for
// unauthorized.
func (s *Server) AuthorizationPushAt(componentAppID, authorizerAppID, infoType string, createTime int64) (q url.Values, body []byte, code string, err error) {
	if authorizerAppID == "" {
		return nil, nil, "", fmt.Errorf("%s push: no authorizer appid", infoType)
	}
	s.mu.Lock()
	if _, ok := s.cfg.Components[componentAppID]; !ok {
		s.mu.Unlock()
		return nil, nil, "", fmt.Errorf("%s push: unknown component %s", infoType, componentAppID)
	}
	fields := map[string]string{"AuthorizerAppid": authorizerAppID}
	switch infoType {
	case "authorized", "updateauthorized":
		c := s.authCodeLocked(componentAppID, authorizerAppID)
		pre := "preauthcode@@@" + newTokenValue(40)
		s.platform.retired = append(s.platform.retired, pre)
		code = c.value
		fields["AuthorizationCode"] = c.value
		fields["AuthorizationCodeExpiredTime"] = strconv.FormatInt(c.expires.Unix(), 10)
		fields["PreAuthCode"] = pre
	case "unauthorized":
		s.unauthorizeLocked(componentAppID, authorizerAppID)
	default:
		s.mu.Unlock()
		return nil, nil, "", fmt.Errorf("authorization push: info type %q is none of authorized, updateauthorized, unauthorized", infoType)
	}
	s.mu.Unlock()
	q, body, err = s.ComponentPushAt(componentAppID, infoType, createTime, fields, "")
	if err != nil {
		return nil, nil, "", fmt.Errorf("%s push: %w", infoType, err)
	}
	return q, body, code, nil
}

// authorizerListEntry is one account of api_get_authorizer_list.
type authorizerListEntry struct {
	AppID        string `json:"authorizer_appid"`
	RefreshToken string `json:"refresh_token"`
	AuthTime     int64  `json:"auth_time"`
}

func (s *Server) serveAuthorizerList(w http.ResponseWriter, r *http.Request) {
	var req struct {
		AppID  string `json:"component_appid"`
		Offset int    `json:"offset"`
		Count  int    `json:"count"`
	}
	caller, ok := s.platformCall(w, r, &req, &s.stats.AuthorizerListCalls)
	if !ok {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.faults.AuthorizerListErrcode != 0:
		wxError(w, jsonType, s.faults.AuthorizerListErrcode, faultMessage(s.faults.AuthorizerListErrcode))
		return
	case req.AppID != caller:
		wxError(w, jsonType, 40013, "invalid appid")
		return
	case req.Offset < 0 || req.Count <= 0:
		wxError(w, jsonType, 40097, "invalid args")
		return
	}
	listed := s.platform.accountsOf(caller).list()
	offset, count := min(req.Offset, len(listed)), min(req.Count, maxAuthorizerPage)
	count = min(count, len(listed)-offset)
	page := make([]authorizerListEntry, 0, count)
	for _, a := range listed[offset : offset+count] {
		page = append(page, authorizerListEntry{AppID: a.appID, RefreshToken: a.refreshToken, AuthTime: a.authTime.Unix()})
	}
	writeJSON(w, jsonType, map[string]any{"total_count": len(listed), "list": page})
}

// faultMessage is the errmsg of an errcode a fault mode answers.
func faultMessage(code int) string {
	switch code {
	case -1:
		return "system error"
	case 40001:
		return "invalid credential, access_token is invalid or not latest"
	case 45009:
		return "reach max api daily quota limit"
	case 61010:
		return "code is expired or invalid"
	case 61023:
		return "refresh_token is invalid"
	}
	return "emulated fault"
}

// Duration is a time.Duration written in JSON as Go writes durations
// ("300ms", "7s"), so that a fault's delay can be set by hand with curl
// and reads the same back. A JSON number is refused: 7 would be 7 ns.
type Duration time.Duration

// MarshalJSON writes d as a duration string.
func (d Duration) MarshalJSON() ([]byte, error) {
	return json.Marshal(time.Duration(d).String())
}

// UnmarshalJSON reads a duration string ("" is none).
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return errors.New(`want a duration string such as "7s"`)
	}
	if s == "" {
		*d = 0
		return nil
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("duration: %w", err)
	}
	*d = Duration(v)
	return nil
}
