package fusedev

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/mpathfs/mpathfs/backends"
	"github.com/mpathfs/mpathfs/ioerr"
)

func TestToErrno(t *testing.T) {
	wrap := func(err error) error { return fmt.Errorf("nmp: write 4096@0: %w", err) }
	for _, tc := range []struct {
		name string
		err  error
		want syscall.Errno
	}{
		{"nil", nil, 0},
		{"all paths down", ioerr.ErrAllPathsDown, syscall.EIO},
		{"all paths down wrapped", wrap(ioerr.ErrAllPathsDown), syscall.EIO},
		{"no paths", ioerr.ErrNoPaths, syscall.EIO},
		{"path failure", ioerr.NewError(ioerr.ClassPathFailure, "read", syscall.ECONNRESET), syscall.EIO},
		{"path failure sentinel", wrap(ioerr.ErrPathFailure), syscall.EIO},
		{"permanent loss", ioerr.NewError(ioerr.ClassPermanentLoss, "read", nil), syscall.EIO},
		{"not ready", ioerr.NewError(ioerr.ClassNotReady, "write", nil), syscall.EIO},
		{"retryable", wrap(ioerr.NewError(ioerr.ClassRetryable, "write", syscall.EBUSY)), syscall.EIO},
		{"closed", ioerr.ErrClosed, syscall.EIO},
		{"device error ENOSPC", ioerr.NewError(ioerr.ClassDeviceError, "write", syscall.ENOSPC), syscall.ENOSPC},
		{"device error EROFS wrapped", wrap(ioerr.NewError(ioerr.ClassDeviceError, "write", &os.PathError{Op: "pwrite", Path: "x", Err: syscall.EROFS})), syscall.EROFS},
		{"device error no errno", ioerr.NewError(ioerr.ClassDeviceError, "read", errors.New("medium error")), syscall.EIO},
		{"device error sentinel", ioerr.ErrDeviceError, syscall.EIO},
		{"reservation conflict", ioerr.NewError(ioerr.ClassConflict, "write", ioerr.ErrReservationConflict), syscall.EBADE},
		{"reservation conflict wrapped", wrap(&ioerr.Error{Class: ioerr.ClassConflict, Op: "write", Path: "p1", Err: ioerr.ErrReservationConflict}), syscall.EBADE},
		{"reservation conflict sentinel", ioerr.ErrConflict, syscall.EBADE},
		{"out of range", ioerr.ErrOutOfRange, syscall.EINVAL},
		{"out of range wrapped", wrap(ioerr.ErrOutOfRange), syscall.EINVAL},
		{"not supported", backends.ErrNotSupported, syscall.EOPNOTSUPP},
		{"not supported wrapped", wrap(backends.ErrNotSupported), syscall.EOPNOTSUPP},
		{"canceled", context.Canceled, syscall.EINTR},
		{"canceled wrapped", wrap(context.Canceled), syscall.EINTR},
		{"deadline", context.DeadlineExceeded, syscall.EIO},
		{"path failure from deadline", ioerr.NewError(ioerr.ClassPathFailure, "read", context.DeadlineExceeded), syscall.EIO},
		{"errno", syscall.EROFS, syscall.EROFS},
		{"errno wrapped", &os.PathError{Op: "pread", Path: "x", Err: syscall.ENXIO}, syscall.ENXIO},
		{"zero errno", syscall.Errno(0), syscall.EIO},
		{"other", errors.New("boom"), syscall.EIO},
	} {
		if got := ToErrno(tc.err); got != tc.want {
			t.Errorf("%s: ToErrno(%v) = %v (%d), want %v (%d)", tc.name, tc.err, got, got, tc.want, tc.want)
		}
	}
}

func TestGetattr(t *testing.T) {
	d := newTestDev(t, "disk0", 64<<20)
	_, mp := mountT(t, Options{}, d)
	var st syscall.Stat_t
	if err := syscall.Stat(filepath.Join(mp, "disk0"), &st); err != nil {
		t.Fatal(err)
	}
	if st.Size != 64<<20 {
		t.Errorf("size %d, want %d", st.Size, 64<<20)
	}
	if st.Mode != syscall.S_IFREG|0o600 {
		t.Errorf("mode %o, want %o", st.Mode, syscall.S_IFREG|0o600)
	}
	if st.Uid != uint32(os.Geteuid()) {
		t.Errorf("uid %d, want %d", st.Uid, os.Geteuid())
	}
	if st.Mtim.Sec == 0 {
		t.Errorf("mtime is zero")
	}
	ents, err := os.ReadDir(mp)
	if err != nil {
		t.Fatal(err)
	}
	if len(ents) != 1 || ents[0].Name() != "disk0" {
		t.Errorf("ls %s = %v, want [disk0]", mp, ents)
	}
}

func TestReadWriteRoundTrip(t *testing.T) {
	const size = 64 << 20
	d := newTestDev(t, "disk0", size)
	_, mp := mountT(t, Options{}, d)
	p := filepath.Join(mp, "disk0")
	for _, direct := range []bool{false, true} {
		flags := unix.O_RDWR
		if direct {
			flags |= unix.O_DIRECT
		}
		fd, err := unix.Open(p, flags, 0)
		if err != nil {
			t.Fatalf("open direct=%v: %v", direct, err)
		}
		for i, n := range []int{512, 4096, 128 << 10, 1 << 20, 3 << 20} {
			off := int64(i+1) * (4 << 20)
			if direct {
				off += 4096
			} else {
				off += 13
			}
			want := pattern(n, byte(i)^0x5a)
			buf := alignedBuf(n)
			copy(buf, want)
			if k, err := unix.Pwrite(fd, buf, off); err != nil || k != n {
				t.Fatalf("direct=%v pwrite %d@%d = %d, %v", direct, n, off, k, err)
			}
			got := alignedBuf(n)
			if k, err := unix.Pread(fd, got, off); err != nil || k != n {
				t.Fatalf("direct=%v pread %d@%d = %d, %v", direct, n, off, k, err)
			}
			if !bytes.Equal(got, want) {
				t.Fatalf("direct=%v %d@%d: read back differs", direct, n, off)
			}
			// The backing file holds the data once the write returned.
			raw := make([]byte, n)
			if _, err := d.f.ReadAt(context.Background(), raw, off); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(raw, want) {
				t.Fatalf("direct=%v %d@%d: backing file differs", direct, n, off)
			}
		}
		unix.Close(fd)
	}
}

func TestBufferedDirectCoherence(t *testing.T) {
	d := newTestDev(t, "disk0", 16<<20)
	_, mp := mountT(t, Options{}, d)
	p := filepath.Join(mp, "disk0")
	buffered, err := unix.Open(p, unix.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(buffered)
	direct, err := unix.Open(p, unix.O_RDWR|unix.O_DIRECT, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(direct)
	for round := range 3 {
		// Buffered read first, so a page cache would hold stale data.
		old := make([]byte, 8192)
		if _, err := unix.Pread(buffered, old, 1<<20); err != nil {
			t.Fatal(err)
		}
		want := pattern(8192, byte(round))
		if _, err := unix.Pwrite(buffered, want, 1<<20); err != nil {
			t.Fatal(err)
		}
		got := alignedBuf(8192)
		if _, err := unix.Pread(direct, got, 1<<20); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("round %d: O_DIRECT read after buffered write differs", round)
		}
		want2 := alignedBuf(8192)
		copy(want2, pattern(8192, byte(round)+100))
		if _, err := unix.Pwrite(direct, want2, 1<<20); err != nil {
			t.Fatal(err)
		}
		got2 := make([]byte, 8192)
		if _, err := unix.Pread(buffered, got2, 1<<20); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got2, want2) {
			t.Fatalf("round %d: buffered read after O_DIRECT write differs", round)
		}
	}
}

func TestEndOfDevice(t *testing.T) {
	const size = 1 << 20
	d := newTestDev(t, "disk0", size)
	_, mp := mountT(t, Options{}, d)
	p := filepath.Join(mp, "disk0")
	fd, err := unix.Open(p, unix.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	buf := make([]byte, 8192)
	if n, err := unix.Pread(fd, buf, size); n != 0 || err != nil {
		t.Errorf("read at EOF = %d, %v; want 0, nil", n, err)
	}
	if n, err := unix.Pread(fd, buf, size+4096); n != 0 || err != nil {
		t.Errorf("read after EOF = %d, %v; want 0, nil", n, err)
	}
	if n, err := unix.Pread(fd, buf, size-1000); n != 1000 || err != nil {
		t.Errorf("read across EOF = %d, %v; want 1000, nil", n, err)
	}
	if n, err := unix.Pwrite(fd, buf, size-1000); n != 1000 || err != nil {
		t.Errorf("write across EOF = %d, %v; want 1000 (short), nil", n, err)
	}
	if n, err := unix.Pwrite(fd, buf, size); err != syscall.ENOSPC {
		t.Errorf("write at EOF = %d, %v; want ENOSPC", n, err)
	}
	if n, err := unix.Pwrite(fd, buf, size+1<<20); err != syscall.ENOSPC {
		t.Errorf("write after EOF = %d, %v; want ENOSPC", n, err)
	}
	var st syscall.Stat_t
	if err := syscall.Stat(p, &st); err != nil || st.Size != size {
		t.Errorf("size after writes at the end = %d, %v; want %d", st.Size, err, size)
	}
}

func TestSetattr(t *testing.T) {
	const size = 4 << 20
	d := newTestDev(t, "disk0", size)
	_, mp := mountT(t, Options{}, d)
	p := filepath.Join(mp, "disk0")
	if err := os.WriteFile(p, []byte("hello"), 0o600); err != nil { // O_TRUNC is ignored
		t.Fatalf("open O_TRUNC and write: %v", err)
	}
	if err := os.Truncate(p, size); err != nil {
		t.Errorf("truncate to the same size: %v", err)
	}
	if err := os.Truncate(p, size/2); errnoOf(err) != syscall.EINVAL {
		t.Errorf("truncate to half: %v, want EINVAL", err)
	}
	if err := os.Truncate(p, 2*size); errnoOf(err) != syscall.EINVAL {
		t.Errorf("truncate to double: %v, want EINVAL", err)
	}
	if err := os.Chmod(p, 0o644); errnoOf(err) != syscall.EPERM {
		t.Errorf("chmod: %v, want EPERM", err)
	}
	now := time.Now().Add(-time.Hour).Truncate(time.Second)
	if err := os.Chtimes(p, now, now); err != nil {
		t.Errorf("chtimes: %v", err)
	}
	fi, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Size() != size {
		t.Errorf("size %d after O_TRUNC open, want %d", fi.Size(), size)
	}
	if !fi.ModTime().Equal(now) {
		t.Errorf("mtime %v, want %v", fi.ModTime(), now)
	}
	got := make([]byte, 5)
	if _, err := d.f.ReadAt(context.Background(), got, 0); err != nil || string(got) != "hello" {
		t.Errorf("backing file starts with %q, %v", got, err)
	}
}

func TestFsyncReachesFlush(t *testing.T) {
	d := newTestDev(t, "disk0", 4<<20)
	_, mp := mountT(t, Options{}, d)
	p := filepath.Join(mp, "disk0")
	fd, err := unix.Open(p, unix.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := unix.Pwrite(fd, []byte("data"), 0); err != nil {
		t.Fatal(err)
	}
	before := d.flushes.Load()
	if err := unix.Fsync(fd); err != nil {
		t.Fatalf("fsync: %v", err)
	}
	if got := d.flushes.Load() - before; got != 1 {
		t.Errorf("fsync: %d device flushes, want 1", got)
	}
	if err := unix.Fdatasync(fd); err != nil {
		t.Fatalf("fdatasync: %v", err)
	}
	if got := d.flushes.Load() - before; got != 2 {
		t.Errorf("fdatasync: %d device flushes in total, want 2", got)
	}
	// A failing flush is fsync's error.
	d.set(func(d *testDev) { d.mu.flushErr = ioerr.ErrAllPathsDown })
	if err := unix.Fsync(fd); err != syscall.EIO {
		t.Errorf("fsync with APD: %v, want EIO", err)
	}
	d.set(func(d *testDev) { d.mu.flushErr = nil })
	// close of a descriptor that wrote flushes; of one that only read, not.
	before = d.flushes.Load()
	if err := unix.Close(fd); err != nil {
		t.Fatalf("close: %v", err)
	}
	if got := d.flushes.Load() - before; got != 1 {
		t.Errorf("close after write: %d device flushes, want 1", got)
	}
	ro, err := unix.Open(p, unix.O_RDONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := unix.Pread(ro, make([]byte, 10), 0); err != nil {
		t.Fatal(err)
	}
	before = d.flushes.Load()
	unix.Close(ro)
	if got := d.flushes.Load() - before; got != 0 {
		t.Errorf("close after read: %d device flushes, want 0", got)
	}
}

func TestFallocate(t *testing.T) {
	const size = 8 << 20
	d := newTestDev(t, "disk0", size)
	_, mp := mountT(t, Options{}, d)
	p := filepath.Join(mp, "disk0")
	fd, err := unix.Open(p, unix.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	fill := func() {
		t.Helper()
		if _, err := unix.Pwrite(fd, bytes.Repeat([]byte{0xab}, 1<<20), 1<<20); err != nil {
			t.Fatal(err)
		}
	}
	zeroAt := func(off, n int64) bool {
		t.Helper()
		b := make([]byte, n)
		if _, err := unix.Pread(fd, b, off); err != nil {
			t.Fatal(err)
		}
		return !slices.ContainsFunc(b, func(c byte) bool { return c != 0 })
	}

	// Punch hole (what a loop device sends for discards and write-zeroes)
	// must leave zeros: it is a write-zeroes, never a discard.
	fill()
	if err := unix.Fallocate(fd, unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, 1<<20, 64<<10); err != nil {
		t.Fatalf("punch hole: %v", err)
	}
	if d.zeroes.Load() != 1 || d.discards.Load() != 0 {
		t.Errorf("punch hole: %d write-zeroes and %d discards, want 1 and 0", d.zeroes.Load(), d.discards.Load())
	}
	if !zeroAt(1<<20, 64<<10) || zeroAt(1<<20+64<<10, 4096) {
		t.Errorf("punch hole: wrong range zeroed")
	}

	fill()
	if err := unix.Fallocate(fd, unix.FALLOC_FL_ZERO_RANGE, 1<<20+4096, 8192); err != nil {
		t.Fatalf("zero range: %v", err)
	}
	if err := unix.Fallocate(fd, unix.FALLOC_FL_ZERO_RANGE|unix.FALLOC_FL_KEEP_SIZE, 1<<20+65536, 8192); err != nil {
		t.Fatalf("zero range keep size: %v", err)
	}
	if d.zeroes.Load() != 3 {
		t.Errorf("zero range: %d write-zeroes, want 3", d.zeroes.Load())
	}
	if !zeroAt(1<<20+4096, 8192) || !zeroAt(1<<20+65536, 8192) || zeroAt(1<<20, 4096) {
		t.Errorf("zero range: wrong range zeroed")
	}

	if err := unix.Fallocate(fd, 0, 0, size); err != nil {
		t.Errorf("allocate within the device: %v, want success", err)
	}
	if err := unix.Fallocate(fd, 0, size-4096, 8192); err != syscall.ENOSPC {
		t.Errorf("allocate beyond the end: %v, want ENOSPC", err)
	}
	// Ranges beyond the end are clipped.
	if err := unix.Fallocate(fd, unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, size-4096, 1<<20); err != nil {
		t.Errorf("punch hole across the end: %v", err)
	}

	// A device that cannot write zeroes (nor discard) gets zeros written.
	d.set(func(d *testDev) {
		d.mu.discardErr = fmt.Errorf("path vmhba0:C0:T0:L0: %w", backends.ErrNotSupported)
		d.mu.zeroErr = backends.ErrNotSupported
	})
	fill()
	writes := d.writes.Load()
	if err := unix.Fallocate(fd, unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, 1<<20, 4096); err != nil {
		t.Errorf("punch hole, write-zeroes unsupported: %v, want zeros written", err)
	}
	d.set(func(d *testDev) { d.mu.zeroErr = fmt.Errorf("zero range: %w", syscall.EOPNOTSUPP) })
	if err := unix.Fallocate(fd, unix.FALLOC_FL_ZERO_RANGE, 1<<20+8192, 3<<19); err != nil {
		t.Errorf("zero range, EOPNOTSUPP: %v, want zeros written", err)
	}
	if got := d.writes.Load() - writes; got != 3 {
		t.Errorf("%d writes of zeros, want 3 (4 KiB, then 1.5 MiB in chunks of at most 1 MiB)", got)
	}
	if !zeroAt(1<<20, 4096) || zeroAt(1<<20+4096, 4096) || !zeroAt(1<<20+8192, 3<<19) {
		t.Errorf("zeros written: wrong range zeroed")
	}
	d.set(func(d *testDev) { d.mu.zeroErr = errors.New("medium error") })
	if err := unix.Fallocate(fd, unix.FALLOC_FL_ZERO_RANGE, 0, 4096); err != syscall.EIO {
		t.Errorf("zero range failing: %v, want EIO", err)
	}
	if err := unix.Fallocate(fd, unix.FALLOC_FL_COLLAPSE_RANGE, 0, 4096); err != syscall.EOPNOTSUPP {
		t.Errorf("collapse range: %v, want EOPNOTSUPP", err)
	}
}

func TestErrnoThroughMount(t *testing.T) {
	d := newTestDev(t, "disk0", 4<<20)
	_, mp := mountT(t, Options{}, d)
	fd, err := unix.Open(filepath.Join(mp, "disk0"), unix.O_RDWR|unix.O_DIRECT, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	buf := alignedBuf(4096)
	for _, tc := range []struct {
		name       string
		rerr, werr error
		want       syscall.Errno
	}{
		{"APD", ioerr.ErrAllPathsDown, ioerr.ErrAllPathsDown, syscall.EIO},
		{"no paths", ioerr.ErrNoPaths, ioerr.ErrNoPaths, syscall.EIO},
		{"PDL", ioerr.NewError(ioerr.ClassPermanentLoss, "io", nil), ioerr.NewError(ioerr.ClassPermanentLoss, "io", nil), syscall.EIO},
		{"no space", ioerr.NewError(ioerr.ClassDeviceError, "io", syscall.ENOSPC), ioerr.NewError(ioerr.ClassDeviceError, "io", syscall.ENOSPC), syscall.ENOSPC},
		{"read-only", ioerr.NewError(ioerr.ClassDeviceError, "io", syscall.EROFS), ioerr.NewError(ioerr.ClassDeviceError, "io", syscall.EROFS), syscall.EROFS},
		{"medium", ioerr.NewError(ioerr.ClassDeviceError, "io", nil), ioerr.NewError(ioerr.ClassDeviceError, "io", nil), syscall.EIO},
	} {
		d.set(func(d *testDev) { d.mu.readErr, d.mu.writeErr = tc.rerr, tc.werr })
		if _, err := unix.Pread(fd, buf, 0); err != tc.want {
			t.Errorf("%s: pread: %v, want %v", tc.name, err, tc.want)
		}
		if _, err := unix.Pwrite(fd, buf, 0); err != tc.want {
			t.Errorf("%s: pwrite: %v, want %v", tc.name, err, tc.want)
		}
	}
	d.set(func(d *testDev) { d.mu.readErr, d.mu.writeErr = nil, nil })
	if _, err := unix.Pread(fd, buf, 0); err != nil {
		t.Errorf("pread after errors cleared: %v", err)
	}
}

func TestAddRemoveDevice(t *testing.T) {
	d0 := newTestDev(t, "disk0", 1<<20)
	s, mp := mountT(t, Options{}, d0)
	ls := func() []string {
		t.Helper()
		ents, err := os.ReadDir(mp)
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, e := range ents {
			names = append(names, e.Name())
		}
		return names
	}
	// Look the name up before it exists, as a waiting udev rule would.
	if _, err := os.Stat(filepath.Join(mp, "disk1")); !os.IsNotExist(err) {
		t.Fatalf("stat disk1 before AddDevice: %v", err)
	}
	d1 := newTestDev(t, "disk1", 2<<20)
	if err := s.AddDevice(d1); err != nil {
		t.Fatal(err)
	}
	if got := ls(); !slices.Equal(got, []string{"disk0", "disk1"}) {
		t.Errorf("ls after AddDevice = %v", got)
	}
	fi, err := os.Stat(filepath.Join(mp, "disk1"))
	if err != nil || fi.Size() != 2<<20 {
		t.Fatalf("stat disk1: %v, %v", fi, err)
	}
	if err := s.AddDevice(d1); !errors.Is(err, ErrExists) {
		t.Errorf("AddDevice twice: %v, want ErrExists", err)
	}
	f, err := os.Open(filepath.Join(mp, "disk1"))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.RemoveDevice("disk1"); !errors.Is(err, ErrBusy) {
		t.Errorf("RemoveDevice while open: %v, want ErrBusy", err)
	}
	f.Close()
	// RELEASE follows close asynchronously.
	deadline := time.Now().Add(5 * time.Second)
	for {
		err = s.RemoveDevice("disk1")
		if !errors.Is(err, ErrBusy) || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("RemoveDevice: %v", err)
	}
	if got := ls(); !slices.Equal(got, []string{"disk0"}) {
		t.Errorf("ls after RemoveDevice = %v", got)
	}
	if _, err := os.Stat(filepath.Join(mp, "disk1")); !os.IsNotExist(err) {
		t.Errorf("stat disk1 after RemoveDevice: %v, want ENOENT", err)
	}
	if err := s.RemoveDevice("disk1"); !errors.Is(err, ErrNotFound) {
		t.Errorf("RemoveDevice twice: %v, want ErrNotFound", err)
	}
	// The name can come back, with another size.
	d1b := newTestDev(t, "disk1", 3<<20)
	if err := s.AddDevice(d1b); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(filepath.Join(mp, "disk1")); err != nil || fi.Size() != 3<<20 {
		t.Errorf("stat re-added disk1: %v, %v", fi, err)
	}
	bad := newTestDev(t, "bad", 1<<20)
	bad.name = "a/b"
	if err := s.AddDevice(bad); !errors.Is(err, ErrBadName) {
		t.Errorf("AddDevice a/b: %v, want ErrBadName", err)
	}
}

func TestUnmountWithIOInFlight(t *testing.T) {
	d := newTestDev(t, "disk0", 4<<20)
	s, mp := mountT(t, Options{UnmountTimeout: 300 * time.Millisecond}, d)
	hang := make(chan struct{})
	d.set(func(d *testDev) { d.mu.hang = hang })
	defer close(hang)
	fd, err := unix.Open(filepath.Join(mp, "disk0"), unix.O_RDWR|unix.O_DIRECT, 0)
	if err != nil {
		t.Fatal(err)
	}
	ioErr := make(chan error, 2)
	for i := range 2 {
		go func() {
			_, err := unix.Pread(fd, alignedBuf(4096), int64(i)*4096)
			ioErr <- err
		}()
	}
	for range 2 {
		select {
		case <-d.inHang:
		case <-time.After(5 * time.Second):
			t.Fatal("reads did not reach the device")
		}
	}
	start := time.Now()
	done := make(chan error, 1)
	go func() { done <- s.Unmount() }()
	select {
	case err := <-done:
		t.Logf("Unmount with I/O in flight took %v: %v", time.Since(start).Round(time.Millisecond), err)
		if err == nil {
			t.Errorf("Unmount of a busy mount returned nil; want the busy error reported")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Unmount with I/O in flight did not return in 10s")
	}
	for range 2 {
		select {
		case err := <-ioErr:
			if err == nil {
				t.Errorf("read in flight at unmount succeeded")
			}
		case <-time.After(5 * time.Second):
			t.Fatal("read in flight did not return after Unmount")
		}
	}
	unix.Close(fd)
	if _, listed := findFuseMount(cleanAbs(mp)); listed {
		t.Errorf("still mounted after Unmount")
	}
	s.Wait() // returns: the serve loops ended
	if err := s.AddDevice(newTestDev(t, "late", 1<<20)); !errors.Is(err, ErrClosed) {
		t.Errorf("AddDevice after Unmount: %v, want ErrClosed", err)
	}
}

func TestUnmountClean(t *testing.T) {
	d := newTestDev(t, "disk0", 1<<20)
	s, mp := mountT(t, Options{}, d)
	if err := os.WriteFile(filepath.Join(mp, "disk0"), []byte("x"), 0); err != nil {
		t.Fatal(err)
	}
	if err := s.Unmount(); err != nil {
		t.Fatalf("Unmount: %v", err)
	}
	if err := s.Unmount(); err != nil {
		t.Fatalf("second Unmount: %v", err)
	}
	s.Wait()
	if _, listed := findFuseMount(cleanAbs(mp)); listed {
		t.Errorf("still mounted")
	}
}

func TestCleanStale(t *testing.T) {
	need(t, "fusermount3")
	mp := t.TempDir()
	if err := CleanStale(mp); err != nil {
		t.Fatalf("CleanStale on an empty directory: %v", err)
	}
	child := startChildMount(t, mp)
	if err := CleanStale(mp); !errors.Is(err, ErrLiveMount) {
		t.Fatalf("CleanStale on a live mount: %v, want ErrLiveMount", err)
	}
	// Crash: SIGKILL, by PID.
	if err := child.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = child.Wait()
	// statfs always reaches the server; stat of the root may be cached.
	var sfs syscall.Statfs_t
	if err := syscall.Statfs(mp, &sfs); err != syscall.ENOTCONN {
		t.Fatalf("statfs after the crash: %v, want ENOTCONN", err)
	}
	if err := CleanStale(mp); err != nil {
		t.Fatalf("CleanStale: %v", err)
	}
	var st syscall.Stat_t
	if err := syscall.Stat(mp, &st); err != nil {
		t.Fatalf("stat after CleanStale: %v", err)
	}
	if _, listed := findFuseMount(cleanAbs(mp)); listed {
		t.Fatalf("still listed in mountinfo after CleanStale")
	}
	// The mount point is usable again.
	d := newTestDev(t, "disk0", 1<<20)
	s, err := Mount(mp, []Device{d}, Options{UnmountTimeout: time.Second})
	if err != nil {
		t.Fatalf("Mount after CleanStale: %v", err)
	}
	t.Cleanup(func() { cleanupMount(t, s, mp) })
	if fi, err := os.Stat(filepath.Join(mp, "disk0")); err != nil || fi.Size() != 1<<20 {
		t.Errorf("stat disk0: %v, %v", fi, err)
	}
}

// TestMmap pins the documented cost of bypassing the page cache: shared
// mappings of a device file fail with ENODEV; private mappings can be made.
// The mapping is not touched: a page fault on a mapping of the own mount
// from inside the serving process can deadlock (the faulting thread holds
// mmap_lock while the Go runtime serving the READ may need it).
func TestMmap(t *testing.T) {
	d := newTestDev(t, "disk0", 1<<20)
	_, mp := mountT(t, Options{}, d)
	fd, err := unix.Open(filepath.Join(mp, "disk0"), unix.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	if m, err := unix.Mmap(fd, 0, 4096, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED); err != syscall.ENODEV {
		if err == nil {
			unix.Munmap(m)
		}
		t.Errorf("MAP_SHARED: %v, want ENODEV", err)
	}
	m, err := unix.Mmap(fd, 0, 4096, unix.PROT_READ, unix.MAP_PRIVATE)
	if err != nil {
		t.Fatalf("MAP_PRIVATE: %v", err)
	}
	if err := unix.Munmap(m); err != nil {
		t.Fatal(err)
	}
}

// TestCleanStaleHung: a server that stopped answering (SIGSTOP) counts as
// dead; CleanStale detaches its mount and aborts the connection.
func TestCleanStaleHung(t *testing.T) {
	need(t, "fusermount3")
	mp := t.TempDir()
	child := startChildMount(t, mp)
	if err := child.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	for i := 0; ; i++ { // wait until every thread stopped
		stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", child.Process.Pid))
		if err != nil {
			t.Fatal(err)
		}
		if f := bytes.Fields(stat[bytes.LastIndexByte(stat, ')')+1:]); len(f) > 0 && string(f[0]) == "T" {
			break
		}
		if i == 500 {
			t.Fatalf("child did not stop: %s", stat)
		}
		time.Sleep(10 * time.Millisecond)
	}
	start := time.Now()
	if err := CleanStale(mp); err != nil {
		t.Fatalf("CleanStale on a hung mount: %v", err)
	}
	t.Logf("CleanStale on a hung server took %v", time.Since(start).Round(time.Millisecond))
	if _, listed := findFuseMount(cleanAbs(mp)); listed {
		t.Fatalf("still listed in mountinfo after CleanStale")
	}
	var sfs syscall.Statfs_t
	if err := syscall.Statfs(mp, &sfs); err != nil {
		t.Fatalf("statfs after CleanStale: %v", err)
	}
	_ = child.Process.Kill()
}

func TestMountOptionsRequestBound(t *testing.T) {
	per := RequestBytes(0)
	if got := MountOptions(Options{}).MaxInflightRequestBytes; got != DefaultMaxRequests*per {
		t.Errorf("default: MaxInflightRequestBytes %d, want %d", got, DefaultMaxRequests*per)
	}
	if got := MountOptions(Options{MaxRequests: 4}).MaxInflightRequestBytes; got != 4*per {
		t.Errorf("MaxRequests 4: MaxInflightRequestBytes %d, want %d", got, 4*per)
	}
	if got := MountOptions(Options{MaxRequests: -1}).MaxInflightRequestBytes; got != 0 {
		t.Errorf("MaxRequests -1: MaxInflightRequestBytes %d, want 0 (go-fuse: unbounded)", got)
	}
	if got := MountOptions(Options{MaxRequests: 2, MaxWrite: 128 << 10}).MaxInflightRequestBytes; got != 2*RequestBytes(128<<10) {
		t.Errorf("MaxWrite 128 KiB: MaxInflightRequestBytes %d", got)
	}
}
