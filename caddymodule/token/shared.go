package token

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
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

// record is what is kept in the store for one app and token API.
type record struct {
	Version   int       `json:"version"`
	AppID     string    `json:"app_id"`
	API       API       `json:"token_api"`
	Token     string    `json:"access_token"`
	FetchedAt time.Time `json:"fetched_at"`
	ExpiresAt time.Time `json:"expires_at"`
	// SecretID is a fingerprint of the AppSecret that fetched the token,
	// so that instances configured with different secrets can be told.
	SecretID string `json:"secret_id"`
}

// SecretFingerprint identifies an AppSecret without revealing it.
func SecretFingerprint(appID, secret string) string {
	sum := sha256.Sum256([]byte("wechat_token\x00" + appID + "\x00" + secret))
	return hex.EncodeToString(sum[:8])
}

// StoreKey is where the token of appID for api is kept, and the name of
// the lock that guards its renewal.
func StoreKey(appID string, api API) (key, lock string) {
	return "wechat_token/" + string(api) + "/" + appID + ".json", "wechat_token_" + string(api) + "_" + appID
}

// loadShared reads the stored token. It returns false, logging why, when
// there is none usable: missing, unreadable, corrupt, or for another app.
func (m *Manager) loadShared() (*Token, bool) {
	ctx, cancel := context.WithTimeout(m.ctx, storeTimeout)
	defer cancel()
	data, err := m.cfg().Store.Load(ctx, m.storeKey)
	if errors.Is(err, fs.ErrNotExist) {
		m.storageWorks()
		return nil, false
	}
	if err != nil {
		m.warnOnce("storage", err, "cannot read the shared token; going on without it")
		return nil, false
	}
	m.storageWorks()
	var rec record
	if err := json.Unmarshal(data, &rec); err != nil || rec.Version != recordVersion || rec.AppID != m.appID || rec.API != m.api ||
		rec.Token == "" || len(rec.Token) > maxTokenLen || rec.ExpiresAt.IsZero() || rec.ExpiresAt.Sub(rec.FetchedAt) > MaxLifetime+time.Minute {
		m.warnOnce("record", nil, "ignoring a shared token record that is corrupt or not this app's", zap.String("key", m.storeKey), zap.Int("bytes", len(data)))
		return nil, false
	}
	if rec.SecretID != m.cfg().SecretID {
		m.errorOnce("secret:"+rec.SecretID, "instances sharing storage are configured with different AppSecrets for this app; "+
			"the stored token is used while it works, but check app_secret on every instance", zap.String("key", m.storeKey))
	}
	return &Token{Value: rec.Token, FetchedAt: rec.FetchedAt, ExpiresAt: rec.ExpiresAt}, true
}

// saveShared stores tok for the other instances.
func (m *Manager) saveShared(tok *Token) {
	settings := m.cfg()
	data, err := json.Marshal(record{Version: recordVersion, AppID: m.appID, API: m.api, Token: tok.Value,
		FetchedAt: tok.FetchedAt, ExpiresAt: tok.ExpiresAt, SecretID: settings.SecretID})
	if err == nil {
		ctx, cancel := context.WithTimeout(m.ctx, storeTimeout)
		defer cancel()
		err = settings.Store.Store(ctx, m.storeKey, data)
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

// adopt installs a token another instance fetched.
func (m *Manager) adopt(tok *Token, why string) {
	m.install(tok, false)
	m.log().Info("access_token taken from shared storage", zap.String("reason", why),
		zap.Duration("expires_in", tok.ExpiresAt.Sub(m.clock.Now()).Round(time.Second)))
	m.poke()
}

// syncFromStore adopts a token that another instance renewed, and says
// whether it did.
func (m *Manager) syncFromStore() bool {
	stored, ok := m.loadShared()
	if !ok || !newer(stored, m.current.Load(), "", m.clock.Now()) {
		return false
	}
	m.adopt(stored, "renewed by another instance")
	return true
}

// obtain replaces the token replacing (the current one, or one WeChat
// rejected). With a store, a token another instance already put there in
// its place is adopted and nothing is fetched; otherwise the fleet's lock
// is taken and the store re-read before fetching, so that instances renew
// one at a time. Storage trouble degrades to fetching alone. Requests
// without a valid token wait for obtain to end. beforeFetch, if set, may
// veto the fetch itself (the fleet's daily refresh cap); adopting a stored
// token costs nothing and is never vetoed.
func (m *Manager) obtain(force bool, reason, replacing string, beforeFetch func() error) (Token, error) {
	defer m.beginAttempt()()
	fetch := func() (Token, error) {
		if beforeFetch != nil {
			if err := beforeFetch(); err != nil {
				return Token{}, err
			}
		}
		return m.fetch(force, reason)
	}
	if m.cfg().Store == nil {
		return fetch()
	}
	// Stored tokens are judged against the one held when this began: the
	// loop's re-reads may adopt the replacement meanwhile, and it still is
	// the answer, not a reason to fetch another.
	heldAtStart := m.current.Load()
	if stored, ok := m.loadShared(); ok && newer(stored, heldAtStart, replacing, m.clock.Now()) {
		return m.adoptFound(stored, "already renewed by another instance"), nil
	}
	stored, unlock := m.lockOrAdopt(heldAtStart, replacing)
	if stored != nil {
		return m.adoptFound(stored, "renewed by another instance meanwhile"), nil
	}
	if unlock != nil {
		defer unlock()
		// Re-read under the lock: the previous holder may have renewed.
		if stored, ok := m.loadShared(); ok && newer(stored, heldAtStart, replacing, m.clock.Now()) {
			return m.adoptFound(stored, "already renewed by another instance"), nil
		}
	}
	tok, err := fetch()
	if err == nil {
		m.saveShared(&tok)
	}
	return tok, err
}

// adoptFound adopts stored unless the loop adopted it already.
func (m *Manager) adoptFound(stored *Token, why string) Token {
	if cur := m.current.Load(); cur != nil && cur.Value == stored.Value {
		return *cur
	}
	m.adopt(stored, why)
	return *stored
}

// lockPoll is how often the store is re-read while waiting for the lock.
const lockPoll = 200 * time.Millisecond

// lockOrAdopt waits for the fleet's renewal lock and returns its release;
// or, if another instance stores a replacement of heldAtStart meanwhile,
// that token. It returns neither when the lock cannot be had in time (a
// holder that hangs, storage down): the caller then renews alone rather
// than let its token run out. The wait (LockWait) outlasts a live holder's
// work, so a waiter never fetches while the holder still might.
func (m *Manager) lockOrAdopt(heldAtStart *Token, replacing string) (*Token, func()) {
	settings := m.cfg()
	store, wait := settings.Store, settings.LockWait
	ctx, cancel := context.WithTimeout(m.ctx, wait)
	defer cancel()
	locked := make(chan error, 1)
	go func() { locked <- store.Lock(ctx, m.lockName) }()
	unlock := func() {
		ctx, cancel := context.WithTimeout(context.WithoutCancel(m.ctx), storeTimeout)
		defer cancel()
		if err := store.Unlock(ctx, m.lockName); err != nil {
			m.warnOnce("unlock", err, "cannot release the shared renewal lock")
		}
	}
	poll := time.NewTicker(lockPoll)
	defer poll.Stop()
	for {
		select {
		case err := <-locked:
			if err != nil {
				m.warnOnce("lock", err, "cannot take the shared renewal lock; renewing alone", zap.Duration("waited", wait))
				return nil, nil
			}
			return nil, unlock
		case <-poll.C:
			if stored, ok := m.loadShared(); ok && newer(stored, heldAtStart, replacing, m.clock.Now()) {
				cancel()
				go func() { // release the lock should it be granted after all
					if err := <-locked; err == nil {
						unlock()
					}
				}()
				return stored, nil
			}
		}
	}
}

// syncPeriod is how often the loop re-reads the store between renewals.
func syncPeriod(cur *Token) time.Duration {
	if cur == nil {
		return syncPeriodMax
	}
	return max(min(syncPeriodMax, cur.ExpiresAt.Sub(cur.FetchedAt)/8), minRetryDelay)
}

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
