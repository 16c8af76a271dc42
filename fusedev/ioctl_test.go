package fusedev

import (
	"context"
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"unsafe"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/mpathfs/mpathfs/ioerr"
	"github.com/mpathfs/mpathfs/scsi"
)

// prTestDev is a testDev that records the reservation commands it gets.
type prTestDev struct {
	*testDev
	mu       sync.Mutex
	calls    []string
	conflict bool // answer every command with RESERVATION CONFLICT
}

var _ Reserver = (*prTestDev)(nil)

func (d *prTestDev) note(s string) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.calls = append(d.calls, s)
	if d.conflict {
		return ioerr.NewError(ioerr.ClassConflict, "pr", ioerr.ErrReservationConflict)
	}
	return nil
}

func (d *prTestDev) last() string {
	d.mu.Lock()
	defer d.mu.Unlock()
	if len(d.calls) == 0 {
		return ""
	}
	return d.calls[len(d.calls)-1]
}

func (d *prTestDev) PRRegister(_ context.Context, o, n uint64, ignore bool) error {
	return d.note(fmt.Sprintf("register 0x%x 0x%x %v", o, n, ignore))
}
func (d *prTestDev) PRReserve(_ context.Context, k uint64, t scsi.PRType) error {
	return d.note(fmt.Sprintf("reserve 0x%x %s", k, t))
}
func (d *prTestDev) PRRelease(_ context.Context, k uint64, t scsi.PRType) error {
	return d.note(fmt.Sprintf("release 0x%x %s", k, t))
}
func (d *prTestDev) PRPreempt(_ context.Context, k, v uint64, t scsi.PRType, abort bool) error {
	return d.note(fmt.Sprintf("preempt 0x%x 0x%x %s %v", k, v, t, abort))
}
func (d *prTestDev) PRClear(_ context.Context, k uint64) error {
	return d.note(fmt.Sprintf("clear 0x%x", k))
}

func ioctl(f *os.File, cmd uint32, arg []byte) syscall.Errno {
	_, _, e := unix.Syscall(unix.SYS_IOCTL, f.Fd(), uintptr(cmd), uintptr(unsafe.Pointer(&arg[0])))
	return e
}

// le builds a linux/pr.h structure: 64-bit keys then 32-bit fields, little
// endian as on the machines this runs on.
func le(keys []uint64, words ...uint32) []byte {
	b := make([]byte, 0, 24)
	for _, k := range keys {
		b = binary.LittleEndian.AppendUint64(b, k)
	}
	for _, w := range words {
		b = binary.LittleEndian.AppendUint32(b, w)
	}
	return b
}

// The PR ioctls reach the device through the kernel's FUSE ioctl (restricted
// mode: the argument is copied in by its _IOC size), and a conflict comes
// back as EBADE.
func TestPRIoctls(t *testing.T) {
	d := &prTestDev{testDev: newTestDev(t, "d0", 1<<20)}
	_, mp := mountT(t, Options{}, d)
	f, err := os.OpenFile(filepath.Join(mp, "d0"), os.O_RDWR, 0)
	require.NoError(t, err)
	defer f.Close()

	for _, tc := range []struct {
		cmd  uint32
		arg  []byte
		want string
	}{
		{IOCPRRegister, le([]uint64{0, 0xabc}, 0, 0), "register 0x0 0xabc false"},
		{IOCPRRegister, le([]uint64{0, 0xdef}, 1, 0), "register 0x0 0xdef true"},
		{IOCPRReserve, le([]uint64{0xabc}, 3, 0), "reserve 0xabc WERO"},
		{IOCPRRelease, le([]uint64{0xabc}, 1, 0), "release 0xabc WE"},
		{IOCPRPreempt, le([]uint64{0xabc, 0x999}, 4, 0), "preempt 0xabc 0x999 EARO false"},
		{IOCPRPreemptAbort, le([]uint64{0xabc, 0x999}, 6, 0), "preempt 0xabc 0x999 EAAR true"},
		{IOCPRClear, le([]uint64{0xabc}, 0, 0), "clear 0xabc"},
	} {
		require.Equal(t, syscall.Errno(0), ioctl(f, tc.cmd, tc.arg), tc.want)
		assert.Equal(t, tc.want, d.last())
	}
	assert.Equal(t, syscall.EINVAL, ioctl(f, IOCPRReserve, le([]uint64{1}, 9, 0)), "unknown pr_type")
	assert.Equal(t, syscall.EOPNOTSUPP, ioctl(f, IOCPRRegister, le([]uint64{0, 1}, 2, 0)), "unknown flag")
	assert.Equal(t, syscall.ENOTTY, ioctl(f, ioc(iocWrite, 'p', 250, 16), make([]byte, 16)), "not a PR ioctl")

	d.mu.Lock()
	d.conflict = true
	d.mu.Unlock()
	assert.Equal(t, syscall.EBADE, ioctl(f, IOCPRReserve, le([]uint64{0xabc}, 1, 0)))
}

func TestIoctlNumbers(t *testing.T) {
	// The values of linux/pr.h on x86-64 and arm64.
	assert.Equal(t, uint32(0x401870c8), IOCPRRegister)
	assert.Equal(t, uint32(0x401070c9), IOCPRReserve)
	assert.Equal(t, uint32(0x401070ca), IOCPRRelease)
	assert.Equal(t, uint32(0x401870cb), IOCPRPreempt)
	assert.Equal(t, uint32(0x401870cc), IOCPRPreemptAbort)
	assert.Equal(t, uint32(0x401070cd), IOCPRClear)
}
