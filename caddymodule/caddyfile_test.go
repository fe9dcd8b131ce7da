package caddymodule

import (
	"github.com/caddy-wechat/caddy-wechat/caddymodule/credential"

	"encoding/json"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	_ "github.com/caddyserver/caddy/v2/modules/caddyhttp/reverseproxy"
)

func TestUnmarshalCaddyfile(t *testing.T) {
	d := caddyfile.NewTestDispenser(`wechat_token {
		app_id        {env.WECHAT_APP_ID}
		app_secret    {file./run/secrets/wechat}
		token_api     classic
		api_base      https://api2.weixin.qq.com
		refresh_ahead 10m
		retry_on      40001 42001 40014
		max_replay_body 20MiB
		fetch_timeout 3s
		min_refresh_interval 30s
	}`)
	var h Handler
	if err := h.UnmarshalCaddyfile(d); err != nil {
		t.Fatal(err)
	}
	want := Handler{
		CredentialOptions: CredentialOptions{
			AppID: "{env.WECHAT_APP_ID}", AppSecret: "{file./run/secrets/wechat}", TokenAPI: "classic",
			APIBase: "https://api2.weixin.qq.com", RefreshAhead: caddy.Duration(10 * time.Minute),
			FetchTimeout: caddy.Duration(3 * time.Second), MinRefreshInterval: caddy.Duration(30 * time.Second),
		},
		RetryOn: []int64{40001, 42001, 40014}, MaxReplayBody: 20 << 20,
	}
	if !reflect.DeepEqual(h, want) {
		t.Fatalf("got %+v\nwant %+v", h, want)
	}
}

func TestUnmarshalCaddyfileErrorsNameTheOption(t *testing.T) {
	for input, want := range map[string]string{
		"wechat_token wx1":                           "no arguments",
		"wechat_token {\n retry_on 40001 abc\n}":     `retry_on: "abc" is not a numeric errcode`,
		"wechat_token {\n retry_on\n}":               "retry_on: at least one",
		"wechat_token {\n refresh_ahead soon\n}":     `refresh_ahead: "soon" is not a duration`,
		"wechat_token {\n refresh_ahead -5m\n}":      "refresh_ahead: must not be negative",
		"wechat_token {\n app_id\n}":                 "app_id: a value is required",
		"wechat_token {\n app_id a b\n}":             "app_id: takes one value",
		"wechat_token {\n app_id a\n app_id b\n}":    "app_id: given more than once",
		"wechat_token {\n max_replay_body lots\n}":   `max_replay_body: "lots" is not a size`,
		"wechat_token {\n appsecret x\n}":            `unrecognized wechat_token option "appsecret"`,
		"wechat_token {\n fetch_timeout 1x\n}":       "fetch_timeout:",
		"wechat_token {\n min_refresh_interval x\n}": "min_refresh_interval:",
	} {
		var h Handler
		err := h.UnmarshalCaddyfile(caddyfile.NewTestDispenser(input))
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: error %v, want it to contain %q", input, err, want)
		}
	}
}

// The directive must land before reverse_proxy with no order line, and
// keep placeholders for Provision to expand (so the secret never enters
// the adapted JSON).
func TestDirectiveOrderedBeforeReverseProxy(t *testing.T) {
	input := ":8080 {\n\treverse_proxy https://api.weixin.qq.com\n\twechat_token {\n\t\tapp_id wx1\n\t\tapp_secret {env.WECHAT_APP_SECRET}\n\t}\n}\n"
	adapter := caddyfile.Adapter{ServerType: httpcaddyfile.ServerType{}}
	out, warnings, err := adapter.Adapt([]byte(input), nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(warnings) > 0 {
		t.Fatalf("warnings: %v", warnings)
	}
	var cfg struct {
		Apps struct {
			HTTP struct {
				Servers map[string]struct {
					Routes []struct {
						Handle []json.RawMessage `json:"handle"`
					} `json:"routes"`
				} `json:"servers"`
			} `json:"http"`
		} `json:"apps"`
	}
	if err := json.Unmarshal(out, &cfg); err != nil {
		t.Fatal(err)
	}
	var handlers []string
	for _, srv := range cfg.Apps.HTTP.Servers {
		for _, route := range srv.Routes {
			for _, h := range route.Handle {
				var named struct {
					Handler   string `json:"handler"`
					AppSecret string `json:"app_secret"`
				}
				_ = json.Unmarshal(h, &named)
				handlers = append(handlers, named.Handler)
				if named.Handler == "wechat_token" && named.AppSecret != "{env.WECHAT_APP_SECRET}" {
					t.Errorf("app_secret adapted to %q", named.AppSecret)
				}
			}
		}
	}
	if !reflect.DeepEqual(handlers, []string{"wechat_token", "reverse_proxy"}) {
		t.Fatalf("handler order %v", handlers)
	}
}

func TestSettingsValidation(t *testing.T) {
	t.Setenv("WX_TEST_SECRET", "from-env")
	t.Setenv("WX_TEST_EMPTY", "")
	ok := Handler{CredentialOptions: CredentialOptions{AppID: "wx1", AppSecret: "{env.WX_TEST_SECRET}"}}
	s, err := ok.spec()
	if err != nil {
		t.Fatal(err)
	}
	if s.Secret != "from-env" || s.Kind != credential.Stable || s.APIBase != DefaultAPIBase {
		t.Fatalf("defaults: %+v", s)
	}
	wecom, err := (&Handler{CredentialOptions: CredentialOptions{CorpID: "ww1", CorpSecret: "{env.WX_TEST_SECRET}"}}).spec()
	if err != nil || wecom.Kind != credential.WeCom || wecom.APIBase != DefaultWeComAPIBase || !strings.HasPrefix(wecom.Label(), "ww1-") ||
		strings.Contains(wecom.Label(), "from-env") {
		t.Fatalf("WeCom spec %+v (%s), %v", wecom, wecom.Label(), err)
	}
	other, _ := (&Handler{CredentialOptions: CredentialOptions{CorpID: "ww1", CorpSecret: "another"}}).spec()
	if other.Identity() == wecom.Identity() {
		t.Fatal("two apps of one corp share an identity")
	}
	for name, c := range map[string]struct {
		h    Handler
		want string
	}{
		"no app_id":      {Handler{CredentialOptions: CredentialOptions{AppSecret: "x"}}, "app_id is required"},
		"empty app_id":   {Handler{CredentialOptions: CredentialOptions{AppID: "{env.WX_TEST_EMPTY}", AppSecret: "x"}}, "app_id"},
		"no secret":      {Handler{CredentialOptions: CredentialOptions{AppID: "wx1"}}, "app_secret is required"},
		"empty secret":   {Handler{CredentialOptions: CredentialOptions{AppID: "wx1", AppSecret: "{env.WX_TEST_EMPTY}"}}, "app_secret is empty once placeholders are expanded ({env.WX_TEST_EMPTY}): environment variable WX_TEST_EMPTY is empty"},
		"unset secret":   {Handler{CredentialOptions: CredentialOptions{AppID: "wx1", AppSecret: "{env.WX_TEST_NEVER_SET}"}}, "environment variable WX_TEST_NEVER_SET is not set"},
		"missing file":   {Handler{CredentialOptions: CredentialOptions{AppID: "wx1", AppSecret: "{file./nonexistent/secret}"}}, "file /nonexistent/secret cannot be read"},
		"blank literal":  {Handler{CredentialOptions: CredentialOptions{AppID: "wx1", AppSecret: "  "}}, "app_secret is empty once placeholders are expanded (value not shown)"},
		"unset app_id":   {Handler{CredentialOptions: CredentialOptions{AppID: "{env.WX_TEST_NO_APP}", AppSecret: "x"}}, "app_id is empty once placeholders are expanded ({env.WX_TEST_NO_APP}): environment variable WX_TEST_NO_APP is not set"},
		"token_api":      {Handler{CredentialOptions: CredentialOptions{AppID: "wx1", AppSecret: "x", TokenAPI: "fast"}}, "token_api"},
		"api_base":       {Handler{CredentialOptions: CredentialOptions{AppID: "wx1", AppSecret: "x", APIBase: "api.weixin.qq.com"}}, "api_base"},
		"api_base query": {Handler{CredentialOptions: CredentialOptions{AppID: "wx1", AppSecret: "x", APIBase: "https://h/?a=1"}}, "api_base"},
		"negative":       {Handler{CredentialOptions: CredentialOptions{AppID: "wx1", AppSecret: "x", FetchTimeout: -1}}, "fetch_timeout must not be negative"},
		"replay":         {Handler{CredentialOptions: CredentialOptions{AppID: "wx1", AppSecret: "x"}, MaxReplayBody: -1}, "max_replay_body"},
		"retry_on 0":     {Handler{CredentialOptions: CredentialOptions{AppID: "wx1", AppSecret: "x"}, RetryOn: []int64{0}}, "retry_on"},
		"api_base user":  {Handler{CredentialOptions: CredentialOptions{AppID: "wx1", AppSecret: "x", APIBase: "https://u:from-env@h"}}, "carries credentials"},
		"lifetime":       {Handler{CredentialOptions: CredentialOptions{AppID: "wx1", AppSecret: "x", MinTokenLifetime: -1}}, "min_token_lifetime must not be negative"},
		"daily limit":    {Handler{CredentialOptions: CredentialOptions{AppID: "wx1", AppSecret: "x", DailyRefreshLimit: -2}}, "daily_refresh_limit"},
		"corp and app":   {Handler{CredentialOptions: CredentialOptions{AppID: "wx1", CorpID: "ww1", CorpSecret: "x"}}, "not both"},
		"corp token_api": {Handler{CredentialOptions: CredentialOptions{CorpID: "ww1", CorpSecret: "x", TokenAPI: "stable"}}, "token_api does not apply to WeCom"},
		"corp no secret": {Handler{CredentialOptions: CredentialOptions{CorpID: "ww1"}}, "corp_secret is required"},
		"corp no id":     {Handler{CredentialOptions: CredentialOptions{CorpSecret: "x"}}, "corp_id is required"},
		"corp empty":     {Handler{CredentialOptions: CredentialOptions{CorpID: "ww1", CorpSecret: "{env.WX_TEST_EMPTY}"}}, "corp_secret is empty once placeholders are expanded ({env.WX_TEST_EMPTY})"},
	} {
		_, err := c.h.spec()
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: error %v, want it to mention %q", name, err, c.want)
		}
		if err != nil && strings.Contains(err.Error(), "from-env") {
			t.Errorf("%s: error reveals the secret", name)
		}
	}
}

// spec is what Provision checks of h's options, for an app: the
// credential's and the proxying's.
func (h *Handler) spec() (credential.Spec, error) {
	if err := h.checkProxyOptions(); err != nil {
		return credential.Spec{}, err
	}
	return h.CredentialOptions.spec()
}
