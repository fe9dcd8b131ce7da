package caddymodule

import (
	"context"
	"encoding/json"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"

	"github.com/caddy-wechat/caddy-wechat/caddymodule/token"
	"github.com/caddy-wechat/caddy-wechat/caddymodule/wxcrypt"
)

func init() {
	caddy.RegisterModule(ComponentEvents{})
	httpcaddyfile.RegisterHandlerDirective("wechat_component_events", parseComponentEvents)
	httpcaddyfile.RegisterDirectiveOrder("wechat_component_events", httpcaddyfile.Before, "respond")
}

// ComponentConfig is a third-party platform's credentials, named in the
// wechat app. Placeholders such as {env.WX_COMPONENT_APPSECRET} are expanded.
type ComponentConfig struct {
	ComponentAppID     string `json:"component_appid"`
	ComponentAppSecret string `json:"component_appsecret"`
	// The message token, which signs WeChat's pushes.
	Token string `json:"token"`
	// The 43-character EncodingAESKey that encrypts them.
	EncodingAESKey string `json:"encoding_aes_key"`
	// Where tokens are fetched. Default: https://api.weixin.qq.com.
	APIBase string `json:"api_base,omitempty"`
}

// component is a platform of this config, validated.
type component struct {
	name   string
	spec   credentialSpec // its component_access_token
	cipher *wxcrypt.Cipher
	ref    *credentialRef
	// authorizers are this config's managers of the accounts' tokens.
	authorizers *authorizerSet
}

func parseComponent(d *caddyfile.Dispenser) (string, *ComponentConfig, error) {
	var name string
	if !d.Args(&name) || d.NextArg() {
		return "", nil, d.Errf("wechat: component takes one name, then a block")
	}
	c := &ComponentConfig{}
	fields := map[string]*string{
		"component_appid": &c.ComponentAppID, "component_appsecret": &c.ComponentAppSecret,
		"token": &c.Token, "encoding_aes_key": &c.EncodingAESKey, "api_base": &c.APIBase,
	}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		dst, ok := fields[d.Val()]
		if !ok {
			return "", nil, d.Errf("wechat: component %s: unrecognized option %q", name, d.Val())
		}
		if err := singleArg(d, dst); err != nil {
			return "", nil, err
		}
	}
	return name, c, nil
}

// provisionComponents validates the platforms and declares their
// component_access_tokens. Errors never quote a secret or key.
func (a *App) provisionComponents() error {
	a.components = map[string]*component{}
	repl := caddy.NewReplacer()
	for name, c := range a.Components {
		expand := func(s string) string { return strings.TrimSpace(repl.ReplaceKnown(s, "")) }
		appID, secret, msgToken, aesKey := expand(c.ComponentAppID), expand(c.ComponentAppSecret), expand(c.Token), expand(c.EncodingAESKey)
		for option, v := range map[string]string{"component_appid": appID, "component_appsecret": secret, "token": msgToken, "encoding_aes_key": aesKey} {
			if v == "" {
				return fmt.Errorf("wechat: component %s: %s is required (empty once placeholders are expanded)", name, option)
			}
		}
		cipher, err := wxcrypt.New(msgToken, aesKey, appID)
		if err != nil {
			return fmt.Errorf("wechat: component %s: %w", name, err)
		}
		h := Handler{AppID: appID, AppSecret: secret, APIBase: c.APIBase}
		spec, err := h.spec()
		if err != nil {
			return fmt.Errorf("wechat: component %s: %w", name, err)
		}
		spec.api = token.Component
		ref, err := a.declare(spec, "wechat component "+name)
		if err != nil {
			return err
		}
		a.components[name] = &component{name: name, spec: spec, cipher: cipher, ref: ref,
			authorizers: &authorizerSet{managers: map[string]*token.Manager{}}}
	}
	return nil
}

// verifyTicketKey is where the fleet keeps a platform's latest
// component_verify_ticket.
func verifyTicketKey(appID string) string {
	return "wechat_token/component/" + appID + ".verify_ticket.json"
}

type verifyTicket struct {
	Ticket     string    `json:"component_verify_ticket"`
	CreateTime int64     `json:"create_time"`
	ReceivedAt time.Time `json:"received_at"`
}

// verifyTicketReader returns the ticket reader of the platform appID's
// token fetcher: the latest ticket pushed to any instance of the fleet.
func (a *App) verifyTicketReader(appID string) func(ctx context.Context) (string, error) {
	return func(ctx context.Context) (string, error) {
		t, err := a.loadVerifyTicket(ctx, appID)
		if err != nil {
			return "", err
		}
		return t.Ticket, nil
	}
}

func (a *App) loadVerifyTicket(ctx context.Context, appID string) (verifyTicket, error) {
	var t verifyTicket
	data, err := a.storage.Load(ctx, verifyTicketKey(appID))
	if err != nil {
		return t, fmt.Errorf("no component_verify_ticket received yet (WeChat pushes one every 10 minutes to the event URL): %w", err)
	}
	if err := json.Unmarshal(data, &t); err != nil || t.Ticket == "" {
		return t, errors.New("the stored component_verify_ticket is unreadable")
	}
	return t, nil
}

// ComponentEvents receives what WeChat pushes to a platform's event URL:
// it checks the signature and the appid, decrypts, keeps the
// component_verify_ticket for the fleet, and answers "success".
type ComponentEvents struct {
	// The platform's name in the wechat app.
	Component string `json:"component"`

	comp   *component
	app    *App
	logger *zap.Logger
}

// CaddyModule returns the Caddy module information.
func (ComponentEvents) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.wechat_component_events",
		New: func() caddy.Module { return new(ComponentEvents) },
	}
}

func parseComponentEvents(h httpcaddyfile.Helper) (caddyhttp.MiddlewareHandler, error) {
	var e ComponentEvents
	h.Next()
	if !h.Args(&e.Component) || h.NextArg() {
		return nil, h.Err("wechat_component_events takes the platform's name: wechat_component_events <name>")
	}
	if h.NextBlock(0) {
		return nil, h.Err("wechat_component_events takes no block")
	}
	return &e, nil
}

// Provision finds the platform in the wechat app.
func (e *ComponentEvents) Provision(ctx caddy.Context) error {
	e.logger = ctx.Logger()
	app, err := ctx.App("wechat")
	if err != nil {
		return fmt.Errorf("wechat_component_events: %w", err)
	}
	e.app = app.(*App)
	if e.comp = e.app.components[e.Component]; e.comp == nil {
		return fmt.Errorf("wechat_component_events: no component %q in the wechat global option", e.Component)
	}
	return nil
}

// maxPush bounds a push's body; WeChat's are a few KiB.
const maxPush = 64 << 10

// pushEnvelope is the outer XML of a push.
type pushEnvelope struct {
	Encrypt string `xml:"Encrypt"`
}

// pushMessage is the decrypted XML of a push.
type pushMessage struct {
	AppID                 string `xml:"AppId"`
	CreateTime            int64  `xml:"CreateTime"`
	InfoType              string `xml:"InfoType"`
	ComponentVerifyTicket string `xml:"ComponentVerifyTicket"`
	AuthorizerAppID       string `xml:"AuthorizerAppid"`
	AuthorizationCode     string `xml:"AuthorizationCode"`
}

// ServeHTTP handles one push; it never calls next.
func (e *ComponentEvents) ServeHTTP(w http.ResponseWriter, r *http.Request, _ caddyhttp.Handler) error {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", "POST")
		return writeWeChatError(w, http.StatusMethodNotAllowed, "wechat_token: the event URL takes WeChat's POSTs only")
	}
	q := r.URL.Query()
	if q.Get("encrypt_type") != "aes" {
		return writeWeChatError(w, http.StatusBadRequest, "wechat_token: only encrypted pushes (encrypt_type=aes) are accepted")
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, maxPush+1))
	if err != nil || len(body) > maxPush {
		return writeWeChatError(w, http.StatusBadRequest, "wechat_token: the push could not be read, or is too large")
	}
	var env pushEnvelope
	if err := xml.Unmarshal(body, &env); err != nil || env.Encrypt == "" {
		return writeWeChatError(w, http.StatusBadRequest, "wechat_token: the push is not WeChat's XML with an Encrypt element")
	}
	plain, err := e.comp.cipher.Open(q.Get("timestamp"), q.Get("nonce"), q.Get("msg_signature"), env.Encrypt)
	if err != nil {
		e.logger.Warn("push refused", zap.String("component", e.Component), zap.Error(err))
		return writeWeChatError(w, http.StatusForbidden, "wechat_token: push refused: "+err.Error())
	}
	var msg pushMessage
	if err := xml.Unmarshal(plain, &msg); err != nil {
		return writeWeChatError(w, http.StatusBadRequest, "wechat_token: the decrypted push is not XML")
	}
	switch msg.InfoType {
	case "component_verify_ticket":
		if err := e.keepTicket(r.Context(), msg); err != nil {
			e.logger.Error("cannot keep the component_verify_ticket; WeChat will push another in 10 minutes",
				zap.String("component", e.Component), zap.Error(err))
			return writeWeChatError(w, http.StatusServiceUnavailable, "wechat_token: cannot store the ticket")
		}
	case "authorized", "updateauthorized":
		// The code is good for a short while: exchange it at once.
		ctx, cancel := context.WithTimeout(r.Context(), 15*time.Second)
		appID, err := e.app.queryAuth(ctx, e.comp, msg.AuthorizationCode)
		cancel()
		if err != nil {
			e.logger.Error("authorization not recorded: api_query_auth failed", zap.String("component", e.Component),
				zap.String("authorizer_appid", msg.AuthorizerAppID), zap.Error(err))
			return writeWeChatError(w, http.StatusServiceUnavailable, "wechat_token: the authorization could not be recorded")
		}
		e.logger.Info("account authorized the platform", zap.String("component", e.Component), zap.String("authorizer_appid", appID))
	case "unauthorized":
		if err := e.app.forgetAuthorizer(r.Context(), e.comp, msg.AuthorizerAppID); err != nil {
			e.logger.Error("cannot forget the account", zap.String("authorizer_appid", msg.AuthorizerAppID), zap.Error(err))
			return writeWeChatError(w, http.StatusServiceUnavailable, "wechat_token: cannot forget the account")
		}
		e.logger.Info("account ended its authorization", zap.String("component", e.Component), zap.String("authorizer_appid", msg.AuthorizerAppID))
	default:
		e.logger.Info("push of a kind the proxy does not act on", zap.String("component", e.Component), zap.String("info_type", msg.InfoType))
	}
	w.Header().Set("Content-Type", "text/plain")
	_, err = io.WriteString(w, "success")
	return err
}

// keepTicket stores a pushed ticket for the fleet unless a newer one is
// there, and starts the platform's token fetch if it has none yet.
func (e *ComponentEvents) keepTicket(ctx context.Context, msg pushMessage) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	appID := e.comp.spec.appID
	if prev, err := e.app.loadVerifyTicket(ctx, appID); err == nil && prev.CreateTime > msg.CreateTime {
		return nil // a repeat of an older push
	}
	data, err := json.Marshal(verifyTicket{Ticket: msg.ComponentVerifyTicket, CreateTime: msg.CreateTime, ReceivedAt: time.Now()})
	if err != nil {
		return err
	}
	if err := e.app.storage.Store(ctx, verifyTicketKey(appID), data); err != nil {
		return err
	}
	if m := e.comp.ref.manager.Load(); m != nil && !m.Status().Valid {
		// The first ticket: fetch the token now rather than at the next
		// backoff of the renewal loop.
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			if _, _, err := m.RenewNow(ctx, false); err != nil {
				e.logger.Warn("component_access_token not fetched with the new ticket", zap.Error(err))
			}
		}()
	}
	return nil
}

// Interface guards
var (
	_ caddy.Provisioner           = (*ComponentEvents)(nil)
	_ caddyhttp.MiddlewareHandler = (*ComponentEvents)(nil)
)

// liveComponents are the platforms of the running configs, by name, with
// the apps that started them, oldest first: the admin API reports the
// newest; when it stops (a reload that failed), the one before serves again.
var liveComponents = struct {
	sync.Mutex
	byName map[string][]liveComponent
}{byName: map[string][]liveComponent{}}

type liveComponent struct {
	app  *App
	comp *component
}

// startComponents publishes this config's platforms to the admin API.
func (a *App) startComponents() {
	liveComponents.Lock()
	defer liveComponents.Unlock()
	for name, c := range a.components {
		liveComponents.byName[name] = append(liveComponents.byName[name], liveComponent{a, c})
	}
}

// stopComponents withdraws the platforms this config published.
func (a *App) stopComponents() {
	liveComponents.Lock()
	defer liveComponents.Unlock()
	for name, list := range liveComponents.byName {
		list = slices.DeleteFunc(list, func(lc liveComponent) bool { return lc.app == a })
		if len(list) == 0 {
			delete(liveComponents.byName, name)
		} else {
			liveComponents.byName[name] = list
		}
	}
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

func serveComponent(w http.ResponseWriter, r *http.Request, path string) error {
	name, sub, _ := strings.Cut(path, "/")
	liveComponents.Lock()
	list := liveComponents.byName[name]
	liveComponents.Unlock()
	if len(list) == 0 {
		return caddy.APIError{HTTPStatus: http.StatusNotFound, Err: fmt.Errorf("no component %q in the running config", name)}
	}
	lc := list[len(list)-1]
	switch {
	case sub == "authorizers" && r.Method == http.MethodPost:
		return importAuthorizers(w, r, lc)
	case sub == "authorizers":
		return methodNotAllowed(w, http.MethodPost)
	case sub != "":
		return caddy.APIError{HTTPStatus: http.StatusNotFound, Err: fmt.Errorf("no such wechat_token admin route: %s", r.URL.Path)}
	case r.Method != http.MethodGet:
		return methodNotAllowed(w, http.MethodGet)
	}
	st := componentStatus{Name: name, ComponentAppID: lc.comp.spec.appID}
	if t, err := lc.app.loadVerifyTicket(r.Context(), lc.comp.spec.appID); err != nil {
		st.TicketError = err.Error()
	} else {
		age := int64(time.Since(t.ReceivedAt) / time.Second)
		st.TicketReceivedAt, st.TicketAgeSeconds = &t.ReceivedAt, &age
	}
	if m := lc.comp.ref.manager.Load(); m != nil {
		s := m.Status()
		st.ComponentToken = &s
	}
	st.Authorizers, st.AuthorizerFailures = lc.app.authorizerCounts(r.Context(), lc.comp)
	return writeJSON(w, http.StatusOK, st)
}
