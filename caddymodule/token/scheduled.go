package token

import (
	"context"
	"fmt"
	"hash/fnv"
	"time"
)

// Scheduled managers (Options.Scheduled) have no renewal loop, no timer
// and no goroutine of their own, so that a platform can hold 100,000 of
// them: one scheduler for all asks each its NextRenewal and calls Renew;
// Token fetches on demand (adopting a stored token first) when nothing
// valid is held; and nothing re-reads the store between renewals, so that
// storage reads grow with renewals and requests, not with accounts × time.

// NextRenewal is when the held token is due for renewal: refresh_ahead
// before it expires (half-life for short lives), put off by a fraction of
// half that margin fixed per token, so that every instance of a fleet
// renews it at the same moment (one fetches, the others adopt) while
// tokens got together are not all renewed together. false: nothing valid
// is held.
func (m *Manager) NextRenewal() (time.Time, bool) {
	cur := m.current.Load()
	if !cur.ValidAt(m.clock.Now()) {
		return time.Time{}, false
	}
	ahead := min(m.cfg().RefreshAhead, cur.ExpiresAt.Sub(cur.FetchedAt)/2)
	h := fnv.New64a()
	_, _ = h.Write([]byte(cur.Value))
	spread := time.Duration(float64(ahead/2) * float64(h.Sum64()>>11) / float64(1<<53))
	return cur.ExpiresAt.Add(-ahead + spread), true
}

// Lifetime is how long the held token lives in all (zero without one).
func (m *Manager) Lifetime() time.Duration {
	if cur := m.current.Load(); cur != nil {
		return cur.ExpiresAt.Sub(cur.FetchedAt)
	}
	return 0
}

// Renew makes one renewal attempt, as the loop of a manager that has one
// does when its renewal falls due: through the fleet's lock, adopting
// what another instance stored meanwhile.
func (m *Manager) Renew(ctx context.Context) error {
	before := m.current.Load()
	reason, replacing := "renewal", ""
	if before == nil {
		reason = "first token"
	} else {
		replacing = before.Value
	}
	_, err := m.fly(ctx, func() (Token, error) {
		return m.obtain(job{reason: reason, replacing: replacing, epoch: m.epochNow(), renewal: true})
	})
	return err
}

// Offer makes a token obtained outside the manager current (a code
// exchange hands one back with the authorization) and shares it with the
// fleet, so that nothing fetches it again.
func (m *Manager) Offer(value string, expiresIn time.Duration) {
	now := m.clock.Now()
	tok := m.install(&Token{Value: value, FetchedAt: now, ExpiresAt: now.Add(expiresIn), epoch: m.epochNow()}, true)
	if m.cfg().Store != nil {
		m.saveShared(tok)
	}
	m.poke()
}

// onDemand gets a scheduled manager's token for a request when nothing
// valid is held: the stored one, or one fetched, in one flight however
// many requests ask. After a failure it refuses at once until its backoff
// has passed, so that a refused refresh token does not turn every request
// into a call to WeChat.
func (m *Manager) onDemand(ctx context.Context) (Token, error) {
	m.mu.Lock()
	lastErr, retryAt := m.lastErr, m.demandRetryAt
	m.mu.Unlock()
	if lastErr != nil && m.clock.Now().Before(retryAt) {
		return Token{}, fmt.Errorf("%w: %w", m.kind.errNone(), lastErr)
	}
	settings := m.cfg()
	// A real timer: this bounds a client's wait, whatever the clock. The
	// storage calls around the fetch are part of it.
	wait, cancel := context.WithTimeout(ctx, settings.FetchTimeout+2*storeTimeout+waitGrace)
	defer cancel()
	tok, err := m.fly(wait, func() (Token, error) {
		if t := m.current.Load(); t.ValidAt(m.clock.Now()) {
			return *t, nil // got by the flight that just ended
		}
		replacing := ""
		if t := m.current.Load(); t != nil {
			replacing = t.Value
		}
		tok, err := m.obtain(job{reason: "first request", replacing: replacing, epoch: m.epochNow()})
		m.mu.Lock()
		if err != nil {
			m.demandFailures++
			m.demandRetryAt = m.clock.Now().Add(backoff(m.demandFailures, noTokenMaxBackoff(err)))
		} else {
			m.demandFailures = 0
		}
		m.mu.Unlock()
		return tok, err
	})
	if err != nil {
		if ctx.Err() != nil {
			return Token{}, ctx.Err()
		}
		return Token{}, fmt.Errorf("%w: %w", m.kind.errNone(), err)
	}
	return tok, nil
}

// Flush waits until the fetched tokens being saved for the fleet (beside
// the requests that got them) are in the storage.
func (m *Manager) Flush() { m.saving.Wait() }
