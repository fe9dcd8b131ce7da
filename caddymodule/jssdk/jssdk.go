// Package jssdk makes the signature of the WeChat JS-SDK's wx.config: the
// page URL's checks, the host allowlist, the nonce and the SHA-1 over the
// jsapi_ticket. It holds no ticket and imports no Caddy.
package jssdk

import (
	"crypto/rand"
	"crypto/sha1"
	"encoding/hex"
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"strings"
)

// Sign is WeChat's JS-SDK signature: the lowercase hex SHA-1 of
// jsapi_ticket=…&noncestr=…&timestamp=…&url=…, the URL as the page has it
// (without its #fragment), unescaped and unsorted beyond that fixed order.
func Sign(ticket, nonceStr string, timestamp int64, pageURL string) string {
	var b strings.Builder
	b.Grow(len("jsapi_ticket=&noncestr=&timestamp=&url=") + len(ticket) + len(nonceStr) + 20 + len(pageURL))
	b.WriteString("jsapi_ticket=")
	b.WriteString(ticket)
	b.WriteString("&noncestr=")
	b.WriteString(nonceStr)
	b.WriteString("&timestamp=")
	b.WriteString(strconv.FormatInt(timestamp, 10))
	b.WriteString("&url=")
	b.WriteString(pageURL)
	sum := sha1.Sum([]byte(b.String()))
	return hex.EncodeToString(sum[:])
}

// ErrBadURL is wrapped by PageURL for a URL that cannot be signed.
var ErrBadURL = errors.New("url must be the page's absolute http(s) URL")

// PageURL checks the URL a page asks to have signed and returns what is
// signed: the URL as given, less its #fragment (which the JS-SDK leaves
// out), and its host, lowercased, for HostAllowed.
func PageURL(raw string) (signed, host string, err error) {
	if raw == "" {
		return "", "", fmt.Errorf("%w: url is missing (GET ?url=<the page URL, URL-encoded>)", ErrBadURL)
	}
	signed, _, _ = strings.Cut(raw, "#")
	u, err := url.Parse(signed)
	if err != nil {
		return "", "", fmt.Errorf("%w: %v", ErrBadURL, err)
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.Opaque != "" {
		return "", "", fmt.Errorf("%w, like https://example.com/page; got one with scheme %q and host %q", ErrBadURL, u.Scheme, u.Host)
	}
	if u.User != nil {
		return "", "", fmt.Errorf("%w without user information", ErrBadURL)
	}
	return signed, strings.ToLower(u.Hostname()), nil
}

// HostAllowed reports whether host matches one of patterns: an exact name
// (example.com) or a wildcard for its subdomains (*.example.com matches
// a.example.com and a.b.example.com, not example.com). No patterns allow
// every host.
func HostAllowed(host string, patterns []string) bool {
	if len(patterns) == 0 {
		return true
	}
	host = strings.TrimSuffix(strings.ToLower(host), ".")
	for _, p := range patterns {
		p = strings.ToLower(p)
		if suffix, ok := strings.CutPrefix(p, "*."); ok {
			if strings.HasSuffix(host, "."+suffix) {
				return true
			}
		} else if host == p {
			return true
		}
	}
	return false
}

// CheckHostPattern says what is wrong with an allowed_hosts entry.
func CheckHostPattern(p string) error {
	name := strings.TrimPrefix(p, "*.")
	switch {
	case name == "" || strings.ContainsAny(name, "*/:@ ?#"):
		return fmt.Errorf("%q is not a host name or *.<domain>", p)
	case !strings.Contains(name, ".") && strings.HasPrefix(p, "*."):
		return fmt.Errorf("%q would allow every name under a top-level domain", p)
	}
	return nil
}

// nonceAlphabet is what nonceStr is made of: letters and digits, which
// need no escaping in a page or a URL.
const nonceAlphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"

// Nonce returns a random nonceStr of 16 characters.
func Nonce() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails (Go 1.24+)
	for i := range b {
		b[i] = nonceAlphabet[int(b[i])%len(nonceAlphabet)]
	}
	return string(b[:])
}
