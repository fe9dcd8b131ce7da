package wxhttp

import "github.com/tidwall/gjson"

// Errcode reads the top-level numeric errcode of a body that is a JSON
// object, without decoding the rest. WeChat's Content-Type cannot be
// trusted, so the body alone decides.
func Errcode(body []byte) (int64, bool) {
	i := 0
	for i < len(body) && isSpace(body[i]) {
		i++
	}
	if i == len(body) || body[i] != '{' {
		return 0, false
	}
	r := gjson.GetBytes(body[i:], "errcode")
	if r.Type != gjson.Number {
		return 0, false
	}
	return r.Int(), true
}

func isSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\r' || c == '\n' }
