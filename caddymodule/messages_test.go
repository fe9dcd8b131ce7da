package caddymodule

import (
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"

	"github.com/caddy-wechat/caddy-wechat/caddymodule/wxhttp"
)

func TestMessagesOptions(t *testing.T) {
	t.Setenv("WX_TEST_PUSH_TOKEN", "push-token-from-env")
	var m Messages
	if err := m.UnmarshalCaddyfile(caddyfile.NewTestDispenser("wechat_messages {\n app_id wx1\n token {env.WX_TEST_PUSH_TOKEN}\n encoding_aes_key k\n}")); err != nil {
		t.Fatal(err)
	}
	if m.AppID != "wx1" || m.Token != "{env.WX_TEST_PUSH_TOKEN}" || m.EncodingAESKey != "k" {
		t.Fatalf("parsed %+v", m)
	}
	for input, want := range map[string]string{
		"wechat_messages wx1":                         "no arguments",
		"wechat_messages {\n colour red\n}":           `unrecognized wechat_messages option "colour"`,
		"wechat_messages {\n token a\n token b\n}":    "token: given more than once",
		"wechat_messages {\n app_id\n}":               "app_id: a value is required",
		"wechat_messages {\n encoding_aes_key a b\n}": "takes one value",
	} {
		var m Messages
		if err := m.UnmarshalCaddyfile(caddyfile.NewTestDispenser(input)); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: %v, want %q", input, err, want)
		}
	}
	for name, c := range map[string]struct {
		m    Messages
		want string
	}{
		"no app":      {Messages{Token: "t"}, "app_id (or corp_id, or component) is required"},
		"both":        {Messages{AppID: "wx1", CorpID: "ww1", Token: "t"}, "not both"},
		"no token":    {Messages{AppID: "wx1"}, "token is required"},
		"unset token": {Messages{AppID: "wx1", Token: "{env.WX_TEST_NEVER_SET_PUSH}"}, "token (app_id wx1) is empty once placeholders are expanded ({env.WX_TEST_NEVER_SET_PUSH}): environment variable WX_TEST_NEVER_SET_PUSH is not set"},
		"short key":   {Messages{AppID: "wx1", Token: "{env.WX_TEST_PUSH_TOKEN}", EncodingAESKey: "short"}, "encoding_aes_key must be 43 characters"},
		"wecom plain": {Messages{CorpID: "ww1", Token: "{env.WX_TEST_PUSH_TOKEN}"}, "encoding_aes_key is required"},
	} {
		_, err := c.m.appReceiver()
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want %q", name, err, c.want)
		}
		if err != nil && strings.Contains(err.Error(), "push-token-from-env") {
			t.Errorf("%s: the error shows the token", name)
		}
	}
	ok := Messages{AppID: "wx1", Token: "{env.WX_TEST_PUSH_TOKEN}"}
	if r, err := ok.appReceiver(); err != nil || r.Token != "push-token-from-env" || r.Cipher != nil {
		t.Fatalf("plaintext mode receiver: %+v %v", r, err)
	}
}

// The app's query is the push's without WeChat's signature parameters,
// the rest byte for byte (empty parts, which carry nothing, dropped).
func TestAppQuery(t *testing.T) {
	for raw, want := range map[string]string{
		"signature=s&timestamp=1&nonce=n&openid=o%2Bx&encrypt_type=aes&msg_signature=m": "openid=o%2Bx",
		"b=2&a=1&signature=s":  "b=2&a=1",
		"%73ignature=s&x":      "x",
		"":                     "",
		"timestamp=1&nonce=2":  "",
		"openid=o&&lang=zh_CN": "openid=o&lang=zh_CN",
		"Signature=s&openid=o": "openid=o",
	} {
		if got := wxhttp.StripParams(raw, pushParams...); got != want {
			t.Errorf("%q: %q, want %q", raw, got, want)
		}
	}
}
