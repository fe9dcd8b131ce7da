package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"
)

// Scenario (b): concurrent downloads of large media through the proxy,
// every byte checked, with the proxy's memory measured.

// downloadRun: 32 clients download 16 MiB of media each at once.
type downloadRun struct {
	contender string
	bytes     int64
	failed    int
	elapsed   time.Duration
	peakRSS   int64
	reason    string
}

func runDownloads(dir string, bins binaries) ([]downloadRun, error) {
	emu, emuBase, err := startEmulator(dir, bins, "downloads-emulator")
	if err != nil {
		return nil, err
	}
	defer emu.stop()
	// The plain proxy's client needs a token: the stable one, which the
	// product holds as well, so both reach the same media.
	tok, err := stableToken(emuBase)
	if err != nil {
		return nil, err
	}
	var runs []downloadRun
	for _, c := range []struct{ name, api, query string }{
		{reverseProxy, "", "&access_token=" + url.QueryEscape(tok)},
		{wechatToken, "stable", ""},
	} {
		p, base, err := startProxy(dir, bins, "downloads-"+c.name, emuBase, c.api)
		if err != nil {
			return nil, err
		}
		run := downloadAll(p, fmt.Sprintf("%s/cgi-bin/media/get?media_id=bytes-%d%s", base, downloadSize, c.query))
		run.contender = c.name
		p.stop()
		runs = append(runs, run)
	}
	return runs, nil
}

func stableToken(emuBase string) (string, error) {
	body := fmt.Sprintf(`{"grant_type":"client_credential","appid":%q,"secret":%q}`, demoAppID, demoAppSecret)
	resp, err := controlClient.Post(emuBase+"/cgi-bin/stable_token", "application/json", strings.NewReader(body))
	if err != nil {
		return "", fmt.Errorf("stable_token: %w", err)
	}
	defer resp.Body.Close()
	var answer struct {
		AccessToken string `json:"access_token"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&answer); err != nil || answer.AccessToken == "" {
		return "", fmt.Errorf("stable_token answered no token (%v)", err)
	}
	return answer.AccessToken, nil
}

// downloadAll runs the downloads, checking every byte against the
// emulator's pattern (byte i is i mod 251): nothing lost, nothing altered.
func downloadAll(p *process, url string) downloadRun {
	var run downloadRun
	resetPeakRSS(p.pids)
	client := &http.Client{Transport: &http.Transport{MaxConnsPerHost: downloadClients, DisableCompression: true}, Timeout: 2 * time.Minute}
	var mu sync.Mutex
	var wg sync.WaitGroup
	began := time.Now()
	for range downloadClients {
		wg.Go(func() {
			n, err := download(client, url)
			mu.Lock()
			defer mu.Unlock()
			run.bytes += n
			if err != nil {
				run.failed++
				run.reason = err.Error()
			}
		})
	}
	wg.Wait()
	run.elapsed = time.Since(began)
	var err error
	if run.peakRSS, err = peakRSS(p.pids); err != nil {
		run.failed, run.reason = downloadClients, err.Error()
	}
	return run
}

func download(client *http.Client, url string) (int64, error) {
	resp, err := client.Get(url)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "image/jpeg" {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return 0, fmt.Errorf("HTTP %d %s: %s", resp.StatusCode, resp.Header.Get("Content-Type"), b)
	}
	check := &patternCheck{}
	n, err := io.Copy(check, resp.Body)
	if err == nil && check.bad >= 0 {
		err = fmt.Errorf("byte %d differs from the media sent", check.bad)
	}
	if err == nil && n != downloadSize {
		err = fmt.Errorf("got %d bytes of %d", n, downloadSize)
	}
	return n, err
}

// patternCheck is a writer that compares what it is given with the
// emulator's media pattern.
type patternCheck struct {
	pos int64
	bad int64
}

func (c *patternCheck) Write(p []byte) (int, error) {
	if c.pos == 0 {
		c.bad = -1
	}
	for i, b := range p {
		if c.bad < 0 && int64(b) != (c.pos+int64(i))%251 {
			c.bad = c.pos + int64(i)
		}
	}
	c.pos += int64(len(p))
	return len(p), nil
}
