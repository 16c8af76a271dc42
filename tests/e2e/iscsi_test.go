package e2e

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/mpathfs/mpathfs/internal/tgtd"
	"github.com/mpathfs/mpathfs/mpath"
)

// TestISCSIConnectionKilled: one device over two iscsi:// paths (two
// sessions, two initiator names) to one LU of Debian's tgtd; the target
// drops one path's connection in the middle of fio --verify: zero fio
// errors, the path dies and the checker's reinstatement brings it back.
func TestISCSIConnectionKilled(t *testing.T) {
	need(t, "fio", "tgtd", "tgtadm", "root", "/dev/fuse")
	d := tgtd.Start(t)
	tg := d.AddTarget("iqn.2026-01.io.mpathfs.e2e:disk")
	tg.AddLU(1, 256<<20)
	uri := func(host string) string {
		return fmt.Sprintf("iscsi://%s/%s/1?initiator=iqn.2026-01.io.mpathfs.e2e:%s", d.Addr, tg.IQN, host)
	}
	u1, u2 := uri("path1"), uri("path2")
	m := startMount(t, "--name", "d0", "--path", u1, "--path", u2, "--psp", "VMW_PSP_RR", "--psp-option", "iops=1",
		"--check-interval", "500ms", "--io-timeout", "2s")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	run := startFio(ctx, verifyJob(m.file("d0"), 10)...)
	time.Sleep(2 * time.Second)
	if n := tg.DropInitiator("iqn.2026-01.io.mpathfs.e2e:path1"); n != 1 {
		t.Fatalf("tgtd closed %d connections of path1, want 1", n)
	}
	waitFor(t, 10*time.Second, "an error on the dropped path", func() bool { return iscsiPath(m, u1).Errors > 0 })
	waitFor(t, 15*time.Second, "the dropped path to be active again", func() bool {
		_, st := pathByURI(m, "d0", u1)
		return st == "active"
	})
	before := iscsiPath(m, u1)
	waitFor(t, 10*time.Second, "the reinstated path to carry I/O", func() bool {
		now := iscsiPath(m, u1)
		return now.Reads+now.Writes > before.Reads+before.Writes
	})
	if e := iscsiPath(m, u2).Errors; e != 0 {
		t.Errorf("the other path saw %d errors, want 0", e)
	}
	r, out, err := run.wait()
	if err != nil || r.Jobs[0].TotalErr != 0 || r.Jobs[0].Error != 0 {
		t.Fatalf("fio across a dropped iSCSI connection: %v\n%s\n%s", err, out, m.out.String())
	}
	t.Logf("fio: read %.0f IOPS write %.0f IOPS, max clat %.1f ms", r.Jobs[0].Read.IOPS, r.Jobs[0].Write.IOPS, r.Jobs[0].Write.ClatNs.Max/1e6)
	m.stopClean(t)
}

// iscsiPath is the status of device d0's path with the given URI.
func iscsiPath(m *mount, uri string) mpath.PathStatus {
	for _, d := range m.status().Devices {
		if d.Name != "d0" {
			continue
		}
		for _, p := range d.Paths {
			if p.URI == uri {
				return p
			}
		}
	}
	return mpath.PathStatus{}
}
