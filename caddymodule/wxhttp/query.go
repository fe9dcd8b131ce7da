// Package wxhttp has the HTTP-level pieces of the token proxy that need no
// Caddy: putting the token into a query string, reading WeChat errcodes, and
// a ResponseWriter that holds back only what must be inspected.
package wxhttp

import (
	"bufio"
	"io"
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
	return StripParams(rawQuery, key)
}

// StripParams returns rawQuery without the parameters named keys, however
// cased or percent-encoded; the rest kept byte for byte and in order.
func StripParams(rawQuery string, keys ...string) string {
	return dropParts(rawQuery, func(part string) bool { return isParam(part, keys...) })
}

// KeyParam is TokenParam for another credential parameter.
func KeyParam(key, value string) string {
	return key + "=" + url.QueryEscape(value)
}

// maxFormKey bounds the key StripTokenStream reads ahead: a longer key is
// no access_token, however encoded.
const maxFormKey = 256

// StripTokenStream copies a URL-encoded form from src to dst without its
// access_token parts, by StripToken's rules (any case, percent-encoded
// keys, empty parts dropped), holding one key at most in memory however
// long the values: a form too large for memory is stripped as it is
// copied. Unlike StripToken it always drops empty parts; call it for a
// form that may hold a token (MayHoldToken).
func StripTokenStream(dst io.Writer, src io.Reader) error {
	br := bufio.NewReaderSize(src, 32<<10)
	bw := bufio.NewWriterSize(dst, 32<<10)
	wrote := false
	for {
		key, delim, err := readKey(br)
		if err != nil && err != io.EOF {
			return err
		}
		eof := err == io.EOF
		drop := len(key) <= maxFormKey && isTokenParam(string(key))
		hasValue := delim == '=' || len(key) > maxFormKey
		if len(key) == 0 && !hasValue {
			// an empty part
		} else if !drop {
			if wrote {
				bw.WriteByte('&')
			}
			bw.Write(key)
			if delim == '=' {
				bw.WriteByte('=')
			}
			wrote = true
		}
		if hasValue && !eof {
			if eof, err = copyValue(bw, br, drop); err != nil {
				return err
			}
		}
		if eof {
			return bw.Flush()
		}
	}
}

// readKey reads a form part's key: up to '=' or '&' (delim), the end
// (io.EOF), or maxFormKey+1 bytes.
func readKey(br *bufio.Reader) (key []byte, delim byte, err error) {
	for len(key) <= maxFormKey {
		c, err := br.ReadByte()
		if err != nil {
			return key, 0, err
		}
		if c == '=' || c == '&' {
			return key, c, nil
		}
		key = append(key, c)
	}
	return key, 0, nil
}

// copyValue copies (or skips, when drop) the rest of a part up to its '&'.
func copyValue(bw *bufio.Writer, br *bufio.Reader, drop bool) (eof bool, err error) {
	for {
		chunk, err := br.ReadSlice('&')
		value := chunk
		if err == nil {
			value = chunk[:len(chunk)-1]
		}
		if !drop {
			bw.Write(value)
		}
		switch err {
		case nil:
			return false, nil
		case bufio.ErrBufferFull:
			continue
		case io.EOF:
			return true, nil
		default:
			return false, err
		}
	}
}

// MayHoldToken reports whether a form read from src may hold an
// access_token part (StripToken would change it), reading it to its end.
func MayHoldToken(src io.Reader) (bool, error) {
	br := bufio.NewReaderSize(src, 32<<10)
	var tail []byte // the last bytes of the previous chunk, for a key across chunks
	for {
		chunk, err := br.Peek(br.Size())
		if len(chunk) == 0 && err != nil {
			if err == io.EOF {
				return false, nil
			}
			return false, err
		}
		if mayHoldToken(string(tail) + string(chunk)) {
			return true, nil
		}
		keep := min(len(chunk), len(tokenKey)-1)
		tail = append(tail[:0], chunk[len(chunk)-keep:]...)
		if _, err := br.Discard(len(chunk)); err != nil {
			return false, err
		}
	}
}
