package credential

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"strconv"
	"time"

	"go.uber.org/zap"
)

// A platform's authorizations: one record per account in the storage,
// changed by WeChat's events in the order of their CreateTime, never lost
// when the storage fails (held in memory and written once it is back).

// authorization is an account's authorization of a platform, in storage.
type authorization struct {
	AppID        string    `json:"authorizer_appid"`
	RefreshToken string    `json:"authorizer_refresh_token,omitempty"`
	UpdatedAt    time.Time `json:"updated_at"`
	// EventTime is the CreateTime of the last event applied (0: imported
	// or listed): an older event changes nothing.
	EventTime int64 `json:"event_time,omitempty"`
	// WithdrawnAt is the CreateTime of the unauthorized event that ended
	// the authorization; the record stays, a dated marker, so that a late
	// event older than it cannot bring the account back, nor a late
	// withdrawal undo a newer authorization.
	WithdrawnAt int64 `json:"withdrawn_at,omitempty"`
	// EventCode is of the authorization code of the last event applied
	// (codeMark): an event of the same second with another code is a new
	// one (a change of permissions), not WeChat's re-delivery.
	EventCode string `json:"event_code,omitempty"`
}

// codeMark is what a record keeps of an authorization code: enough to
// tell two codes apart, nothing to exchange.
func codeMark(code string) string {
	sum := sha256.Sum256([]byte(code))
	return hex.EncodeToString(sum[:8])
}

// Event is an authorization event WeChat pushed to the platform.
type Event struct {
	// InfoType is authorized, updateauthorized or unauthorized.
	InfoType          string
	AuthorizerAppID   string
	AuthorizationCode string
	CreateTime        int64
}

// applyTimeout bounds an event's work (the code exchange, slow at
// WeChat's end, and the storage calls), which goes on when WeChat hangs up.
const applyTimeout = time.Minute

// Apply applies ev: an authorization's code is exchanged (api_query_auth)
// and its refresh token kept, its token shared; a withdrawal is marked and
// the fleet told. The work runs detached from ctx, which only bounds the
// wait: WeChat hanging up after 5 s cancels nothing, and its re-delivery of
// the event waits for the same work. An event older than the last one
// applied to the account, or a repeat of one applied, changes nothing.
func (p *Platform) Apply(ctx context.Context, ev Event) error {
	a := p.accounts.Load()
	if a == nil {
		return errors.New("the wechat app did not start")
	}
	if !ValidAppID(ev.AuthorizerAppID) && ev.InfoType == "unauthorized" {
		return fmt.Errorf("unauthorized: %q is not an appid", ev.AuthorizerAppID)
	}
	key := ev.InfoType + "\x00" + ev.AuthorizerAppID + "\x00" + strconv.FormatInt(ev.CreateTime, 10) + "\x00" + ev.AuthorizationCode
	ch := a.events.DoChan(key, func() (any, error) {
		ctx, cancel := context.WithTimeout(a.ctx, applyTimeout)
		defer cancel()
		return nil, a.apply(ctx, ev)
	})
	select {
	case r := <-ch:
		return r.Err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// apply does Apply's work, under the account's fleet-wide lock.
func (a *accounts) apply(ctx context.Context, ev Event) error {
	p := a.inForce()
	if p == nil {
		return errors.New("the wechat app stopped")
	}
	store, log := p.cfg.store, p.cfg.logger.With(zap.String("component_appid", a.componentAppID))
	appID := ev.AuthorizerAppID
	if ev.InfoType != "unauthorized" && appID == "" {
		appID = "?" // the exchange says which account it is
	}
	unlock := a.lock(ctx, store, authorizationLock(a.componentAppID, appID), log)
	defer unlock()
	rec, exists, readErr := a.record(ctx, appID)
	if readErr != nil {
		log.Warn("cannot read the authorization; applying the event anyway", zap.String("authorizer_appid", appID), zap.Error(readErr))
	}
	switch ev.InfoType {
	case "unauthorized":
		if exists && (ev.CreateTime < rec.EventTime || ev.CreateTime == rec.EventTime && rec.WithdrawnAt != 0) {
			return nil // older than what was applied, or a repeat
		}
		a.write(ctx, authorization{AppID: appID, UpdatedAt: time.Now(), EventTime: ev.CreateTime, WithdrawnAt: ev.CreateTime}, false, log)
		a.noteWithdrawal(ctx, p, appID, log)
		a.evict(appID)
		return nil
	default: // authorized, updateauthorized
		if exists && (ev.CreateTime < rec.EventTime || ev.CreateTime == rec.EventTime && rec.WithdrawnAt == 0 &&
			(rec.EventCode == "" || rec.EventCode == codeMark(ev.AuthorizationCode))) {
			return nil // its code was exchanged already, or a newer event applied
		}
		info, err := a.exchange(ctx, p, ev.AuthorizationCode)
		if err != nil {
			return err
		}
		if ev.AuthorizerAppID != "" && info.AuthorizerAppID != ev.AuthorizerAppID {
			return fmt.Errorf("api_query_auth answered for %s, the push named %s", info.AuthorizerAppID, ev.AuthorizerAppID)
		}
		a.write(ctx, authorization{AppID: info.AuthorizerAppID, RefreshToken: info.RefreshToken, UpdatedAt: time.Now(), EventTime: ev.CreateTime,
			EventCode: codeMark(ev.AuthorizationCode)}, exists && rec.WithdrawnAt != 0, log)
		// The exchange handed the account's token over: share it rather
		// than fetch another.
		if ac, err := a.load(info.AuthorizerAppID, false); err == nil {
			ac.m.Offer(info.Token.Value, info.Token.ExpiresIn)
		}
		return nil
	}
}

// exchange trades an authorization code for the account's refresh token
// and token, the component token refreshed once if WeChat rejects it.
func (a *accounts) exchange(ctx context.Context, p *Platform, code string) (AuthorizationInfo, error) {
	comp, err := p.ref.Get(ctx)
	if err != nil {
		return AuthorizationInfo{}, err
	}
	var info AuthorizationInfo
	err = withComponentToken(ctx, comp, func(componentToken string) error {
		info, err = QueryAuth(ctx, a.reg.client, p.spec.APIBase, p.spec.ID, componentToken, code)
		return err
	})
	return info, err
}

// lock takes a fleet-wide lock for at most 15 s and returns its release.
// An event is applied without it when the storage cannot lock: what WeChat
// hands over must be taken even then.
func (a *accounts) lock(ctx context.Context, store Storage, name string, log *zap.Logger) func() {
	lockCtx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	if err := store.Lock(lockCtx, name); err != nil {
		log.Warn("cannot take the authorization's lock; going on without it", zap.Error(err))
		return func() {}
	}
	return func() {
		ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		if err := store.Unlock(ctx, name); err != nil {
			log.Warn("cannot release the authorization's lock", zap.Error(err))
		}
	}
}

// record is an account's authorization: the one waiting to be written if
// there is one, else the stored one.
func (a *accounts) record(ctx context.Context, appID string) (authorization, bool, error) {
	a.mu.Lock()
	rec, ok := a.pending[appID]
	a.mu.Unlock()
	if ok {
		return rec, true, nil
	}
	p := a.inForce()
	if p == nil {
		return authorization{}, false, errors.New("the wechat app stopped")
	}
	return loadAuthorization(ctx, p.cfg.store, a.componentAppID, appID)
}

func loadAuthorization(ctx context.Context, store Storage, componentAppID, appID string) (authorization, bool, error) {
	var rec authorization
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	data, err := store.Load(ctx, authorizationKey(componentAppID, appID))
	if errors.Is(err, fs.ErrNotExist) {
		return rec, false, nil
	}
	if err != nil {
		return rec, false, fmt.Errorf("read the authorization of %s: %w", appID, err)
	}
	if err := json.Unmarshal(data, &rec); err != nil || rec.RefreshToken == "" && rec.WithdrawnAt == 0 {
		return rec, false, fmt.Errorf("the stored authorization of %s is unreadable", appID)
	}
	return rec, true, nil
}

// write stores rec, or keeps it in memory to be written once the storage
// is back: it is never lost. wasWithdrawn: the record it replaces marked
// a withdrawal.
func (a *accounts) write(ctx context.Context, rec authorization, wasWithdrawn bool, log *zap.Logger) {
	p := a.inForce()
	var err error
	if p == nil {
		err = errors.New("the wechat app stopped")
	} else {
		err = storeAuthorization(ctx, p.cfg.store, a.componentAppID, rec)
		if err == nil && (rec.WithdrawnAt != 0 || wasWithdrawn) {
			markWithdrawn(ctx, p.cfg.store, a.componentAppID, rec, log)
		}
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	a.storedCountAt = time.Time{} // the admin status counts again
	if err != nil {
		log.Error("cannot store an authorization; it is kept in memory and written when the storage is back",
			zap.String("authorizer_appid", rec.AppID), zap.Error(err))
		a.pending[rec.AppID] = rec
		return
	}
	delete(a.pending, rec.AppID)
}

// markWithdrawn keeps withdrawnKey as rec says: a lost mark only miscounts
// the admin status's authorizers (the record decides what is served).
func markWithdrawn(ctx context.Context, store Storage, componentAppID string, rec authorization, log *zap.Logger) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	key := withdrawnKey(componentAppID, rec.AppID)
	var err error
	if rec.WithdrawnAt != 0 {
		err = store.Store(ctx, key, []byte(strconv.FormatInt(rec.WithdrawnAt, 10)))
	} else if err = store.Delete(ctx, key); errors.Is(err, fs.ErrNotExist) {
		err = nil
	}
	if err != nil {
		log.Warn("cannot mark the authorization's withdrawal for the admin status's count", zap.String("authorizer_appid", rec.AppID), zap.Error(err))
	}
}

func storeAuthorization(ctx context.Context, store Storage, componentAppID string, rec authorization) error {
	data, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if err := store.Store(ctx, authorizationKey(componentAppID, rec.AppID), data); err != nil {
		return fmt.Errorf("%w: store the authorization of %s: %w", ErrStorage, rec.AppID, err)
	}
	return nil
}

func (a *accounts) hasPending() bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.pending) > 0
}

// flushPending writes the authorizations the storage refused before,
// unless a newer event replaced them meanwhile.
func (a *accounts) flushPending() {
	a.mu.Lock()
	if len(a.pending) == 0 {
		a.mu.Unlock()
		return
	}
	list := make([]authorization, 0, len(a.pending))
	for _, rec := range a.pending {
		list = append(list, rec)
	}
	a.mu.Unlock()
	p := a.inForce()
	if p == nil {
		return
	}
	for _, rec := range list {
		stored, exists, err := loadAuthorization(a.ctx, p.cfg.store, a.componentAppID, rec.AppID)
		if err == nil && (!exists || stored.EventTime <= rec.EventTime) {
			err = storeAuthorization(a.ctx, p.cfg.store, a.componentAppID, rec)
			if err == nil {
				markWithdrawn(a.ctx, p.cfg.store, a.componentAppID, rec, p.cfg.logger)
			}
		}
		if err != nil {
			return // the storage is still out: next time
		}
		a.mu.Lock()
		if cur, ok := a.pending[rec.AppID]; ok && cur == rec {
			delete(a.pending, rec.AppID)
		}
		a.mu.Unlock()
		p.cfg.logger.Info("authorization written now that the storage is back", zap.String("authorizer_appid", rec.AppID))
	}
}

// refreshToken is an account's refresh token, for its fetcher.
func (a *accounts) refreshToken(ctx context.Context, appID string) (string, error) {
	rec, exists, err := a.record(ctx, appID)
	switch {
	case err != nil:
		return "", err
	case !exists || rec.WithdrawnAt != 0:
		return "", ErrUnknownAuthorizer
	}
	return rec.RefreshToken, nil
}

// keepRefreshToken keeps a refresh token api_authorizer_token handed back,
// as write does: stored, or held until the storage is back.
func (a *accounts) keepRefreshToken(appID, refresh string) {
	ctx, cancel := context.WithTimeout(a.ctx, 10*time.Second)
	defer cancel()
	rec, exists, err := a.record(ctx, appID)
	if err != nil || !exists {
		rec = authorization{AppID: appID}
	}
	rec.RefreshToken, rec.UpdatedAt = refresh, time.Now()
	log := zap.NewNop()
	if p := a.inForce(); p != nil {
		log = p.cfg.logger
	}
	a.write(ctx, rec, false, log)
}
