package credential

import (
	"os/exec"
	"strings"
	"testing"
)

// The credentials and their engine know nothing of Caddy: they are tested,
// and could be used, without it.
func TestNoCaddyImported(t *testing.T) {
	for _, pkg := range []string{".", "../token"} {
		out, err := exec.Command("go", "list", "-deps", pkg).CombinedOutput()
		if err != nil {
			t.Fatalf("go list -deps %s: %v\n%s", pkg, err, out)
		}
		for _, dep := range strings.Fields(string(out)) {
			if strings.HasPrefix(dep, "github.com/caddyserver/") || dep == "github.com/caddy-wechat/caddy-wechat/caddymodule" {
				t.Errorf("%s depends on %s", pkg, dep)
			}
		}
	}
}
