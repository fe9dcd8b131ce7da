// Command sdkcheck drives github.com/silenceper/wechat/v2, used as its
// README says, against caddy-wechat instead of api.weixin.qq.com: the SDK's
// requests are sent to the proxy by an http.Client of the SDK's own
// (util.DefaultHTTPClient), and its token handle returns a placeholder,
// since the proxy adds the real token. Run by tests/sdk_test.go, which
// starts the emulator and Caddy; the addresses come from the environment:
//
//	PROXY     the proxy in front of the emulator
//	DEAD      a proxy route whose upstream refuses connections (502)
//	NOTOKEN   a proxy route whose app cannot get a token (503)
//	EMULATOR  the emulator, for its control endpoints
//
// It prints one line per check and exits 1 on the first failure.
package main

import (
	"bytes"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/silenceper/wechat/v2/cache"
	"github.com/silenceper/wechat/v2/miniprogram"
	mpconfig "github.com/silenceper/wechat/v2/miniprogram/config"
	"github.com/silenceper/wechat/v2/miniprogram/qrcode"
	"github.com/silenceper/wechat/v2/officialaccount"
	oaconfig "github.com/silenceper/wechat/v2/officialaccount/config"
	"github.com/silenceper/wechat/v2/officialaccount/material"
	"github.com/silenceper/wechat/v2/util"
)

// toProxy sends what the SDK addresses to api.weixin.qq.com to the proxy.
type toProxy struct{ proxy *url.URL }

func (t toProxy) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.URL.Host == "api.weixin.qq.com" {
		r = r.Clone(r.Context())
		r.URL.Scheme, r.URL.Host = t.proxy.Scheme, t.proxy.Host
		r.URL.Path = strings.TrimSuffix(t.proxy.Path, "/") + r.URL.Path
		r.Host = ""
	}
	return http.DefaultTransport.RoundTrip(r)
}

// placeholder is the SDK's token: the proxy replaces it.
type placeholder struct{}

func (placeholder) GetAccessToken() (string, error) { return "placeholder", nil }

func env(name string) string {
	v := os.Getenv(name)
	if v == "" {
		fail("environment", fmt.Errorf("%s is not set", name))
	}
	return v
}

func fail(what string, err error) {
	fmt.Printf("FAIL %s: %v\n", what, err)
	os.Exit(1)
}

func check(what string, err error) {
	if err != nil {
		fail(what, err)
	}
	fmt.Printf("ok   %s\n", what)
}

// via points the SDK at base.
func via(base string) {
	u, err := url.Parse(base)
	if err != nil {
		fail("proxy URL", err)
	}
	util.DefaultHTTPClient = &http.Client{Transport: toProxy{u}, Timeout: 30 * time.Second}
}

func revoke() error {
	resp, err := http.Post(env("EMULATOR")+"/_emulator/revoke?appid="+env("APPID"), "", nil)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("revoke: %s", resp.Status)
	}
	return nil
}

func main() {
	memory := cache.NewMemory()
	oa := officialaccount.NewOfficialAccount(&oaconfig.Config{AppID: "placeholder-appid", AppSecret: "placeholder-secret", Cache: memory})
	oa.SetAccessTokenHandle(placeholder{})
	mp := miniprogram.NewMiniProgram(&mpconfig.Config{AppID: "placeholder-appid", AppSecret: "placeholder-secret", Cache: memory})
	mp.SetAccessTokenHandle(placeholder{})

	getUser := func() error { _, err := oa.GetUser().GetUserInfo("o1"); return err }
	image := filepath.Join(os.TempDir(), fmt.Sprintf("sdk-go-%d.jpg", os.Getpid()))
	if err := os.WriteFile(image, bytes.Repeat([]byte{7}, 300<<10), 0o600); err != nil {
		fail("write the image", err)
	}
	defer os.Remove(image)
	upload := func() error { _, err := oa.GetMaterial().MediaUpload(material.MediaTypeImage, image); return err }
	download := func() ([]byte, error) {
		return mp.GetQRCode().GetWXACodeUnlimit(qrcode.QRCoder{Scene: "a=1", Page: "pages/index/index"})
	}

	via(env("PROXY"))
	check("GetUserInfo through the proxy", getUser())
	check("MediaUpload (multipart)", upload())
	code, err := download()
	if err == nil && (len(code) < 2 || code[0] != 0xFF || code[1] != 0xD8) {
		err = fmt.Errorf("not a JPEG: %d bytes", len(code))
	}
	check("GetWXACodeUnlimit downloads the image", err)

	check("revoke the token", revoke())
	check("GetUserInfo after a revocation", getUser())
	check("revoke the token again", revoke())
	check("MediaUpload after a revocation", upload())

	// The proxy's own answers are errors to the SDK, downloads included.
	for _, route := range []string{"DEAD", "NOTOKEN"} {
		via(env(route))
		for what, call := range map[string]func() error{
			"GetUserInfo":       getUser,
			"GetWXACodeUnlimit": func() error { _, err := download(); return err },
			"MediaUpload":       upload,
		} {
			err := call()
			if err == nil {
				err = errors.New("no error")
			} else {
				fmt.Printf("     %s via %s: %v\n", what, route, err)
				err = nil
			}
			check(what+" via "+route+" is an error", err)
		}
	}
}
