package backends

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"sync/atomic"

	"golang.org/x/sys/unix"

	"github.com/mpathfs/mpathfs/backends/internal/sysio"
)

func init() {
	Register("file", openFileURI)
}

// FileOptions configure a file backend.
type FileOptions struct {
	// Direct opens the file with O_DIRECT (reads and writes must then be
	// aligned to the logical block size; the NMP's callers are).
	Direct bool
	// ReadOnly opens the file read-only.
	ReadOnly bool
	// Inline runs every system call in the caller's goroutine on the
	// caller's buffer: no hand-off and no copy, but a hung call then stalls
	// its caller until it returns, whatever the deadline. Files in memory
	// (tmpfs, ramfs) always run inline: nothing there waits for a device.
	Inline bool
}

// File is a path to a store kept in a regular file (or any file a
// descriptor can pread and pwrite). Each File has its own descriptor, as
// each path to a LUN has its own queue.
//
// A pread or pwrite cannot be interrupted, so each system call runs in a
// pooled worker goroutine (internal/sysio) and the caller waits for it only
// until its context's deadline: a read still hung then returns a path
// failure, a write a backends.Pending that settles when the pwrite returns
// at last. Calls work on private copies of the caller's buffer, which a hung
// call may still touch. Files in memory (tmpfs, ramfs), whose system calls
// never wait for a device, run their calls inline instead (FileOptions).
//
// Close returns at once (within closeWait); the descriptor is closed when
// the last call still in a system call returns, never while one may still
// pass its number to the kernel.
type File struct {
	f    *os.File
	fd   int
	size int64
	name string
	opts FileOptions
	rt   *sysio.Runner

	// refs counts the open file (1 until Close) and the calls holding the
	// descriptor; the last release closes it.
	refs    atomic.Int64
	closed  atomic.Bool
	probing sysio.Single

	readFn, writeFn sysio.IOFunc
}

var (
	_ Backend    = (*File)(nil)
	_ Discarder  = (*File)(nil)
	_ ZeroWriter = (*File)(nil)
	_ Prober     = (*File)(nil)
	_ Inquirer   = (*File)(nil)
)

func openFileURI(_ context.Context, u *url.URL) (Backend, error) {
	p := u.Path
	if u.Host != "" && u.Host != "localhost" {
		return nil, fmt.Errorf("file URI %q: host %q not supported; use file:///absolute/path", u.String(), u.Host)
	}
	if p == "" {
		p = u.Opaque
	}
	if p == "" {
		return nil, fmt.Errorf("file URI %q has no path; use file:///absolute/path", u.String())
	}
	var o FileOptions
	var err error
	if o.Direct, err = QueryBool(u, "direct", false); err != nil {
		return nil, err
	}
	if o.ReadOnly, err = QueryBool(u, "ro", false); err != nil {
		return nil, err
	}
	if o.Inline, err = QueryBool(u, "inline", false); err != nil {
		return nil, err
	}
	return OpenFile(p, o)
}

// OpenFile opens a file path. The file must exist and be non-empty.
func OpenFile(name string, o FileOptions) (*File, error) {
	flags := os.O_RDWR
	if o.ReadOnly {
		flags = os.O_RDONLY
	}
	if o.Direct {
		flags |= unix.O_DIRECT
	}
	f, err := os.OpenFile(name, flags, 0)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("file path %s does not exist: create the store first (e.g. truncate -s 1G %s)", name, name)
		}
		return nil, fmt.Errorf("file path: %w", err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("file path: %w", err)
	}
	size := st.Size()
	if !st.Mode().IsRegular() {
		// A block device or similar: ask for its size by seeking.
		end, err := f.Seek(0, io.SeekEnd)
		if err != nil {
			f.Close()
			return nil, fmt.Errorf("file path %s: cannot determine size: %w", name, err)
		}
		size = end
	}
	if size <= 0 {
		f.Close()
		return nil, fmt.Errorf("file path %s is empty: give the store a size first (e.g. truncate -s 1G %s)", name, name)
	}
	abs, _ := filepath.Abs(name)
	b := &File{f: f, fd: int(f.Fd()), size: size, name: abs, opts: o}
	if !o.Inline {
		var sfs unix.Statfs_t
		if err := unix.Fstatfs(b.fd, &sfs); err == nil && (sfs.Type == unix.TMPFS_MAGIC || sfs.Type == unix.RAMFS_MAGIC) {
			b.opts.Inline = true
		}
	}
	b.rt = sysio.New(abs, b.opts.Inline)
	b.refs.Store(1)
	b.readFn, b.writeFn = b.pread, b.pwrite
	return b, nil
}

// Name is the absolute file name.
func (b *File) Name() string { return b.name }

// Inline reports whether system calls run in the caller's goroutine (see
// FileOptions.Inline).
func (b *File) Inline() bool { return b.opts.Inline }

// Hung is the number of system calls given up on at a deadline that have
// not returned yet.
func (b *File) Hung() int64 { return b.rt.Hung() }

// acquire takes a reference on the descriptor for one system call.
func (b *File) acquire(op string) error {
	if b.closed.Load() {
		return &os.PathError{Op: op, Path: b.name, Err: os.ErrClosed}
	}
	for {
		r := b.refs.Load()
		if r <= 0 {
			return &os.PathError{Op: op, Path: b.name, Err: os.ErrClosed}
		}
		if b.refs.CompareAndSwap(r, r+1) {
			return nil
		}
	}
}

// release drops a call's reference; the last one closes the descriptor
// (after Close, when a hung call returns at last).
func (b *File) release() {
	if b.refs.Add(-1) == 0 {
		b.f.Close()
	}
}

func (b *File) pread(p []byte, off int64) (int, error) {
	if err := b.acquire("pread"); err != nil {
		return 0, err
	}
	defer b.release()
	n := 0
	for n < len(p) {
		m, err := unix.Pread(b.fd, p[n:], off+int64(n))
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return n, &os.PathError{Op: "pread", Path: b.name, Err: err}
		}
		if m == 0 {
			return n, io.EOF
		}
		n += m
	}
	return n, nil
}

func (b *File) pwrite(p []byte, off int64) (int, error) {
	if err := b.acquire("pwrite"); err != nil {
		return 0, err
	}
	defer b.release()
	n := 0
	for n < len(p) {
		m, err := unix.Pwrite(b.fd, p[n:], off+int64(n))
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return n, &os.PathError{Op: "pwrite", Path: b.name, Err: err}
		}
		if m == 0 {
			return n, io.ErrShortWrite
		}
		n += m
	}
	return n, nil
}

// syscall runs fn with the descriptor held, through the runner.
func (b *File) syscall(ctx context.Context, op string, write bool, fn func(fd int) error) error {
	return b.rt.Do(ctx, op, write, func() error {
		if err := b.acquire(op); err != nil {
			return err
		}
		defer b.release()
		if err := fn(b.fd); err != nil {
			return &os.PathError{Op: op, Path: b.name, Err: err}
		}
		return nil
	})
}

func (b *File) ReadAt(ctx context.Context, p []byte, off int64) (int, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	return b.rt.ReadAt(ctx, "pread", b.readFn, p, off)
}

func (b *File) WriteAt(ctx context.Context, p []byte, off int64) (int, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	if b.opts.ReadOnly {
		return 0, &os.PathError{Op: "pwrite", Path: b.name, Err: unix.EROFS}
	}
	return b.rt.WriteAt(ctx, "pwrite", b.writeFn, p, off)
}

func (b *File) Flush(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return b.syscall(ctx, "fdatasync", false, unix.Fdatasync)
}

func (b *File) Discard(ctx context.Context, off, length int64) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return b.syscall(ctx, "punch hole", true, func(fd int) error {
		return unix.Fallocate(fd, unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, off, length)
	})
}

func (b *File) WriteZeroes(ctx context.Context, off, length int64) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return b.syscall(ctx, "zero range", true, func(fd int) error {
		err := unix.Fallocate(fd, unix.FALLOC_FL_ZERO_RANGE|unix.FALLOC_FL_KEEP_SIZE, off, length)
		if err == unix.EOPNOTSUPP {
			err = unix.Fallocate(fd, unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, off, length)
		}
		return err
	})
}

// Probe checks that the descriptor still reaches the file: an fstat, which
// on a network or FUSE file system asks the server. It returns at ctx's
// deadline even while the fstat hangs, and fails at once while a hung one
// has not returned.
func (b *File) Probe(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	// One fstat at a time may hang: a checker probing every 2 s must not
	// pile up a hung system call (and a thread) per round.
	return b.rt.DoSingle(ctx, &b.probing, "fstat", func() error {
		if err := b.acquire("fstat"); err != nil {
			return err
		}
		defer b.release()
		var st unix.Stat_t
		if err := unix.Fstat(b.fd, &st); err != nil {
			return &os.PathError{Op: "fstat", Path: b.name, Err: err}
		}
		return nil
	})
}

// Inquiry reports a synthetic identity: vendor MPATHFS, model FILE and a
// WWID derived from the file's device and inode, so two paths to the same
// file agree and paths to different files do not. Two mounts of one file
// (NFS, SMB, FUSE) show different device and inode numbers, hence
// different WWIDs: such paths join one device only under a wwid the user
// asserts, which the label (fileident.go) and a sample-block comparison
// (nmp.VerifySameStore) check.
func (b *File) Inquiry(ctx context.Context) (Inquiry, error) {
	var st unix.Stat_t
	if err := b.syscall(ctx, "fstat", false, func(fd int) error { return unix.Fstat(fd, &st) }); err != nil {
		return Inquiry{}, err
	}
	h := sha256.Sum256([]byte(fmt.Sprintf("%d:%d", st.Dev, st.Ino)))
	serial := hex.EncodeToString(h[:8])
	return Inquiry{
		Vendor:    "MPATHFS",
		Model:     "FILE",
		Serial:    serial,
		WWID:      "naa.6" + hex.EncodeToString(h[:16])[:31],
		Transport: "file",
	}, nil
}

// closeWait bounds how long Close waits for close(2) itself, which on a
// network or FUSE file system asks the server (a FUSE FLUSH) and can hang.
const closeWait = sysio.CloseWait

// Close stops new calls and returns at once. The descriptor is closed when
// no call is in a system call any more: now if none is, else by the last
// hung call when it returns at last. Close waits at most closeWait for
// close(2) itself.
func (b *File) Close() error {
	if !b.closed.CompareAndSwap(false, true) {
		return nil
	}
	if b.refs.Add(-1) > 0 {
		return nil // the last call still in a system call closes it
	}
	return sysio.CloseWithin(b.f, "file path "+b.name, closeWait)
}

func (b *File) Size() int64 { return b.size }

// CacheDomain: every descriptor of one file on this host shares the
// inode's page cache, and fdatasync on any of them writes it back and
// flushes the disk under it. So paths to one file cover each other's
// flushes, and so do loop devices over it (their WWID is the file's).
func (b *File) CacheDomain() string {
	inq, err := b.Inquiry(context.Background())
	if err != nil || inq.WWID == "" {
		return ""
	}
	return "store:" + inq.WWID
}
