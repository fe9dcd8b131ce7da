package caddymodule

import (
	"github.com/caddy-wechat/caddy-wechat/caddymodule/credential"

	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
)

func TestJSSDKCaddyfile(t *testing.T) {
	var j JSSDK
	err := j.UnmarshalCaddyfile(caddyfile.NewTestDispenser(`wechat_jssdk {
		app_id        {env.WECHAT_APP_ID}
		app_secret    {env.WECHAT_APP_SECRET}
		token_api     classic
		allowed_hosts example.com *.example.com
		refresh_ahead 10m
	}`))
	if err != nil {
		t.Fatal(err)
	}
	if j.AppID != "{env.WECHAT_APP_ID}" || j.TokenAPI != "classic" || len(j.AllowedHosts) != 2 || j.AllowedHosts[1] != "*.example.com" {
		t.Fatalf("parsed %+v", j)
	}
	for input, want := range map[string]string{
		"wechat_jssdk {\n allowed_hosts\n}":                     "allowed_hosts: at least one host",
		"wechat_jssdk {\n retry_on 40001\n}":                    "retry_on does not apply to wechat_jssdk",
		"wechat_jssdk {\n max_replay_body 1MiB\n}":              "max_replay_body does not apply",
		"wechat_jssdk {\n passthrough /sns/\n}":                 "passthrough does not apply",
		"wechat_jssdk {\n allowed_hosts a\n allowed_hosts b\n}": "allowed_hosts: given more than once",
		"wechat_jssdk {\n signing fast\n}":                      `unrecognized wechat_jssdk option "signing"`,
	} {
		var j JSSDK
		if err := j.UnmarshalCaddyfile(caddyfile.NewTestDispenser(input)); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: error %v, want one containing %q", input, err, want)
		}
	}
}

func TestTicketSpecDependsOnItsToken(t *testing.T) {
	o := CredentialOptions{AppID: "wx1", AppSecret: "s", TokenAPI: "classic"}
	spec, err := o.spec()
	if err != nil {
		t.Fatal(err)
	}
	ticket, err := credential.TicketOf(spec)
	if err != nil {
		t.Fatal(err)
	}
	if ticket.Identity() != "jsapi_ticket/wx1" || ticket.Kind.Needs(ticket).Identity() != spec.Identity() {
		t.Fatalf("ticket %s depends on %s, want %s", ticket.Identity(), ticket.Kind.Needs(ticket).Identity(), spec.Identity())
	}
}
