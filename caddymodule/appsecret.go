package caddymodule

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/caddy-wechat/caddy-wechat/caddymodule/wxhttp"
)

// forwardWithSecret sends a call WeChat authenticates with the AppSecret
// to api_base itself, the app's appid and secret in its query: the secret
// reaches WeChat's host and no other, whatever the handlers after this
// one would send it to (a failover upstream, an egress recorder, a
// mistyped address). The answer (a user's session_key or OAuth token)
// streams back as it is, never read or logged, and a WeChat error in it
// refreshes nothing: it is about the code, not a token.
func (h *Handler) forwardWithSecret(w http.ResponseWriter, r *http.Request) error {
	target := h.apiBase + r.URL.EscapedPath() + "?" + wxhttp.WithAppSecret(r.URL.RawQuery, h.appID, h.secret)
	ctx, cancel := context.WithTimeout(r.Context(), secretCallTimeout)
	defer cancel()
	var body io.Reader
	if r.ContentLength != 0 && r.Body != nil && r.Body != http.NoBody {
		body = r.Body
	}
	req, err := http.NewRequestWithContext(ctx, r.Method, target, body)
	if err != nil {
		return writeWeChatError(w, http.StatusBadRequest, "wechat_token: the call cannot be sent to WeChat")
	}
	for name, values := range r.Header {
		if !hopByHop(name) {
			req.Header[name] = values
		}
	}
	req.Header.Del("Accept-Encoding") // the transport asks for gzip and decompresses
	req.ContentLength = r.ContentLength
	resp, err := secretCallClient.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err // the URL holds the secret
		}
		cause := strings.ReplaceAll(err.Error(), h.secret, "[app_secret]")
		h.logger.Error("AppSecret call failed before WeChat answered", zap.String("path", r.URL.Path), zap.String("error", cause))
		status := http.StatusBadGateway
		if errors.Is(err, context.DeadlineExceeded) {
			status = http.StatusGatewayTimeout
		}
		return writeWeChatError(w, status, "wechat_token: WeChat's API server could not be reached or broke off: "+cause)
	}
	defer resp.Body.Close()
	for name, values := range resp.Header {
		if !hopByHop(name) {
			w.Header()[name] = values
		}
	}
	w.WriteHeader(resp.StatusCode)
	_, err = io.Copy(w, resp.Body)
	return err
}

// secretCallTimeout bounds a call made with the AppSecret.
const secretCallTimeout = 30 * time.Second

// secretCallClient sends the AppSecret calls: the credential endpoints'
// transport, never following a redirect (it would take the secret in
// the query wherever it points): a redirect is answered as it came.
var secretCallClient = &http.Client{
	Transport:     fetchClient.Transport,
	CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
}

// hopByHop reports the headers that belong to one connection, not to
// the call.
func hopByHop(name string) bool {
	switch http.CanonicalHeaderKey(name) {
	case "Connection", "Keep-Alive", "Proxy-Authenticate", "Proxy-Authorization", "Te", "Trailer", "Transfer-Encoding", "Upgrade", "Host", "Content-Length":
		return true
	}
	return false
}
