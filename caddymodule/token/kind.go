package token

// Kind is what the engine needs to know of the credential a Manager holds.
// The kinds themselves (stable and classic access tokens, WeCom tokens,
// jsapi_tickets, a platform's tokens) are defined by package credential;
// the engine has no list of them and no branch on one.
type Kind struct {
	// Name names the kind in stored records (token_api), the status and
	// metric labels: stable, classic, wecom, jsapi_ticket, ...
	Name string
	// Noun names what is held, in log lines: access_token, jsapi_ticket.
	Noun string
	// ErrNone is wrapped by Token when nothing valid is held; default
	// ErrNoToken.
	ErrNone error
	// ForceRefresh says the fetcher can be asked for a new value while the
	// current one is valid (stable_token's force_refresh): the fleet's
	// ledger then limits how often, and the status shows what is left.
	ForceRefresh bool
	// SharedAnswer says a normal fetch hands every caller the same current
	// token (stable_token, WeCom's gettoken): a refresh that requests wait
	// for then fetches at once, leaving the fleet's storage off their path.
	SharedAnswer bool
}

// Keys are where a Manager keeps its shared record and the fleet's ledger
// in the Store, and the names of the locks guarding them. Package
// credential builds them all in one place (its keys.go).
type Keys struct {
	Record, Lock       string
	Ledger, LedgerLock string
	// Legacy, if set, is where an earlier release kept the record. It is
	// read when Record holds nothing, and its token adopted only if it was
	// fetched with this manager's secret (SecretID), so that a key that
	// did not name enough (an authorizer's, shared by every platform)
	// cannot hand one holder another's token.
	Legacy string
}

func (k Kind) errNone() error {
	if k.ErrNone != nil {
		return k.ErrNone
	}
	return ErrNoToken
}
