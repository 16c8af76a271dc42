// Package hangfs is a FUSE file system for tests whose requests the test
// can hold: a deterministic hung system call. It serves one file, lun.img,
// from memory, with direct I/O (every read and write reaches the server);
// while the test holds an operation, requests of that kind wait until it
// releases them, as on an NFS server gone or a FUSE server stopped.
//
// Mounting needs root and /dev/fuse. Need skips the test without them —
// saying why — unless CI is set, where it fails instead.
package hangfs

import (
	"context"
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

	mu   sync.Mutex
	data []byte
	ops  Op
	gate chan struct{} // closed by Release

	held   atomic.Int32 // requests waiting at the gate now
	served atomic.Int64 // requests of a holdable kind served
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
	Need(t)
	f := &FS{Dir: t.TempDir(), data: make([]byte, size), gate: make(chan struct{})}
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
func (f *FS) Held() int { return int(f.held.Load()) }

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
	return append([]byte(nil), f.data[off:off+n]...)
}

// pass waits at the gate while op is held.
func (f *FS) pass(op Op) {
	f.mu.Lock()
	held, gate := f.ops&op != 0, f.gate
	f.mu.Unlock()
	if held {
		f.held.Add(1)
		<-gate
		f.held.Add(-1)
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
	n.f.mu.Lock()
	out.Size = uint64(len(n.f.data))
	n.f.mu.Unlock()
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
	if off < 0 || off+int64(len(data)) > int64(len(n.f.data)) {
		return 0, syscall.ENOSPC
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
	end := min(off+size, uint64(len(n.f.data)))
	for i := off; i < end; i++ {
		n.f.data[i] = 0
	}
	return 0
}
