// Package hangfs is a FUSE file system for tests whose requests the test
// can hold: a deterministic hung system call. It serves one file, lun.img,
// from memory or over a real file (a second path to the same store), with
// direct I/O (every read and write reaches the server);
// while the test holds an operation, requests of that kind wait until it
// releases them, as on an NFS server gone or a FUSE server stopped.
//
// Mounting needs root and /dev/fuse. Need skips the test without them —
// saying why — unless CI is set, where it fails instead.
package hangfs

import (
	"context"
	"io"
	"math/bits"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
)

// Op is a kind of request that can be held.
type Op uint32

const (
	Read Op = 1 << iota
	Write
	Getattr // fstat
	Fsync   // fsync, fdatasync
	Flush   // close
	Allocate
	All = Read | Write | Getattr | Fsync | Flush | Allocate
)

// Name is the file's name in the mount.
const Name = "lun.img"

// FS is a mounted hangfs.
type FS struct {
	// Dir is the mount point.
	Dir string
	srv *fuse.Server

	mu    sync.Mutex
	data  []byte   // the store, in memory
	store *os.File // or over a file
	size  int64
	ops   Op
	gate  chan struct{} // closed by Release

	held   [6]atomic.Int32 // requests waiting at the gate now, by op bit
	served atomic.Int64    // requests of a holdable kind served
}

// Need skips the test (fails it when CI is set) without root and
// /dev/fuse.
func Need(t testing.TB) {
	t.Helper()
	why := ""
	if os.Geteuid() != 0 {
		why = "a FUSE mount needs root"
	} else if _, err := os.Stat("/dev/fuse"); err != nil {
		why = "no /dev/fuse: " + err.Error()
	}
	if why == "" {
		return
	}
	if os.Getenv("CI") != "" {
		t.Fatalf("CI is set but %s", why)
	}
	t.Skipf("skipped: %s (runs in CI)", why)
}

// Mount mounts a hangfs with a file of size bytes in a temporary directory.
// The cleanup releases every held request and unmounts, also when the
// test failed; register it before anything that opens the file, so it runs
// after their cleanups.
func Mount(t testing.TB, size int) *FS {
	t.Helper()
	return mount(t, &FS{data: make([]byte, size), size: int64(size)})
}

// MountOver mounts a hangfs whose file is a window on the file name (which
// must exist): its reads and writes go to name, so a path through the mount
// and a path to name lead to one store.
func MountOver(t testing.TB, name string) *FS {
	t.Helper()
	Need(t)
	st, err := os.OpenFile(name, os.O_RDWR, 0)
	if err != nil {
		t.Fatalf("hangfs: %v", err)
	}
	t.Cleanup(func() { st.Close() })
	fi, err := st.Stat()
	if err != nil {
		t.Fatalf("hangfs: %v", err)
	}
	return mount(t, &FS{store: st, size: fi.Size()})
}

func mount(t testing.TB, f *FS) *FS {
	t.Helper()
	Need(t)
	f.Dir, f.gate = t.TempDir(), make(chan struct{})
	zero := time.Duration(0)
	srv, err := fs.Mount(f.Dir, &root{f: f}, &fs.Options{
		EntryTimeout:    &zero,
		AttrTimeout:     &zero,
		NegativeTimeout: &zero,
		MountOptions:    fuse.MountOptions{FsName: "hangfs", Name: "hangfs", DisableXAttrs: true},
	})
	if err != nil {
		t.Fatalf("mount hangfs: %v", err)
	}
	f.srv = srv
	t.Cleanup(func() {
		f.Release()
		if err := srv.Unmount(); err != nil {
			t.Logf("unmount %s: %v; detaching it", f.Dir, err)
			_ = syscall.Unmount(f.Dir, syscall.MNT_DETACH)
		}
	})
	if err := srv.WaitMount(); err != nil {
		t.Fatalf("mount hangfs: %v", err)
	}
	return f
}

// Path is the file's path.
func (f *FS) Path() string { return filepath.Join(f.Dir, Name) }

// Hold makes requests of the given kinds wait until Release.
func (f *FS) Hold(ops Op) {
	f.mu.Lock()
	f.ops = ops
	f.mu.Unlock()
}

// Release lets every held request go on, and stops holding.
func (f *FS) Release() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.ops = 0
	close(f.gate)
	f.gate = make(chan struct{})
}

// Held is the number of requests waiting at the gate now.
func (f *FS) Held() int {
	n := 0
	for i := range f.held {
		n += int(f.held[i].Load())
	}
	return n
}

// HeldOf is the number of requests of kind op waiting at the gate now.
func (f *FS) HeldOf(op Op) int {
	n := 0
	for i := range f.held {
		if op&(1<<i) != 0 {
			n += int(f.held[i].Load())
		}
	}
	return n
}

// WaitHeld waits until at least n requests wait at the gate.
func (f *FS) WaitHeld(t testing.TB, n int) {
	t.Helper()
	for i := 0; f.Held() < n; i++ {
		if i > 60000 {
			t.Fatalf("hangfs: %d requests held, want %d", f.Held(), n)
		}
		time.Sleep(time.Millisecond)
	}
}

// Served is the number of requests of holdable kinds answered so far.
func (f *FS) Served() int64 { return f.served.Load() }

// Data returns a copy of the file's bytes [off, off+n).
func (f *FS) Data(off, n int) []byte {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.store != nil {
		b := make([]byte, n)
		if _, err := f.store.ReadAt(b, int64(off)); err != nil {
			panic(err)
		}
		return b
	}
	return append([]byte(nil), f.data[off:off+n]...)
}

// pass waits at the gate while op is held.
func (f *FS) pass(op Op) {
	f.mu.Lock()
	held, gate := f.ops&op != 0, f.gate
	f.mu.Unlock()
	if held {
		i := bits.TrailingZeros32(uint32(op))
		f.held[i].Add(1)
		<-gate
		f.held[i].Add(-1)
	}
	f.served.Add(1)
}

type root struct {
	fs.Inode
	f *FS
}

func (r *root) OnAdd(ctx context.Context) {
	ch := r.NewPersistentInode(ctx, &node{f: r.f}, fs.StableAttr{Mode: syscall.S_IFREG, Ino: 2})
	r.AddChild(Name, ch, false)
}

type node struct {
	fs.Inode
	f *FS
}

var (
	_ fs.NodeGetattrer = (*node)(nil)
	_ fs.NodeOpener    = (*node)(nil)
	_ fs.NodeReader    = (*node)(nil)
	_ fs.NodeWriter    = (*node)(nil)
	_ fs.NodeFsyncer   = (*node)(nil)
	_ fs.NodeFlusher   = (*node)(nil)
	_ fs.NodeAllocater = (*node)(nil)
	_ fs.NodeSetattrer = (*node)(nil)
)

func (n *node) Getattr(_ context.Context, _ fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	n.f.pass(Getattr)
	out.Size = uint64(n.f.size)
	out.Mode = syscall.S_IFREG | 0o600
	out.Blksize = 4096
	return 0
}

func (n *node) Setattr(ctx context.Context, fh fs.FileHandle, _ *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	return n.Getattr(ctx, fh, out)
}

func (n *node) Open(_ context.Context, _ uint32) (fs.FileHandle, uint32, syscall.Errno) {
	return nil, fuse.FOPEN_DIRECT_IO, 0
}

// Read and Write ignore their context: a FUSE INTERRUPT (the kernel sends
// one when the waiting thread gets a signal) does not end a held request,
// as it does not on a server that stopped.
func (n *node) Read(_ context.Context, _ fs.FileHandle, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	n.f.pass(Read)
	n.f.mu.Lock()
	defer n.f.mu.Unlock()
	if n.f.store != nil {
		k, err := n.f.store.ReadAt(dest, off)
		if err != nil && err != io.EOF {
			return nil, fs.ToErrno(err)
		}
		return fuse.ReadResultData(dest[:k]), 0
	}
	if off >= int64(len(n.f.data)) {
		return fuse.ReadResultData(nil), 0
	}
	k := copy(dest, n.f.data[off:])
	return fuse.ReadResultData(dest[:k]), 0
}

func (n *node) Write(_ context.Context, _ fs.FileHandle, data []byte, off int64) (uint32, syscall.Errno) {
	n.f.pass(Write)
	n.f.mu.Lock()
	defer n.f.mu.Unlock()
	if off < 0 || off+int64(len(data)) > n.f.size {
		return 0, syscall.ENOSPC
	}
	if n.f.store != nil {
		k, err := n.f.store.WriteAt(data, off)
		if err != nil {
			return uint32(k), fs.ToErrno(err)
		}
		return uint32(k), 0
	}
	return uint32(copy(n.f.data[off:], data)), 0
}

func (n *node) Fsync(_ context.Context, _ fs.FileHandle, _ uint32) syscall.Errno {
	n.f.pass(Fsync)
	return 0
}

func (n *node) Flush(_ context.Context, _ fs.FileHandle) syscall.Errno {
	n.f.pass(Flush)
	return 0
}

func (n *node) Allocate(_ context.Context, _ fs.FileHandle, off, size uint64, mode uint32) syscall.Errno {
	n.f.pass(Allocate)
	const punchHole, zeroRange = 0x02, 0x10
	if mode&(punchHole|zeroRange) == 0 {
		return 0
	}
	n.f.mu.Lock()
	defer n.f.mu.Unlock()
	end := min(off+size, uint64(n.f.size))
	if off >= end {
		return 0
	}
	if n.f.store != nil {
		if _, err := n.f.store.WriteAt(make([]byte, end-off), int64(off)); err != nil {
			return fs.ToErrno(err)
		}
		return 0
	}
	for i := off; i < end; i++ {
		n.f.data[i] = 0
	}
	return 0
}
