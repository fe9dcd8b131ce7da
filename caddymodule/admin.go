package caddymodule

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"

	"github.com/caddy-wechat/caddy-wechat/caddymodule/credential"
	"github.com/caddy-wechat/caddy-wechat/caddymodule/token"
)

func init() {
	caddy.RegisterModule(adminAPI{})
}

// adminAPI serves the wechat_token routes of Caddy's admin endpoint:
//
//	GET  /wechat_token/apps                       status of every app's token
//	POST /wechat_token/apps/{app_id}/refresh      renew now (?force=1: stable force_refresh;
//	                                              ?token_api=stable|classic to pick one)
//	GET  /wechat_token/components/{name}          a third-party platform's ticket, token, accounts
//	POST /wechat_token/components/{name}/authorizers  import accounts authorized before the proxy
//	POST /wechat_token/components/{name}/authorizers/sync  every account from api_get_authorizer_list
//	GET  /wechat_token/messages                   wechat_messages: pushes by receiver, recent refusals by reason
//
// Neither ever shows a token or a secret. They are as protected as the
// admin endpoint itself (loopback by default).
type adminAPI struct{}

// CaddyModule returns the Caddy module information.
func (adminAPI) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "admin.api.wechat_token",
		New: func() caddy.Module { return new(adminAPI) },
	}
}

// Routes implements caddy.AdminRouter.
func (a adminAPI) Routes() []caddy.AdminRoute {
	return []caddy.AdminRoute{{Pattern: "/wechat_token/", Handler: caddy.AdminHandlerFunc(a.serve)}}
}

func (a adminAPI) serve(w http.ResponseWriter, r *http.Request) error {
	path := strings.TrimPrefix(r.URL.Path, "/wechat_token/")
	switch {
	case path == "messages":
		if r.Method != http.MethodGet {
			return methodNotAllowed(w, http.MethodGet)
		}
		statuses := []messageStatus{}
		for _, s := range allMessageStats() {
			statuses = append(statuses, s.status())
		}
		return writeJSON(w, http.StatusOK, statuses)
	case strings.HasPrefix(path, "components/"):
		return a.component(w, r, strings.TrimPrefix(path, "components/"))
	case path == "apps":
		if r.Method != http.MethodGet {
			return methodNotAllowed(w, http.MethodGet)
		}
		statuses := []token.Status{}
		for _, m := range registry.Managers("", "") {
			m.ReadLedger(r.Context()) // what the fleet has left, not just this instance's view
			statuses = append(statuses, m.Status())
		}
		return writeJSON(w, http.StatusOK, statuses)
	case strings.HasPrefix(path, "apps/") && strings.HasSuffix(path, "/refresh"):
		appID := strings.TrimSuffix(strings.TrimPrefix(path, "apps/"), "/refresh")
		if r.Method != http.MethodPost {
			return methodNotAllowed(w, http.MethodPost)
		}
		return a.refresh(w, r, appID)
	}
	return caddy.APIError{HTTPStatus: http.StatusNotFound, Err: fmt.Errorf("no such wechat_token admin route: %s", r.URL.Path)}
}

// refreshResult is the answer for one app and token API.
type refreshResult struct {
	AppID     string             `json:"app_id"`
	TokenAPI  string             `json:"token_api"`
	Renewed   bool               `json:"renewed"`
	ExpiresAt *time.Time         `json:"expires_at,omitempty"`
	Note      string             `json:"note,omitempty"`
	Error     *token.ErrorStatus `json:"error,omitempty"`
}

func (a adminAPI) refresh(w http.ResponseWriter, r *http.Request, appID string) error {
	api := r.URL.Query().Get("token_api")
	matches := registry.Managers(appID, api)
	if len(matches) == 0 {
		return caddy.APIError{HTTPStatus: http.StatusNotFound, Err: fmt.Errorf("no loaded wechat_token config for app_id %q", appID)}
	}
	force := r.URL.Query().Get("force") == "1"
	var results []refreshResult
	status := http.StatusOK
	for _, m := range matches {
		tok, renewed, err := m.RenewNow(r.Context(), force)
		res := refreshResult{AppID: m.AppID(), TokenAPI: m.Kind().Name}
		if err != nil {
			status = http.StatusBadGateway
			res.Error = &token.ErrorStatus{Message: err.Error(), Meaning: "renewal failed", At: time.Now()}
			switch {
			case errors.Is(err, token.ErrRefreshLimited):
				status = http.StatusTooManyRequests
				res.Error.Meaning = "the admin's refresh budget is spent (min_refresh_interval)"
			case errors.Is(err, token.ErrForceLimited):
				status = http.StatusTooManyRequests
				res.Error.Meaning = "force_refresh not allowed now (WeChat's 30 s gap or 20 a day, counted for the fleet)"
			case errors.Is(err, token.ErrDailyRefreshLimit):
				status = http.StatusTooManyRequests
				res.Error.Meaning = "the fleet's daily_refresh_limit is reached"
			default:
				if after := m.Status(); after.LastError != nil {
					res.Error = after.LastError
				}
			}
		} else {
			expires := tok.ExpiresAt
			res.ExpiresAt = &expires
			res.Renewed = renewed
			if !res.Renewed && m.Kind().ForceRefresh && !force {
				res.Note = fmt.Sprintf("stable_token hands out the same token until shortly before it expires (WeChat: its last 5 minutes), "+
					"and this one expires in %s; add ?force=1 to force_refresh (20 a day, ending the current token at once)",
					time.Until(tok.ExpiresAt).Truncate(time.Second))
			}
		}
		results = append(results, res)
	}
	return writeJSON(w, status, results)
}

// componentStatus is GET /wechat_token/components/{name}: never a ticket,
// token or secret.
type componentStatus struct {
	Name               string        `json:"name"`
	ComponentAppID     string        `json:"component_appid"`
	TicketReceivedAt   *time.Time    `json:"verify_ticket_received_at,omitempty"`
	TicketAgeSeconds   *int64        `json:"verify_ticket_age_seconds,omitempty"`
	TicketError        string        `json:"verify_ticket_error,omitempty"`
	ComponentToken     *token.Status `json:"component_access_token,omitempty"`
	Authorizers        int           `json:"authorizers"`
	AuthorizerFailures int           `json:"authorizer_failures"`
}

// component serves /wechat_token/components/{name}[/authorizers].
func (adminAPI) component(w http.ResponseWriter, r *http.Request, path string) error {
	name, sub, _ := strings.Cut(path, "/")
	p := registry.Platform(name)
	if p == nil {
		return caddy.APIError{HTTPStatus: http.StatusNotFound, Err: fmt.Errorf("no component %q in the running config", name)}
	}
	switch {
	case sub == "authorizers" && r.Method == http.MethodPost:
		return importAuthorizers(w, r, p)
	case sub == "authorizers/sync" && r.Method == http.MethodPost:
		return syncAuthorizers(w, r, p)
	case sub == "authorizers" || sub == "authorizers/sync":
		return methodNotAllowed(w, http.MethodPost)
	case sub != "":
		return caddy.APIError{HTTPStatus: http.StatusNotFound, Err: fmt.Errorf("no such wechat_token admin route: %s", r.URL.Path)}
	case r.Method != http.MethodGet:
		return methodNotAllowed(w, http.MethodGet)
	}
	st := componentStatus{Name: name, ComponentAppID: p.ComponentAppID()}
	if t, err := p.VerifyTicket(r.Context()); err != nil {
		st.TicketError = err.Error()
	} else {
		age := int64(time.Since(t.ReceivedAt) / time.Second)
		st.TicketReceivedAt, st.TicketAgeSeconds = &t.ReceivedAt, &age
	}
	if m := p.ComponentToken().Current(); m != nil {
		s := m.Status()
		st.ComponentToken = &s
	}
	st.Authorizers, st.AuthorizerFailures = p.Counts(r.Context())
	return writeJSON(w, http.StatusOK, st)
}

// importAuthorizers is POST /wechat_token/components/{name}/authorizers:
// accounts authorized before the proxy, with their refresh tokens.
func importAuthorizers(w http.ResponseWriter, r *http.Request, p *credential.Platform) error {
	var accounts []credential.Imported
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 32<<20))
	if err := dec.Decode(&accounts); err != nil {
		return writeJSON(w, http.StatusBadRequest, map[string]string{"error": "want [{\"authorizer_appid\",\"authorizer_refresh_token\"}]: " + err.Error()})
	}
	if err := p.Import(r.Context(), accounts); err != nil {
		status := http.StatusBadRequest
		if errors.Is(err, credential.ErrStorage) {
			status = http.StatusBadGateway
		}
		return writeJSON(w, status, map[string]string{"error": err.Error()})
	}
	return writeJSON(w, http.StatusOK, map[string]int{"imported": len(accounts)})
}

// syncAuthorizers is POST /wechat_token/components/{name}/authorizers/sync:
// every account and its refresh token from WeChat's list.
func syncAuthorizers(w http.ResponseWriter, r *http.Request, p *credential.Platform) error {
	res, err := p.Sync(r.Context())
	if err != nil {
		return writeJSON(w, http.StatusBadGateway, map[string]any{"error": err.Error(), "listed": res.Listed, "written": res.Written})
	}
	return writeJSON(w, http.StatusOK, res)
}

func methodNotAllowed(w http.ResponseWriter, allow string) error {
	w.Header().Set("Allow", allow)
	return caddy.APIError{HTTPStatus: http.StatusMethodNotAllowed, Err: fmt.Errorf("method not allowed; use %s", allow)}
}

func writeJSON(w http.ResponseWriter, status int, v any) error {
	body, err := json.Marshal(v)
	if err != nil {
		return caddy.APIError{HTTPStatus: http.StatusInternalServerError, Err: err}
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, err = w.Write(body)
	return err
}

// Interface guard
var _ caddy.AdminRouter = adminAPI{}
