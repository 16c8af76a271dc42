package sysio

import (
	"bytes"
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// hang is an IOFunc that blocks until release is closed, then fills (reads)
// or checks (writes) the buffer it was given.
type hang struct {
	started chan struct{}
	release chan struct{}
	got     []byte // what a write saw when it ran on
}

func newHang() *hang { return &hang{started: make(chan struct{}, 1), release: make(chan struct{})} }

func (h *hang) read(p []byte, off int64) (int, error) {
	h.started <- struct{}{}
	<-h.release
	for i := range p {
		p[i] = 0xee
	}
	return len(p), nil
}

func (h *hang) write(p []byte, off int64) (int, error) {
	h.started <- struct{}{}
	<-h.release
	h.got = append([]byte(nil), p...)
	return len(p), nil
}

func deadline(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func TestReadHealthy(t *testing.T) {
	r := New("/x", false)
	p := make([]byte, 5000)
	n, err := r.ReadAt(deadline(t, time.Minute), "pread", func(b []byte, off int64) (int, error) {
		require.Zero(t, uintptr(addr(b))%Align, "private buffers are aligned for O_DIRECT")
		return copy(b, bytes.Repeat([]byte{7}, 4000)), errors.New("short")
	}, p, 0)
	assert.Equal(t, 4000, n)
	assert.EqualError(t, err, "short")
	assert.Equal(t, bytes.Repeat([]byte{7}, 4000), p[:4000])
	assert.Equal(t, make([]byte, 1000), p[4000:], "bytes past n untouched")
}

func TestReadHungReturnsAtDeadline(t *testing.T) {
	r := New("/mnt/x/lun.img", false)
	h := newHang()
	p := make([]byte, 4096)
	n, err := r.ReadAt(deadline(t, 50*time.Millisecond), "pread", h.read, p, 0)
	assert.Zero(t, n)
	require.ErrorIs(t, err, context.DeadlineExceeded)
	var he *HungError
	require.ErrorAs(t, err, &he)
	assert.Contains(t, err.Error(), "pread /mnt/x/lun.img")
	var pe interface{ Settled() <-chan struct{} }
	assert.False(t, errors.As(err, &pe), "a hung read is not pending")
	assert.EqualValues(t, 1, r.Hung())

	close(h.release)
	require.Eventually(t, func() bool { return r.Hung() == 0 }, time.Minute, time.Millisecond)
	assert.Equal(t, make([]byte, 4096), p, "the late read never touches the caller's buffer")
}

func TestWriteHungIsPendingUntilTheCallReturns(t *testing.T) {
	r := New("/mnt/x/lun.img", false)
	h := newHang()
	p := bytes.Repeat([]byte{1}, 4096)
	n, err := r.WriteAt(deadline(t, 50*time.Millisecond), "pwrite", h.write, p, 0)
	assert.Zero(t, n)
	require.ErrorIs(t, err, context.DeadlineExceeded)
	var pe *PendingError
	require.ErrorAs(t, err, &pe)
	assert.Equal(t, "the pwrite system call on /mnt/x/lun.img to return", pe.WaitingFor())
	select {
	case <-pe.Settled():
		t.Fatal("settled while the pwrite still runs")
	default:
	}
	// The caller reuses its buffer: the late write must carry the data it
	// was given, from its private copy.
	for i := range p {
		p[i] = 2
	}
	close(h.release)
	select {
	case <-pe.Settled():
	case <-time.After(time.Minute):
		t.Fatal("not settled after the pwrite returned")
	}
	assert.Equal(t, bytes.Repeat([]byte{1}, 4096), h.got)
	assert.Zero(t, r.Hung())
}

func TestDoHung(t *testing.T) {
	r := New("/dev/sdz", false)
	release := make(chan struct{})
	defer close(release)
	err := r.Do(deadline(t, 20*time.Millisecond), "fdatasync", false, func() error { <-release; return nil })
	var he *HungError
	require.ErrorAs(t, err, &he)
	var pe *PendingError
	assert.False(t, errors.As(err, &pe))

	err = r.Do(deadline(t, 20*time.Millisecond), "ioctl BLKDISCARD", true, func() error { <-release; return nil })
	require.ErrorAs(t, err, &pe)
	assert.Equal(t, "the ioctl BLKDISCARD system call on /dev/sdz to return", pe.WaitingFor())
}

func TestDoSingleDoesNotPileUp(t *testing.T) {
	r := New("/x", false)
	var s Single
	release := make(chan struct{})
	calls := 0
	fn := func() error { calls++; <-release; return nil }
	err := r.DoSingle(deadline(t, 20*time.Millisecond), &s, "fstat", fn)
	require.ErrorIs(t, err, context.DeadlineExceeded)
	err = r.DoSingle(deadline(t, time.Minute), &s, "fstat", fn)
	require.ErrorIs(t, err, ErrStillRunning)
	close(release)
	require.Eventually(t, func() bool { return r.Hung() == 0 }, time.Minute, time.Millisecond)
	require.NoError(t, r.DoSingle(deadline(t, time.Minute), &s, "fstat", fn))
	assert.Equal(t, 2, calls)
}

func TestCancelWithoutDeadline(t *testing.T) {
	r := New("/x", false)
	h := newHang()
	ctx, cancel := context.WithCancel(context.Background())
	go func() { <-h.started; cancel() }()
	_, err := r.WriteAt(ctx, "pwrite", h.write, make([]byte, 10), 0)
	require.ErrorIs(t, err, context.Canceled)
	var pe *PendingError
	require.ErrorAs(t, err, &pe)
	close(h.release)
	<-pe.Settled()
}

func TestInlineRunsOnTheCallersBuffer(t *testing.T) {
	r := New("/x", true)
	p := make([]byte, 8)
	_, err := r.ReadAt(context.Background(), "pread", func(b []byte, off int64) (int, error) {
		require.Equal(t, addr(p), addr(b))
		return len(b), nil
	}, p, 0)
	require.NoError(t, err)
}

// TestHealthyUnderHang: calls keep completing on other workers while some
// hang, with the race detector watching the buffers.
func TestHealthyUnderHang(t *testing.T) {
	r := New("/x", false)
	release := make(chan struct{})
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := r.ReadAt(deadline(t, 30*time.Millisecond), "pread", func(b []byte, off int64) (int, error) {
				<-release
				return copy(b, "late"), nil
			}, make([]byte, 64), 0)
			assert.ErrorIs(t, err, context.DeadlineExceeded)
		}()
	}
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p := make([]byte, 512)
			for i := range 200 {
				v := byte(g*31 + i)
				n, err := r.ReadAt(deadline(t, time.Minute), "pread", func(b []byte, off int64) (int, error) {
					for j := range b {
						b[j] = v
					}
					return len(b), nil
				}, p, 0)
				if !assert.NoError(t, err) || !assert.Equal(t, 512, n) {
					return
				}
				assert.Equal(t, bytes.Repeat([]byte{v}, 512), p)
				w := bytes.Repeat([]byte{v}, 100)
				_, err = r.WriteAt(deadline(t, time.Minute), "pwrite", func(b []byte, off int64) (int, error) {
					if !bytes.Equal(b, w) {
						return 0, errors.New("write saw other data")
					}
					return len(b), nil
				}, w, 0)
				assert.NoError(t, err)
			}
		}()
	}
	wg.Wait()
	assert.EqualValues(t, 4, r.Hung())
	close(release)
	require.Eventually(t, func() bool { return r.Hung() == 0 }, time.Minute, time.Millisecond)
}

// TestWatchdogWakes: after the watchdog went to sleep (no call waited for a
// while), a hung call still returns at its deadline.
func TestWatchdogWakes(t *testing.T) {
	r := New("/x", false)
	_, _ = r.ReadAt(deadline(t, time.Minute), "pread", nop, make([]byte, 1), 0)
	require.Eventually(t, wdAsleep.Load, time.Minute, 10*time.Millisecond, "the watchdog sleeps when idle")
	h := newHang()
	defer close(h.release)
	_, err := r.ReadAt(deadline(t, 20*time.Millisecond), "pread", h.read, make([]byte, 1), 0)
	require.ErrorIs(t, err, context.DeadlineExceeded)
}

func TestBufferClasses(t *testing.T) {
	for _, n := range []int{1, 4096, 4097, 1 << 20, 1<<maxShift + 1} {
		b := getBuf(n)
		assert.GreaterOrEqual(t, len(*b), n)
		assert.Zero(t, uintptr(addr(*b))%Align)
		putBuf(b)
	}
}

func nop(p []byte, off int64) (int, error) { return len(p), nil }

func benchRunner(b *testing.B, r *Runner, ctx context.Context) {
	buf := make([]byte, 4096)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := r.ReadAt(ctx, "pread", nop, buf, 0); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkHandOff is the runner's own cost per 4 KiB read (a call that
// does nothing): inline, and handed to a worker with and without a deadline.
func BenchmarkHandOff(b *testing.B) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Hour)
	defer cancel()
	b.Run("inline", func(b *testing.B) { benchRunner(b, New("x", true), ctx) })
	b.Run("worker/deadline", func(b *testing.B) { benchRunner(b, New("x", false), ctx) })
	b.Run("worker/background", func(b *testing.B) { benchRunner(b, New("x", false), context.Background()) })
}
