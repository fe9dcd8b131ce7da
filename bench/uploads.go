package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"
)

// (d) Uploads held for replay: 32 clients upload 10 MiB each at once,
// right after WeChat revoked the token, so every upload is held, rejected,
// and replayed; and 64 clients declare 16 MiB and send slowly. The plain
// reverse_proxy streams the same uploads (with a valid token, so nothing
// is rejected): the baseline of what proxying them costs at all.
const (
	uploadClients = 32
	uploadSize    = 10 << 20
	// uploadGrowthLimit is what the smoke run insists on for the replayed
	// uploads: far below the 320 MiB they add up to (the bodies are held
	// in temporary files, not memory).
	uploadGrowthLimit = 96 << 20

	slowClients  = 64
	slowDeclared = 16 << 20
	slowSent     = 64 << 10
	// slowGrowthLimit: far below the 1 GiB the slow clients declare.
	slowGrowthLimit = 64 << 20
)

// uploadRun is one contender's two upload workloads.
type uploadRun struct {
	contender string
	accepted  int // uploads answered errcode 0 with the body intact
	failed    int
	reason    string
	replayed  int // API calls beyond one per upload: the replays
	elapsed   time.Duration
	growth    int64 // peak RSS over RSS before the uploads
	slowHeld  int   // slow clients connected at once
	slowGrow  int64 // peak RSS growth while they send
}

func runUploads(dir string, bins binaries) ([]uploadRun, error) {
	var runs []uploadRun
	for _, c := range []struct{ name, api string }{{reverseProxy, ""}, {wechatToken, "stable"}} {
		env, err := startWeChatEnv(dir, bins, "uploads-"+c.name, c.api)
		if err != nil {
			return nil, err
		}
		run, err := uploadAll(env, c.api != "")
		env.stop()
		if err != nil {
			return nil, fmt.Errorf("uploads through %s: %w", c.name, err)
		}
		run.contender = c.name
		runs = append(runs, run)
	}
	return runs, nil
}

// uploadAll runs both workloads against env; revoke says whether the token
// is revoked first (the product) or passed by the client (the baseline).
func uploadAll(env *wechatEnv, revoke bool) (uploadRun, error) {
	var run uploadRun
	query := ""
	if !revoke {
		tok, err := stableToken(env.emuBase)
		if err != nil {
			return run, err
		}
		query = "&access_token=" + url.QueryEscape(tok)
	}
	target := env.base + "/cgi-bin/media/upload?type=image" + query
	bodies := make([][]byte, uploadClients)
	sums := make([]string, uploadClients)
	for i := range bodies {
		bodies[i] = bytes.Repeat([]byte{byte(i), byte(i * 7), 0xA5, byte(255 - i)}, uploadSize/4)
		sum := sha256.Sum256(bodies[i])
		sums[i] = hex.EncodeToString(sum[:])
	}
	client := &http.Client{Transport: &http.Transport{MaxConnsPerHost: uploadClients}, Timeout: 2 * time.Minute}
	if err := upload(client, target, bodies[0], sums[0]); err != nil { // warm up connections and buffers
		return run, fmt.Errorf("warm-up upload: %w", err)
	}
	if revoke {
		if err := env.control("/_emulator/revoke?appid=" + demoAppID); err != nil {
			return run, err
		}
		// The new token takes a second to come, so that every upload's first
		// attempt is sent with the revoked token and replayed.
		if err := env.setFaults(`{"token_endpoint":"slow"}`); err != nil {
			return run, err
		}
		defer func() { _ = env.setFaults(`{}`) }()
	}
	before, err := env.stats()
	if err != nil {
		return run, err
	}
	pids := env.caddy.pids
	resetPeakRSS(pids)
	idle, err := currentRSS(pids)
	if err != nil {
		return run, err
	}
	var mu sync.Mutex
	var wg sync.WaitGroup
	began := time.Now()
	for i := range uploadClients {
		wg.Go(func() {
			err := upload(client, target, bodies[i], sums[i])
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				run.failed++
				run.reason = err.Error()
				return
			}
			run.accepted++
		})
	}
	wg.Wait()
	run.elapsed = time.Since(began)
	peak, err := peakRSS(pids)
	if err != nil {
		return run, err
	}
	run.growth = peak - idle
	after, err := env.stats()
	if err != nil {
		return run, err
	}
	run.replayed = after.APICalls - before.APICalls - uploadClients

	run.slowHeld, run.slowGrow, err = slowUploads(env, strings.TrimPrefix(env.base, "http://"), query)
	return run, err
}

// upload posts body and checks that WeChat (the emulator) got it whole.
func upload(client *http.Client, target string, body []byte, sum string) error {
	resp, err := client.Post(target, "application/octet-stream", bytes.NewReader(body))
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	var echo struct {
		Errcode    int    `json:"errcode"`
		Errmsg     string `json:"errmsg"`
		BodySHA256 string `json:"body_sha256"`
	}
	raw, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if err := json.Unmarshal(raw, &echo); err != nil {
		return fmt.Errorf("HTTP %d, not JSON: %.200s", resp.StatusCode, raw)
	}
	if echo.Errcode != 0 || echo.BodySHA256 != sum {
		return fmt.Errorf("HTTP %d errcode %d (%s), body intact: %v", resp.StatusCode, echo.Errcode, echo.Errmsg, echo.BodySHA256 == sum)
	}
	return nil
}

// slowUploads connects slowClients clients that each declare slowDeclared
// bytes and send slowSent of them in small pieces, and measures how much
// the proxy grows while they do. The connections are then dropped.
func slowUploads(env *wechatEnv, addr, query string) (int, int64, error) {
	pids := env.caddy.pids
	resetPeakRSS(pids)
	idle, err := currentRSS(pids)
	if err != nil {
		return 0, 0, err
	}
	var conns []net.Conn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for range slowClients {
		c, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err != nil {
			return len(conns), 0, fmt.Errorf("slow client: %w", err)
		}
		conns = append(conns, c)
		fmt.Fprintf(c, "POST /cgi-bin/media/upload?type=image%s HTTP/1.1\r\nHost: %s\r\nContent-Type: application/octet-stream\r\nContent-Length: %d\r\n\r\n",
			query, addr, slowDeclared)
	}
	piece := bytes.Repeat([]byte("s"), 4<<10)
	for sent := 0; sent < slowSent; sent += len(piece) {
		for _, c := range conns {
			if _, err := c.Write(piece); err != nil {
				return len(conns), 0, fmt.Errorf("slow client: %w", err)
			}
		}
		time.Sleep(20 * time.Millisecond) // slowly: the point of the workload
	}
	// The last pieces may still be in socket buffers; a proxy that sized
	// buffers from Content-Length would have grown when the headers came.
	time.Sleep(200 * time.Millisecond)
	peak, err := peakRSS(pids)
	if err != nil {
		return len(conns), 0, err
	}
	return len(conns), peak - idle, nil
}
