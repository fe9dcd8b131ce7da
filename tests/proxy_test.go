package tests

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caddy-wechat/caddy-wechat/emulator"
)

func sha(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

func TestInjectsTokenAndReplacesTheClients(t *testing.T) {
	apis(t, func(t *testing.T, api string) {
		w := startWeChat(t, emulator.Config{})
		c := startCaddy(t, w, w.tokenBlock(api))

		a := get(t, c.url("/cgi-bin/user/info?openid=o%2F1&access_token=bogus&lang=zh_CN&ACCESS_TOKEN=x"))
		if a.Errcode != 0 || a.TokenParams != 1 || a.AppID != w.AppID {
			t.Fatalf("answer %+v", a.Echo)
		}
		if a.Query != "openid=o%2F1&lang=zh_CN" {
			t.Fatalf("other parameters changed: %q", a.Query)
		}
		if got := a.Header.Values("Content-Type"); len(got) != 1 || got[0] != "application/json; encoding=utf-8" {
			t.Fatalf("content type %q", got)
		}

		body := []byte(`{"touser":"o1","msgtype":"text","text":{"content":"你好"}}`)
		req, _ := http.NewRequest(http.MethodPut, c.url("/cgi-bin/message/custom/send"), bytes.NewReader(body))
		req.Header.Set("Content-Type", "application/json; charset=utf-8")
		a = do(t, req)
		if a.Errcode != 0 || a.Method != http.MethodPut || a.BodySHA256 != sha(body) || a.ContentType != "application/json; charset=utf-8" {
			t.Fatalf("PUT answer %+v", a.Echo)
		}
	})
}

func TestRejectedTokenIsRefreshedAndBodyReplayedByteIdentical(t *testing.T) {
	apis(t, func(t *testing.T, api string) {
		w, c := startProxy(t, emulator.Config{}, api)

		// JSON.
		w.Revoke(w.AppID)
		before := w.Stats()
		jsonBody := []byte(`{"touser":"o1","template_id":"t","data":{"k":{"value":"v"}}}`)
		a := post(t, c.url("/cgi-bin/message/template/send?x=1"), "application/json", jsonBody)
		if a.Errcode != 0 || a.BodySHA256 != sha(jsonBody) || a.Query != "x=1" {
			t.Fatalf("JSON replay: %+v", a.Echo)
		}
		after := w.Stats()
		if after.APICalls-before.APICalls != 2 || after.APIRejected[40001]-before.APIRejected[40001] != 1 {
			t.Fatalf("want one rejected and one replayed call, emulator saw %+v then %+v", before, after)
		}
		if n := after.Issued() - before.Issued(); n != 1 {
			t.Fatalf("%d tokens fetched for one rejection", n)
		}
		if got := a.Header.Values("Content-Type"); len(got) != 1 {
			t.Fatalf("headers doubled by the retry: Content-Type %q", got)
		}

		// Multipart upload, 1 MiB, as media/upload sends it.
		var mp bytes.Buffer
		mw := multipart.NewWriter(&mp)
		part, _ := mw.CreateFormFile("media", "photo.jpg")
		file := make([]byte, 1<<20)
		_, _ = rand.Read(file)
		_, _ = part.Write(file)
		_ = mw.Close()
		w.Revoke(w.AppID)
		a = post(t, c.url("/cgi-bin/media/upload?type=image"), mw.FormDataContentType(), mp.Bytes())
		if a.Errcode != 0 || a.BodySHA256 != sha(mp.Bytes()) || a.ContentType != mw.FormDataContentType() {
			t.Fatalf("multipart replay: errcode %d, %d bytes", a.Errcode, a.BodyBytes)
		}

		// Chunked upload (no Content-Length).
		w.Revoke(w.AppID)
		req, _ := http.NewRequest(http.MethodPost, c.url("/cgi-bin/material/add_news"), io.MultiReader(bytes.NewReader(jsonBody)))
		req.ContentLength = -1
		a = do(t, req)
		if a.Errcode != 0 || a.BodySHA256 != sha(jsonBody) {
			t.Fatalf("chunked replay: %+v", a.Echo)
		}
	})
}

func TestConcurrentRejectionsCauseOneFetch(t *testing.T) {
	apis(t, func(t *testing.T, api string) {
		w, c := startProxy(t, emulator.Config{}, api)
		w.Revoke(w.AppID)
		before := w.issued()

		const n = 200
		var wg sync.WaitGroup
		errs := make(chan string, n)
		for i := range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				body := []byte(fmt.Sprintf(`{"n":%d}`, i))
				resp, err := client.Post(c.url("/cgi-bin/message/custom/send"), "application/json", bytes.NewReader(body))
				if err != nil {
					errs <- err.Error()
					return
				}
				defer resp.Body.Close()
				raw, _ := io.ReadAll(resp.Body)
				if !strings.Contains(string(raw), `"errcode":0,`) || !strings.Contains(string(raw), sha(body)) {
					errs <- string(raw)
				}
			}()
		}
		wg.Wait()
		close(errs)
		for e := range errs {
			t.Errorf("a request failed: %s", e)
		}
		if got := w.issued() - before; got != 1 {
			t.Fatalf("%d concurrent rejections caused %d fetches, want 1", n, got)
		}
	})
}

func TestEveryRequestRejectedIsBounded(t *testing.T) {
	w, c := startProxy(t, emulator.Config{}, "classic")
	w.SetFaults(emulator.Faults{RejectAll: true})
	before := w.Stats()
	const n = 40
	var wg sync.WaitGroup
	var mu sync.Mutex
	codes := map[int]int{}
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			a := post(t, c.url("/cgi-bin/message/custom/send"), "application/json", []byte(`{}`))
			mu.Lock()
			codes[a.Errcode]++
			mu.Unlock()
		}()
	}
	wg.Wait()
	if codes[40001] != n {
		t.Fatalf("clients got errcodes %v, want WeChat's 40001 for all %d", codes, n)
	}
	after := w.Stats()
	if calls := after.APICalls - before.APICalls; calls > 2*n || calls < n {
		t.Fatalf("%d upstream attempts for %d requests", calls, n)
	}
	// The refresh burst (3) and nothing more within a minute.
	if fetched := after.Issued() - before.Issued(); fetched > 3 {
		t.Fatalf("%d fetches while every token is rejected", fetched)
	}
}

// load sends requests from a few clients until stop and counts answers that
// are not errcode 0.
func load(t *testing.T, c *caddy, workers int, until time.Time) (ok int, failed []string) {
	var mu sync.Mutex
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(until) {
				line := loadRequest(client, c, false)
				mu.Lock()
				if line == "" {
					ok++
				} else {
					failed = append(failed, line)
				}
				mu.Unlock()
				time.Sleep(5 * time.Millisecond)
			}
		}()
	}
	wg.Wait()
	return ok, failed
}

// loadRequest makes one GET through c and says why it failed, or "" when
// WeChat's success came back. With retryDropped, a request whose
// connection broke without an answer is sent once more, as GET clients do.
func loadRequest(cl *http.Client, c *caddy, retryDropped bool) string {
	resp, err := cl.Get(c.url("/cgi-bin/user/info?openid=o1"))
	if err != nil && retryDropped {
		resp, err = cl.Get(c.url("/cgi-bin/user/info?openid=o1"))
	}
	if err != nil {
		return err.Error()
	}
	raw, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.HasPrefix(string(raw), `{"errcode":0,`) {
		return string(raw)
	}
	return ""
}

// loadFleet runs load against every instance at once.
func loadFleet(t *testing.T, fleet []*caddy, until time.Time) (ok int, failed []string) {
	var wg sync.WaitGroup
	var mu sync.Mutex
	for _, c := range fleet {
		wg.Add(1)
		go func() {
			defer wg.Done()
			n, f := load(t, c, 2, until)
			mu.Lock()
			ok += n
			failed = append(failed, f...)
			mu.Unlock()
		}()
	}
	wg.Wait()
	return ok, failed
}

func TestProactiveRenewalAcrossShortLifetimes(t *testing.T) {
	apis(t, func(t *testing.T, api string) {
		w := startWeChat(t, emulator.Config{TokenTTL: 3 * time.Second, Overlap: time.Second, StableWindow: time.Second})
		c := startCaddy(t, w, w.tokenBlock(api, "refresh_ahead 1s", "min_token_lifetime 1s"))
		ok, failed := load(t, c, 4, time.Now().Add(10*time.Second))
		if len(failed) > 0 {
			t.Fatalf("%d of %d requests failed across renewals, first: %s", len(failed), ok+len(failed), failed[0])
		}
		st := w.Stats()
		// A renewal every 2 s: about 5 in 10 s, plus the first token.
		if n := st.Issued(); n < 4 || n > 8 {
			t.Fatalf("%d tokens issued in 10 s of 3 s lifetimes", n)
		}
		// Renewed before expiry means WeChat never saw an expired or
		// replaced token: a proxy that renewed only on 42001 and retried
		// would pass the checks above.
		if rejected := st.APIRejected[40001] + st.APIRejected[42001]; rejected != 0 {
			t.Fatalf("%d of %d requests reached WeChat with a token it rejected", rejected, ok)
		}
	})
}

func TestTokenEndpointOutageWhileTokenValid(t *testing.T) {
	w := startWeChat(t, emulator.Config{TokenTTL: 8 * time.Second, Overlap: time.Second})
	c := startCaddy(t, w, w.tokenBlock("classic", "refresh_ahead 4s"))
	start := time.Now()
	if a := get(t, c.url("/cgi-bin/get_api_domain_ip")); a.Errcode != 0 {
		t.Fatalf("warm-up: %+v", a.Echo)
	}
	w.SetFaults(emulator.Faults{TokenEndpoint: emulator.FaultBusy})
	before := w.Stats().TokenCalls
	// Renewal is due at 4 s and fails until the fault ends at 6.5 s; the
	// token lasts until 8 s.
	if _, failed := load(t, c, 2, start.Add(6500*time.Millisecond)); len(failed) > 0 {
		t.Fatalf("%d requests failed during the outage, first: %s", len(failed), failed[0])
	}
	attempts := w.Stats().TokenCalls - before
	if attempts < 1 || attempts > 6 {
		t.Fatalf("%d token calls during a 2.5 s outage", attempts)
	}
	w.SetFaults(emulator.Faults{})
	if _, failed := load(t, c, 2, start.Add(11*time.Second)); len(failed) > 0 {
		t.Fatalf("%d requests failed after the outage, first: %s", len(failed), failed[0])
	}
	if n := w.Stats().ClassicIssued; n < 2 {
		t.Fatalf("no renewal after the outage (%d tokens)", n)
	}
	// The token served through the outage and was replaced before it
	// expired: WeChat rejected nothing.
	if st := w.Stats(); st.APIRejected[40001]+st.APIRejected[42001] != 0 {
		t.Fatalf("WeChat rejected %v", st.APIRejected)
	}
}

func TestBadSecretAnswers503AtOnce(t *testing.T) {
	w := startWeChat(t, emulator.Config{})
	const wrong = "wrong-secret-value-0123456789"
	site := strings.Replace(w.tokenBlock("stable"), "{env.WX_IT_SECRET}", wrong, 1)
	c := startCaddy(t, w, site)
	c.secrets = append(c.secrets, wrong)
	for range 3 {
		start := time.Now()
		a := get(t, c.url("/cgi-bin/user/info?openid=o1"))
		// At once: well inside the default 10 s fetch_timeout that a
		// request would wait for a fetch under way.
		if took := time.Since(start); took > 5*time.Second {
			t.Fatalf("the 503 took %s", took.Round(time.Millisecond))
		}
		if strings.Contains(a.Raw, wrong) {
			t.Fatal("the 503 reveals the secret")
		}
		if a.Status != http.StatusServiceUnavailable || a.Errcode != -1 || !strings.HasPrefix(a.Errmsg, "wechat_token: ") {
			t.Fatalf("answer %d %s", a.Status, a.Raw)
		}
		if !strings.Contains(a.Errmsg, "40125") || !strings.Contains(a.Errmsg, "invalid AppSecret") {
			t.Fatalf("errmsg does not say why: %s", a.Errmsg)
		}
	}
	if n := w.Stats().APICalls; n != 0 {
		t.Fatalf("%d requests forwarded without a token", n)
	}
}

func TestReloadKeepsTokenAndUnloadStopsRenewal(t *testing.T) {
	w, c := startProxy(t, emulator.Config{TokenTTL: 4 * time.Second, Overlap: time.Second}, "classic", "min_token_lifetime 1s")
	issued := w.issued()

	c.reload(t, w.tokenBlock("classic", "min_token_lifetime 1s")+"\n\theader X-Reloaded yes")
	a := get(t, c.url("/cgi-bin/get_api_domain_ip"))
	if a.Errcode != 0 || a.Header.Get("X-Reloaded") != "yes" {
		t.Fatalf("after reload: %+v %v", a.Echo, a.Header)
	}
	if n := w.issued(); n != issued {
		t.Fatalf("reload fetched %d new tokens", n-issued)
	}

	c.reload(t, `respond "no wechat here"`)
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(c.logs.String(), "token manager stopped") {
		if time.Now().After(deadline) {
			t.Fatal("manager not stopped after its last config was unloaded")
		}
		time.Sleep(20 * time.Millisecond)
	}
	// Nothing fetches any more: issuance stays flat past two token lives,
	// where a running loop would have renewed twice.
	stopped := w.issued()
	time.Sleep(8 * time.Second)
	if n := w.issued(); n != stopped {
		t.Fatalf("%d tokens fetched after the app's last config was unloaded", n-stopped)
	}
}

func TestLargeDownloadStreamsWithBoundedMemory(t *testing.T) {
	w := startWeChat(t, emulator.Config{})
	c := startCaddy(t, w, w.tokenBlock("stable"))
	download := func(size int64) {
		resp, err := client.Get(c.url(fmt.Sprintf("/cgi-bin/media/get?media_id=bytes-%d", size)))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		h := sha256.New()
		n, err := io.Copy(h, resp.Body)
		if err != nil || n != size {
			t.Fatalf("downloaded %d of %d bytes: %v", n, size, err)
		}
		want := sha256.New()
		_, _ = io.Copy(want, io.LimitReader(emulator.MediaPattern(), size))
		if !bytes.Equal(h.Sum(nil), want.Sum(nil)) {
			t.Fatal("downloaded bytes differ from the media")
		}
	}
	download(4 << 20) // warm up buffers and connections
	_, peakBefore := c.rss(t)
	download(64 << 20)
	_, peakAfter := c.rss(t)
	if growth := peakAfter - peakBefore; growth > 24<<20 {
		t.Fatalf("peak RSS grew by %d MiB for a 64 MiB download", growth>>20)
	}
}

func TestBodyOverReplayLimitStreamsAndIsNotRetried(t *testing.T) {
	w := startWeChat(t, emulator.Config{})
	c := startCaddy(t, w, w.tokenBlock("stable", "max_replay_body 1KiB"))
	big := bytes.Repeat([]byte("0123456789abcdef"), 4096) // 64 KiB
	if a := post(t, c.url("/cgi-bin/media/uploadimg"), "application/octet-stream", big); a.Errcode != 0 || a.BodySHA256 != sha(big) {
		t.Fatalf("large body: errcode %d, %d bytes arrived", a.Errcode, a.BodyBytes)
	}
	small := []byte(`{"small":true}`)
	if a := post(t, c.url("/cgi-bin/message/custom/send"), "application/json", small); a.Errcode != 0 {
		t.Fatalf("small body: %+v", a.Echo)
	}

	w.Revoke(w.AppID)
	before := w.Stats()
	a := post(t, c.url("/cgi-bin/media/uploadimg"), "application/octet-stream", big)
	if a.Errcode != 40001 {
		t.Fatalf("large body after revocation: errcode %d, want WeChat's 40001 passed on", a.Errcode)
	}
	if calls := w.Stats().APICalls - before.APICalls; calls != 1 {
		t.Fatalf("a body over the replay limit was sent %d times", calls)
	}
	// The next small request still recovers.
	if a := post(t, c.url("/cgi-bin/message/custom/send"), "application/json", small); a.Errcode != 0 || a.BodySHA256 != sha(small) {
		t.Fatalf("small body after revocation: %+v", a.Echo)
	}
}

// A token endpoint that never answers costs the first requests at most
// fetch_timeout, then they get the 503.
func TestHangingTokenEndpointAnswers503AfterFetchTimeout(t *testing.T) {
	w := startWeChat(t, emulator.Config{})
	w.SetFaults(emulator.Faults{TokenEndpoint: emulator.FaultHang})
	c := startCaddy(t, w, w.tokenBlock("stable", "fetch_timeout 1s"))
	for range 2 {
		start := time.Now()
		a := get(t, c.url("/cgi-bin/user/info?openid=o1"))
		if a.Status != http.StatusServiceUnavailable || !strings.Contains(a.Errmsg, "deadline exceeded") {
			t.Fatalf("answer %d %s", a.Status, a.Raw)
		}
		// fetch_timeout and the second of grace, with room for a slow
		// race-built Caddy; the default 10 s would be far past it.
		if took := time.Since(start); took > 5*time.Second {
			t.Fatalf("the 503 came after %s with fetch_timeout 1s", took.Round(time.Millisecond))
		}
	}
	if n := w.Stats().APICalls; n != 0 {
		t.Fatalf("%d requests forwarded without a token", n)
	}
}
