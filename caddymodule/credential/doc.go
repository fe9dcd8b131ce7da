// Package credential holds every WeChat credential a backend needs, with
// no Caddy in it: an app's access token (stable or classic), a WeCom
// app's token, the JS-SDK jsapi_ticket, a third-party platform's
// component_access_token and its accounts' tokens.
//
// Each kind is one file (stable.go, classic.go, wecom.go, jsapi_ticket.go,
// component.go, authorizer.go) holding everything that differs between
// kinds: its endpoint and fetcher, the errcodes that reject it, what it is
// fetched with, its abilities. keys.go builds every storage key and lock
// name. registry.go keeps the credentials of running configs alive across
// reloads; platform.go holds a platform's verify ticket and accounts. The
// renewal itself (single flight, fleet lock, ledger) is package token's,
// for every kind alike.
package credential
