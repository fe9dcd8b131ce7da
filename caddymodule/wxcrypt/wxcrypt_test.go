package wxcrypt

import (
	"encoding/base64"
	"errors"
	"testing"

	"github.com/caddy-wechat/caddy-wechat/emulator"
)

const (
	testToken  = "pamtest"
	testAESKey = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"
	testAppID  = "wxb11529c136998cb6"
)

// seal encrypts as WeChat does, with the emulator's code (written from
// WeChat's documentation, not by inverting Open).
func seal(t *testing.T, msg, appID string) string {
	t.Helper()
	enc, err := emulator.SealMessage(testAESKey, []byte(msg), appID)
	if err != nil {
		t.Fatal(err)
	}
	return enc
}

func TestOpen(t *testing.T) {
	c, err := New(testToken, testAESKey, testAppID)
	if err != nil {
		t.Fatal(err)
	}
	msg := "<xml><AppId><![CDATA[" + testAppID + "]]></AppId><InfoType><![CDATA[component_verify_ticket]]></InfoType></xml>"
	enc := seal(t, msg, testAppID)
	sig := Signature(testToken, "1409304348", "xxxxxx", enc)
	got, err := c.Open("1409304348", "xxxxxx", sig, enc)
	if err != nil || string(got) != msg {
		t.Fatalf("Open: %q, %v", got, err)
	}
	if _, err := c.Open("1409304349", "xxxxxx", sig, enc); !errors.Is(err, ErrSignature) {
		t.Fatalf("another timestamp: %v", err)
	}
	other := seal(t, msg, "wxsomeoneelse")
	if _, err := c.Open("1", "n", Signature(testToken, "1", "n", other), other); !errors.Is(err, ErrAppID) {
		t.Fatalf("another appid: %v", err)
	}
	for _, garbage := range []string{"", "not base64!", base64.StdEncoding.EncodeToString([]byte("short")),
		base64.StdEncoding.EncodeToString(make([]byte, 32))} {
		if _, err := c.Open("1", "n", Signature(testToken, "1", "n", garbage), garbage); err == nil {
			t.Fatalf("garbage %q opened", garbage)
		}
	}
	for _, bad := range [][3]string{{"", testAESKey, testAppID}, {testToken, "short", testAppID}, {testToken, testAESKey, ""}} {
		if _, err := New(bad[0], bad[1], bad[2]); err == nil {
			t.Fatalf("New%q accepted", bad)
		}
	}
}

func TestSignatureSortsItsParts(t *testing.T) {
	if Signature("b", "a", "d", "c") != Signature("a", "b", "c", "d") {
		t.Fatal("the parts are not sorted")
	}
}

// A sealed reply opens, as WeChat opens it, to the message.
func TestSealedReplyOpens(t *testing.T) {
	c, err := New("tok", "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG", "wxapp")
	if err != nil {
		t.Fatal(err)
	}
	enc, sig, err := c.Seal([]byte("<xml>reply</xml>"), "1700000000", "nonce")
	if err != nil {
		t.Fatal(err)
	}
	msg, receiver, err := emulator.OpenSealed("abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG", enc)
	if err != nil || string(msg) != "<xml>reply</xml>" || receiver != "wxapp" || sig != Signature("tok", "1700000000", "nonce", enc) {
		t.Fatalf("opened %q for %q: %v", msg, receiver, err)
	}
	if !CheckPlain("tok", "1", "2", PlainSignature("tok", "1", "2")) || CheckPlain("tok", "1", "2", PlainSignature("tok", "1", "3")) {
		t.Fatal("plain signature check")
	}
}
