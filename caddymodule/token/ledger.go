package token

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"slices"
	"time"

	"go.uber.org/zap"
)

// The ledger counts what WeChat limits per day for the whole fleet:
// force_refresh calls (20 a day, 30 s apart, for every holder of a stable
// token) and on-demand refreshes of a classic token (2000 calls a day,
// shared with renewals and whatever else uses the app). It lives in the
// shared store, so that it survives restarts and N instances count as one;
// without a store, or while the store fails, this instance counts alone.

// autoForceLimit is the share of the day's force_refresh calls the proxy
// may spend by itself: the rest is kept for operators (admin ?force=1),
// for the day a token really leaks.
const autoForceLimit = forceDailyLimit / 2

// beijing is the time zone of WeChat's daily quotas.
var beijing = time.FixedZone("UTC+8", 8*60*60)

// ErrDailyRefreshLimit is returned when the fleet has spent its daily cap
// of on-demand classic refreshes (DailyRefreshLimit).
var ErrDailyRefreshLimit = errors.New("daily refresh limit reached")

// ErrForceLimited is returned when a force_refresh is not allowed now.
var ErrForceLimited = errors.New("force_refresh not allowed now")

// ledgerRecord is the ledger of one credential.
type ledgerRecord struct {
	Version int `json:"version"`
	// Day is the Beijing date that Refreshes counts.
	Day       string `json:"day"`
	Refreshes int    `json:"refreshes"`
	// Forces are the force_refresh calls of the last 24 hours, oldest first.
	Forces []forceEntry `json:"forces"`
}

type forceEntry struct {
	At time.Time `json:"at"`
	// Auto is true for the proxy's own, false for operators'.
	Auto bool `json:"auto"`
}

// roll drops what is older than the day's window.
func (l *ledgerRecord) roll(now time.Time) {
	if day := now.In(beijing).Format(time.DateOnly); l.Day != day {
		l.Day, l.Refreshes = day, 0
	}
	l.Forces = slices.DeleteFunc(l.Forces, func(f forceEntry) bool { return now.Sub(f.At) >= 24*time.Hour })
}

// autoForces counts the proxy's own force_refresh calls.
func (l *ledgerRecord) autoForces() int {
	n := 0
	for _, f := range l.Forces {
		if f.Auto {
			n++
		}
	}
	return n
}

// reserveForce records a force_refresh about to be made, or says why it
// must not be: WeChat's gap and daily limit, and for automatic ones (auto)
// the half of the day kept for operators.
func (m *Manager) reserveForce(now time.Time, auto bool) error {
	return m.updateLedger(now, func(l *ledgerRecord) error {
		if n := len(l.Forces); n > 0 && now.Sub(l.Forces[n-1].At) < forceMinGap {
			return fmt.Errorf("%w: force_refresh for %s was used %s ago; WeChat allows one every %s",
				ErrForceLimited, m.appID, now.Sub(l.Forces[n-1].At).Round(time.Second), forceMinGap)
		}
		if len(l.Forces) >= forceDailyLimit {
			return fmt.Errorf("%w: force_refresh for %s was used %d times in 24 hours, WeChat's daily limit",
				ErrForceLimited, m.appID, len(l.Forces))
		}
		if auto && l.autoForces() >= autoForceLimit {
			return fmt.Errorf("%w: the proxy used %d force_refresh calls for %s in 24 hours, its share; the other %d are kept for operators",
				ErrForceLimited, autoForceLimit, m.appID, forceDailyLimit-autoForceLimit)
		}
		l.Forces = append(l.Forces, forceEntry{At: now, Auto: auto})
		return nil
	})
}

// countRefresh counts an on-demand fetch against the fleet's daily cap, or
// refuses it. Only the kinds whose every fetch spends WeChat's daily quota
// (classic) are given a cap; a stable token's normal calls change nothing
// and force_refresh has its own limits.
func (m *Manager) countRefresh() error {
	limit := m.cfg().DailyRefreshLimit
	if limit == 0 {
		return nil
	}
	return m.updateLedger(m.clock.Now(), func(l *ledgerRecord) error {
		if l.Refreshes >= limit {
			return fmt.Errorf("%w: the fleet made %d on-demand refreshes of the classic token for %s today (Beijing time), its daily_refresh_limit",
				ErrDailyRefreshLimit, l.Refreshes, m.appID)
		}
		l.Refreshes++
		return nil
	})
}

// updateLedger applies change to the fleet's ledger under the store's lock
// and saves it; change's error is returned and nothing is saved. When the
// store cannot be used, this instance's copy is updated alone (warned once):
// a storage outage must not stop refreshes, and the copy keeps counting.
func (m *Manager) updateLedger(now time.Time, change func(*ledgerRecord) error) error {
	m.ledgerMu.Lock()
	defer m.ledgerMu.Unlock()
	m.mu.Lock()
	l := m.ledger
	m.mu.Unlock()
	l.Forces = slices.Clone(l.Forces)

	store := m.cfg().Store
	shared := false
	if store != nil {
		ctx, cancel := context.WithTimeout(m.ctx, 2*storeTimeout)
		defer cancel()
		lock := m.keys.LedgerLock
		if err := store.Lock(ctx, lock); err != nil {
			m.warnOnce("ledger", err, "cannot lock the fleet's refresh ledger; counting on this instance alone")
		} else {
			defer func() {
				ctx, cancel := context.WithTimeout(context.WithoutCancel(m.ctx), storeTimeout)
				defer cancel()
				if err := store.Unlock(ctx, lock); err != nil {
					m.warnOnce("unlock", err, "cannot release the refresh ledger's lock")
				}
			}()
			if stored, err := m.loadLedger(ctx, store); err == nil {
				l, shared = stored, true
			} else {
				m.warnOnce("ledger", err, "cannot read the fleet's refresh ledger; counting on this instance alone")
			}
		}
	}
	l.roll(now)
	if err := change(&l); err != nil {
		m.setLedger(l)
		return err
	}
	if shared {
		data, err := json.Marshal(l)
		if err == nil {
			ctx, cancel := context.WithTimeout(m.ctx, storeTimeout)
			defer cancel()
			err = store.Store(ctx, m.keys.Ledger, data)
		}
		if err != nil {
			m.warnOnce("ledger", err, "cannot save the fleet's refresh ledger; counting on this instance alone")
		}
	}
	m.setLedger(l)
	return nil
}

// loadLedger reads the stored ledger; a missing one is empty.
func (m *Manager) loadLedger(ctx context.Context, store Store) (ledgerRecord, error) {
	data, err := store.Load(ctx, m.keys.Ledger)
	if errors.Is(err, fs.ErrNotExist) {
		return ledgerRecord{Version: recordVersion}, nil
	}
	if err != nil {
		return ledgerRecord{}, err
	}
	var l ledgerRecord
	if err := json.Unmarshal(data, &l); err != nil || l.Version != recordVersion {
		// A corrupt ledger starts again from this instance's copy rather
		// than block refreshes; the log says so once.
		m.warnOnce("ledger-record", err, "ignoring a corrupt refresh ledger", zap.String("key", m.keys.Ledger))
		m.mu.Lock()
		defer m.mu.Unlock()
		return m.ledger, nil
	}
	return l, nil
}

func (m *Manager) setLedger(l ledgerRecord) {
	l.Version = recordVersion
	m.mu.Lock()
	m.ledger = l
	m.mu.Unlock()
}

// ReadLedger refreshes this instance's copy of the fleet's ledger from the
// store, for a status that says what the fleet has left.
func (m *Manager) ReadLedger(ctx context.Context) {
	store := m.cfg().Store
	if store == nil {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, storeTimeout)
	defer cancel()
	l, err := m.loadLedger(ctx, store)
	if err != nil {
		return // the status shows the last copy; refreshes warn about storage
	}
	m.setLedger(l)
}

// Budget is what is left of the day's limited calls, for the status.
type Budget struct {
	// force_refresh calls left in the last 24 hours (stable): the
	// proxy's automatic share and what operators may still use.
	AutomaticForces *int `json:"automatic_force_refreshes_left,omitempty"`
	OperatorForces  *int `json:"operator_force_refreshes_left,omitempty"`
	// Refreshes left today, Beijing time, under daily_refresh_limit
	// (classic only, when capped).
	Refreshes *int `json:"refreshes_left_today,omitempty"`
}

// budgetLocked reads the ledger copy at now; m.mu is held.
func (m *Manager) budgetLocked(now time.Time) Budget {
	l := m.ledger
	l.Forces = slices.Clone(l.Forces)
	l.roll(now)
	var b Budget
	if m.kind.ForceRefresh {
		operator := forceDailyLimit - len(l.Forces)
		auto := min(autoForceLimit-l.autoForces(), operator)
		b.AutomaticForces, b.OperatorForces = &auto, &operator
	}
	if limit := m.cfg().DailyRefreshLimit; limit > 0 {
		left := max(limit-l.Refreshes, 0)
		b.Refreshes = &left
	}
	return b
}
