package emulator

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha1"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
)

// Message push (消息推送 / 接收消息与事件): WeChat POSTs what users send to
// an Official Account, a Mini Program or a WeCom app, and the events of
// their lives, to the URL set in the console, and GETs it once to check it.
// This file describes receivers and messages and WeChat's envelope;
// messages_push.go sends them, messages_control.go serves the control
// endpoints.

// ReceiverKind is what kind of account a push is for; each signs, seals and
// addresses its pushes differently.
type ReceiverKind string

// The kinds of receivers WeChat pushes to.
const (
	// KindOfficialAccount is an Official Account (公众号): XML, plaintext,
	// compatible or safe mode, receiver id its appid.
	KindOfficialAccount ReceiverKind = "official"
	// KindMiniProgram is a Mini Program (小程序): as an Official Account,
	// but XML or JSON.
	KindMiniProgram ReceiverKind = "mini"
	// KindWeCom is a WeCom app (企业微信自建应用): always encrypted, no
	// encrypt_type, receiver id the corp id, the app named by AgentID.
	KindWeCom ReceiverKind = "wecom"
	// KindAuthorizer is an account that authorized a third-party platform:
	// encrypted with the platform's token and key, receiver id the
	// component_appid, the URL the platform's with $APPID$ replaced.
	KindAuthorizer ReceiverKind = "authorizer"
)

// PushMode is the 消息加解密方式 set in the console: whether WeChat
// encrypts pushes.
type PushMode string

// The encryption modes of pushes.
const (
	// ModePlaintext (明文模式): the message as is, `signature` only.
	ModePlaintext PushMode = "plaintext"
	// ModeCompatible (兼容模式): the plaintext fields and `Encrypt` in one
	// body; a plaintext or an encrypted reply is accepted.
	ModeCompatible PushMode = "compatible"
	// ModeSafe (安全模式): only `Encrypt` (and ToUserName); the reply must
	// be encrypted.
	ModeSafe PushMode = "safe"
)

// PushFormat is the data format of pushes; a Mini Program's console offers
// JSON as well as XML.
type PushFormat string

// The data formats of pushes.
const (
	FormatXML  PushFormat = "xml"
	FormatJSON PushFormat = "json"
)

// PushTarget describes a receiver of pushes as WeChat knows it from the
// console: where to push, how, and the secrets it signs and seals with.
type PushTarget struct {
	// URL is the message URL. For KindAuthorizer, "$APPID$" in it is
	// replaced by Account, as WeChat does with a platform's
	// 消息与事件接收URL.
	URL string `json:"url"`
	// Kind of receiver; default KindOfficialAccount.
	Kind ReceiverKind `json:"kind,omitempty"`
	// Mode; default ModeSafe when AESKey is set, else ModePlaintext.
	// WeCom and authorizers are always ModeSafe.
	Mode PushMode `json:"mode,omitempty"`
	// Format; default FormatXML. FormatJSON only for Mini Programs (and
	// authorizers, which may be Mini Programs).
	Format PushFormat `json:"format,omitempty"`
	// Token is the message token (令牌); for authorizers the platform's.
	Token string `json:"token"`
	// AESKey is the 43-character EncodingAESKey; for authorizers the
	// platform's. Needed by the encrypted modes.
	AESKey string `json:"aes_key,omitempty"`
	// ReceiverID is the id sealed in every envelope and expected in every
	// encrypted reply: the appid, the corp id or the component_appid.
	ReceiverID string `json:"receiver_id,omitempty"`
	// Account is the authorizer's appid (KindAuthorizer only).
	Account string `json:"account,omitempty"`
	// OriginalID is the account's original id (gh_…), the ToUserName of
	// its pushes; default one derived from the appid. Unused by WeCom,
	// whose ToUserName is the corp id.
	OriginalID string `json:"original_id,omitempty"`
	// AgentID is the WeCom app's AgentID (KindWeCom; default "1000002").
	AgentID string `json:"agent_id,omitempty"`
}

// encrypted reports whether pushes carry an envelope.
func (t PushTarget) encrypted() bool { return t.Mode != ModePlaintext }

// normalized fills the defaults of t and checks it, so that a mistake in a
// test's set-up is reported as such and not as the receiver's failure.
func (t PushTarget) normalized() (PushTarget, error) {
	if t.Kind == "" {
		t.Kind = KindOfficialAccount
	}
	if t.Format == "" {
		t.Format = FormatXML
	}
	if t.Mode == "" {
		t.Mode = ModePlaintext
		if t.AESKey != "" || t.Kind == KindWeCom || t.Kind == KindAuthorizer {
			t.Mode = ModeSafe
		}
	}
	switch t.Kind {
	case KindOfficialAccount, KindMiniProgram:
	case KindWeCom:
		if t.Mode != ModeSafe {
			return t, fmt.Errorf("a WeCom app's pushes are always encrypted (mode safe), not %q", t.Mode)
		}
		if t.AgentID == "" {
			t.AgentID = "1000002"
		}
	case KindAuthorizer:
		if t.Mode != ModeSafe {
			return t, fmt.Errorf("a platform's pushes are always encrypted (mode safe), not %q", t.Mode)
		}
		if t.Account == "" {
			return t, errors.New("an authorizer target needs Account, the authorizer's appid")
		}
		t.URL = strings.ReplaceAll(t.URL, "$APPID$", t.Account)
	default:
		return t, fmt.Errorf("unknown receiver kind %q (want official, mini, wecom or authorizer)", t.Kind)
	}
	switch t.Mode {
	case ModePlaintext, ModeCompatible, ModeSafe:
	default:
		return t, fmt.Errorf("unknown mode %q (want plaintext, compatible or safe)", t.Mode)
	}
	switch {
	case t.Format != FormatXML && t.Format != FormatJSON:
		return t, fmt.Errorf("unknown format %q (want xml or json)", t.Format)
	case t.Format == FormatJSON && t.Kind != KindMiniProgram && t.Kind != KindAuthorizer:
		return t, fmt.Errorf("only Mini Programs receive JSON pushes, not kind %q", t.Kind)
	}
	if u, err := url.Parse(t.URL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return t, fmt.Errorf("message URL %q is not an http(s) URL", t.URL)
	}
	if t.Token == "" {
		return t, errors.New("the message token is empty")
	}
	if t.encrypted() {
		if _, err := decodeAESKey(t.AESKey); err != nil {
			return t, fmt.Errorf("mode %s: %w", t.Mode, err)
		}
		if t.ReceiverID == "" {
			return t, fmt.Errorf("mode %s: ReceiverID (appid, corp id or component_appid) is empty", t.Mode)
		}
	}
	if t.OriginalID == "" {
		id := t.ReceiverID
		if t.Kind == KindAuthorizer {
			id = t.Account
		}
		sum := sha1.Sum([]byte(id))
		t.OriginalID = "gh_" + hex.EncodeToString(sum[:])[:12]
	}
	return t, nil
}

// toUserName is the ToUserName of t's pushes.
func (t PushTarget) toUserName() string {
	if t.Kind == KindWeCom {
		return t.ReceiverID
	}
	return t.OriginalID
}

// Field is one more field of a message, in the order given: EventKey,
// PicUrl, MediaId, Latitude and the like.
type Field struct {
	Name  string `json:"name"`
	Value string `json:"value"`
	// Number writes the value bare in XML and as a JSON number, as WeChat
	// does with Latitude, Scale, Precision and other numbers.
	Number bool `json:"number,omitempty"`
}

// Message is a message or event as WeChat pushes it. Zero fields are
// filled in by the push: ToUserName from the target, CreateTime with the
// time of the first delivery, AgentID for WeCom, FromUserName with a
// made-up user.
type Message struct {
	ToUserName   string
	FromUserName string // the user's openid (WeCom: userid)
	CreateTime   int64
	MsgType      string // text, image, voice, video, location, link, event ...
	Event        string // events only: subscribe, unsubscribe, SCAN, CLICK ...
	Content      string // text messages
	Fields       []Field
	// MsgID identifies a message across WeChat's re-sends; events have
	// none (0) and are known by FromUserName, CreateTime and Event.
	MsgID   int64
	AgentID string // WeCom only
}

// msgIDs hands out MsgIds: unique in a process, 16 digits as WeChat's
// look, and below 2^53 so that JavaScript receivers read them exactly.
var msgIDs atomic.Int64

func init() {
	n, _ := rand.Int(rand.Reader, big.NewInt(7e15))
	msgIDs.Store(1e15 + n.Int64())
}

// NewMsgID returns a MsgId no other message of this process has, so that
// deduplicating receivers never mistake two test messages for a re-send.
func NewMsgID() int64 { return msgIDs.Add(1) }

// TextMessage is a text message from the user from; it has a fresh MsgId.
func TextMessage(from, content string) Message {
	return Message{FromUserName: from, MsgType: "text", Content: content, MsgID: NewMsgID()}
}

// NewMessage is a message of msgType (image, location, ...) with its
// fields; it has a fresh MsgId.
func NewMessage(from, msgType string, fields ...Field) Message {
	return Message{FromUserName: from, MsgType: msgType, Fields: fields, MsgID: NewMsgID()}
}

// EventMessage is an event (subscribe, CLICK, ...) of the user from, with
// its fields (EventKey, Ticket ...). Events have no MsgId.
func EventMessage(from, event string, fields ...Field) Message {
	return Message{FromUserName: from, MsgType: "event", Event: event, Fields: fields}
}

// Key is what identifies m across re-sends, as a deduplicating receiver
// should see it: its MsgId, or for an event FromUserName, CreateTime and
// Event (and AgentID for WeCom).
func (m Message) Key() string {
	if m.MsgID != 0 {
		return "msg:" + strconv.FormatInt(m.MsgID, 10)
	}
	k := "event:" + m.FromUserName + "|" + strconv.FormatInt(m.CreateTime, 10) + "|" + m.Event
	if m.AgentID != "" {
		k += "|" + m.AgentID
	}
	return k
}

// validate checks what would make an unparseable push.
func (m Message) validate() error {
	if m.MsgType == "" {
		return errors.New("message has no MsgType")
	}
	if m.MsgType == "event" && m.Event == "" {
		return errors.New("event message has no Event")
	}
	for _, f := range m.Fields {
		if !isXMLName(f.Name) {
			return fmt.Errorf("field name %q is not an XML name", f.Name)
		}
		if f.Number && !json.Valid([]byte(f.Value)) {
			return fmt.Errorf("field %s: %q is not a number", f.Name, f.Value)
		}
	}
	if m.AgentID != "" && !isDigits(m.AgentID) {
		return fmt.Errorf("AgentID %q is not a number", m.AgentID)
	}
	return nil
}

func isXMLName(s string) bool {
	for i, c := range s {
		if !(c == '_' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || i > 0 && c >= '0' && c <= '9') {
			return false
		}
	}
	return s != ""
}

func isDigits(s string) bool {
	for _, c := range s {
		if c < '0' || c > '9' {
			return false
		}
	}
	return s != ""
}

// XML is m as WeChat writes it: strings in CDATA, numbers bare, in
// WeChat's order (ToUserName, FromUserName, CreateTime, MsgType, Event,
// Content, the fields, MsgId, AgentID).
func (m Message) XML() []byte {
	var b strings.Builder
	b.WriteString("<xml>")
	writeCDATA(&b, "ToUserName", m.ToUserName)
	writeCDATA(&b, "FromUserName", m.FromUserName)
	writeBare(&b, "CreateTime", strconv.FormatInt(m.CreateTime, 10))
	writeCDATA(&b, "MsgType", m.MsgType)
	if m.Event != "" {
		writeCDATA(&b, "Event", m.Event)
	}
	if m.Content != "" || m.MsgType == "text" {
		writeCDATA(&b, "Content", m.Content)
	}
	for _, f := range m.Fields {
		if f.Number {
			writeBare(&b, f.Name, f.Value)
		} else {
			writeCDATA(&b, f.Name, f.Value)
		}
	}
	if m.MsgID != 0 {
		writeBare(&b, "MsgId", strconv.FormatInt(m.MsgID, 10))
	}
	if m.AgentID != "" {
		writeBare(&b, "AgentID", m.AgentID)
	}
	b.WriteString("</xml>")
	return []byte(b.String())
}

// JSON is m as WeChat writes a Mini Program's JSON push: the XML's fields
// under the same names, numbers as numbers.
func (m Message) JSON() []byte {
	var b strings.Builder
	b.WriteString("{")
	writeJSONField(&b, "ToUserName", jsonString(m.ToUserName))
	writeJSONField(&b, "FromUserName", jsonString(m.FromUserName))
	writeJSONField(&b, "CreateTime", strconv.FormatInt(m.CreateTime, 10))
	writeJSONField(&b, "MsgType", jsonString(m.MsgType))
	if m.Event != "" {
		writeJSONField(&b, "Event", jsonString(m.Event))
	}
	if m.Content != "" || m.MsgType == "text" {
		writeJSONField(&b, "Content", jsonString(m.Content))
	}
	for _, f := range m.Fields {
		if f.Number {
			writeJSONField(&b, f.Name, f.Value)
		} else {
			writeJSONField(&b, f.Name, jsonString(f.Value))
		}
	}
	if m.MsgID != 0 {
		writeJSONField(&b, "MsgId", strconv.FormatInt(m.MsgID, 10))
	}
	if m.AgentID != "" {
		writeJSONField(&b, "AgentID", m.AgentID)
	}
	b.WriteString("}")
	return []byte(b.String())
}

// encode is m in format f.
func (m Message) encode(f PushFormat) []byte {
	if f == FormatJSON {
		return m.JSON()
	}
	return m.XML()
}

// writeCDATA writes <name><![CDATA[value]]></name>; a "]]>" in value is
// split across two sections, as it must be.
func writeCDATA(b *strings.Builder, name, value string) {
	b.WriteString("<" + name + "><![CDATA[")
	b.WriteString(strings.ReplaceAll(value, "]]>", "]]]]><![CDATA[>"))
	b.WriteString("]]></" + name + ">")
}

func writeBare(b *strings.Builder, name, value string) {
	b.WriteString("<" + name + ">" + value + "</" + name + ">")
}

func writeJSONField(b *strings.Builder, name, raw string) {
	if b.Len() > 1 {
		b.WriteString(",")
	}
	b.WriteString(jsonString(name) + ":" + raw)
}

// jsonString is s as a JSON string, <, > and & left as they are (WeChat
// does not escape them).
func jsonString(s string) string {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(s)
	return strings.TrimSuffix(buf.String(), "\n")
}

// WeChatSignature is the SHA-1, in lower-case hex, of parts sorted and
// joined: `signature` over token, timestamp and nonce; `msg_signature` and
// MsgSignature with the Encrypt (or WeCom's echostr) as well. Exported so
// that tests can sign or check by hand.
func WeChatSignature(parts ...string) string {
	sorted := append([]string(nil), parts...)
	sort.Strings(sorted)
	sum := sha1.Sum([]byte(strings.Join(sorted, "")))
	return hex.EncodeToString(sum[:])
}

// decodeAESKey is the 32-byte key of a 43-character EncodingAESKey.
func decodeAESKey(aesKey string) ([]byte, error) {
	if len(aesKey) != 43 {
		return nil, fmt.Errorf("EncodingAESKey is %d characters, want 43", len(aesKey))
	}
	key, err := base64.StdEncoding.DecodeString(aesKey + "=")
	if err != nil || len(key) != 32 {
		return nil, errors.New("EncodingAESKey is not 43 characters of base64")
	}
	return key, nil
}

// OpenSealed opens an envelope made as SealMessage makes it (WeChat's
// AES-256-CBC, IV the key's first 16 bytes, PKCS#7 to 32 bytes): the
// message and the receiver id sealed with it. Exported so that tests can
// read what a receiver answered or forwarded.
func OpenSealed(aesKey, encrypted string) (msg []byte, receiverID string, err error) {
	key, err := decodeAESKey(aesKey)
	if err != nil {
		return nil, "", err
	}
	data, err := base64.StdEncoding.DecodeString(encrypted)
	if err != nil {
		return nil, "", fmt.Errorf("the ciphertext (Encrypt) is not base64: %w", err)
	}
	if len(data) == 0 || len(data)%aes.BlockSize != 0 {
		return nil, "", fmt.Errorf("ciphertext of %d bytes is not whole AES blocks", len(data))
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, "", fmt.Errorf("AES key: %w", err)
	}
	plain := make([]byte, len(data))
	cipher.NewCBCDecrypter(block, key[:16]).CryptBlocks(plain, data)
	pad := int(plain[len(plain)-1])
	if pad < 1 || pad > 32 || pad > len(plain) || !bytes.Equal(plain[len(plain)-pad:], bytes.Repeat([]byte{byte(pad)}, pad)) {
		return nil, "", errors.New("bad PKCS#7 padding (wrong key or tampered ciphertext)")
	}
	plain = plain[:len(plain)-pad]
	if len(plain) < 20 {
		return nil, "", errors.New("decrypted envelope too short")
	}
	n := binary.BigEndian.Uint32(plain[16:20])
	if uint64(n) > uint64(len(plain)-20) {
		return nil, "", fmt.Errorf("decrypted length %d exceeds the envelope", n)
	}
	return plain[20 : 20+n], string(plain[20+n:]), nil
}

// pushNonce is a nonce as WeChat's look: a number of 9 or 10 digits.
func pushNonce() string {
	n, _ := rand.Int(rand.Reader, big.NewInt(9e9))
	return strconv.FormatInt(1e8+n.Int64(), 10)
}

// pushEchostr is a URL check's random string: 19 digits, as WeChat's.
func pushEchostr() string {
	n, _ := rand.Int(rand.Reader, big.NewInt(8e18))
	return strconv.FormatInt(1e18+n.Int64(), 10)
}

// Forgery makes a push or URL check wrong in one way, for negative tests:
// a correct receiver must refuse it (403) and forward nothing.
type Forgery struct {
	// Token signs with this token instead of the target's.
	Token string `json:"token,omitempty"`
	// AESKey seals with this EncodingAESKey instead of the target's.
	AESKey string `json:"aes_key,omitempty"`
	// SealFor writes this receiver id in the envelope instead of the
	// target's (a push meant for another account).
	SealFor string `json:"seal_for,omitempty"`
	// FlipCiphertext changes one byte of the ciphertext after signing
	// (still valid base64), so msg_signature no longer matches.
	FlipCiphertext bool `json:"flip_ciphertext,omitempty"`
	// Age puts the timestamp this far in the past (negative: the future),
	// as a captured push replayed later would carry.
	Age time.Duration `json:"-"`
}

// flipCiphertext changes a byte in the middle of a base64 ciphertext.
func flipCiphertext(encrypted string) string {
	data, err := base64.StdEncoding.DecodeString(encrypted)
	if err != nil || len(data) == 0 {
		return encrypted
	}
	data[len(data)/2] ^= 0x01
	return base64.StdEncoding.EncodeToString(data)
}

// rawQuery joins key, value pairs in the order given, as WeChat orders
// its parameters (url.Values would sort them).
func rawQuery(pairs ...string) string {
	var parts []string
	for i := 0; i+1 < len(pairs); i += 2 {
		parts = append(parts, pairs[i]+"="+url.QueryEscape(pairs[i+1]))
	}
	return strings.Join(parts, "&")
}

// withQuery appends a raw query to a URL that may have one.
func withQuery(u, q string) string {
	if strings.Contains(u, "?") {
		return u + "&" + q
	}
	return u + "?" + q
}
