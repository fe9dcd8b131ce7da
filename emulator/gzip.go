package emulator

import (
	"compress/gzip"
	"net/http"
	"strings"
)

// WeChat compresses its answers when the client says it accepts gzip. A
// proxy that forwards its client's Accept-Encoding and then reads the
// errcode of the answer reads compressed bytes instead: the emulator does
// the same, so that such a proxy fails the tests.

// acceptsGzip reports whether the request accepts a gzip answer.
func acceptsGzip(r *http.Request) bool {
	for _, v := range r.Header.Values("Accept-Encoding") {
		for part := range strings.SplitSeq(v, ",") {
			name, q, _ := strings.Cut(strings.TrimSpace(part), ";")
			if strings.EqualFold(strings.TrimSpace(name), "gzip") && strings.ReplaceAll(q, " ", "") != "q=0" {
				return true
			}
		}
	}
	return false
}

// gzipWriter compresses what is written to it, but for media (image/...),
// which WeChat sends as it is.
type gzipWriter struct {
	http.ResponseWriter
	gz          *gzip.Writer
	wroteHeader bool
	plain       bool
}

func newGzipWriter(w http.ResponseWriter) *gzipWriter {
	return &gzipWriter{ResponseWriter: w, gz: gzip.NewWriter(w)}
}

func (g *gzipWriter) WriteHeader(code int) {
	if !g.wroteHeader {
		g.wroteHeader = true
		g.plain = strings.HasPrefix(g.Header().Get("Content-Type"), "image/")
		if !g.plain {
			g.Header().Del("Content-Length")
			g.Header().Set("Content-Encoding", "gzip")
			g.Header().Add("Vary", "Accept-Encoding")
		}
	}
	g.ResponseWriter.WriteHeader(code)
}

func (g *gzipWriter) Write(p []byte) (int, error) {
	if !g.wroteHeader {
		g.WriteHeader(http.StatusOK)
	}
	if g.plain {
		return g.ResponseWriter.Write(p)
	}
	return g.gz.Write(p)
}

// close ends the compressed stream, if anything was written.
func (g *gzipWriter) close() {
	if g.wroteHeader && !g.plain {
		_ = g.gz.Close()
	}
}

// Unwrap lets the faults that hijack the connection reach it.
func (g *gzipWriter) Unwrap() http.ResponseWriter { return g.ResponseWriter }
