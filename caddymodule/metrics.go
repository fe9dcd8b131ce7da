package caddymodule

import (
	"errors"
	"fmt"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/caddy-wechat/caddy-wechat/caddymodule/credential"
	"github.com/caddy-wechat/caddy-wechat/caddymodule/replay"
	"github.com/caddy-wechat/caddy-wechat/caddymodule/token"
)

// Metrics are read from the token managers when scraped: the managers
// outlive configs, so their counts carry across reloads. Label values are
// bounded: app IDs from the config, the two token APIs, fixed outcomes.
var (
	appLabels         = []string{"app_id", "token_api"}
	descFetches       = prometheus.NewDesc("caddy_wechat_token_fetches_total", "Calls to WeChat's token endpoint, by result (ok, error).", append(appLabels, "result"), nil)
	descAdopted       = prometheus.NewDesc("caddy_wechat_token_adopted_total", "Tokens taken from shared storage, renewed by another instance.", appLabels, nil)
	descPassive       = prometheus.NewDesc("caddy_wechat_token_passive_refreshes_total", "Tokens replaced after WeChat rejected them or an operator asked.", appLabels, nil)
	descRetries       = prometheus.NewDesc("caddy_wechat_token_retried_requests_total", "Requests whose token WeChat rejected, by outcome: ok and error (replayed with a new token, answered without or with an error), not_retried (no new token; WeChat's answer passed on).", append(appLabels, "outcome"), nil)
	descExpiry        = prometheus.NewDesc("caddy_wechat_token_seconds_until_expiry", "Seconds until the current token expires; 0 without a valid token.", appLabels, nil)
	descDuration      = prometheus.NewDesc("caddy_wechat_token_fetch_duration_seconds", "Duration of calls to WeChat's token endpoint.", appLabels, nil)
	descForcesLeft    = prometheus.NewDesc("caddy_wechat_token_force_refreshes_left", "stable: force_refresh calls the fleet has left in the last 24 hours (WeChat allows 20), by who may spend them: automatic (the proxy, after a confirmed rejection; at most 10) and operator (admin ?force=1).", append(appLabels, "spender"), nil)
	descRefreshesLeft = prometheus.NewDesc("caddy_wechat_token_refreshes_left_today", "classic with daily_refresh_limit: on-demand refreshes the fleet has left today, Beijing time.", appLabels, nil)

	msgLabels          = []string{"receiver"}
	descMsgReceived    = prometheus.NewDesc("caddy_wechat_messages_received_total", "Pushes wechat_messages verified and opened, by receiver (app_id, corp_id or a platform's component_appid).", msgLabels, nil)
	descMsgForwarded   = prometheus.NewDesc("caddy_wechat_messages_forwarded_total", "Messages delivered to the app (answered without an error).", msgLabels, nil)
	descMsgDuplicates  = prometheus.NewDesc("caddy_wechat_messages_deduplicated_total", "WeChat's re-deliveries answered with the first delivery's answer, not delivered again.", msgLabels, nil)
	descMsgRefused     = prometheus.NewDesc("caddy_wechat_messages_refused_total", "Pushes and URL checks refused, by reason: signature, receiver, stale, malformed, mode.", append(msgLabels, "reason"), nil)
	descMsgAnswerDelay = prometheus.NewDesc("caddy_wechat_messages_app_answer_seconds", "How long the app took to answer a message.", msgLabels, nil)

	descReplayHeld    = prometheus.NewDesc("caddy_wechat_replay_held_bytes", "Bytes of request bodies held for replay right now, in memory and temporary files (bounded by replay_budget).", nil, nil)
	descReplaySpilled = prometheus.NewDesc("caddy_wechat_replay_spilled_total", "Request bodies held for replay in a temporary file (larger than replay_memory).", nil, nil)
	descReplayNotHeld = prometheus.NewDesc("caddy_wechat_replay_not_held_total", "Request bodies streamed without replay, by reason: too_large (over max_replay_body), over_budget (replay_budget spent), spill_failed (the temporary file could not be written).", []string{"reason"}, nil)
)

type collector struct{}

// theCollector is registered with each config's registry.
var theCollector collector

// registerMetrics adds the collector to a config's registry; every handler
// of the config asks, the first one does it.
func registerMetrics(reg *prometheus.Registry) error {
	if reg == nil {
		return nil
	}
	if err := reg.Register(theCollector); err != nil && !errors.As(err, &prometheus.AlreadyRegisteredError{}) {
		return fmt.Errorf("wechat_token: register metrics: %w", err)
	}
	return nil
}

// Describe implements prometheus.Collector.
func (collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descFetches, descAdopted, descPassive, descRetries, descExpiry, descDuration,
		descForcesLeft, descRefreshesLeft, descReplayHeld, descReplaySpilled, descReplayNotHeld,
		descMsgReceived, descMsgForwarded, descMsgDuplicates, descMsgRefused, descMsgAnswerDelay} {
		ch <- d
	}
}

// appMetrics sums the managers of one app and token API (several exist
// when configs differ in api_base or secret).
type appMetrics struct {
	status   token.Status
	retries  map[string]int
	duration token.Histogram
}

// Collect implements prometheus.Collector.
func (collector) Collect(ch chan<- prometheus.Metric) {
	replayed := replayUsage.Counts()
	ch <- prometheus.MustNewConstMetric(descReplayHeld, prometheus.GaugeValue, float64(replayed.HeldBytes))
	ch <- prometheus.MustNewConstMetric(descReplaySpilled, prometheus.CounterValue, float64(replayed.Spilled))
	for reason, n := range map[replay.Reason]int64{replay.TooLarge: replayed.TooLarge, replay.OverBudget: replayed.OverBudget, replay.SpillFailed: replayed.SpillFailed} {
		ch <- prometheus.MustNewConstMetric(descReplayNotHeld, prometheus.CounterValue, float64(n), string(reason))
	}
	for _, m := range allMessageStats() {
		st := m.status()
		ch <- prometheus.MustNewConstMetric(descMsgReceived, prometheus.CounterValue, float64(st.Received), m.receiver)
		ch <- prometheus.MustNewConstMetric(descMsgForwarded, prometheus.CounterValue, float64(st.Forwarded), m.receiver)
		ch <- prometheus.MustNewConstMetric(descMsgDuplicates, prometheus.CounterValue, float64(st.Deduplicated), m.receiver)
		for _, reason := range []string{credential.RefusedSignature, credential.RefusedReceiver, credential.RefusedStale, credential.RefusedMalformed, credential.RefusedMode} {
			ch <- prometheus.MustNewConstMetric(descMsgRefused, prometheus.CounterValue, float64(st.Refused[reason]), m.receiver, reason)
		}
		m.mu.Lock()
		ch <- prometheus.MustNewConstHistogram(descMsgAnswerDelay, m.latency.n, m.latency.sum, m.latency.cumulative(), m.receiver)
		m.mu.Unlock()
	}
	byApp := map[[2]string]*appMetrics{}
	var order [][2]string
	for _, m := range registry.Managers("", "") {
		key := [2]string{m.AppID(), m.Kind().Name}
		st := m.Status()
		a := byApp[key]
		if a == nil {
			a = &appMetrics{status: st, retries: m.Retries(), duration: m.FetchLatency()}
			byApp[key] = a
			order = append(order, key)
			continue
		}
		a.status.Fetches += st.Fetches
		a.status.FetchFailures += st.FetchFailures
		a.status.AdoptedFromStorage += st.AdoptedFromStorage
		a.status.PassiveRefreshes += st.PassiveRefreshes
		a.status.SecondsLeft = max(a.status.SecondsLeft, st.SecondsLeft)
		for k, v := range m.Retries() {
			a.retries[k] += v
		}
		a.duration.Merge(m.FetchLatency())
	}
	for _, key := range order {
		a, labels := byApp[key], key[:]
		ch <- prometheus.MustNewConstMetric(descFetches, prometheus.CounterValue, float64(a.status.Fetches), append(labels, "ok")...)
		ch <- prometheus.MustNewConstMetric(descFetches, prometheus.CounterValue, float64(a.status.FetchFailures), append(labels, "error")...)
		ch <- prometheus.MustNewConstMetric(descAdopted, prometheus.CounterValue, float64(a.status.AdoptedFromStorage), labels...)
		ch <- prometheus.MustNewConstMetric(descPassive, prometheus.CounterValue, float64(a.status.PassiveRefreshes), labels...)
		for outcome, n := range a.retries {
			ch <- prometheus.MustNewConstMetric(descRetries, prometheus.CounterValue, float64(n), append(labels, outcome)...)
		}
		ch <- prometheus.MustNewConstMetric(descExpiry, prometheus.GaugeValue, float64(a.status.SecondsLeft), labels...)
		ch <- prometheus.MustNewConstHistogram(descDuration, a.duration.Count, a.duration.Sum, a.duration.Buckets, labels...)
		// The ledger is the fleet's: managers of one app read the same one.
		if b := a.status.Budget; b.AutomaticForces != nil {
			ch <- prometheus.MustNewConstMetric(descForcesLeft, prometheus.GaugeValue, float64(*b.AutomaticForces), append(labels, "automatic")...)
			ch <- prometheus.MustNewConstMetric(descForcesLeft, prometheus.GaugeValue, float64(*b.OperatorForces), append(labels, "operator")...)
		}
		if b := a.status.Budget; b.Refreshes != nil {
			ch <- prometheus.MustNewConstMetric(descRefreshesLeft, prometheus.GaugeValue, float64(*b.Refreshes), labels...)
		}
	}
}

// Interface guard
var _ prometheus.Collector = collector{}
