package tests

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/caddy-wechat/caddy-wechat/emulator"
)

// A restarted instance finds its token in storage and fetches nothing.
func TestRestartUsesStoredToken(t *testing.T) {
	apis(t, func(t *testing.T, api string) {
		w := startWeChat(t, emulator.Config{TokenLength: 512})
		storage := t.TempDir()
		first := startCaddyWith(t, w, w.tokenBlock(api), caddyOptions{storage: storage})
		if a := get(t, first.url("/cgi-bin/user/info?openid=o1")); a.Errcode != 0 {
			t.Fatalf("first instance: %+v", a.Echo)
		}
		first.stop()

		file := filepath.Join(storage, "wechat_token", api, w.AppID+".json")
		info, err := os.Stat(file)
		if err != nil {
			t.Fatal(err)
		}
		if perm := info.Mode().Perm(); perm&0o077 != 0 {
			t.Fatalf("stored token readable by others: %v", perm)
		}
		var rec struct {
			Token string `json:"access_token"`
		}
		raw, _ := os.ReadFile(file)
		if err := json.Unmarshal(raw, &rec); err != nil || len(rec.Token) != 512 {
			t.Fatalf("stored record holds a token of %d chars: %v", len(rec.Token), err)
		}
		if strings.Contains(string(raw), w.Secret) {
			t.Fatal("stored record holds the secret")
		}

		second := startCaddyWith(t, w, w.tokenBlock(api), caddyOptions{storage: storage})
		if a := get(t, second.url("/cgi-bin/user/info?openid=o1")); a.Errcode != 0 {
			t.Fatalf("restarted instance: %+v", a.Echo)
		}
		if n := w.issued(); n != 1 {
			t.Fatalf("%d tokens fetched across a restart, want 1", n)
		}
	})
}

// Three instances on one storage renew the classic token (each fetch of
// which invalidates the last) once per rotation between them.
func TestFleetOnSharedStorageFetchesOncePerRotation(t *testing.T) {
	w := startWeChat(t, emulator.Config{TokenTTL: 4 * time.Second, Overlap: time.Second})
	storage := t.TempDir()
	var fleet []*caddy
	for range 3 {
		fleet = append(fleet, startCaddyWith(t, w, w.tokenBlock("classic", "refresh_ahead 1s", "min_token_lifetime 1s"), caddyOptions{storage: storage}))
	}
	// Counted from here, not from the first start: a slow start of a
	// race-built Caddy would otherwise count as a fleet fetching too much.
	start := time.Now()
	ok, failed := loadFleet(t, fleet, start.Add(12*time.Second))
	if len(failed) > 0 {
		t.Fatalf("%d of %d requests failed, first: %s", len(failed), ok+len(failed), failed[0])
	}
	// One instance alone renews every 3 s: 4 in 12 s; three uncoordinated
	// ones would fetch about 12.
	if n := w.issuedSince(start); n < 3 || n > 5 {
		t.Fatalf("the fleet fetched %d tokens in 12 s of 4 s lifetimes", n)
	}
	t.Logf("%d requests over 3 instances, %d tokens fetched, %d rejected upstream and retried", ok, w.issuedSince(start), w.Stats().APIRejected[40001])
}

// An instance killed while it holds the renewal lock does not keep the
// others from renewing in time.
func TestKilledLockHolderDoesNotBlockRenewal(t *testing.T) {
	t.Parallel()
	w := startWeChat(t, emulator.Config{TokenTTL: 40 * time.Second, Overlap: 5 * time.Second})
	storage := t.TempDir()
	holder := startCaddyWith(t, w, w.tokenBlock("classic", "refresh_ahead 20s", "fetch_timeout 1m"), caddyOptions{storage: storage})
	start := time.Now()
	if a := get(t, holder.url("/cgi-bin/user/info?openid=o1")); a.Errcode != 0 {
		t.Fatalf("holder: %+v", a.Echo)
	}
	other := startCaddyWith(t, w, w.tokenBlock("classic", "refresh_ahead 17s"), caddyOptions{storage: storage})
	if a := get(t, other.url("/cgi-bin/user/info?openid=o1")); a.Errcode != 0 || w.issued() != 1 {
		t.Fatalf("other: %+v after %d fetches", a.Echo, w.issued())
	}

	// The holder's renewal (at 20 s) hangs with the lock held; kill it.
	w.SetFaults(emulator.Faults{TokenEndpoint: emulator.FaultHang})
	deadline := start.Add(30 * time.Second)
	for w.Stats().TokenCalls < 2 {
		if time.Now().After(deadline) {
			t.Fatal("the holder never started its renewal")
		}
		time.Sleep(50 * time.Millisecond)
	}
	// The renewal lock itself, held: an earlier fetch leaves the locks
	// directory behind but removes its lock file.
	lock := filepath.Join(storage, "locks", "wechat_token_classic_"+w.AppID+".lock")
	if _, err := os.Stat(lock); err != nil {
		t.Fatalf("the holder does not hold the renewal lock: %v", err)
	}
	if err := holder.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-holder.exited
	w.SetFaults(emulator.Faults{})

	// The other renews (at 23 s, once the dead lock goes stale or its wait
	// ends) before the token expires at 40 s: its clients see no error.
	if _, failed := load(t, other, 2, start.Add(43*time.Second)); len(failed) > 0 {
		t.Fatalf("%d requests failed after the lock holder died, first: %s", len(failed), failed[0])
	}
	if n := w.Stats().ClassicIssued; n != 2 {
		t.Fatalf("%d tokens issued, want the first and one renewal", n)
	}
	// In time: WeChat rejected nothing, expired or replaced.
	if st := w.Stats(); st.APIRejected[40001]+st.APIRejected[42001] != 0 {
		t.Fatalf("WeChat rejected %v", st.APIRejected)
	}
}
