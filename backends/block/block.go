// Package block is the path backend for Linux block devices: block:///dev/sdX
// (a bare /dev/… path means the same).
//
// A Device opens its node with O_DIRECT, so every byte written has reached
// the device (or its volatile cache, which Flush empties) when WriteAt
// returns, and two paths to the same LU never see stale page-cache data.
// O_DIRECT wants the offset, the length and the buffer address aligned to
// the logical block size; the NMP's callers normally are, and a request that
// is not goes through an aligned bounce buffer (read-modify-write for the
// partial first and last blocks of a write) instead of failing with EINVAL.
//
// SCSI devices (sd) are probed with TEST UNIT READY over SG_IO and identify
// themselves from the device identification VPD page; when their standard
// INQUIRY reports TPGS, the backend also offers scsi.Reporter and
// scsi.Setter (REPORT and SET TARGET PORT GROUPS). Loop devices are not SCSI:
// they are probed with a one-block read and identified by their backing
// file, so two loop devices over the same image agree on the WWID (and agree
// with a file:// path to the same image).
//
// A pread or pwrite in progress cannot be interrupted, so every system call
// runs in a pooled worker goroutine and the caller waits for it only until
// its context's deadline (internal/sysio): a read still hung then fails as a
// path failure, a write, discard or write-zeroes returns a backends.Pending
// that settles when the system call returns at last. Calls work on private,
// aligned copies of the caller's buffer, which a hung call may still touch.
package block

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/mpathfs/mpathfs/backends"
	"github.com/mpathfs/mpathfs/backends/internal/sysio"
	"github.com/mpathfs/mpathfs/ioerr"
	"github.com/mpathfs/mpathfs/scsi"
)

func init() {
	backends.Register("block", openURI)
}

// Options configure a block device path.
type Options struct {
	// ReadOnly opens the device read-only.
	ReadOnly bool
	// Buffered opens the device without O_DIRECT, through the page cache.
	// Only for devices that refuse O_DIRECT; two paths to one LU may then
	// read stale data from their caches.
	Buffered bool
	// Inline runs every system call in the caller's goroutine on the
	// caller's buffer (or an aligned bounce buffer): no hand-off to a
	// worker and no copy, but a call hung in the kernel then holds its
	// caller until it returns, whatever the I/O deadline — failover waits
	// for the kernel's own timeout (the SCSI command timer, 30 s by
	// default). For devices that fail fast rather than hang.
	Inline bool
}

// Device is one path to a block device. Each Device has its own descriptor.
// ReadAt, WriteAt and the other methods are safe to call in parallel. Close
// returns at once; the descriptor is closed when the last call still in a
// system call leaves it (os.File keeps the count), never while a hung call
// may still pass its number to the kernel.
type Device struct {
	f     *os.File
	name  string // the node as opened (/dev/sdb)
	sys   string // the sysfs directory (/sys/dev/block/8:16)
	major uint32
	minor uint32
	size  int64
	lbs   int // logical block size
	opts  Options

	discard bool // queue/discard_max_bytes > 0
	scsi    bool // SG_IO works on the descriptor
	tpgs    int  // INQUIRY TPGS field (SCSI only)

	// loop devices: the backing file's identity and whether autoclear was
	// already set when the path was opened (losetup -d on a device that is
	// held open only sets autoclear).
	loop          bool
	loopDev       uint64
	loopIno       uint64
	loopAutoclear bool

	bounce sync.Pool // *[]byte, aligned, bounceSize long
	// rmw stripes by block number serialise the read-modify-write of a
	// block across every path to the store (store.go).
	rmw    *rmwStripes
	store  string
	detach sync.Once

	rt              *sysio.Runner
	readFn, writeFn sysio.IOFunc
	probing         sysio.Single
}

// ALUADevice is a Device whose LU reports target port group support
// (INQUIRY TPGS != 0): it adds scsi.Reporter and scsi.Setter. Open returns
// one when the device qualifies.
type ALUADevice struct {
	*Device
}

var (
	_ backends.Backend    = (*Device)(nil)
	_ backends.Discarder  = (*Device)(nil)
	_ backends.ZeroWriter = (*Device)(nil)
	_ backends.Prober     = (*Device)(nil)
	_ backends.Inquirer   = (*Device)(nil)
	_ backends.Capable    = (*Device)(nil)
	_ scsi.Reporter       = (*ALUADevice)(nil)
	_ scsi.Setter         = (*ALUADevice)(nil)
)

// ErrDetachPending is returned by Probe on a loop device that was detached
// (losetup -d) while this path held it open: the kernel defers the detach
// until the last descriptor is closed, so the path must be closed for the
// detach to complete. It is of class ioerr.ClassPermanentLoss.
var ErrDetachPending = errors.New("loop device detach pending (losetup -d): close the path to let it complete")

// ErrGone is returned by Probe when the device node no longer reaches a
// device: it has size 0 (a detached loop device, removed media) or its
// sysfs entry is gone. It is of class ioerr.ClassPermanentLoss.
var ErrGone = errors.New("block device gone")

const bounceSize = 256 << 10

func openURI(_ context.Context, u *url.URL) (backends.Backend, error) {
	if u.Host != "" && u.Host != "localhost" {
		return nil, fmt.Errorf("block URI %q: host %q not supported; use block:///dev/NAME", u.String(), u.Host)
	}
	p := u.Path
	if p == "" {
		p = u.Opaque
	}
	if p == "" {
		return nil, fmt.Errorf("block URI %q has no device path; use block:///dev/NAME", u.String())
	}
	var o Options
	var err error
	if o.ReadOnly, err = backends.QueryBool(u, "ro", false); err != nil {
		return nil, err
	}
	direct, err := backends.QueryBool(u, "direct", true)
	if err != nil {
		return nil, err
	}
	o.Buffered = !direct
	if o.Inline, err = backends.QueryBool(u, "inline", false); err != nil {
		return nil, err
	}
	return Open(p, o)
}

// Open opens a block device path and returns an *ALUADevice when the LU
// reports target port group support, else the *Device.
func Open(name string, o Options) (backends.Backend, error) {
	d, err := OpenDevice(name, o)
	if err != nil {
		return nil, err
	}
	if d.tpgs != 0 {
		return &ALUADevice{d}, nil
	}
	return d, nil
}

// OpenDevice opens a block device node. The device must be non-empty.
func OpenDevice(name string, o Options) (*Device, error) {
	flags := os.O_RDWR
	if o.ReadOnly {
		flags = os.O_RDONLY
	}
	if !o.Buffered {
		flags |= unix.O_DIRECT
	}
	f, err := os.OpenFile(name, flags, 0)
	if err != nil {
		switch {
		case errors.Is(err, os.ErrNotExist):
			return nil, fmt.Errorf("block path %s does not exist", name)
		case errors.Is(err, unix.EINVAL) && !o.Buffered:
			return nil, fmt.Errorf("block path %s refuses O_DIRECT (%v): open it buffered with block://%s?direct=false", name, err, name)
		}
		return nil, fmt.Errorf("block path: %w", err)
	}
	d, err := newDevice(f, name, o)
	if err != nil {
		f.Close()
		return nil, err
	}
	return d, nil
}

func newDevice(f *os.File, name string, o Options) (*Device, error) {
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		return nil, &os.PathError{Op: "fstat", Path: name, Err: err}
	}
	if st.Mode&unix.S_IFMT != unix.S_IFBLK {
		return nil, fmt.Errorf("block path %s is not a block device; use file://%s for a regular file", name, name)
	}
	d := &Device{
		f:     f,
		name:  name,
		major: unix.Major(st.Rdev),
		minor: unix.Minor(st.Rdev),
		opts:  o,
	}
	d.rt = sysio.New(name, o.Inline)
	d.readFn, d.writeFn = d.readSync, d.writeSync
	d.sys = fmt.Sprintf("/sys/dev/block/%d:%d", d.major, d.minor)
	var err error
	if d.size, err = d.ioctlSize(); err != nil {
		return nil, err
	}
	if d.size <= 0 {
		return nil, fmt.Errorf("block path %s is empty (size 0): a detached loop device or a drive without media", name)
	}
	if err := d.control(func(fd int) error {
		n, err := unix.IoctlGetInt(fd, unix.BLKSSZGET)
		d.lbs = n
		return err
	}); err != nil {
		return nil, &os.PathError{Op: "ioctl BLKSSZGET", Path: name, Err: err}
	}
	if d.lbs < 512 || d.lbs&(d.lbs-1) != 0 || d.size%int64(d.lbs) != 0 {
		return nil, fmt.Errorf("block path %s: odd geometry: logical block size %d, size %d", name, d.lbs, d.size)
	}
	bs := max(bounceSize, d.lbs)
	lbs := d.lbs
	d.bounce.New = func() any { return alignedBuffer(bs, lbs) }
	if v, err := readSysInt(filepath.Join(d.queueDir(), "discard_max_bytes")); err == nil && v > 0 {
		d.discard = true
	}
	// Loop devices: the backing file.
	_ = d.control(func(fd int) error {
		info, err := unix.IoctlLoopGetStatus64(fd)
		if err != nil {
			return err
		}
		d.loop = true
		d.loopDev, d.loopIno = info.Device, info.Inode
		d.loopAutoclear = info.Flags&unix.LO_FLAGS_AUTOCLEAR != 0
		return nil
	})
	// SCSI devices: SG_IO and the TPGS bits of the standard INQUIRY.
	if !d.loop && d.sgVersion() >= 30000 {
		d.scsi = true
		if inq, err := d.stdInquiry(context.Background()); err == nil {
			d.tpgs = inq.TPGS
		}
	}
	d.attachStore()
	return d, nil
}

// control runs fn with the descriptor, holding it against a concurrent Close.
func (d *Device) control(fn func(fd int) error) error {
	rc, err := d.f.SyscallConn()
	if err != nil {
		return err
	}
	var ferr error
	if err := rc.Control(func(fd uintptr) { ferr = fn(int(fd)) }); err != nil {
		return err
	}
	return ferr
}

func (d *Device) ioctlSize() (int64, error) {
	var size uint64
	err := d.control(func(fd int) error {
		_, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), unix.BLKGETSIZE64, uintptr(unsafe.Pointer(&size)))
		if e != 0 {
			return e
		}
		return nil
	})
	if err != nil {
		return 0, &os.PathError{Op: "ioctl BLKGETSIZE64", Path: d.name, Err: err}
	}
	return int64(size), nil
}

// queueDir is the request queue's sysfs directory; a partition uses its
// disk's queue.
func (d *Device) queueDir() string {
	q := filepath.Join(d.sys, "queue")
	if _, err := os.Stat(q); err != nil {
		return filepath.Join(d.sys, "..", "queue")
	}
	return q
}

// Name is the device node the path was opened with.
func (d *Device) Name() string { return d.name }

// Dev is the device's major and minor number.
func (d *Device) Dev() (major, minor uint32) { return d.major, d.minor }

// LogicalBlockSize is the device's logical block size (BLKSSZGET): the unit
// in which O_DIRECT I/O is aligned.
func (d *Device) LogicalBlockSize() int { return d.lbs }

// Size is the device size in bytes when the path was opened.
func (d *Device) Size() int64 { return d.size }

// closeWait bounds how long Close waits for close(2) itself, which may
// write back or flush a device that no longer answers.
const closeWait = sysio.CloseWait

// Close stops new calls and returns. The descriptor is closed when no call
// holds it any more: now, or when the last hung call returns. Close waits at
// most closeWait for close(2) itself.
func (d *Device) Close() error {
	d.detachStore()
	return sysio.CloseWithin(d.f, "block path "+d.name, closeWait)
}

// Inline reports whether system calls run in the caller's goroutine
// (Options.Inline).
func (d *Device) Inline() bool { return d.rt.Inline() }

// Hung is the number of system calls given up on at a deadline that have
// not returned yet.
func (d *Device) Hung() int64 { return d.rt.Hung() }

// Can reports the capabilities the device offers: discard only when its
// queue accepts discards (queue/discard_max_bytes > 0); write-zeroes,
// probe and inquiry always (the kernel writes zeroes itself if the device
// has no WRITE SAME/WRITE ZEROES).
func (d *Device) Can(c backends.Capability) bool {
	switch c {
	case backends.CapDiscard:
		return d.discard
	case backends.CapWriteZeroes, backends.CapProbe, backends.CapInquiry:
		return true
	}
	return false
}

// aligned tells whether p at off can go to the device as it is.
func (d *Device) aligned(p []byte, off int64) bool {
	if d.opts.Buffered {
		return true
	}
	m := int64(d.lbs - 1)
	if off&m != 0 || int64(len(p))&m != 0 {
		return false
	}
	return len(p) == 0 || uintptr(unsafe.Pointer(&p[0]))&uintptr(m) == 0
}

func (d *Device) ReadAt(ctx context.Context, p []byte, off int64) (int, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	if off < 0 {
		return 0, &os.PathError{Op: "read", Path: d.name, Err: unix.EINVAL}
	}
	if len(p) == 0 {
		return 0, nil
	}
	if off >= d.size {
		return 0, io.EOF
	}
	want, eof := p, false
	if int64(len(p)) > d.size-off {
		want, eof = p[:d.size-off], true
	}
	n, err := d.rt.ReadAt(ctx, "pread", d.readFn, want, off)
	if err == nil && eof {
		err = io.EOF
	}
	return n, err
}

func (d *Device) WriteAt(ctx context.Context, p []byte, off int64) (int, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	if off < 0 {
		return 0, &os.PathError{Op: "write", Path: d.name, Err: unix.EINVAL}
	}
	if d.opts.ReadOnly {
		return 0, &os.PathError{Op: "write", Path: d.name, Err: unix.EROFS}
	}
	if len(p) == 0 {
		return 0, nil
	}
	if off >= d.size {
		return 0, &os.PathError{Op: "write", Path: d.name, Err: unix.ENOSPC}
	}
	want, short := p, false
	if int64(len(p)) > d.size-off {
		want, short = p[:d.size-off], true
	}
	n, err := d.rt.WriteAt(ctx, "pwrite", d.writeFn, want, off)
	if err == nil && short {
		err = &os.PathError{Op: "write", Path: d.name, Err: unix.ENOSPC}
	}
	return n, err
}

// readSync reads p at off in the calling goroutine (a worker's).
func (d *Device) readSync(p []byte, off int64) (int, error) {
	if d.aligned(p, off) {
		return d.f.ReadAt(p, off)
	}
	return d.bounceRead(p, off)
}

// writeSync writes p at off in the calling goroutine (a worker's).
func (d *Device) writeSync(p []byte, off int64) (int, error) {
	if d.aligned(p, off) {
		return d.f.WriteAt(p, off)
	}
	return d.bounceWrite(p, off)
}

// alignedBuffer returns a buffer of n bytes whose address is a multiple of
// align (a power of two).
func alignedBuffer(n, align int) *[]byte {
	raw := make([]byte, n+align)
	skip := 0
	if r := int(uintptr(unsafe.Pointer(&raw[0])) & uintptr(align-1)); r != 0 {
		skip = align - r
	}
	b := raw[skip : skip+n : skip+n]
	return &b
}

// bounceRead reads p at off through aligned bounce buffers.
func (d *Device) bounceRead(p []byte, off int64) (int, error) {
	bp := d.bounce.Get().(*[]byte)
	defer d.bounce.Put(bp)
	buf := *bp
	lbs := int64(d.lbs)
	n := 0
	for n < len(p) {
		pos := off + int64(n)
		start := pos &^ (lbs - 1)
		skip := int(pos - start)
		chunk := min(len(buf), roundUp(skip+len(p)-n, d.lbs))
		m, err := d.f.ReadAt(buf[:chunk], start)
		if m > skip {
			n += copy(p[n:], buf[skip:m])
		}
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

// bounceWrite writes p at off through aligned bounce buffers, reading the
// partial first and last blocks first. Writers that share a partial block
// are serialised on its stripe lock, so two non-overlapping writes into
// one block both survive. Overlapping concurrent writes have no defined
// outcome, as for pwrite.
func (d *Device) bounceWrite(p []byte, off int64) (int, error) {
	lbs := int64(d.lbs)
	end := off + int64(len(p))
	var stripes []int
	if off&(lbs-1) != 0 {
		stripes = append(stripes, int(uint64(off/lbs)%uint64(len(d.rmw.mu))))
	}
	if end&(lbs-1) != 0 {
		s := int(uint64((end-1)/lbs) % uint64(len(d.rmw.mu)))
		switch {
		case len(stripes) == 0:
			stripes = append(stripes, s)
		case s < stripes[0]:
			stripes = []int{s, stripes[0]}
		case s > stripes[0]:
			stripes = append(stripes, s)
		}
	}
	for _, s := range stripes {
		d.rmw.mu[s].Lock()
		defer d.rmw.mu[s].Unlock()
	}

	bp := d.bounce.Get().(*[]byte)
	defer d.bounce.Put(bp)
	buf := *bp
	n := 0
	for n < len(p) {
		pos := off + int64(n)
		start := pos &^ (lbs - 1)
		skip := int(pos - start)
		chunk := min(len(buf), roundUp(skip+len(p)-n, d.lbs))
		dataEnd := min(skip+len(p)-n, chunk)
		if skip != 0 {
			if _, err := d.f.ReadAt(buf[:d.lbs], start); err != nil {
				return n, err
			}
		}
		if last := chunk - d.lbs; dataEnd < chunk && !(skip != 0 && last == 0) {
			if _, err := d.f.ReadAt(buf[last:chunk], start+int64(last)); err != nil {
				return n, err
			}
		}
		c := copy(buf[skip:dataEnd], p[n:])
		m, err := d.f.WriteAt(buf[:chunk], start)
		if err != nil {
			// Only whole blocks written before the failure count.
			done := (m / d.lbs) * d.lbs
			return n + max(0, min(done-skip, c)), err
		}
		n += c
	}
	return n, nil
}

func roundUp(n, align int) int { return (n + align - 1) &^ (align - 1) }

// Flush is fdatasync: the kernel sends a cache flush to the device.
func (d *Device) Flush(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return d.rt.Do(ctx, "fdatasync", false, func() error {
		if err := d.control(unix.Fdatasync); err != nil {
			return &os.PathError{Op: "fdatasync", Path: d.name, Err: err}
		}
		return nil
	})
}

// rangeIoctl issues BLKDISCARD or BLKZEROOUT over [off, off+length), in a
// worker: a hung one returns a backends.Pending at ctx's deadline.
func (d *Device) rangeIoctl(ctx context.Context, op string, req uint, off, length int64) error {
	return d.rt.Do(ctx, op, true, func() error {
		r := [2]uint64{uint64(off), uint64(length)}
		err := d.control(func(fd int) error {
			_, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), uintptr(req), uintptr(unsafe.Pointer(&r)))
			if e != 0 {
				return e
			}
			return nil
		})
		if err != nil {
			return &os.PathError{Op: op, Path: d.name, Err: err}
		}
		return nil
	})
}

func (d *Device) checkRange(op string, off, length int64) error {
	if off < 0 || length < 0 || off > d.size || length > d.size-off {
		return ioerr.NewError(ioerr.ClassDeviceError, op, fmt.Errorf("range %d+%d outside the device (%d bytes)", off, length, d.size))
	}
	return nil
}

// Discard deallocates the blocks wholly inside [off, off+length) with
// BLKDISCARD; the partial blocks at either end keep their data, which a
// discard allows.
func (d *Device) Discard(ctx context.Context, off, length int64) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := d.checkRange("discard", off, length); err != nil {
		return err
	}
	if !d.discard {
		return backends.ErrNotSupported
	}
	lbs := int64(d.lbs)
	start, end := (off+lbs-1)&^(lbs-1), (off+length)&^(lbs-1)
	if end <= start {
		return nil
	}
	return d.rangeIoctl(ctx, "ioctl BLKDISCARD", unix.BLKDISCARD, start, end-start)
}

// WriteZeroes zeroes [off, off+length) with BLKZEROOUT; partial blocks at
// either end are zeroed by a read-modify-write.
func (d *Device) WriteZeroes(ctx context.Context, off, length int64) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := d.checkRange("write-zeroes", off, length); err != nil {
		return err
	}
	if d.opts.ReadOnly {
		return &os.PathError{Op: "write-zeroes", Path: d.name, Err: unix.EROFS}
	}
	lbs := int64(d.lbs)
	start, end := (off+lbs-1)&^(lbs-1), (off+length)&^(lbs-1)
	if end <= start { // within one block
		_, err := d.WriteAt(ctx, make([]byte, length), off)
		return err
	}
	if start > off {
		if _, err := d.WriteAt(ctx, make([]byte, start-off), off); err != nil {
			return err
		}
	}
	if err := d.rangeIoctl(ctx, "ioctl BLKZEROOUT", unix.BLKZEROOUT, start, end-start); err != nil {
		return err
	}
	if off+length > end {
		if _, err := d.WriteAt(ctx, make([]byte, off+length-end), end); err != nil {
			return err
		}
	}
	return nil
}

// Probe checks that the node still reaches a non-empty device (for a loop
// device: the same backing file, no detach pending), then sends TEST UNIT
// READY to a SCSI device or reads its first block otherwise. It runs in a
// worker and returns at ctx's deadline even while a system call hangs, and
// fails at once while a hung probe has not returned.
func (d *Device) Probe(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	// One probe at a time may hang: a checker probing every 2 s must not
	// pile up a hung system call (and a thread) per round.
	err := d.rt.DoSingle(ctx, &d.probing, "probe", func() error { return d.probe(ctx) })
	var he *sysio.HungError
	if errors.As(err, &he) {
		return &ioerr.Error{Class: ioerr.ClassPathFailure, Op: "probe", Path: d.name, Err: err}
	}
	return err
}

func (d *Device) probe(ctx context.Context) error {
	gone := func(why string, err error) error {
		if err == nil {
			err = ErrGone
		}
		return &ioerr.Error{Class: ioerr.ClassPermanentLoss, Op: "probe", Path: d.name, Err: fmt.Errorf("%s: %w", why, err)}
	}
	size, err := d.ioctlSize()
	if err != nil {
		return &ioerr.Error{Class: ioerr.ClassPathFailure, Op: "probe", Path: d.name, Err: err}
	}
	if size == 0 {
		return gone("size is 0 (detached or media removed)", nil)
	}
	if _, err := os.Stat(d.sys); err != nil {
		return gone(d.sys+" is gone", nil)
	}
	if d.loop {
		var info *unix.LoopInfo64
		err := d.control(func(fd int) (err error) {
			info, err = unix.IoctlLoopGetStatus64(fd)
			return err
		})
		switch {
		case errors.Is(err, unix.ENXIO):
			return gone("loop device detached", nil)
		case err != nil:
			return &ioerr.Error{Class: ioerr.ClassPathFailure, Op: "probe", Path: d.name, Err: err}
		case info.Device != d.loopDev || info.Inode != d.loopIno:
			return gone("loop device now backed by another file", nil)
		case info.Flags&unix.LO_FLAGS_AUTOCLEAR != 0 && !d.loopAutoclear:
			return gone("loop device", ErrDetachPending)
		}
	}
	if d.scsi {
		err := d.testUnitReady(ctx)
		if err == nil {
			return nil
		}
		var pe *os.PathError
		if !errors.As(err, &pe) {
			return err // a SCSI status, classified; or the context's error
		}
		// SG_IO itself refused (a partition, no privilege): fall back to a read.
	}
	bp := d.bounce.Get().(*[]byte)
	defer d.bounce.Put(bp)
	if _, err := d.f.ReadAt((*bp)[:d.lbs], 0); err != nil {
		return &ioerr.Error{Class: ioerr.ClassPathFailure, Op: "probe", Path: d.name, Err: err}
	}
	return nil
}

func readSysInt(name string) (int64, error) {
	b, err := os.ReadFile(name)
	if err != nil {
		return 0, err
	}
	return strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
}
