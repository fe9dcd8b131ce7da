package wxhttp

import (
	"net/http"
	"strconv"
)

type holdMode uint8

const (
	undecided holdMode = iota // status known at most; no body byte seen
	holding                   // body starts with '{' and fits: kept back
	passing                   // everything goes straight to the client
)

// ResponseHolder is an http.ResponseWriter that keeps back a response whose
// body starts with '{' and fits in limit bytes, so that its errcode can be
// read before the client sees anything and the response can be dropped for
// a retry. Anything else (binary media, large JSON) streams through as it
// comes, so memory stays bounded whatever the size of the response.
//
// The header map is the underlying writer's: a caller that drops a held
// response must restore the headers itself.
type ResponseHolder struct {
	w      http.ResponseWriter
	limit  int
	status int
	mode   holdMode
	buf    []byte
}

// NewResponseHolder wraps w, holding back JSON bodies of up to limit bytes.
func NewResponseHolder(w http.ResponseWriter, limit int) *ResponseHolder {
	return &ResponseHolder{w: w, limit: limit}
}

// Header returns the underlying writer's header map.
func (h *ResponseHolder) Header() http.Header { return h.w.Header() }

// WriteHeader records the status; it reaches the client when the body is
// known not to be held, or on Release.
func (h *ResponseHolder) WriteHeader(code int) {
	if code >= 100 && code < 200 && code != http.StatusSwitchingProtocols {
		h.w.WriteHeader(code) // interim responses (103 Early Hints) pass at once
		return
	}
	if h.status != 0 {
		return
	}
	h.status = code
	if code == http.StatusSwitchingProtocols {
		h.pass()
		return
	}
	if cl := h.w.Header().Get("Content-Length"); cl != "" {
		if n, err := strconv.ParseInt(cl, 10, 64); err == nil && n > int64(h.limit) {
			h.pass() // too large to hold: no need to look at it
		}
	}
}

// Write holds or passes p, deciding on the first non-blank byte.
func (h *ResponseHolder) Write(p []byte) (int, error) {
	if h.status == 0 {
		h.WriteHeader(http.StatusOK)
	}
	if h.mode == undecided {
		i := 0
		for i < len(p) && isSpace(p[i]) {
			i++
		}
		switch {
		case i == len(p): // blanks only so far: keep them and wait
		case p[i] == '{':
			h.mode = holding
		default:
			if err := h.passHeld(); err != nil {
				return 0, err
			}
		}
	}
	if h.mode != passing && len(h.buf)+len(p) > h.limit {
		if err := h.passHeld(); err != nil {
			return 0, err
		}
	}
	if h.mode == passing {
		return h.w.Write(p)
	}
	h.buf = append(h.buf, p...)
	return len(p), nil
}

// FlushError flushes the client connection once the response streams;
// while it is held there is nothing to flush.
func (h *ResponseHolder) FlushError() error {
	if h.mode != passing {
		return nil
	}
	return http.NewResponseController(h.w).Flush()
}

// Flush implements http.Flusher for callers that assert it.
func (h *ResponseHolder) Flush() { _ = h.FlushError() }

// Unwrap lets http.ResponseController reach the underlying writer.
func (h *ResponseHolder) Unwrap() http.ResponseWriter { return h.w }

// Held returns the whole body when the response was held back (an empty one
// for a response with no body); false when it was passed on, or nothing was
// written at all.
func (h *ResponseHolder) Held() ([]byte, bool) {
	return h.buf, h.mode != passing && h.status != 0
}

// Release sends a held response to the client. It does nothing when the
// response streamed or nothing was written.
func (h *ResponseHolder) Release() error {
	if h.mode == passing || h.status == 0 {
		return nil
	}
	return h.passHeld()
}

func (h *ResponseHolder) pass() {
	h.mode = passing
	h.w.WriteHeader(h.status)
}

func (h *ResponseHolder) passHeld() error {
	h.pass()
	if len(h.buf) == 0 {
		return nil
	}
	_, err := h.w.Write(h.buf)
	h.buf = nil
	return err
}

// Interface guards
var (
	_ http.ResponseWriter             = (*ResponseHolder)(nil)
	_ interface{ FlushError() error } = (*ResponseHolder)(nil)
)
