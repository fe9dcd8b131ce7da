package tests

import (
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// The documentation names everything a user can configure or call: every
// option of every module (its JSON name is its Caddyfile name), every
// admin route, every metric. A new one missing from README.md and docs/
// fails here.
func TestDocsNameEveryOptionRouteAndMetric(t *testing.T) {
	t.Parallel()
	var docs strings.Builder
	files, _ := filepath.Glob("../docs/*.md")
	for _, f := range append(files, "../README.md") {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		docs.Write(b)
	}
	text := docs.String()
	named := func(name string) bool {
		return regexp.MustCompile(`(^|[^a-z0-9_])` + regexp.QuoteMeta(name) + `($|[^a-z0-9_])`).MatchString(text)
	}

	var options []string
	for _, m := range projectModules(t) {
		seen := map[string]bool{}
		var collect func(typeName string)
		collect = func(typeName string) {
			st, ok := m.pkg.structs[typeName]
			if !ok || seen[typeName] {
				return
			}
			seen[typeName] = true
			for _, field := range st.Fields.List {
				for _, inner := range localTypes(field.Type) {
					collect(inner)
				}
				if name := jsonName(field); name != "" && len(field.Names) > 0 && field.Names[0].IsExported() && !slices.Contains(options, name) {
					options = append(options, name)
				}
			}
		}
		collect(m.typeName)
	}
	if len(options) < 20 {
		t.Fatalf("only %d options found: is the source reading broken?", len(options))
	}
	for _, o := range options {
		if !named("`"+o) && !named(o) {
			t.Errorf("the docs never name the option %s", o)
		}
	}

	admin, err := os.ReadFile("../caddymodule/admin.go")
	if err != nil {
		t.Fatal(err)
	}
	routes := regexp.MustCompile(`(?m)^//\s+(GET|POST)\s+(/wechat_token/\S+)`).FindAllStringSubmatch(string(admin), -1)
	if len(routes) < 6 {
		t.Fatalf("only %d admin routes in admin.go's doc comment", len(routes))
	}
	for _, r := range routes {
		if !strings.Contains(text, r[2]) {
			t.Errorf("the docs never name the admin route %s %s", r[1], r[2])
		}
	}

	metrics, err := os.ReadFile("../caddymodule/metrics.go")
	if err != nil {
		t.Fatal(err)
	}
	names := regexp.MustCompile(`"(caddy_wechat_[a-z_]+)"`).FindAllStringSubmatch(string(metrics), -1)
	if len(names) < 10 {
		t.Fatalf("only %d metrics in metrics.go", len(names))
	}
	for _, n := range names {
		short := strings.TrimPrefix(n[1], "caddy_wechat_messages")
		if !named(n[1]) && !(short != n[1] && named("_"+strings.TrimPrefix(short, "_"))) {
			t.Errorf("the docs never name the metric %s", n[1])
		}
	}
}
