// Command skewedcaddy is cmd/caddy with the clock of its token managers
// set off by WECHAT_TEST_CLOCK_OFFSET (a duration such as 3s or -2m), so
// that the tests can run a fleet whose clocks disagree on one machine.
// It is a test tool: never deploy it.
package main

import (
	"fmt"
	"os"
	"time"

	caddycmd "github.com/caddyserver/caddy/v2/cmd"
	_ "github.com/caddyserver/caddy/v2/modules/standard"
	_ "github.com/pberkel/caddy-storage-redis"

	"github.com/caddy-wechat/caddy-wechat/caddymodule"
)

// skewed is the system clock, off by a fixed offset.
type skewed time.Duration

func (s skewed) Now() time.Time                     { return time.Now().Add(time.Duration(s)) }
func (s skewed) Until(t time.Time) <-chan time.Time { return time.After(t.Sub(s.Now())) }

func main() {
	if v := os.Getenv("WECHAT_TEST_CLOCK_OFFSET"); v != "" {
		offset, err := time.ParseDuration(v)
		if err != nil {
			fmt.Fprintf(os.Stderr, "WECHAT_TEST_CLOCK_OFFSET=%q: %v\n", v, err)
			os.Exit(2)
		}
		caddymodule.SetClock(skewed(offset))
	}
	caddycmd.Main()
}
