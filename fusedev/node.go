package fusedev

import (
	"context"
	"errors"
	"io"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/mpathfs/mpathfs/backends"
)

// fallocate(2) mode bits (linux/falloc.h).
const (
	fallocKeepSize  = 0x01
	fallocPunchHole = 0x02
	fallocZeroRange = 0x10
)

// devNode is the inode of one device file.
//
// Handlers run on go-fuse's goroutines, one per request in flight. They
// call the device and nothing else: no lock is held across a device call,
// no handler waits for another FUSE request, and nothing touches the mount.
type devNode struct {
	fs.Inode

	dev       Device
	openFlags uint32
	uid, gid  uint32

	mtime atomic.Int64 // unix nanoseconds of the last write, discard or setattr

	mu struct {
		sync.Mutex
		opens   int  // open file handles
		removed bool // RemoveDevice took the file out of the directory
	}
}

// handle is one open file description of a device file. It remembers
// whether it carried writes, so that close (FUSE FLUSH) flushes the device
// only for writers.
type handle struct {
	dirty atomic.Bool
}

var (
	_ fs.NodeGetattrer = (*devNode)(nil)
	_ fs.NodeSetattrer = (*devNode)(nil)
	_ fs.NodeOpener    = (*devNode)(nil)
	_ fs.NodeReader    = (*devNode)(nil)
	_ fs.NodeWriter    = (*devNode)(nil)
	_ fs.NodeFsyncer   = (*devNode)(nil)
	_ fs.NodeFlusher   = (*devNode)(nil)
	_ fs.NodeReleaser  = (*devNode)(nil)
	_ fs.NodeAllocater = (*devNode)(nil)
)

func (n *devNode) touch() { n.mtime.Store(time.Now().UnixNano()) }

func (n *devNode) fillAttr(a *fuse.Attr) {
	size := n.dev.Size()
	a.Mode = syscall.S_IFREG | 0o600
	a.Size = uint64(size)
	a.Blocks = uint64(size+511) / 512
	a.Blksize = 4096
	a.Nlink = 1
	a.Owner = fuse.Owner{Uid: n.uid, Gid: n.gid}
	t := time.Unix(0, n.mtime.Load())
	a.SetTimes(&t, &t, &t)
}

func (n *devNode) Getattr(_ context.Context, _ fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	n.fillAttr(&out.Attr)
	out.SetTimeout(AttrTimeout)
	return 0
}

// Setattr refuses what a block device cannot do: a size change is EINVAL
// (truncating to the current size succeeds: tools such as dd without
// conv=notrunc do that), mode and owner are fixed (EPERM). Times are
// accepted and set the modification time.
func (n *devNode) Setattr(_ context.Context, _ fs.FileHandle, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	if sz, ok := in.GetSize(); ok && int64(sz) != n.dev.Size() {
		return syscall.EINVAL
	}
	if _, ok := in.GetMode(); ok {
		return syscall.EPERM
	}
	if _, ok := in.GetUID(); ok {
		return syscall.EPERM
	}
	if _, ok := in.GetGID(); ok {
		return syscall.EPERM
	}
	if in.Valid&(fuse.FATTR_MTIME|fuse.FATTR_MTIME_NOW) != 0 {
		if t, ok := in.GetMTime(); ok && in.Valid&fuse.FATTR_MTIME_NOW == 0 {
			n.mtime.Store(t.UnixNano())
		} else {
			n.touch()
		}
	}
	n.fillAttr(&out.Attr)
	out.SetTimeout(AttrTimeout)
	return 0
}

// Open ignores O_TRUNC (CAP_ATOMIC_O_TRUNC delivers it here), as a block
// device does.
func (n *devNode) Open(_ context.Context, _ uint32) (fs.FileHandle, uint32, syscall.Errno) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.mu.removed {
		return nil, 0, syscall.ENOENT
	}
	if d, ok := n.dev.(Detacher); ok && d.Detached() {
		return nil, 0, syscall.ENXIO // as Linux opening a removed disk's node
	}
	n.mu.opens++
	return &handle{}, n.openFlags, 0
}

func (n *devNode) Release(_ context.Context, _ fs.FileHandle) syscall.Errno {
	n.mu.Lock()
	n.mu.opens--
	n.mu.Unlock()
	return 0
}

// Read returns the bytes before the end of the device: a read at or after
// the end returns none, a read across it the part before it. A device
// error fails the whole read; a short read is never passed on as data,
// since the kernel would take it for the end of the file.
func (n *devNode) Read(ctx context.Context, _ fs.FileHandle, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	if off < 0 {
		return nil, syscall.EINVAL
	}
	size := n.dev.Size()
	if off >= size {
		return fuse.ReadResultData(nil), 0
	}
	if rem := size - off; int64(len(dest)) > rem {
		dest = dest[:rem]
	}
	k, err := n.dev.ReadAt(ctx, dest, off)
	if err != nil && !(k == len(dest) && errors.Is(err, io.EOF)) {
		return nil, ToErrno(err)
	}
	return fuse.ReadResultData(dest[:k]), 0
}

// Write writes the bytes before the end of the device, like a block
// device: a write across the end is short, a write at or after it fails
// with ENOSPC.
func (n *devNode) Write(ctx context.Context, fh fs.FileHandle, data []byte, off int64) (uint32, syscall.Errno) {
	if off < 0 {
		return 0, syscall.EINVAL
	}
	size := n.dev.Size()
	if off >= size {
		if len(data) == 0 {
			return 0, 0
		}
		return 0, syscall.ENOSPC
	}
	if rem := size - off; int64(len(data)) > rem {
		data = data[:rem]
	}
	if h, ok := fh.(*handle); ok && !h.dirty.Load() {
		h.dirty.Store(true)
	}
	k, err := n.dev.WriteAt(ctx, data, off)
	n.touch()
	if err != nil {
		return 0, ToErrno(err)
	}
	return uint32(k), 0
}

// Fsync (fsync and fdatasync alike) flushes the device: every path that
// carried writes since the last flush.
func (n *devNode) Fsync(ctx context.Context, _ fs.FileHandle, _ uint32) syscall.Errno {
	return ToErrno(n.dev.Flush(ctx))
}

// Flush runs on every close(2) of a descriptor. It flushes the device when
// the descriptor carried writes, so a writer's close reports a failed
// flush; readers (blkid, udev probes, cat) close for free.
func (n *devNode) Flush(ctx context.Context, fh fs.FileHandle) syscall.Errno {
	h, ok := fh.(*handle)
	if !ok || !h.dirty.Swap(false) {
		return 0
	}
	if err := n.dev.Flush(ctx); err != nil {
		h.dirty.Store(true)
		return ToErrno(err)
	}
	return 0
}

// Allocate maps fallocate(2):
//
//	PUNCH_HOLE|KEEP_SIZE     zeroes (loop devices send both their discards
//	ZERO_RANGE[|KEEP_SIZE]   and their write-zeroes so): Device.WriteZeroes,
//	                         or zeros written in chunks when the device
//	                         cannot (a discard guarantees no zeros on NBD and
//	                         block paths, so it is never used for them)
//	0 or KEEP_SIZE           nothing to do on a fixed-size device: success
//	                         within the device, ENOSPC when it would grow it
//	anything else            EOPNOTSUPP
//
// Ranges are clipped at the end of the device. Either way the range reads
// as zeros afterwards, through every path.
func (n *devNode) Allocate(ctx context.Context, _ fs.FileHandle, uoff, ulen uint64, mode uint32) syscall.Errno {
	size := n.dev.Size()
	if uoff > 1<<62 || ulen > 1<<62 {
		return syscall.EINVAL
	}
	off, length := int64(uoff), int64(ulen)
	keep := mode&fallocKeepSize != 0
	grows := off+length > size
	clip := func() int64 {
		if off >= size {
			return 0
		}
		return min(length, size-off)
	}
	switch mode &^ fallocKeepSize {
	case 0:
		if grows && !keep {
			return syscall.ENOSPC
		}
		return 0
	case fallocPunchHole:
		if !keep {
			return syscall.EOPNOTSUPP // the kernel never sends this
		}
	case fallocZeroRange:
		if grows && !keep {
			return syscall.ENOSPC
		}
	default:
		return syscall.EOPNOTSUPP
	}
	l := clip()
	if l == 0 {
		return 0
	}
	n.touch()
	return ToErrno(zeroRange(ctx, n.dev, off, l))
}

// zeroChunk is the largest write zeroRange issues; its zeros are shared
// (devices never write into the buffers they are given).
const zeroChunk = 1 << 20

var zeros = make([]byte, zeroChunk)

// zeroRange makes [off, off+length) read as zeros: with the device's
// WriteZeroes, or, when a path cannot (ErrNotSupported, EOPNOTSUPP), by
// writing zeros in chunks of at most zeroChunk bytes.
func zeroRange(ctx context.Context, dev Device, off, length int64) error {
	err := dev.WriteZeroes(ctx, off, length)
	if err == nil || !(errors.Is(err, backends.ErrNotSupported) || errors.Is(err, syscall.EOPNOTSUPP)) {
		return err
	}
	for length > 0 {
		if err := ctx.Err(); err != nil {
			return err
		}
		k := min(length, zeroChunk)
		if _, err := dev.WriteAt(ctx, zeros[:k], off); err != nil {
			return err
		}
		off, length = off+k, length-k
	}
	return nil
}
