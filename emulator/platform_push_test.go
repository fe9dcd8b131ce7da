package emulator

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"
)

// eventServer is a platform's event URL whose answers a test scripts:
// answer(n, w, r) answers the n-th push (1 for the first).
type eventServer struct {
	*httptest.Server
	mu      sync.Mutex
	bodies  []string
	queries []url.Values
}

func newEventServer(t *testing.T, answer func(n int, w http.ResponseWriter, r *http.Request)) *eventServer {
	t.Helper()
	e := &eventServer{}
	e.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		e.mu.Lock()
		e.bodies = append(e.bodies, string(body))
		e.queries = append(e.queries, r.URL.Query())
		n := len(e.bodies)
		e.mu.Unlock()
		if r.Method != http.MethodPost || r.Header.Get("Content-Type") != "text/xml" {
			http.Error(w, "want a POST of XML", http.StatusBadRequest)
			return
		}
		answer(n, w, r)
	}))
	t.Cleanup(e.Close)
	return e
}

func (e *eventServer) received() ([]string, []url.Values) {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]string(nil), e.bodies...), append([]url.Values(nil), e.queries...)
}

var noGap = PushOptions{RetryGap: -1}

func TestDeliverRetriesUntilSuccess(t *testing.T) {
	emu, _, _ := newPlatformEmu(t, Config{})
	events := newEventServer(t, func(n int, w http.ResponseWriter, _ *http.Request) {
		if n == 1 {
			http.Error(w, "busy", http.StatusInternalServerError)
			return
		}
		_, _ = io.WriteString(w, "success")
	})
	q, body, err := emu.ComponentPush(platformA, "component_verify_ticket", nil, "")
	if err != nil {
		t.Fatal(err)
	}
	d, err := DeliverComponentPush(context.Background(), events.URL+"/events?kept=1", q, body, noGap)
	if err != nil {
		t.Fatal(err)
	}
	if d.AcceptedOn() != 2 || len(d.Attempts) != 2 || d.Attempts[0].Status != 500 || string(d.Attempts[1].Answer) != "success" {
		t.Fatalf("attempts %+v, want accepted on the second", d.Attempts)
	}
	bodies, queries := events.received()
	for i := range bodies {
		if bodies[i] != string(body) || queries[i].Get("msg_signature") != q.Get("msg_signature") || queries[i].Get("kept") != "1" {
			t.Fatalf("delivery %d is not the same push on the event URL's own query", i+1)
		}
	}
}

func TestDeliverAcceptsOnlySuccessOrEmpty(t *testing.T) {
	emu, _, _ := newPlatformEmu(t, Config{})
	for _, c := range []struct {
		answer   string
		accepted bool
	}{{"success", true}, {"", true}, {"ok", false}, {"success\n", false}, {"<xml><Encrypt>x</Encrypt></xml>", false}} {
		events := newEventServer(t, func(_ int, w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, c.answer) })
		q, body, _ := emu.ComponentPush(platformA, "component_verify_ticket", nil, "")
		d, err := DeliverComponentPush(context.Background(), events.URL, q, body, noGap)
		if (err == nil) != c.accepted {
			t.Errorf("answer %q: err %v, accepted should be %v", c.answer, err, c.accepted)
		}
		if !c.accepted && (len(d.Attempts) != DefaultPushAttempts || !errors.Is(err, ErrNotDelivered)) {
			t.Errorf("answer %q: %d attempts, err %v; want %d and ErrNotDelivered", c.answer, len(d.Attempts), err, DefaultPushAttempts)
		}
	}
}

// No answer within the timeout: WeChat hangs up (the receiver sees its
// request end) and sends the same push again.
func TestDeliverHangsUpAfterTheTimeout(t *testing.T) {
	emu, _, _ := newPlatformEmu(t, Config{})
	hungUp := make(chan struct{})
	events := newEventServer(t, func(n int, w http.ResponseWriter, r *http.Request) {
		if n == 1 {
			<-r.Context().Done() // the connection closed by the sender
			close(hungUp)
			return
		}
		_, _ = io.WriteString(w, "success")
	})
	q, body, _, _ := emu.AuthorizedPush(platformA, "wx1")
	opts := noGap
	opts.Timeout = 200 * time.Millisecond
	d, err := DeliverComponentPush(context.Background(), events.URL, q, body, opts)
	if err != nil {
		t.Fatal(err)
	}
	<-hungUp
	first := d.Attempts[0]
	// (The attempt's clock starts just after its deadline is set.)
	if !first.TimedOut || first.Status != 0 || first.Duration < opts.Timeout/2 || d.AcceptedOn() != 2 {
		t.Fatalf("attempts %+v: want the first timed out, the second accepted", d.Attempts)
	}
}

func TestDeliverStopsWithTheContext(t *testing.T) {
	emu, _, _ := newPlatformEmu(t, Config{})
	reached := make(chan struct{}, 1)
	events := newEventServer(t, func(_ int, w http.ResponseWriter, r *http.Request) {
		reached <- struct{}{}
		<-r.Context().Done()
	})
	q, body, _ := emu.ComponentPush(platformA, "component_verify_ticket", nil, "")
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		<-reached
		cancel()
	}()
	d, err := DeliverComponentPush(ctx, events.URL, q, body, PushOptions{})
	if !errors.Is(err, context.Canceled) || len(d.Attempts) != 1 || d.Attempts[0].TimedOut {
		t.Fatalf("err %v, %d attempts", err, len(d.Attempts))
	}
	if _, err := DeliverComponentPush(ctx, events.URL, q, body, PushOptions{Forge: Forgery{Token: "x"}}); err == nil {
		t.Fatal("Forge should be refused")
	}
}

// The control endpoint builds a push and delivers it; the receiver here
// plays the platform: it opens the ticket push and trades the ticket.
func TestComponentPushControlEndpoint(t *testing.T) {
	_, srv, _ := newPlatformEmu(t, Config{})
	events := newEventServer(t, func(n int, w http.ResponseWriter, _ *http.Request) {
		if n == 1 {
			w.WriteHeader(http.StatusBadGateway)
			return
		}
		_, _ = io.WriteString(w, "success")
	})
	control := func(params url.Values) (int, string) {
		resp, err := http.Post(srv.URL+"/_emulator/component_push?"+params.Encode(), "", nil)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	status, got := control(url.Values{"appid": {platformA}, "info_type": {"component_verify_ticket"}, "url": {events.URL + "/events"}, "retry_gap": {"0s"}})
	var answer struct {
		Accepted   bool `json:"accepted"`
		AcceptedOn int  `json:"accepted_on"`
		Attempts   []struct {
			Status int    `json:"status"`
			Answer string `json:"answer"`
		} `json:"attempts"`
	}
	if err := json.Unmarshal([]byte(got), &answer); status != 200 || err != nil {
		t.Fatalf("%d %s", status, got)
	}
	if !answer.Accepted || answer.AcceptedOn != 2 || len(answer.Attempts) != 2 || answer.Attempts[0].Status != 502 || answer.Attempts[1].Answer != "success" {
		t.Fatalf("answer %s", got)
	}
	bodies, queries := events.received()
	ticket := openPush(t, testPlatforms[platformA], queries[1], []byte(bodies[1]))["ComponentVerifyTicket"]
	a := post(t, srv.URL+"/cgi-bin/component/api_component_token", map[string]string{
		"component_appid": platformA, "component_appsecret": testPlatforms[platformA].Secret, "component_verify_ticket": ticket,
	})
	if a.ComponentToken == "" {
		t.Fatalf("the pushed ticket is not accepted: %s", a.raw)
	}

	status, got = control(url.Values{"appid": {platformA}, "info_type": {"unauthorized"}, "authorizer_appid": {"wx1"},
		"create_time": {"1700000000"}, "url": {events.URL}, "attempts": {"1"}})
	bodies, queries = events.received()
	last := openPush(t, testPlatforms[platformA], queries[len(queries)-1], []byte(bodies[len(bodies)-1]))
	if status != 200 || last["InfoType"] != "unauthorized" || last["AuthorizerAppid"] != "wx1" || last["CreateTime"] != "1700000000" {
		t.Fatalf("unauthorized push: %d %s, pushed %v", status, got, last)
	}

	for _, c := range []struct {
		name   string
		params url.Values
	}{
		{"not loopback", url.Values{"appid": {platformA}, "info_type": {"component_verify_ticket"}, "url": {"http://192.0.2.1/events"}}},
		{"no url", url.Values{"appid": {platformA}, "info_type": {"component_verify_ticket"}}},
		{"unknown platform", url.Values{"appid": {"wxnobody"}, "info_type": {"component_verify_ticket"}, "url": {events.URL}}},
		{"no info type", url.Values{"appid": {platformA}, "url": {events.URL}}},
		{"authorized without an account", url.Values{"appid": {platformA}, "info_type": {"authorized"}, "url": {events.URL}}},
		{"bad create_time", url.Values{"appid": {platformA}, "info_type": {"authorized"}, "authorizer_appid": {"wx1"}, "create_time": {"soon"}, "url": {events.URL}}},
	} {
		if status, got := control(c.params); status != http.StatusBadRequest {
			t.Errorf("%s: %d %s, want 400", c.name, status, got)
		}
	}
	resp, err := http.Get(srv.URL + "/_emulator/component_push")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("GET: %d", resp.StatusCode)
	}
}

// The periodic ticket push: one at start, then every interval, none once
// Close has returned.
func TestTicketPushEveryIntervalUntilClose(t *testing.T) {
	events := newEventServer(t, func(_ int, w http.ResponseWriter, _ *http.Request) {
		_, _ = io.WriteString(w, "success")
	})
	var logs []string
	var logMu sync.Mutex
	emu := New(Config{
		Components: map[string]ComponentApp{platformA: testPlatforms[platformA]}, TicketPushURL: events.URL + "/events",
		TicketPushInterval: 50 * time.Millisecond,
		Logf: func(format string, args ...any) {
			logMu.Lock()
			defer logMu.Unlock()
			logs = append(logs, format)
		},
	})
	srv := httptest.NewServer(emu)
	defer srv.Close()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if emu.Stats().TicketPushes >= 3 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("ticket pushes: %+v", emu.Stats())
		}
	}
	emu.Close()
	bodies, queries := events.received()
	var pushed []map[string]string
	for i := range bodies {
		f := openPush(t, testPlatforms[platformA], queries[i], []byte(bodies[i]))
		if f["InfoType"] != "component_verify_ticket" || f["ComponentVerifyTicket"] == "" {
			t.Fatalf("push %d: %v", i+1, f)
		}
		pushed = append(pushed, f)
	}
	// Each push's ticket is a new one, and api_component_token takes it.
	first, second := pushed[0], pushed[1]
	if first["ComponentVerifyTicket"] == second["ComponentVerifyTicket"] {
		t.Fatal("the same ticket pushed twice")
	}
	a := post(t, srv.URL+"/cgi-bin/component/api_component_token", map[string]string{
		"component_appid": platformA, "component_appsecret": testPlatforms[platformA].Secret, "component_verify_ticket": second["ComponentVerifyTicket"],
	})
	if a.ComponentToken == "" {
		t.Fatalf("pushed ticket refused: %s", a.raw)
	}
	// Close waited for the loop: nothing more arrives, even after two
	// more intervals.
	time.Sleep(100 * time.Millisecond)
	if after, _ := events.received(); len(after) != len(bodies) {
		t.Fatalf("%d pushes after Close", len(after)-len(bodies))
	}
	logMu.Lock()
	defer logMu.Unlock()
	if len(logs) < 3 || !strings.Contains(logs[0], "ticket push") {
		t.Fatalf("logs %q", logs)
	}
}

// Close ends a ticket push the receiver never answers, at once.
func TestCloseStopsAHangingTicketPush(t *testing.T) {
	reached := make(chan struct{}, 1)
	events := newEventServer(t, func(_ int, w http.ResponseWriter, r *http.Request) {
		select {
		case reached <- struct{}{}:
		default:
		}
		<-r.Context().Done()
	})
	emu := New(Config{Components: map[string]ComponentApp{platformA: testPlatforms[platformA]}, TicketPushURL: events.URL})
	<-reached
	closed := make(chan struct{})
	go func() {
		emu.Close()
		close(closed)
	}()
	select {
	case <-closed:
	case <-time.After(DefaultPushTimeout - time.Second):
		t.Fatal("Close waited for the push's timeout")
	}
	if s := emu.Stats(); s.TicketPushFailures != 0 {
		t.Fatalf("closing counted as the receiver's failure: %+v", s)
	}
}
