package emulator

import (
	"bytes"
	"compress/gzip"
	"net/http"
	"strconv"
	"strings"
	"sync"
)

// WeChat compresses its answers when the client says it accepts gzip. A
// proxy that forwards its client's Accept-Encoding and then reads the
// errcode of the answer reads compressed bytes instead: the emulator does
// the same, so that such a proxy fails the tests. Media (image/...) is
// sent as it is.
//
// A compressed answer is sent whole with its Content-Length, as WeChat's
// are: streamed with chunked encoding, Go's transport closes the
// connection after decompressing (the final chunk unread) instead of
// reusing it, which cut the tests' throughput four times.

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

// gzipWriters are reused: a new one allocates several hundred KiB.
var gzipWriters = sync.Pool{New: func() any {
	gz, _ := gzip.NewWriterLevel(nil, gzip.BestSpeed)
	return gz
}}

// gzipWriter holds an answer back and sends it compressed on close; media
// passes straight through.
type gzipWriter struct {
	http.ResponseWriter
	decided bool
	plain   bool
	status  int
	body    bytes.Buffer
}

func newGzipWriter(w http.ResponseWriter) *gzipWriter {
	return &gzipWriter{ResponseWriter: w}
}

func (g *gzipWriter) WriteHeader(code int) {
	if g.decided {
		return
	}
	g.decided, g.status = true, code
	g.plain = strings.HasPrefix(g.Header().Get("Content-Type"), "image/")
	if g.plain {
		g.ResponseWriter.WriteHeader(code)
	}
}

func (g *gzipWriter) Write(p []byte) (int, error) {
	if !g.decided {
		g.WriteHeader(http.StatusOK)
	}
	if g.plain {
		return g.ResponseWriter.Write(p)
	}
	return g.body.Write(p)
}

// close sends a held answer, compressed.
func (g *gzipWriter) close() {
	if !g.decided || g.plain {
		return
	}
	var out bytes.Buffer
	gz := gzipWriters.Get().(*gzip.Writer)
	gz.Reset(&out)
	_, _ = gz.Write(g.body.Bytes())
	_ = gz.Close()
	gz.Reset(nil)
	gzipWriters.Put(gz)
	h := g.Header()
	h.Set("Content-Encoding", "gzip")
	h.Add("Vary", "Accept-Encoding")
	h.Set("Content-Length", strconv.Itoa(out.Len()))
	g.ResponseWriter.WriteHeader(g.status)
	_, _ = g.ResponseWriter.Write(out.Bytes())
}

// Unwrap lets the faults that hijack the connection reach it.
func (g *gzipWriter) Unwrap() http.ResponseWriter { return g.ResponseWriter }
