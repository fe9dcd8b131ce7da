package credential

import (
	"testing"

	"github.com/caddy-wechat/caddy-wechat/caddymodule/token"
)

// Users' fleets have written these keys: they keep their form.
func TestKeysKeepTheFormFleetsWrote(t *testing.T) {
	ticket, _ := TicketOf(Spec{Kind: Stable, ID: "wx1"})
	for name, c := range map[string]struct {
		spec Spec
		want token.Keys
	}{
		"classic": {Spec{Kind: Classic, ID: "wx1"}, token.Keys{Record: "wechat_token/classic/wx1.json", Lock: "wechat_token_classic_wx1",
			Ledger: "wechat_token/classic/wx1.ledger.json", LedgerLock: "wechat_token_ledger_classic_wx1"}},
		"stable": {Spec{Kind: Stable, ID: "wx1"}, token.Keys{Record: "wechat_token/stable/wx1.json", Lock: "wechat_token_stable_wx1",
			Ledger: "wechat_token/stable/wx1.ledger.json", LedgerLock: "wechat_token_ledger_stable_wx1"}},
		"ticket": {ticket, token.Keys{Record: "wechat_token/jsapi_ticket/wx1.json", Lock: "wechat_token_jsapi_ticket_wx1",
			Ledger: "wechat_token/jsapi_ticket/wx1.ledger.json", LedgerLock: "wechat_token_ledger_jsapi_ticket_wx1"}},
		"component": {Spec{Kind: Component, ID: "wxc"}, token.Keys{Record: "wechat_token/component/wxc.json", Lock: "wechat_token_component_wxc",
			Ledger: "wechat_token/component/wxc.ledger.json", LedgerLock: "wechat_token_ledger_component_wxc"}},
		// New: an account's token is its platform's; the old key is read.
		"account": {Spec{Kind: Authorizer, ID: "wxa", Platform: "wxc"}, token.Keys{
			Record: "wechat_token/component/wxc/authorizer_tokens/wxa.json", Lock: "wechat_token_authorizer_wxc_wxa",
			Ledger: "wechat_token/component/wxc/authorizer_tokens/wxa.ledger.json", LedgerLock: "wechat_token_ledger_authorizer_wxc_wxa",
			Legacy: "wechat_token/authorizer/wxa.json"}},
	} {
		if got := c.spec.Kind.Keys(c.spec); got != c.want {
			t.Errorf("%s: keys %+v, want %+v", name, got, c.want)
		}
	}
	wecom := Spec{Kind: WeCom, ID: "ww1", Secret: "s"}
	if got, want := wecom.Kind.Keys(wecom).Record, "wechat_token/wecom/"+wecom.Label()+".json"; got != want || len(wecom.Label()) != len("ww1-")+8 {
		t.Errorf("WeCom record %s, want %s", got, want)
	}
	if got := verifyTicketKey("wxc"); got != "wechat_token/component/wxc.verify_ticket.json" {
		t.Errorf("verify ticket key %s", got)
	}
	if got := authorizationKey("wxc", "wxa"); got != "wechat_token/component/wxc/authorizers/wxa.json" {
		t.Errorf("authorization key %s", got)
	}
}
