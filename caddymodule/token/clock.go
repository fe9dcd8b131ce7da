package token

import "time"

// Clock is the time source of a Manager; tests substitute a fake one.
type Clock interface {
	Now() time.Time
	// After is time.After: it delivers the time once d has passed.
	After(d time.Duration) <-chan time.Time
}

type systemClock struct{}

func (systemClock) Now() time.Time                         { return time.Now() }
func (systemClock) After(d time.Duration) <-chan time.Time { return time.After(d) }
