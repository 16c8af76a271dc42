package e2e

import (
	"context"
	"fmt"
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
