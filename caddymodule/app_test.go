package caddymodule

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
)

func TestGlobalOption(t *testing.T) {
	parse := func(input string) (App, error) {
		v, err := parseGlobalOption(caddyfile.NewTestDispenser(input), nil)
		if err != nil {
			return App{}, err
		}
		var app App
		if err := json.Unmarshal(v.(httpcaddyfile.App).Value, &app); err != nil {
			t.Fatal(err)
		}
		return app, nil
	}
	app, err := parse("wechat {\n replay_budget 512MiB\n replay_memory 32KiB\n replay_temp_dir /var/tmp\n}")
	if err != nil {
		t.Fatal(err)
	}
	if app.ReplayBudget != 512<<20 || app.ReplayMemory != 32<<10 || app.ReplayTempDir != "/var/tmp" {
		t.Fatalf("parsed %+v", app)
	}
	app, err = parse("wechat {\n component platform {\n component_appid wxc1\n component_appsecret {env.S}\n token t\n encoding_aes_key k\n api_base http://x\n }\n}")
	if c := app.Components["platform"]; err != nil || c == nil || c.ComponentAppID != "wxc1" || c.ComponentAppSecret != "{env.S}" || c.APIBase != "http://x" {
		t.Fatalf("component block: %+v, %v", app.Components, err)
	}
	if app, err := parse("wechat"); err != nil || app.ReplayBudget != 0 || app.ReplayMemory != 0 || app.ReplayTempDir != "" {
		t.Fatalf("a bare wechat option: %+v %v", app, err)
	}
	for input, want := range map[string]string{
		"wechat {\n replay_budget lots\n}":                      `replay_budget: "lots" is not a size`,
		"wechat {\n replay_memory\n}":                           "replay_memory takes one value",
		"wechat {\n replay_temp_dir /a /b\n}":                   "replay_temp_dir takes one value",
		"wechat {\n replay_budget 1GiB\n replay_budget 2GiB\n}": "replay_budget: given more than once",
		"wechat {\n component\n}":                               "component takes one name",
		"wechat {\n component x {\n colour red\n }\n}":          `component x: unrecognized option "colour"`,
		"wechat {\n component x\n component x\n}":               "component x: given more than once",
		"wechat {\n colour red\n}":                              `unrecognized wechat option "colour"`,
		"wechat extra":                                          "wrong argument count",
	} {
		if _, err := parse(input); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: error %v, want one containing %q", input, err, want)
		}
	}
}
