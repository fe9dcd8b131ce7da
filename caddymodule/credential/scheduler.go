package credential

import (
	"container/heap"
	"context"
	"time"

	"go.uber.org/zap"

	"github.com/caddy-wechat/caddy-wechat/caddymodule/token"
)

// The scheduler of a platform's accounts: one goroutine and a few
// workers, whatever the number of accounts.

// renewTimeout bounds one account's renewal (the fleet's lock, the fetch
// and the storage calls around it).
const renewTimeout = time.Minute

// run is the scheduler: it hands due accounts to the workers, drops idle
// ones, polls the fleet's withdrawals and writes pending authorizations.
func (a *accounts) run() {
	defer a.stopped.Done()
	poll := time.NewTicker(withdrawalsPoll)
	defer poll.Stop()
	a.pollWithdrawals()
	for {
		wait := a.dispatch()
		if a.hasPending() {
			wait = min(wait, pendingRetry)
		}
		// The registry's clock, which tests move by hand.
		clock := a.reg.clockOf()
		var due <-chan time.Time
		if clock == nil {
			due = time.After(wait)
		} else {
			due = clock.Until(clock.Now().Add(wait))
		}
		select {
		case <-a.ctx.Done():
			return
		case <-a.wake:
		case <-due:
		case <-poll.C:
			a.pollWithdrawals()
		}
		a.flushPending()
	}
}

// dispatch looks at every account that is due and returns how long until
// the next is.
func (a *accounts) dispatch() time.Duration {
	clock := a.reg.clockOf()
	now := nowOf(clock)
	var idle []*account
	busy := false
	a.mu.Lock()
	for len(a.queue) > 0 && !a.queue[0].due.After(now) {
		ac := a.queue[0]
		life := ac.m.Lifetime()
		if life == 0 {
			life = token.MaxLifetime
		}
		if now.Sub(time.Unix(0, ac.lastUsed.Load())) >= life {
			// No request for a token's lifetime: not worth renewing. Its
			// next request fetches (or adopts what the fleet stored).
			heap.Remove(&a.queue, ac.index)
			delete(a.byID, ac.id)
			idle = append(idle, ac)
			continue
		}
		next, ok := ac.m.NextRenewal()
		switch {
		case !ok:
			// Nothing held (its first request failed): requests fetch on
			// demand; look again when it would be idle.
			ac.due = now.Add(life)
		case next.After(now):
			ac.due = next
		default:
			select {
			case a.jobs <- ac:
				ac.renewing = true
				ac.due = now.Add(renewTimeout + time.Minute) // the worker reschedules it
			default:
				// Every worker is busy: the next to finish wakes the
				// scheduler, which goes on from here.
				busy = true
			}
		}
		if busy {
			break
		}
		heap.Fix(&a.queue, ac.index)
	}
	wait := time.Hour
	if len(a.queue) > 0 && !busy {
		wait = max(a.queue[0].due.Sub(now), time.Millisecond)
	}
	a.mu.Unlock()
	for _, ac := range idle {
		ac.m.Stop()
	}
	return wait
}

// work renews the accounts the scheduler hands it.
func (a *accounts) work() {
	defer a.stopped.Done()
	for {
		select {
		case <-a.ctx.Done():
			return
		case ac := <-a.jobs:
			ctx, cancel := context.WithTimeout(a.ctx, renewTimeout)
			err := ac.m.Renew(ctx)
			cancel()
			now := nowOf(a.reg.clockOf())
			a.mu.Lock()
			ac.renewing = false
			if err != nil {
				ac.failures++
				ac.due = now.Add(retryDelay(ac.failures))
			} else {
				ac.failures = 0
				ac.due = now
			}
			if ac.index >= 0 {
				heap.Fix(&a.queue, ac.index)
			}
			a.mu.Unlock()
			if err != nil && a.ctx.Err() == nil {
				if p := a.inForce(); p != nil {
					p.cfg.logger.Debug("account renewal failed; retried", zap.String("authorizer_appid", ac.id), zap.Error(err))
				}
			}
			a.poke()
		}
	}
}

// retryDelay doubles from a second to a minute.
func retryDelay(failures int) time.Duration {
	return min(time.Second<<min(failures-1, 6), time.Minute)
}
