package e2e

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/mpathfs/mpathfs/internal/needs"
	"github.com/mpathfs/mpathfs/mpath"
)

// startNbdfuse serves the NBD export of srv as the file DIR/nbd through a
// FUSE mount (nbdfuse), unmounted and stopped by PID in cleanup.
func startNbdfuse(t *testing.T, srv *nbdServer) string {
	t.Helper()
	needs.Tools(t, "nbdfuse", "fusermount3")
	dir := filepath.Join(t.TempDir(), "nbdfuse")
	require.NoError(t, os.Mkdir(dir, 0o700))
	cmd := exec.Command("nbdfuse", dir, "--unix", srv.sock)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	require.NoError(t, cmd.Start())
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		srv.signal(syscall.SIGCONT) // a stopped server would keep the unmount waiting
		exec.Command("fusermount3", "-u", "-z", dir).Run()
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-exited
		}
	})
	file := filepath.Join(dir, "nbd")
	waitFor(t, 10*time.Second, "nbdfuse to serve "+file, func() bool {
		st, err := os.Stat(file)
		return err == nil && st.Size() > 0
	})
	return file
}

func pathStatus(m *mount, dev, name string) mpath.PathStatus {
	for _, d := range m.status().Devices {
		if d.Name != dev {
			continue
		}
		for _, p := range d.Paths {
			if p.Name == name {
				return p
			}
		}
	}
	m.t.Fatalf("device %s has no path %s", dev, name)
	return mpath.PathStatus{}
}

// TestHungFusePathUnderFio: two paths to one store, one a file on a FUSE
// mount (nbdfuse) whose NBD server is stopped (SIGSTOP) for seconds — its
// system calls hang, uninterruptibly — the other an NBD connection to a
// second server on the same file. fio randrw with crc32c verification sees
// no error and its reads keep flowing while the server is stopped; stopping
// mpathfs while the server is still stopped unmounts at once.
func TestHungFusePathUnderFio(t *testing.T) {
	needs.Tools(t, "root", "/dev/fuse", "fio", "nbdkit", "nbdfuse")
	st := store(t, 256<<20)
	hung := startNbdkit(t, st)
	other := startNbdkit(t, st)
	fuseFile := startNbdfuse(t, hung)
	// Hedged reads off: this test is about the hung system calls themselves
	// (reads cut at the deadline, writes pending until the call returns);
	// with hedging the hung path's reads would be answered by the other path.
	m := startMount(t, "--name", "d0", "--psp", "VMW_PSP_RR", "--psp-option", "iops=1",
		"--io-timeout", "1s", "--check-interval", "500ms", "--hedge", "off",
		"--path", "file://"+fuseFile+"?direct=true", "--path", other.uri())
	t.Cleanup(func() { hung.signal(syscall.SIGCONT) }) // before the mount's own cleanup
	var fusePath, nbdPath string
	for _, p := range m.status().Devices[0].Paths {
		if p.Transport == "file" {
			fusePath = p.Name
		} else {
			nbdPath = p.Name
		}
	}
	require.NotEmpty(t, fusePath)
	require.NotEmpty(t, nbdPath)

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	// Two jobs: the verified randrw, and plain reads beside it. Every write
	// that was on the FUSE path when its server stopped holds its fio slot
	// until the pwrite returns (its retry could be overtaken by the hung
	// attempt: docs/guarantees.md, "Hung system calls"), and in its write phases fio's
	// verified job may have all 16 slots on such writes; the read job's
	// reads are cut at the deadline and retried on the other path, so they
	// keep flowing whatever the writes do.
	run := startFio(ctx, "--filename="+m.file("d0"), "--direct=1", "--bs=4k", "--ioengine=libaio",
		"--size=256M", "--runtime=12", "--time_based",
		"--name=hung", "--rw=randrw", "--iodepth=16",
		"--verify=crc32c", "--do_verify=1", "--verify_backlog=1024", "--verify_fatal=1", "--verify_state_save=0",
		"--randseed=42",
		"--name=reads", "--rw=randread", "--iodepth=4")
	waitFor(t, 30*time.Second, "I/O on the FUSE path", func() bool { return pathStatus(m, "d0", fusePath).Reads > 100 })

	hung.signal(syscall.SIGSTOP)
	waitFor(t, 30*time.Second, "the FUSE path to fail", func() bool { return pathStatus(m, "d0", fusePath).Errors > 0 })
	before := pathStatus(m, "d0", nbdPath).Reads
	waitFor(t, 30*time.Second, "reads to keep flowing on the other path", func() bool {
		return pathStatus(m, "d0", nbdPath).Reads > before+1000
	})
	time.Sleep(2 * time.Second) // keep the server stopped a while longer
	hung.signal(syscall.SIGCONT)

	r, out, err := run.wait()
	require.NoError(t, err, "fio:\n%s", out)
	require.Len(t, r.Jobs, 2)
	for _, j := range r.Jobs {
		assert.Zero(t, j.Error, "fio error:\n%s", out)
		assert.Zero(t, j.TotalErr, "fio errors:\n%s", out)
		assert.Positive(t, j.Read.IOBytes)
	}
	assert.Positive(t, r.Jobs[0].Write.IOBytes)

	// Stop mpathfs while the server is stopped again, after some I/O hit the
	// FUSE path: the unmount must not wait for the hung calls. The path is
	// switched on first (it may be held down by flap damping).
	m.mustCtl("path", "set", "--state", "on", fusePath)
	ps := pathStatus(m, "d0", fusePath)
	require.Equal(t, "active", ps.State)
	hung.signal(syscall.SIGSTOP)
	r, out, err = runFio(ctx, "--name=tail", "--filename="+m.file("d0"), "--direct=1", "--rw=randread", "--bs=4k",
		"--ioengine=libaio", "--iodepth=8", "--size=256M", "--runtime=3", "--time_based")
	require.NoError(t, err, "fio:\n%s", out)
	assert.Zero(t, r.Jobs[0].TotalErr, "fio errors:\n%s", out)
	assert.Greater(t, pathStatus(m, "d0", fusePath).Errors, ps.Errors, "a read hung on the FUSE path")
	require.NoError(t, m.cmd.Process.Signal(syscall.SIGTERM))
	waitFor(t, 30*time.Second, "the unmount with the server still stopped", func() bool { return !isMounted(m.dir) })
	// The process itself exits once its hung system calls return: a thread
	// in an uninterruptible FUSE request holds the exit back.
	hung.signal(syscall.SIGCONT)
	select {
	case <-m.exited:
	case <-time.After(30 * time.Second):
		t.Fatalf("mpathfs did not exit 30s after the server resumed:\n%s", m.out.String())
	}
	assert.NoError(t, m.waitErr, "mpathfs:\n%s", m.out.String())
}
