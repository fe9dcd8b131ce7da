package credential

import (
	"context"
	"encoding/xml"
	"net/http"
	"testing"
	"time"

	"github.com/caddy-wechat/caddy-wechat/caddymodule/token"
)

// httpFetcher is kind's fetcher of the app id with secret, at base.
func httpFetcher(kind *Kind, base, id, secret string, client *http.Client) token.Fetcher {
	return kind.NewFetcher(Spec{Kind: kind, ID: id, Secret: secret, APIBase: base}, Deps{Client: client})
}

// startManager starts a manager of spec, with needed as what its kind
// Needs, and no storage.
func startManager(t *testing.T, spec Spec, needed Refresher) *token.Manager {
	t.Helper()
	m, err := newManager(spec, token.Settings{Fetcher: spec.Kind.NewFetcher(spec, Deps{Needed: needed})}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m.Stop)
	m.Start()
	return m
}

func mustToken(t *testing.T, m TokenSource) token.Token {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	tok, err := m.Token(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func xmlUnmarshal(data []byte, v any) error { return xml.Unmarshal(data, v) }
