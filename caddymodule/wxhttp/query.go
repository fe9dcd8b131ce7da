// Package wxhttp has the HTTP-level pieces of the token proxy that need no
// Caddy: putting the token into a query string, reading WeChat errcodes, and
// a ResponseWriter that holds back only what must be inspected.
package wxhttp

import (
	"net/url"
	"strings"
)

const tokenKey = "access_token"

// TokenParam renders a token as a query parameter ready to append.
func TokenParam(token string) string {
	return tokenKey + "=" + url.QueryEscape(token)
}

// StripToken returns rawQuery without its access_token parameters, however
// their name is cased or percent-encoded. Every other parameter is kept
// byte for byte and in order: re-encoding the query would alter what the
// client signed or meant.
func StripToken(rawQuery string) string {
	if !mayHoldToken(rawQuery) {
		return rawQuery
	}
	var b strings.Builder
	b.Grow(len(rawQuery))
	for part := range strings.SplitSeq(rawQuery, "&") {
		if part == "" || isTokenParam(part) {
			continue
		}
		if b.Len() > 0 {
			b.WriteByte('&')
		}
		b.WriteString(part)
	}
	return b.String()
}

// WithToken appends param (from TokenParam) to a query from StripToken.
func WithToken(stripped, param string) string {
	if stripped == "" {
		return param
	}
	return stripped + "&" + param
}

// mayHoldToken is the allocation-free fast path: a query with no '%' and no
// "access_token" in any case has nothing to strip.
func mayHoldToken(q string) bool {
	if strings.IndexByte(q, '%') >= 0 {
		return true
	}
	for i := 0; i+len(tokenKey) <= len(q); i++ {
		if (q[i] == 'a' || q[i] == 'A') && strings.EqualFold(q[i:i+len(tokenKey)], tokenKey) {
			return true
		}
	}
	return false
}

func isTokenParam(part string) bool {
	key, _, _ := strings.Cut(part, "=")
	if len(key) < len(tokenKey) {
		return false
	}
	if strings.IndexByte(key, '%') >= 0 || strings.IndexByte(key, '+') >= 0 {
		decoded, err := url.QueryUnescape(key)
		if err != nil {
			return false
		}
		key = decoded
	}
	return strings.EqualFold(key, tokenKey)
}
