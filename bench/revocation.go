package main

import (
	"context"
	"fmt"
	"net/url"
	"time"
)

// revocation: WeChat revokes the token while 64 clients call through.
type revocation struct {
	tokenAPI        string
	all             window
	before, after   window // the second before the revocation, the second after it
	issued, calls   int    // tokens WeChat issued and token endpoint calls, after the revocation
	expectedIssued  int
	expectedCallsHi int
}

func runRevocation(ctx context.Context, o options, dir string, bins binaries, tokenAPI string) (revocation, error) {
	r := revocation{tokenAPI: tokenAPI, expectedIssued: 1, expectedCallsHi: 1}
	if tokenAPI == "stable" {
		// stable_token answers the revoked token once more, then
		// force_refresh issues the new one.
		r.expectedCallsHi = 2
	}
	env, err := startWeChatEnv(dir, bins, "revoke-"+tokenAPI, tokenAPI)
	if err != nil {
		return r, err
	}
	defer env.stop()
	target := env.base + getPath
	if _, err := controlClient.Get(target); err != nil {
		return r, fmt.Errorf("warm up: %w", err)
	}
	if err := env.control("/_emulator/reset"); err != nil {
		return r, err
	}
	var revokedAt time.Time
	var revokeErr error
	revoked := make(chan struct{})
	samples, err := attack(ctx, target, scenarioWorkers, o.scenarioLoad, o.scenarioLoad/3, func() {
		defer close(revoked)
		revokedAt = time.Now()
		revokeErr = env.control("/_emulator/revoke?appid=" + url.QueryEscape(demoAppID))
	})
	if err != nil {
		return r, err
	}
	<-revoked
	if revokeErr != nil {
		return r, revokeErr
	}
	stats, err := env.stats()
	if err != nil {
		return r, err
	}
	r.issued, r.calls = stats.issued(), stats.calls()
	r.all = summarise(samples, time.Time{}, time.Now().Add(time.Hour))
	r.before = summarise(samples, revokedAt.Add(-time.Second), revokedAt)
	r.after = summarise(samples, revokedAt, revokedAt.Add(time.Second))
	return r, nil
}
