// Package fusedev is the FUSE face of mpathfs: one mount, one regular file
// per device (MOUNTPOINT/<device name>, mode 0600, size = device size).
// It turns FUSE READ, WRITE, FSYNC, FLUSH, FALLOCATE, GETATTR and SETATTR
// into calls of a Device and device errors into errno values (ToErrno; the
// only place in mpathfs where errors become syscall.Errno). It knows
// nothing of paths and policies.
//
// The files behave like block devices:
//   - the kernel page cache is bypassed (FOPEN_DIRECT_IO): buffered and
//     O_DIRECT I/O both reach the device, stay coherent with each other,
//     and a write returns only after the device acknowledged it; shared
//     mmap of a device file fails (ENODEV);
//   - requests are up to 1 MiB; writes in parallel are passed on in parallel;
//   - a read at or after the end returns 0 bytes, a read across the end the
//     part before it; a write across the end is short, a write at or after
//     it fails with ENOSPC, as on a block device;
//   - fsync and fdatasync call Device.Flush; close of a descriptor that
//     wrote calls it too (its error is close's error);
//   - fallocate PUNCH_HOLE|KEEP_SIZE discards, ZERO_RANGE writes zeroes,
//     plain allocation within the device succeeds, the rest is EOPNOTSUPP;
//   - the size is fixed: truncate to another size is EINVAL, O_TRUNC is
//     ignored.
//
// The options (MountOptions, OpenFlags) were chosen by measurement; see
// docs/design-fusedev.md and bench/fuse-options.sh.
//
// Deadlock rules, kept by the code: a handler calls the device and nothing
// else (no lock across a device call, no wait for another FUSE request, no
// access to the mount, no logging into it); the process never opens or
// stats a path inside its own mount except in CleanStale before mounting.
// Unmount is bounded: clean attempts, then a lazy unmount and an abort of
// the FUSE connection, which cancels the contexts of requests in flight.
package fusedev

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
)

// Detacher is a Device that can be detached (mpathfs device set --state
// off, or every path in permanent device loss): opening its file then
// fails with ENXIO, what Linux answers opening a removed disk's node; its
// I/O fails with EIO (the device's own errors, ToErrno).
type Detacher interface {
	Detached() bool
}

// Device is what a device file serves. The NMP's device satisfies it.
// All methods are called in parallel; ctx is cancelled when the caller is
// interrupted or the mount is aborted.
type Device interface {
	// Name is the file name in the mount: no '/', not "." or "..".
	Name() string
	// Size is the device size in bytes; it does not change while mounted.
	Size() int64
	ReadAt(ctx context.Context, p []byte, off int64) (int, error)
	WriteAt(ctx context.Context, p []byte, off int64) (int, error)
	// Flush makes acknowledged writes durable; it reaches every path that
	// carried writes.
	Flush(ctx context.Context) error
	// Discard and WriteZeroes return an error matching
	// backends.ErrNotSupported when the device's paths cannot.
	Discard(ctx context.Context, off, length int64) error
	WriteZeroes(ctx context.Context, off, length int64) error
}

// Errors of the Server's administrative calls.
var (
	ErrExists   = errors.New("fusedev: a device with this name is already mounted")
	ErrNotFound = errors.New("fusedev: no device with this name")
	ErrBusy     = errors.New("fusedev: device file is open")
	ErrBadName  = errors.New("fusedev: invalid device name")
	ErrClosed   = errors.New("fusedev: server unmounted")
)

// Server is one mount.
type Server struct {
	mountpoint string
	opts       Options
	srv        *fuse.Server
	root       *rootNode
	connID     string // FUSE connection number (mountinfo minor), "" if unknown

	unmountOnce sync.Once
	unmountErr  error
	done        chan struct{} // closed when the serve loops have exited

	mu struct {
		sync.Mutex
		devs    map[string]*devNode
		nextIno uint64
		closed  bool
	}
}

type rootNode struct {
	fs.Inode
	s       *Server
	initial []Device
}

var _ fs.NodeOnAdder = (*rootNode)(nil)

// OnAdd puts the initial device files in place before the kernel can see
// the directory.
func (r *rootNode) OnAdd(ctx context.Context) {
	for _, d := range r.initial {
		ch, _ := r.s.newNode(ctx, d)
		r.AddChild(d.Name(), ch, false)
	}
	r.initial = nil
}

// Mount mounts the devices at mountpoint (an existing directory) and serves
// them until Unmount, or until the mount is removed from outside.
func Mount(mountpoint string, devs []Device, opts Options) (*Server, error) {
	if opts.UnmountTimeout <= 0 {
		opts.UnmountTimeout = defaultUnmountTimeout
	}
	s := &Server{mountpoint: mountpoint, opts: opts, done: make(chan struct{})}
	s.mu.devs = map[string]*devNode{}
	seen := map[string]bool{}
	for _, d := range devs {
		if err := checkName(d.Name()); err != nil {
			return nil, err
		}
		if seen[d.Name()] {
			return nil, fmt.Errorf("%w: %q", ErrExists, d.Name())
		}
		seen[d.Name()] = true
	}
	s.root = &rootNode{s: s, initial: devs}
	entry, attr, neg := EntryTimeout, AttrTimeout, time.Duration(0)
	fo := &fs.Options{
		MountOptions:    MountOptions(opts),
		EntryTimeout:    &entry,
		AttrTimeout:     &attr,
		NegativeTimeout: &neg,
		UID:             uint32(os.Geteuid()),
		GID:             uint32(os.Getegid()),
	}
	srv, err := fs.Mount(mountpoint, s.root, fo)
	if err != nil {
		return nil, fmt.Errorf("fusedev: mount %s: %w", mountpoint, err)
	}
	s.srv = srv
	s.mountpoint = cleanAbs(mountpoint)
	if mi, ok := findFuseMount(s.mountpoint); ok {
		s.connID = mi.minor
	}
	go func() {
		srv.Wait()
		close(s.done)
	}()
	return s, nil
}

// Mountpoint is the absolute mount point.
func (s *Server) Mountpoint() string { return s.mountpoint }

// Wait blocks until the mount is gone (Unmount, or unmounted from outside).
func (s *Server) Wait() { <-s.done }

func checkName(name string) error {
	if name == "" || name == "." || name == ".." || strings.ContainsAny(name, "/\x00") || len(name) > 255 {
		return fmt.Errorf("%w: %q", ErrBadName, name)
	}
	return nil
}

// newNode makes the inode of a device file and records it.
func (s *Server) newNode(ctx context.Context, d Device) (*fs.Inode, *devNode) {
	n := &devNode{
		dev:       d,
		openFlags: OpenFlags(s.opts),
		uid:       uint32(os.Geteuid()),
		gid:       uint32(os.Getegid()),
	}
	n.touch()
	s.mu.Lock()
	s.mu.nextIno++
	ino := s.mu.nextIno + 1 // 1 is the root
	s.mu.devs[d.Name()] = n
	s.mu.Unlock()
	ch := s.root.NewPersistentInode(ctx, n, fs.StableAttr{Mode: syscall.S_IFREG, Ino: ino, Gen: 1})
	return ch, n
}

// AddDevice adds a device file to the live mount. The kernel sees it at
// the next lookup or directory listing.
func (s *Server) AddDevice(d Device) error {
	name := d.Name()
	if err := checkName(name); err != nil {
		return err
	}
	s.mu.Lock()
	if s.mu.closed {
		s.mu.Unlock()
		return ErrClosed
	}
	if _, dup := s.mu.devs[name]; dup {
		s.mu.Unlock()
		return fmt.Errorf("%w: %q", ErrExists, name)
	}
	s.mu.devs[name] = nil // reserve the name
	s.mu.Unlock()
	ch, _ := s.newNode(context.Background(), d)
	s.root.AddChild(name, ch, true)
	// No negative entries are cached (NegativeTimeout 0); invalidate
	// anyway, for a kernel that kept one. ENOENT means it had none.
	s.root.NotifyEntry(name)
	return nil
}

// RemoveDevice takes a device file out of the mount. It fails with ErrBusy
// while the file is open (a mounted file system, a loop device, a process
// holds it), as removing a multipath map in use does; the caller closes
// the device afterwards.
func (s *Server) RemoveDevice(name string) error {
	s.mu.Lock()
	n, ok := s.mu.devs[name]
	if !ok || n == nil {
		s.mu.Unlock()
		return fmt.Errorf("%w: %q", ErrNotFound, name)
	}
	n.mu.Lock()
	if n.mu.opens > 0 {
		opens := n.mu.opens
		n.mu.Unlock()
		s.mu.Unlock()
		return fmt.Errorf("%w: %q has %d open descriptor(s)", ErrBusy, name, opens)
	}
	n.mu.removed = true
	n.mu.Unlock()
	delete(s.mu.devs, name)
	s.mu.Unlock()
	s.root.RmChild(name)
	// The kernel keeps entries for EntryTimeout: drop this one now.
	s.root.NotifyEntry(name)
	return nil
}

// Devices lists the names of the device files, in no particular order.
func (s *Server) Devices() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]string, 0, len(s.mu.devs))
	for name, n := range s.mu.devs {
		if n != nil {
			out = append(out, name)
		}
	}
	return out
}

// Unmount removes the mount and waits for the serve loops to end. It is
// safe to call more than once and from any goroutine (a signal handler)
// while I/O is in flight, and it does not hang forever:
//
//  1. umount (fusermount3 -u when not root) is retried while the mount is
//     busy, for Options.UnmountTimeout;
//  2. then the mount is detached lazily (umount -l, fusermount3 -u -z) and
//     the FUSE connection aborted: requests in flight fail with ENOTCONN
//     for their callers, and their contexts in the device are cancelled;
//  3. the serve loops are given a few seconds to end (a device that ignores
//     its context can keep a handler, and so the loops, alive: then
//     Unmount returns an error and the goroutine is left behind).
//
// The error reports what the clean attempt met (e.g. the file was still
// open) even when the lazy fallback removed the mount.
func (s *Server) Unmount() error {
	s.unmountOnce.Do(func() { s.unmountErr = s.unmount() })
	return s.unmountErr
}

func (s *Server) unmount() error {
	s.mu.Lock()
	s.mu.closed = true
	s.mu.Unlock()

	var cleanErr error
	deadline := time.Now().Add(s.opts.UnmountTimeout)
	delay := 5 * time.Millisecond
	for {
		select {
		case <-s.done: // unmounted from outside
			return nil
		default:
		}
		cleanErr = unmountOnce(s.mountpoint, false)
		if cleanErr == nil {
			break
		}
		if _, listed := findFuseMount(s.mountpoint); !listed {
			cleanErr = nil // gone (unmounted from outside meanwhile)
			break
		}
		// Busy (EBUSY from umount2; fusermount3 says so in words):
		// retry until the deadline.
		if time.Now().Add(delay).After(deadline) {
			break
		}
		time.Sleep(delay)
		delay = min(2*delay, 200*time.Millisecond)
	}
	if cleanErr == nil {
		if s.waitDone(2 * time.Second) {
			return nil
		}
		// Unmounted, but a handler is still in the device: abort.
		s.abort()
		if s.waitDone(3 * time.Second) {
			return nil
		}
		return errors.New("fusedev: unmounted, but a device call did not return after the connection was aborted")
	}

	// Last resort: detach lazily and abort the connection.
	lazyErr := unmountOnce(s.mountpoint, true)
	s.abort()
	if !s.waitDone(3 * time.Second) {
		return fmt.Errorf("fusedev: unmount %s: %v; lazy unmount: %v; serve loops did not end", s.mountpoint, cleanErr, lazyErr)
	}
	if lazyErr != nil {
		return fmt.Errorf("fusedev: unmount %s: %v; lazy unmount: %w", s.mountpoint, cleanErr, lazyErr)
	}
	return fmt.Errorf("fusedev: unmount %s was busy (%v): detached lazily, connection aborted", s.mountpoint, cleanErr)
}

func (s *Server) waitDone(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-s.done:
		return true
	case <-t.C:
		return false
	}
}

// abort aborts the FUSE connection through fusectl.
func (s *Server) abort() {
	if s.connID != "" {
		abortConnection(s.connID)
	}
}
