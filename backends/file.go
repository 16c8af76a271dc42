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

	"golang.org/x/sys/unix"
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
}

// File is a path to a store kept in a regular file (or any file a
// descriptor can pread and pwrite). Each File has its own descriptor, as
// each path to a LUN has its own queue.
//
// A pread or pwrite in progress cannot be interrupted: the context is
// checked before the call only.
type File struct {
	f    *os.File
	fd   int
	size int64
	name string
	opts FileOptions
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
	return &File{f: f, fd: int(f.Fd()), size: size, name: abs, opts: o}, nil
}

// Name is the absolute file name.
func (b *File) Name() string { return b.name }

func (b *File) ReadAt(ctx context.Context, p []byte, off int64) (int, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
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

func (b *File) WriteAt(ctx context.Context, p []byte, off int64) (int, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	if b.opts.ReadOnly {
		return 0, &os.PathError{Op: "pwrite", Path: b.name, Err: unix.EROFS}
	}
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

func (b *File) Flush(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := unix.Fdatasync(b.fd); err != nil {
		return &os.PathError{Op: "fdatasync", Path: b.name, Err: err}
	}
	return nil
}

func (b *File) Discard(ctx context.Context, off, length int64) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	err := unix.Fallocate(b.fd, unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, off, length)
	if err != nil {
		return &os.PathError{Op: "punch hole", Path: b.name, Err: err}
	}
	return nil
}

func (b *File) WriteZeroes(ctx context.Context, off, length int64) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	err := unix.Fallocate(b.fd, unix.FALLOC_FL_ZERO_RANGE|unix.FALLOC_FL_KEEP_SIZE, off, length)
	if err == unix.EOPNOTSUPP {
		err = unix.Fallocate(b.fd, unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, off, length)
	}
	if err != nil {
		return &os.PathError{Op: "zero range", Path: b.name, Err: err}
	}
	return nil
}

// Probe checks that the descriptor still reaches a file of the same size.
func (b *File) Probe(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	var st unix.Stat_t
	if err := unix.Fstat(b.fd, &st); err != nil {
		return &os.PathError{Op: "fstat", Path: b.name, Err: err}
	}
	return nil
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
	if err := unix.Fstat(b.fd, &st); err != nil {
		return Inquiry{}, &os.PathError{Op: "fstat", Path: b.name, Err: err}
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

func (b *File) Close() error { return b.f.Close() }

func (b *File) Size() int64 { return b.size }
