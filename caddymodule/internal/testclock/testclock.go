// Package testclock is a clock for tests that moves only when told to, so
// that hours of token lifetimes pass in microseconds. It satisfies
// token.Clock.
package testclock

import (
	"sync"
	"time"
)

// Clock moves only when told to. It remembers the deadline of the most
// recent Until call, which is when a renewal loop means to wake next.
type Clock struct {
	mu      sync.Mutex
	now     time.Time
	timers  []timer
	lastDue time.Time
	calls   int
}

type timer struct {
	due time.Time
	ch  chan time.Time
}

// New returns a clock at 2026-01-01 00:00 UTC.
func New() *Clock {
	return &Clock{now: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
}

// Now is the clock's time.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// Until delivers the time once the clock reaches due.
func (c *Clock) Until(due time.Time) <-chan time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	ch := make(chan time.Time, 1)
	c.lastDue = due
	c.calls++
	if !due.After(c.now) {
		ch <- c.now
		return ch
	}
	c.timers = append(c.timers, timer{due, ch})
	return ch
}

// Advance moves the clock and fires the timers that are due.
func (c *Clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
	kept := c.timers[:0]
	for _, t := range c.timers {
		if t.due.After(c.now) {
			kept = append(kept, t)
			continue
		}
		t.ch <- c.now
	}
	c.timers = kept
}

// AdvanceTo moves the clock to t (if it lies ahead).
func (c *Clock) AdvanceTo(t time.Time) {
	if d := t.Sub(c.Now()); d > 0 {
		c.Advance(d)
	}
}

// Next is the deadline of the latest Until call and how many calls there
// were.
func (c *Clock) Next() (time.Time, int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.lastDue, c.calls
}
