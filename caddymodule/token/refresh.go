package token

import (
	"context"
	"fmt"
	"sync/atomic"

	"go.uber.org/zap"
)

// The refresh rules, all of them. A refresh replaces a token WeChat
// rejected; renewals before expiry are the loop's (manager.go).
//
//  1. Epochs. Every token held belongs to an epoch: the manager's epoch
//     when the work that got it (a fetch, or a refresh or renewal that
//     found it in the fleet's storage) began. A token the loop adopts from
//     storage between renewals belongs to the epoch in which the other
//     instance fetched it, as far as its fetched_at tells.
//  2. A rejection of a token of the current epoch starts a new epoch:
//     whatever dropped it (another system fetching tokens, a secret reset,
//     a revocation) may have dropped every token got so far, a renewal
//     that raced it included. A rejection of an older token is the same
//     event seen late and starts nothing.
//  3. A token answers a rejection if it is valid and of a later epoch. So
//     many requests failing at once, with whichever tokens of that moment,
//     cause one refresh, and the replay never uses a token as old as the
//     one rejected.
//  4. A refresh vouches for its result: the token it returns, fetched or
//     found in storage, belongs to the refresh's epoch.
//  5. Budgets. Refreshes are limited per source (the proxy, token-endpoint
//     callers, the admin API), a burst then one per MinRefreshInterval, so
//     that no source can spend another's; classic refreshes also count
//     against the fleet's daily cap in the ledger (ledger.go).
//  6. force_refresh. With the stable API, a normal call that answers the
//     rejected token means WeChat holds it current: it is confirmed and
//     answers the rejection (replayed as it is). Only the rejection of a
//     confirmed token, a request sent with it after WeChat confirmed it,
//     spends a force_refresh, and only from the proxy and within the
//     fleet's ledger: 30 s apart, half of WeChat's 20 a day, the other
//     half kept for operators (RenewNow with force).

// Source says who asks for a refresh (rule 5).
type Source int

// The sources of refreshes.
const (
	FromProxy  Source = iota // a proxied request was rejected
	FromCaller               // a caller of the token endpoint reported a rejection
	FromAdmin                // an operator asked through the admin API
	numSources
)

func (s Source) String() string {
	return [...]string{"proxy", "caller", "admin"}[s]
}

// Rejection is WeChat rejecting a token.
type Rejection struct {
	// Token is the token the rejected request was sent with, as Token
	// returned it (its epoch matters). A caller knowing only the value
	// gets it from Known.
	Token  Token
	Source Source
}

// epochNow is the current epoch.
func (m *Manager) epochNow() uint64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.epoch
}

// noteRejection applies rule 2.
func (m *Manager) noteRejection(t Token) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if t.epoch == m.epoch {
		m.epoch++
		m.epochBegan = m.clock.Now()
	}
}

// replaces reports whether t answers the rejection of r (rule 3). The same
// value of a later epoch is a token WeChat confirmed after r was sent.
func (m *Manager) replaces(t *Token, r Token) bool {
	return t.ValidAt(m.clock.Now()) && t.epoch > r.epoch && (t.Value != r.Value || t.confirmed)
}

// Known returns the token with value as this manager held it first, for a
// rejection reported by value alone; a value never held (or long gone) has
// epoch 0, older than any, so any other valid token answers it.
func (m *Manager) Known(value string) Token {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, k := range m.recent {
		if k.value == value {
			return Token{Value: value, epoch: k.epoch}
		}
	}
	return Token{Value: value}
}

// storedEpoch is the epoch of a token another instance stored (rule 1):
// the current one if it was fetched since the epoch began, else older.
func (m *Manager) storedEpoch(stored *Token) uint64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.epoch > 1 && stored.FetchedAt.Before(m.epochBegan) {
		return m.epoch - 1
	}
	return m.epoch
}

// Refresh is called when WeChat rejected a token. If a token answering
// the rejection is held, it is returned with no fetch. Otherwise one fetch
// is made (shared by all concurrent callers) unless a budget forbids it
// (ErrRefreshLimited, ErrDailyRefreshLimit, ErrForceLimited). The token
// returned may be the rejected value itself, when WeChat confirmed it
// current (rule 6): replay with it.
func (m *Manager) Refresh(ctx context.Context, r Rejection) (Token, error) {
	m.noteRejection(r.Token)
	policy := autoForce
	if r.Source != FromProxy {
		policy = noForce // only the proxy knows which token its request was sent with
	}
	for range 2 {
		if t := m.current.Load(); m.replaces(t, r.Token) {
			return *t, nil
		}
		tok, err := m.fly(ctx, func() (Token, error) { return m.replace(r, policy, "rejected") })
		if err != nil {
			return Token{}, err
		}
		if m.replaces(&tok, r.Token) {
			return tok, nil
		}
		// We joined a flight that began before this rejection was noticed:
		// its token may have been dropped by the same event. Go again, this
		// time with a flight of our own.
	}
	return Token{}, fmt.Errorf("no token for %s fetched since WeChat rejected one", m.appID)
}

// RenewNow replaces the current token at once, as an operator asks through
// the admin API: through the same single flight as rejections, on the
// admin's own budget. With the stable API, which answers the current token
// until its last minutes, only force (force_refresh, from the fleet's
// ledger) gets a new one; renewed reports whether a new token came of it.
func (m *Manager) RenewNow(ctx context.Context, force bool) (tok Token, renewed bool, err error) {
	var current Token
	if t := m.current.Load(); t != nil {
		current = *t
	}
	policy := noForce
	if force {
		policy = operatorForce
	}
	r := Rejection{Token: current, Source: FromAdmin}
	for range 2 {
		var ran atomic.Bool
		tok, err = m.fly(ctx, func() (Token, error) { ran.Store(true); return m.replace(r, policy, "admin request") })
		if ran.Load() || (err == nil && tok.Value != current.Value) || ctx.Err() != nil {
			break
		}
		// This joined a flight that began before it (the first fetch, or a
		// renewal) and brought back the token held when it was asked, or
		// failed (a platform's first fetch, made before its ticket came):
		// that answers nothing. Once more, in a flight of its own.
	}
	return tok, err == nil && tok.Value != current.Value, err
}

// forcePolicy says whether replace may call force_refresh.
type forcePolicy int

const (
	noForce       forcePolicy = iota
	autoForce                 // for a confirmed token's rejection, within the automatic half
	operatorForce             // an operator asked: within the day's limit
)

// replace gets a token to replace r's; it runs inside a flight.
func (m *Manager) replace(r Rejection, policy forcePolicy, reason string) (Token, error) {
	epoch := m.epochNow()
	// A flight that ended just before this one may have replaced it already.
	if t := m.current.Load(); m.replaces(t, r.Token) {
		return *t, nil
	}
	now := m.clock.Now()
	if !m.budgets[r.Source].AllowN(now, 1) {
		m.log().Warn("token refresh budget of this source spent; no refresh now",
			zap.Stringer("source", r.Source), zap.String("reason", reason),
			zap.Duration("min_refresh_interval", m.cfg().MinRefreshInterval))
		return Token{}, fmt.Errorf("refresh token for %s (%s): %w", m.appID, r.Source, ErrRefreshLimited)
	}
	tok, err := m.obtain(job{reason: reason, replacing: r.Token.Value, epoch: epoch, beforeFetch: m.countRefresh})
	if err != nil {
		return Token{}, err
	}
	if tok.Value != r.Token.Value {
		return m.vouch(tok, epoch, false), nil
	}
	// The token endpoint answered the rejected token: WeChat holds it current.
	if !m.kind.ForceRefresh || policy == noForce || (policy == autoForce && !r.Token.confirmed) {
		if policy == autoForce {
			m.log().Info("stable_token still hands out the rejected token; replaying with it, and forcing a new one only if WeChat rejects it again",
				zap.String("reason", reason))
		}
		return m.vouch(tok, epoch, true), nil
	}
	if err := m.reserveForce(now, policy == autoForce); err != nil {
		m.log().Warn("force_refresh not allowed now", zap.String("reason", reason), zap.Error(err))
		return Token{}, err
	}
	tok, err = m.obtain(job{force: true, reason: reason + ", forced", replacing: r.Token.Value, epoch: epoch})
	if err != nil {
		return Token{}, err
	}
	return m.vouch(tok, epoch, tok.Value == r.Token.Value), nil
}

// vouch applies rule 4 to tok, a refresh's result: it belongs to the
// refresh's epoch, and confirmed says WeChat handed back the rejected
// token. The held copy is updated if tok is still current.
func (m *Manager) vouch(tok Token, epoch uint64, confirmed bool) Token {
	tok.epoch = max(tok.epoch, epoch)
	tok.confirmed = tok.confirmed || confirmed
	m.mu.Lock()
	defer m.mu.Unlock()
	if !confirmed {
		m.counts.renewedOnDemand++
	}
	if cur := m.current.Load(); cur != nil && cur.Value == tok.Value {
		vouched := *cur
		vouched.epoch, vouched.confirmed = max(cur.epoch, tok.epoch), cur.confirmed || tok.confirmed
		m.current.Store(&vouched)
		return vouched
	}
	return tok
}

// Bounds of what Known remembers: a request is in flight for seconds, a
// token lives for hours, so only the last few matter.
const rememberedTokens = 4

// known is a token value as first held.
type known struct {
	value string
	epoch uint64
}

// rememberLocked notes tok among the recent tokens; m.mu is held.
func (m *Manager) rememberLocked(tok *Token) {
	for _, k := range m.recent {
		if k.value == tok.Value {
			return
		}
	}
	if len(m.recent) == rememberedTokens {
		m.recent = m.recent[1:]
	}
	m.recent = append(m.recent, known{tok.Value, tok.epoch})
}
