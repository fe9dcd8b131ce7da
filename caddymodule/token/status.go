package token

import (
	"errors"
	"time"
)

// counts are what a manager has done since it started.
type counts struct {
	fetches         int // successful calls to the token endpoint
	fetchFailures   int
	adopted         int // tokens taken from shared storage
	renewedOnDemand int // replacements after a rejection or an admin request
}

// Status describes a manager for operators. It never holds the token.
type Status struct {
	AppID string `json:"app_id"`
	// TokenAPI is the kind's name (stable, classic, wecom, jsapi_ticket,
	// component, ...): the JSON name is the first release's.
	TokenAPI string `json:"token_api"`
	// Valid says whether a token usable now is held.
	Valid       bool       `json:"valid"`
	FetchedAt   *time.Time `json:"fetched_at,omitempty"`
	ExpiresAt   *time.Time `json:"expires_at,omitempty"`
	SecondsLeft int64      `json:"seconds_left"`
	// Fetches counts calls to WeChat's token endpoint that gave a token;
	// FetchFailures the others.
	Fetches       int `json:"fetches"`
	FetchFailures int `json:"fetch_failures"`
	// AdoptedFromStorage counts tokens taken from another instance.
	AdoptedFromStorage int `json:"adopted_from_storage"`
	// PassiveRefreshes counts tokens replaced after WeChat rejected them
	// or an operator asked.
	PassiveRefreshes int `json:"passive_refreshes"`
	// HoldsRenewal says whether this instance fetched the current token,
	// rather than adopting it from the fleet's storage.
	HoldsRenewal bool         `json:"holds_renewal"`
	LastError    *ErrorStatus `json:"last_error,omitempty"`
	// Budget is what the fleet has left of the day's limited calls, as
	// this instance last saw its ledger.
	Budget
}

// ErrorStatus is the last failed fetch, explained.
type ErrorStatus struct {
	Errcode int64     `json:"errcode,omitempty"`
	Meaning string    `json:"meaning"`
	Hint    string    `json:"hint,omitempty"`
	Message string    `json:"message"`
	At      time.Time `json:"at"`
}

// AppID is the app this manager holds tokens for.
func (m *Manager) AppID() string { return m.appID }

// Kind is what this manager holds.
func (m *Manager) Kind() Kind { return m.kind }

// Status reports the manager's state.
func (m *Manager) Status() Status {
	now := m.clock.Now()
	st := Status{AppID: m.appID, TokenAPI: m.kind.Name}
	if t := m.current.Load(); t != nil {
		fetched, expires := t.FetchedAt, t.ExpiresAt
		st.FetchedAt, st.ExpiresAt = &fetched, &expires
		st.Valid = t.ValidAt(now)
		st.SecondsLeft = max(int64(expires.Sub(now)/time.Second), 0)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	st.Fetches, st.FetchFailures = m.counts.fetches, m.counts.fetchFailures
	st.AdoptedFromStorage, st.PassiveRefreshes = m.counts.adopted, m.counts.renewedOnDemand
	st.HoldsRenewal = m.fetchedHere
	st.Budget = m.budgetLocked(now)
	if m.lastErr != nil {
		st.LastError = &ErrorStatus{Meaning: "token endpoint unreachable or answering garbage", Message: m.lastErr.Error(), At: m.lastErrAt}
		var apiErr *APIError
		if errors.As(m.lastErr, &apiErr) {
			e := Explain(apiErr.Code)
			st.LastError.Errcode = apiErr.Code
			st.LastError.Meaning = Meaning(apiErr.Code, apiErr.Msg)
			st.LastError.Hint = e.Hint
		}
	}
	return st
}

// fetchBuckets are the upper bounds, in seconds, of the fetch latency
// histogram.
var fetchBuckets = []float64{0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10}

// latency is a histogram of fetch durations.
type latency struct {
	counts []uint64 // per bucket, not cumulative; the last is +Inf
	sum    float64
	n      uint64
}

func (l *latency) observe(d time.Duration) {
	if l.counts == nil {
		l.counts = make([]uint64, len(fetchBuckets)+1)
	}
	s := d.Seconds()
	i := 0
	for i < len(fetchBuckets) && s > fetchBuckets[i] {
		i++
	}
	l.counts[i]++
	l.sum += s
	l.n++
}

// Histogram is a snapshot of the fetch latency: cumulative counts by upper
// bound in seconds, as Prometheus wants them.
type Histogram struct {
	Buckets map[float64]uint64
	Sum     float64
	Count   uint64
}

// Merge adds o to h.
func (h *Histogram) Merge(o Histogram) {
	if h.Buckets == nil {
		h.Buckets = map[float64]uint64{}
	}
	for k, v := range o.Buckets {
		h.Buckets[k] += v
	}
	h.Sum += o.Sum
	h.Count += o.Count
}

// FetchLatency returns the histogram of token endpoint call durations.
func (m *Manager) FetchLatency() Histogram {
	m.mu.Lock()
	defer m.mu.Unlock()
	h := Histogram{Buckets: map[float64]uint64{}, Sum: m.latency.sum, Count: m.latency.n}
	var cum uint64
	for i, bound := range fetchBuckets {
		if m.latency.counts != nil {
			cum += m.latency.counts[i]
		}
		h.Buckets[bound] = cum
	}
	return h
}

// Retry outcomes for NoteRetry.
const (
	RetryOK         = "ok"          // replayed, answered without error
	RetryError      = "error"       // replayed, answered with an error
	RetryNotRetried = "not_retried" // no new token: WeChat's answer passed on
)

// NoteRetry counts a request whose token WeChat rejected, by outcome.
func (m *Manager) NoteRetry(outcome string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.retries == nil {
		m.retries = map[string]int{}
	}
	m.retries[outcome]++
}

// Retries returns NoteRetry's counts.
func (m *Manager) Retries() map[string]int {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := map[string]int{RetryOK: 0, RetryError: 0, RetryNotRetried: 0}
	for k, v := range m.retries {
		out[k] = v
	}
	return out
}
