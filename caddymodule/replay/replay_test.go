package replay

import (
	"bytes"
	"errors"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func randomBytes(n int) []byte {
	b := make([]byte, n)
	r := rand.NewChaCha8([32]byte{byte(n)})
	_, _ = r.Read(b)
	return b
}

func readAll(t *testing.T, r io.Reader) []byte {
	t.Helper()
	b, err := io.ReadAll(r)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// onlyReader hides bytes.Reader's other methods, as a request body would.
type onlyReader struct{ io.Reader }

func TestSmallBodyIsHeldInMemoryAndReplayed(t *testing.T) {
	u := new(Usage)
	p := NewPool(Limits{TempDir: t.TempDir()}, u)
	body := []byte(`{"touser":"o1","msgtype":"text"}`)
	for _, declared := range []int64{int64(len(body)), -1} {
		b, err := p.Hold(onlyReader{bytes.NewReader(body)}, declared, 1<<20)
		if err != nil {
			t.Fatal(err)
		}
		if !b.Replayable() || b.Size() != int64(len(body)) {
			t.Fatalf("declared %d: replayable %v, size %d", declared, b.Replayable(), b.Size())
		}
		if mem, ok := b.InMemory(); !ok || !bytes.Equal(mem, body) {
			t.Fatalf("declared %d: not held in memory", declared)
		}
		for range 2 {
			if got := readAll(t, b.Reader()); !bytes.Equal(got, body) {
				t.Fatalf("declared %d: replay %q", declared, got)
			}
		}
		if u.Counts().HeldBytes != int64(len(body)) {
			t.Fatalf("held %d bytes, want %d", u.Counts().HeldBytes, len(body))
		}
		if err := b.Close(); err != nil {
			t.Fatal(err)
		}
		if u.Counts().HeldBytes != 0 {
			t.Fatalf("%d bytes still counted after Close", u.Counts().HeldBytes)
		}
	}
}

func TestLargeBodySpillsToAnUnlinkedFile(t *testing.T) {
	dir := t.TempDir()
	u := new(Usage)
	p := NewPool(Limits{MemoryPerBody: 4 << 10, TempDir: dir}, u)
	body := randomBytes(300<<10 + 7)
	b, err := p.Hold(onlyReader{bytes.NewReader(body)}, int64(len(body)), 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if !b.Replayable() {
		t.Fatalf("not held: %s", b.Reason())
	}
	if _, ok := b.InMemory(); ok {
		t.Fatal("a body 75 times the memory size stayed in memory")
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Fatalf("the spilled file is visible in the temp dir: %v", entries)
	}
	for range 2 {
		if got := readAll(t, b.Reader()); !bytes.Equal(got, body) {
			t.Fatalf("replay differs: %d bytes, want %d", len(got), len(body))
		}
	}
	if c := u.Counts(); c.Spilled != 1 || c.HeldBytes != int64(len(body)) {
		t.Fatalf("counts %+v", c)
	}
}

func TestTooLargeBodyStreamsWhole(t *testing.T) {
	p := NewPool(Limits{MemoryPerBody: 1 << 10, TempDir: t.TempDir()}, new(Usage))
	body := randomBytes(100 << 10)
	for _, declared := range []int64{int64(len(body)), -1} {
		b, err := p.Hold(onlyReader{bytes.NewReader(body)}, declared, 64<<10)
		if err != nil {
			t.Fatal(err)
		}
		if b.Replayable() || b.Reason() != TooLarge {
			t.Fatalf("declared %d: reason %q", declared, b.Reason())
		}
		if got := readAll(t, b.Reader()); !bytes.Equal(got, body) {
			t.Fatalf("declared %d: streamed %d bytes, want %d", declared, len(got), len(body))
		}
		b.Close()
	}
	// Exactly the maximum is held.
	b, err := p.Hold(onlyReader{bytes.NewReader(body)}, -1, int64(len(body)))
	if err != nil || !b.Replayable() {
		t.Fatalf("a body of exactly max_replay_body: %v %q", err, b.Reason())
	}
	b.Close()
}

func TestBudgetIsSharedAndBodiesPastItStream(t *testing.T) {
	u := new(Usage)
	limits := Limits{Budget: 100 << 10, MemoryPerBody: 8 << 10, TempDir: t.TempDir()}
	first, second := NewPool(limits, u), NewPool(limits, u) // two configs during a reload
	a := randomBytes(70 << 10)
	held, err := first.Hold(onlyReader{bytes.NewReader(a)}, -1, 1<<20)
	if err != nil || !held.Replayable() {
		t.Fatalf("first body: %v %q", err, held.Reason())
	}
	b := randomBytes(70 << 10)
	streamed, err := second.Hold(onlyReader{bytes.NewReader(b)}, int64(len(b)), 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	if streamed.Reason() != OverBudget {
		t.Fatalf("second body: %q, want over_budget", streamed.Reason())
	}
	if got := readAll(t, streamed.Reader()); !bytes.Equal(got, b) {
		t.Fatal("the body past the budget lost bytes")
	}
	if u.Counts().HeldBytes > limits.Budget {
		t.Fatalf("held %d, budget %d", u.Counts().HeldBytes, limits.Budget)
	}
	streamed.Close()
	held.Close()
	if c := u.Counts(); c.HeldBytes != 0 || c.OverBudget != 1 {
		t.Fatalf("counts after Close %+v", c)
	}
	again, err := second.Hold(onlyReader{bytes.NewReader(b)}, -1, 1<<20)
	if err != nil || !again.Replayable() {
		t.Fatalf("budget not given back: %v %q", err, again.Reason())
	}
	again.Close()
}

func TestSpillFailureStreamsEveryByte(t *testing.T) {
	u := new(Usage)
	p := NewPool(Limits{MemoryPerBody: 4 << 10, TempDir: filepath.Join(t.TempDir(), "missing")}, u)
	body := randomBytes(200 << 10)
	b, err := p.Hold(onlyReader{bytes.NewReader(body)}, -1, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	if b.Reason() != SpillFailed {
		t.Fatalf("reason %q", b.Reason())
	}
	if got := readAll(t, b.Reader()); !bytes.Equal(got, body) {
		t.Fatalf("streamed %d bytes, want %d", len(got), len(body))
	}
	b.Close()
	if c := u.Counts(); c.HeldBytes != 0 || c.SpillFailed != 1 {
		t.Fatalf("counts %+v", c)
	}
}

// cutShort is a body whose client went away: net/http reports
// io.ErrUnexpectedEOF.
type cutShort struct{ io.Reader }

func (c cutShort) Read(p []byte) (int, error) {
	n, err := c.Reader.Read(p)
	if err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	return n, err
}

func TestCutShortBodyIsAnErrorNotAShorterBody(t *testing.T) {
	u := new(Usage)
	p := NewPool(Limits{MemoryPerBody: 4 << 10, TempDir: t.TempDir()}, u)
	for _, n := range []int{100, 100 << 10} {
		_, err := p.Hold(cutShort{bytes.NewReader(randomBytes(n))}, int64(n)+50, 1<<20)
		if !errors.Is(err, io.ErrUnexpectedEOF) {
			t.Fatalf("%d bytes of %d: err %v", n, n+50, err)
		}
	}
	if u.Counts().HeldBytes != 0 {
		t.Fatalf("%d bytes still counted", u.Counts().HeldBytes)
	}
}

// A client that declares 16 MiB and sends slowly holds what it sent, not
// what it declared.
func TestHeldGrowsWithArrivingBytes(t *testing.T) {
	u := new(Usage)
	p := NewPool(Limits{TempDir: t.TempDir()}, u)
	pr, pw := io.Pipe()
	done := make(chan error)
	go func() {
		_, err := p.Hold(pr, 16<<20, 16<<20)
		done <- err
	}()
	if _, err := pw.Write(randomBytes(1000)); err != nil {
		t.Fatal(err)
	}
	if held := u.Counts().HeldBytes; held > chunk {
		t.Fatalf("%d bytes counted after 1000 arrived", held)
	}
	pw.CloseWithError(io.ErrUnexpectedEOF)
	if err := <-done; !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("a cut-short body: %v", err)
	}
}

// Rewrite replaces a held body, in memory or in its file, and never makes
// it longer.
func TestRewriteHeldBody(t *testing.T) {
	dir := t.TempDir()
	pool := NewPool(Limits{Budget: 1 << 20, MemoryPerBody: 8, TempDir: dir}, new(Usage))
	drop := func(dst io.Writer, src io.Reader) error {
		b, err := io.ReadAll(src)
		if err != nil {
			return err
		}
		_, err = dst.Write(bytes.ReplaceAll(b, []byte("x"), nil))
		return err
	}
	for _, in := range []string{"axbx", "axbxcxdxexfxgxhx"} { // in memory; spilled past 8 bytes
		b, err := pool.Hold(strings.NewReader(in), -1, 1<<20)
		if err != nil {
			t.Fatal(err)
		}
		if err := b.Rewrite(drop); err != nil {
			t.Fatal(err)
		}
		for range 2 { // replayable: the same each time
			got, _ := io.ReadAll(b.Reader())
			if want := strings.ReplaceAll(in, "x", ""); string(got) != want || b.Size() != int64(len(want)) {
				t.Fatalf("%q rewritten: %q (size %d)", in, got, b.Size())
			}
		}
		longer := func(dst io.Writer, src io.Reader) error { _, err := io.WriteString(dst, in+in); return err }
		if err := b.Rewrite(longer); err == nil {
			t.Fatal("a rewrite made the body longer")
		}
		b.Close()
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Fatalf("files left behind: %v", entries)
	}
}
