package fault_test

import (
	"context"
	"sync/atomic"
	"time"

	"github.com/mpathfs/mpathfs/backends"
	"github.com/mpathfs/mpathfs/backends/backendtest"
)

// mem is the tests' in-memory store (backendtest.Mem) with every
// capability and counters. Each operation takes opTime (a real sleep, so
// synctest tests see it as natural duration) and is counted.
type mem struct {
	*backendtest.Mem
	opTime time.Duration
	ops    atomic.Int64 // operations that reached the store
	probes atomic.Int64
	closed atomic.Bool
	aborts atomic.Int64
}

var (
	_ backends.Backend    = (*mem)(nil)
	_ backends.Discarder  = (*mem)(nil)
	_ backends.ZeroWriter = (*mem)(nil)
	_ backends.Prober     = (*mem)(nil)
	_ backends.Inquirer   = (*mem)(nil)
	_ backends.Aborter    = (*mem)(nil)
)

func newMem(size int64) *mem { return &mem{Mem: backendtest.NewMem(size)} }

func (m *mem) do(ctx context.Context) error {
	m.ops.Add(1)
	if m.opTime > 0 {
		time.Sleep(m.opTime)
	}
	return ctx.Err()
}

func (m *mem) ReadAt(ctx context.Context, p []byte, off int64) (int, error) {
	if err := m.do(ctx); err != nil {
		return 0, err
	}
	return m.Mem.ReadAt(ctx, p, off)
}

func (m *mem) WriteAt(ctx context.Context, p []byte, off int64) (int, error) {
	if err := m.do(ctx); err != nil {
		return 0, err
	}
	return m.Mem.WriteAt(ctx, p, off)
}

func (m *mem) Flush(ctx context.Context) error { return m.do(ctx) }

func (m *mem) Discard(ctx context.Context, off, length int64) error {
	return m.WriteZeroes(ctx, off, length)
}

func (m *mem) WriteZeroes(ctx context.Context, off, length int64) error {
	if err := m.do(ctx); err != nil {
		return err
	}
	return m.Mem.WriteZeroes(ctx, off, length)
}

func (m *mem) Probe(ctx context.Context) error {
	m.probes.Add(1)
	return ctx.Err()
}

func (m *mem) Inquiry(context.Context) (backends.Inquiry, error) {
	return backends.Inquiry{Vendor: "TEST", Model: "MEM"}, nil
}

func (m *mem) Abort(error) { m.aborts.Add(1) }

func (m *mem) Close() error {
	m.closed.Store(true)
	return nil
}

// plain has the core contract only, no optional capability.
type plain struct{ backends.Backend }
