package main

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
	"encoding/xml"
	"errors"
	"flag"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// WeChat's message pushes as the benchmark makes them, and the app that
// receives them. The bench module does not import the main module (its
// go.mod has no replace to it, so that neither drags in the other's
// dependencies), so the envelope is written here from WeChat's
// documentation, as the emulator's is; bench_test.go checks that it opens
// what the emulator seals, and every push of the scenario is opened by
// wechat_messages, which refuses a wrong one.

// The app whose pushes scenario (g) sends: an Official Account in safe
// mode.
const (
	pushAppID      = "wxbenchpush0000001"
	pushToken      = "bench_push_token"
	pushAESKey     = "BenchPushEncodingAESKey0123456789abcdefghij"
	pushOriginalID = "gh_benchpush0001"
	pushOpenID     = "o6_bmjrPTlm6_2sgVt7hMZOPfL2M"
	// replyParam in a push's query asks the app for a passive reply: the
	// query (but for WeChat's signature parameters) reaches the app.
	replyParam = "bench_reply"
)

// appReply is the app's passive reply, when asked for one: a text
// message to the user, in plaintext; wechat_messages seals it.
var appReply = []byte("<xml><ToUserName><![CDATA[" + pushOpenID + "]]></ToUserName><FromUserName><![CDATA[" + pushOriginalID +
	"]]></FromUserName><CreateTime>1700000000</CreateTime><MsgType><![CDATA[text]]></MsgType><Content><![CDATA[Got it, thank you.]]></Content></xml>")

// pushKeys are an app's Token and EncodingAESKey, and its receiver id
// (the appid sealed in every envelope).
type pushKeys struct {
	token, receiverID string
	key               []byte // 32 bytes; the IV is its first 16
	block             cipher.Block
}

func newPushKeys(token, encodingAESKey, receiverID string) (*pushKeys, error) {
	if len(encodingAESKey) != 43 {
		return nil, fmt.Errorf("EncodingAESKey is %d characters, want 43", len(encodingAESKey))
	}
	key, err := base64.StdEncoding.DecodeString(encodingAESKey + "=")
	if err != nil || len(key) != 32 {
		return nil, errors.New("EncodingAESKey is not 43 characters of base64")
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	return &pushKeys{token: token, receiverID: receiverID, key: key, block: block}, nil
}

// pushSignature is WeChat's signature: the hex SHA-1 of the parts sorted
// and joined (token, timestamp, nonce; and the Encrypt for msg_signature).
func pushSignature(parts ...string) string {
	sorted := slices.Clone(parts)
	slices.Sort(sorted)
	sum := sha1.Sum([]byte(strings.Join(sorted, "")))
	return hex.EncodeToString(sum[:])
}

// seal is WeChat's envelope of msg: 16 random bytes, msg's length (4
// bytes, big-endian), msg, the receiver id, PKCS#7 padding to a multiple
// of 32 bytes, AES-256-CBC with the key's first 16 bytes as IV, base64.
func (k *pushKeys) seal(msg []byte) string {
	plain := make([]byte, 20, 20+len(msg)+len(k.receiverID)+32)
	_, _ = rand.Read(plain[:16])
	binary.BigEndian.PutUint32(plain[16:20], uint32(len(msg)))
	plain = append(plain, msg...)
	plain = append(plain, k.receiverID...)
	pad := 32 - len(plain)%32
	plain = append(plain, bytes.Repeat([]byte{byte(pad)}, pad)...)
	cipher.NewCBCEncrypter(k.block, k.key[:aes.BlockSize]).CryptBlocks(plain, plain)
	return base64.StdEncoding.EncodeToString(plain)
}

// open reads an envelope: the message and the receiver id sealed with it.
func (k *pushKeys) open(encrypted string) (msg []byte, receiverID string, err error) {
	data, err := base64.StdEncoding.DecodeString(encrypted)
	if err != nil {
		return nil, "", fmt.Errorf("the ciphertext is not base64: %w", err)
	}
	if len(data) == 0 || len(data)%aes.BlockSize != 0 {
		return nil, "", fmt.Errorf("a ciphertext of %d bytes is not whole AES blocks", len(data))
	}
	cipher.NewCBCDecrypter(k.block, k.key[:aes.BlockSize]).CryptBlocks(data, data)
	pad := int(data[len(data)-1])
	if pad < 1 || pad > 32 || pad > len(data) || !bytes.Equal(data[len(data)-pad:], bytes.Repeat([]byte{byte(pad)}, pad)) {
		return nil, "", errors.New("bad PKCS#7 padding")
	}
	data = data[:len(data)-pad]
	if len(data) < 20 {
		return nil, "", errors.New("the envelope is too short")
	}
	n := binary.BigEndian.Uint32(data[16:20])
	if uint64(n) > uint64(len(data)-20) {
		return nil, "", errors.New("the message's length runs past the envelope")
	}
	return data[20 : 20+n], string(data[20+n:]), nil
}

// textMessage is a user's text message to the app, as WeChat writes it.
func textMessage(createTime, msgID int64) []byte {
	b := make([]byte, 0, 320)
	b = append(b, "<xml><ToUserName><![CDATA["+pushOriginalID+"]]></ToUserName><FromUserName><![CDATA["+pushOpenID+"]]></FromUserName><CreateTime>"...)
	b = strconv.AppendInt(b, createTime, 10)
	b = append(b, "</CreateTime><MsgType><![CDATA[text]]></MsgType><Content><![CDATA[Hello! Where is my order? It has been three days.]]></Content><MsgId>"...)
	b = strconv.AppendInt(b, msgID, 10)
	return append(b, "</MsgId></xml>"...)
}

// pushRequest is the query and body of WeChat's push of plain in safe
// mode, signed at now: signature (token, timestamp, nonce), the openid,
// encrypt_type=aes, msg_signature (with the Encrypt), and the envelope
// in <xml><ToUserName><Encrypt>.
func (k *pushKeys) pushRequest(plain []byte, now time.Time) (query string, body []byte) {
	timestamp := strconv.FormatInt(now.Unix(), 10)
	nonce := strconv.FormatInt(1e8+mrand.Int64N(9e9), 10)
	encrypted := k.seal(plain)
	query = "signature=" + pushSignature(k.token, timestamp, nonce) + "&timestamp=" + timestamp + "&nonce=" + nonce +
		"&openid=" + pushOpenID + "&encrypt_type=aes&msg_signature=" + pushSignature(k.token, timestamp, nonce, encrypted)
	body = make([]byte, 0, len(encrypted)+96)
	body = append(body, "<xml><ToUserName><![CDATA["+pushOriginalID+"]]></ToUserName><Encrypt><![CDATA["...)
	body = append(body, encrypted...)
	return query, append(body, "]]></Encrypt></xml>"...)
}

// openReply checks a sealed passive reply as WeChat does (MsgSignature
// over the token, TimeStamp, Nonce and Encrypt; the receiver id) and
// returns its plaintext.
func (k *pushKeys) openReply(body []byte) ([]byte, error) {
	var env struct {
		Encrypt      string `xml:"Encrypt"`
		MsgSignature string `xml:"MsgSignature"`
		TimeStamp    string `xml:"TimeStamp"`
		Nonce        string `xml:"Nonce"`
	}
	if err := xml.Unmarshal(body, &env); err != nil {
		return nil, fmt.Errorf("not a sealed reply: %w", err)
	}
	if env.Encrypt == "" || env.MsgSignature != pushSignature(k.token, env.TimeStamp, env.Nonce, env.Encrypt) {
		return nil, errors.New("the reply's MsgSignature does not match")
	}
	msg, receiver, err := k.open(env.Encrypt)
	if err != nil {
		return nil, err
	}
	if receiver != k.receiverID {
		return nil, fmt.Errorf("the reply is sealed for %q", receiver)
	}
	return msg, nil
}

// The app: what an app server behind the proxy would be, reduced to
// counting. It answers every message "success", or appReply when the
// query asks for it, and counts requests, distinct MsgIds, duplicates
// and requests that are not a plaintext message as WeChat wrote it.

// appCounts are the app's counts, GET /_counts.
type appCounts struct {
	Requests   int64 `json:"requests"`
	Distinct   int64 `json:"distinct"`
	Duplicates int64 `json:"duplicates"`
	Malformed  int64 `json:"malformed"`
}

func (c appCounts) since(before appCounts) appCounts {
	return appCounts{Requests: c.Requests - before.Requests, Distinct: c.Distinct - before.Distinct,
		Duplicates: c.Duplicates - before.Duplicates, Malformed: c.Malformed - before.Malformed}
}

type pushApp struct {
	mu     sync.Mutex
	seen   map[int64]struct{}
	counts appCounts
}

// pushParams are WeChat's signature parameters, which the app must not
// get.
var pushParams = []string{"signature", "msg_signature", "timestamp", "nonce", "encrypt_type"}

func (a *pushApp) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path == "/_counts" {
		a.mu.Lock()
		c := a.counts
		a.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(c)
		return
	}
	body, _ := io.ReadAll(r.Body)
	q := r.URL.Query()
	id, ok := msgIDOf(body)
	ok = ok && r.Method == http.MethodPost && r.Header.Get("X-WeChat-AppID") == pushAppID && q.Get("openid") == pushOpenID
	for _, p := range pushParams {
		ok = ok && !q.Has(p)
	}
	a.mu.Lock()
	a.counts.Requests++
	switch _, dup := a.seen[id]; {
	case !ok:
		a.counts.Malformed++
	case dup:
		a.counts.Duplicates++
	default:
		a.seen[id] = struct{}{}
		a.counts.Distinct++
	}
	a.mu.Unlock()
	if q.Has(replyParam) {
		w.Header().Set("Content-Type", "text/xml")
		_, _ = w.Write(appReply)
		return
	}
	w.Header().Set("Content-Type", "text/plain")
	_, _ = io.WriteString(w, "success")
}

// msgIDOf finds the MsgId of a plaintext message as textMessage writes
// it.
func msgIDOf(body []byte) (int64, bool) {
	if !bytes.HasPrefix(body, []byte("<xml><ToUserName>")) || !bytes.HasSuffix(body, []byte("</MsgId></xml>")) {
		return 0, false
	}
	i := bytes.LastIndex(body, []byte("<MsgId>"))
	if i < 0 {
		return 0, false
	}
	id, err := strconv.ParseInt(string(body[i+len("<MsgId>"):len(body)-len("</MsgId></xml>")]), 10, 64)
	return id, err == nil
}

// serveMessagesApp is the "messages-app" subcommand: it serves until
// killed.
func serveMessagesApp(args []string) error {
	fs := flag.NewFlagSet("messages-app", flag.ExitOnError)
	listen := fs.String("listen", "127.0.0.1:0", "address")
	if err := fs.Parse(args); err != nil {
		return err
	}
	l, err := net.Listen("tcp", *listen)
	if err != nil {
		return fmt.Errorf("messages-app: %w", err)
	}
	fmt.Fprintln(os.Stdout, "listening", l.Addr())
	return http.Serve(l, &pushApp{seen: map[int64]struct{}{}})
}

// readAppCounts asks the app for its counts.
func readAppCounts(base string) (appCounts, error) {
	var c appCounts
	resp, err := controlClient.Get(base + "/_counts")
	if err != nil {
		return c, fmt.Errorf("the app's counts: %w", err)
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(&c); err != nil {
		return c, fmt.Errorf("the app's counts: %w", err)
	}
	return c, nil
}

// pushURL is base with query.
func pushURL(base, query string) string { return base + "/?" + query }

// plainQuery is what the app's query is, through wechat_messages or not:
// the openid and, for a passive reply, replyParam (sorted as
// url.Values.Encode sorts them).
func plainQuery(reply bool) string {
	q := url.Values{"openid": {pushOpenID}}
	if reply {
		q.Set(replyParam, "1")
	}
	return q.Encode()
}
