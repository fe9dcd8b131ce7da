// Package replay holds request bodies so that a request can be sent a
// second time byte for byte. Memory stays bounded however many requests
// arrive at once: a body is kept in memory only up to a small size and
// spills to a temporary file past it (as nginx does with request bodies),
// buffers grow with the bytes that arrive rather than with what the client
// declares, and every body held counts against one budget shared by all
// requests in flight. A body that cannot be held whole streams on without
// replay; no byte is lost either way.
package replay

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"sync/atomic"
)

// Defaults of Limits.
const (
	DefaultMemoryPerBody = 64 << 10
	DefaultBudget        = 1 << 30
)

// chunk is how much is reserved from the budget and read at a time.
const chunk = 32 << 10

// Limits bound what a Pool holds.
type Limits struct {
	// Budget is the most bytes held for replay at once, by all requests
	// together, in memory and in temporary files.
	Budget int64
	// MemoryPerBody is the most bytes of one body kept in memory; a larger
	// body goes to a temporary file.
	MemoryPerBody int64
	// TempDir is where spilled bodies are written; empty means the
	// system's temporary directory.
	TempDir string
}

// Pool holds bodies within Limits. Its counters are shared by every Pool
// made with the same Usage, so that configs overlapping during a reload
// share one budget.
type Pool struct {
	limits Limits
	usage  *Usage
}

// Usage counts what the pools using it hold, and why bodies were not held.
type Usage struct {
	held        atomic.Int64
	spilled     atomic.Int64
	overBudget  atomic.Int64
	tooLarge    atomic.Int64
	spillFailed atomic.Int64
}

// Counts is a snapshot of a Usage.
type Counts struct {
	// HeldBytes are the bytes held right now.
	HeldBytes int64
	// Spilled counts bodies written to a temporary file.
	Spilled int64
	// Not held (streamed without replay), by reason.
	OverBudget, TooLarge, SpillFailed int64
}

// Counts returns the current counts.
func (u *Usage) Counts() Counts {
	return Counts{
		HeldBytes: u.held.Load(), Spilled: u.spilled.Load(),
		OverBudget: u.overBudget.Load(), TooLarge: u.tooLarge.Load(), SpillFailed: u.spillFailed.Load(),
	}
}

// NewPool returns a Pool with limits, counting in usage; zero limits take
// the defaults.
func NewPool(limits Limits, usage *Usage) *Pool {
	if limits.Budget <= 0 {
		limits.Budget = DefaultBudget
	}
	if limits.MemoryPerBody <= 0 {
		limits.MemoryPerBody = DefaultMemoryPerBody
	}
	if limits.TempDir == "" {
		limits.TempDir = os.TempDir()
	}
	return &Pool{limits: limits, usage: usage}
}

// Reason says why a body was not held for replay.
type Reason string

// Reasons a body streams without replay.
const (
	Held        Reason = ""             // held whole: replayable
	TooLarge    Reason = "too_large"    // larger than the request's maximum
	OverBudget  Reason = "over_budget"  // the budget was spent by other requests
	SpillFailed Reason = "spill_failed" // the temporary file could not be written
)

// Body is a request body read by Hold. Close it when the request is done.
type Body struct {
	pool     *Pool
	mem      []byte   // the body, while it fits in memory
	file     *os.File // the body, once spilled; nil before
	size     int64    // bytes held, in mem or file
	reserved int64    // bytes counted against the budget
	reason   Reason
	stream   io.Reader // what is sent when the body is not held whole
	// removeOnClose: the spilled file could not be unlinked while open.
	removeOnClose bool
}

// scratch buffers carry bytes from the client to memory or a file.
var scratch = sync.Pool{New: func() any { b := make([]byte, chunk); return &b }}

// Hold reads src to its end and holds it, unless it is larger than
// maxBody, the budget runs out, or a temporary file cannot be written:
// then the body streams on from where holding stopped (Reader), without
// replay. declared (-1 when unknown) only lets a body that says it is too
// large stream at once; buffers grow with the bytes that arrive. An error
// is a failed read of src (the client's body); nothing is held then.
func (p *Pool) Hold(src io.Reader, declared, maxBody int64) (*Body, error) {
	b := &Body{pool: p}
	if declared > maxBody {
		p.usage.tooLarge.Add(1)
		b.reason, b.stream = TooLarge, src
		return b, nil
	}
	if declared >= 0 && declared <= p.limits.MemoryPerBody {
		return b, b.holdSmall(src, declared)
	}
	bufp := scratch.Get().(*[]byte)
	defer scratch.Put(bufp)
	for {
		// One byte past maxBody must be read to know a body is larger.
		want := min(int64(chunk), maxBody+1-b.size)
		if want <= 0 {
			p.usage.tooLarge.Add(1)
			b.streamOn(TooLarge, nil, src)
			return b, nil
		}
		if !b.reserve(want) {
			p.usage.overBudget.Add(1)
			b.streamOn(OverBudget, nil, src)
			return b, nil
		}
		buf := (*bufp)[:want]
		n, err := fill(src, buf)
		stored, storeErr := b.store(buf[:n])
		b.unreserve(want - int64(n))
		if storeErr != nil {
			p.usage.spillFailed.Add(1)
			// What was read and not stored is sent from a copy.
			b.streamOn(SpillFailed, bytes.Clone(buf[stored:n]), src)
			return b, nil
		}
		switch {
		case err == io.EOF:
			if b.size > maxBody {
				p.usage.tooLarge.Add(1)
				b.streamOn(TooLarge, nil, src)
			}
			return b, nil
		case err != nil:
			b.Close()
			return nil, fmt.Errorf("read request body: %w", err)
		}
	}
}

// holdSmall reads a body of a known length that fits in memory straight
// into a buffer of that length: most API calls are such bodies, and one
// copy is the proxy's largest per-request cost. (A server request's body
// ends at its declared length.)
func (b *Body) holdSmall(src io.Reader, declared int64) error {
	if !b.reserve(declared) {
		b.pool.usage.overBudget.Add(1)
		b.streamOn(OverBudget, nil, src)
		return nil
	}
	b.mem = make([]byte, declared)
	n, err := io.ReadFull(src, b.mem)
	b.mem, b.size = b.mem[:n], int64(n)
	if err != nil {
		b.Close()
		return fmt.Errorf("read request body: %w", err)
	}
	return nil
}

// fill reads into buf until it is full or src ends. Unlike io.ReadFull it
// passes src's error on as it is: a body cut short (io.ErrUnexpectedEOF
// from net/http) must not pass for one that ended (io.EOF).
func fill(src io.Reader, buf []byte) (int, error) {
	n := 0
	for n < len(buf) {
		m, err := src.Read(buf[n:])
		n += m
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

// reserve counts n more bytes against the budget, unless that spends it.
func (b *Body) reserve(n int64) bool {
	u := b.pool.usage
	if u.held.Add(n) > b.pool.limits.Budget {
		u.held.Add(-n)
		return false
	}
	b.reserved += n
	return true
}

func (b *Body) unreserve(n int64) {
	if n > 0 {
		b.pool.usage.held.Add(-n)
		b.reserved -= n
	}
}

// store appends p to what is held, spilling to a temporary file once the
// body outgrows memory. It returns how many bytes of p it stored.
func (b *Body) store(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	if b.file == nil && b.size+int64(len(p)) <= b.pool.limits.MemoryPerBody {
		b.mem = append(b.mem, p...)
		b.size += int64(len(p))
		return len(p), nil
	}
	if b.file == nil {
		if err := b.spill(); err != nil {
			return 0, err
		}
	}
	n, err := b.file.Write(p)
	b.size += int64(n)
	if err != nil {
		return n, fmt.Errorf("write request body to %s: %w", b.file.Name(), err)
	}
	return n, nil
}

// spill moves the body from memory to a new temporary file.
func (b *Body) spill() error {
	f, err := os.CreateTemp(b.pool.limits.TempDir, "caddy-wechat-replay-*")
	if err != nil {
		return fmt.Errorf("hold request body in a temporary file: %w", err)
	}
	// Unlinked at once where the system allows it (Unix), so that nothing
	// is left behind even if the process is killed; elsewhere on Close.
	removed := os.Remove(f.Name()) == nil
	if _, err := f.Write(b.mem); err != nil {
		f.Close()
		if !removed {
			os.Remove(f.Name())
		}
		return fmt.Errorf("write request body to %s: %w", f.Name(), err)
	}
	b.file, b.mem = f, nil
	b.removeOnClose = !removed
	b.pool.usage.spilled.Add(1)
	return nil
}

// streamOn gives up holding: the body goes on as what is held, then
// pending, then the unread rest of src.
func (b *Body) streamOn(reason Reason, pending []byte, src io.Reader) {
	b.reason = reason
	b.stream = io.MultiReader(b.held(), bytes.NewReader(pending), src)
}

// held reads what is held from its start.
func (b *Body) held() io.Reader {
	if b.file != nil {
		return io.NewSectionReader(b.file, 0, b.size)
	}
	return bytes.NewReader(b.mem)
}

// Replayable reports whether the whole body is held, so that Reader can
// give it again.
func (b *Body) Replayable() bool { return b.reason == Held }

// Reason says why the body is not held; Held when it is.
func (b *Body) Reason() Reason { return b.reason }

// Size is the length of a held body.
func (b *Body) Size() int64 { return b.size }

// InMemory returns a held body that did not spill; false otherwise. The
// caller may replace it with Rewrite.
func (b *Body) InMemory() ([]byte, bool) {
	return b.mem, b.Replayable() && b.file == nil
}

// Rewrite replaces a held body with what rewrite writes reading it, in
// memory or in a new temporary file as the body was held. The result must
// be no longer than the body (it is held under the body's reservation):
// rewrite may only remove. On an error the body is left as it was.
func (b *Body) Rewrite(rewrite func(dst io.Writer, src io.Reader) error) error {
	if !b.Replayable() {
		return errors.New("rewrite a body not held")
	}
	if b.file == nil {
		var out bytes.Buffer
		out.Grow(len(b.mem))
		if err := rewrite(&out, bytes.NewReader(b.mem)); err != nil {
			return err
		}
		if int64(out.Len()) > b.size {
			return errors.New("a rewrite may not make a body longer")
		}
		b.mem, b.size = out.Bytes(), int64(out.Len())
		return nil
	}
	f, err := os.CreateTemp(b.pool.limits.TempDir, "caddy-wechat-replay-*")
	if err != nil {
		return fmt.Errorf("rewrite request body: %w", err)
	}
	removed := os.Remove(f.Name()) == nil
	discard := func(err error) error {
		f.Close()
		if !removed {
			os.Remove(f.Name())
		}
		return err
	}
	counted := &countingWriter{w: f}
	if err := rewrite(counted, b.held()); err != nil {
		return discard(err)
	}
	if counted.n > b.size {
		return discard(errors.New("a rewrite may not make a body longer"))
	}
	old, oldRemove := b.file, b.removeOnClose
	b.file, b.size, b.removeOnClose = f, counted.n, !removed
	old.Close()
	if oldRemove {
		os.Remove(old.Name())
	}
	return nil
}

type countingWriter struct {
	w io.Writer
	n int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

// Reader reads the body: a held body from its start at every call; one
// not held, once, from where it was when Hold gave up holding.
func (b *Body) Reader() io.Reader {
	if !b.Replayable() {
		return b.stream
	}
	return b.held()
}

// Close releases what the body holds: its budget and its file.
func (b *Body) Close() error {
	if b == nil {
		return nil
	}
	b.unreserve(b.reserved)
	b.mem = nil
	if b.file == nil {
		return nil
	}
	err := b.file.Close()
	if b.removeOnClose {
		err = errors.Join(err, os.Remove(b.file.Name()))
	}
	b.file = nil
	return err
}
