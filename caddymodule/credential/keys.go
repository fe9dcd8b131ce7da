package credential

import (
	"crypto/sha256"
	"encoding/hex"
	"strconv"

	"github.com/caddy-wechat/caddy-wechat/caddymodule/token"
)

// Every storage key and lock name the fleet shares is built here. Keys
// already written by users' fleets keep their form; where a key did not
// name enough (an account's token, keyed by its appid alone, shared by
// every platform it authorized), the new key is scoped and the old one
// read as Legacy.

const prefix = "wechat_token"

// standardKeys are an app credential's: wechat_token/<kind>/<label>.json
// and its ledger beside it.
func standardKeys(s Spec) token.Keys {
	kind, label := s.Kind.Name, s.Label()
	return token.Keys{
		Record: prefix + "/" + kind + "/" + label + ".json", Lock: prefix + "_" + kind + "_" + label,
		Ledger: prefix + "/" + kind + "/" + label + ".ledger.json", LedgerLock: prefix + "_ledger_" + kind + "_" + label,
	}
}

// platformPrefix is where a platform's records live.
func platformPrefix(componentAppID string) string { return prefix + "/component/" + componentAppID }

// accountKeys are the keys of an account's token, per platform: the
// same account authorized to two platforms has two tokens. The first
// release kept it at wechat_token/authorizer/<appid>.json, read as Legacy.
func accountKeys(s Spec) token.Keys {
	record := platformPrefix(s.Platform) + "/authorizer_tokens/" + s.ID
	lock := prefix + "_authorizer_" + s.Platform + "_" + s.ID
	return token.Keys{
		Record: record + ".json", Lock: lock,
		Ledger: record + ".ledger.json", LedgerLock: prefix + "_ledger_authorizer_" + s.Platform + "_" + s.ID,
		Legacy: prefix + "/authorizer/" + s.ID + ".json",
	}
}

// verifyTicketKey is where the fleet keeps a platform's latest
// component_verify_ticket.
func verifyTicketKey(componentAppID string) string {
	return platformPrefix(componentAppID) + ".verify_ticket.json"
}

// authorizationsPrefix lists a platform's authorizations (one record per
// account, holding its refresh token).
func authorizationsPrefix(componentAppID string) string {
	return platformPrefix(componentAppID) + "/authorizers"
}

// authorizationKey is an account's authorization of a platform.
func authorizationKey(componentAppID, appID string) string {
	return authorizationsPrefix(componentAppID) + "/" + appID + ".json"
}

// withdrawnKey marks, beside the records, an account whose authorization
// is withdrawn: the admin status counts the authorized ones from two
// listings, not by reading every record.
func withdrawnKey(componentAppID, appID string) string {
	return withdrawnPrefix(componentAppID) + "/" + appID
}

func withdrawnPrefix(componentAppID string) string {
	return platformPrefix(componentAppID) + "/withdrawn"
}

// authorizationLock guards an account's authorization record while an
// event or a list walk changes it, fleet-wide.
func authorizationLock(componentAppID, appID string) string {
	return prefix + "_authorization_" + componentAppID + "_" + appID
}

// withdrawalsKey is the platform's log of recent withdrawals (unauthorized
// events), which every instance of the fleet polls to stop serving the
// accounts; withdrawalsLock guards its appends.
func withdrawalsKey(componentAppID string) string {
	return platformPrefix(componentAppID) + ".withdrawals.json"
}

func withdrawalsLock(componentAppID string) string { return prefix + "_withdrawals_" + componentAppID }

// messagesPrefix is where the fleet keeps the answers to a receiver's
// messages (for WeChat's re-deliveries), filed by the span of minutes in
// which they first came (messages.go) so that old ones are removed by the
// folder.
func messagesPrefix(receiverID string) string { return prefix + "/messages/" + receiverID }

// fleetPrefix is where the instances delivering messages say so (one
// presence record each, messages_fleet.go).
func fleetPrefix() string { return prefix + "/message_fleet" }

// presenceKey is an instance's presence record.
func presenceKey(id string) string { return fleetPrefix() + "/" + id + ".json" }

// messageKey is the record of one message: the key hashed (it holds a
// user's openid).
func messageKey(receiverID string, minute int64, key string) string {
	return messageKeyOf(receiverID, minute, messageHash(key))
}

// messageHash is what messageKey keeps of a message key.
func messageHash(key string) [16]byte {
	sum := sha256.Sum256([]byte(key))
	return [16]byte(sum[:16])
}

// messageKeyOf is messageKey of a key's messageHash.
func messageKeyOf(receiverID string, minute int64, hash [16]byte) string {
	return messagesPrefix(receiverID) + "/" + strconv.FormatInt(minute, 10) + "/" + hex.EncodeToString(hash[:]) + ".json"
}
