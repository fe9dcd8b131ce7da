package emulator

import (
	"bytes"
	"context"
	"encoding/json"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Default users of pushes whose Message has no FromUserName: the openid of
// WeChat's documentation, and a WeCom userid of WeCom's.
const (
	DefaultPushOpenID    = "o6_bmjrPTlm6_2sgVt7hMZOPfL2M"
	DefaultPushWeComUser = "zhangsan"
)

const (
	maxMessageAnswer      = 1 << 20 // the most of an answer read
	maxQuotedAnswerInErrs = 200     // the most of an answer quoted in errors
	pushUserAgent         = "Mozilla/4.0"
	pushContentTypeXML    = "text/xml"
	pushContentTypeJSON   = "application/json"
)

// WeChat's delivery rules, the defaults of PushOptions.
const (
	// DefaultPushTimeout is how long WeChat waits for an answer before it
	// hangs up (5 s).
	DefaultPushTimeout = 5 * time.Second
	// DefaultPushAttempts is how many times WeChat delivers a push that
	// gets no answer: once and 3 re-sends.
	DefaultPushAttempts = 4
	// DefaultRetryGap is the pause before a re-send, shorter than WeChat's
	// gaps of seconds so that a test of re-sends takes no minute; tests
	// may shorten it further.
	DefaultRetryGap = time.Second
)

// Errors of pushes and URL checks, for errors.Is: the receiver's failures, as
// opposed to a mistake in the test's set-up.
var (
	// ErrNotDelivered: no delivery was answered with HTTP 200 in time.
	ErrNotDelivered = errors.New("push not delivered")
	// ErrBadReply: a delivery was answered, but the reply is one WeChat
	// would refuse (bad signature, wrong receiver, not encrypted in safe
	// mode, addressed to the wrong user ...).
	ErrBadReply = errors.New("passive reply refused")
	// ErrURLCheckFailed: the URL check was not answered with the echostr.
	ErrURLCheckFailed = errors.New("URL check failed")
)

// PushOptions tune one push (and DeliverComponentPush's deliveries); zero
// values are WeChat's delivery rules.
type PushOptions struct {
	// Timeout of each delivery (default DefaultPushTimeout): WeChat hangs
	// up then and re-sends.
	Timeout time.Duration
	// Attempts is how many deliveries at most, the first included
	// (default DefaultPushAttempts; 1: no re-send).
	Attempts int
	// RetryGap is the pause before each re-send (default
	// DefaultRetryGap; negative: none).
	RetryGap time.Duration
	// Forge makes the push wrong on purpose.
	Forge Forgery
	// Client sends the pushes (default: one of its own, no proxy, no
	// redirects, its connections closed when the push is done). Set it to
	// reach an httptest TLS server, say.
	Client *http.Client
}

func (o PushOptions) withDefaults() PushOptions {
	if o.Timeout <= 0 {
		o.Timeout = DefaultPushTimeout
	}
	if o.Attempts <= 0 {
		o.Attempts = DefaultPushAttempts
	}
	if o.RetryGap == 0 {
		o.RetryGap = DefaultRetryGap
	}
	return o
}

// client is the client to push with and what to call when done.
func (o PushOptions) client() (*http.Client, func()) {
	if o.Client != nil {
		return o.Client, func() {}
	}
	tr := &http.Transport{DisableKeepAlives: true}
	return &http.Client{Transport: tr, CheckRedirect: noRedirects}, tr.CloseIdleConnections
}

// noRedirects keeps a redirect as the answer: WeChat does not follow them.
func noRedirects(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }

// Attempt is one delivery (or URL check) and what came of it.
type Attempt struct {
	URL      string     // the URL requested, query included
	Query    url.Values // its query parameters
	Body     []byte     // what was sent (nil for a GET)
	Status   int        // the HTTP status answered; 0 if none
	Answer   []byte     // the body answered (at most 1 MiB)
	Duration time.Duration
	// TimedOut: no whole answer within the timeout; WeChat hung up.
	TimedOut bool
	Err      error // the transport's error, if any
}

// Answered reports whether WeChat counts the delivery as answered: HTTP
// 200 within the timeout. Anything else is re-sent.
func (a Attempt) Answered() bool { return a.Err == nil && a.Status == http.StatusOK }

// problem says why a delivery was not answered.
func (a Attempt) problem() string {
	if a.Err != nil {
		return a.Err.Error()
	}
	return fmt.Sprintf("answered HTTP %d %s", a.Status, quoteAnswer(a.Answer))
}

func quoteAnswer(b []byte) string {
	if len(b) > maxQuotedAnswerInErrs {
		return strconv.Quote(string(b[:maxQuotedAnswerInErrs])) + "…"
	}
	return strconv.Quote(string(b))
}

// PushResult is what a push did.
type PushResult struct {
	Target    PushTarget // as pushed to, defaults filled in
	Message   Message    // as pushed, defaults filled in
	Plaintext []byte     // the message as the receiver must see it decrypted
	Attempts  []Attempt  // every delivery, in order
	Delivered bool       // one was answered (HTTP 200 in time)
	// Reply is the passive reply's plaintext, verified and decrypted as
	// WeChat does; nil when the receiver answered empty or "success".
	Reply []byte
	// ReplyEncrypted: the reply came in an envelope (safe or compatible
	// mode).
	ReplyEncrypted bool
}

// PushStats counts what a MessagePusher pushed, so tests can assert on it.
type PushStats struct {
	Pushes          int `json:"pushes"`            // messages pushed
	Deliveries      int `json:"deliveries"`        // HTTP deliveries, re-sends included
	Resends         int `json:"resends"`           // deliveries after a message's first
	TimedOut        int `json:"timed_out"`         // deliveries WeChat hung up on
	Delivered       int `json:"delivered"`         // messages answered
	Undelivered     int `json:"undelivered"`       // messages no delivery of which was answered
	Replies         int `json:"replies"`           // passive replies verified
	BadReplies      int `json:"bad_replies"`       // passive replies refused
	URLChecks       int `json:"url_checks"`        // URL checks made
	URLChecksFailed int `json:"url_checks_failed"` // URL checks not answered with the echostr
	Forged          int `json:"forged"`            // pushes and checks made wrong on purpose
	SetupErrors     int `json:"setup_errors"`      // refused before sending: bad target, message or forgery
}

// MessagePusher pushes messages and events to a receiver's message URL as
// WeChat does (signed, sealed, re-sent, its passive reply checked) and
// counts them. Pusher (platform_push.go) delivers a platform's ready-made
// pushes; this one makes them. The zero value is ready to use; it is safe
// for concurrent use.
type MessagePusher struct {
	// Now is the clock of timestamps and CreateTime (default time.Now);
	// the receiver compares them with its own.
	Now func() time.Time

	mu    sync.Mutex
	stats PushStats
}

func (p *MessagePusher) now() time.Time {
	if p.Now != nil {
		return p.Now()
	}
	return time.Now()
}

func (p *MessagePusher) count(f func(*PushStats)) {
	p.mu.Lock()
	defer p.mu.Unlock()
	f(&p.stats)
}

// Stats returns a copy of the counters.
func (p *MessagePusher) Stats() PushStats {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.stats
}

// ResetStats zeroes the counters.
func (p *MessagePusher) ResetStats() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.stats = PushStats{}
}

// PushMessage pushes m with a MessagePusher of its own; see
// MessagePusher.Push.
func PushMessage(ctx context.Context, target PushTarget, m Message, opts PushOptions) (*PushResult, error) {
	return new(MessagePusher).Push(ctx, target, m, opts)
}

// VerifyURL checks target's URL with a MessagePusher of its own; see
// MessagePusher.VerifyURL.
func VerifyURL(ctx context.Context, target PushTarget, opts PushOptions) (*URLCheck, error) {
	return new(MessagePusher).VerifyURL(ctx, target, opts)
}

// Push delivers m to target as WeChat does: signed (and sealed, in the
// encrypted modes), POSTed, re-sent with a fresh timestamp, nonce and
// envelope, and the same MsgId, until a delivery is answered with HTTP 200
// within the timeout or the attempts are spent; then the answer is checked
// as WeChat checks a passive reply. The result records every delivery.
//
// The error wraps ErrNotDelivered or ErrBadReply when the receiver failed,
// the context's error when ctx ended first; the result is then non-nil.
// A bad target or message is reported with a nil result.
func (p *MessagePusher) Push(ctx context.Context, target PushTarget, m Message, opts PushOptions) (*PushResult, error) {
	t, err := target.normalized()
	if err == nil {
		err = checkForgery(t, opts.Forge)
	}
	if err == nil {
		m = fillMessage(t, m, p.now())
		err = m.validate()
	}
	if err != nil {
		p.count(func(s *PushStats) { s.SetupErrors++ })
		return nil, fmt.Errorf("push to %s: %w", target.URL, err)
	}
	opts = opts.withDefaults()
	plain := m.encode(t.Format)
	res := &PushResult{Target: t, Message: m, Plaintext: plain}
	client, release := opts.client()
	defer release()
	p.count(func(s *PushStats) {
		s.Pushes++
		if opts.Forge != (Forgery{}) {
			s.Forged++
		}
	})
	contentType := pushContentTypeXML
	if t.Format == FormatJSON {
		contentType = pushContentTypeJSON
	}
	for i := range opts.Attempts {
		if i > 0 {
			if err := pause(ctx, opts.RetryGap); err != nil {
				return res, fmt.Errorf("push %s to %s, before re-send %d: %w", m.Key(), t.URL, i, err)
			}
		}
		rawURL, body, err := t.pushRequest(plain, m.FromUserName, p.now(), opts.Forge)
		if err != nil {
			return res, fmt.Errorf("push %s to %s: %w", m.Key(), t.URL, err)
		}
		a := deliver(ctx, client, http.MethodPost, rawURL, body, contentType, opts.Timeout)
		res.Attempts = append(res.Attempts, a)
		p.count(func(s *PushStats) {
			s.Deliveries++
			if i > 0 {
				s.Resends++
			}
			if a.TimedOut {
				s.TimedOut++
			}
		})
		if a.Answered() {
			res.Delivered = true
			break
		}
		if ctx.Err() != nil {
			return res, fmt.Errorf("push %s to %s: %w", m.Key(), t.URL, ctx.Err())
		}
	}
	if !res.Delivered {
		p.count(func(s *PushStats) { s.Undelivered++ })
		last := res.Attempts[len(res.Attempts)-1]
		return res, fmt.Errorf("%w: %s to %s, %d deliveries, the last %s", ErrNotDelivered, m.Key(), t.URL, len(res.Attempts), last.problem())
	}
	p.count(func(s *PushStats) { s.Delivered++ })
	reply, encrypted, err := verifyReply(t, m, res.Attempts[len(res.Attempts)-1].Answer)
	if err != nil {
		p.count(func(s *PushStats) { s.BadReplies++ })
		return res, fmt.Errorf("%w: %s from %s: %v", ErrBadReply, m.Key(), t.URL, err)
	}
	if reply != nil {
		p.count(func(s *PushStats) { s.Replies++ })
	}
	res.Reply, res.ReplyEncrypted = reply, encrypted
	return res, nil
}

// fillMessage fills the zero fields of m that a push needs.
func fillMessage(t PushTarget, m Message, now time.Time) Message {
	if m.ToUserName == "" {
		m.ToUserName = t.toUserName()
	}
	if m.FromUserName == "" {
		m.FromUserName = DefaultPushOpenID
		if t.Kind == KindWeCom {
			m.FromUserName = DefaultPushWeComUser
		}
	}
	if m.CreateTime == 0 {
		m.CreateTime = now.Unix()
	}
	if t.Kind == KindWeCom && m.AgentID == "" {
		m.AgentID = t.AgentID
	}
	return m
}

// checkForgery refuses forgeries that cannot apply to t.
func checkForgery(t PushTarget, f Forgery) error {
	if !t.encrypted() && (f.AESKey != "" || f.SealFor != "" || f.FlipCiphertext) {
		return errors.New("plaintext mode has no envelope to forge (only Token and Age apply)")
	}
	if f.AESKey != "" {
		if _, err := decodeAESKey(f.AESKey); err != nil {
			return fmt.Errorf("forged key: %w", err)
		}
	}
	return nil
}

// signer is what a forgery changes of the target's secrets.
func (t PushTarget) signer(f Forgery, now time.Time) (token, aesKey, receiverID, timestamp string) {
	token, aesKey, receiverID = t.Token, t.AESKey, t.ReceiverID
	if f.Token != "" {
		token = f.Token
	}
	if f.AESKey != "" {
		aesKey = f.AESKey
	}
	if f.SealFor != "" {
		receiverID = f.SealFor
	}
	return token, aesKey, receiverID, strconv.FormatInt(now.Add(-f.Age).Unix(), 10)
}

// seal makes the envelope of plain and its msg_signature.
func seal(token, aesKey, receiverID, timestamp, nonce string, plain []byte, f Forgery) (encrypted, msgSignature string, err error) {
	encrypted, err = SealMessage(aesKey, plain, receiverID)
	if err != nil {
		return "", "", fmt.Errorf("seal: %w", err)
	}
	msgSignature = WeChatSignature(token, timestamp, nonce, encrypted)
	if f.FlipCiphertext {
		encrypted = flipCiphertext(encrypted)
	}
	return encrypted, msgSignature, nil
}

// pushRequest is the URL and body of one delivery of plain, signed anew.
func (t PushTarget) pushRequest(plain []byte, openID string, now time.Time, f Forgery) (string, []byte, error) {
	token, aesKey, receiverID, timestamp := t.signer(f, now)
	nonce := pushNonce()
	signature := WeChatSignature(token, timestamp, nonce)
	if !t.encrypted() {
		q := rawQuery("signature", signature, "timestamp", timestamp, "nonce", nonce, "openid", openID)
		return withQuery(t.URL, q), plain, nil
	}
	encrypted, msgSignature, err := seal(token, aesKey, receiverID, timestamp, nonce, plain, f)
	if err != nil {
		return "", nil, err
	}
	if t.Kind == KindWeCom {
		var b strings.Builder
		b.WriteString("<xml>")
		writeCDATA(&b, "ToUserName", t.ReceiverID)
		writeCDATA(&b, "AgentID", t.AgentID)
		writeCDATA(&b, "Encrypt", encrypted)
		b.WriteString("</xml>")
		q := rawQuery("msg_signature", msgSignature, "timestamp", timestamp, "nonce", nonce)
		return withQuery(t.URL, q), []byte(b.String()), nil
	}
	q := rawQuery("signature", signature, "timestamp", timestamp, "nonce", nonce, "openid", openID, "encrypt_type", "aes", "msg_signature", msgSignature)
	var body string
	switch {
	case t.Mode == ModeCompatible && t.Format == FormatJSON:
		body = strings.TrimSuffix(string(plain), "}") + `,"Encrypt":` + jsonString(encrypted) + "}"
	case t.Mode == ModeCompatible:
		var b strings.Builder
		b.WriteString(strings.TrimSuffix(string(plain), "</xml>"))
		writeCDATA(&b, "Encrypt", encrypted)
		b.WriteString("</xml>")
		body = b.String()
	case t.Format == FormatJSON:
		body = `{"ToUserName":` + jsonString(t.OriginalID) + `,"Encrypt":` + jsonString(encrypted) + "}"
	default:
		var b strings.Builder
		b.WriteString("<xml>")
		writeCDATA(&b, "ToUserName", t.OriginalID)
		writeCDATA(&b, "Encrypt", encrypted)
		b.WriteString("</xml>")
		body = b.String()
	}
	return withQuery(t.URL, q), []byte(body), nil
}

// deliver makes one request and reads the whole answer within timeout,
// as WeChat waits for one.
func deliver(ctx context.Context, client *http.Client, method, rawURL string, body []byte, contentType string, timeout time.Duration) Attempt {
	a := Attempt{URL: rawURL, Body: body}
	if u, err := url.Parse(rawURL); err == nil {
		a.Query = u.Query()
	}
	// Started before the deadline is set, so that a timed-out attempt's
	// Duration is never below timeout.
	start := time.Now()
	actx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var reader io.Reader
	if body != nil {
		reader = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(actx, method, rawURL, reader)
	if err != nil {
		a.Err = fmt.Errorf("request: %w", err)
		a.Duration = time.Since(start)
		return a
	}
	req.Header.Set("User-Agent", pushUserAgent)
	req.Header.Set("Accept", "*/*")
	req.Header.Set("Pragma", "no-cache")
	if body != nil {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := client.Do(req)
	if err == nil {
		defer resp.Body.Close()
		a.Status = resp.StatusCode
		a.Answer, err = io.ReadAll(io.LimitReader(resp.Body, maxMessageAnswer))
		if err != nil {
			err = fmt.Errorf("reading the answer: %w", err)
		}
	}
	if err != nil {
		if errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil {
			a.TimedOut = true
			err = fmt.Errorf("no answer within %s, hung up: %w", timeout, err)
		}
		a.Err = err
	}
	a.Duration = time.Since(start)
	return a
}

// pause waits d, or until ctx ends.
func pause(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-timer.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// verifyReply checks an answer as WeChat checks a passive reply and
// returns its plaintext (nil for no reply) and whether it was encrypted.
func verifyReply(t PushTarget, m Message, answer []byte) ([]byte, bool, error) {
	body := bytes.TrimSpace(answer)
	if len(body) == 0 || string(body) == "success" {
		return nil, false, nil
	}
	fields, err := parseFields(t.Format, body)
	if err != nil {
		return nil, false, fmt.Errorf("reply: %w", err)
	}
	enc, isEnvelope := fields["Encrypt"]
	if !isEnvelope {
		if t.Mode == ModeSafe {
			return nil, false, fmt.Errorf("mode safe: the reply is not encrypted (no Encrypt): %s", quoteAnswer(body))
		}
		if err := checkReplyMessage(fields, m); err != nil {
			return nil, false, err
		}
		return body, false, nil
	}
	if t.Mode == ModePlaintext {
		return nil, false, errors.New("mode plaintext: the reply is an encrypted envelope, WeChat has no key to open it")
	}
	sig, ts, nonce := fields["MsgSignature"], fields["TimeStamp"], fields["Nonce"]
	switch {
	case enc == "":
		return nil, false, errors.New("encrypted reply: Encrypt is empty")
	case sig == "" || ts == "" || nonce == "":
		return nil, false, fmt.Errorf("encrypted reply: MsgSignature, TimeStamp or Nonce missing (MsgSignature %q, TimeStamp %q, Nonce %q)", sig, ts, nonce)
	case !isDigits(ts):
		return nil, false, fmt.Errorf("encrypted reply: TimeStamp %q is not a number", ts)
	}
	if want := WeChatSignature(t.Token, ts, nonce, enc); !strings.EqualFold(sig, want) {
		return nil, false, fmt.Errorf("encrypted reply: MsgSignature %s does not match SHA-1(sorted token, TimeStamp, Nonce, Encrypt) %s", sig, want)
	}
	plain, receiverID, err := OpenSealed(t.AESKey, enc)
	if err != nil {
		return nil, false, fmt.Errorf("encrypted reply: %w", err)
	}
	if receiverID != t.ReceiverID {
		return nil, false, fmt.Errorf("encrypted reply: sealed for receiver id %q, want %q", receiverID, t.ReceiverID)
	}
	inner, err := parseFields(t.Format, bytes.TrimSpace(plain))
	if err != nil {
		return nil, false, fmt.Errorf("decrypted reply: %w", err)
	}
	if err := checkReplyMessage(inner, m); err != nil {
		return nil, false, fmt.Errorf("decrypted reply: %w", err)
	}
	return plain, true, nil
}

// checkReplyMessage checks that a reply answers the user of m: WeChat
// drops one addressed elsewhere.
func checkReplyMessage(f map[string]string, m Message) error {
	switch {
	case f["MsgType"] == "":
		return errors.New("reply has no MsgType")
	case f["ToUserName"] != m.FromUserName:
		return fmt.Errorf("reply's ToUserName %q is not the sender %q", f["ToUserName"], m.FromUserName)
	case f["FromUserName"] != m.ToUserName:
		return fmt.Errorf("reply's FromUserName %q is not the account %q", f["FromUserName"], m.ToUserName)
	case !isDigits(f["CreateTime"]):
		return fmt.Errorf("reply's CreateTime %q is not a number", f["CreateTime"])
	}
	return nil
}

// parseFields reads the top-level fields of an XML or JSON message.
func parseFields(format PushFormat, data []byte) (map[string]string, error) {
	if format == FormatJSON {
		var raw map[string]json.RawMessage
		if err := json.Unmarshal(data, &raw); err != nil {
			return nil, fmt.Errorf("not a JSON object: %w (%s)", err, quoteAnswer(data))
		}
		fields := map[string]string{}
		for k, v := range raw {
			var s string
			if json.Unmarshal(v, &s) == nil {
				fields[k] = s
			} else {
				fields[k] = string(v)
			}
		}
		return fields, nil
	}
	d := xml.NewDecoder(bytes.NewReader(data))
	fields := map[string]string{}
	root := false
	for {
		tok, err := d.Token()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("not XML: %w (%s)", err, quoteAnswer(data))
		}
		start, ok := tok.(xml.StartElement)
		if !ok {
			continue
		}
		if !root {
			if start.Name.Local != "xml" {
				return nil, fmt.Errorf("root element <%s>, want <xml>", start.Name.Local)
			}
			root = true
			continue
		}
		var v struct {
			Text string `xml:",chardata"`
		}
		if err := d.DecodeElement(&v, &start); err != nil {
			return nil, fmt.Errorf("not XML: <%s>: %w", start.Name.Local, err)
		}
		fields[start.Name.Local] = strings.TrimSpace(v.Text)
	}
	if !root {
		return nil, fmt.Errorf("no <xml> element (%s)", quoteAnswer(data))
	}
	return fields, nil
}

// URLCheck is a URL check (the console's 提交 of 服务器配置) and what came of it.
type URLCheck struct {
	Attempt
	// Expected is the answer WeChat wants: the echostr, or WeCom's
	// decrypted echostr.
	Expected string
}

// VerifyURL makes the GET WeChat makes when the URL is saved in the
// console and reports whether it was answered right: an Official Account
// or Mini Program must answer the echostr, a WeCom app the decrypted
// echostr, exactly (no quotes, no newline), HTTP 200, within the timeout.
// WeChat makes one check, no re-send; opts.Attempts and RetryGap are
// ignored. A platform's message URL is not checked by WeChat: an
// authorizer target is an error.
func (p *MessagePusher) VerifyURL(ctx context.Context, target PushTarget, opts PushOptions) (*URLCheck, error) {
	t, err := target.normalized()
	if err == nil && t.Kind == KindAuthorizer {
		err = errors.New("WeChat makes no URL check of a platform's message URL")
	}
	if err == nil && t.Kind != KindWeCom && (opts.Forge.AESKey != "" || opts.Forge.SealFor != "" || opts.Forge.FlipCiphertext) {
		err = errors.New("an Official Account's or Mini Program's URL check has no envelope to forge (only Token and Age apply)")
	}
	if err == nil {
		err = checkForgery(t, opts.Forge)
	}
	if err != nil {
		p.count(func(s *PushStats) { s.SetupErrors++ })
		return nil, fmt.Errorf("URL check of %s: %w", target.URL, err)
	}
	opts = opts.withDefaults()
	client, release := opts.client()
	defer release()
	token, aesKey, receiverID, timestamp := t.signer(opts.Forge, p.now())
	nonce := pushNonce()
	echo := pushEchostr()
	var q string
	if t.Kind == KindWeCom {
		encrypted, msgSignature, err := seal(token, aesKey, receiverID, timestamp, nonce, []byte(echo), opts.Forge)
		if err != nil {
			return nil, fmt.Errorf("URL check of %s: %w", t.URL, err)
		}
		q = rawQuery("msg_signature", msgSignature, "timestamp", timestamp, "nonce", nonce, "echostr", encrypted)
	} else {
		q = rawQuery("signature", WeChatSignature(token, timestamp, nonce), "echostr", echo, "timestamp", timestamp, "nonce", nonce)
	}
	check := &URLCheck{Attempt: deliver(ctx, client, http.MethodGet, withQuery(t.URL, q), nil, "", opts.Timeout), Expected: echo}
	p.count(func(s *PushStats) {
		s.URLChecks++
		if opts.Forge != (Forgery{}) {
			s.Forged++
		}
	})
	switch {
	case !check.Answered():
		err = fmt.Errorf("%w: %s %s", ErrURLCheckFailed, t.URL, check.problem())
	case string(check.Answer) != echo:
		err = fmt.Errorf("%w: %s answered %s, want the echostr %q exactly", ErrURLCheckFailed, t.URL, quoteAnswer(check.Answer), echo)
	default:
		return check, nil
	}
	p.count(func(s *PushStats) { s.URLChecksFailed++ })
	return check, err
}
