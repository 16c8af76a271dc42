package e2e

import (
	bin "encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/mpathfs/mpathfs/control"
	"github.com/mpathfs/mpathfs/internal/needs"
)

// Two hosts on one LU of `mpathfs array serve`: two mounts on this
// machine, --host a and --host b, each with two iscsi:// paths (one per
// controller) and no initiator= in the URIs, so the host names give the
// initiator names and the array sees four I_T nexuses of two initiators.

// startHost mounts device d0 over the array's ports ports as host name,
// round robin over every active path (useANO=1: the array's controller B
// is ANO, and a path added live is regrouped only by the SATP's next
// update; the reservation logic, not ALUA, is under test here). The
// reservation is the lock: no LU lock record (--lock-sector none), whose
// heartbeat the other host's reservation would refuse.
func startHost(t *testing.T, s *arrayServer, name string, ports ...int) *mount {
	t.Helper()
	args := []string{"--host", name, "--name", "d0", "--lock-sector", "none", "--psp", "VMW_PSP_RR", "--psp-option", "iops=1", "--psp-option", "useANO=1",
		"--check-interval", "500ms", "--io-timeout", "3s"}
	for _, p := range ports {
		args = append(args, "--path", fmt.Sprintf("iscsi://%s/%s/0", s.portals[p], s.iqn))
	}
	return startMount(t, args...)
}

// writeBlock writes one 4 KiB block at off with O_DIRECT and returns the
// errno (0: written).
func writeBlock(t *testing.T, m *mount, off int64) syscall.Errno {
	t.Helper()
	f, err := os.OpenFile(m.file("d0"), os.O_RDWR|syscall.O_DIRECT, 0)
	require.NoError(t, err)
	defer f.Close()
	buf := alignedBlock(4096)
	for i := range buf {
		buf[i] = byte(off>>12) ^ byte(i)
	}
	_, err = f.WriteAt(buf, off)
	var errno syscall.Errno
	if errors.As(err, &errno) {
		return errno
	}
	require.NoError(t, err)
	return 0
}

func prJSON(t *testing.T, m *mount, args ...string) control.PRReply {
	t.Helper()
	out := m.mustCtl(append([]string{"pr", "--json"}, args...)...)
	var r control.PRReply
	require.NoError(t, json.Unmarshal([]byte(out), &r), out)
	return r
}

// TestPRTwoHostsFencing: A and B register, A reserves WE; B's writes fail
// with EBADE (dd says so too) while its reads work; `pr --read-keys` shows
// both keys on every nexus; B preempts-and-aborts A: A's writes now fail
// with EBADE and B writes; status counts the conflicts, events report them.
func TestPRTwoHostsFencing(t *testing.T) {
	needs.Tools(t, "root", "/dev/fuse", "dd")
	s := startArrayServe(t)
	a := startHost(t, s, "a", 0, 2)
	b := startHost(t, s, "b", 1, 3)
	assert.Equal(t, "a", a.status().Host)
	for _, m := range []*mount{a, b} {
		waitFor(t, 15*time.Second, "both paths active", func() bool {
			n := 0
			for _, p := range m.status().Devices[0].Paths {
				if p.State == "active" {
					n++
				}
			}
			return n == 2
		})
	}
	a.mustCtl("pr", "--register", "--param-sark", "0xa", "d0")
	b.mustCtl("pr", "--register", "--param-sark", "0xb", "d0")
	keys := prJSON(t, b, "--read-keys", "d0").Keys
	assert.ElementsMatch(t, []uint64{0xa, 0xa, 0xb, 0xb}, keys, "one registration per I_T nexus: two paths per host")
	human := a.mustCtl("pr", "--read-keys", "d0")
	assert.Contains(t, human, "0xa")
	assert.Contains(t, human, "0xb")

	a.mustCtl("pr", "--reserve", "--param-rk", "0xa", "--prout-type", "WE", "d0")
	res := prJSON(t, b, "--read-reservation", "d0").Reservation
	require.NotNil(t, res)
	assert.True(t, res.Held)
	assert.Equal(t, uint64(0xa), res.Key)
	assert.Equal(t, "WE", res.Type.String())

	// A writes through the holder nexus (the device pins WE to it).
	for i := range 8 {
		require.Equal(t, syscall.Errno(0), writeBlock(t, a, int64(i)*4096), "A's write %d", i)
	}
	// B: EBADE on writes, no failover, paths stay active; reads work.
	assert.Equal(t, syscall.EBADE, writeBlock(t, b, 0))
	out, err := exec.Command("dd", "if=/dev/zero", "of="+b.file("d0"), "bs=4096", "count=1", "oflag=direct", "conv=notrunc").CombinedOutput()
	require.Error(t, err)
	assert.Contains(t, string(out), "Invalid exchange", "dd reports EBADE's message")
	rf, err := os.Open(b.file("d0"))
	require.NoError(t, err)
	_, err = rf.ReadAt(make([]byte, 4096), 0)
	rf.Close()
	require.NoError(t, err, "WE lets other hosts read")
	stB := b.status().Devices[0]
	assert.GreaterOrEqual(t, stB.ReservationConflicts, uint64(2))
	for _, p := range stB.Paths {
		assert.Equal(t, "active", p.State, "a conflict fails no path: %s", p.Name)
	}
	assert.Contains(t, b.mustCtl("events", "--json"), `"reservation-conflict"`)

	// B fences A.
	b.mustCtl("pr", "--preempt-abort", "--param-rk", "0xb", "--param-sark", "0xa", "--prout-type", "WE", "d0")
	assert.ElementsMatch(t, []uint64{0xb, 0xb}, prJSON(t, a, "--read-keys", "d0").Keys)
	assert.Equal(t, syscall.EBADE, writeBlock(t, a, 0), "A is fenced")
	for i := range 8 {
		require.Equal(t, syscall.Errno(0), writeBlock(t, b, int64(i)*4096), "B's write %d", i)
	}
	b.mustCtl("pr", "--release", "--param-rk", "0xb", "--prout-type", "WE", "d0")
	b.mustCtl("pr", "--clear", "--param-rk", "0xb", "d0")
	assert.Empty(t, prJSON(t, a, "--read-keys", "d0").Keys)
	a.stopClean(t)
	b.stopClean(t)
}

// TestPRIoctlTwoHosts: the Linux PR ioctls on the device file register on
// every path and reserve; the other host then meets EBADE; a path added to
// the reserved device is registered before it carries I/O.
func TestPRIoctlTwoHosts(t *testing.T) {
	needs.Tools(t, "root", "/dev/fuse")
	s := startArrayServe(t)
	a := startHost(t, s, "a", 0, 2)
	b := startHost(t, s, "b", 1, 3)
	f, err := os.OpenFile(a.file("d0"), os.O_RDWR, 0)
	require.NoError(t, err)
	defer f.Close()
	ioctl := func(cmd uint32, keys []uint64, words ...uint32) syscall.Errno {
		var buf []byte
		for _, k := range keys {
			buf = bin.LittleEndian.AppendUint64(buf, k)
		}
		for _, w := range words {
			buf = bin.LittleEndian.AppendUint32(buf, w)
		}
		_, _, e := unix.Syscall(unix.SYS_IOCTL, f.Fd(), uintptr(cmd), uintptr(unsafe.Pointer(&buf[0])))
		return e
	}
	const iocPRRegister, iocPRReserve, iocPRRelease = 0x401870c8, 0x401070c9, 0x401070ca
	require.Equal(t, syscall.Errno(0), ioctl(iocPRRegister, []uint64{0, 0xa1}, 0, 0))
	assert.ElementsMatch(t, []uint64{0xa1, 0xa1}, prJSON(t, b, "--read-keys", "d0").Keys, "registered on both of A's paths")
	require.Equal(t, syscall.Errno(0), ioctl(iocPRReserve, []uint64{0xa1}, 3, 0)) // PR_WRITE_EXCLUSIVE_REG_ONLY
	res := prJSON(t, b, "--read-reservation", "d0").Reservation
	require.NotNil(t, res)
	assert.Equal(t, "WERO", res.Type.String())
	assert.Equal(t, syscall.EBADE, writeBlock(t, b, 0), "B is not registered: WERO keeps it out")
	for i := range 4 {
		assert.Equal(t, syscall.Errno(0), writeBlock(t, a, int64(i)*4096), "A's registered paths all write")
	}
	// A path that joins the reserved device is registered before it
	// carries I/O: no conflicts through it.
	added := fmt.Sprintf("iscsi://%s/%s/0", s.portals[1], s.iqn) // controller A: AO, so RR uses it
	a.mustCtl("path", "add", "d0", added)
	assert.ElementsMatch(t, []uint64{0xa1, 0xa1, 0xa1}, prJSON(t, b, "--read-keys", "d0").Keys, "the joining path is registered")
	for i := range 9 {
		assert.Equal(t, syscall.Errno(0), writeBlock(t, a, int64(i)*4096), "A's write %d with the new path", i)
	}
	var joined bool
	for _, p := range a.status().Devices[0].Paths {
		if strings.HasPrefix(p.URI, added) {
			joined = p.Writes > 0
		}
	}
	assert.True(t, joined, "the added path carried writes:\n%s", a.mustCtl("status"))
	assert.Zero(t, a.status().Devices[0].ReservationConflicts)
	assert.Equal(t, syscall.EBADE, ioctl(iocPRReserve, []uint64{0xdead}, 3, 0), "a wrong key conflicts")
	require.Equal(t, syscall.Errno(0), ioctl(iocPRRelease, []uint64{0xa1}, 3, 0))
	assert.Equal(t, syscall.Errno(0), writeBlock(t, b, 0))
	f.Close()
	out := a.mustCtl("pr", "--read-full-status", "d0")
	assert.True(t, strings.Contains(out, "host.a"), "full status names A's initiator:\n%s", out)
	a.stopClean(t)
	b.stopClean(t)
}
