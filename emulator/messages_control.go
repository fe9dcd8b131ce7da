package emulator

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"syscall"
	"time"
)

// The control endpoints of message push, for non-Go tests and the demo:
//
//	POST /_emulator/push_message  push a message, answer what came of it
//	POST /_emulator/verify_url    make the console's URL check
//	GET  /_emulator/pushes        the counters (PushStats)
//
// Only loopback URLs may be targeted (loopbackOnly, and a dialer that
// connects to loopback addresses only): the emulator is a test double and
// must not be made to send requests elsewhere.

// Messages is the MessagePusher of the control endpoints, so that Go tests
// driving them can read and reset its counters.
func (s *Server) Messages() *MessagePusher { return &s.pushes }

// controlForgery is Forgery as the control endpoints take it.
type controlForgery struct {
	Forgery
	Age Duration `json:"age,omitempty"`
}

// controlPush is the body of push_message and verify_url.
type controlPush struct {
	PushTarget
	MsgType    string  `json:"msg_type,omitempty"`
	Event      string  `json:"event,omitempty"`
	Content    string  `json:"content,omitempty"`
	FromUser   string  `json:"from_user,omitempty"`
	ToUser     string  `json:"to_user,omitempty"`
	MsgID      int64   `json:"msg_id,omitempty"`
	CreateTime int64   `json:"create_time,omitempty"`
	Fields     []Field `json:"fields,omitempty"`

	// Timeout, Attempts and RetryGap as PushOptions', durations as Go
	// writes them ("300ms"); an explicit "0s" retry_gap means none.
	Timeout  Duration  `json:"timeout,omitempty"`
	Attempts int       `json:"attempts,omitempty"`
	RetryGap *Duration `json:"retry_gap,omitempty"`
	// InsecureSkipVerify accepts any certificate of an https receiver on
	// this machine (Caddy's `tls internal`, say).
	InsecureSkipVerify bool           `json:"insecure_skip_verify,omitempty"`
	Forge              controlForgery `json:"forge"`
}

// attemptJSON is an Attempt as the control endpoints answer it.
type attemptJSON struct {
	URL        string  `json:"url"`
	Body       string  `json:"body,omitempty"`
	Status     int     `json:"status"`
	Answer     string  `json:"answer"`
	DurationMS float64 `json:"duration_ms"`
	TimedOut   bool    `json:"timed_out"`
	Error      string  `json:"error,omitempty"`
}

func attemptView(a Attempt) attemptJSON {
	v := attemptJSON{URL: a.URL, Body: string(a.Body), Status: a.Status, Answer: string(a.Answer),
		DurationMS: float64(a.Duration.Microseconds()) / 1000, TimedOut: a.TimedOut}
	if a.Err != nil {
		v.Error = a.Err.Error()
	}
	return v
}

func errorText(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

func (s *Server) serveMessageControl(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path == "/_emulator/pushes" {
		writeJSON(w, "application/json", s.pushes.Stats())
		return
	}
	if r.Method != http.MethodPost {
		http.Error(w, "POST only", http.StatusMethodNotAllowed)
		return
	}
	var req controlPush
	dec := json.NewDecoder(io.LimitReader(r.Body, 1<<20))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		http.Error(w, "push: bad JSON: "+err.Error(), http.StatusBadRequest)
		return
	}
	target, err := req.PushTarget.normalized()
	if err == nil {
		err = loopbackOnly(target.URL)
	}
	if err != nil {
		http.Error(w, "push: "+err.Error(), http.StatusBadRequest)
		return
	}
	client, release := loopbackClient(req.InsecureSkipVerify)
	defer release()
	opts := PushOptions{Timeout: time.Duration(req.Timeout), Attempts: req.Attempts, Forge: req.Forge.Forgery, Client: client}
	opts.Forge.Age = time.Duration(req.Forge.Age)
	if req.RetryGap != nil {
		opts.RetryGap = time.Duration(*req.RetryGap)
		if opts.RetryGap == 0 {
			opts.RetryGap = -1 // asked for none; PushOptions' zero is the default
		}
	}
	if r.URL.Path == "/_emulator/verify_url" {
		s.serveVerifyURL(r.Context(), w, req.PushTarget, opts)
		return
	}
	msg := Message{
		ToUserName: req.ToUser, FromUserName: req.FromUser, CreateTime: req.CreateTime, MsgType: req.MsgType,
		Event: req.Event, Content: req.Content, Fields: req.Fields, MsgID: req.MsgID,
	}
	if msg.MsgType == "" {
		msg.MsgType = "text"
		if msg.Event != "" {
			msg.MsgType = "event"
		}
	}
	if msg.MsgID == 0 && msg.MsgType != "event" {
		msg.MsgID = NewMsgID()
	}
	res, err := s.pushes.Push(r.Context(), req.PushTarget, msg, opts)
	if res == nil {
		http.Error(w, errorText(err), http.StatusBadRequest)
		return
	}
	out := struct {
		OK             bool          `json:"ok"`
		Delivered      bool          `json:"delivered"`
		Error          string        `json:"error,omitempty"`
		Key            string        `json:"key"`
		MsgID          int64         `json:"msg_id,omitempty"`
		Message        string        `json:"message"`
		Reply          string        `json:"reply,omitempty"`
		ReplyEncrypted bool          `json:"reply_encrypted"`
		Attempts       []attemptJSON `json:"attempts"`
	}{
		OK: err == nil, Delivered: res.Delivered, Error: errorText(err), Key: res.Message.Key(), MsgID: res.Message.MsgID,
		Message: string(res.Plaintext), Reply: string(res.Reply), ReplyEncrypted: res.ReplyEncrypted, Attempts: []attemptJSON{},
	}
	for _, a := range res.Attempts {
		out.Attempts = append(out.Attempts, attemptView(a))
	}
	writeJSON(w, "application/json", out)
}

func (s *Server) serveVerifyURL(ctx context.Context, w http.ResponseWriter, target PushTarget, opts PushOptions) {
	check, err := s.pushes.VerifyURL(ctx, target, opts)
	if check == nil {
		http.Error(w, errorText(err), http.StatusBadRequest)
		return
	}
	writeJSON(w, "application/json", struct {
		OK       bool   `json:"ok"`
		Error    string `json:"error,omitempty"`
		Expected string `json:"expected"`
		attemptJSON
	}{OK: err == nil, Error: errorText(err), Expected: check.Expected, attemptJSON: attemptView(check.Attempt)})
}

// loopbackOnly refuses a URL that is not http(s) on this machine.
func loopbackOnly(raw string) error {
	u, err := url.Parse(raw)
	if err != nil {
		return fmt.Errorf("URL: %w", err)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return fmt.Errorf("URL %q: scheme %q is not http or https", raw, u.Scheme)
	}
	host := u.Hostname()
	if ip := net.ParseIP(host); !strings.EqualFold(host, "localhost") && (ip == nil || !ip.IsLoopback()) {
		return fmt.Errorf("URL %q: only loopback hosts (127.0.0.1, ::1, localhost) may be pushed to: the emulator is a test double", raw)
	}
	return nil
}

// loopbackClient is a client whose connections can only go to loopback
// addresses, whatever a name resolves to.
func loopbackClient(insecure bool) (*http.Client, func()) {
	dialer := &net.Dialer{Control: func(_, address string, _ syscall.RawConn) error {
		host, _, err := net.SplitHostPort(address)
		if ip := net.ParseIP(host); err != nil || ip == nil || !ip.IsLoopback() {
			return errors.New("refusing to connect to " + address + ": not a loopback address")
		}
		return nil
	}}
	tr := &http.Transport{DialContext: dialer.DialContext, DisableKeepAlives: true}
	if insecure {
		tr.TLSClientConfig = &tls.Config{InsecureSkipVerify: true} //nolint:gosec // opt-in, loopback only
	}
	return &http.Client{Transport: tr, CheckRedirect: noRedirects}, tr.CloseIdleConnections
}
