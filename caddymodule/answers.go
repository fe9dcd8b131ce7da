package caddymodule

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"
)

// Whatever the proxy answers by itself is shaped like a WeChat error,
// {"errcode":-1,"errmsg":"wechat_token: ..."}, with Content-Type exactly
// application/json: some SDKs (the Node wechat-api among them) recognise an
// error only by that exact type, and would take anything else, an empty
// 502 included, for a successful media download.

// writeWeChatError answers {"errcode":-1,"errmsg":errmsg} with status.
func writeWeChatError(w http.ResponseWriter, status int, errmsg string) error {
	body, err := json.Marshal(struct {
		Errcode int    `json:"errcode"`
		Errmsg  string `json:"errmsg"`
	}{-1, errmsg})
	if err != nil {
		return caddyhttp.Error(status, err)
	}
	h := w.Header()
	for _, name := range []string{"Content-Length", "Content-Encoding", "Content-Disposition", "Etag", "Last-Modified", "Content-Range"} {
		h.Del(name) // describing a body this is not
	}
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_, err = w.Write(body)
	return err
}

// unavailable answers at once when no valid token exists.
func unavailable(w http.ResponseWriter, cause error) error {
	return writeWeChatError(w, http.StatusServiceUnavailable, "wechat_token: "+cause.Error())
}

// forward passes the request on; a failure before anything reached the
// client is answered in WeChat's shape. tok is redacted from what is logged.
func (h *Handler) forward(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler, tok string) error {
	tw := &startedWriter{ResponseWriterWrapper: &caddyhttp.ResponseWriterWrapper{ResponseWriter: w}}
	err := next.ServeHTTP(tw, r)
	if err != nil && !tw.started {
		return h.answerFailure(w, r, err, tok)
	}
	return err
}

// answerFailure answers err, which the handlers after this one (normally
// reverse_proxy: WeChat refused the connection, reset it, or did not answer
// in time) returned before anything reached the client. Caddy would answer
// with an empty body. A client that is gone gets nothing.
func (h *Handler) answerFailure(w http.ResponseWriter, r *http.Request, err error, tok string) error {
	if r.Context().Err() != nil {
		return err
	}
	status := http.StatusBadGateway
	var handlerErr caddyhttp.HandlerError
	if errors.As(err, &handlerErr) && handlerErr.StatusCode >= 400 {
		status = handlerErr.StatusCode
	} else if errors.Is(err, context.DeadlineExceeded) {
		status = http.StatusGatewayTimeout
	}
	if status == 499 { // Caddy's "client closed the request"
		return err
	}
	cause := err.Error()
	if handlerErr.Err != nil {
		cause = handlerErr.Err.Error()
	}
	if tok != "" {
		cause = strings.ReplaceAll(cause, tok, "[token]")
	}
	var what string
	switch status {
	case http.StatusBadGateway:
		what = "WeChat's API server could not be reached or broke off"
	case http.StatusGatewayTimeout:
		what = "WeChat's API server did not answer in time"
	case http.StatusServiceUnavailable:
		what = "no upstream is available for WeChat's API"
	case http.StatusRequestEntityTooLarge:
		what = "the request body is too large"
	default:
		what = "the request failed (" + http.StatusText(status) + ")"
	}
	h.logger.Error("request failed before WeChat answered; answered in WeChat's error shape",
		zap.Int("status", status), zap.String("path", r.URL.Path), zap.String("error", cause))
	return writeWeChatError(w, status, "wechat_token: "+what+": "+cause)
}

// startedWriter notes whether a response has begun, so that a failure
// after that is left as it is: the client has part of an answer.
type startedWriter struct {
	*caddyhttp.ResponseWriterWrapper
	started bool
}

// WriteHeader notes the response as begun (interim 1xx answers aside).
func (s *startedWriter) WriteHeader(code int) {
	if code >= 200 || code == http.StatusSwitchingProtocols {
		s.started = true
	}
	s.ResponseWriterWrapper.WriteHeader(code)
}

// Write notes the response as begun.
func (s *startedWriter) Write(p []byte) (int, error) {
	s.started = true
	return s.ResponseWriterWrapper.Write(p)
}

// ReadFrom notes the response as begun.
func (s *startedWriter) ReadFrom(r io.Reader) (int64, error) {
	s.started = true
	return s.ResponseWriterWrapper.ReadFrom(r)
}
