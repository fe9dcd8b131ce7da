package caddymodule

import (
	"fmt"
	"io"
	"net/http"
	"strings"

	"go.uber.org/zap"

	"github.com/caddy-wechat/caddy-wechat/caddymodule/replay"
	"github.com/caddy-wechat/caddy-wechat/caddymodule/wxhttp"
)

// holdBody holds the request body for replay (see package replay): nil
// when there is no body. A body that is not held is set up to stream on
// whole, and the request is not retried.
func (h *Handler) holdBody(r *http.Request) (*replay.Body, error) {
	// A server request with no body may still carry a wrapped empty Body
	// (Caddy wraps it); ContentLength 0 is what says there is nothing to
	// read, -1 being a body of unknown length.
	if r.Body == nil || r.Body == http.NoBody || r.ContentLength == 0 {
		return nil, nil
	}
	body, err := h.replay.Hold(r.Body, r.ContentLength, h.MaxReplayBody)
	if err != nil {
		return nil, err
	}
	if !body.Replayable() {
		h.logger.Debug("request body not held for replay; it streams and is not retried",
			zap.String("reason", string(body.Reason())), zap.String("path", r.URL.Path))
		r.Body = struct {
			io.Reader
			io.Closer
		}{body.Reader(), r.Body}
		return body, nil
	}
	if isForm(r) {
		// A token in a form body would be a second one beside ours: it is
		// removed whether the body is held in memory or in a file (a form
		// over max_replay_body streams as it came, and is not retried).
		if may, err := wxhttp.MayHoldToken(body.Reader()); err == nil && may {
			if err := body.Rewrite(wxhttp.StripTokenStream); err != nil {
				body.Close()
				return nil, fmt.Errorf("strip the token from the form body: %w", err)
			}
		}
	}
	// A chunked upload now has a known length; WeChat prefers that.
	r.ContentLength = body.Size()
	r.TransferEncoding = nil
	r.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(body.Reader()), nil }
	rewindBody(r, body)
	return body, nil
}

// isForm reports whether the request body is URL-encoded form data.
func isForm(r *http.Request) bool {
	mediaType, _, _ := strings.Cut(r.Header.Get("Content-Type"), ";")
	return strings.EqualFold(strings.TrimSpace(mediaType), "application/x-www-form-urlencoded")
}

// rewindBody sets r.Body to read a held body from its start.
func rewindBody(r *http.Request, body *replay.Body) {
	if body == nil {
		return // no body at all: leave http.NoBody as it is
	}
	r.Body = io.NopCloser(body.Reader())
}
