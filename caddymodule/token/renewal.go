package token

import (
	"errors"
	"math/rand/v2"
	"time"

	"go.uber.org/zap"
)

// The proactive renewal: a loop per manager that renews the credential
// before it expires, re-reading the fleet's storage meanwhile, and backs
// off on failures.

// poke makes the renewal loop recompute its schedule.
func (m *Manager) poke() {
	select {
	case m.wake <- struct{}{}:
	default:
	}
	if m.onSchedule != nil {
		m.onSchedule()
	}
}

// run is the proactive renewal loop.
func (m *Manager) run() {
	defer close(m.done)
	if m.cfg().Store != nil {
		// Without a stored token, early requests keep waiting, now for the
		// first fetch, which takes over the same attempt.
		if stored, ok := m.loadShared(); ok && stored.ValidAt(m.clock.Now()) {
			end := m.beginAttempt()
			stored.epoch = m.epochNow()
			m.adopt(stored, "stored earlier by this or another instance")
			end()
		}
	}
	failures := 0      // consecutive failed attempts
	outage := 0        // of which made while no valid token was held
	unchanged := false // the last renewal got the current token back
	for {
		// The attempt is due at a fixed time: the re-reads of the store
		// while waiting must not restart the wait, or a backoff longer
		// than the re-read period would never end.
		scheduledFor := m.current.Load()
		// One reading of the clock: with two, a renewal could be scheduled
		// later than its token says by however long passed between them.
		now := m.clock.Now()
		due := now.Add(m.nextDelay(now, failures, outage, unchanged))
		m.log().Debug("next token attempt scheduled", zap.Time("at", due))
		if !m.sleepUntil(due) {
			if m.ctx.Err() != nil {
				return
			}
			continue // woken: a new token or new settings; reschedule
		}
		if m.ctx.Err() != nil {
			return
		}
		if m.current.Load() != scheduledFor {
			// A refresh installed a token just as this attempt fell due (its
			// wake-up is still pending): renewing it now would waste a fetch.
			continue
		}
		before := m.current.Load()
		hadToken := before.ValidAt(m.clock.Now())
		reason, replacing := "renewal", ""
		if before == nil {
			reason = "first token"
		} else {
			replacing = before.Value
		}
		tok, err := m.fly(m.ctx, func() (Token, error) {
			return m.obtain(job{reason: reason, replacing: replacing, epoch: m.epochNow(), renewal: true})
		})
		switch {
		case err != nil:
			failures++
			if hadToken {
				outage = 0
			} else {
				outage++
			}
			unchanged = false
		default:
			failures, outage = 0, 0
			unchanged = before != nil && tok.Value == before.Value
		}
	}
}

// sleepUntil waits until due, re-reading the shared store meanwhile. It
// returns false when woken early: by Stop, by a new token (fetched on
// demand or adopted from the store) or by new settings.
func (m *Manager) sleepUntil(due time.Time) bool {
	for {
		now := m.clock.Now()
		if !now.Before(due) {
			return true
		}
		wake := due
		if m.cfg().Store != nil {
			if reread := now.Add(syncPeriod(m.current.Load(), now)); reread.Before(due) {
				wake = reread
			}
		}
		select {
		case <-m.ctx.Done():
			return false
		case <-m.wake:
			return false
		case <-m.clock.Until(wake):
		}
		if wake.Before(due) && m.syncFromStore() {
			return false // another instance renewed: a new schedule
		}
	}
}

// nextDelay says how long after now the loop makes its next fetch.
func (m *Manager) nextDelay(now time.Time, failures, outage int, unchanged bool) time.Duration {
	cur := m.current.Load()
	if !cur.ValidAt(now) {
		// Nothing can be served: try at once when the token has just run
		// out (whatever failed while it was valid), then back off afresh,
		// retrying a transient failure at least every noTokenMaxBackoff.
		if outage == 0 {
			return 0
		}
		m.mu.Lock()
		lastErr := m.lastErr
		m.mu.Unlock()
		return backoff(outage, min(maxBackoff(lastErr), noTokenMaxBackoff(lastErr)))
	}
	remaining := cur.ExpiresAt.Sub(now)
	ahead := min(m.cfg().RefreshAhead, cur.ExpiresAt.Sub(cur.FetchedAt)/2)
	renewIn := cur.ExpiresAt.Add(-ahead).Sub(now)
	// Retries never come before the renewal time: a failure or unchanged
	// answer may come from another caller's fetch, not from a renewal.
	switch {
	case failures > 0:
		// Retry while the token lasts, more often as its end nears.
		return max(renewIn, min(backoff(failures, maxBackoff(nil)), max(remaining/2, minRetryDelay)))
	case unchanged:
		// The stable API hands out the next token only in the last minutes
		// of the current one: ask again later, not in a loop.
		return max(renewIn, min(max(remaining/4, minRetryDelay), unchangedMaxDelay))
	}
	return renewIn
}

// maxBackoff is longer for errors that only a person can fix, so a wrong
// secret does not spend the day's quota.
func maxBackoff(err error) time.Duration {
	var apiErr *APIError
	if errors.As(err, &apiErr) {
		switch apiErr.Code {
		case 40001, 40013, 40125, 40164, 40243, 41002, 41004, 45009, 61004, 89501, 89503, 89506, 89507:
			return 5 * time.Minute
		}
	}
	return time.Minute
}

// noTokenMaxBackoff bounds the wait between attempts while no valid token
// is held, when every request is refused: a transient failure (busy, a 5xx,
// a network error) is retried within seconds of WeChat's recovery, while
// errors that need a person (a wrong secret, the IP whitelist, the quota)
// keep maxBackoff's minutes.
func noTokenMaxBackoff(err error) time.Duration {
	if maxBackoff(err) > time.Minute {
		return maxBackoff(err)
	}
	return 10 * time.Second
}

// backoff doubles from one second up to limit, with ±20 % jitter so that
// many instances do not retry in step.
func backoff(failures int, limit time.Duration) time.Duration {
	d := min(time.Second<<min(failures-1, 16), limit)
	return time.Duration(float64(d) * (0.8 + 0.4*rand.Float64()))
}
