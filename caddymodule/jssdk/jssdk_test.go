package jssdk

import (
	"errors"
	"testing"
)

// The worked example of WeChat's JS-SDK documentation (附录1-JS-SDK使用权限签名算法).
func TestSignMatchesWeChatsWorkedExample(t *testing.T) {
	got := Sign("sM4AOVdWfPE4DxkXGEs8VMCPGGVi4C3VM0P37wVUCFvkVAy_90u5h9nbSlYy3-Sl-HhTdfl2fzFy1AOcHKP7qg",
		"Wm3WZYTPz0wzccnW", 1414587457, "http://mp.weixin.qq.com?params=value")
	if want := "0f9de62fce790f9a083d5c99e95740ceb90c27ed"; got != want {
		t.Fatalf("signature %s, want %s", got, want)
	}
}

func TestPageURL(t *testing.T) {
	for raw, want := range map[string]struct{ signed, host string }{
		"http://mp.weixin.qq.com?params=value":           {"http://mp.weixin.qq.com?params=value", "mp.weixin.qq.com"},
		"https://Shop.Example.com/p?a=1&b=%E4%BD%A0#x=1": {"https://Shop.Example.com/p?a=1&b=%E4%BD%A0", "shop.example.com"},
		"https://example.com:8443/a/b/#/route?id=3":      {"https://example.com:8443/a/b/", "example.com"},
	} {
		signed, host, err := PageURL(raw)
		if err != nil || signed != want.signed || host != want.host {
			t.Errorf("%q: %q %q %v, want %q %q", raw, signed, host, err, want.signed, want.host)
		}
	}
	for _, raw := range []string{"", "/page", "example.com/page", "ftp://example.com/", "javascript:alert(1)", "https:///path", "https://u:p@example.com/", "http://[::1"} {
		if _, _, err := PageURL(raw); !errors.Is(err, ErrBadURL) {
			t.Errorf("%q: err %v, want ErrBadURL", raw, err)
		}
	}
}

func TestHostAllowed(t *testing.T) {
	patterns := []string{"example.com", "*.shop.example.org"}
	for host, want := range map[string]bool{
		"example.com": true, "EXAMPLE.com": true, "example.com.": true, "www.example.com": false,
		"a.shop.example.org": true, "a.b.shop.example.org": true, "shop.example.org": false,
		"evilshop.example.org": false, "example.com.evil.net": false,
	} {
		if got := HostAllowed(host, patterns); got != want {
			t.Errorf("%q: %v, want %v", host, got, want)
		}
	}
	if !HostAllowed("anything.net", nil) {
		t.Error("no patterns should allow every host")
	}
	for _, p := range []string{"example.com", "*.example.com", "localhost"} {
		if err := CheckHostPattern(p); err != nil {
			t.Errorf("%q: %v", p, err)
		}
	}
	for _, p := range []string{"", "*.", "*.com", "https://example.com", "ex*ample.com", "example.com/path", "*.*.example.com"} {
		if err := CheckHostPattern(p); err == nil {
			t.Errorf("%q accepted", p)
		}
	}
}

func TestNonce(t *testing.T) {
	a, b := Nonce(), Nonce()
	if len(a) != 16 || a == b {
		t.Fatalf("nonces %q %q", a, b)
	}
}
