package caddymodule

import (
	"context"
	"encoding/xml"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"

	"github.com/caddy-wechat/caddy-wechat/caddymodule/credential"
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
	// The platform's AppID (component_appid), from the open platform's console.
	ComponentAppID string `json:"component_appid"`
	// The platform's AppSecret. Give it as a placeholder: the admin API shows the config.
	ComponentAppSecret string `json:"component_appsecret"`
	// The message token, which signs WeChat's pushes.
	Token string `json:"token"`
	// The 43-character EncodingAESKey that encrypts them.
	EncodingAESKey string `json:"encoding_aes_key"`
	// Where tokens are fetched. Default: https://api.weixin.qq.com.
	APIBase string `json:"api_base,omitempty"`
}

// provisionComponents validates the platforms and declares them (and
// their component_access_tokens). Errors never quote a secret or key.
func (a *App) provisionComponents() error {
	repl := caddy.NewReplacer()
	expand := func(s string) string { return strings.TrimSpace(repl.ReplaceKnown(s, "")) }
	for name, c := range a.Components {
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
		base, err := checkAPIBase(expand(c.APIBase))
		if err != nil {
			return fmt.Errorf("wechat: component %s: %w", name, err)
		}
		timing, err := (&CredentialOptions{}).timing() // a platform's renewal takes the defaults
		if err != nil {
			return err
		}
		spec := credential.Spec{Kind: credential.Component, ID: appID, Secret: secret, APIBase: base, Timing: timing}
		if _, err := a.creds.DeclarePlatform(name, spec, cipher); err != nil {
			return err
		}
	}
	return nil
}

// ComponentEvents receives what WeChat pushes to a platform's event URL:
// it checks the signature and the appid, decrypts, keeps the
// component_verify_ticket for the fleet, and answers "success".
type ComponentEvents struct {
	// The platform's name in the wechat app.
	Component string `json:"component"`

	platform *credential.Platform
	logger   *zap.Logger
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
	app, err := wechatApp(ctx, "wechat_component_events")
	if err != nil {
		return err
	}
	if e.platform = app.creds.Platform(e.Component); e.platform == nil {
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
	plain, err := e.platform.Cipher.Open(q.Get("timestamp"), q.Get("nonce"), q.Get("msg_signature"), env.Encrypt)
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
		// Kept even if WeChat hangs up meanwhile: it is the fleet's only way
		// to a component_access_token until the next push.
		ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), 5*time.Second)
		err := e.platform.KeepVerifyTicket(ctx, msg.ComponentVerifyTicket, msg.CreateTime)
		cancel()
		if err != nil {
			e.logger.Error("cannot keep the component_verify_ticket; WeChat will push another in 10 minutes",
				zap.String("component", e.Component), zap.Error(err))
			return writeWeChatError(w, http.StatusServiceUnavailable, "wechat_token: cannot store the ticket")
		}
	case "authorized", "updateauthorized", "unauthorized":
		// Applied detached from this request: WeChat hangs up after 5 s,
		// which must not cancel a code exchange under way; its re-delivery
		// waits for the same work.
		ev := credential.Event{InfoType: msg.InfoType, AuthorizerAppID: msg.AuthorizerAppID,
			AuthorizationCode: msg.AuthorizationCode, CreateTime: msg.CreateTime}
		if err := e.platform.Apply(r.Context(), ev); err != nil {
			if r.Context().Err() != nil {
				return r.Context().Err() // WeChat is gone; the work goes on
			}
			e.logger.Error("authorization event not applied; WeChat will deliver it again", zap.String("component", e.Component),
				zap.String("info_type", msg.InfoType), zap.String("authorizer_appid", msg.AuthorizerAppID), zap.Error(err))
			return writeWeChatError(w, http.StatusServiceUnavailable, "wechat_token: the authorization event could not be applied")
		}
		e.logger.Info("authorization event applied", zap.String("component", e.Component),
			zap.String("info_type", msg.InfoType), zap.String("authorizer_appid", msg.AuthorizerAppID))
	default:
		e.logger.Info("push of a kind the proxy does not act on", zap.String("component", e.Component), zap.String("info_type", msg.InfoType))
	}
	w.Header().Set("Content-Type", "text/plain")
	_, err = io.WriteString(w, "success")
	return err
}

// Interface guards
var (
	_ caddy.Provisioner           = (*ComponentEvents)(nil)
	_ caddyhttp.MiddlewareHandler = (*ComponentEvents)(nil)
)
