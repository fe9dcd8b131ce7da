package token

import (
	"context"
	"errors"
	"fmt"
	"time"

	"go.uber.org/zap"
)

// fly runs fn unless a fetch is under way already, in which case its result
// is shared. ctx only bounds the wait: the fetch itself belongs to the
// manager, so one impatient caller cannot cancel it for the others.
func (m *Manager) fly(ctx context.Context, fn func() (Token, error)) (Token, error) {
	ch := m.flights.DoChan("fetch", func() (any, error) { return fn() })
	select {
	case <-ctx.Done():
		return Token{}, ctx.Err()
	case r := <-ch:
		tok, _ := r.Val.(Token)
		return tok, r.Err
	}
}

// fetch calls the token endpoint once and installs the result as a token
// of epoch. It runs inside obtain, inside a flight.
func (m *Manager) fetch(force bool, reason string, epoch uint64) (Token, error) {
	settings := m.cfg()
	ctx, cancel := context.WithTimeout(m.ctx, settings.FetchTimeout)
	defer cancel()
	start := m.clock.Now()
	began := time.Now()
	fetched, err := settings.Fetcher.Fetch(ctx, force)
	if err == nil && fetched.ExpiresIn < settings.MinLifetime {
		err = fmt.Errorf("answer's expires_in is %s, under the %s accepted (min_token_lifetime): treated as an upstream error",
			fetched.ExpiresIn, settings.MinLifetime)
	}
	m.mu.Lock()
	m.latency.observe(time.Since(began))
	m.mu.Unlock()
	prev := m.current.Load()
	if err != nil {
		err = fmt.Errorf("fetch %s token for %s: %w", m.kind.Name, m.appID, err)
		m.mu.Lock()
		m.lastErr, m.lastErrAt = err, m.clock.Now()
		m.counts.fetchFailures++
		m.mu.Unlock()
		fields := []zap.Field{zap.String("reason", reason), zap.Bool("force_refresh", force), zap.Error(err)}
		var apiErr *APIError
		if errors.As(err, &apiErr) {
			fields = append(fields, zap.Int64("errcode", apiErr.Code))
		}
		if prev.ValidAt(start) {
			fields = append(fields, zap.Duration("current_token_valid_for", prev.ExpiresAt.Sub(start).Round(time.Second)))
		} else {
			fields = append(fields, zap.Bool("requests_failing", true))
		}
		m.log().Error(m.kind.Noun+" fetch failed", fields...)
		return Token{}, err
	}
	tok := &Token{Value: fetched.Value, FetchedAt: start, ExpiresAt: start.Add(fetched.ExpiresIn), epoch: epoch}
	unchanged := prev != nil && prev.Value == tok.Value
	if unchanged {
		tok.FetchedAt = prev.FetchedAt
	}
	tok = m.install(tok, true)
	if unchanged {
		m.log().Debug("token endpoint answered the current token",
			zap.String("reason", reason), zap.Duration("expires_in", fetched.ExpiresIn))
	} else {
		m.log().Info(m.kind.Noun+" obtained",
			zap.String("reason", reason), zap.Bool("force_refresh", force), zap.Duration("expires_in", fetched.ExpiresIn))
		m.poke()
	}
	return *tok, nil
}

func (m *Manager) log() *zap.Logger { return m.cfg().Logger }

// install makes tok current and returns what was installed; fetched says
// whether this instance fetched it (or adopted it from shared storage). The
// current token answered again keeps its place in the refresh rules.
func (m *Manager) install(tok *Token, fetched bool) *Token {
	m.mu.Lock()
	defer m.mu.Unlock()
	if prev := m.current.Load(); prev != nil && prev.Value == tok.Value {
		again := *tok
		again.epoch, again.confirmed = max(prev.epoch, tok.epoch), prev.confirmed || tok.confirmed
		tok = &again
	}
	m.current.Store(tok)
	m.lastErr = nil
	m.fetchedHere = fetched
	m.rememberLocked(tok)
	if fetched {
		m.counts.fetches++
	} else {
		m.counts.adopted++
	}
	return tok
}
