package wxhttp

import (
	"bytes"
	"net/http/httptest"
	"strings"
	"testing"
)

// Fuzz targets. Seeds are added here and checked in under testdata/fuzz;
// make test runs each target for a bounded time (-fuzztime).

func FuzzErrcode(f *testing.F) {
	for _, seed := range []string{
		`{"errcode":40001,"errmsg":"invalid credential rid: 1"}`, `  {"errcode":0}`, `{"errmsg":"x"}`,
		`{"errcode":"40001"}`, `{"errcode":4.0001e4}`, `{"errcode":-1`, `[{"errcode":1}]`, "\xff\xd8\xff\xe0",
		`{"a":{"errcode":40001},"errcode":42001}`, `{"errcode":99999999999999999999}`, ``, `{`,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		code, ok := Errcode(body)
		trimmed := bytes.TrimLeft(body, " \t\r\n")
		if ok && (len(trimmed) == 0 || trimmed[0] != '{') {
			t.Fatalf("errcode %d read from a body that is not a JSON object: %q", code, body)
		}
		// Whatever the body, the holder hands it on byte for byte, in any
		// pieces it is written in.
		for _, piece := range []int{1, 7, 4096} {
			rec := httptest.NewRecorder()
			h := NewResponseHolder(rec, 64)
			for rest := body; len(rest) > 0; {
				n := min(piece, len(rest))
				if _, err := h.Write(rest[:n]); err != nil {
					t.Fatal(err)
				}
				rest = rest[n:]
			}
			if held, isHeld := h.Held(); isHeld {
				if len(held) > 64 || (len(bytes.TrimLeft(held, " \t\r\n")) > 0 && bytes.TrimLeft(held, " \t\r\n")[0] != '{') {
					t.Fatalf("held %d bytes that are not a small JSON object: %q", len(held), held)
				}
			}
			if err := h.Release(); err != nil {
				t.Fatal(err)
			}
			if len(body) > 0 && !bytes.Equal(rec.Body.Bytes(), body) {
				t.Fatalf("pieces of %d: client got %q, upstream sent %q", piece, rec.Body.Bytes(), body)
			}
		}
	})
}

func FuzzStripToken(f *testing.F) {
	for _, seed := range []string{
		"access_token=a&x=1", "x=1&ACCESS_TOKEN=b", "access%5Ftoken=a", "%61ccess_token=a&access_token=b",
		"access_token", "a=%zz&access_token=1", "&&x=1&&", "openid=o%2F1&lang=zh_CN", "access+token=1",
		"Access_Token=1;x=2", "",
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, query string) {
		stripped := StripToken(query)
		if StripToken(stripped) != stripped {
			t.Fatalf("not idempotent: %q -> %q", query, stripped)
		}
		var kept []string
		for part := range strings.SplitSeq(query, "&") {
			if part != "" && !isTokenParam(part) {
				kept = append(kept, part)
			}
		}
		if want := strings.Join(kept, "&"); stripped != want && mayHoldToken(query) {
			t.Fatalf("StripToken(%q) = %q, want the other parameters unchanged: %q", query, stripped, want)
		}
		for part := range strings.SplitSeq(stripped, "&") {
			if isTokenParam(part) {
				t.Fatalf("StripToken(%q) left a token: %q", query, part)
			}
		}
		with := WithToken(stripped, TokenParam("TOKEN/+= value"))
		n := 0
		for part := range strings.SplitSeq(with, "&") {
			if isTokenParam(part) {
				n++
			}
		}
		if n != 1 {
			t.Fatalf("%q with our token has %d tokens", query, n)
		}
	})
}

func FuzzTokenEndpointPath(f *testing.F) {
	for _, seed := range []string{
		"/cgi-bin/token", "/CGI-BIN/STABLE_TOKEN", "/cgi-bin/./token", "/a/../cgi-bin/token/", "/cgi-bin/token;x",
		"/cgi-bin/tokenize", "/sns/userinfo", "//cgi-bin//token", "cgi-bin/token", "/cgi-bin/token\x00",
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, p string) {
		canonical := CanonicalPath(p)
		for _, endpoint := range tokenEndpoints {
			if canonical == endpoint && !IsTokenEndpoint(p) {
				t.Fatalf("%q reaches %s but is not refused", p, endpoint)
			}
		}
		if IsTokenEndpoint(p) && !strings.HasPrefix(canonical, "/cgi-bin/") {
			t.Fatalf("%q refused though outside /cgi-bin/", p)
		}
		sns := []string{CanonicalPrefix("/sns/")}
		if HasPrefix(p, sns) && IsTokenEndpoint(p) {
			t.Fatalf("%q both passes through and is refused", p)
		}
		want := Inject
		if IsTokenEndpoint(p) {
			want = Refuse
		} else if HasPrefix(p, sns) {
			want = Passthrough
		}
		if got := Route(p, sns, false); got != want {
			t.Fatalf("Route(%q) = %d, want %d", p, got, want)
		}
		// With the AppSecret calls on, exactly the two login endpoints,
		// however spelled, change route.
		if canonical == "/sns/jscode2session" || canonical == "/sns/oauth2/access_token" {
			want = AppSecret
		}
		if got := Route(p, sns, true); got != want {
			t.Fatalf("Route(%q, secret calls) = %d, want %d", p, got, want)
		}
	})
}
