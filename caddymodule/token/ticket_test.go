package token

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/caddy-wechat/caddy-wechat/emulator"
)

// A ticket fetched with a token WeChat has revoked refreshes the token
// once, through the token's manager, and fetches again.
func TestTicketFetcherRefreshesARejectedToken(t *testing.T) {
	emu, base := emulatorServer(t, emulator.Config{})
	tokens, err := NewManager(Options{AppID: "wxapp", API: Stable, Settings: Settings{
		Fetcher: &HTTPFetcher{API: Stable, BaseURL: base, AppID: "wxapp", AppSecret: testSecret},
	}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(tokens.Stop)
	tokens.Start()
	f := &TicketFetcher{BaseURL: base, Tokens: tokens, RejectedBy: []int64{40001, 42001}}
	first, err := f.Fetch(context.Background(), false)
	if err != nil || first.Value == "" || first.ExpiresIn != MaxLifetime {
		t.Fatalf("ticket %+v, %v", first, err)
	}
	emu.Revoke("wxapp")
	before := emu.Stats()
	second, err := f.Fetch(context.Background(), false)
	if err != nil || second.Value == first.Value {
		t.Fatalf("after a revocation: %+v, %v", second, err)
	}
	after := emu.Stats()
	if issued, calls := after.Issued()-before.Issued(), after.TicketCalls-before.TicketCalls; issued != 1 || calls != 2 {
		t.Fatalf("%d tokens and %d getticket calls for one revoked token, want 1 and 2", issued, calls)
	}
}

func TestTicketFetcherErrorsNeverShowTheToken(t *testing.T) {
	emu, base := emulatorServer(t, emulator.Config{})
	tokens, err := NewManager(Options{AppID: "wxapp", API: Classic, Settings: Settings{
		Fetcher: &HTTPFetcher{API: Classic, BaseURL: base, AppID: "wxapp", AppSecret: testSecret},
	}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(tokens.Stop)
	tokens.Start()
	tok := mustToken(t, tokens)
	// An endpoint that cannot be reached: the transport error would print
	// the URL, token included.
	f := &TicketFetcher{BaseURL: "http://127.0.0.1:1", Tokens: tokens}
	_, err = f.Fetch(context.Background(), false)
	if err == nil || strings.Contains(err.Error(), tok.Value) {
		t.Fatalf("unreachable endpoint: %v", err)
	}
	// WeChat refuses the token and no refresh is allowed (not a rejection
	// code here): the API error passes on, without the token.
	emu.SetFaults(emulator.Faults{RejectAll: true})
	f = &TicketFetcher{BaseURL: base, Tokens: tokens}
	_, err = f.Fetch(context.Background(), false)
	var apiErr *APIError
	if !errors.As(err, &apiErr) || apiErr.Code != 40001 || strings.Contains(err.Error(), tok.Value) {
		t.Fatalf("refused token: %v", err)
	}
}
