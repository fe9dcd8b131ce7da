package main

import (
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
)

// The fast upstream answers WeChat-shaped JSON as cheaply as net/http
// allows. The emulator does more per call (token bookkeeping, hashing
// bodies for its echo) and would be the bottleneck of the throughput runs,
// hiding the proxies' differences; the scenarios, which need WeChat's token
// rules, use the emulator.

// benchToken is the one token the fast upstream issues and accepts: as long
// as a real one (136 characters).
var benchToken = "BENCH_" + strings.Repeat("tOkEn0123456789", 9) + "_END"

var (
	answerOK       = []byte(`{"errcode":0,"errmsg":"ok","subscribe":1,"openid":"o6_bmjrPTlm6_2sgVt7hMZOPfL2M","nickname":"Band","sex":1,"language":"zh_CN","city":"Guangzhou","province":"Guangdong","country":"China","subscribe_time":1382694957}`)
	answerRejected = []byte(`{"errcode":40001,"errmsg":"invalid credential, access_token is invalid or not latest rid: 6579b2c1-0a1b2c3d-4e5f6a7b"}`)
	answerToken    = []byte(`{"access_token":"` + benchToken + `","expires_in":7200}`)
)

// serveUpstream is the "upstream" subcommand: it prints the address it
// listens on, then serves until killed.
func serveUpstream(args []string) error {
	fs := flag.NewFlagSet("upstream", flag.ExitOnError)
	listen := fs.String("listen", "127.0.0.1:0", "address")
	if err := fs.Parse(args); err != nil {
		return err
	}
	l, err := net.Listen("tcp", *listen)
	if err != nil {
		return fmt.Errorf("upstream: %w", err)
	}
	fmt.Fprintln(os.Stdout, "listening", l.Addr())
	return http.Serve(l, http.HandlerFunc(fastWeChat))
}

func fastWeChat(w http.ResponseWriter, r *http.Request) {
	if r.Body != nil {
		_, _ = io.Copy(io.Discard, r.Body)
	}
	h := w.Header()
	h["Content-Type"] = []string{"application/json; encoding=utf-8"}
	switch r.URL.Path {
	case "/cgi-bin/token", "/cgi-bin/stable_token":
		_, _ = w.Write(answerToken)
		return
	}
	// Every call must carry exactly the token, as WeChat checks it.
	if r.URL.Query().Get("access_token") != benchToken {
		_, _ = w.Write(answerRejected)
		return
	}
	_, _ = w.Write(answerOK)
}
