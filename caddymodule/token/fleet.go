package token

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"time"

	"go.uber.org/zap"
)

// Store is storage shared by the instances of a fleet, with a lock per
// name. Caddy's storage (certmagic.Storage: the file system, Redis, ...)
// satisfies it. Load reports a missing key with an error wrapping
// fs.ErrNotExist.
type Store interface {
	Lock(ctx context.Context, name string) error
	Unlock(ctx context.Context, name string) error
	Load(ctx context.Context, key string) ([]byte, error)
	Store(ctx context.Context, key string, value []byte) error
}

const (
	recordVersion = 1
	// storeTimeout bounds one load or save.
	storeTimeout = 5 * time.Second
	// syncPeriodMax is the longest time between re-reads of the store, so
	// that a token renewed by another instance is picked up well inside
	// WeChat's ~5 minute overlap.
	syncPeriodMax = time.Minute
)

// record is what is kept in the store for one credential.
type record struct {
	Version int    `json:"version"`
	AppID   string `json:"app_id"`
	// Kind is the kind's name; the JSON name is that of the first
	// release, whose kinds were the two token APIs.
	Kind      string    `json:"token_api"`
	Token     string    `json:"access_token"`
	FetchedAt time.Time `json:"fetched_at"`
	ExpiresAt time.Time `json:"expires_at"`
	// SecretID is a fingerprint of the AppSecret that fetched the token,
	// so that instances configured with different secrets can be told.
	SecretID string `json:"secret_id"`
}

// Stored is a credential's record in the fleet's storage, without its
// value: what a report that must fetch nothing (caddy wechat check) can
// say of a credential.
type Stored struct {
	FetchedAt, ExpiresAt time.Time
	// SecretID is the fingerprint (SecretFingerprint) of the secret that
	// fetched it.
	SecretID string
}

// LoadStored reads the record at key as a Manager of appID and kind would
// take it; a missing one is an error wrapping fs.ErrNotExist.
func LoadStored(ctx context.Context, store Store, key, appID, kind string) (Stored, error) {
	data, err := store.Load(ctx, key)
	if err != nil {
		return Stored{}, fmt.Errorf("read %s: %w", key, err)
	}
	var rec record
	if err := json.Unmarshal(data, &rec); err != nil || rec.Version != recordVersion || rec.AppID != appID || rec.Kind != kind ||
		rec.Token == "" || rec.ExpiresAt.IsZero() {
		return Stored{}, fmt.Errorf("the record at %s is corrupt or not %s's", key, appID)
	}
	return Stored{FetchedAt: rec.FetchedAt, ExpiresAt: rec.ExpiresAt, SecretID: rec.SecretID}, nil
}

// SecretFingerprint identifies an AppSecret without revealing it.
func SecretFingerprint(appID, secret string) string {
	sum := sha256.Sum256([]byte("wechat_token\x00" + appID + "\x00" + secret))
	return hex.EncodeToString(sum[:8])
}

// loadShared reads the stored token. It returns false, logging why, when
// there is none usable: missing, unreadable, corrupt, or for another app.
func (m *Manager) loadShared() (*Token, bool) {
	tok, err := m.readShared()
	return tok, err == nil && tok != nil
}

// readShared is loadShared that also returns the storage's error.
func (m *Manager) readShared() (*Token, error) {
	ctx, cancel := context.WithTimeout(m.ctx, storeTimeout)
	defer cancel()
	key := m.keys.Record
	data, err := m.cfg().Store.Load(ctx, key)
	if errors.Is(err, fs.ErrNotExist) && m.keys.Legacy != "" {
		key = m.keys.Legacy
		data, err = m.cfg().Store.Load(ctx, key)
	}
	if errors.Is(err, fs.ErrNotExist) {
		m.storageWorks()
		return nil, nil
	}
	if err != nil {
		m.warnOnce("storage", err, "cannot read the shared token; going on without it")
		return nil, err
	}
	m.storageWorks()
	var rec record
	if err := json.Unmarshal(data, &rec); err != nil || rec.Version != recordVersion || rec.AppID != m.appID || rec.Kind != m.kind.Name ||
		rec.Token == "" || len(rec.Token) > MaxTokenLen || rec.ExpiresAt.IsZero() || rec.ExpiresAt.Sub(rec.FetchedAt) > MaxLifetime+time.Minute {
		m.warnOnce("record", nil, "ignoring a shared token record that is corrupt or not this app's", zap.String("key", key), zap.Int("bytes", len(data)))
		return nil, nil
	}
	if key == m.keys.Legacy && rec.SecretID != m.cfg().SecretID {
		return nil, nil // another holder's, under a key that did not tell them apart
	}
	if rec.SecretID != m.cfg().SecretID {
		m.errorOnce("secret:"+rec.SecretID, "instances sharing storage are configured with different AppSecrets for this app; "+
			"the stored token is used while it works, but check app_secret on every instance", zap.String("key", key))
	}
	return &Token{Value: rec.Token, FetchedAt: rec.FetchedAt, ExpiresAt: rec.ExpiresAt}, nil
}

// saveShared stores tok for the other instances.
func (m *Manager) saveShared(tok *Token) {
	settings := m.cfg()
	data, err := json.Marshal(record{Version: recordVersion, AppID: m.appID, Kind: m.kind.Name, Token: tok.Value,
		FetchedAt: tok.FetchedAt, ExpiresAt: tok.ExpiresAt, SecretID: settings.SecretID})
	if err == nil {
		ctx, cancel := context.WithTimeout(m.ctx, storeTimeout)
		defer cancel()
		err = settings.Store.Store(ctx, m.keys.Record, data)
	}
	if err != nil {
		m.warnOnce("storage", err, "cannot save the token to shared storage; other instances will fetch their own")
		return
	}
	m.storageWorks()
}

// newer reports whether the stored token should replace ours: it is not
// the one being replaced and is still valid, and either ours is the one
// being replaced (or no longer valid), or the stored one lives longer.
func newer(stored, cur *Token, replacing string, now time.Time) bool {
	if stored.Value == replacing || !stored.ValidAt(now) {
		return false
	}
	return !cur.ValidAt(now) || cur.Value == replacing || (stored.Value != cur.Value && stored.ExpiresAt.After(cur.ExpiresAt))
}

// adopt installs a token another instance fetched, its epoch set, and
// returns what it installed.
func (m *Manager) adopt(tok *Token, why string) *Token {
	tok = m.install(tok, false)
	m.log().Info(m.kind.Noun+" taken from shared storage", zap.String("reason", why),
		zap.Duration("expires_in", tok.ExpiresAt.Sub(m.clock.Now()).Round(time.Second)))
	m.poke()
	return tok
}

// syncFromStore adopts a token that another instance renewed, and says
// whether it did.
func (m *Manager) syncFromStore() bool {
	if m.savingNow.Load() > 0 {
		return false // the store is behind this instance until its save ends
	}
	stored, ok := m.loadShared()
	if !ok || !newer(stored, m.current.Load(), "", m.clock.Now()) {
		return false
	}
	stored.epoch = m.storedEpoch(stored)
	m.adopt(stored, "renewed by another instance")
	return true
}

// job is one replacement of a token, for obtain.
type job struct {
	force     bool   // force_refresh (stable)
	reason    string // for the log
	replacing string // the current token, or one WeChat rejected
	epoch     uint64 // what it installs belongs to this epoch (refresh.go)
	// renewal is a renewal of a token not rejected: it may wait out a
	// storage outage rather than fetch alone (canPostpone).
	renewal bool
	// beforeFetch, if set, may veto the fetch itself (the fleet's daily
	// refresh cap); adopting a stored token costs nothing and is never
	// vetoed.
	beforeFetch func() error
}

// obtain replaces j.replacing. With a store, a token another instance
// already put there in its place is adopted and nothing is fetched;
// otherwise the fleet's lock is taken and the store re-read before
// fetching, so that instances renew one at a time. Storage trouble
// degrades to fetching alone. Requests without a valid token wait for
// obtain to end.
func (m *Manager) obtain(j job) (Token, error) {
	defer m.beginAttempt()()
	fetch := func() (Token, error) {
		if j.beforeFetch != nil {
			if err := j.beforeFetch(); err != nil {
				return Token{}, err
			}
		}
		return m.fetch(j.force, j.reason, j.epoch)
	}
	if m.cfg().Store == nil {
		return fetch()
	}
	if m.kind.SharedAnswer && !j.renewal && !j.force {
		// Requests wait for this refresh, and the endpoint hands every
		// caller the same current token: fetching beside another instance
		// costs nothing, so the fleet's storage (which may be slow) is left
		// off their path; the token is saved for the fleet beside them.
		tok, err := fetch()
		if err == nil {
			m.saveBeside(tok, nil)
		}
		return tok, err
	}
	// A save of this instance's last token may be under way: the store
	// holds the one before it until then, which must not be taken for news.
	m.saving.Wait()
	// Stored tokens are judged against the one held when this began: the
	// loop's re-reads may adopt the replacement meanwhile, and it still is
	// the answer, not a reason to fetch another.
	heldAtStart := m.current.Load()
	stored, readErr := m.readShared()
	if stored != nil && newer(stored, heldAtStart, j.replacing, m.clock.Now()) {
		return m.adoptFound(stored, "already renewed by another instance", j.epoch), nil
	}
	var unlock func()
	lockErr := readErr // a storage that cannot be read will not be locked either
	if readErr == nil {
		stored, unlock, lockErr = m.lockOrAdopt(heldAtStart, j.replacing)
		if stored != nil {
			return m.adoptFound(stored, "renewed by another instance meanwhile", j.epoch), nil
		}
	}
	if lockErr != nil {
		if left, ok := m.canPostpone(heldAtStart, j, lockErr); ok {
			m.warnOnce("lock", lockErr, "shared storage unavailable; renewal postponed while the token lasts, to renew as one fleet once it is back",
				zap.Duration("token_left", left))
			return Token{}, fmt.Errorf("renew %s token for %s: shared storage unavailable, renewal postponed (%s of the token left): %w", m.kind.Name, m.appID, left, lockErr)
		}
		m.warnOnce("lock", lockErr, "cannot take the shared renewal lock; renewing alone")
	}
	if unlock != nil {
		// Re-read under the lock: the previous holder may have renewed.
		if stored, ok := m.loadShared(); ok && newer(stored, heldAtStart, j.replacing, m.clock.Now()) {
			unlock()
			return m.adoptFound(stored, "already renewed by another instance", j.epoch), nil
		}
	}
	tok, err := fetch()
	if err != nil {
		if unlock != nil {
			unlock()
		}
		return tok, err
	}
	// The token is installed: whoever waits for it has it now. The fleet
	// gets it from the storage just after, the lock held until then, so
	// that no request waits on the storage's write and no other instance
	// fetches before it can adopt.
	m.saveBeside(tok, unlock)
	return tok, nil
}

// saveBeside saves tok for the fleet, then releases the lock (if held),
// beside whoever waits for tok.
func (m *Manager) saveBeside(tok Token, unlock func()) {
	save := func() {
		// One save at a time, and only of the token still held: saves
		// ending out of order must not leave an older token stored.
		m.saveMu.Lock()
		if cur := m.current.Load(); cur == nil || cur.Value == tok.Value {
			m.saveShared(&tok)
		}
		m.saveMu.Unlock()
		if unlock != nil {
			unlock()
		}
	}
	// Stop waits for the saves under way; one begun once it waits (a
	// refresh ending as the manager stops) is made here instead.
	m.stopGate.Lock()
	if m.stopping {
		m.stopGate.Unlock()
		save()
		return
	}
	m.saving.Add(1)
	m.stopGate.Unlock()
	m.savingNow.Add(1)
	go func() {
		defer m.saving.Done()
		defer m.savingNow.Add(-1)
		save()
	}()
}

// adoptFound adopts stored, found by work of epoch, unless the loop
// adopted it already.
func (m *Manager) adoptFound(stored *Token, why string, epoch uint64) Token {
	if cur := m.current.Load(); cur != nil && cur.Value == stored.Value {
		return *cur
	}
	stored.epoch = epoch
	return *m.adopt(stored, why)
}

// canPostpone says whether a renewal that could not take the fleet's lock
// because the storage failed may wait for the storage instead of fetching
// alone: instances renewing alone each fetch (with classic, knocking each
// other's tokens out), and a storage outage is usually brief. It may while
// the held token has more than half of its renewal margin left; a rejected
// token, an expired one or a holder that never let go (the wait ran out)
// is replaced alone at once.
func (m *Manager) canPostpone(held *Token, j job, lockErr error) (time.Duration, bool) {
	now := m.clock.Now()
	if !j.renewal || errors.Is(lockErr, context.DeadlineExceeded) || !held.ValidAt(now) || held.Value != j.replacing {
		return 0, false
	}
	left := held.ExpiresAt.Sub(now)
	ahead := min(m.cfg().RefreshAhead, held.ExpiresAt.Sub(held.FetchedAt)/2)
	return left.Round(time.Millisecond), left > ahead/2
}

// lockPoll is how often the store is re-read while waiting for the lock.
const lockPoll = 200 * time.Millisecond

// lockOrAdopt waits for the fleet's renewal lock and returns its release;
// or, if another instance stores a replacement of heldAtStart meanwhile,
// that token. It returns why when the lock cannot be had: the wait ran out
// (a holder that hangs: context.DeadlineExceeded) or the storage failed. The wait (LockWait) outlasts a live holder's
// work, so a waiter never fetches while the holder still might.
func (m *Manager) lockOrAdopt(heldAtStart *Token, replacing string) (*Token, func(), error) {
	settings := m.cfg()
	store, wait := settings.Store, settings.LockWait
	if now := m.clock.Now(); heldAtStart.ValidAt(now) {
		// A token about to run out is renewed beside a holder that is slow
		// (or a storage that hangs) rather than let expire: the cap binds
		// only in the last seconds, LockWait being far below refresh_ahead.
		wait = min(wait, max(heldAtStart.ExpiresAt.Sub(now)*3/4, time.Second))
	}
	ctx, cancel := context.WithTimeout(m.ctx, wait)
	defer cancel()
	locked := make(chan error, 1)
	go func() { locked <- store.Lock(ctx, m.keys.Lock) }()
	unlock := func() {
		ctx, cancel := context.WithTimeout(context.WithoutCancel(m.ctx), storeTimeout)
		defer cancel()
		if err := store.Unlock(ctx, m.keys.Lock); err != nil {
			m.warnOnce("unlock", err, "cannot release the shared renewal lock")
		}
	}
	poll := time.NewTicker(lockPoll)
	defer poll.Stop()
	for {
		select {
		case err := <-locked:
			if err != nil {
				if ctx.Err() != nil && m.ctx.Err() == nil {
					err = fmt.Errorf("waited %s for another instance's renewal: %w", wait, context.DeadlineExceeded)
				}
				return nil, nil, err
			}
			return nil, unlock, nil
		case <-poll.C:
			if stored, ok := m.loadShared(); ok && newer(stored, heldAtStart, replacing, m.clock.Now()) {
				cancel()
				go func() { // release the lock should it be granted after all
					if err := <-locked; err == nil {
						unlock()
					}
				}()
				return stored, nil, nil
			}
		}
	}
}

// syncPeriod is how often the loop re-reads the store between renewals.
// Without a valid token every request is refused: the store is then
// re-read every noTokenSyncPeriod, so that a token another instance got
// (a platform's, with the ticket pushed to it) is taken within seconds.
func syncPeriod(cur *Token, now time.Time) time.Duration {
	if !cur.ValidAt(now) {
		return noTokenSyncPeriod
	}
	return max(min(syncPeriodMax, cur.ExpiresAt.Sub(cur.FetchedAt)/8), minRetryDelay)
}

// noTokenSyncPeriod is syncPeriod while no valid token is held.
const noTokenSyncPeriod = 2 * time.Second

// warnOnce logs a warning once per kind until its text changes, so that a
// lasting storage outage is reported, not repeated on every renewal.
func (m *Manager) warnOnce(kind string, err error, msg string, fields ...zap.Field) {
	if m.firstTime(kind, msg, err) {
		m.log().Warn(msg, append(fields, zap.Error(err))...)
	}
}

func (m *Manager) errorOnce(kind string, msg string, fields ...zap.Field) {
	if m.firstTime(kind, msg, nil) {
		m.log().Error(msg, fields...)
	}
}

func (m *Manager) firstTime(kind, msg string, err error) bool {
	text := msg
	if err != nil {
		text += ": " + err.Error()
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.warned[kind] == text {
		return false
	}
	m.warned[kind] = text
	return true
}

// storageWorks ends a reported storage outage.
func (m *Manager) storageWorks() {
	m.mu.Lock()
	_, was := m.warned["storage"]
	delete(m.warned, "storage")
	m.mu.Unlock()
	if was {
		m.log().Info("shared storage works again")
	}
}
