// Command wechat-emulator serves the WeChat API emulator (package emulator)
// for demos and for CI of services that call WeChat. It listens on loopback
// by default and must never be exposed: it is a test double.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/caddy-wechat/caddy-wechat/emulator"
)

// DemoAppID and DemoAppSecret are the credentials the emulator accepts when
// no -app is given; the demo Caddyfile uses them.
const (
	DemoAppID     = "wxd000000000000001"
	DemoAppSecret = "demo_app_secret_0123456789abcdef"
)

// DemoCorpID and DemoCorpSecret are the WeCom corp and app secret the
// emulator accepts when no -corp is given.
const (
	DemoCorpID     = "wwd000000000000001"
	DemoCorpSecret = "demo_corp_app_secret_0123456789abcdef"
)

// corpFlags are -corp CORPID:SECRET flags: a corp's apps, by secret.
type corpFlags map[string][]string

func (c corpFlags) String() string { return fmt.Sprint(len(c), " corps") }

func (c corpFlags) Set(v string) error {
	id, secret, ok := strings.Cut(v, ":")
	if !ok || id == "" || secret == "" {
		return errors.New("want CORPID:SECRET")
	}
	c[id] = append(c[id], secret)
	return nil
}

type appFlags map[string]string

func (a appFlags) String() string { return fmt.Sprint(len(a), " apps") }

func (a appFlags) Set(v string) error {
	id, secret, ok := strings.Cut(v, ":")
	if !ok || id == "" || secret == "" {
		return errors.New("want APPID:SECRET")
	}
	a[id] = secret
	return nil
}

// componentFlags are -component APPID:SECRET:TOKEN:AESKEY flags: the
// third-party platforms the emulator knows.
type componentFlags map[string]emulator.ComponentApp

func (c componentFlags) String() string { return fmt.Sprint(len(c), " platforms") }

func (c componentFlags) Set(v string) error {
	parts := strings.Split(v, ":")
	if len(parts) != 4 || parts[0] == "" || parts[1] == "" || parts[2] == "" {
		return errors.New("want APPID:SECRET:TOKEN:AESKEY (none of them containing ':')")
	}
	if _, err := emulator.SealMessage(parts[3], nil, parts[0]); err != nil {
		return fmt.Errorf("AESKEY: %w", err)
	}
	c[parts[0]] = emulator.ComponentApp{Secret: parts[1], Token: parts[2], AESKey: parts[3]}
	return nil
}

func main() {
	apps, corps := appFlags{}, corpFlags{}
	components := componentFlags{}
	var cfg emulator.Config
	listen := flag.String("listen", "127.0.0.1:9801", "address to listen on")
	flag.Var(apps, "app", "an app the emulator knows, as APPID:SECRET (repeatable; default the demo app "+DemoAppID+")")
	flag.Var(corps, "corp", "a WeCom app the emulator knows, as CORPID:SECRET (repeatable; one corp may have several; default "+DemoCorpID+")")
	flag.DurationVar(&cfg.TokenTTL, "ttl", 7200*time.Second, "token lifetime (WeChat: 2h)")
	flag.DurationVar(&cfg.TicketTTL, "ticket-ttl", 0, "JS-SDK jsapi_ticket lifetime (default: -ttl; WeChat: 2h)")
	flag.DurationVar(&cfg.Overlap, "overlap", 5*time.Minute, "how long a classic token works after the next is issued")
	flag.DurationVar(&cfg.StableWindow, "stable-window", 5*time.Minute, "last part of a stable token's life in which stable_token hands out the next")
	flag.IntVar(&cfg.TokenLength, "token-length", 136, "length of issued tokens")
	flag.IntVar(&cfg.ClassicDailyQuota, "classic-quota", 2000, "calls to /cgi-bin/token per app before 45009")
	flag.DurationVar(&cfg.ForceMinInterval, "force-interval", 30*time.Second, "minimum gap between force_refresh calls")
	flag.IntVar(&cfg.ForceDailyQuota, "force-quota", 20, "force_refresh calls per app per day")
	flag.Var(components, "component", "a third-party platform the emulator knows, as APPID:SECRET:TOKEN:AESKEY (repeatable)")
	flag.StringVar(&cfg.TicketPushURL, "ticket-push-url", "", "event URL to push every platform's component_verify_ticket to, at start and every -ticket-push-every")
	flag.DurationVar(&cfg.TicketPushInterval, "ticket-push-every", 10*time.Minute, "interval of the ticket push (WeChat: 10m)")
	flag.BoolVar(&cfg.RotateRefreshTokens, "rotate-refresh-tokens", false, "api_authorizer_token hands out a new refresh token each call, ending the previous one")
	flag.Parse()
	if len(apps) == 0 {
		apps[DemoAppID] = DemoAppSecret
	}
	cfg.Apps = apps
	if len(corps) == 0 {
		corps[DemoCorpID] = []string{DemoCorpSecret}
	}
	cfg.Corps = corps
	cfg.Components = components
	cfg.Logf = log.Printf

	// Listening before the first ticket push: the platform it reaches
	// calls back at once.
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		log.Fatal(err)
	}
	emu := emulator.New(cfg)
	srv := &http.Server{Addr: *listen, Handler: emu, ReadHeaderTimeout: 10 * time.Second}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	go func() {
		<-ctx.Done()
		emu.Close()
		shutdown, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(shutdown)
	}()
	log.Printf("WeChat API emulator on http://%s (%d apps, %d WeCom corps, %d platforms, token TTL %s); control: /_emulator/stats, /_emulator/faults, /_emulator/revoke", *listen, len(apps), len(corps), len(components), cfg.TokenTTL)
	if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		log.Fatal(err)
	}
}
