package token

import (
	"context"
	"time"
)

// MaxLifetime is the longest lifetime WeChat documents for a token. Larger
// expires_in values are clamped to it, so that a garbled answer can never
// postpone renewal indefinitely.
const MaxLifetime = 7200 * time.Second

// MaxTokenLen bounds what is accepted as a token. WeChat says tokens may
// grow to 512 characters; anything far beyond that is not a token.
const MaxTokenLen = 4096

// Fetched is a token as WeChat handed it out.
type Fetched struct {
	Value     string
	ExpiresIn time.Duration
}

// Fetcher obtains a token from WeChat. force asks for a new token even if
// the current one is still valid (stable_token's force_refresh); kinds
// without Kind.ForceRefresh are never asked to.
type Fetcher interface {
	Fetch(ctx context.Context, force bool) (Fetched, error)
}
