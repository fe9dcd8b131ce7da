package token

import "time"

// Clock is the time source of a Manager; tests substitute a fake one.
type Clock interface {
	Now() time.Time
	// Until delivers the time once it is t. A deadline rather than a
	// duration, so that a clock that moves between reading it and waiting
	// cannot push the wake-up past t.
	Until(t time.Time) <-chan time.Time
}

type systemClock struct{}

func (systemClock) Now() time.Time                     { return time.Now() }
func (systemClock) Until(t time.Time) <-chan time.Time { return time.After(time.Until(t)) }
