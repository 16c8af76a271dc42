package e2e

import (
	"context"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/mpathfs/mpathfs/internal/needs"
)

// Who may use the device and the control socket. The tests run as root
// (CI is root) and act as the user nobody (uid 65534) through setpriv.
// Everything nobody must reach — the binary, the mountpoint, the socket —
// lives in a directory of mode 0755, so that a refusal comes from the
// device file's or the socket's own checks, never from a directory on the
// way (t.TempDir's directories are 0700).

const nobodyUID = "65534"

// publicDir is a fresh directory of mode 0755 with a copy of the binary
// that other users can run. It is removed after the test's mounts stopped.
func publicDir(t *testing.T) (dir, bin string) {
	t.Helper()
	dir, err := os.MkdirTemp("", "mpathfs-perm")
	require.NoError(t, err)
	t.Cleanup(func() { os.RemoveAll(dir) }) // registered first: runs after the mounts' cleanups
	require.NoError(t, os.Chmod(dir, 0o755))
	bin = filepath.Join(dir, "mpathfs")
	src, err := os.Open(binary)
	require.NoError(t, err)
	defer src.Close()
	dst, err := os.OpenFile(bin, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o755)
	require.NoError(t, err)
	_, err = io.Copy(dst, src)
	require.NoError(t, err)
	require.NoError(t, dst.Close())
	return dir, bin
}

// asNobody runs a command as uid/gid 65534 with no supplementary groups
// and returns its combined output and exit error.
func asNobody(t *testing.T, name string, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	full := append([]string{"--reuid=" + nobodyUID, "--regid=" + nobodyUID, "--clear-groups", "--", name}, args...)
	out, err := exec.CommandContext(ctx, "setpriv", full...).CombinedOutput()
	return string(out), err
}

// TestPermissions: with --allow-other, a user the device file's mode
// (0600, owner root) excludes can see the file but gets EACCES opening it
// to read or to write; root can. The control socket refuses the same
// user: by its mode (0600), and, when the mode was loosened, by the peer
// credentials check with an HTTP 403 and a message.
func TestPermissions(t *testing.T) {
	needs.Tools(t, "root", "/dev/fuse", "fusermount3", "setpriv", "dd", "stat")
	dir, bin := publicDir(t)
	sock := filepath.Join(dir, "ctl.sock")
	st := store(t, 16<<20)
	m := startMountAt(t, filepath.Join(dir, "mnt"), "--allow-other", "--name", "d0", "--path", st, "--control", sock)
	m.socket = sock
	dev := m.file("d0")

	// Root (the mounting user) reads and writes.
	pattern := make([]byte, 4096)
	for i := range pattern {
		pattern[i] = byte(i*7 + 1)
	}
	f, err := os.OpenFile(dev, os.O_RDWR, 0)
	require.NoError(t, err)
	_, err = f.WriteAt(pattern, 0)
	require.NoError(t, err)
	got := make([]byte, 4096)
	_, err = f.ReadAt(got, 0)
	require.NoError(t, err)
	require.NoError(t, f.Close())
	assert.Equal(t, pattern, got)

	t.Run("device", func(t *testing.T) {
		// allow_other is on: nobody sees the file and its mode and owner…
		out, err := asNobody(t, "stat", "-c", "%a %u", dev)
		require.NoError(t, err, out)
		assert.Equal(t, "600 0", strings.TrimSpace(out))
		// …and is refused reading and writing by them.
		out, err = asNobody(t, "dd", "if="+dev, "of=/dev/null", "bs=4096", "count=1")
		t.Logf("nobody reads: %s", strings.TrimSpace(out))
		assert.Error(t, err, "nobody read the device:\n%s", out)
		assert.Contains(t, out, "Permission denied")
		out, err = asNobody(t, "dd", "if=/dev/zero", "of="+dev, "bs=4096", "count=1", "conv=notrunc")
		assert.Error(t, err, "nobody wrote the device:\n%s", out)
		assert.Contains(t, out, "Permission denied")
		// The data is untouched.
		b := make([]byte, 4096)
		f, err := os.Open(dev)
		require.NoError(t, err)
		_, err = f.ReadAt(b, 0)
		f.Close()
		require.NoError(t, err)
		assert.Equal(t, pattern, b)
	})

	t.Run("socket-mode", func(t *testing.T) {
		fi, err := os.Lstat(sock)
		require.NoError(t, err)
		assert.Equal(t, os.FileMode(0o600), fi.Mode().Perm())
		out, err := asNobody(t, bin, "status", "--control", sock)
		t.Logf("nobody, socket 0600: %s", strings.TrimSpace(out))
		assert.Error(t, err, "nobody got a status:\n%s", out)
		assert.Contains(t, out, "permission denied")
		assert.NotContains(t, out, "d0 (", "no status leaked")
	})

	t.Run("socket-credentials", func(t *testing.T) {
		// Loosen the mode: the kernel lets nobody connect, the daemon's
		// credentials check still refuses.
		require.NoError(t, os.Chmod(sock, 0o666))
		defer os.Chmod(sock, 0o600)
		out, err := asNobody(t, bin, "status", "--control", sock)
		t.Logf("nobody, socket 0666: %s", strings.TrimSpace(out))
		assert.Error(t, err, "nobody got a status:\n%s", out)
		assert.Contains(t, out, "permission denied for uid "+nobodyUID)
		out, err = asNobody(t, bin, "trace", "--control", sock, "--count", "1", "d0")
		assert.Error(t, err, "nobody got a trace:\n%s", out)
		assert.Contains(t, out, "permission denied for uid "+nobodyUID)
	})

	t.Run("socket-closed-directory", func(t *testing.T) {
		// The same socket reached through a directory closed to nobody
		// (a second hard link in a 0700 directory): refused by the
		// directory, with a message that says so.
		closed := filepath.Join(dir, "closed")
		require.NoError(t, os.Mkdir(closed, 0o700))
		alias := filepath.Join(closed, "ctl.sock")
		require.NoError(t, os.Link(sock, alias))
		defer os.Remove(alias)
		out, err := asNobody(t, bin, "status", "--control", alias)
		t.Logf("nobody, closed directory: %s", strings.TrimSpace(out))
		assert.Error(t, err, "nobody got a status:\n%s", out)
		assert.Contains(t, out, "permission denied")
		assert.Contains(t, out, "directory")
	})

	// Root still is served.
	out := m.mustCtl("status")
	assert.Contains(t, out, "d0")
	m.stopClean(t)
}

// TestControlSocketPath: --control never removes anything but a stale
// socket. A regular file there is refused by name and left intact, a
// live socket (another mount) is refused, a stale one is replaced.
func TestControlSocketPath(t *testing.T) {
	needs.Tools(t, "root", "/dev/fuse", "fusermount3")
	dir := t.TempDir()
	st := store(t, 16<<20)
	other := store(t, 16<<20)

	// Run mount and expect it to refuse before mounting anything.
	refused := func(t *testing.T, sock string) string {
		t.Helper()
		mnt := filepath.Join(dir, "refused-mnt")
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		// A store of its own: the live mount's store would refuse it
		// before its socket is looked at (one host per store).
		cmd := exec.CommandContext(ctx, binary, "mount", "--control", sock, "--name", "d1", "--path", other, mnt)
		cmd.Env = append(os.Environ(), "MPATHFS_STATE_DIR="+filepath.Join(dir, "state"))
		b, err := cmd.CombinedOutput()
		if isMounted(mnt) {
			exec.Command("fusermount3", "-u", "-z", mnt).Run()
			t.Errorf("mount with --control %s mounted", sock)
		}
		require.Error(t, err, "mount with --control %s did not fail:\n%s", sock, b)
		return string(b)
	}

	t.Run("regular-file", func(t *testing.T) {
		p := filepath.Join(dir, "precious.txt")
		require.NoError(t, os.WriteFile(p, []byte("do not delete"), 0o644))
		out := refused(t, p)
		t.Logf("regular file: %s", strings.TrimSpace(out))
		assert.Contains(t, out, p, "the error names the path")
		assert.Contains(t, out, "not a socket")
		b, err := os.ReadFile(p)
		require.NoError(t, err, "the file was removed")
		assert.Equal(t, "do not delete", string(b))
	})

	t.Run("stale-and-live", func(t *testing.T) {
		sock := filepath.Join(dir, "s.sock")
		// What a crashed mount leaves: a socket file nobody listens on.
		ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: sock, Net: "unix"})
		require.NoError(t, err)
		ln.SetUnlinkOnClose(false)
		require.NoError(t, ln.Close())

		m := startMountAt(t, filepath.Join(dir, "mnt"), "--name", "d0", "--path", st, "--control", sock)
		m.socket = sock
		assert.Contains(t, m.mustCtl("status"), "d0")

		// A second mount on the live socket is refused; the first one
		// keeps serving.
		out := refused(t, sock)
		t.Logf("live socket: %s", strings.TrimSpace(out))
		assert.Contains(t, out, "in use by a running mpathfs")
		assert.Contains(t, m.mustCtl("status"), "d0")
		m.stopClean(t)
		_, err = os.Lstat(sock)
		assert.True(t, os.IsNotExist(err), "the socket is removed on exit")
	})
}

// TestTraceFileAndClients: `--trace` refuses to write through a symlink
// planted at its path; a trace file it creates is 0600 and gets one JSON
// line per I/O; two `mpathfs trace` clients at once both get records.
func TestTraceFileAndClients(t *testing.T) {
	needs.Tools(t, "root", "/dev/fuse", "fusermount3", "dd")
	dir := t.TempDir()
	st := store(t, 16<<20)

	victim := filepath.Join(dir, "victim")
	require.NoError(t, os.WriteFile(victim, []byte("keep"), 0o644))
	link := filepath.Join(dir, "trace-link")
	require.NoError(t, os.Symlink(victim, link))
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	mnt := filepath.Join(dir, "refused-mnt")
	b, err := exec.CommandContext(ctx, binary, "mount", "--control", filepath.Join(dir, "r.sock"), "--trace", link, "--name", "d1", "--path", st, mnt).CombinedOutput()
	if isMounted(mnt) {
		exec.Command("fusermount3", "-u", "-z", mnt).Run()
	}
	require.Error(t, err, "mount with --trace at a symlink:\n%s", b)
	assert.Contains(t, string(b), "symbolic link")
	vb, err := os.ReadFile(victim)
	require.NoError(t, err)
	assert.Equal(t, "keep", string(vb))

	trace := filepath.Join(dir, "t.jsonl")
	m := startMountAt(t, filepath.Join(dir, "mnt"), "--name", "d0", "--path", st, "--trace", trace)
	fi, err := os.Stat(trace)
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o600), fi.Mode().Perm())

	// Two trace clients, each waiting for 3 records, while I/O runs.
	type res struct {
		out string
		err error
	}
	results := make(chan res, 2)
	for range 2 {
		go func() {
			out, err := exec.CommandContext(ctx, binary, "trace", "--control", m.socket, "--count", "3", "d0").CombinedOutput()
			results <- res{string(out), err}
		}()
	}
	got := 0
	for got < 2 {
		select {
		case r := <-results:
			require.NoError(t, r.err, r.out)
			assert.Equal(t, 3, strings.Count(r.out, `"op":`), r.out)
			got++
		case <-ctx.Done():
			t.Fatal("the trace clients did not get their records")
		default:
			out, err := exec.Command("dd", "if="+m.file("d0"), "of=/dev/null", "bs=4096", "count=4", "iflag=direct").CombinedOutput()
			require.NoError(t, err, string(out))
			time.Sleep(20 * time.Millisecond)
		}
	}
	m.stopClean(t)
	tb, err := os.ReadFile(trace)
	require.NoError(t, err)
	assert.Greater(t, strings.Count(string(tb), "\n"), 0)
	assert.Contains(t, string(tb), `"op":"read"`)
	assert.NotContains(t, m.out.String(), "dropped")
}
