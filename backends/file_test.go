package backends_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/mpathfs/mpathfs/backends"
	"github.com/mpathfs/mpathfs/backends/backendtest"
	"github.com/mpathfs/mpathfs/backends/internal/sysio"
	"github.com/mpathfs/mpathfs/internal/hangfs"
)

func newFileStore(t *testing.T, size int64) string {
	t.Helper()
	name := filepath.Join(t.TempDir(), "store.img")
	if err := os.WriteFile(name, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(name, size); err != nil {
		t.Fatal(err)
	}
	return name
}

func TestFileConformance(t *testing.T) {
	backendtest.Run(t, func(t *testing.T, size int64) backends.Backend {
		b, err := backends.OpenFile(newFileStore(t, size), backends.FileOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return b
	})
}

func TestFileConformanceDirect(t *testing.T) {
	backendtest.Run(t, func(t *testing.T, size int64) backends.Backend {
		name := newFileStore(t, size)
		b, err := backends.OpenFile(name, backends.FileOptions{Direct: true})
		if err != nil {
			t.Skipf("O_DIRECT not supported on %s: %v", filepath.Dir(name), err)
		}
		return b
	})
}

func TestOpenURIErrors(t *testing.T) {
	ctx := t.Context()
	for _, c := range []struct{ uri, want string }{
		{"", "empty path URI"},
		{"bogus://x/y", `unknown scheme "bogus"`},
		{"/nonexistent/store.img", "does not exist"},
		{"file://otherhost/x", "host"},
	} {
		_, err := backends.Open(ctx, c.uri)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("Open(%q) = %v, want an error containing %q", c.uri, err, c.want)
		}
	}
	name := newFileStore(t, 1<<20)
	for _, uri := range []string{name, "file://" + name} {
		b, err := backends.Open(ctx, uri)
		if err != nil {
			t.Fatalf("Open(%q): %v", uri, err)
		}
		if b.Size() != 1<<20 {
			t.Errorf("Open(%q).Size() = %d", uri, b.Size())
		}
		b.Close()
	}
}

// hungFile opens a file path on a hangfs mount: a file whose system calls
// the test can hang.
func hungFile(t *testing.T) (*hangfs.FS, *backends.File) {
	t.Helper()
	fsys := hangfs.Mount(t, 1<<20)
	b, err := backends.OpenFile(fsys.Path(), backends.FileOptions{})
	require.NoError(t, err)
	t.Cleanup(func() { b.Close() })
	require.False(t, b.Inline(), "a file on FUSE must not run its calls inline")
	return fsys, b
}

func deadline(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// settles waits (boundedly) for a pending operation to settle.
func settles(t *testing.T, p backends.Pending) {
	t.Helper()
	select {
	case <-p.Settled():
	case <-time.After(time.Minute):
		t.Fatalf("not settled a minute after the system call was released: %v", p)
	}
}

func notSettled(t *testing.T, p backends.Pending) {
	t.Helper()
	select {
	case <-p.Settled():
		t.Fatalf("settled while its system call is still held: %v", p)
	default:
	}
}

// fdsOf counts this process's descriptors open on name.
func fdsOf(t *testing.T, name string) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	require.NoError(t, err)
	n := 0
	for _, e := range ents {
		if l, err := os.Readlink(filepath.Join("/proc/self/fd", e.Name())); err == nil && l == name {
			n++
		}
	}
	return n
}

func TestFileHungReadReturnsAtDeadline(t *testing.T) {
	fsys, b := hungFile(t)
	ctx := t.Context()
	want := bytes.Repeat([]byte("mpathfs!"), 512)
	_, err := b.WriteAt(ctx, want, 0)
	require.NoError(t, err)

	fsys.Hold(hangfs.Read)
	p := make([]byte, len(want))
	n, err := b.ReadAt(deadline(t, 100*time.Millisecond), p, 0)
	assert.Zero(t, n)
	require.ErrorIs(t, err, context.DeadlineExceeded)
	var pe backends.Pending
	assert.False(t, errors.As(err, &pe), "a hung read is never pending: %v", err)
	assert.EqualValues(t, 1, b.Hung())
	fsys.WaitHeld(t, 1)

	fsys.Release()
	require.Eventually(t, func() bool { return b.Hung() == 0 }, time.Minute, time.Millisecond)
	assert.Equal(t, make([]byte, len(want)), p, "the late pread never fills the caller's buffer")
	n, err = b.ReadAt(ctx, p, 0)
	require.NoError(t, err)
	assert.Equal(t, want, p[:n])
}

func TestFileHungWriteIsPendingUntilThePwriteReturns(t *testing.T) {
	fsys, b := hungFile(t)
	fsys.Hold(hangfs.Write)
	data := bytes.Repeat([]byte{0xa5}, 8192)
	n, err := b.WriteAt(deadline(t, 100*time.Millisecond), data, 4096)
	assert.Zero(t, n)
	require.ErrorIs(t, err, context.DeadlineExceeded)
	var pe backends.Pending
	require.ErrorAs(t, err, &pe)
	assert.Equal(t, "the pwrite system call on "+fsys.Path()+" to return", pe.WaitingFor())
	fsys.WaitHeld(t, 1)
	notSettled(t, pe)
	for i := range data { // the caller reuses its buffer at once
		data[i] = 0x5a
	}
	assert.Equal(t, make([]byte, 8192), fsys.Data(4096, 8192), "nothing landed yet")

	fsys.Release()
	settles(t, pe)
	assert.Equal(t, bytes.Repeat([]byte{0xa5}, 8192), fsys.Data(4096, 8192), "the late write landed with the data it was given")
	assert.Zero(t, b.Hung())
}

func TestFileHungDiscardIsPending(t *testing.T) {
	fsys, b := hungFile(t)
	_, err := b.WriteAt(t.Context(), bytes.Repeat([]byte{1}, 4096), 0)
	require.NoError(t, err)
	fsys.Hold(hangfs.Allocate)
	err = b.Discard(deadline(t, 100*time.Millisecond), 0, 4096)
	var pe backends.Pending
	require.ErrorAs(t, err, &pe)
	assert.Contains(t, pe.WaitingFor(), "punch hole")
	fsys.WaitHeld(t, 1)
	notSettled(t, pe)
	fsys.Release()
	settles(t, pe)
	assert.Equal(t, make([]byte, 4096), fsys.Data(0, 4096))
}

func TestFileHungFlushAndProbe(t *testing.T) {
	fsys, b := hungFile(t)
	fsys.Hold(hangfs.Fsync | hangfs.Getattr)
	err := b.Flush(deadline(t, 100*time.Millisecond))
	require.ErrorIs(t, err, context.DeadlineExceeded)
	var pe backends.Pending
	assert.False(t, errors.As(err, &pe), "a flush is not a write-class operation")
	err = b.Probe(deadline(t, 100*time.Millisecond))
	require.ErrorIs(t, err, context.DeadlineExceeded, "the probe honours its deadline")
	assert.EqualValues(t, 2, b.Hung())
	fsys.WaitHeld(t, 2)
	err = b.Probe(deadline(t, time.Minute))
	require.ErrorIs(t, err, sysio.ErrStillRunning, "no second fstat while the first hangs")
	assert.Equal(t, 1, fsys.HeldOf(hangfs.Getattr))
	fsys.Release()
	require.Eventually(t, func() bool { return b.Hung() == 0 }, time.Minute, time.Millisecond)
	require.NoError(t, b.Probe(t.Context()))
}

// closes runs Close and fails the test if it does not return.
func closes(t *testing.T, c interface{ Close() error }) error {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- c.Close() }()
	select {
	case err := <-done:
		return err
	case <-time.After(time.Minute):
		t.Fatal("Close hangs")
		return nil
	}
}

func TestFileCloseWhileHung(t *testing.T) {
	fsys, b := hungFile(t)
	require.Equal(t, 1, fdsOf(t, fsys.Path()))
	fsys.Hold(hangfs.Read | hangfs.Write)
	_, err := b.ReadAt(deadline(t, 50*time.Millisecond), make([]byte, 4096), 0)
	require.ErrorIs(t, err, context.DeadlineExceeded)
	_, err = b.WriteAt(deadline(t, 50*time.Millisecond), bytes.Repeat([]byte{7}, 4096), 8192)
	var pe backends.Pending
	require.ErrorAs(t, err, &pe)
	fsys.WaitHeld(t, 2)

	require.NoError(t, closes(t, b))
	assert.Equal(t, 1, fdsOf(t, fsys.Path()), "the descriptor stays open while hung calls may still use its number")
	_, err = b.ReadAt(t.Context(), make([]byte, 10), 0)
	require.ErrorIs(t, err, os.ErrClosed)

	fsys.Release()
	settles(t, pe)
	require.Eventually(t, func() bool { return fdsOf(t, fsys.Path()) == 0 }, time.Minute, time.Millisecond,
		"the last hung call to return closes the descriptor")
	assert.Equal(t, bytes.Repeat([]byte{7}, 4096), fsys.Data(8192, 4096))
}

// TestFileCloseHungFlush: close(2) itself asks the FUSE server (FLUSH);
// Close returns even when that hangs, saying so.
func TestFileCloseHungFlush(t *testing.T) {
	fsys, b := hungFile(t)
	fsys.Hold(hangfs.Flush)
	err := closes(t, b)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "close(2) still running")
	fsys.Release()
	require.Eventually(t, func() bool { return fdsOf(t, fsys.Path()) == 0 }, time.Minute, time.Millisecond)
}

// TestFileInMemoryRunsInline: files in tmpfs run their calls in the caller's
// goroutine (no hand-off, no copy).
func TestFileInMemoryRunsInline(t *testing.T) {
	dir, err := os.MkdirTemp("/dev/shm", "mpathfs-test-")
	if err != nil {
		t.Skipf("skipped: no /dev/shm to make a file in memory: %v", err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	var sfs unix.Statfs_t
	require.NoError(t, unix.Statfs(dir, &sfs))
	if sfs.Type != unix.TMPFS_MAGIC {
		t.Skipf("skipped: /dev/shm is not tmpfs here")
	}
	name := filepath.Join(dir, "store")
	require.NoError(t, os.WriteFile(name, make([]byte, 4096), 0o600))
	b, err := backends.OpenFile(name, backends.FileOptions{})
	require.NoError(t, err)
	defer b.Close()
	assert.True(t, b.Inline())
}

func TestFileInlineURI(t *testing.T) {
	name := newFileStore(t, 1<<20)
	b, err := backends.Open(t.Context(), "file://"+name+"?inline=true")
	require.NoError(t, err)
	defer b.Close()
	assert.True(t, b.(*backends.File).Inline())
	_, err = backends.Open(t.Context(), "file://"+name+"?inline=maybe")
	assert.ErrorContains(t, err, "inline")
}

func TestFileConformanceInline(t *testing.T) {
	backendtest.Run(t, func(t *testing.T, size int64) backends.Backend {
		b, err := backends.OpenFile(newFileStore(t, size), backends.FileOptions{Inline: true})
		require.NoError(t, err)
		return b
	})
}

// BenchmarkFileRead reads through a file path on disk, with its calls
// handed to workers (the default) and inline.
func BenchmarkFileRead(b *testing.B) {
	for _, size := range []int{4096, 128 << 10} {
		for _, inline := range []bool{false, true} {
			name := fmt.Sprintf("%dk/inline=%v", size>>10, inline)
			b.Run(name, func(b *testing.B) {
				st := filepath.Join(b.TempDir(), "store")
				require.NoError(b, os.WriteFile(st, make([]byte, 16<<20), 0o600))
				f, err := backends.OpenFile(st, backends.FileOptions{Inline: inline})
				require.NoError(b, err)
				defer f.Close()
				ctx, cancel := context.WithTimeout(context.Background(), time.Hour)
				defer cancel()
				p := make([]byte, size)
				b.SetBytes(int64(size))
				b.ReportAllocs()
				for i := 0; b.Loop(); i++ {
					if _, err := f.ReadAt(ctx, p, int64(i*size)%(16<<20)); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}

func TestSleep(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		start := time.Now()
		require.NoError(t, backends.Sleep(context.Background(), time.Second))
		assert.Equal(t, time.Second, time.Since(start), "the fake clock advanced by d")
		require.NoError(t, backends.Sleep(context.Background(), -time.Second))
		ctx, cancel := context.WithTimeout(context.Background(), time.Millisecond)
		defer cancel()
		assert.ErrorIs(t, backends.Sleep(ctx, time.Hour), context.DeadlineExceeded)
	})
}
