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
	return dropParts(rawQuery, isTokenParam)
}

// dropParts is rawQuery without its empty parts and those drop matches.
func dropParts(rawQuery string, drop func(part string) bool) string {
	var b strings.Builder
	b.Grow(len(rawQuery))
	for part := range strings.SplitSeq(rawQuery, "&") {
		if part == "" || drop(part) {
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

func isTokenParam(part string) bool { return isParam(part, tokenKey) }

// isParam reports whether the query part's key is one of keys, however it
// is cased or percent-encoded.
func isParam(part string, keys ...string) bool {
	key, _, _ := strings.Cut(part, "=")
	if strings.IndexByte(key, '%') >= 0 || strings.IndexByte(key, '+') >= 0 {
		decoded, err := url.QueryUnescape(key)
		if err != nil {
			return false
		}
		key = decoded
	}
	for _, k := range keys {
		if strings.EqualFold(key, k) {
			return true
		}
	}
	return false
}

// WithAppSecret returns rawQuery for a call WeChat authenticates with the
// AppSecret (jscode2session, the OAuth code exchange): every appid, secret
// and access_token the client sent removed, however cased or encoded,
// then exactly one appid and one secret, the app's. The other parameters
// are kept byte for byte and in order.
func WithAppSecret(rawQuery, appID, secret string) string {
	var b strings.Builder
	b.Grow(len(rawQuery) + len(appID) + len(secret) + 16)
	for part := range strings.SplitSeq(rawQuery, "&") {
		if part == "" || isParam(part, "appid", "secret", tokenKey) {
			continue
		}
		b.WriteString(part)
		b.WriteByte('&')
	}
	b.WriteString("appid=")
	b.WriteString(url.QueryEscape(appID))
	b.WriteString("&secret=")
	b.WriteString(url.QueryEscape(secret))
	return b.String()
}

// StripKey is StripToken for another credential parameter (such as
// component_access_token): every key decoding to key, in any case, removed.
func StripKey(rawQuery, key string) string {
	if key == tokenKey {
		return StripToken(rawQuery)
	}
	return dropParts(rawQuery, func(part string) bool { return isParam(part, key) })
}

// KeyParam is TokenParam for another credential parameter.
func KeyParam(key, value string) string {
	return key + "=" + url.QueryEscape(value)
}
