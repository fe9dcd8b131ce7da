package caddymodule

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"

	"github.com/caddy-wechat/caddy-wechat/caddymodule/credential"
	"github.com/caddy-wechat/caddy-wechat/caddymodule/wxhttp"
)

func init() {
	caddy.RegisterModule(Messages{})
	httpcaddyfile.RegisterHandlerDirective("wechat_messages", parseMessages)
	// It answers WeChat itself and hands the app the plaintext through
	// what follows (reverse_proxy).
	httpcaddyfile.RegisterDirectiveOrder("wechat_messages", httpcaddyfile.Before, "reverse_proxy")
}

// Messages receives what WeChat pushes to an app's message URL (服务器配置
// for Official Accounts, 消息推送 for Mini Programs, 接收消息 for WeCom
// apps, a platform's 消息与事件接收URL): it answers the URL check, verifies
// and decrypts every push, hands the app the plaintext message through
// the next handler (reverse_proxy to the app), and seals the app's passive
// reply, so that app servers hold neither the Token nor the
// EncodingAESKey. Each message reaches the app once across the fleet,
// though WeChat re-delivers it.
type Messages struct {
	// The Official Account's or Mini Program's AppID; or, for a WeCom
	// app, corp_id instead. Placeholders are expanded.
	AppID string `json:"app_id,omitempty"`
	// A WeCom app's corp ID, instead of app_id. Placeholders are expanded.
	CorpID string `json:"corp_id,omitempty"`

	// The Token of the message push settings. Give it as a placeholder
	// ({env.WECHAT_PUSH_TOKEN}).
	Token string `json:"token,omitempty"`

	// The 43-character EncodingAESKey; without it, plaintext mode
	// (Official Accounts and Mini Programs only). Give it as a placeholder.
	EncodingAESKey string `json:"encoding_aes_key,omitempty"`

	// A platform of the wechat app, for its accounts' messages: its token,
	// key and component_appid are used, and Authorizer must be "path" (the
	// first path segment is the account's appid, $APPID$ in the console,
	// removed before the request goes on).
	Component string `json:"component,omitempty"`
	// With component: "path", the only value (the account is the first path segment).
	Authorizer string `json:"authorizer,omitempty"`

	receiver   *credential.MessageReceiver
	perAccount bool
	app        *App
	stats      *receiverStats
	logger     *zap.Logger
}

// CaddyModule returns the Caddy module information.
func (Messages) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.wechat_messages",
		New: func() caddy.Module { return new(Messages) },
	}
}

// maxMessage bounds a push's body and the app's reply; WeChat's are a few
// KiB.
const maxMessage = 1 << 20

// deliveries deliver every message of this process once (for the fleet:
// with the storage).
var deliveries = credential.NewDeliveries()

func parseMessages(h httpcaddyfile.Helper) (caddyhttp.MiddlewareHandler, error) {
	var m Messages
	err := m.UnmarshalCaddyfile(h.Dispenser)
	return &m, err
}

// UnmarshalCaddyfile reads:
//
//	wechat_messages {
//		app_id           <appid>        (or corp_id <corpid>)
//		token            <push token>
//		encoding_aes_key <43 characters> (omit for plaintext mode)
//	}
//	wechat_messages {
//		component  <name>
//		authorizer path
//	}
func (m *Messages) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next()
	if d.NextArg() {
		return d.Errf("wechat_messages takes no arguments on its line; configure it in a block")
	}
	fields := map[string]*string{"app_id": &m.AppID, "corp_id": &m.CorpID, "token": &m.Token,
		"encoding_aes_key": &m.EncodingAESKey, "component": &m.Component, "authorizer": &m.Authorizer}
	seen := map[string]bool{}
	for d.NextBlock(0) {
		option := d.Val()
		dst, ok := fields[option]
		if !ok {
			return d.Errf("unrecognized wechat_messages option %q", option)
		}
		if seen[option] {
			return d.Errf("%s: given more than once", option)
		}
		seen[option] = true
		if err := singleArg(d, dst); err != nil {
			return err
		}
	}
	return nil
}

// Provision checks the keys (errors name the option and the variable,
// never a value) and finds the platform of a platform's receiver.
func (m *Messages) Provision(ctx caddy.Context) error {
	const directive = "wechat_messages"
	m.logger = ctx.Logger()
	app, err := wechatApp(ctx, directive)
	if err != nil {
		return err
	}
	m.app = app
	app.messages = true
	if m.Component != "" {
		if m.AppID != "" || m.CorpID != "" || m.Token != "" || m.EncodingAESKey != "" {
			return fmt.Errorf("%s: component %s takes the platform's token and key; give no app_id, corp_id, token or encoding_aes_key", directive, m.Component)
		}
		if m.Authorizer != "path" {
			return fmt.Errorf("%s: component %s needs authorizer path (the URL /$APPID$/...); the platform's own pushes go to wechat_component_events", directive, m.Component)
		}
		p := app.creds.Platform(m.Component)
		if p == nil {
			return fmt.Errorf("%s: no component %q in the wechat global option", directive, m.Component)
		}
		m.receiver, m.perAccount = p.MessageReceiver(), true
	} else {
		if m.Authorizer != "" {
			return fmt.Errorf("%s: authorizer takes a component", directive)
		}
		if m.receiver, err = m.appReceiver(); err != nil {
			return fmt.Errorf("%s: %w", directive, err)
		}
	}
	m.stats = messageStatsOf(m.receiver)
	return registerMetrics(ctx.GetMetricsRegistry())
}

// appReceiver is the receiver of an Official Account, Mini Program or
// WeCom app.
func (m *Messages) appReceiver() (*credential.MessageReceiver, error) {
	kind, idOption, rawID := credential.OfficialAccount, "app_id", m.AppID
	switch {
	case m.AppID != "" && m.CorpID != "":
		return nil, errors.New("give app_id or corp_id, not both")
	case m.CorpID != "":
		kind, idOption, rawID = credential.WeComApp, "corp_id", m.CorpID
	case m.AppID == "":
		return nil, errors.New("app_id (or corp_id, or component) is required")
	}
	repl := caddy.NewReplacer()
	id := strings.TrimSpace(repl.ReplaceKnown(rawID, ""))
	if id == "" {
		return nil, fmt.Errorf("%s is empty once placeholders are expanded (%s)%s", idOption, rawID, unsetPlaceholders(rawID))
	}
	expand := func(option, raw string) (string, error) {
		v := strings.TrimSpace(repl.ReplaceKnown(raw, ""))
		if raw != "" && v == "" {
			return "", fmt.Errorf("%s (%s %s) is empty once placeholders are expanded (%s)%s", option, idOption, id, placeholdersOnly(raw), unsetPlaceholders(raw))
		}
		return v, nil
	}
	token, err := expand("token", m.Token)
	if err != nil {
		return nil, err
	}
	key, err := expand("encoding_aes_key", m.EncodingAESKey)
	if err != nil {
		return nil, err
	}
	r, err := credential.NewMessageReceiver(kind, id, token, key)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", idOption, id, err)
	}
	return r, nil
}

// ServeHTTP answers WeChat: the URL check (GET) and pushes (POST), the
// latter once delivered to next.
func (m *Messages) ServeHTTP(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler) error {
	account := m.receiver.ID
	if m.perAccount {
		if !strings.Contains(strings.TrimPrefix(r.URL.Path, "/"), "/") {
			r.URL.Path += "/" // /$APPID$ itself
		}
		id, _, err := cutAccount(r)
		if err != nil {
			return writeWeChatError(w, http.StatusNotFound, "wechat_token: the path must start with the account's appid: /<authorizer_appid>/...")
		}
		account = id
	}
	now := time.Now()
	switch r.Method {
	case http.MethodGet, http.MethodHead:
		echo, err := m.receiver.CheckURL(r.URL.Query(), now)
		if err != nil {
			return m.refuse(w, account, err)
		}
		m.stats.urlChecks.Add(1)
		w.Header().Set("Content-Type", "text/plain")
		_, err = io.WriteString(w, echo)
		return err
	case http.MethodPost:
	default:
		w.Header().Set("Allow", "GET, POST")
		return writeWeChatError(w, http.StatusMethodNotAllowed, "wechat_token: the message URL takes WeChat's GET (URL check) and POST (pushes)")
	}
	body, err := readPush(r)
	if err != nil || len(body) > maxMessage {
		return m.refuse(w, account, &credential.Refusal{Reason: credential.RefusedMalformed, Err: errors.New("the push could not be read, or is too large")})
	}
	query := r.URL.Query()
	push, err := m.receiver.Open(query, body, now)
	if err != nil {
		return m.refuse(w, account, err)
	}
	key, err := m.receiver.MessageKey(push)
	if err != nil {
		return m.refuse(w, account, err)
	}
	m.stats.received.Add(1)
	toApp, rec := appRequest(r, push, account)
	answer, repeat, err := deliveries.Deliver(r.Context(), m.app.creds.Storage(), m.receiver.ID+"/"+account, key,
		func(ctx context.Context) (credential.Answer, error) { return m.deliver(ctx, toApp, rec, next) })
	if repeat {
		m.stats.deduplicated.Add(1)
	}
	if err != nil {
		if r.Context().Err() != nil {
			return r.Context().Err() // WeChat hung up; the delivery goes on, its answer kept for the re-delivery
		}
		status := http.StatusBadGateway
		if errors.Is(err, credential.ErrDeliveringElsewhere) {
			status = http.StatusServiceUnavailable
		}
		m.logger.Warn("message not delivered; WeChat will deliver it again", zap.String("receiver", m.receiver.ID),
			zap.String("account", account), zap.Error(err))
		return writeWeChatError(w, status, "wechat_token: the message could not be delivered to the app: "+err.Error())
	}
	reply := bytes.TrimSpace(answer.Body)
	if len(reply) == 0 || string(reply) == "success" {
		w.Header().Set("Content-Type", "text/plain")
		_, err = io.WriteString(w, "success")
		return err
	}
	sealed, err := m.receiver.Seal(push, reply, time.Now())
	if err != nil {
		return writeWeChatError(w, http.StatusInternalServerError, "wechat_token: the reply could not be sealed")
	}
	w.Header().Set("Content-Type", messageType(push))
	_, err = w.Write(sealed)
	return err
}

// readPush reads a push's body, up to maxMessage and a byte, into a
// buffer of its Content-Length when it has one.
func readPush(r *http.Request) ([]byte, error) {
	if r.ContentLength < 0 || r.ContentLength > maxMessage {
		return io.ReadAll(io.LimitReader(r.Body, maxMessage+1))
	}
	body := make([]byte, r.ContentLength)
	if _, err := io.ReadFull(r.Body, body); err != nil {
		return nil, err
	}
	return body, nil
}

// messageType is the Content-Type of a message in push's format.
func messageType(p credential.Push) string {
	if p.JSON {
		return "application/json"
	}
	return "text/xml"
}

// pushParams are the query parameters of WeChat's signature, which the
// app does not get.
var pushParams = []string{"signature", "msg_signature", "timestamp", "nonce", "encrypt_type"}

// appRequest is the app's request for a push: a POST of the plaintext
// message, on a context that WeChat hanging up does not cancel, and the
// answerRecorder it answers to.
func appRequest(r *http.Request, push credential.Push, account string) (*http.Request, *answerRecorder) {
	rec := &answerRecorder{header: http.Header{}}
	// The push's replacer and variables are shared: the delivery runs on
	// the push's goroutine, before anything (the access log) reads them.
	// What it changes is its own: the header, the URL, the body.
	r2 := r.WithContext(context.WithoutCancel(r.Context()))
	r2.Header = r.Header.Clone()
	u := *r.URL
	r2.URL = &u
	r2.Method = http.MethodPost
	r2.URL.RawQuery = wxhttp.StripParams(r.URL.RawQuery, pushParams...)
	r2.Body = io.NopCloser(bytes.NewReader(push.Plain))
	r2.ContentLength = int64(len(push.Plain))
	r2.TransferEncoding = nil
	r2.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(push.Plain)), nil }
	for name := range r2.Header {
		if strings.HasPrefix(http.CanonicalHeaderKey(name), "X-Wechat-") {
			r2.Header.Del(name)
		}
	}
	r2.Header.Set("X-WeChat-AppID", account)
	r2.Header.Set("Content-Type", messageType(push))
	r2.Header.Del("Accept-Encoding") // the answer is read, and kept
	r2.Header.Del("Content-Encoding")
	return r2, rec
}

// deliver sends the app's request through next, bounded by ctx (the
// delivery's, detached from WeChat's), and reads the answer.
func (m *Messages) deliver(ctx context.Context, r *http.Request, rec *answerRecorder, next caddyhttp.Handler) (credential.Answer, error) {
	reqCtx, cancel := context.WithCancel(r.Context())
	defer cancel()
	stop := context.AfterFunc(ctx, cancel)
	defer stop()
	began := time.Now()
	err := next.ServeHTTP(rec, r.WithContext(reqCtx))
	m.stats.observe(time.Since(began))
	switch {
	case err != nil:
		return credential.Answer{}, fmt.Errorf("the app: %w", err)
	case rec.status >= 400:
		return credential.Answer{}, fmt.Errorf("the app answered HTTP %d", rec.status)
	case rec.overflow:
		return credential.Answer{}, fmt.Errorf("the app's reply is larger than %d bytes", maxMessage)
	}
	m.stats.forwarded.Add(1)
	reply := bytes.TrimSpace(rec.body.Bytes())
	if len(reply) == 0 || string(reply) == "success" {
		return credential.Answer{}, nil // kept as nothing: most answers are this
	}
	return credential.Answer{Body: bytes.Clone(reply)}, nil
}

// refuse answers a refused push or URL check with 403, whatever failed
// (a push without its signature's parameters or envelope fails its check
// as a forged one does), counting it by reason; nothing of the push is
// logged.
func (m *Messages) refuse(w http.ResponseWriter, account string, err error) error {
	reason := credential.RefusedMalformed
	var refusal *credential.Refusal
	if errors.As(err, &refusal) {
		reason = refusal.Reason
	}
	m.stats.refuse(reason, account)
	m.logger.Info("push refused", zap.String("receiver", m.receiver.ID), zap.String("account", account), zap.String("reason", reason))
	return writeWeChatError(w, http.StatusForbidden, "wechat_token: push refused ("+reason+")")
}

// answerRecorder keeps the app's answer, up to maxMessage.
type answerRecorder struct {
	header   http.Header
	status   int
	body     bytes.Buffer
	overflow bool
}

func (a *answerRecorder) Header() http.Header { return a.header }

func (a *answerRecorder) WriteHeader(code int) {
	if a.status == 0 && code >= 200 {
		a.status = code
	}
}

func (a *answerRecorder) Write(p []byte) (int, error) {
	if a.status == 0 {
		a.status = http.StatusOK
	}
	if a.body.Len()+len(p) > maxMessage {
		a.overflow = true
		return len(p), nil
	}
	return a.body.Write(p)
}

// Flush implements http.Flusher; the answer is kept whole anyway.
func (a *answerRecorder) Flush() {}

// Interface guards
var (
	_ caddy.Provisioner           = (*Messages)(nil)
	_ caddyhttp.MiddlewareHandler = (*Messages)(nil)
	_ caddyfile.Unmarshaler       = (*Messages)(nil)
)
