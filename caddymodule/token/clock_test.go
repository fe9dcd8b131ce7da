package token

import (
	"testing"
	"time"

	"github.com/caddy-wechat/caddy-wechat/caddymodule/internal/testclock"
)

// fakeClock moves only when told to (package testclock).
type fakeClock = testclock.Clock

func newFakeClock() *fakeClock { return testclock.New() }

// eventually waits, in real time, for cond to hold: the goroutine under test
// runs on its own and the test only needs it to reach a state.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}
