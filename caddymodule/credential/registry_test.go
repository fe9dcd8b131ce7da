package credential

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/caddy-wechat/caddy-wechat/caddymodule/token"
	"github.com/caddy-wechat/caddy-wechat/emulator"
)

// The reload lifecycle, without Caddy: each Config is one Caddy config,
// started and stopped as Caddy does on a load, a reload and a reload that
// fails.

func classicSpec(base string) Spec {
	return Spec{Kind: Classic, ID: "wxapp", Secret: testSecret, APIBase: base,
		Timing: Timing{RefreshAhead: 5 * time.Minute, FetchTimeout: 5 * time.Second, MinRefreshInterval: time.Minute, MinLifetime: time.Second, DailyRefreshLimit: 1000}}
}

func startConfig(t *testing.T, reg *Registry, store Storage, specs ...Spec) (*Config, []*Ref) {
	t.Helper()
	c := reg.NewConfig(store, nil)
	var refs []*Ref
	for _, s := range specs {
		ref, err := c.Declare(s, "test")
		if err != nil {
			t.Fatal(err)
		}
		refs = append(refs, ref)
	}
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	return c, refs
}

func getManager(t *testing.T, ref *Ref) *token.Manager {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	m, err := ref.Get(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func TestDeclareTouchesNothingUntilStart(t *testing.T) {
	emu, base := emulatorServer(t, emulator.Config{})
	store := newMemStorage()
	reg := NewRegistry(nil)
	c := reg.NewConfig(store, nil)
	ref, err := c.Declare(classicSpec(base), "test")
	if err != nil {
		t.Fatal(err)
	}
	if ref.Current() != nil || len(reg.Managers("", "")) != 0 || emu.Stats().TokenCalls != 0 || len(store.keys()) != 0 || store.loads != 0 {
		t.Fatalf("declaring did something: %d managers, %+v, keys %v", len(reg.Managers("", "")), emu.Stats(), store.keys())
	}
	// A config stopped without starting (one that failed to load)
	// releases whoever waits for it.
	c.Stop()
	if _, err := ref.Get(context.Background()); err == nil {
		t.Fatal("a config that never started handed out a credential")
	}
}

func TestReloadWithTheSameSettingsKeepsTheCredential(t *testing.T) {
	emu, base := emulatorServer(t, emulator.Config{})
	store := newMemStorage()
	reg := NewRegistry(nil)
	old, refs := startConfig(t, reg, store, classicSpec(base))
	m := getManager(t, refs[0])
	first := mustToken(t, m)

	// Caddy starts the new config, then stops the old one.
	next, refs := startConfig(t, reg, store, classicSpec(base))
	old.Stop()
	if again := getManager(t, refs[0]); again != m {
		t.Fatal("a reload made a new manager for the same credential")
	}
	if tok := mustToken(t, m); tok.Value != first.Value || emu.Stats().ClassicIssued != 1 {
		t.Fatalf("a reload fetched: %+v", emu.Stats())
	}
	if got := reg.Managers("wxapp", "classic"); len(got) != 1 || got[0] != m {
		t.Fatalf("managers after the reload: %v", got)
	}
	// The last config stops: the credential stops with it.
	next.Stop()
	if len(reg.Managers("", "")) != 0 {
		t.Fatal("a manager outlived every config")
	}
	if _, _, err := m.RenewNow(context.Background(), false); !errors.Is(err, context.Canceled) {
		t.Fatalf("renewing a stopped credential: %v", err)
	}
	if n := emu.Stats().TokenCalls; n != 1 {
		t.Fatalf("%d token calls, want 1", n)
	}
}

func TestReloadWithChangedSettingsTakesTheNewOnes(t *testing.T) {
	emuA, baseA := emulatorServer(t, emulator.Config{})
	emuB, baseB := emulatorServer(t, emulator.Config{})
	storeA, storeB := newMemStorage(), newMemStorage()
	reg := NewRegistry(nil)
	old, refs := startConfig(t, reg, storeA, classicSpec(baseA))
	m := getManager(t, refs[0])
	mustToken(t, m)

	next, _ := startConfig(t, reg, storeB, classicSpec(baseB))
	old.Stop()
	if emuB.Stats().TokenCalls != 0 {
		t.Fatal("a reload fetched")
	}
	// The next fetch uses the new config's api_base and storage.
	if _, renewed, err := m.RenewNow(context.Background(), false); err != nil || !renewed {
		t.Fatalf("renewal after the reload: %v %v", renewed, err)
	}
	m.Flush() // saved beside the renewal's waiters
	if emuB.Stats().TokenCalls != 1 || emuA.Stats().TokenCalls != 1 {
		t.Fatalf("renewal went to the old api_base: A %+v, B %+v", emuA.Stats(), emuB.Stats())
	}
	if !containsKey(storeB.keys(), "wechat_token/classic/wxapp.json") {
		t.Fatalf("the renewed token was not stored in the new config's storage: %v", storeB.keys())
	}
	next.Stop()
}

func TestFailedReloadRestoresTheRunningConfig(t *testing.T) {
	emuA, baseA := emulatorServer(t, emulator.Config{})
	emuB, baseB := emulatorServer(t, emulator.Config{})
	store := newMemStorage()
	reg := NewRegistry(nil)
	running, refs := startConfig(t, reg, store, classicSpec(baseA))
	m := getManager(t, refs[0])
	mustToken(t, m)

	// The new config starts, then something else in it fails: Caddy
	// stops it and keeps the running one.
	failed, _ := startConfig(t, reg, store, classicSpec(baseB))
	failed.Stop()
	if _, renewed, err := m.RenewNow(context.Background(), false); err != nil || !renewed {
		t.Fatalf("renewal after the failed reload: %v %v", renewed, err)
	}
	if emuA.Stats().TokenCalls != 2 || emuB.Stats().TokenCalls != 0 {
		t.Fatalf("after a failed reload the renewal did not go to the running config's api_base: A %+v, B %+v", emuA.Stats(), emuB.Stats())
	}
	if got := reg.Managers("", ""); len(got) != 1 || got[0] != m {
		t.Fatalf("managers after the failed reload: %v", got)
	}
	running.Stop()
}

// A config whose start fails part-way leaves nothing attached and
// releases its handlers' waits.
func TestStartFailingPartWayAttachesNothing(t *testing.T) {
	_, base := emulatorServer(t, emulator.Config{})
	reg := NewRegistry(nil)
	broken := *Classic
	broken.Name = "broken"
	broken.Keys = func(Spec) token.Keys { return token.Keys{} } // NewManager refuses it
	c := reg.NewConfig(newMemStorage(), nil)
	good, err := c.Declare(classicSpec(base), "test")
	if err != nil {
		t.Fatal(err)
	}
	bad := classicSpec(base)
	bad.Kind = &broken
	if _, err := c.Declare(bad, "test"); err != nil {
		t.Fatal(err)
	}
	if err := c.Start(); err == nil {
		t.Fatal("a config with a credential that cannot be made started")
	}
	if n := len(reg.Managers("", "")); n != 0 {
		t.Fatalf("%d managers attached after a failed start", n)
	}
	if _, err := good.Get(context.Background()); err == nil {
		t.Fatal("a handler of the failed config got a credential")
	}
}

func TestDeclarationsOfOneCredentialMustAgree(t *testing.T) {
	_, base := emulatorServer(t, emulator.Config{})
	c := NewRegistry(nil).NewConfig(newMemStorage(), nil)
	a, err := c.Declare(classicSpec(base), "wechat_token")
	if err != nil {
		t.Fatal(err)
	}
	if b, err := c.Declare(classicSpec(base), "wechat_token_value"); err != nil || b != a {
		t.Fatalf("two equal declarations: %v", err)
	}
	other := classicSpec(base)
	other.RefreshAhead, other.Secret = time.Minute, "another-secret"
	_, err = c.Declare(other, "wechat_token_value")
	if err == nil || !strings.Contains(err.Error(), "wechat_token and wechat_token_value") ||
		!strings.Contains(err.Error(), "refresh_ahead (5m0s and 1m0s)") || strings.Contains(err.Error(), "another-secret") {
		t.Fatalf("conflicting declarations: %v", err)
	}
}

// A ticket's token is declared and started before it, and shared with a
// handler of the token itself.
func TestDependencyStartsFirstAndIsShared(t *testing.T) {
	emu, base := emulatorServer(t, emulator.Config{})
	reg := NewRegistry(nil)
	ticket, err := TicketOf(classicSpec(base))
	if err != nil {
		t.Fatal(err)
	}
	c, refs := startConfig(t, reg, newMemStorage(), ticket, classicSpec(base))
	defer c.Stop()
	if tok := mustToken(t, getManager(t, refs[0])); tok.Value == "" {
		t.Fatal("no ticket")
	}
	mustToken(t, getManager(t, refs[1]))
	if st := emu.Stats(); st.ClassicIssued != 1 || st.TicketsIssued != 1 {
		t.Fatalf("the ticket and its token: %+v", st)
	}
	if n := len(reg.Managers("wxapp", "")); n != 2 {
		t.Fatalf("%d managers, want the token and the ticket", n)
	}
}

func containsKey(keys []string, key string) bool {
	for _, k := range keys {
		if k == key {
			return true
		}
	}
	return false
}
