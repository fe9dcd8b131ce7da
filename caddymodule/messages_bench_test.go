package caddymodule

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"

	"github.com/caddy-wechat/caddy-wechat/caddymodule/credential"
	"github.com/caddy-wechat/caddy-wechat/caddymodule/wxcrypt"
)

const (
	benchPushToken  = "benchpushtoken"
	benchPushAESKey = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"
	benchPushAppID  = "wxbenchpush00001"
)

// BenchmarkMessagePush is what wechat_messages adds to a push, storage
// aside: a safe-mode push (every one a new message) verified, opened,
// de-duplicated in memory and handed to a stub app answering "success".
// BenchmarkMessagePlain is the same plaintext POSTed to the stub alone.
func BenchmarkMessagePush(b *testing.B) {
	r, err := credential.NewMessageReceiver(credential.OfficialAccount, benchPushAppID, benchPushToken, benchPushAESKey)
	if err != nil {
		b.Fatal(err)
	}
	m := &Messages{receiver: r, stats: messageStatsOf(r), logger: zap.NewNop(), app: &App{creds: credential.NewRegistry(nil).NewConfig(nil, zap.NewNop())}}
	next := upstream(func(*http.Request) []byte { return []byte("success") }, "text/plain")
	now := time.Now()
	ts := strconv.FormatInt(now.Unix(), 10)
	// Pushes are sealed before the clock starts: WeChat's work, not ours.
	const batch = 4096
	bodies := make([][]byte, batch)
	sigs := make([]string, batch)
	next0 := 0
	seal := func(base int) {
		for i := range batch {
			msg := fmt.Sprintf("<xml><ToUserName><![CDATA[gh_bench]]></ToUserName><FromUserName><![CDATA[o6_bmjrPTlm6_2sgVt7hMZOPfL2M]]></FromUserName><CreateTime>%d</CreateTime><MsgType><![CDATA[text]]></MsgType><Content><![CDATA[hello, this is a message of the benchmark]]></Content><MsgId>%d</MsgId></xml>", now.Unix(), 24000000000000000+base+i)
			enc, sig, err := r.Cipher.Seal([]byte(msg), ts, "nonce")
			if err != nil {
				b.Fatal(err)
			}
			bodies[i] = []byte("<xml><ToUserName><![CDATA[gh_bench]]></ToUserName><Encrypt><![CDATA[" + enc + "]]></Encrypt></xml>")
			sigs[i] = sig
		}
	}
	_ = wxcrypt.Signature
	w := &discardWriter{header: http.Header{}}
	body := bytes.NewReader(nil)
	b.ReportAllocs()
	n := 0
	seal(0)
	b.ResetTimer()
	for b.Loop() {
		if next0 == batch {
			b.StopTimer()
			n += batch
			seal(n)
			next0 = 0
			b.StartTimer()
		}
		i := next0
		next0++
		req, _ := http.NewRequestWithContext(context.WithValue(context.Background(), caddyhttp.VarsCtxKey, map[string]any{}), http.MethodPost,
			"http://127.0.0.1/?signature=x&timestamp="+ts+"&nonce=nonce&openid=o6_bmjrPTlm6_2sgVt7hMZOPfL2M&encrypt_type=aes&msg_signature="+sigs[i], nil)
		body.Reset(bodies[i])
		req.Body = io.NopCloser(body)
		req.ContentLength = int64(len(bodies[i]))
		w.reset()
		if err := m.ServeHTTP(w, req, next); err != nil || w.status != http.StatusOK || string(w.head[:7]) != "success" {
			b.Fatalf("status %d, %q, %v", w.status, w.head[:], err)
		}
	}
}
