package credential

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/caddy-wechat/caddy-wechat/caddymodule/token"
	"github.com/caddy-wechat/caddy-wechat/emulator"
)

// ticketFetcherOf is the ticket fetcher of the app holding tokens (of
// kind tokenKind), at base.
func ticketFetcherOf(t *testing.T, tokenKind *Kind, base string, tokens Refresher) token.Fetcher {
	t.Helper()
	spec, err := TicketOf(Spec{Kind: tokenKind, ID: "wxapp", Secret: testSecret, APIBase: base})
	if err != nil {
		t.Fatal(err)
	}
	return spec.Kind.NewFetcher(spec, Deps{Needed: tokens})
}

// A ticket fetched with a token WeChat has revoked refreshes the token
// once, through the token's manager, and fetches again.
func TestTicketFetcherRefreshesARejectedToken(t *testing.T) {
	emu, base := emulatorServer(t, emulator.Config{})
	tokens := startManager(t, Spec{Kind: Stable, ID: "wxapp", Secret: testSecret, APIBase: base}, nil)
	f := ticketFetcherOf(t, Stable, base, tokens)
	first, err := f.Fetch(context.Background(), false)
	if err != nil || first.Value == "" || first.ExpiresIn != token.MaxLifetime {
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
	tokens := startManager(t, Spec{Kind: Classic, ID: "wxapp", Secret: testSecret, APIBase: base}, nil)
	tok := mustToken(t, tokens)
	// An endpoint that cannot be reached: the transport error would print
	// the URL, token included.
	f := ticketFetcherOf(t, Classic, "http://127.0.0.1:1", tokens)
	_, err := f.Fetch(context.Background(), false)
	if err == nil || strings.Contains(err.Error(), tok.Value) {
		t.Fatalf("unreachable endpoint: %v", err)
	}
	// WeChat refuses the token, and every token after it: the API error
	// passes on after one refresh, without the token.
	emu.SetFaults(emulator.Faults{RejectAll: true})
	f = ticketFetcherOf(t, Classic, base, tokens)
	_, err = f.Fetch(context.Background(), false)
	var apiErr *token.APIError
	if !errors.As(err, &apiErr) || apiErr.Code != 40001 || strings.Contains(err.Error(), tok.Value) {
		t.Fatalf("refused token: %v", err)
	}
}

// A WeCom app's ticket comes from get_jsapi_ticket, without type=jsapi.
func TestWeComTicketFromItsOwnEndpoint(t *testing.T) {
	emu, base := emulatorServer(t, emulator.Config{Corps: map[string][]string{"ww1": {testSecret}}})
	tokens := startManager(t, Spec{Kind: WeCom, ID: "ww1", Secret: testSecret, APIBase: base}, nil)
	spec, err := TicketOf(Spec{Kind: WeCom, ID: "ww1", Secret: testSecret, APIBase: base})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := spec.Kind.NewFetcher(spec, Deps{Needed: tokens}).Fetch(context.Background(), false); err != nil {
		t.Fatalf("WeCom ticket: %v", err)
	}
	if emu.Stats().TicketCalls != 1 {
		t.Fatalf("ticket calls %+v", emu.Stats())
	}
	if _, err := TicketOf(Spec{Kind: Component, ID: "wxc"}); err == nil {
		t.Fatal("a platform's token has no jsapi_ticket, but TicketOf made one")
	}
}
