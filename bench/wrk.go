package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// getPath is a small JSON GET, as user/info is.
const getPath = "/cgi-bin/user/info?openid=o6_bmjrPTlm6_2sgVt7hMZOPfL2M&lang=zh_CN"

// postPath takes postBody, 1 KiB of JSON, as a customer-service message.
const postPath = "/cgi-bin/message/custom/send"

var postBody = func() []byte {
	head := `{"touser":"o6_bmjrPTlm6_2sgVt7hMZOPfL2M","msgtype":"text","text":{"content":"`
	tail := `"}}`
	return []byte(head + strings.Repeat("x", 1024-len(head)-len(tail)) + tail)
}()

// workload is one kind of request the contenders are measured with.
type workload struct {
	name   string
	path   string
	script string // wrk Lua script file
}

// reportLua prints wrk's figures on one line the driver parses; it is the
// end of every script.
const reportLua = `
done = function(summary, latency, requests)
  io.write(string.format("WRK_RESULT %d %d %.0f %.0f %d %d %d %d %d\n",
    summary.requests, summary.duration,
    latency:percentile(50), latency:percentile(99),
    summary.errors.connect, summary.errors.read, summary.errors.write,
    summary.errors.status, summary.errors.timeout))
end
`

// writeWorkloads writes the wrk scripts into dir.
func writeWorkloads(dir string) ([]workload, error) {
	get := filepath.Join(dir, "get.lua")
	post := filepath.Join(dir, "post.lua")
	postLua := fmt.Sprintf("wrk.method = \"POST\"\nwrk.body = %q\nwrk.headers[\"Content-Type\"] = \"application/json\"\n", postBody) + reportLua
	for path, body := range map[string]string{get: reportLua, post: postLua} {
		if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
			return nil, fmt.Errorf("write wrk script: %w", err)
		}
	}
	return []workload{
		{name: "GET small JSON", path: getPath, script: get},
		{name: "POST 1 KiB JSON", path: postPath, script: post},
	}, nil
}

// wrkResult is what one wrk run measured.
type wrkResult struct {
	requests int64
	duration time.Duration
	p50, p99 time.Duration
	errors   int64 // connect, read, write, timeouts and HTTP statuses >= 400
}

func (r wrkResult) rps() float64 { return float64(r.requests) / r.duration.Seconds() }

// runWrk loads url with conc connections from one wrk thread: on a small
// machine a second thread would take CPU from the proxy being measured.
func runWrk(ctx context.Context, script, url string, conc int, d time.Duration) (wrkResult, error) {
	out, err := run(ctx, "", "wrk", "-t1", "-c"+strconv.Itoa(conc), "-d"+d.String(), "--timeout", "5s", "-s", script, url)
	if err != nil {
		return wrkResult{}, err
	}
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) != 10 || fields[0] != "WRK_RESULT" {
			continue
		}
		var n [9]int64
		for i, f := range fields[1:] {
			if n[i], err = strconv.ParseInt(f, 10, 64); err != nil {
				return wrkResult{}, fmt.Errorf("wrk's report %q: %w", sc.Text(), err)
			}
		}
		return wrkResult{
			requests: n[0],
			duration: time.Duration(n[1]) * time.Microsecond,
			p50:      time.Duration(n[2]) * time.Microsecond,
			p99:      time.Duration(n[3]) * time.Microsecond,
			errors:   n[4] + n[5] + n[6] + n[7] + n[8],
		}, nil
	}
	return wrkResult{}, fmt.Errorf("wrk printed no report:\n%s", out)
}
