package emulator

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"time"
)

// WeChat as the sender of a platform's pushes (component_verify_ticket,
// authorized ...): it POSTs the push to the event URL, waits 5 seconds for
// an answer, hangs up if none came, and sends it again, up to 3 more
// times, unless it was answered HTTP 200 with "success" (or nothing). A
// proxy must survive exactly that: a slow code exchange cut off, a repeat
// of a push it is still handling. DeliverComponentPush does it from Go
// tests, /_emulator/component_push from anything that speaks HTTP, the
// periodic ticket push (Config.TicketPushURL) for demos. The delivery
// itself (timeouts, hanging up, re-sends) is message push's (deliver in
// messages_push.go); only what counts as accepted differs: a message may
// be answered with a passive reply, a platform's push only with
// "success".

// ComponentDelivery is what a platform push's delivery got.
type ComponentDelivery struct {
	// Attempts are every delivery, in order; each re-sends the same push.
	Attempts []Attempt
}

// componentAccepted reports whether WeChat would take a's answer as the push
// handled: HTTP 200 within the timeout, the body exactly "success" or
// empty. Anything else is sent again.
func componentAccepted(a Attempt) bool {
	return a.Answered() && (string(a.Answer) == "success" || len(a.Answer) == 0)
}

// AcceptedOn is the delivery (1 for the first) that was accepted, 0 if
// none was, so a test can assert "answered success on the second".
func (d *ComponentDelivery) AcceptedOn() int {
	for i, a := range d.Attempts {
		if componentAccepted(a) {
			return i + 1
		}
	}
	return 0
}

// DeliverComponentPush POSTs a platform's push (q and body from
// ComponentPush, AuthorizedPush ...) to eventURL as WeChat does, until it
// is accepted or opts.Attempts are spent (by default WeChat's: 5 s each,
// 4 in all, DefaultRetryGap apart), the same push each time. The result
// lists every delivery; the error wraps ErrNotDelivered when none was
// accepted, or is ctx's when it ended first, the result non-nil then too.
// opts.Forge does not apply (a push is forged when built: ComponentPush's
// sealedFor, or change q and body) and is refused.
func DeliverComponentPush(ctx context.Context, eventURL string, q url.Values, body []byte, opts PushOptions) (*ComponentDelivery, error) {
	if opts.Forge != (Forgery{}) {
		return nil, errors.New("component push: Forge does not apply; forge the push when building it")
	}
	target, err := url.Parse(eventURL)
	if err != nil {
		return nil, fmt.Errorf("component push: event URL: %w", err)
	}
	merged := target.Query()
	for k, v := range q {
		merged[k] = v
	}
	target.RawQuery = merged.Encode()
	where := target.Host + target.Path // the query is the push's, not worth repeating
	opts = opts.withDefaults()
	client, release := opts.client()
	defer release()
	d := &ComponentDelivery{}
	for i := range opts.Attempts {
		if i > 0 {
			if err := pause(ctx, opts.RetryGap); err != nil {
				return d, fmt.Errorf("component push to %s, before re-send %d: %w", where, i, err)
			}
		}
		a := deliver(ctx, client, http.MethodPost, target.String(), body, pushContentTypeXML, opts.Timeout)
		d.Attempts = append(d.Attempts, a)
		if componentAccepted(a) {
			return d, nil
		}
		if ctx.Err() != nil {
			return d, fmt.Errorf("component push to %s: %w", where, ctx.Err())
		}
	}
	return d, fmt.Errorf("%w: component push to %s not accepted in %d deliveries, the last %s",
		ErrNotDelivered, where, len(d.Attempts), d.Attempts[len(d.Attempts)-1].problem())
}

// serveComponentPush is POST /_emulator/component_push?appid=&info_type=&url=
// [&authorizer_appid=][&create_time=][&timeout=][&attempts=][&retry_gap=]:
// it builds a push as ComponentPushAt or AuthorizationPushAt would and
// delivers it as DeliverComponentPush does, answering the deliveries.
// Only loopback event URLs: the emulator is no one's tool to send
// requests elsewhere.
func (s *Server) serveComponentPush(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		http.Error(w, "POST only", http.StatusMethodNotAllowed)
		return
	}
	q := r.URL.Query()
	eventURL := q.Get("url")
	if eventURL == "" {
		http.Error(w, "component_push: url missing", http.StatusBadRequest)
		return
	}
	if err := loopbackOnly(eventURL); err != nil {
		http.Error(w, "component_push: "+err.Error(), http.StatusBadRequest)
		return
	}
	var opts PushOptions
	var createTime int64
	for _, param := range []struct {
		name  string
		parse func(string) error
	}{
		{"create_time", func(v string) (err error) { createTime, err = strconv.ParseInt(v, 10, 64); return err }},
		{"timeout", func(v string) (err error) { opts.Timeout, err = time.ParseDuration(v); return err }},
		{"attempts", func(v string) (err error) { opts.Attempts, err = strconv.Atoi(v); return err }},
		{"retry_gap", func(v string) (err error) {
			opts.RetryGap, err = time.ParseDuration(v)
			if err == nil && opts.RetryGap == 0 {
				opts.RetryGap = -1 // retry_gap=0s asks for none; PushOptions' zero is the default
			}
			return err
		}},
	} {
		if v := q.Get(param.name); v != "" {
			if err := param.parse(v); err != nil {
				http.Error(w, fmt.Sprintf("component_push: %s: %v", param.name, err), http.StatusBadRequest)
				return
			}
		}
	}
	component, infoType, account := q.Get("appid"), q.Get("info_type"), q.Get("authorizer_appid")
	var pq url.Values
	var body []byte
	var err error
	switch infoType {
	case "":
		err = errors.New("info_type missing")
	case "authorized", "updateauthorized", "unauthorized":
		pq, body, _, err = s.AuthorizationPushAt(component, account, infoType, createTime)
	default:
		var fields map[string]string
		if account != "" {
			fields = map[string]string{"AuthorizerAppid": account}
		}
		pq, body, err = s.ComponentPushAt(component, infoType, createTime, fields, "")
	}
	if err != nil {
		http.Error(w, "component_push: "+err.Error(), http.StatusBadRequest)
		return
	}
	// Connections only to loopback addresses, whatever localhost resolves to.
	client, release := loopbackClient(false)
	defer release()
	opts.Client = client
	d, err := DeliverComponentPush(r.Context(), eventURL, pq, body, opts)
	if d == nil {
		http.Error(w, "component_push: "+errorText(err), http.StatusBadRequest)
		return
	}
	answer := struct {
		Accepted   bool          `json:"accepted"`
		AcceptedOn int           `json:"accepted_on"`
		Error      string        `json:"error,omitempty"`
		Attempts   []attemptJSON `json:"attempts"`
	}{Accepted: err == nil, AcceptedOn: d.AcceptedOn(), Error: errorText(err), Attempts: []attemptJSON{}}
	for _, a := range d.Attempts {
		answer.Attempts = append(answer.Attempts, attemptView(a))
	}
	writeJSON(w, "application/json", answer)
}

// startTicketPush starts the periodic component_verify_ticket push of
// Config.TicketPushURL; Close stops it and waits for it.
func (s *Server) startTicketPush() {
	if s.cfg.TicketPushURL == "" || len(s.cfg.Components) == 0 {
		return
	}
	every := s.cfg.TicketPushInterval
	if every <= 0 {
		every = 10 * time.Minute
	}
	ctx, cancel := context.WithCancel(context.Background())
	s.platform.loops.Add(2)
	go func() {
		defer s.platform.loops.Done()
		defer cancel()
		<-s.closed
	}()
	go func() {
		defer s.platform.loops.Done()
		ticker := time.NewTicker(every)
		defer ticker.Stop()
		for {
			s.pushTickets(ctx)
			select {
			case <-ctx.Done():
				return
			case <-ticker.C:
			}
		}
	}()
}

// pushTickets pushes a new ticket for every platform, as WeChat does
// every 10 minutes.
func (s *Server) pushTickets(ctx context.Context) {
	ids := make([]string, 0, len(s.cfg.Components))
	for id := range s.cfg.Components {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	for _, id := range ids {
		q, body, err := s.ComponentPush(id, "component_verify_ticket", nil, "")
		if err == nil {
			_, err = DeliverComponentPush(ctx, s.cfg.TicketPushURL, q, body, PushOptions{})
		}
		if ctx.Err() != nil {
			return // closing: not the receiver's failure
		}
		s.mu.Lock()
		if err == nil {
			s.stats.TicketPushes++
		} else {
			s.stats.TicketPushFailures++
		}
		s.mu.Unlock()
		if s.cfg.Logf != nil {
			if err != nil {
				s.cfg.Logf("ticket push for %s: %v", id, err)
			} else {
				s.cfg.Logf("ticket push for %s to %s: accepted", id, s.cfg.TicketPushURL)
			}
		}
	}
}
