package wxhttp

import (
	"path"
	"strings"
)

// tokenEndpoints issue tokens. A client calling /cgi-bin/token through the
// proxy would invalidate the token every app server relies on; none is
// ever forwarded. /cgi-bin/gettoken is WeCom's (refused for both kinds of
// app: neither has a use for the other's); the component endpoints are a
// third-party platform's, whose fleet token a client's call would replace.
var tokenEndpoints = []string{"/cgi-bin/token", "/cgi-bin/stable_token", "/cgi-bin/gettoken",
	"/cgi-bin/component/api_component_token", "/cgi-bin/component/api_authorizer_token"}

// secretEndpoints are the calls WeChat authenticates with the AppSecret
// itself rather than a token: Mini Program login and the web OAuth code
// exchange. The proxy adds the app's appid and secret to them.
var secretEndpoints = []string{"/sns/jscode2session", "/sns/oauth2/access_token"}

// DefaultPassthrough are the paths whose calls carry a token of their own:
// /sns/ calls (userinfo, auth) take the user's OAuth access_token, which the
// app's token must never replace.
var DefaultPassthrough = []string{"/sns/"}

// CanonicalPath is the path as a server normalising it would route it:
// cleaned of dot segments and repeated slashes, lower case. p is the
// decoded path (r.URL.Path), so percent-encoded letters and slashes are
// already plain.
func CanonicalPath(p string) string {
	if !strings.HasPrefix(p, "/") {
		p = "/" + p
	}
	// Neither allocates for a path already clean and in lower case.
	return strings.ToLower(path.Clean(p))
}

// IsTokenEndpoint reports whether a request for path p would reach one of
// WeChat's token endpoints, however the path is spelled: in any case, with
// dot segments, repeated or trailing slashes, or followed by ;parameters
// or anything else that cannot continue a path name. It errs on the side
// of refusing.
func IsTokenEndpoint(p string) bool { return isTokenEndpoint(CanonicalPath(p)) }

func isTokenEndpoint(canonical string) bool {
	for _, endpoint := range tokenEndpoints {
		if rest, ok := strings.CutPrefix(canonical, endpoint); ok {
			if rest == "" || !isNameByte(rest[0]) {
				return true
			}
		}
	}
	return false
}

// HasPrefix reports whether path p lies under one of prefixes (each in
// canonical form, as CanonicalPath gives for a prefix: a prefix ending in
// "/" also matches the directory itself).
func HasPrefix(p string, prefixes []string) bool {
	return len(prefixes) > 0 && hasPrefix(CanonicalPath(p), prefixes)
}

func hasPrefix(canonical string, prefixes []string) bool {
	for _, prefix := range prefixes {
		if strings.HasPrefix(canonical, prefix) || canonical+"/" == prefix {
			return true
		}
	}
	return false
}

// PathRoute is what the proxy does with a request for a path.
type PathRoute uint8

// The routes of Route.
const (
	Inject      PathRoute = iota // add the app's token
	Refuse                       // a token endpoint: never forwarded
	Passthrough                  // the client's own token, untouched
	AppSecret                    // appid and secret added, no token
)

// Route decides for path p, cleaning it once: IsTokenEndpoint first, then
// (with secretCalls) the AppSecret calls, then HasPrefix with the
// passthrough prefixes (in CanonicalPrefix form).
func Route(p string, passthrough []string, secretCalls bool) PathRoute {
	canonical := CanonicalPath(p)
	switch {
	case isTokenEndpoint(canonical):
		return Refuse
	case secretCalls && isSecretEndpoint(canonical):
		return AppSecret
	case hasPrefix(canonical, passthrough):
		return Passthrough
	}
	return Inject
}

// isSecretEndpoint reports whether a canonical path is one of the calls
// authenticated with the AppSecret.
func isSecretEndpoint(canonical string) bool {
	for _, endpoint := range secretEndpoints {
		if canonical == endpoint {
			return true
		}
	}
	return false
}

// CanonicalPrefix is a configured path prefix in the form HasPrefix
// compares with, keeping a trailing slash that says "this directory".
func CanonicalPrefix(prefix string) string {
	c := CanonicalPath(prefix)
	if strings.HasSuffix(prefix, "/") && c != "/" {
		c += "/"
	}
	return c
}

// isNameByte reports whether b can continue a path segment's name, as in
// /cgi-bin/token_other: a letter, digit, '_' or '-'.
func isNameByte(b byte) bool {
	return b >= 'a' && b <= 'z' || b >= '0' && b <= '9' || b == '_' || b == '-'
}
