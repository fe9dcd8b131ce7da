package main

import (
	"context"
	"time"
)

// renewal: the proactive renewal happens while 64 clients call through.
type renewal struct {
	ttl              time.Duration
	renewedAt        []time.Time
	during, outside  window
	failed, requests int
	reasons          string
}

func runRenewal(ctx context.Context, o options, dir string, bins binaries) (*renewal, error) {
	// A short-lived classic token, renewed at half-life: one renewal in the
	// middle of the load.
	ttl := 20 * time.Second
	if o.smoke {
		ttl = 8 * time.Second
	}
	r := &renewal{ttl: ttl}
	env, err := startWeChatEnv(dir, bins, "renewal", "classic", "-ttl", ttl.String(), "-overlap", ttl.String())
	if err != nil {
		return nil, err
	}
	defer env.stop()
	first, err := env.stats()
	if err != nil {
		return nil, err
	}
	stop := make(chan struct{})
	watched := make(chan error, 1)
	go func() {
		// Note when each new token is issued, by polling the emulator.
		seen := first.issued()
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				watched <- nil
				return
			case <-tick.C:
			}
			s, err := env.stats()
			if err != nil {
				watched <- err
				return
			}
			if s.issued() > seen {
				seen = s.issued()
				r.renewedAt = append(r.renewedAt, time.Now())
			}
		}
	}()
	samples, err := attack(ctx, env.base+getPath, scenarioWorkers, ttl*8/10, 0, nil)
	close(stop)
	if watchErr := <-watched; err == nil {
		err = watchErr
	}
	if err != nil {
		return nil, err
	}
	all := summarise(samples, time.Time{}, time.Now().Add(time.Hour))
	r.requests, r.failed, r.reasons = all.requests, all.failed, all.reasonText()
	if len(r.renewedAt) == 0 {
		return r, nil
	}
	// "During" is the second around the renewal; "outside" is the rest,
	// less the first second of warm-up.
	at := r.renewedAt[0]
	from, to := at.Add(-250*time.Millisecond), at.Add(750*time.Millisecond)
	r.during = summarise(samples, from, to)
	start := samples[0].at.Add(time.Second)
	var outside []sample
	for _, s := range samples {
		if s.at.After(start) && (s.at.Before(from) || !s.at.Before(to)) {
			outside = append(outside, s)
		}
	}
	r.outside = summarise(outside, time.Time{}, time.Now().Add(time.Hour))
	return r, nil
}
