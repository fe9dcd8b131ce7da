package emulator

import (
	"crypto/sha1"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"testing"
	"time"
)

func getTicket(t *testing.T, base, query string) (ticket string, expires, errcode int) {
	t.Helper()
	resp, err := http.Get(base + "/cgi-bin/ticket/getticket?" + query)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var a struct {
		Ticket  string `json:"ticket"`
		Expires int    `json:"expires_in"`
		Errcode int    `json:"errcode"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&a); err != nil {
		t.Fatal(err)
	}
	return a.Ticket, a.Expires, a.Errcode
}

func TestTicketNeedsAValidTokenAndVerifiesSignatures(t *testing.T) {
	emu, srv, clock := newEmu(t)
	tok := classic(t, srv, appID, secret).Token
	if _, _, code := getTicket(t, srv.URL, "type=jsapi"); code != 41001 {
		t.Fatalf("no token: errcode %d", code)
	}
	if _, _, code := getTicket(t, srv.URL, "type=other&access_token="+tok); code != 40097 {
		t.Fatalf("bad type: errcode %d", code)
	}
	first, expires, code := getTicket(t, srv.URL, "type=jsapi&access_token="+tok)
	if code != 0 || first == "" || expires != 7200 {
		t.Fatalf("ticket %q, expires_in %d, errcode %d", first, expires, code)
	}
	second, _, _ := getTicket(t, srv.URL, "type=jsapi&access_token="+tok)
	if second == first {
		t.Fatal("every call should issue a new ticket")
	}
	if s := emu.Stats(); s.TicketCalls != 4 || s.TicketsIssued != 2 {
		t.Fatalf("stats %+v", s)
	}

	sign := func(ticket string) string {
		sum := sha1.Sum(fmt.Appendf(nil, "jsapi_ticket=%s&noncestr=n1&timestamp=1700000000&url=https://a.example/p?x=1", ticket))
		return hex.EncodeToString(sum[:])
	}
	if !emu.VerifySignature(appID, "https://a.example/p?x=1", "n1", 1700000000, sign(first)) {
		t.Fatal("a signature made with the first ticket does not verify")
	}
	if emu.VerifySignature(appID, "https://a.example/p?x=2", "n1", 1700000000, sign(first)) {
		t.Fatal("a signature verifies for another URL")
	}
	if emu.VerifySignature(appID, "https://a.example/p?x=1", "n1", 1700000000, sign("made-up")) {
		t.Fatal("a signature made with an unknown ticket verifies")
	}
	clock.Advance(7201 * time.Second)
	if emu.VerifySignature(appID, "https://a.example/p?x=1", "n1", 1700000000, sign(first)) {
		t.Fatal("a signature made with an expired ticket verifies")
	}
	emu.Revoke(appID)
	if _, _, code := getTicket(t, srv.URL, "type=jsapi&access_token="+tok); code != 42001 && code != 40001 {
		t.Fatalf("expired token: errcode %d", code)
	}
}
