package wxhttp

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"testing/iotest"
)

func TestStripAndInject(t *testing.T) {
	param := TokenParam("T0k-_")
	for _, c := range []struct{ in, want string }{
		{"", "access_token=T0k-_"},
		{"openid=o1", "openid=o1&access_token=T0k-_"},
		{"access_token=client&openid=o1", "openid=o1&access_token=T0k-_"},
		{"a=1&access_token=x&b=2&access_token=y", "a=1&b=2&access_token=T0k-_"},
		{"ACCESS_TOKEN=x&Access_Token=y&a=1", "a=1&access_token=T0k-_"},
		{"access%5Ftoken=x&a=%2F%20+b", "a=%2F%20+b&access_token=T0k-_"},
		{"access_token&a=1", "a=1&access_token=T0k-_"},
		{"my_access_token=1&access_tokens=2", "my_access_token=1&access_tokens=2&access_token=T0k-_"},
		{"a=1&&b=2", "a=1&&b=2&access_token=T0k-_"}, // nothing to strip: kept as sent
		{"a=%zz&access_token=1", "a=%zz&access_token=T0k-_"},
	} {
		if got := WithToken(StripToken(c.in), param); got != c.want {
			t.Errorf("%q: got %q, want %q", c.in, got, c.want)
		}
	}
	if got := TokenParam("a+b/c="); got != "access_token=a%2Bb%2Fc%3D" {
		t.Errorf("escaping: %q", got)
	}
}

func TestErrcode(t *testing.T) {
	for body, want := range map[string]int64{
		`{"errcode":40001,"errmsg":"invalid credential rid: 1"}`: 40001,
		" \n\t{\"errmsg\":\"x\",\"errcode\":42001}":              42001,
		`{"errcode":0,"errmsg":"ok"}`:                            0,
		`{"errcode":40001,"errmsg":"trunc`:                       40001,
		`{"errcode":-1}`:                                         -1,
	} {
		if got, ok := Errcode([]byte(body)); !ok || got != want {
			t.Errorf("%q: got %d,%v want %d", body, got, ok, want)
		}
	}
	for _, body := range []string{``, `   `, `[1]`, `{"errcode":"40001"}`, `{"data":{"errcode":40001}}`, "\xff\xd8\xff", `<html>`} {
		if got, ok := Errcode([]byte(body)); ok {
			t.Errorf("%q: read errcode %d", body, got)
		}
	}
}

func TestHolderHoldsSmallJSON(t *testing.T) {
	rec := httptest.NewRecorder()
	h := NewResponseHolder(rec, 64)
	h.Header().Set("Content-Type", "text/plain")
	h.WriteHeader(http.StatusOK)
	h.Write([]byte("  "))
	h.Write([]byte(`{"errcode":40001}`))
	if err := h.FlushError(); err != nil {
		t.Fatal(err)
	}
	body, held := h.Held()
	if !held || string(body) != `  {"errcode":40001}` {
		t.Fatalf("held %v %q", held, body)
	}
	if rec.Code != 200 || rec.Body.Len() != 0 || rec.Flushed {
		t.Fatalf("client saw something before release: flushed=%v body=%q", rec.Flushed, rec.Body.String())
	}
	if err := h.Release(); err != nil {
		t.Fatal(err)
	}
	if rec.Body.String() != `  {"errcode":40001}` || rec.Header().Get("Content-Type") != "text/plain" {
		t.Fatalf("after release: %q", rec.Body.String())
	}
}

func TestHolderStreamsBinaryAndLargeJSON(t *testing.T) {
	// Binary: passed from the first byte.
	rec := httptest.NewRecorder()
	h := NewResponseHolder(rec, 64)
	h.WriteHeader(http.StatusOK)
	h.Write([]byte{0xff, 0xd8})
	if rec.Body.Len() != 2 {
		t.Fatal("binary body was held")
	}
	if _, held := h.Held(); held {
		t.Fatal("binary reported as held")
	}

	// JSON beyond the limit: held until it overflows, then streamed whole.
	rec = httptest.NewRecorder()
	h = NewResponseHolder(rec, 16)
	h.WriteHeader(http.StatusCreated)
	h.Write([]byte(`{"a":"0123456789`))
	if rec.Body.Len() != 0 {
		t.Fatal("small prefix not held")
	}
	h.Write([]byte(`0123456789"}`))
	if rec.Code != http.StatusCreated || rec.Body.String() != `{"a":"01234567890123456789"}` {
		t.Fatalf("overflow: %d %q", rec.Code, rec.Body.String())
	}
	if buf, held := h.Held(); held || buf != nil {
		t.Fatal("overflowed body still held")
	}

	// A declared length beyond the limit passes at WriteHeader.
	rec = httptest.NewRecorder()
	h = NewResponseHolder(rec, 16)
	h.Header().Set("Content-Length", "1000")
	h.WriteHeader(http.StatusAccepted)
	if rec.Code != http.StatusAccepted {
		t.Fatalf("status not passed at once: %d", rec.Code)
	}
	h.Write(bytes.Repeat([]byte("{"), 5))
	if rec.Body.Len() != 5 {
		t.Fatal("declared-large body held")
	}
}

func TestHolderEmptyAndUnwritten(t *testing.T) {
	rec := httptest.NewRecorder()
	h := NewResponseHolder(rec, 16)
	if _, held := h.Held(); held {
		t.Fatal("nothing written, yet held")
	}
	h.Release()
	h.WriteHeader(http.StatusNoContent)
	if body, held := h.Held(); !held || len(body) != 0 {
		t.Fatal("empty response not held")
	}
	h.Release()
	if rec.Code != http.StatusNoContent {
		t.Fatalf("status %d", rec.Code)
	}
	if got := NewResponseHolder(rec, 1).Unwrap(); got != rec {
		t.Fatal("Unwrap")
	}
}

func TestWithAppSecret(t *testing.T) {
	for in, want := range map[string]string{
		"js_code=C&grant_type=authorization_code":                                    "js_code=C&grant_type=authorization_code&appid=wx1&secret=s%26%3D",
		"appid=evil&secret=guess&js_code=C":                                          "js_code=C&appid=wx1&secret=s%26%3D",
		"APPID=a&Secret=b&%61ppid=c&secre%74=d&access_token=t&ACCESS_TOKEN=u&code=C": "code=C&appid=wx1&secret=s%26%3D",
		"": "appid=wx1&secret=s%26%3D",
		"&&js_code=C%2B1&&appidx=keep&secrets=keep": "js_code=C%2B1&appidx=keep&secrets=keep&appid=wx1&secret=s%26%3D",
	} {
		if got := WithAppSecret(in, "wx1", "s&="); got != want {
			t.Errorf("WithAppSecret(%q) = %q, want %q", in, got, want)
		}
	}
}

// The streaming stripper agrees with StripToken on every form that may
// hold a token, however its parts fall across reads.
func TestStripTokenStreamAgreesWithStripToken(t *testing.T) {
	long := strings.Repeat("v", 100<<10)
	for _, form := range []string{
		"access_token=x", "a=1&access_token=x&b=2", "ACCESS_TOKEN=x&b=2", "a=1&%61ccess_token=x", "access%5Ftoken=y&z",
		"a=1&&b=2&access_token=", "access_token", "a&access_token&b", "x=" + long + "&access_token=t&y=" + long,
		"access_token=" + long + "&k=v", strings.Repeat("k", 300) + "=access_token&access_token=1", "a=%zz&access_token=1",
		"access_token=1&", "&access_token=1", "a=b+c&Access_Token=q",
	} {
		may, err := MayHoldToken(strings.NewReader(form))
		if err != nil || may != mayHoldToken(form) {
			t.Fatalf("MayHoldToken(%.40q) = %v %v", form, may, err)
		}
		var out bytes.Buffer
		if err := StripTokenStream(&out, iotest.OneByteReader(strings.NewReader(form))); err != nil {
			t.Fatal(err)
		}
		if want := StripToken(form); out.String() != want {
			t.Errorf("StripTokenStream(%.60q) = %.60q, StripToken says %.60q", form, out.String(), want)
		}
	}
}
