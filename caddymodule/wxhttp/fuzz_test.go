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
		// The oracle decodes keys with a decoder of its own, not the
		// production isTokenParam.
		var kept []string
		for part := range strings.SplitSeq(query, "&") {
			if part != "" && !referenceIsToken(part) {
				kept = append(kept, part)
			}
		}
		// Empty parts (&&) may be kept or dropped: they carry nothing.
		var got []string
		for part := range strings.SplitSeq(stripped, "&") {
			if part != "" {
				got = append(got, part)
			}
		}
		if g, want := strings.Join(got, "&"), strings.Join(kept, "&"); g != want {
			t.Fatalf("StripToken(%q) = %q, want the other parameters unchanged: %q", query, stripped, want)
		}
		with := WithToken(stripped, TokenParam("TOKEN/+= value"))
		n := 0
		for part := range strings.SplitSeq(with, "&") {
			if referenceIsToken(part) {
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
		// The oracle resolves the path segment by segment, as a front
		// server would, rather than with path.Clean.
		if got, want := IsTokenEndpoint(p), referenceIsTokenEndpoint(p); got != want {
			t.Fatalf("IsTokenEndpoint(%q) = %v, reference %v (resolved %q)", p, got, want, referenceResolve(p))
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

// referenceIsToken reports whether a query part's key is access_token, in
// any case, with percent-encoding and '+' decoded by hand. An undecodable
// key is not a token (a server would fail to parse it as one).
func referenceIsToken(part string) bool {
	key := part
	if i := strings.IndexByte(part, '='); i >= 0 {
		key = part[:i]
	}
	var decoded []byte
	for i := 0; i < len(key); i++ {
		switch c := key[i]; {
		case c == '+':
			decoded = append(decoded, ' ')
		case c == '%':
			if i+2 >= len(key) || !isHex(key[i+1]) || !isHex(key[i+2]) {
				return false
			}
			decoded = append(decoded, unhex(key[i+1])<<4|unhex(key[i+2]))
			i += 2
		default:
			decoded = append(decoded, c)
		}
	}
	return strings.EqualFold(string(decoded), "access_token")
}

func isHex(c byte) bool { return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F' }

func unhex(c byte) byte {
	switch {
	case c <= '9':
		return c - '0'
	case c <= 'F':
		return c - 'A' + 10
	}
	return c - 'a' + 10
}

// referenceResolve resolves dot segments and empty segments with a stack,
// lower case.
func referenceResolve(p string) string {
	var stack []string
	for _, seg := range strings.Split(strings.ToLower(p), "/") {
		switch seg {
		case "", ".":
		case "..":
			if len(stack) > 0 {
				stack = stack[:len(stack)-1]
			}
		default:
			stack = append(stack, seg)
		}
	}
	return "/" + strings.Join(stack, "/")
}

// referenceIsTokenEndpoint: the resolved path names a token endpoint, or
// continues it with something that cannot be part of a name (;params).
func referenceIsTokenEndpoint(p string) bool {
	resolved := referenceResolve(p)
	for _, endpoint := range []string{"/cgi-bin/token", "/cgi-bin/stable_token", "/cgi-bin/gettoken",
		"/cgi-bin/component/api_component_token", "/cgi-bin/component/api_authorizer_token"} {
		if resolved == endpoint {
			return true
		}
		if rest, ok := strings.CutPrefix(resolved, endpoint); ok {
			c := rest[0]
			if !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '_' || c == '-') {
				return true
			}
		}
	}
	return false
}
