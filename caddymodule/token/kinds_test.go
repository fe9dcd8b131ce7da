package token

// The kinds the engine's tests run, as package credential defines them.
var (
	Classic = Kind{Name: "classic", Noun: "access_token"}
	Stable  = Kind{Name: "stable", Noun: "access_token", ForceRefresh: true}
)

// testKeys are storage keys shaped as package credential builds them,
// where the tests' records are put and looked for.
func testKeys(appID string, k Kind) Keys {
	return Keys{
		Record: "wechat_token/" + k.Name + "/" + appID + ".json", Lock: "wechat_token_" + k.Name + "_" + appID,
		Ledger: "wechat_token/" + k.Name + "/" + appID + ".ledger.json", LedgerLock: "wechat_token_ledger_" + k.Name + "_" + appID,
	}
}

// testStoreKey is the record's key and lock of appID's credential of kind k.
func testStoreKey(appID string, k Kind) (key, lock string) {
	keys := testKeys(appID, k)
	return keys.Record, keys.Lock
}
