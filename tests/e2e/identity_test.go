package e2e

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/mpathfs/mpathfs/internal/needs"
)

// One store through two different mounts: path A is the image file
// itself, path B the same image as an nbdfuse mount shows it (nbdfuse over
// an nbdkit serving the file), so the two paths see different device and
// inode numbers, as two NFS mounts of one export do. A bind mount would
// not do: it keeps the device and inode numbers.

const identWWID = "naa.600a0b8000000000000000000000a001"

// randomStore makes a file of size bytes of seeded pseudo-random data, so
// that the sample-block check has something to compare.
func randomStore(t *testing.T, name string, size int, seed uint64) string {
	t.Helper()
	b := make([]byte, size)
	r := rand.New(rand.NewPCG(seed, seed))
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	p := filepath.Join(t.TempDir(), name)
	require.NoError(t, os.WriteFile(p, b, 0o600))
	return p
}

// fuseView is an nbdfuse mount of an nbdkit serving a file.
type fuseView struct {
	srv  *nbdServer
	mnt  string
	file string // the image as the mount shows it: MNT/nbd
	cmd  *exec.Cmd
}

// startFuseView serves file with nbdkit and mounts it with nbdfuse. Cleanup
// resumes a stopped nbdkit, unmounts lazily and kills nbdfuse by PID, so
// nothing is left behind even when the test failed with the server
// stopped.
func startFuseView(t *testing.T, file string) *fuseView {
	t.Helper()
	needs.Tools(t, "root", "/dev/fuse", "fusermount3", "nbdkit", "nbdfuse")
	v := &fuseView{srv: startNbdkit(t, file), mnt: filepath.Join(t.TempDir(), "view")}
	require.NoError(t, os.Mkdir(v.mnt, 0o700))
	v.file = filepath.Join(v.mnt, "nbd")
	v.cmd = exec.Command("nbdfuse", v.mnt, "--unix", v.srv.sock)
	var out syncBuffer
	v.cmd.Stdout, v.cmd.Stderr = &out, &out
	require.NoError(t, v.cmd.Start())
	exited := make(chan struct{})
	go func() { v.cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		v.srv.signal(syscall.SIGCONT)
		if isMounted(v.mnt) {
			exec.Command("fusermount3", "-u", "-z", v.mnt).Run()
		}
		v.cmd.Process.Kill()
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			t.Errorf("nbdfuse (PID %d) did not exit 10s after SIGKILL", v.cmd.Process.Pid)
		}
	})
	waitFor(t, 10*time.Second, "the nbdfuse mount", func() bool {
		select {
		case <-exited:
			t.Fatalf("nbdfuse exited: %s", out.String())
		default:
		}
		st, err := os.Stat(v.file)
		return err == nil && isMounted(v.mnt) && st.Size() > 0
	})
	return v
}

// runMount runs `mpathfs mount` expecting it to fail: its output and error.
func runMountFailing(t *testing.T, args ...string) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "mnt")
	full := append(append([]string{"mount", "--control", filepath.Join(t.TempDir(), "ctl.sock")}, args...), dir)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, binary, full...)
	out, err := cmd.CombinedOutput()
	if isMounted(dir) {
		exec.Command("fusermount3", "-u", "-z", dir).Run()
		t.Errorf("%s stayed mounted after a refused mount", dir)
	}
	require.Error(t, err, "mpathfs mount %s succeeded:\n%s", strings.Join(args, " "), out)
	return string(out)
}

func pathNames(t *testing.T, m *mount, uris ...string) []string {
	t.Helper()
	var names []string
	for _, u := range uris {
		n, _ := pathByURI(m, "d0", u)
		require.NotEmpty(t, n, "no path with URI %s in status", u)
		names = append(names, n)
	}
	return names
}

// TestIdentityTwoMountsFio: one image through two mounts joins one device
// under an asserted wwid (checked by sample blocks; the FUSE mount keeps no
// labels); fio --verify runs with a path failure on each path in turn, and
// each path comes back (re-checked against the other under load): 0
// errors.
func TestIdentityTwoMountsFio(t *testing.T) {
	needs.Tools(t, "fio")
	img := randomStore(t, "lun.img", 128<<20, 1)
	v := startFuseView(t, img)
	a, b := "file://"+img+"?direct=1", "file://"+v.file+"?direct=1"
	m := startMount(t, "--name", "d0", "--wwid", identWWID, "--path", a, "--path", b,
		"--psp", "VMW_PSP_RR", "--psp-option", "iops=1", "--io-timeout", "2s", "--check-interval", "500ms")
	out := m.out.String()
	assert.Contains(t, out, "sample blocks agree", "the mount says what it checked")
	for _, l := range strings.Split(out, "\n") {
		if strings.Contains(l, "identity:") {
			t.Log(l)
		}
	}
	st := m.status()
	require.Equal(t, identWWID, st.Devices[0].WWID)
	names := pathNames(t, m, a, b)

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	run := startFio(ctx, verifyJob(m.file("d0"), 16)...)
	for _, victim := range names {
		time.Sleep(2 * time.Second)
		m.mustCtl("fault", "inject", victim, "--error", "path-failure")
		waitFor(t, 10*time.Second, victim+" to die", func() bool { return pathState(m.status(), "d0", victim) == "dead" })
		time.Sleep(1500 * time.Millisecond)
		m.mustCtl("fault", "clear", victim)
		waitFor(t, 30*time.Second, victim+" to come back after the identity check", func() bool {
			return pathState(m.status(), "d0", victim) == "active"
		})
	}
	r, fout, err := run.wait()
	if err != nil || len(r.Jobs) == 0 || r.Jobs[0].Error != 0 || r.Jobs[0].TotalErr != 0 {
		t.Fatalf("fio across path failures on two mounts of one image: %v\n%s\n--- mpathfs:\n%s", err, fout, m.out.String())
	}
	io := pathIO(m.status(), "d0")
	for _, n := range names {
		assert.NotZero(t, io[n], "path %s carried I/O", n)
	}
	assert.NotContains(t, m.out.String(), "identity-refused")
	m.stopClean(t)
}

// TestIdentityDifferentFileRefused: a path to a different file of the same
// size is refused at mount, with an error naming both paths and the first
// differing offset; without an asserted wwid two mounts of one file are
// refused as before, with a hint.
func TestIdentityDifferentFileRefused(t *testing.T) {
	const size = 32 << 20
	img := randomStore(t, "lun.img", size, 2)
	other := randomStore(t, "other.img", size, 3)
	v := startFuseView(t, other)
	a, b := "file://"+img, "file://"+v.file
	out := runMountFailing(t, "--name", "d0", "--wwid", identWWID, "--path", a, "--path", b)
	assert.Contains(t, out, "path "+b+" and path "+a+" lead to different stores: their data differ at byte offset 0")

	same := startFuseView(t, img)
	out = runMountFailing(t, "--name", "d0", "--path", a, "--path", "file://"+same.file)
	assert.Contains(t, out, "lead to different stores")
	assert.Contains(t, out, "assert the device's wwid")
}

// TestIdentityLabelRefused: a file labelled for another device is refused
// even though its data agree.
func TestIdentityLabelRefused(t *testing.T) {
	img := randomStore(t, "lun.img", 8<<20, 4)
	out, err := exec.Command(binary, "label", "--wwid", "naa.6other", img).CombinedOutput()
	if err != nil && strings.Contains(string(out), "extended attributes") {
		t.Skipf("the temporary directory keeps no user extended attributes: %s", out)
	}
	require.NoError(t, err, "%s", out)
	v := startFuseView(t, img)
	msg := runMountFailing(t, "--name", "d0", "--wwid", identWWID, "--path", "file://"+img, "--path", "file://"+v.file)
	assert.Contains(t, msg, `is labelled "naa.6other"`)
}

// TestIdentityFuseServerStopped: the FUSE-mounted path's server is stopped
// for several seconds while reads run: reads keep flowing through the
// other path, the data is right, and the mount stops cleanly afterwards.
// It relies on a file path abandoning a pread that hangs past the I/O
// deadline; if that is missing, the readers stall here and the test says
// so.
func TestIdentityFuseServerStopped(t *testing.T) {
	const size = 64 << 20
	img := randomStore(t, "lun.img", size, 5)
	want, err := os.ReadFile(img)
	require.NoError(t, err)
	v := startFuseView(t, img)
	a, b := "file://"+img+"?direct=1", "file://"+v.file+"?direct=1"
	m := startMount(t, "--name", "d0", "--wwid", identWWID, "--path", a, "--path", b,
		"--psp", "VMW_PSP_RR", "--psp-option", "iops=1", "--io-timeout", "1s", "--check-interval", "500ms")
	t.Cleanup(func() { v.srv.signal(syscall.SIGCONT) }) // runs before the mount's cleanup
	names := pathNames(t, m, a, b)

	var ok, bad atomic.Int64
	var firstBad atomic.Value
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for g := 0; g < 4; g++ {
		wg.Add(1)
		go func(seed uint64) {
			defer wg.Done()
			f, err := os.OpenFile(m.file("d0"), os.O_RDONLY|syscall.O_DIRECT, 0)
			if err != nil {
				firstBad.CompareAndSwap(nil, err.Error())
				bad.Add(1)
				return
			}
			defer f.Close()
			buf := alignedBlock(4096)
			r := rand.New(rand.NewPCG(seed, 0))
			for {
				select {
				case <-stop:
					return
				default:
				}
				off := r.Int64N(size/4096) * 4096
				if _, err := f.ReadAt(buf, off); err != nil {
					firstBad.CompareAndSwap(nil, err.Error())
					bad.Add(1)
				} else if !bytes.Equal(buf, want[off:off+4096]) {
					firstBad.CompareAndSwap(nil, fmt.Sprintf("wrong data at %d", off))
					bad.Add(1)
				} else {
					ok.Add(1)
				}
			}
		}(uint64(g))
	}
	waitFor(t, 10*time.Second, "reads to flow", func() bool { return ok.Load() > 100 })

	v.srv.signal(syscall.SIGSTOP)
	time.Sleep(3 * time.Second) // past the 1s deadline: path B fails
	during := ok.Load()
	time.Sleep(3 * time.Second)
	during = ok.Load() - during
	stateB := pathState(m.status(), "d0", names[1])
	v.srv.signal(syscall.SIGCONT)
	t.Logf("reads completed in 3s while the FUSE path's server was stopped: %d; path B %s", during, stateB)
	assert.Positive(t, during, "reads keep flowing through the other path while the FUSE path's server is stopped")

	waitFor(t, 30*time.Second, "path B back", func() bool { return pathState(m.status(), "d0", names[1]) == "active" })
	close(stop)
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatalf("readers did not finish 30s after the server resumed")
	}
	if fb := firstBad.Load(); fb != nil {
		t.Errorf("%d reads failed or returned wrong data; first: %v", bad.Load(), fb)
	}
	m.stopClean(t)
}

// TestIdentityLoopTwoMounts: two loop devices over one image, one through
// the file itself and one through its nbdfuse view, report two synthetic
// WWIDs: refused by default, one device under an asserted wwid (checked),
// and refused when the second loop device is over a different file.
func TestIdentityLoopTwoMounts(t *testing.T) {
	needs.Tools(t, "losetup")
	const size = 32 << 20
	img := randomStore(t, "lun.img", size, 6)
	v := startFuseView(t, img)
	a, b := attachLoop(t, img), attachLoop(t, v.file)
	out := runMountFailing(t, "--name", "d0", "--path", "block://"+a, "--path", "block://"+b)
	assert.Contains(t, out, "lead to different stores")

	other := startFuseView(t, randomStore(t, "other.img", size, 7))
	c := attachLoop(t, other.file)
	out = runMountFailing(t, "--name", "d0", "--wwid", identWWID, "--path", "block://"+a, "--path", "block://"+c)
	assert.Contains(t, out, "their data differ at byte offset 0")

	m := startMount(t, "--name", "d0", "--wwid", identWWID, "--path", "block://"+a, "--path", "block://"+b, "--psp", "VMW_PSP_RR", "--psp-option", "iops=1")
	st := m.status()
	require.Equal(t, identWWID, st.Devices[0].WWID)
	require.Len(t, st.Devices[0].Paths, 2)
	f, err := os.OpenFile(m.file("d0"), os.O_RDWR|syscall.O_DIRECT, 0)
	require.NoError(t, err)
	buf, got := alignedBlock(4096), alignedBlock(4096)
	for i := 0; i < 32; i++ {
		copy(buf, fmt.Sprintf("block %03d through two loop devices", i))
		_, err := f.WriteAt(buf, int64(i)*4096)
		require.NoError(t, err)
	}
	for i := 0; i < 32; i++ {
		_, err := f.ReadAt(got, int64(i)*4096)
		require.NoError(t, err)
		want := fmt.Sprintf("block %03d through two loop devices", i)
		require.Equal(t, want, string(got[:len(want)]))
	}
	f.Close()
	m.stopClean(t)
}

// TestIdentityReturningPathOtherStore: an NBD path dies and its server
// comes back on the same socket serving a different file of the same size
// (a remount to another export): the path passes its probe but is not
// reinstated, and an identity-refused event says why; served the device's
// file again, it returns.
func TestIdentityReturningPathOtherStore(t *testing.T) {
	const size = 32 << 20
	img := randomStore(t, "lun.img", size, 8)
	other := randomStore(t, "other.img", size, 9)
	s := startNbdkit(t, img)
	m := startMount(t, "--name", "d0", "--wwid", identWWID, "--path", "file://"+img, "--path", s.uri(),
		"--check-interval", "300ms", "--io-timeout", "2s")
	name, state := pathByURI(m, "d0", s.uri())
	require.Equal(t, "active", state)

	ev := exec.Command(binary, "events", "--follow", "--json", "--control", m.socket)
	var evOut syncBuffer
	ev.Stdout, ev.Stderr = &evOut, &evOut
	require.NoError(t, ev.Start())
	t.Cleanup(func() { ev.Process.Kill(); ev.Wait() })

	serve := func(file string) {
		for i, a := range s.args {
			if a == img || a == other {
				s.args[i] = file
			}
		}
		s.start()
	}
	s.kill()
	waitFor(t, 15*time.Second, "the NBD path to die", func() bool { _, st := pathByURI(m, "d0", s.uri()); return st == "dead" })
	serve(other)
	waitFor(t, 30*time.Second, "an identity-refused event", func() bool { return strings.Contains(evOut.String(), `"identity-refused"`) })
	_, state = pathByURI(m, "d0", s.uri())
	assert.Equal(t, "dead", state, "a path leading to another store is not reinstated")
	assert.Contains(t, evOut.String(), "lead to different stores")
	assert.Contains(t, evOut.String(), name)

	s.kill()
	serve(img)
	waitFor(t, 30*time.Second, "the path back on the device's store", func() bool { _, st := pathByURI(m, "d0", s.uri()); return st == "active" })
	m.stopClean(t)
}

// TestIdentityPathAdd: `mpathfs path add` runs the same check on a live
// device: the image's FUSE view joins and carries I/O; a view of a
// different file of the same size is refused, naming the offset.
func TestIdentityPathAdd(t *testing.T) {
	const size = 32 << 20
	img := randomStore(t, "lun.img", size, 10)
	v := startFuseView(t, img)
	other := startFuseView(t, randomStore(t, "other.img", size, 11))
	m := startMount(t, "--name", "d0", "--wwid", identWWID, "--path", "file://"+img+"?direct=1", "--psp", "VMW_PSP_RR", "--psp-option", "iops=1")

	bad := "file://" + other.file + "?direct=1"
	out, err := m.ctl("path", "add", "d0", bad)
	require.Error(t, err, "path add of a different file succeeded: %s", out)
	assert.Contains(t, out, "lead to different stores: their data differ at byte offset 0")
	_, state := pathByURI(m, "d0", bad)
	assert.Equal(t, "missing", state)

	good := "file://" + v.file + "?direct=1"
	out = m.mustCtl("path", "add", "d0", good, "--name", "fuse-view")
	assert.Contains(t, out, "fuse-view added")
	_, state = pathByURI(m, "d0", good)
	require.Equal(t, "active", state)

	f, err := os.OpenFile(m.file("d0"), os.O_RDWR|syscall.O_DIRECT, 0)
	require.NoError(t, err)
	buf, got := alignedBlock(4096), alignedBlock(4096)
	for i := 0; i < 64; i++ {
		copy(buf, fmt.Sprintf("block %03d", i))
		_, err := f.WriteAt(buf, int64(i)*4096)
		require.NoError(t, err)
		_, err = f.ReadAt(got, int64(i)*4096)
		require.NoError(t, err)
		require.Equal(t, fmt.Sprintf("block %03d", i), string(got[:9]))
	}
	f.Close()
	assert.NotZero(t, pathIO(m.status(), "d0")["fuse-view"], "the added path carried I/O")
	m.stopClean(t)
}
