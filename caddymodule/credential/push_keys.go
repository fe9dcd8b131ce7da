package credential

import (
	"bytes"
	"encoding/json"
	"encoding/xml"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/tidwall/gjson"

	"github.com/caddy-wechat/caddy-wechat/caddymodule/wxcrypt"
)

// The message-push credential (消息推送): the Token that signs WeChat's
// pushes to an app's message URL and the EncodingAESKey that encrypts
// them. Unlike the other kinds nothing is fetched or renewed: the proxy
// holds the two, verifies and opens every push, and seals the app's
// replies, so that app servers hold neither.

// MessageKind is a family of message receivers: how WeChat checks their
// URL, when it encrypts, and what identifies an event.
type MessageKind struct {
	// Name names it in metrics and the admin status.
	Name string
	// AlwaysEncrypted: every push is encrypted and carries no
	// encrypt_type (WeCom; a platform's accounts).
	AlwaysEncrypted bool
	// EncryptedEcho: the URL check's echostr is encrypted and signed with
	// msg_signature, and its plaintext is the answer (WeCom).
	EncryptedEcho bool
	// EventFields identify an event (which has no MsgId) beside its
	// FromUserName, CreateTime and Event: WeCom's AgentID.
	EventFields []string
}

// The families of message receivers.
var (
	// OfficialAccount is an Official Account's or a Mini Program's message
	// URL (服务器配置, 消息推送): plaintext, compatible or safe mode.
	OfficialAccount = &MessageKind{Name: "official"}
	// WeComApp is a WeCom app's message URL (接收消息): always encrypted.
	WeComApp = &MessageKind{Name: "wecom", AlwaysEncrypted: true, EncryptedEcho: true, EventFields: []string{"AgentID"}}
	// AuthorizerAccount is a platform's URL for its accounts' messages
	// (消息与事件接收URL), encrypted with the platform's key.
	AuthorizerAccount = &MessageKind{Name: "authorizer", AlwaysEncrypted: true}
)

// MessageReceiver receives one app's (or platform's) pushes.
type MessageReceiver struct {
	Kind *MessageKind
	// ID is the receiver id inside the envelope: the app_id, the corp_id
	// or the platform's component_appid.
	ID    string
	Token string
	// Cipher opens and seals; nil is plaintext mode (no EncodingAESKey).
	Cipher *wxcrypt.Cipher
}

// NewMessageReceiver checks a receiver's keys; aesKey "" is plaintext
// mode, which only Official Accounts and Mini Programs have. Errors never
// quote the token or key.
func NewMessageReceiver(kind *MessageKind, id, token, aesKey string) (*MessageReceiver, error) {
	if token == "" {
		return nil, errors.New("token is required (the Token of the message push settings)")
	}
	r := &MessageReceiver{Kind: kind, ID: id, Token: token}
	if aesKey == "" {
		if kind.AlwaysEncrypted {
			return nil, fmt.Errorf("encoding_aes_key is required: %s pushes are always encrypted", kind.Name)
		}
		return r, nil
	}
	c, err := wxcrypt.New(token, aesKey, id)
	if err != nil {
		return nil, err
	}
	r.Cipher = c
	return r, nil
}

// Why a push or URL check is refused, for metrics and the admin status.
const (
	RefusedSignature = "signature" // signature or msg_signature wrong
	RefusedReceiver  = "receiver"  // encrypted for another receiver id
	RefusedStale     = "stale"     // timestamp more than MaxSkew from the clock
	RefusedMalformed = "malformed" // not WeChat's shape, or undecryptable
	RefusedMode      = "mode"      // plaintext where a key is configured, or the reverse
)

// MaxSkew is how far a push's timestamp may be from the proxy's clock: a
// captured push cannot be replayed later.
const MaxSkew = 5 * time.Minute

// Refusal is a push or URL check refused, with its Reason.
type Refusal struct {
	Reason string
	Err    error
}

func (r *Refusal) Error() string { return "push refused (" + r.Reason + "): " + r.Err.Error() }
func (r *Refusal) Unwrap() error { return r.Err }

func refuse(reason string, format string, args ...any) error {
	return &Refusal{Reason: reason, Err: fmt.Errorf(format, args...)}
}

// checkTime refuses a timestamp more than MaxSkew from now.
func checkTime(timestamp string, now time.Time) error {
	ts, err := strconv.ParseInt(timestamp, 10, 64)
	if err != nil {
		return refuse(RefusedMalformed, "timestamp %q is not a number", timestamp)
	}
	if d := now.Sub(time.Unix(ts, 0)); d > MaxSkew || d < -MaxSkew {
		return refuse(RefusedStale, "timestamp is %s from the proxy's clock, more than %s", d.Round(time.Second), MaxSkew)
	}
	return nil
}

// CheckURL answers WeChat's URL check (the GET when the URL is saved in
// the console): the echostr, decrypted for WeCom.
func (r *MessageReceiver) CheckURL(q url.Values, now time.Time) (string, error) {
	if err := checkTime(q.Get("timestamp"), now); err != nil {
		return "", err
	}
	echo := q.Get("echostr")
	if echo == "" {
		return "", refuse(RefusedMalformed, "no echostr")
	}
	if !r.Kind.EncryptedEcho {
		if !wxcrypt.CheckPlain(r.Token, q.Get("timestamp"), q.Get("nonce"), q.Get("signature")) {
			return "", refuse(RefusedSignature, "signature does not match")
		}
		return echo, nil
	}
	plain, err := r.Cipher.Open(q.Get("timestamp"), q.Get("nonce"), q.Get("msg_signature"), echo)
	if err != nil {
		return "", openRefusal(err)
	}
	return string(plain), nil
}

func openRefusal(err error) error {
	switch {
	case errors.Is(err, wxcrypt.ErrSignature):
		return &Refusal{Reason: RefusedSignature, Err: err}
	case errors.Is(err, wxcrypt.ErrAppID):
		return &Refusal{Reason: RefusedReceiver, Err: err}
	}
	return &Refusal{Reason: RefusedMalformed, Err: err}
}

// Push is a verified push, opened.
type Push struct {
	// JSON: the push came as JSON (Mini Programs), and so goes the answer.
	JSON bool
	// Plain is the message as WeChat wrote it, decrypted.
	Plain []byte
	// Encrypted: it came encrypted, and a passive reply is sealed.
	Encrypted bool
}

// Open verifies a push (POST) and returns its message: with
// encrypt_type=aes (safe and compatible mode) or for kinds always
// encrypted, msg_signature over the Encrypt field, decrypted and its
// receiver id checked; otherwise (plaintext mode) signature alone.
func (r *MessageReceiver) Open(q url.Values, body []byte, now time.Time) (Push, error) {
	if err := checkTime(q.Get("timestamp"), now); err != nil {
		return Push{}, err
	}
	body = bytes.TrimSpace(body)
	p := Push{JSON: len(body) > 0 && body[0] == '{'}
	encrypted := r.Kind.AlwaysEncrypted || q.Get("encrypt_type") == "aes"
	switch {
	case encrypted && r.Cipher == nil:
		return Push{}, refuse(RefusedMode, "an encrypted push, and no encoding_aes_key configured")
	case !encrypted && r.Cipher != nil:
		// A receiver with a key takes only encrypted pushes: a plaintext
		// one would let anyone knowing the token through.
		return Push{}, refuse(RefusedMode, "a plaintext push, and an encoding_aes_key is configured (safe mode)")
	case !encrypted:
		if !wxcrypt.CheckPlain(r.Token, q.Get("timestamp"), q.Get("nonce"), q.Get("signature")) {
			return Push{}, refuse(RefusedSignature, "signature does not match")
		}
		p.Plain = body
		return p, nil
	}
	var sealed string
	if p.JSON {
		sealed = gjson.GetBytes(body, "Encrypt").String()
	} else {
		var field [1]string
		if !rootFields(body, envelopeFields, field[:]) {
			var env struct {
				Encrypt string `xml:"Encrypt"`
			}
			if err := xml.Unmarshal(body, &env); err != nil {
				return Push{}, refuse(RefusedMalformed, "not WeChat's XML: %v", err)
			}
			field[0] = env.Encrypt
		}
		sealed = field[0]
	}
	if sealed == "" {
		return Push{}, refuse(RefusedMalformed, "no Encrypt field")
	}
	plain, err := r.Cipher.Open(q.Get("timestamp"), q.Get("nonce"), q.Get("msg_signature"), sealed)
	if err != nil {
		return Push{}, openRefusal(err)
	}
	p.Plain, p.Encrypted = plain, true
	return p, nil
}

// Seal makes the answer to p of the app's passive reply: sealed and
// signed when p came encrypted, in p's format; as it is otherwise.
func (r *MessageReceiver) Seal(p Push, reply []byte, now time.Time) ([]byte, error) {
	if !p.Encrypted {
		return reply, nil
	}
	timestamp, nonce := strconv.FormatInt(now.Unix(), 10), strconv.FormatInt(now.UnixNano()%1e10, 36)
	encrypted, signature, err := r.Cipher.Seal(reply, timestamp, nonce)
	if err != nil {
		return nil, err
	}
	if p.JSON {
		return json.Marshal(struct {
			Encrypt      string `json:"Encrypt"`
			MsgSignature string `json:"MsgSignature"`
			TimeStamp    int64  `json:"TimeStamp"`
			Nonce        string `json:"Nonce"`
		}{encrypted, signature, now.Unix(), nonce})
	}
	var b strings.Builder
	fmt.Fprintf(&b, "<xml><Encrypt><![CDATA[%s]]></Encrypt><MsgSignature><![CDATA[%s]]></MsgSignature><TimeStamp>%d</TimeStamp><Nonce><![CDATA[%s]]></Nonce></xml>",
		encrypted, signature, now.Unix(), nonce)
	return []byte(b.String()), nil
}

// MessageKey identifies a message across WeChat's re-deliveries: its
// MsgId, or for an event (none) its FromUserName, CreateTime and Event,
// and the kind's EventFields.
func (r *MessageReceiver) MessageKey(p Push) (key string, err error) {
	names := r.Kind.keyFields()
	var buf [8]string
	values := buf[:len(names)]
	if len(names) > len(buf) {
		values = make([]string, len(names))
	}
	if p.JSON {
		for i, f := range names {
			values[i] = gjson.GetBytes(p.Plain, f).String()
		}
	} else {
		readRootFields(p.Plain, names, values)
	}
	msgID, msgIDUpper, from, created, event := values[0], values[1], values[2], values[3], values[4]
	if id := msgID + msgIDUpper; id != "" {
		return "msg:" + id, nil
	}
	if from == "" || created == "" {
		return "", refuse(RefusedMalformed, "the message has neither a MsgId nor a FromUserName and CreateTime")
	}
	var b strings.Builder
	b.WriteString("event:")
	b.WriteString(from)
	b.WriteByte('|')
	b.WriteString(created)
	b.WriteByte('|')
	b.WriteString(event)
	for _, v := range values[len(messageKeyFields):] {
		b.WriteByte('|')
		b.WriteString(v)
	}
	return b.String(), nil
}

// messageKeyFields are the fields of every kind's MessageKey, in the order
// MessageKey reads them; a kind's EventFields follow.
var messageKeyFields = []string{"MsgId", "MsgID", "FromUserName", "CreateTime", "Event"}

// envelopeFields is the field of an encrypted XML push.
var envelopeFields = []string{"Encrypt"}

// keyFields is messageKeyFields and the kind's EventFields.
func (k *MessageKind) keyFields() []string {
	if len(k.EventFields) == 0 {
		return messageKeyFields
	}
	return append(slices.Clip(messageKeyFields), k.EventFields...)
}
