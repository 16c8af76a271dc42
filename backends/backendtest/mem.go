package backendtest

import (
	"context"
	"fmt"
	"io"
	"sync"

	"github.com/mpathfs/mpathfs/backends"
)

// Mem is the one in-memory store of the tests: a Backend over a byte
// slice, with Discard and WriteZeroes, that several fake paths may share.
// A cancelled context fails every operation; a read past the end is
// short with io.EOF, a write past the end fails
// with io.ErrShortWrite, a discard or zeroing past the end fails. Tests
// that need to look at or change the bytes directly use Snapshot, Bytes,
// View and Update, which take the store's lock.
type Mem struct {
	mu   sync.RWMutex
	data []byte
}

var (
	_ backends.Backend    = (*Mem)(nil)
	_ backends.Discarder  = (*Mem)(nil)
	_ backends.ZeroWriter = (*Mem)(nil)
)

// NewMem returns a zero-filled store of size bytes.
func NewMem(size int64) *Mem { return &Mem{data: make([]byte, size)} }

// ReadAt reads from the store.
func (m *Mem) ReadAt(ctx context.Context, p []byte, off int64) (int, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	m.mu.RLock()
	defer m.mu.RUnlock()
	if off < 0 || off >= int64(len(m.data)) {
		return 0, io.EOF
	}
	n := copy(p, m.data[off:])
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

// WriteAt writes to the store.
func (m *Mem) WriteAt(ctx context.Context, p []byte, off int64) (int, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if off < 0 || off+int64(len(p)) > int64(len(m.data)) {
		return 0, io.ErrShortWrite
	}
	return copy(m.data[off:], p), nil
}

// Flush has nothing to write back: the store has no cache.
func (m *Mem) Flush(ctx context.Context) error { return ctx.Err() }

// Discard zeroes the range (the store's discarded blocks read as zeroes).
func (m *Mem) Discard(ctx context.Context, off, length int64) error {
	return m.WriteZeroes(ctx, off, length)
}

// WriteZeroes zeroes the range.
func (m *Mem) WriteZeroes(ctx context.Context, off, length int64) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if off < 0 || length < 0 || off+length > int64(len(m.data)) {
		return fmt.Errorf("range %d+%d beyond the %d-byte store", off, length, len(m.data))
	}
	clear(m.data[off : off+length])
	return nil
}

// Size is the store's size.
func (m *Mem) Size() int64 { return int64(len(m.data)) }

// Close does nothing; the store stays readable (several paths share it).
func (m *Mem) Close() error { return nil }

// Snapshot returns a copy of the whole store.
func (m *Mem) Snapshot() []byte {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return append([]byte(nil), m.data...)
}

// Bytes returns a copy of n bytes at off.
func (m *Mem) Bytes(off, n int64) []byte {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return append([]byte(nil), m.data[off:off+n]...)
}

// View calls f with the store's bytes under the read lock; f must not keep
// or change them.
func (m *Mem) View(f func(data []byte)) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	f(m.data)
}

// Update calls f with the store's bytes under the write lock, to fill or
// corrupt them in place.
func (m *Mem) Update(f func(data []byte)) {
	m.mu.Lock()
	defer m.mu.Unlock()
	f(m.data)
}
