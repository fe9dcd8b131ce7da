package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
)

// Running the scenarios one after another, and their report.

func runScenarios(ctx context.Context, o options, dir string, bins binaries) (*scenarioResults, error) {
	res := &scenarioResults{}
	var err error
	if o.runs("revocation") {
		for _, api := range []string{"classic", "stable"} {
			fmt.Fprintf(os.Stderr, "scenario: revocation under %d-way load (%s) ...\n", scenarioWorkers, api)
			r, err := runRevocation(ctx, o, dir, bins, api)
			if err != nil {
				return nil, fmt.Errorf("revocation scenario (%s): %w", api, err)
			}
			res.revocations = append(res.revocations, r)
		}
	}
	if o.runs("downloads") {
		fmt.Fprintf(os.Stderr, "scenario: %d concurrent %d MiB downloads ...\n", downloadClients, downloadSize>>20)
		if res.downloads, err = runDownloads(dir, bins); err != nil {
			return nil, fmt.Errorf("download scenario: %w", err)
		}
	}
	if o.runs("uploads") {
		fmt.Fprintf(os.Stderr, "scenario: %d concurrent %d MiB uploads after a revocation, %d slow clients ...\n", uploadClients, uploadSize>>20, slowClients)
		if res.uploads, err = runUploads(dir, bins); err != nil {
			return nil, fmt.Errorf("upload scenario: %w", err)
		}
	}
	if o.runs("renewal") {
		fmt.Fprintf(os.Stderr, "scenario: proactive renewal under %d-way load ...\n", scenarioWorkers)
		if res.renewal, err = runRenewal(ctx, o, dir, bins); err != nil {
			return nil, fmt.Errorf("renewal scenario: %w", err)
		}
	}
	if o.runs("jssdk") {
		fmt.Fprintf(os.Stderr, "scenario: JS-SDK signatures at %d connections ...\n", jssdkConcurrency)
		if res.jssdk, err = runJSSDK(ctx, o, dir, bins); err != nil {
			return nil, fmt.Errorf("jssdk scenario: %w", err)
		}
	}
	if o.runs("platform") {
		p := platformParamsFor(o.smoke)
		fmt.Fprintf(os.Stderr, "scenario: a platform of %d accounts, %d used, tokens living %s ...\n", p.accounts, p.used, p.ttl)
		if res.platform, err = runPlatform(ctx, o, dir, bins); err != nil {
			return nil, fmt.Errorf("platform scenario: %w", err)
		}
	}
	if o.runs("messages") {
		fmt.Fprintf(os.Stderr, "scenario: message push through wechat_messages and reverse_proxy, %d workers ...\n", pushWorkers)
		if res.messages, err = runMessages(ctx, o, dir, bins); err != nil {
			return nil, fmt.Errorf("messages scenario: %w", err)
		}
	}
	return res, nil
}

func (s *scenarioResults) markdown() string {
	var b strings.Builder
	if len(s.revocations) > 0 {
		fmt.Fprintf(&b, "\n### (a) Token revoked under %d-way load\n\n", scenarioWorkers)
		b.WriteString("WeChat revokes the token a third of the way through the load. Targets: no failed request; one new token.\n\n")
		b.WriteString("| token_api | requests | failed | tokens issued (target) | token endpoint calls | p99 ms, second before | p99 ms, recovery second | p50 ms, recovery second |\n")
		b.WriteString("|---|---:|---:|---:|---:|---:|---:|---:|\n")
		for _, r := range s.revocations {
			fmt.Fprintf(&b, "| %s | %d | %d%s | %d (%d) %s | %d | %.2f | %.2f | %.2f |\n", r.tokenAPI, r.all.requests, r.all.failed, r.all.reasonText(),
				r.issued, r.expectedIssued, mark(r.issued == r.expectedIssued), r.calls, ms(r.before.p99), ms(r.after.p99), ms(r.after.p50))
		}
	}
	if len(s.downloads) > 0 {
		fmt.Fprintf(&b, "\n### (b) %d concurrent %d MiB media downloads\n\n", downloadClients, downloadSize>>20)
		fmt.Fprintf(&b, "Every byte checked. Target: the proxy's peak RSS bounded, far below the %d MiB the downloads add up to.\n\n", downloadClients*downloadSize>>20)
		b.WriteString("| proxy | downloaded MiB | failed | seconds | MiB/s | peak RSS MiB |\n|---|---:|---:|---:|---:|---:|\n")
		for _, d := range s.downloads {
			reason := ""
			if d.failed > 0 {
				reason = " (" + d.reason + ")"
			}
			fmt.Fprintf(&b, "| %s | %d | %d%s | %.2f | %.0f | %.1f |\n", d.contender, d.bytes>>20, d.failed, reason, d.elapsed.Seconds(),
				float64(d.bytes>>20)/d.elapsed.Seconds(), float64(d.peakRSS)/(1<<20))
		}
	}
	if r := s.renewal; r != nil {
		fmt.Fprintf(&b, "\n### (c) Proactive renewal under %d-way load\n\n", scenarioWorkers)
		fmt.Fprintf(&b, "Classic tokens living %s, renewed at half-life while the load runs. Target: no visible step in latency, no failed request.\n\n", r.ttl)
		b.WriteString("| requests | failed | renewals seen | p50 ms around renewal | p99 ms around renewal | p50 ms otherwise | p99 ms otherwise |\n")
		b.WriteString("|---:|---:|---:|---:|---:|---:|---:|\n")
		fmt.Fprintf(&b, "| %d | %d%s | %d | %.2f | %.2f | %.2f | %.2f |\n", r.requests, r.failed, r.reasons, len(r.renewedAt),
			ms(r.during.p50), ms(r.during.p99), ms(r.outside.p50), ms(r.outside.p99))
		b.WriteString("\n\"Around renewal\" is the second from 250 ms before the new token was issued.\n")
	}
	if len(s.uploads) > 0 {
		fmt.Fprintf(&b, "\n### (d) %d concurrent %d MiB uploads right after a revocation; %d slow clients\n\n", uploadClients, uploadSize>>20, slowClients)
		fmt.Fprintf(&b, "Through `wechat_token` the token is revoked first, so every upload is held, rejected and replayed; `reverse_proxy` streams the same uploads with a valid token (the baseline). "+
			"Targets: every upload accepted with its body intact, each replayed once, the proxy's peak RSS growth far below the %d MiB the uploads add up to (the smoke run fails above %d MiB). "+
			"Then %d clients declare %d MiB each and send %d KiB slowly (target: growth far below the %d MiB declared; fails above %d MiB).\n\n",
			uploadClients*uploadSize>>20, uploadGrowthLimit>>20, slowClients, slowDeclared>>20, slowSent>>10, slowClients*slowDeclared>>20, slowGrowthLimit>>20)
		b.WriteString("| proxy | accepted | failed | replayed | seconds | peak RSS growth MiB | slow clients | their peak RSS growth MiB |\n|---|---:|---:|---:|---:|---:|---:|---:|\n")
		for _, u := range s.uploads {
			reason := ""
			if u.failed > 0 {
				reason = " (" + u.reason + ")"
			}
			fmt.Fprintf(&b, "| %s | %d | %d%s | %d | %.2f | %.1f | %d | %.1f |\n", u.contender, u.accepted, u.failed, reason, u.replayed,
				u.elapsed.Seconds(), float64(u.growth)/(1<<20), u.slowHeld, float64(u.slowGrow)/(1<<20))
		}
	}
	if s.jssdk != nil {
		b.WriteString(s.jssdk.markdown())
	}
	if s.platform != nil {
		b.WriteString(s.platform.markdown())
	}
	if s.messages != nil {
		b.WriteString(s.messages.markdown())
	}
	return b.String()
}

// failures are the scenario targets that do not depend on speed.
func (s *scenarioResults) failures() []error {
	var errs []error
	for _, r := range s.revocations {
		if r.all.failed > 0 {
			errs = append(errs, fmt.Errorf("revocation (%s): %d failed requests%s", r.tokenAPI, r.all.failed, r.all.reasonText()))
		}
		if r.issued != r.expectedIssued || r.calls > r.expectedCallsHi {
			errs = append(errs, fmt.Errorf("revocation (%s): %d tokens issued in %d calls, want %d in at most %d", r.tokenAPI, r.issued, r.calls, r.expectedIssued, r.expectedCallsHi))
		}
	}
	for _, d := range s.downloads {
		if d.failed > 0 {
			errs = append(errs, fmt.Errorf("downloads through %s: %d failed: %s", d.contender, d.failed, d.reason))
		}
		if d.peakRSS > downloadPeakLimit {
			errs = append(errs, fmt.Errorf("downloads through %s: peak RSS %d MiB, over %d MiB", d.contender, d.peakRSS>>20, downloadPeakLimit>>20))
		}
	}
	for _, u := range s.uploads {
		if u.failed > 0 {
			errs = append(errs, fmt.Errorf("uploads through %s: %d failed: %s", u.contender, u.failed, u.reason))
		}
		if want := map[bool]int{true: uploadClients, false: 0}[u.contender == wechatToken]; u.replayed != want {
			errs = append(errs, fmt.Errorf("uploads through %s: %d replays, want %d", u.contender, u.replayed, want))
		}
		if u.growth > uploadGrowthLimit {
			errs = append(errs, fmt.Errorf("uploads through %s: peak RSS grew by %d MiB, over %d MiB", u.contender, u.growth>>20, uploadGrowthLimit>>20))
		}
		if u.slowHeld != slowClients || u.slowGrow > slowGrowthLimit {
			errs = append(errs, fmt.Errorf("slow uploads through %s: %d clients, peak RSS grew by %d MiB (limit %d MiB)", u.contender, u.slowHeld, u.slowGrow>>20, slowGrowthLimit>>20))
		}
	}
	if r := s.renewal; r != nil {
		if r.failed > 0 {
			errs = append(errs, fmt.Errorf("renewal: %d failed requests%s", r.failed, r.reasons))
		}
		if len(r.renewedAt) != 1 {
			errs = append(errs, fmt.Errorf("renewal: %d renewals during the load, want 1", len(r.renewedAt)))
		}
	}
	if s.jssdk != nil {
		errs = append(errs, s.jssdk.failures()...)
	}
	if s.platform != nil {
		errs = append(errs, s.platform.failures()...)
	}
	if s.messages != nil {
		errs = append(errs, s.messages.failures()...)
	}
	if len(errs) > 0 {
		return append([]error{errors.New("functional targets missed")}, errs...)
	}
	return nil
}
