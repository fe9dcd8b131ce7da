package caddymodule

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"

	"github.com/caddy-wechat/caddy-wechat/caddymodule/credential"
	"github.com/caddy-wechat/caddy-wechat/caddymodule/replay"
	"github.com/caddy-wechat/caddy-wechat/caddymodule/token"
	"github.com/caddy-wechat/caddy-wechat/caddymodule/wxhttp"
)

// The benchmarks below measure the handler's own per-request work: the
// upstream is a handler in the same process answering at once, so what is
// left is injecting the token, holding and sniffing the answer and, for
// the retry path, the refresh and replay. BenchmarkNextOnly is the floor
// (the stub upstream alone); compare with benchstat:
//
//	go test -run '^$' -bench . -benchmem -count 10 ./caddymodule > new.txt
//	benchstat old.txt new.txt

// countingFetcher hands out a new token on every call.
type countingFetcher struct{ n atomic.Int64 }

func (f *countingFetcher) Fetch(context.Context, bool) (token.Fetched, error) {
	n := f.n.Add(1)
	return token.Fetched{Value: fmt.Sprintf("BENCH_TOKEN_%0128d", n), ExpiresIn: 7200 * time.Second}, nil
}

// benchHandler is a Handler wired to a manager with a stub fetcher and no
// passive-refresh rate limit, so that every iteration of the retry path
// really refreshes.
func benchHandler(b *testing.B) *Handler {
	b.Helper()
	// No storage: the keys name nothing that is written.
	m, err := token.NewManager(token.Options{AppID: "wxbench", Kind: token.Kind{Name: "classic", Noun: "access_token"},
		Keys: token.Keys{Record: "unused", Lock: "unused", Ledger: "unused", LedgerLock: "unused"}, Settings: token.Settings{
			Fetcher: &countingFetcher{}, MinRefreshInterval: time.Nanosecond, DailyRefreshLimit: 0,
		}})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(m.Stop)
	m.Start()
	if _, err := m.Token(context.Background()); err != nil {
		b.Fatal(err)
	}
	return &Handler{source: managerSource{m}, retryOn: credential.Classic.RejectedBy, MaxReplayBody: DefaultMaxReplayBody, replay: replay.NewPool(replay.Limits{}, new(replay.Usage)), logger: zap.NewNop(), param: new(atomic.Pointer[escapedToken])}
}

// managerSource is one manager for every request.
type managerSource struct{ m *token.Manager }

func (managerSource) locate(*http.Request) (string, error) { return "", nil }

func (s managerSource) get(context.Context, string) (Credential, error) { return s.m, nil }

// discardWriter is a ResponseWriter that keeps nothing but the headers,
// reset between iterations to what Caddy's server sets before handlers.
type discardWriter struct {
	header http.Header
	status int
	bytes  int
	head   [16]byte // the answer's first bytes
}

func (w *discardWriter) Header() http.Header { return w.header }
func (w *discardWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
}
func (w *discardWriter) Write(p []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	if w.bytes == 0 {
		w.head = [16]byte{}
		copy(w.head[:], p)
	}
	w.bytes += len(p)
	return len(p), nil
}
func (w *discardWriter) reset() {
	clear(w.header)
	w.header["Server"] = []string{"Caddy"} // as Caddy's server sets it first
	w.status, w.bytes, w.head = 0, 0, [16]byte{}
}

var (
	jsonOK       = []byte(`{"errcode":0,"errmsg":"ok","subscribe":1,"openid":"o6_bmjrPTlm6_2sgVt7hMZOPfL2M","nickname":"Band","sex":1,"language":"zh_CN","city":"广州","province":"广东","country":"中国"}`)
	jsonRejected = []byte(`{"errcode":40001,"errmsg":"invalid credential, access_token is invalid or not latest rid: 6579b2c1-0a1b2c3d-4e5f6a7b"}`)
	binaryBody   = bytes.Repeat([]byte{0xff, 0xd8, 0xff, 0xe0}, 1024)
)

// upstream is the stub behind the handler: it answers like WeChat, with
// the headers reverse_proxy would copy.
func upstream(body func(r *http.Request) []byte, contentType string) caddyhttp.Handler {
	return caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
		if r.Body != nil {
			if _, err := io.Copy(io.Discard, r.Body); err != nil {
				return err
			}
		}
		b := body(r)
		h := w.Header()
		h["Content-Type"] = []string{contentType}
		h["Date"] = []string{"Tue, 24 Nov 2026 08:00:00 GMT"}
		h["Connection"] = []string{"keep-alive"}
		w.WriteHeader(http.StatusOK)
		_, err := w.Write(b)
		return err
	})
}

// benchServe runs h (or next alone) in a loop, failing on an error, a
// status other than 200, an empty answer, or (when JSON) an answer other
// than WeChat's success: a rejection passed on is not a served request.
func benchServe(b *testing.B, h *Handler, next caddyhttp.Handler, method string, reqBody []byte) {
	b.Helper()
	ctx := context.WithValue(context.Background(), caddyhttp.VarsCtxKey, map[string]any{})
	r, err := http.NewRequestWithContext(ctx, method, "http://127.0.0.1/cgi-bin/user/info?openid=o6_bmjrPTlm6_2sgVt7hMZOPfL2M&lang=zh_CN", nil)
	if err != nil {
		b.Fatal(err)
	}
	body := bytes.NewReader(reqBody)
	w := &discardWriter{header: http.Header{}}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		w.reset()
		r.Header = http.Header{"User-Agent": {"bench"}, "Accept-Encoding": {"gzip"}}
		if reqBody != nil {
			body.Reset(reqBody)
			r.Body = io.NopCloser(body)
			r.ContentLength = int64(len(reqBody))
		}
		var err error
		if h == nil {
			err = next.ServeHTTP(w, r)
		} else {
			err = h.ServeHTTP(w, r, next)
		}
		if err != nil || w.status != http.StatusOK || w.bytes == 0 {
			b.Fatalf("status %d, %d bytes, err %v", w.status, w.bytes, err)
		}
		if w.head[0] == '{' && !bytes.HasPrefix(w.head[:], []byte(`{"errcode":0,`)) {
			b.Fatalf("the client got %q..., not WeChat's success", w.head[:])
		}
	}
}

// BenchmarkNextOnly is the stub upstream alone: the floor to subtract.
func BenchmarkNextOnly(b *testing.B) {
	benchServe(b, nil, upstream(func(*http.Request) []byte { return jsonOK }, "application/json"), http.MethodGet, nil)
}

// BenchmarkInjectOnly: a binary answer (media), which streams through
// unheld; the handler only injects the token.
func BenchmarkInjectOnly(b *testing.B) {
	benchServe(b, benchHandler(b), upstream(func(*http.Request) []byte { return binaryBody }, "image/jpeg"), http.MethodGet, nil)
}

// BenchmarkInspectJSON: a small JSON answer, held back and its errcode
// read: the common path.
func BenchmarkInspectJSON(b *testing.B) {
	benchServe(b, benchHandler(b), upstream(func(*http.Request) []byte { return jsonOK }, "application/json; encoding=utf-8"), http.MethodGet, nil)
}

// BenchmarkInspectJSONPost: the same with a 1 KiB JSON request body, which
// is buffered for a possible replay.
func BenchmarkInspectJSONPost(b *testing.B) {
	reqBody := []byte(`{"touser":"o6_bmjrPTlm6_2sgVt7hMZOPfL2M","msgtype":"text","text":{"content":"` + strings.Repeat("x", 1024-80) + `"}}`)
	benchServe(b, benchHandler(b), upstream(func(*http.Request) []byte { return jsonOK }, "application/json"), http.MethodPost, reqBody)
}

// BenchmarkRetry: every first attempt is rejected with 40001, so every
// iteration refreshes the token (stub fetcher) and replays.
func BenchmarkRetry(b *testing.B) {
	h := benchHandler(b)
	var calls int
	next := upstream(func(r *http.Request) []byte {
		calls++
		current, err := h.source.(managerSource).m.Token(r.Context())
		if err != nil || calls%2 == 1 || !strings.HasSuffix(r.URL.RawQuery, wxhttp.TokenParam(current.Value)) {
			return jsonRejected
		}
		return jsonOK
	}, "application/json")
	reqBody := []byte(`{"touser":"o6_bmjrPTlm6_2sgVt7hMZOPfL2M","msgtype":"text","text":{"content":"hello"}}`)
	benchServe(b, h, next, http.MethodPost, reqBody)
}
