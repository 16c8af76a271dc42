package e2e

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/mpathfs/mpathfs/backends/fault"
	"github.com/mpathfs/mpathfs/control"
	"github.com/mpathfs/mpathfs/internal/needs"
)

// needNbdkitFilter fails (in CI) or skips when nbdkit lacks a filter.
func needNbdkitFilter(t *testing.T, name string) {
	t.Helper()
	needs.Tools(t, "nbdkit")
	out, err := exec.Command("nbdkit", "--dump-config").Output()
	require.NoError(t, err, "nbdkit --dump-config")
	dir := ""
	for _, line := range strings.Split(string(out), "\n") {
		if v, ok := strings.CutPrefix(line, "filterdir="); ok {
			dir = v
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "nbdkit-"+name+"-filter.so")); err != nil {
		needs.Unavailable(t, fmt.Sprintf("needs nbdkit's %s filter (in %s)", name, dir))
	}
}

// readAt reads n bytes at off from a file, with O_DIRECT when direct.
func readAt(t *testing.T, name string, off int64, n int, direct bool) []byte {
	t.Helper()
	flags := os.O_RDONLY
	if direct {
		flags |= syscall.O_DIRECT
	}
	f, err := os.OpenFile(name, flags, 0)
	require.NoError(t, err)
	defer f.Close()
	b := alignedBlock(n)
	_, err = f.ReadAt(b, off)
	require.NoError(t, err, "read %d bytes at %d of %s", n, off, name)
	return b
}

func allBytes(b []byte, v byte) bool { return len(b) > 0 && bytes.Count(b, []byte{v}) == len(b) }

// extents maps the file's logical 4 KiB blocks to physical blocks of its
// file system (filefrag -v; the file system must use 4 KiB blocks).
func extents(t *testing.T, file string) map[int64]int64 {
	t.Helper()
	out, err := runCmd("filefrag", "-v", "-b4096", file)
	require.NoError(t, err, out)
	re := regexp.MustCompile(`^\s*\d+:\s*(\d+)\.\.\s*(\d+):\s*(\d+)\.\.\s*(\d+):`)
	m := map[int64]int64{}
	for _, line := range strings.Split(out, "\n") {
		g := re.FindStringSubmatch(line)
		if g == nil {
			continue
		}
		l0, _ := strconv.ParseInt(g[1], 10, 64)
		l1, _ := strconv.ParseInt(g[2], 10, 64)
		p0, _ := strconv.ParseInt(g[3], 10, 64)
		for l := l0; l <= l1; l++ {
			m[l] = p0 + l - l0
		}
	}
	require.NotEmpty(t, m, "no extents in filefrag's output:\n%s", out)
	return m
}

// startTrimlessNbdkit serves file with nbdkit's eval plugin: reads,
// writes and write-zeroes reach the file, trims are accepted and ignored
// (the NBD protocol allows that: a trim is advisory). Only a write-zeroes
// leaves zeros on such a server.
func startTrimlessNbdkit(t *testing.T, file string) *nbdServer {
	t.Helper()
	needs.Tools(t, "nbdkit", "dd")
	dir := t.TempDir()
	s := &nbdServer{t: t, sock: filepath.Join(dir, "nbd.sock"), pidfile: filepath.Join(dir, "nbd.pid")}
	q := "'" + file + "'"
	s.args = []string{"-f", "--exit-with-parent", "-P", s.pidfile, "-U", s.sock, "eval",
		"get_size=stat -Lc %s " + q,
		"pread=dd if=" + q + " skip=$4 count=$3 iflag=count_bytes,skip_bytes status=none",
		"pwrite=dd of=" + q + " seek=$4 conv=notrunc oflag=seek_bytes status=none",
		"zero=dd if=/dev/zero of=" + q + " seek=$4 count=$3 conv=notrunc oflag=seek_bytes iflag=count_bytes status=none",
		"trim=exit 0",
		"flush=sync " + q,
	}
	s.start()
	t.Cleanup(s.stop)
	return s
}

// TestZeroingOverNBD: a device of two NBD paths (two nbdkit servers over
// one file), a loop device over its device file, ext4 on it. Punching a
// hole in a file (ext4 mounted with discard sends the freed blocks down as
// discards, which the loop device turns into fallocate(PUNCH_HOLE)) and
// blkdiscard -z / blkdiscard on the loop device must leave zeros in the
// store: read through the loop device, the device file and the backing
// file itself. Once with nbdkit's file plugin, once with servers that
// ignore trims, where only a write-zeroes leaves zeros.
func TestZeroingOverNBD(t *testing.T) {
	for _, server := range []struct {
		name  string
		start func(t *testing.T, file string) *nbdServer
	}{
		{"file plugin", func(t *testing.T, file string) *nbdServer { return startNbdkit(t, file) }},
		{"trims ignored", startTrimlessNbdkit},
	} {
		t.Run(server.name, func(t *testing.T) { testZeroing(t, server.start) })
	}
}

func testZeroing(t *testing.T, startServer func(t *testing.T, file string) *nbdServer) {
	needs.Tools(t, "nbdkit", "losetup", "mkfs.ext4", "e2fsck", "mount", "umount", "blkdiscard", "filefrag", "fallocate", "sync")
	const size = 256 << 20
	backing := store(t, size)
	s1, s2 := startServer(t, backing), startServer(t, backing)
	m := startMount(t, "--name", "d0", "--path", s1.uri(), "--path", s2.uri(), "--psp", "VMW_PSP_RR", "--psp-option", "iops=1")
	loop := attachLoop(t, m.file("d0"))
	out, err := runCmd("mkfs.ext4", "-q", "-F", "-b", "4096", loop)
	require.NoError(t, err, out)
	mnt := filepath.Join(t.TempDir(), "ext4")
	require.NoError(t, os.MkdirAll(mnt, 0o755))
	out, err = runCmd("mount", "-o", "discard", loop, mnt)
	require.NoError(t, err, out)
	mounted := true
	t.Cleanup(func() {
		if mounted {
			runCmd("umount", "-l", mnt)
		}
	})

	// A file full of 0xa5, durable.
	file := filepath.Join(mnt, "data")
	require.NoError(t, os.WriteFile(file, bytes.Repeat([]byte{0xa5}, 8<<20), 0o600))
	out, err = runCmd("sync", file)
	require.NoError(t, err, out)
	ext := extents(t, file)
	punched, kept := ext[600], ext[100] // logical blocks inside and outside the hole (2 MiB + 2 MiB)
	require.NotZero(t, punched)
	require.True(t, allBytes(readAt(t, backing, punched*4096, 4096, false), 0xa5), "the file's data is not in the backing file")

	out, err = runCmd("fallocate", "-p", "-o", "2M", "-l", "2M", file)
	require.NoError(t, err, out)
	out, err = runCmd("sync", "-f", file) // commits the journal: ext4 discards the freed blocks
	require.NoError(t, err, out)
	waitFor(t, 30*time.Second, "the punched blocks to read as zeros in the backing file", func() bool {
		return allBytes(readAt(t, backing, punched*4096, 4096, false), 0)
	})
	for l := int64(512); l < 1024; l++ {
		if p, ok := ext[l]; ok {
			require.True(t, allBytes(readAt(t, backing, p*4096, 4096, false), 0), "block %d (physical %d) of the hole is not zero in the backing file", l, p)
		}
	}
	assert.True(t, allBytes(readAt(t, m.file("d0"), punched*4096, 4096, true), 0), "the hole through the device file")
	assert.True(t, allBytes(readAt(t, backing, kept*4096, 4096, false), 0xa5), "data outside the hole was zeroed")
	assert.True(t, allBytes(readAt(t, file, 0, 4096, false), 0xa5))
	out, err = runCmd("umount", mnt)
	require.NoError(t, err, out)
	mounted = false
	out, err = runCmd("e2fsck", "-fn", loop)
	require.NoError(t, err, out)

	// blkdiscard -z (write-zeroes) and blkdiscard (discard) on the loop
	// device, over non-zero data past the file system's used blocks.
	for _, c := range []struct {
		name string
		off  int64
		args []string
	}{
		{"blkdiscard -z", 200 << 20, []string{"-z"}},
		{"blkdiscard", 220 << 20, nil},
	} {
		const n = 4 << 20
		f, err := os.OpenFile(loop, os.O_WRONLY|syscall.O_DIRECT, 0)
		require.NoError(t, err)
		buf := alignedBlock(n)
		for i := range buf {
			buf[i] = 0x5a
		}
		_, err = f.WriteAt(buf, c.off)
		require.NoError(t, err)
		require.NoError(t, f.Sync())
		f.Close()
		require.True(t, allBytes(readAt(t, backing, c.off, n, false), 0x5a), "%s: data not in the backing file", c.name)
		args := append(append([]string{}, c.args...), "-o", strconv.FormatInt(c.off+4096, 10), "-l", strconv.FormatInt(n-8192, 10), loop)
		out, err := runCmd("blkdiscard", args...)
		require.NoError(t, err, "%s: %s", c.name, out)
		for _, src := range []struct {
			name   string
			direct bool
		}{{loop, true}, {m.file("d0"), true}, {backing, false}} {
			got := readAt(t, src.name, c.off, n, src.direct)
			assert.True(t, allBytes(got[4096:n-4096], 0), "%s: %s does not read zeros", c.name, src.name)
			assert.True(t, allBytes(got[:4096], 0x5a) && allBytes(got[n-4096:], 0x5a), "%s: %s: data outside the range changed", c.name, src.name)
		}
	}
	st := m.status().Devices[0]
	for _, p := range st.Paths {
		assert.Equal(t, "active", p.State, "path %s", p.Name)
	}
	runCmd("losetup", "-d", loop)
	m.stopClean(t)
}

// TestMediumErrorNotAPD: one bad block behind both NBD paths (nbdkit's
// ddrescue filter fails reads of the blocks its map file marks bad with
// EIO, the server stays up). Reading it fails with EIO; other reads keep
// working; both paths stay active and the device never enters
// All-Paths-Down.
func TestMediumErrorNotAPD(t *testing.T) {
	needNbdkitFilter(t, "ddrescue")
	backing := store(t, 64<<20)
	require.NoError(t, os.WriteFile(backing, bytes.Repeat([]byte{0xa5}, 8<<20), 0o600))
	require.NoError(t, os.Truncate(backing, 64<<20))
	mapfile := filepath.Join(t.TempDir(), "bad.map")
	require.NoError(t, os.WriteFile(mapfile, []byte(`# Mapfile. Created by GNU ddrescue version 1.25
# current_pos  current_status  current_pass
0x00000000     +               1
#      pos        size  status
0x00000000  0x00100000  +
0x00100000  0x00001000  -
0x00101000  0x03EFF000  +
`), 0o600))
	var uris []string
	for range 2 {
		s := startNbdkit(t, backing, "--filter=ddrescue", "ddrescue-mapfile="+mapfile)
		uris = append(uris, "--path", s.uri())
	}
	m := startMount(t, append([]string{"--name", "d0", "--psp", "VMW_PSP_RR", "--psp-option", "iops=1", "--apd-timeout", "5s"}, uris...)...)

	f, err := os.OpenFile(m.file("d0"), os.O_RDONLY|syscall.O_DIRECT, 0)
	require.NoError(t, err)
	defer f.Close()
	buf := alignedBlock(4096)
	for i := range 6 { // through both paths (round robin, one I/O each)
		_, err := f.ReadAt(buf, 1<<20)
		require.Error(t, err, "read %d of the bad block", i)
		assert.True(t, errors.Is(err, syscall.EIO), "read %d of the bad block: %v, want EIO", i, err)
		for _, off := range []int64{0, 1<<20 - 4096, 1<<20 + 4096, 4 << 20} {
			_, err := f.ReadAt(buf, off)
			require.NoError(t, err, "a good block at %d", off)
			require.True(t, allBytes(buf, 0xa5), "a good block at %d", off)
		}
	}
	// A read spanning the bad block fails as a whole.
	big := alignedBlock(64 << 10)
	_, err = f.ReadAt(big, 1<<20-8192)
	assert.True(t, errors.Is(err, syscall.EIO), "a read spanning the bad block: %v", err)
	f.Close()

	st := m.status().Devices[0]
	assert.False(t, st.APD)
	assert.Zero(t, st.APDEntries, "the device entered All-Paths-Down")
	assert.Zero(t, st.Failovers)
	var medium uint64
	for _, p := range st.Paths {
		assert.Equal(t, "active", p.State, "path %s (%s)", p.Name, p.Reason)
		assert.Zero(t, p.ErrorsBy["path-failure"], "path %s", p.Name)
		medium += p.ErrorsBy["device-error"]
	}
	assert.GreaterOrEqual(t, medium, uint64(7), "each bad read counts as a device error")
	m.stopClean(t)
}

// TestFsyncCacheDomains: fsync after a path that carried writes died. Two
// paths to one multi-conn NBD server share its cache: the other path's
// flush covers the dead one and fsync succeeds. Paths to two servers (over
// one file, but nothing on the wire says they share a cache) do not: fsync
// waits for the dead path until the APD timeout and fails with EIO; once
// the path is back, its own flush makes fsync succeed.
//
// Between the writes and the fsync the test forks nothing: a fork+exec
// closes the descriptor in the child, which sends a FUSE FLUSH and so
// flushes the device before the path died. It talks to the control socket
// from the test process instead of running the CLI.
func TestFsyncCacheDomains(t *testing.T) {
	needs.Tools(t, "nbdkit")
	for _, tc := range []struct {
		name       string
		twoServers bool
	}{{"one server", false}, {"two servers", true}} {
		t.Run(tc.name, func(t *testing.T) {
			backing := store(t, 64<<20)
			s1 := startNbdkit(t, backing)
			s2 := s1
			if tc.twoServers {
				s2 = startNbdkit(t, backing)
			}
			m := startMount(t, "--name", "d0", "--path", s1.uri(), "--path", s2.uri(), "--psp", "VMW_PSP_RR", "--psp-option", "iops=1",
				"--check-interval", "200ms", "--apd-timeout", "2s")
			c, err := control.Dial(m.socket)
			require.NoError(t, err)
			ctx := t.Context()
			state := func(name string) string {
				st, err := c.Status(ctx)
				require.NoError(t, err)
				return pathState(st, "d0", name)
			}
			st, err := c.Status(ctx)
			require.NoError(t, err)
			p1 := st.Devices[0].Paths[0].Name

			f, err := os.OpenFile(m.file("d0"), os.O_RDWR|syscall.O_DIRECT, 0)
			require.NoError(t, err)
			defer f.Close()
			buf := alignedBlock(4096)
			for i := range 16 { // round robin: both paths carry writes
				buf[0] = byte(i)
				_, err := f.WriteAt(buf, int64(i)*4096)
				require.NoError(t, err)
			}
			require.NoError(t, c.Post(ctx, "/v1/fault/inject", control.FaultInjectRequest{Path: p1, Spec: fault.Spec{Error: "path-failure"}}, nil))
			waitFor(t, 10*time.Second, p1+" to die", func() bool { return state(p1) == "dead" })
			err = f.Sync()
			if !tc.twoServers {
				require.NoError(t, err, "the live path shares the dead one's cache")
				f.Close()
				m.stopClean(t)
				return
			}
			require.Error(t, err, "fsync claimed durability for writes held by a dead path to another server")
			assert.True(t, errors.Is(err, syscall.EIO), "fsync: %v, want EIO", err)
			assert.Contains(t, err.Error(), "input/output error")
			require.Error(t, f.Sync(), "still not durable")
			require.NoError(t, c.Post(ctx, "/v1/fault/clear", control.FaultClearRequest{Path: p1}, nil))
			waitFor(t, 10*time.Second, p1+" to return", func() bool { return state(p1) == "active" })
			require.NoError(t, f.Sync(), "the returned path's own flush")
			f.Close()
			m.stopClean(t)
		})
	}
}
