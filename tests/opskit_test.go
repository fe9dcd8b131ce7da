package tests

import (
	"encoding/json"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/caddy-wechat/caddy-wechat/emulator"
)

// metricName matches the module's metric names in a PromQL expression.
var metricName = regexp.MustCompile(`caddy_wechat_[a-z_]+`)

// exportedFamilies scrapes a Caddy holding a stable and a classic token,
// so that every family the module exports is present.
func exportedFamilies(t *testing.T) map[string]bool {
	t.Helper()
	w := startWeChat(t, emulator.Config{})
	c := startCaddy(t, w, `handle_path /classic/* {
		`+w.tokenBlock("classic")+`
	}
	handle /messages {
		wechat_messages {
			app_id wxopskit000000001
			token opskit-push-token
		}
		respond "success"
	}
	handle {
		`+w.tokenBlock("stable")+`
	}`)
	for _, path := range []string{"/cgi-bin/get_api_domain_ip", "/classic/cgi-bin/get_api_domain_ip"} {
		if a := get(t, c.url(path)); a.Errcode != 0 {
			t.Fatalf("%s: %s", path, a.Raw)
		}
	}
	families := map[string]bool{}
	for _, line := range strings.Split(c.scrape(t), "\n") {
		if fields := strings.Fields(line); len(fields) == 4 && fields[1] == "TYPE" && strings.HasPrefix(fields[2], "caddy_wechat_") {
			families[fields[2]] = true
		}
	}
	if len(families) < 10 {
		t.Fatalf("only %d caddy_wechat families exported: %v", len(families), families)
	}
	return families
}

// family is the metric family a series name in a query belongs to.
func family(name string, families map[string]bool) string {
	for _, suffix := range []string{"_bucket", "_count", "_sum"} {
		if base, ok := strings.CutSuffix(name, suffix); ok && families[base] {
			return base
		}
	}
	return name
}

// The alert rules and the Grafana dashboard in ops/ query metrics the
// module really exports (promtool checks their syntax and runs the alert
// rules' unit tests in make test), and the dashboard shows every one.
func TestOperatorKitNamesRealMetrics(t *testing.T) {
	families := exportedFamilies(t)

	rules, err := os.ReadFile("../ops/alerts.yml")
	if err != nil {
		t.Fatal(err)
	}
	alerted := 0
	for _, line := range strings.Split(string(rules), "\n") {
		if expr, ok := strings.CutPrefix(strings.TrimSpace(line), "expr:"); ok {
			alerted++
			for _, name := range metricName.FindAllString(expr, -1) {
				if !families[family(name, families)] {
					t.Errorf("alerts.yml queries %s, which the module does not export", name)
				}
			}
		}
	}
	if alerted < 6 {
		t.Fatalf("alerts.yml has %d expressions", alerted)
	}

	raw, err := os.ReadFile("../ops/grafana-dashboard.json")
	if err != nil {
		t.Fatal(err)
	}
	var dashboard struct {
		Title  string `json:"title"`
		Panels []struct {
			ID         int    `json:"id"`
			Title      string `json:"title"`
			Datasource *struct {
				UID string `json:"uid"`
			} `json:"datasource"`
			Targets []struct {
				Expr  string `json:"expr"`
				RefID string `json:"refId"`
			} `json:"targets"`
		} `json:"panels"`
		Templating struct {
			List []struct {
				Name       string `json:"name"`
				Definition string `json:"definition"`
			} `json:"list"`
		} `json:"templating"`
	}
	if err := json.Unmarshal(raw, &dashboard); err != nil {
		t.Fatalf("the dashboard is not valid JSON: %v", err)
	}
	shown := map[string]bool{}
	var ids []int
	var queries []string
	for _, v := range dashboard.Templating.List {
		queries = append(queries, v.Definition)
	}
	for _, p := range dashboard.Panels {
		if p.Datasource == nil || p.Datasource.UID == "" || len(p.Targets) == 0 {
			t.Errorf("panel %q has no data source or no query", p.Title)
		}
		if slices.Contains(ids, p.ID) {
			t.Errorf("panel id %d used twice", p.ID)
		}
		ids = append(ids, p.ID)
		for _, target := range p.Targets {
			if target.Expr == "" || target.RefID == "" {
				t.Errorf("panel %q has an empty query", p.Title)
			}
			queries = append(queries, target.Expr)
		}
	}
	for _, q := range queries {
		names := metricName.FindAllString(q, -1)
		if len(names) == 0 {
			t.Errorf("dashboard query %q names no caddy_wechat metric", q)
		}
		for _, name := range names {
			f := family(name, families)
			if !families[f] {
				t.Errorf("the dashboard queries %s, which the module does not export", name)
			}
			shown[f] = true
		}
	}
	for f := range families {
		if !shown[f] {
			t.Errorf("the dashboard does not show %s", f)
		}
	}
}
