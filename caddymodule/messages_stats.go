package caddymodule

import (
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/caddy-wechat/caddy-wechat/caddymodule/credential"
)

// What wechat_messages counts, per receiver (app_id, corp_id or a
// platform's component_appid: bounded by the config, never per user or
// message), for the metrics and GET /wechat_token/messages. Nothing of a
// message is kept.

// receiverStats are one receiver's counts, kept across reloads.
type receiverStats struct {
	receiver, kind string

	received, forwarded, deduplicated, urlChecks atomic.Int64

	mu      sync.Mutex
	refused map[string]int64
	recent  []refusal // the last recentRefusals, oldest first
	latency histogram
}

// refusal is a refused push, for the admin view: when, why, which account.
type refusal struct {
	At      time.Time `json:"at"`
	Reason  string    `json:"reason"`
	Account string    `json:"account"`
}

const recentRefusals = 20

var messageStats = struct {
	sync.Mutex
	byReceiver map[string]*receiverStats
}{byReceiver: map[string]*receiverStats{}}

// messageStatsOf returns the counts of r's receiver, made on first use.
func messageStatsOf(r *credential.MessageReceiver) *receiverStats {
	messageStats.Lock()
	defer messageStats.Unlock()
	s := messageStats.byReceiver[r.ID]
	if s == nil {
		s = &receiverStats{receiver: r.ID, kind: r.Kind.Name, refused: map[string]int64{}}
		messageStats.byReceiver[r.ID] = s
	}
	return s
}

// allMessageStats lists the receivers' counts, in a stable order.
func allMessageStats() []*receiverStats {
	messageStats.Lock()
	out := make([]*receiverStats, 0, len(messageStats.byReceiver))
	for _, s := range messageStats.byReceiver {
		out = append(out, s)
	}
	messageStats.Unlock()
	slices.SortFunc(out, func(a, b *receiverStats) int {
		if a.receiver < b.receiver {
			return -1
		}
		if a.receiver > b.receiver {
			return 1
		}
		return 0
	})
	return out
}

func (s *receiverStats) refuse(reason, account string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.refused[reason]++
	if len(s.recent) == recentRefusals {
		s.recent = s.recent[1:]
	}
	s.recent = append(s.recent, refusal{At: time.Now(), Reason: reason, Account: account})
}

func (s *receiverStats) observe(d time.Duration) {
	s.mu.Lock()
	s.latency.observe(d)
	s.mu.Unlock()
}

// messageStatus is one receiver in GET /wechat_token/messages.
type messageStatus struct {
	Receiver       string           `json:"receiver"`
	Kind           string           `json:"kind"`
	Received       int64            `json:"received"`
	Forwarded      int64            `json:"forwarded"`
	Deduplicated   int64            `json:"deduplicated"`
	URLChecks      int64            `json:"url_checks"`
	Refused        map[string]int64 `json:"refused"`
	RecentRefusals []refusal        `json:"recent_refusals"`
}

func (s *receiverStats) status() messageStatus {
	s.mu.Lock()
	defer s.mu.Unlock()
	refused := map[string]int64{}
	for k, v := range s.refused {
		refused[k] = v
	}
	return messageStatus{Receiver: s.receiver, Kind: s.kind, Received: s.received.Load(), Forwarded: s.forwarded.Load(),
		Deduplicated: s.deduplicated.Load(), URLChecks: s.urlChecks.Load(), Refused: refused,
		RecentRefusals: append([]refusal{}, s.recent...)}
}

// answerBuckets are the upper bounds, in seconds, of the app's answer
// latency histogram: WeChat gives up at 5.
var answerBuckets = []float64{0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10}

type histogram struct {
	counts []uint64 // per bucket, the last +Inf
	sum    float64
	n      uint64
}

func (h *histogram) observe(d time.Duration) {
	if h.counts == nil {
		h.counts = make([]uint64, len(answerBuckets)+1)
	}
	i := 0
	for i < len(answerBuckets) && d.Seconds() > answerBuckets[i] {
		i++
	}
	h.counts[i]++
	h.sum += d.Seconds()
	h.n++
}

// cumulative is h as Prometheus wants it.
func (h *histogram) cumulative() map[float64]uint64 {
	out := map[float64]uint64{}
	var cum uint64
	for i, b := range answerBuckets {
		if h.counts != nil {
			cum += h.counts[i]
		}
		out[b] = cum
	}
	return out
}
