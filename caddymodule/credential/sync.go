package credential

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"time"

	"go.uber.org/zap"
)

// Recovery and the fleet's view of withdrawals.

// walk is a walk of WeChat's list of the platform's authorizations.
type walk struct {
	done   chan struct{}
	result SyncResult
	err    error
}

// SyncResult is what a list walk found and wrote.
type SyncResult struct {
	Listed  int `json:"listed"`
	Written int `json:"written"`
}

const (
	// walkTimeout bounds a whole walk: 100,000 accounts are 200 pages.
	walkTimeout = 10 * time.Minute
	// walkQuiet: after a walk, a request for an account it did not list
	// starts no new walk for this long.
	walkQuiet = time.Minute
	// recoverWait is how long a request for an account without a record
	// waits for a walk before being told to retry.
	recoverWait = 10 * time.Second
)

// ErrRecovering is returned for an account whose authorization is being
// recovered from WeChat's list while the request waits no longer.
var ErrRecovering = errors.New("recovering the platform's authorizations from WeChat (api_get_authorizer_list); retry shortly")

// Sync pulls every account and its refresh token from WeChat's list of
// the platform's authorizations (api_get_authorizer_list, pages of 500),
// writing what the storage lacks or has stale: a lost storage, or a
// migration, needs no export. One walk runs at a time; a call while one is
// under way waits for it.
func (p *Platform) Sync(ctx context.Context) (SyncResult, error) {
	a := p.accounts.Load()
	if a == nil {
		return SyncResult{}, errors.New("the wechat app did not start")
	}
	return a.sync(ctx)
}

func (a *accounts) sync(ctx context.Context) (SyncResult, error) {
	a.mu.Lock()
	w := a.walk
	if w == nil {
		w = &walk{done: make(chan struct{})}
		a.walk = w
		go a.runWalk(w)
	}
	a.mu.Unlock()
	select {
	case <-w.done:
		return w.result, w.err
	case <-ctx.Done():
		return SyncResult{}, ctx.Err()
	}
}

func (a *accounts) runWalk(w *walk) {
	ctx, cancel := context.WithTimeout(a.ctx, walkTimeout)
	defer cancel()
	w.result, w.err = a.walkList(ctx)
	a.mu.Lock()
	a.walk, a.lastWalk = nil, time.Now()
	a.mu.Unlock()
	close(w.done)
}

func (a *accounts) walkList(ctx context.Context) (SyncResult, error) {
	var res SyncResult
	p := a.inForce()
	if p == nil {
		return res, errors.New("the wechat app stopped")
	}
	log := p.cfg.logger.With(zap.String("component_appid", a.componentAppID))
	comp, err := p.ref.Get(ctx)
	if err != nil {
		return res, err
	}
	for offset := 0; ; {
		var page []Listed
		var total int
		err := withComponentToken(ctx, comp, func(componentToken string) (err error) {
			page, total, err = ListAuthorizers(ctx, a.reg.client, p.spec.APIBase, p.spec.ID, componentToken, offset)
			return err
		})
		if err != nil {
			return res, fmt.Errorf("api_get_authorizer_list at %d: %w", offset, err)
		}
		for _, l := range page {
			written, err := a.adoptListed(ctx, p, l, log)
			if err != nil {
				return res, err
			}
			res.Listed++
			if written {
				res.Written++
			}
		}
		offset += len(page)
		if len(page) == 0 || offset >= total {
			break
		}
	}
	log.Info("authorizations recovered from api_get_authorizer_list", zap.Int("listed", res.Listed), zap.Int("written", res.Written))
	return res, nil
}

// adoptListed writes a listed account's authorization where the storage
// lacks it or holds another refresh token, unless a withdrawal newer than
// the listed authorization is recorded (the list was read before it).
func (a *accounts) adoptListed(ctx context.Context, p *Platform, l Listed, log *zap.Logger) (bool, error) {
	stale := func(rec authorization, exists bool) bool {
		if !exists {
			return true
		}
		if rec.WithdrawnAt != 0 {
			return l.AuthTime > rec.WithdrawnAt
		}
		return rec.RefreshToken != l.RefreshToken
	}
	rec, exists, err := a.record(ctx, l.AppID)
	if err != nil {
		return false, err
	}
	if !stale(rec, exists) {
		return false, nil
	}
	unlock := a.lock(ctx, p.cfg.store, authorizationLock(a.componentAppID, l.AppID), log)
	defer unlock()
	if rec, exists, err = a.record(ctx, l.AppID); err != nil || !stale(rec, exists) {
		return false, err
	}
	a.write(ctx, authorization{AppID: l.AppID, RefreshToken: l.RefreshToken, UpdatedAt: time.Now(), EventTime: max(rec.EventTime, l.AuthTime)}, exists && rec.WithdrawnAt != 0, log)
	return true, nil
}

// recover walks the list for a fetcher whose refresh token WeChat refused,
// unless a walk ended moments ago (its result is what there is).
func (a *accounts) recover(ctx context.Context) error {
	a.mu.Lock()
	recent := a.walk == nil && time.Since(a.lastWalk) < walkQuiet
	a.mu.Unlock()
	if recent {
		return nil
	}
	_, err := a.sync(ctx)
	return err
}

// authorized checks that an account has a current authorization before
// its first request is served. One with no record at all is looked for in
// WeChat's list (a lost storage), at most one walk a minute.
func (a *accounts) authorized(ctx context.Context, appID string) (authorization, error) {
	rec, exists, err := a.record(ctx, appID)
	if err != nil {
		return rec, err
	}
	if !exists {
		a.mu.Lock()
		recent := a.walk == nil && time.Since(a.lastWalk) < walkQuiet
		a.mu.Unlock()
		if recent {
			return rec, ErrUnknownAuthorizer
		}
		wait, cancel := context.WithTimeout(ctx, recoverWait)
		_, err := a.sync(wait)
		cancel()
		switch {
		case err != nil && ctx.Err() != nil:
			return rec, ctx.Err()
		case errors.Is(err, context.DeadlineExceeded):
			return rec, ErrRecovering
		case err != nil:
			return rec, fmt.Errorf("recover the authorization from api_get_authorizer_list: %w", err)
		}
		if rec, exists, err = a.record(ctx, appID); err != nil {
			return rec, err
		}
	}
	if !exists || rec.WithdrawnAt != 0 {
		return rec, ErrUnknownAuthorizer
	}
	return rec, nil
}

// withdrawals is the fleet's log of recent withdrawals.
type withdrawals struct {
	Seq     int64        `json:"seq"`
	Entries []withdrawal `json:"entries"`
}

type withdrawal struct {
	Seq   int64     `json:"seq"`
	AppID string    `json:"authorizer_appid"`
	At    time.Time `json:"at"`
}

// withdrawalsKept bounds the log: instances poll it every
// withdrawalsPoll, so only its last entries matter to any of them.
const withdrawalsKept = 1000

// noteWithdrawal adds a withdrawal to the fleet's log, which every
// instance polls to stop serving the account.
func (a *accounts) noteWithdrawal(ctx context.Context, p *Platform, appID string, log *zap.Logger) {
	store := p.cfg.store
	unlock := a.lock(ctx, store, withdrawalsLock(a.componentAppID), log)
	defer unlock()
	var w withdrawals
	data, err := store.Load(ctx, withdrawalsKey(a.componentAppID))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		log.Warn("cannot read the fleet's withdrawals; other instances stop serving the account when they next read its authorization", zap.Error(err))
		return
	}
	if err == nil {
		_ = json.Unmarshal(data, &w) // a corrupt log starts again
	}
	w.Seq++
	w.Entries = append(w.Entries, withdrawal{Seq: w.Seq, AppID: appID, At: time.Now()})
	if n := len(w.Entries); n > withdrawalsKept {
		w.Entries = w.Entries[n-withdrawalsKept:]
	}
	if data, err = json.Marshal(w); err == nil {
		err = store.Store(ctx, withdrawalsKey(a.componentAppID), data)
	}
	if err != nil {
		log.Warn("cannot write the fleet's withdrawals", zap.Error(err))
	}
}

// pollWithdrawals drops the accounts the fleet withdrew since the last
// poll: one storage read per platform, however many accounts.
func (a *accounts) pollWithdrawals() {
	p := a.inForce()
	if p == nil {
		return
	}
	ctx, cancel := context.WithTimeout(a.ctx, 5*time.Second)
	defer cancel()
	data, err := p.cfg.store.Load(ctx, withdrawalsKey(a.componentAppID))
	if err != nil {
		return // none yet, or the storage is out: next time
	}
	var w withdrawals
	if json.Unmarshal(data, &w) != nil {
		return
	}
	a.mu.Lock()
	seen := a.withdrawn
	if w.Seq < seen {
		seen = 0 // the log started again
	}
	a.withdrawn = w.Seq
	a.mu.Unlock()
	for _, e := range w.Entries {
		if e.Seq > seen {
			a.evict(e.AppID)
		}
	}
}
