package wxhttp

import (
	"net/http"
	"strconv"
	"sync"
)

// heldBuffers recycles the buffers of held responses: nearly every proxied
// request holds one small JSON answer, and allocating it anew each time
// was the largest allocation of the proxy's own per-request work.
var heldBuffers = sync.Pool{New: func() any { b := make([]byte, 0, 4<<10); return &b }}

// maxPooledBuffer keeps the rare large held answer from staying in the pool.
const maxPooledBuffer = 16 << 10

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
	if h.buf == nil {
		h.buf = (*heldBuffers.Get().(*[]byte))[:0]
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
// written at all. The body is valid until Release or Discard.
func (h *ResponseHolder) Held() ([]byte, bool) {
	return h.buf, h.mode != passing && h.status != 0
}

// Started reports whether a response was begun: a status or body written,
// held or not.
func (h *ResponseHolder) Started() bool { return h.status != 0 }

// Release sends a held response to the client. It does nothing when the
// response streamed or nothing was written.
func (h *ResponseHolder) Release() error {
	if h.mode == passing || h.status == 0 {
		return nil
	}
	return h.passHeld()
}

// Discard drops a held response unsent, as before a retry.
func (h *ResponseHolder) Discard() {
	h.recycle()
}

func (h *ResponseHolder) recycle() {
	if h.buf != nil && cap(h.buf) <= maxPooledBuffer {
		buf := h.buf[:0]
		heldBuffers.Put(&buf)
	}
	h.buf = nil
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
	// Writers must not keep p, so the buffer can be reused at once.
	_, err := h.w.Write(h.buf)
	h.recycle()
	return err
}

// Interface guards
var (
	_ http.ResponseWriter             = (*ResponseHolder)(nil)
	_ interface{ FlushError() error } = (*ResponseHolder)(nil)
)
