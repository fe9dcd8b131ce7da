package caddymodule

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/caddy-wechat/caddy-wechat/caddymodule/credential"
	"github.com/caddy-wechat/caddy-wechat/caddymodule/token"
)

// What caddy wechat check says of each kind of credential.

// checkApp asks WeChat for an app's token where that changes nothing:
// stable_token in normal mode (a classic app too: the stable token is a
// token of its own, so asking for it leaves the classic one alone), or
// WeCom's gettoken.
func checkApp(ctx context.Context, a *checkedApp, client *http.Client) checkLine {
	spec := a.spec
	how := "stable_token"
	switch spec.Kind {
	case credential.Stable:
	case credential.Classic:
		spec.Kind = credential.Stable // never /cgi-bin/token: each call ends the previous token
		how = "stable_token (not /cgi-bin/token, which would end the current token)"
	case credential.WeCom:
		how = "gettoken"
	default:
		return checkLine{Subject: strings.Join(a.directives, ", ") + " " + a.label, Detail: "no check for token_api " + spec.Kind.Name}
	}
	subject := fmt.Sprintf("%s %s (token_api %s, %s)", strings.Join(a.directives, ", "), a.label, a.tokenAPI, spec.APIBase)
	ctx, cancel := context.WithTimeout(ctx, spec.FetchTimeout)
	defer cancel()
	fetched, err := spec.Kind.NewFetcher(spec, credential.Deps{Client: client}).Fetch(ctx, false)
	if err != nil {
		return checkLine{Subject: subject, Detail: fetchFailure(err, spec.FetchTimeout)}
	}
	return checkLine{OK: true, Subject: subject,
		Detail: fmt.Sprintf("access_token obtained with %s, %d s left", how, int64(fetched.ExpiresIn/time.Second))}
}

// fetchFailure says why a token could not be had: WeChat's errcode with
// its meaning and hint (and the IP WeChat saw, for whitelist errors), or
// what kept WeChat's answer from arriving.
func fetchFailure(err error, timeout time.Duration) string {
	var apiErr *token.APIError
	var netErr net.Error
	switch {
	case errors.As(err, &apiErr):
		return err.Error()
	case errors.Is(err, context.DeadlineExceeded):
		return fmt.Sprintf("no answer within %s (fetch_timeout): is api_base reachable from this host, through its firewall and proxy? (%v)", timeout, err)
	case errors.As(err, &netErr):
		return fmt.Sprintf("WeChat is unreachable from this host: %v; check DNS, the firewall, HTTPS_PROXY and api_base", err)
	}
	return fmt.Sprintf("no usable answer: %v; WeChat, or a proxy in between, is failing (try again later), or api_base does not point at WeChat", err)
}

// checkPlatform reports a platform from the fleet's storage: its latest
// component_verify_ticket (WeChat pushes one every 10 minutes; a
// component_access_token cannot be had without one) and the
// component_access_token the fleet holds. api_component_token is not
// called: it would issue a new token.
func checkPlatform(ctx context.Context, p *credential.Platform, received bool) checkLine {
	ctx, cancel := context.WithTimeout(ctx, checkStorageTimeout)
	defer cancel()
	l := checkLine{Subject: fmt.Sprintf("component %s (component_appid %s)", p.Name, p.ComponentAppID())}
	noEvents := ""
	if !received {
		noEvents = "; no wechat_component_events of this config receives its pushes (another instance's must)"
	}
	ticket, err := p.VerifyTicket(ctx)
	if err != nil {
		l.Detail = err.Error() + noEvents
		return l
	}
	at := ticket.ReceivedAt
	if at.IsZero() {
		at = time.Unix(ticket.CreateTime, 0)
	}
	age := time.Since(at).Round(time.Second)
	if age > maxVerifyTicketAge {
		l.Detail = fmt.Sprintf("the latest component_verify_ticket was received %s ago: expired (WeChat accepts one for %s and pushes a new one every 10 minutes: do its pushes reach wechat_component_events?)%s",
			age, maxVerifyTicketAge, noEvents)
		return l
	}
	l.Detail = fmt.Sprintf("component_verify_ticket received %d s ago", int64(age/time.Second))
	stored, sameSecret, err := p.StoredToken(ctx)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		l.Detail += "; no component_access_token stored: the instance that received the ticket could not fetch one (see its log, or GET /wechat_token/components/" + p.Name + " on its admin endpoint)"
	case err != nil:
		l.Detail += "; the stored component_access_token cannot be read: " + err.Error()
	case !sameSecret:
		l.Detail += "; the stored component_access_token was fetched with another component_appsecret than this config's: check component_appsecret"
	case !time.Now().Before(stored.ExpiresAt):
		l.Detail += fmt.Sprintf("; the stored component_access_token expired %s ago: renewals fail (see the log of the fleet, or GET /wechat_token/components/%s on an admin endpoint)",
			time.Since(stored.ExpiresAt).Round(time.Second), p.Name)
	default:
		l.OK = true
		l.Detail += fmt.Sprintf(", component_access_token %d s left (read from storage; api_component_token not called)", int64(time.Until(stored.ExpiresAt)/time.Second))
	}
	if l.OK {
		l.Detail += noEvents
	}
	return l
}

// checkMessages checks a wechat_messages handler's keys as its Provision
// does; there is nothing to call. A platform's receiver uses the
// platform's keys, checked on the platform's line.
func checkMessages(m *Messages, app *App) checkLine {
	if m.Component != "" {
		subject := "wechat_messages component " + m.Component
		if app.creds.Platform(m.Component) == nil {
			return checkLine{Subject: subject, Detail: fmt.Sprintf("no component %q in the wechat global option, or it is misconfigured (see its line)", m.Component)}
		}
		if m.AppID != "" || m.CorpID != "" || m.Token != "" || m.EncodingAESKey != "" || m.Authorizer != "path" {
			return checkLine{Subject: subject, Detail: "a platform's receiver takes authorizer path and no app_id, corp_id, token or encoding_aes_key"}
		}
		return checkLine{OK: true, Subject: subject, Detail: "the platform's token and encoding_aes_key, well-formed, nothing to call"}
	}
	if m.Authorizer != "" {
		return checkLine{Subject: "wechat_messages", Detail: "authorizer takes a component"}
	}
	r, err := m.appReceiver()
	if err != nil {
		return checkLine{Subject: "wechat_messages", Detail: err.Error()}
	}
	label := "app_id "
	if m.CorpID != "" {
		label = "corp_id "
	}
	detail := "token and encoding_aes_key well-formed, nothing to call"
	if r.Cipher == nil {
		detail = "token set, no encoding_aes_key (plaintext mode), nothing to call"
	}
	return checkLine{OK: true, Subject: "wechat_messages " + label + r.ID, Detail: detail}
}
