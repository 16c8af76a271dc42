package e2e

import (
	"bytes"
	"context"
	bin "encoding/binary"
	"fmt"
	"io"
	"net/http"
	"os"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/mpathfs/mpathfs/internal/needs"
	"github.com/mpathfs/mpathfs/mpath"
)

// Exclusive by default, multi-writer on request: real `mpathfs mount`
// processes on one file store.

func sharing(t *testing.T, m *mount, dev string) *mpath.Sharing {
	t.Helper()
	for _, d := range m.status().Devices {
		if d.Name == dev {
			require.NotNil(t, d.Sharing, "status --json of %s has no sharing", dev)
			return d.Sharing
		}
	}
	t.Fatalf("no device %s in status", dev)
	return nil
}

// TestShareExclusiveSecondMountRefused: a second mount of a store held by
// a first is refused with an error naming the holder (host, pid,
// mountpoint); status and events of the first show the lock; once the
// first stops, the store mounts again.
func TestShareExclusiveSecondMountRefused(t *testing.T) {
	st := store(t, 16<<20)
	a := startMount(t, "--name", "d0", "--path", st)
	out := runMountFailing(t, "--name", "d0", "--path", "file://"+st+"?direct=1")
	assert.Contains(t, out, "store "+st+" is held exclusively by host ")
	assert.Contains(t, out, fmt.Sprintf("pid %d", a.cmd.Process.Pid))
	assert.Contains(t, out, "mounted at "+a.dir)
	assert.Contains(t, out, "--multi-writer")

	out = runMountFailing(t, "--name", "d0", "--multi-writer", "--path", st)
	assert.Contains(t, out, "a multi-writer host shares a store only with other multi-writer hosts")

	sh := sharing(t, a, "d0")
	assert.Equal(t, mpath.ShareExclusive, sh.Mode)
	require.Len(t, sh.Holders, 1)
	assert.True(t, sh.Holders[0].Self)
	assert.Equal(t, a.cmd.Process.Pid, sh.Holders[0].PID)
	ev := a.mustCtl("events", "--json")
	assert.Contains(t, ev, `"lock-taken"`)
	assert.Contains(t, a.mustCtl("status"), "sharing=exclusive")

	a.stopClean(t)
	b := startMount(t, "--name", "d0", "--path", st)
	assert.Equal(t, b.cmd.Process.Pid, sharing(t, b, "d0").Holders[0].PID, "the store is free once its holder unmounted")
	b.stopClean(t)
}

// TestShareMultiWriterFio: two multi-writer mounts of one store write
// disjoint halves under fio --verify at the same time: both verify clean,
// and each mount's status names both holders. An exclusive mount is
// refused meanwhile.
func TestShareMultiWriterFio(t *testing.T) {
	needs.Tools(t, "fio")
	st := store(t, 64<<20)
	a := startMount(t, "--name", "d0", "--multi-writer", "--path", "file://"+st+"?direct=1", "--path", st)
	b := startMount(t, "--name", "d0", "--multi-writer", "--path", st)
	holders := sharing(t, b, "d0").Holders
	require.Len(t, holders, 2)
	assert.Equal(t, []int{1, 2}, []int{holders[0].Slot, holders[1].Slot})
	out := runMountFailing(t, "--name", "d0", "--path", st)
	assert.Contains(t, out, "is shared by 2 multi-writer host(s)")

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	runs := []*fioRun{
		startFio(ctx, verifyJob(a.file("d0"), 10, "--offset=0", "--size=32M")...),
		startFio(ctx, verifyJob(b.file("d0"), 10, "--offset=32M", "--size=32M")...),
	}
	for i, run := range runs {
		r, fout, err := run.wait()
		if err != nil || len(r.Jobs) == 0 || r.Jobs[0].Error != 0 || r.Jobs[0].TotalErr != 0 {
			t.Errorf("fio on host %d: %v\n%s", i+1, err, fout)
			continue
		}
		assert.Positive(t, r.Jobs[0].Write.IOBytes, "host %d wrote", i+1)
	}
	a.stopClean(t)
	b.stopClean(t)
}

// TestShareNinthRefused: eight multi-writer mounts share a small store;
// the ninth is refused naming the eight.
func TestShareNinthRefused(t *testing.T) {
	st := store(t, 1<<20)
	mounts := make([]*mount, mpath.MaxWriters)
	for i := range mounts {
		mounts[i] = startMount(t, "--name", "d0", "--multi-writer", "--path", st)
	}
	out := runMountFailing(t, "--name", "d0", "--multi-writer", "--path", st)
	assert.Contains(t, out, "already has 8 writers")
	for _, m := range mounts {
		assert.Contains(t, out, "mounted at "+m.dir)
	}
	slots := map[int]bool{}
	for _, h := range sharing(t, mounts[0], "d0").Holders {
		slots[h.Slot] = true
	}
	assert.Len(t, slots, mpath.MaxWriters, "status names the eight holders")
	for _, m := range mounts {
		m.stopClean(t)
	}
}

// TestShareISCSILockSector: with --lock-sector last, the lock of an
// `array serve` LU lives in its last block (hidden from the device) and
// is taken by COMPARE AND WRITE: a second host is refused naming the
// first; after the first unmounts, two multi-writer hosts share the LU
// and write disjoint halves under fio --verify, both clean.
func TestShareISCSILockSector(t *testing.T) {
	needs.Tools(t, "fio", "root", "/dev/fuse")
	s := startArrayServe(t)
	paths := func(host string) []string {
		var args []string
		for _, p := range s.portals[:2] {
			args = append(args, "--path", fmt.Sprintf("iscsi://%s/%s/0?initiator=iqn.2026-01.io.mpathfs.e2e:%s", p, s.iqn, host))
		}
		return args
	}
	a := startMount(t, append([]string{"--name", "d0", "--lock-sector", "last"}, paths("host-a")...)...)
	st := a.status().Devices[0]
	assert.Equal(t, int64(128<<20-512), st.Size, "the lock block is hidden from the device")
	require.NotNil(t, st.Sharing)
	require.Len(t, st.Sharing.Holders, 1)
	assert.True(t, st.Sharing.Holders[0].Self)
	assert.Equal(t, 0, st.Sharing.Holders[0].Slot)
	assert.Contains(t, a.mustCtl("events", "--json"), "ATS lock on the LU's last block")

	out := runMountFailing(t, append([]string{"--name", "d0", "--lock-sector", "last"}, paths("host-b")...)...)
	assert.Contains(t, out, "is held exclusively by host ")
	assert.Contains(t, out, fmt.Sprintf("pid %d", a.cmd.Process.Pid))
	out = runMountFailing(t, append([]string{"--name", "d0", "--lock-sector", "last", "--multi-writer"}, paths("host-b")...)...)
	assert.Contains(t, out, "a multi-writer host shares a store only with other multi-writer hosts")
	a.stopClean(t)

	b := startMount(t, append([]string{"--name", "d0", "--lock-sector", "last", "--multi-writer"}, paths("host-b")...)...)
	c := startMount(t, append([]string{"--name", "d0", "--lock-sector", "last", "--multi-writer"}, paths("host-c")...)...)
	assert.Len(t, sharing(t, c, "d0").Holders, 2)
	out = runMountFailing(t, append([]string{"--name", "d0", "--lock-sector", "last"}, paths("host-d")...)...)
	assert.Contains(t, out, "is shared by 2 multi-writer host(s)")

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	runs := []*fioRun{
		startFio(ctx, verifyJob(b.file("d0"), 5, "--offset=0", "--size=32M")...),
		startFio(ctx, verifyJob(c.file("d0"), 5, "--offset=32M", "--size=32M")...),
	}
	for i, run := range runs {
		r, fout, err := run.wait()
		if err != nil || len(r.Jobs) == 0 || r.Jobs[0].Error != 0 || r.Jobs[0].TotalErr != 0 {
			t.Errorf("fio on host %d: %v\n%s", i+1, err, fout)
		}
	}
	b.stopClean(t)
	c.stopClean(t)
}

// arrayHost mounts device d0 of the array's LU as `--host name` over
// ports 1 and 3 (one per controller), with extra flags.
func arrayHost(t *testing.T, s *arrayServer, name string, extra ...string) *mount {
	t.Helper()
	return arrayHostOn(t, s, name, []int{0, 2}, extra...)
}

// arrayHostOn is arrayHost over the given portals (0..3: ports 1..4).
func arrayHostOn(t *testing.T, s *arrayServer, name string, portals []int, extra ...string) *mount {
	t.Helper()
	args := append([]string{"--host", name, "--name", "d0"}, extra...)
	for _, p := range portals {
		args = append(args, "--path", fmt.Sprintf("iscsi://%s/%s/0", s.portals[p], s.iqn))
	}
	return startMount(t, args...)
}

// arrayHostFailing is arrayHost for a mount that must be refused: its
// output.
func arrayHostFailing(t *testing.T, s *arrayServer, name string, extra ...string) string {
	t.Helper()
	args := append([]string{"--host", name, "--name", "d0"}, extra...)
	for _, p := range []int{1, 3} {
		args = append(args, "--path", fmt.Sprintf("iscsi://%s/%s/0", s.portals[p], s.iqn))
	}
	return runMountFailing(t, args...)
}

// writeLast writes b over the end of a mount's d0 (O_DIRECT, through the
// last 4 KiB).
func writeLast(t *testing.T, m *mount, b []byte) {
	t.Helper()
	f, err := os.OpenFile(m.file("d0"), os.O_RDWR|syscall.O_DIRECT, 0)
	require.NoError(t, err)
	defer f.Close()
	st, err := f.Stat()
	require.NoError(t, err)
	buf := alignedBlock(4096)
	_, err = f.ReadAt(buf, st.Size()-4096)
	require.NoError(t, err)
	copy(buf[4096-len(b):], b)
	_, err = f.WriteAt(buf, st.Size()-4096)
	require.NoError(t, err)
	require.NoError(t, f.Sync())
}

// TestShareISCSIExclusiveByDefault: without flags (lock_sector auto) an
// array LU is locked in its last block: its device is one block smaller,
// a second host is refused naming the first, with --multi-writer two
// hosts share it. An LU whose last block holds data mounts unlocked at
// full size and says so (stderr, status, event); --lock-sector last
// refuses it, --lock-sector none mounts it without the warning.
func TestShareISCSIExclusiveByDefault(t *testing.T) {
	needs.Tools(t, "root", "/dev/fuse")
	s := startArrayServe(t)
	a := arrayHost(t, s, "host-a")
	st := a.status().Devices[0]
	assert.Equal(t, int64(128<<20-512), st.Size, "the lock block is hidden from the device")
	require.NotNil(t, st.Sharing)
	assert.Equal(t, "held", st.Sharing.LULock)
	require.Len(t, st.Sharing.Holders, 1)
	assert.True(t, st.Sharing.Holders[0].Self)
	assert.Contains(t, a.mustCtl("status"), "lu_lock=held")

	out := arrayHostFailing(t, s, "host-b")
	assert.Contains(t, out, "is held exclusively by host host-a")
	assert.Contains(t, out, fmt.Sprintf("pid %d", a.cmd.Process.Pid))
	out = arrayHostFailing(t, s, "host-b", "--multi-writer")
	assert.Contains(t, out, "a multi-writer host shares a store only with other multi-writer hosts")
	a.stopClean(t)

	a = arrayHost(t, s, "host-a", "--multi-writer")
	b := arrayHost(t, s, "host-b", "--multi-writer")
	assert.Len(t, sharing(t, b, "d0").Holders, 2, "two multi-writer hosts share the LU")
	a.stopClean(t)
	b.stopClean(t)

	// Data in the LU's last block (as a file system that fills its LU
	// would leave): written through a mount that keeps no lock.
	w := arrayHost(t, s, "host-w", "--lock-sector", "none")
	assert.Equal(t, int64(128<<20), w.status().Devices[0].Size, "--lock-sector none: full size")
	assert.NotContains(t, w.out.String(), "warning:")
	writeLast(t, w, bytes.Repeat([]byte("the last block of a file system "), 16)) // 512 bytes
	w.stopClean(t)

	c := arrayHost(t, s, "host-c")
	st = c.status().Devices[0]
	assert.Equal(t, int64(128<<20), st.Size, "an LU whose last block holds data is served at full size")
	require.NotNil(t, st.Sharing)
	assert.Empty(t, st.Sharing.LULock)
	assert.Empty(t, st.Sharing.Holders)
	require.NotEmpty(t, st.Sharing.Unlocked)
	assert.Contains(t, st.Sharing.Unlocked[0], "lock_sector auto: its last block holds data")
	assert.Contains(t, c.out.String(), "mpathfs: warning: device d0: LU iscsi://")
	assert.Contains(t, c.out.String(), "--lock-sector last")
	assert.Contains(t, c.mustCtl("events", "--json"), "is not locked: its last block holds data")
	d := arrayHost(t, s, "host-d")
	assert.Equal(t, int64(128<<20), d.status().Devices[0].Size, "unlocked: a second host mounts too")
	c.stopClean(t)
	d.stopClean(t)

	out = arrayHostFailing(t, s, "host-c", "--lock-sector", "last")
	assert.Contains(t, out, "holds data, not an mpathfs lock record")
}

// lockRecord is an LU lock record (host/shareats.go) whose exclusive
// entry names host, pid and device, with heartbeat beat.
func lockRecord(host string, pid int, dev string, beat time.Time) []byte {
	b := make([]byte, 512)
	copy(b, "MPFSLOCK")
	e := b[8:]
	bin.BigEndian.PutUint64(e[0:8], uint64(beat.UnixNano()))
	bin.BigEndian.PutUint32(e[8:12], uint32(pid))
	e[12] = 1
	copy(e[16:32], host)
	copy(e[32:56], dev)
	return b
}

// metricValue reads one sample of the mount's metrics endpoint.
func metricValue(t *testing.T, m *mount, sample string) string {
	t.Helper()
	re := regexp.MustCompile(`metrics at (http://\S+/metrics)`)
	match := re.FindStringSubmatch(m.out.String())
	require.NotNil(t, match, "the mount printed no metrics address:\n%s", m.out.String())
	resp, err := http.Get(match[1])
	require.NoError(t, err)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	for _, line := range strings.Split(string(body), "\n") {
		if strings.HasPrefix(line, sample+" ") {
			return strings.TrimPrefix(line, sample+" ")
		}
	}
	t.Fatalf("no sample %s in the metrics", sample)
	return ""
}

// lastLine is the last line of out containing s.
func lastLine(out, s string) string {
	lines := strings.Split(out, "\n")
	for i := len(lines) - 1; i >= 0; i-- {
		if strings.Contains(lines[i], s) {
			return lines[i]
		}
	}
	return ""
}

// TestShareISCSILockLost: host A holds the LU lock (exclusive by default)
// and runs fio; its entry in the lock record is then overwritten, as host
// B would once A's heartbeat stalled. A's next heartbeat finds the record
// names B: A's writes fail with ENOLCK (fio on A reports errors, as
// expected) while its reads go on; status, events, stderr and the metric
// say the lock is lost. B then mounts (taking the entry over) and writes;
// A's writes keep failing and A's unmount leaves B's entry and data.
func TestShareISCSILockLost(t *testing.T) {
	needs.Tools(t, "fio", "root", "/dev/fuse")
	s := startArrayServe(t)
	a := arrayHost(t, s, "host-a", "--metrics", "127.0.0.1:0")
	require.Equal(t, "held", sharing(t, a, "d0").LULock)
	assert.Equal(t, "0", metricValue(t, a, `mpathfs_lock_lost_total{device="d0"}`))

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	run := startFio(ctx, "--name=a", "--filename="+a.file("d0"), "--direct=1", "--rw=randwrite", "--bs=4k",
		"--ioengine=libaio", "--iodepth=4", "--size=16M", "--time_based", "--runtime=60")
	time.Sleep(2 * time.Second)

	// B's entry over A's: a heartbeat older than the stale time, so that
	// B's real mount may take it over below.
	w := arrayHost(t, s, "host-w", "--lock-sector", "none")
	writeLast(t, w, lockRecord("host-b", 4242, "d0", time.Now().Add(-time.Minute)))
	w.stopClean(t)

	waitFor(t, 30*time.Second, "host A to find its lock lost", func() bool { return sharing(t, a, "d0").LULock == "lost" })
	sh := sharing(t, a, "d0")
	require.NotNil(t, sh.LockLost)
	require.NotNil(t, sh.LockLost.Holder)
	assert.Equal(t, "host-b", sh.LockLost.Holder.Host)
	assert.Contains(t, sh.LockLost.Reason, "unmount this mount and mount again")
	assert.Contains(t, a.mustCtl("status"), "lock lost: device d0")
	assert.Contains(t, a.mustCtl("events", "--json"), `"lock-lost"`)
	assert.Equal(t, "1", metricValue(t, a, `mpathfs_lock_lost_total{device="d0"}`))
	assert.Contains(t, a.out.String(), "mpathfs: lock lost: device d0")
	assert.Equal(t, syscall.ENOLCK, writeBlock(t, a, 0), "a write after the lock is lost")
	rf, err := os.Open(a.file("d0"))
	require.NoError(t, err)
	_, err = rf.ReadAt(make([]byte, 4096), 0)
	assert.NoError(t, err, "reads go on")
	rf.Close()

	r, fout, err := run.wait()
	failed := err != nil || len(r.Jobs) == 0 || r.Jobs[0].Error != 0 || r.Jobs[0].TotalErr != 0
	assert.True(t, failed, "fio on A reports the refused writes:\n%s", fout)
	assert.Contains(t, fout, "No locks available", "fio on A names ENOLCK")
	t.Logf("fio on A (errors expected): %v; %s", err, lastLine(fout, "No locks available"))

	b := arrayHost(t, s, "host-b")
	require.Equal(t, "held", sharing(t, b, "d0").LULock, "B takes the stale entry over")
	want := alignedBlock(1 << 20)
	for i := range want {
		want[i] = byte(i*7 + 3)
	}
	bf, err := os.OpenFile(b.file("d0"), os.O_RDWR|syscall.O_DIRECT, 0)
	require.NoError(t, err)
	_, err = bf.WriteAt(want, 0)
	require.NoError(t, err)
	require.NoError(t, bf.Sync())
	assert.Equal(t, syscall.ENOLCK, writeBlock(t, a, 0), "A still cannot write")
	assert.Equal(t, syscall.ENOLCK, writeBlock(t, a, 64<<10), "A still cannot write")
	a.stopClean(t)

	got := alignedBlock(1 << 20)
	_, err = bf.ReadAt(got, 0)
	require.NoError(t, err)
	assert.True(t, bytes.Equal(want, got), "the data B wrote is as B wrote it")
	bf.Close()
	out := arrayHostFailing(t, s, "host-c")
	assert.Contains(t, out, "is held exclusively by host host-b", "A's unmount left B's entry")
	b.stopClean(t)
}

// TestShareISCSILockLostAPD: host A holds the LU lock and runs fio when
// both of its paths go away (their array ports offline): its writes wait
// for a path. Once A cannot prove it holds the lock (no heartbeat written
// for the stale time less one beat) the lock is lost: the waiting writes
// are given up with ENOLCK (fio reports errors, as expected). B, over the
// other ports, takes the stale entry over and writes; when A's paths come
// back, A's writes still fail and none of them lands on B's data.
func TestShareISCSILockLostAPD(t *testing.T) {
	needs.Tools(t, "fio", "root", "/dev/fuse")
	s := startArrayServe(t)
	a := arrayHostOn(t, s, "host-a", []int{0, 2}, "--check-interval", "500ms")
	require.Equal(t, "held", sharing(t, a, "d0").LULock)

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	run := startFio(ctx, "--name=a", "--filename="+a.file("d0"), "--direct=1", "--rw=randwrite", "--bs=4k",
		"--ioengine=libaio", "--iodepth=4", "--size=1M", "--time_based", "--runtime=120")
	time.Sleep(2 * time.Second)
	s.ctl(t, "port", "offline", "1")
	s.ctl(t, "port", "offline", "3")

	waitFor(t, 60*time.Second, "host A to find its lock lost", func() bool { return sharing(t, a, "d0").LULock == "lost" })
	sh := sharing(t, a, "d0")
	require.NotNil(t, sh.LockLost)
	assert.Nil(t, sh.LockLost.Holder, "nobody took the entry over yet")
	assert.Contains(t, sh.LockLost.Reason, "no heartbeat could be written")
	r, fout, err := run.wait()
	failed := err != nil || len(r.Jobs) == 0 || r.Jobs[0].Error != 0 || r.Jobs[0].TotalErr != 0
	assert.True(t, failed, "fio on A reports the given-up writes:\n%s", fout)
	assert.Contains(t, fout, "No locks available", "fio on A names ENOLCK")
	t.Logf("fio on A (errors expected): %v; %s", err, lastLine(fout, "No locks available"))

	// A's entry is stale 4*3 s after its last heartbeat, at most 3 s
	// after A found the lock lost (one beat before).
	time.Sleep(5 * time.Second)
	b := arrayHostOn(t, s, "host-b", []int{1, 3})
	require.Equal(t, "held", sharing(t, b, "d0").LULock, "B takes the stale entry over")
	want := alignedBlock(1 << 20)
	for i := range want {
		want[i] = byte(i*5 + 1)
	}
	bf, err := os.OpenFile(b.file("d0"), os.O_RDWR|syscall.O_DIRECT, 0)
	require.NoError(t, err)
	_, err = bf.WriteAt(want, 0)
	require.NoError(t, err)
	require.NoError(t, bf.Sync())

	s.ctl(t, "port", "online", "1")
	s.ctl(t, "port", "online", "3")
	waitFor(t, 60*time.Second, "A's paths to come back", func() bool {
		for _, d := range a.status().Devices {
			for _, p := range d.Paths {
				if p.State != "active" && p.State != "standby" {
					return false
				}
			}
		}
		return true
	})
	assert.Equal(t, syscall.ENOLCK, writeBlock(t, a, 0), "A's paths are back, its lock is not")
	a.stopClean(t)

	got := alignedBlock(1 << 20)
	_, err = bf.ReadAt(got, 0)
	require.NoError(t, err)
	assert.True(t, bytes.Equal(want, got), "the data B wrote is as B wrote it: none of A's writes landed after")
	bf.Close()
	assert.Equal(t, "held", sharing(t, b, "d0").LULock)
	b.stopClean(t)
}
