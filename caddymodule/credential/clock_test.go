package credential

import "github.com/caddy-wechat/caddy-wechat/caddymodule/internal/testclock"

// fakeClock moves only when told to (package testclock).
type fakeClock = testclock.Clock

func newFakeClock() *fakeClock { return testclock.New() }
