// Package backendtest is the conformance suite every backend and decorator
// passes: backendtest.Run(t, factory).
package backendtest

import (
	"bytes"
	"context"
	"errors"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/mpathfs/mpathfs/backends"
)

// Factory returns a fresh backend over a zero-filled store of the given size
// (a multiple of 4096, at least 1 MiB). The suite closes it.
type Factory func(t *testing.T, size int64) backends.Backend

const size = 4 << 20

// Run runs the conformance suite.
func Run(t *testing.T, newBackend Factory) {
	t.Helper()
	ctx := context.Background()
	open := func(t *testing.T) backends.Backend {
		b := newBackend(t, size)
		t.Cleanup(func() { b.Close() })
		return b
	}
	t.Run("Size", func(t *testing.T) {
		b := open(t)
		if got := b.Size(); got != size {
			t.Fatalf("Size() = %d, want %d", got, size)
		}
	})
	t.Run("ReadZeroes", func(t *testing.T) {
		b := open(t)
		p := bytes.Repeat([]byte{0xff}, 8192)
		n, err := b.ReadAt(ctx, p, 65536)
		if err != nil || n != len(p) {
			t.Fatalf("ReadAt = %d, %v", n, err)
		}
		if !allZero(p) {
			t.Fatal("a new store did not read as zeroes")
		}
	})
	t.Run("WriteReadBack", func(t *testing.T) {
		b := open(t)
		for _, c := range []struct{ off, n int64 }{{0, 4096}, {4096, 65536}, {size - 4096, 4096}, {1 << 20, 1 << 20}} {
			w := pattern(c.off, int(c.n))
			if n, err := b.WriteAt(ctx, w, c.off); err != nil || n != len(w) {
				t.Fatalf("WriteAt(%d, %d) = %d, %v", c.off, c.n, n, err)
			}
			r := make([]byte, c.n)
			if n, err := b.ReadAt(ctx, r, c.off); err != nil || n != len(r) {
				t.Fatalf("ReadAt(%d, %d) = %d, %v", c.off, c.n, n, err)
			}
			if !bytes.Equal(w, r) {
				t.Fatalf("read back at %d differs from what was written", c.off)
			}
		}
	})
	t.Run("BufferNotKept", func(t *testing.T) {
		b := open(t)
		w := pattern(0, 4096)
		if _, err := b.WriteAt(ctx, w, 8192); err != nil {
			t.Fatal(err)
		}
		want := append([]byte(nil), w...)
		for i := range w { // scribble over the caller's buffer after the call
			w[i] = 0xee
		}
		r := make([]byte, 4096)
		if _, err := b.ReadAt(ctx, r, 8192); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(r, want) {
			t.Fatal("the backend kept the caller's write buffer")
		}
	})
	t.Run("ShortReadAtEnd", func(t *testing.T) {
		b := open(t)
		p := make([]byte, 8192)
		n, err := b.ReadAt(ctx, p, size-4096)
		if n == len(p) {
			t.Fatalf("ReadAt across the end returned the full count %d", n)
		}
		if err == nil {
			t.Fatalf("ReadAt across the end returned %d bytes with no error", n)
		}
	})
	t.Run("Flush", func(t *testing.T) {
		b := open(t)
		if _, err := b.WriteAt(ctx, pattern(0, 4096), 0); err != nil {
			t.Fatal(err)
		}
		if err := b.Flush(ctx); err != nil {
			t.Fatalf("Flush: %v", err)
		}
	})
	t.Run("Parallel", func(t *testing.T) {
		b := open(t)
		const workers, blocks = 8, 64
		var wg sync.WaitGroup
		errs := make(chan error, workers)
		for w := 0; w < workers; w++ {
			wg.Add(1)
			go func(w int) {
				defer wg.Done()
				rng := rand.New(rand.NewPCG(uint64(w), 7))
				for i := 0; i < 200; i++ {
					blk := int64(w*blocks + rng.IntN(blocks)) // each worker owns its blocks
					off := blk * 4096
					buf := pattern(off^int64(i), 4096)
					if _, err := b.WriteAt(ctx, buf, off); err != nil {
						errs <- err
						return
					}
					r := make([]byte, 4096)
					if _, err := b.ReadAt(ctx, r, off); err != nil {
						errs <- err
						return
					}
					if !bytes.Equal(r, buf) {
						errs <- errors.New("parallel read back differs")
						return
					}
				}
			}(w)
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatal(err)
		}
	})
	t.Run("Discard", func(t *testing.T) {
		b := open(t)
		if !backends.Can(b, backends.CapDiscard) {
			t.Skip("backend does not offer discard")
		}
		d, ok := backends.As[backends.Discarder](b)
		if !ok {
			t.Fatal("Can(discard) is true but no Discarder in the chain")
		}
		w := pattern(0, 65536)
		if _, err := b.WriteAt(ctx, w, 0); err != nil {
			t.Fatal(err)
		}
		if err := d.Discard(ctx, 0, 65536); err != nil {
			t.Fatalf("Discard: %v", err)
		}
		r := make([]byte, 65536)
		if _, err := b.ReadAt(ctx, r, 0); err != nil {
			t.Fatal(err)
		}
		if !allZero(r) && !bytes.Equal(r, w) {
			t.Fatal("after a discard the range is neither zeroes nor its old data")
		}
	})
	t.Run("WriteZeroes", func(t *testing.T) {
		b := open(t)
		if !backends.Can(b, backends.CapWriteZeroes) {
			t.Skip("backend does not offer write-zeroes")
		}
		z, ok := backends.As[backends.ZeroWriter](b)
		if !ok {
			t.Fatal("Can(write-zeroes) is true but no ZeroWriter in the chain")
		}
		if _, err := b.WriteAt(ctx, pattern(4096, 16384), 4096); err != nil {
			t.Fatal(err)
		}
		if err := z.WriteZeroes(ctx, 8192, 4096); err != nil {
			t.Fatalf("WriteZeroes: %v", err)
		}
		r := make([]byte, 16384)
		if _, err := b.ReadAt(ctx, r, 4096); err != nil {
			t.Fatal(err)
		}
		if !allZero(r[4096:8192]) {
			t.Fatal("the zeroed range does not read as zeroes")
		}
		if !bytes.Equal(r[:4096], pattern(4096, 16384)[:4096]) || !bytes.Equal(r[8192:], pattern(4096, 16384)[8192:]) {
			t.Fatal("write-zeroes touched data outside its range")
		}
	})
	t.Run("Probe", func(t *testing.T) {
		b := open(t)
		if !backends.Can(b, backends.CapProbe) {
			t.Skip("backend does not offer probe")
		}
		p, _ := backends.As[backends.Prober](b)
		pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		if err := p.Probe(pctx); err != nil {
			t.Fatalf("Probe on a healthy backend: %v", err)
		}
	})
	t.Run("Inquiry", func(t *testing.T) {
		b := open(t)
		if !backends.Can(b, backends.CapInquiry) {
			t.Skip("backend does not offer inquiry")
		}
		q, _ := backends.As[backends.Inquirer](b)
		inq, err := q.Inquiry(ctx)
		if err != nil {
			t.Fatalf("Inquiry on a healthy backend: %v", err)
		}
		if inq.Transport == "" {
			t.Errorf("Inquiry reports no transport: %+v", inq)
		}
		again, err := q.Inquiry(ctx)
		if err != nil || again != inq {
			t.Errorf("Inquiry is not stable: %+v then %+v (%v)", inq, again, err)
		}
	})
	t.Run("CancelledContext", func(t *testing.T) {
		b := open(t)
		cctx, cancel := context.WithCancel(ctx)
		cancel()
		p := make([]byte, 4096)
		if _, err := b.ReadAt(cctx, p, 0); err == nil {
			t.Fatal("ReadAt with a cancelled context succeeded")
		}
	})
}

// pattern returns n bytes that depend on seed and position, so misplaced
// data is detected.
func pattern(seed int64, n int) []byte {
	p := make([]byte, n)
	x := uint64(seed)*0x9e3779b97f4a7c15 + 1
	for i := range p {
		x ^= x << 13
		x ^= x >> 7
		x ^= x << 17
		p[i] = byte(x)
	}
	return p
}

func allZero(p []byte) bool {
	for _, c := range p {
		if c != 0 {
			return false
		}
	}
	return true
}
