package e2e

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/mpathfs/mpathfs/internal/needs"
	"github.com/mpathfs/mpathfs/internal/tgtd"
	"github.com/mpathfs/mpathfs/mpath"
)

// TestISCSIConnectionKilled: one device over two iscsi:// paths (two
// sessions, two initiator names) to one LU of Debian's tgtd; the target
// drops one path's connection in the middle of fio --verify: zero fio
// errors, the path dies and the checker's reinstatement brings it back.
func TestISCSIConnectionKilled(t *testing.T) {
	needs.Tools(t, "fio", "tgtd", "tgtadm", "root", "/dev/fuse")
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

// TestISCSIGroupByWWID: four iscsi:// paths, two sessions to each of two
// LUs of tgtd, given in the order x, y, x, y: --group-by-wwid makes one
// device per LU from the WWID of VPD page 0x83, and each device reads what
// the other path of it wrote.
func TestISCSIGroupByWWID(t *testing.T) {
	needs.Tools(t, "tgtd", "tgtadm", "root", "/dev/fuse")
	d := tgtd.Start(t)
	tg := d.AddTarget("iqn.2026-01.io.mpathfs.e2e:disks")
	tg.AddLU(1, 16<<20)
	tg.AddLU(2, 32<<20)
	uri := func(lun int, host string) string {
		return fmt.Sprintf("iscsi://%s/%s/%d?initiator=iqn.2026-01.io.mpathfs.e2e:%s", d.Addr, tg.IQN, lun, host)
	}
	paths := []string{uri(1, "a"), uri(2, "a"), uri(1, "b"), uri(2, "b")}
	m := startMount(t, "--group-by-wwid", "--path", paths[0], "--path", paths[1], "--path", paths[2], "--path", paths[3])
	st := m.status()
	if len(st.Devices) != 2 || st.Devices[0].Name != "mpatha" || st.Devices[1].Name != "mpathb" {
		t.Fatalf("want devices mpatha and mpathb, got %+v", st.Devices)
	}
	for i, dev := range st.Devices {
		if len(dev.Paths) != 2 || dev.Paths[0].URI != paths[i] || dev.Paths[1].URI != paths[i+2] {
			t.Errorf("device %s paths: %+v", dev.Name, dev.Paths)
		}
		if !strings.HasPrefix(dev.WWID, "naa.") || dev.WWID == st.Devices[1-i].WWID {
			t.Errorf("device %s WWID %q (the other's: %q)", dev.Name, dev.WWID, st.Devices[1-i].WWID)
		}
	}
	for _, dev := range []string{"mpatha", "mpathb"} {
		f, err := os.OpenFile(m.file(dev), os.O_RDWR, 0)
		if err != nil {
			t.Fatal(err)
		}
		want := bytes.Repeat([]byte(dev), 4096/len(dev)+1)[:4096]
		for i := range 8 { // round robin: both paths write and read
			if _, err := f.WriteAt(want, int64(i)*4096); err != nil {
				t.Fatal(err)
			}
		}
		for i := range 8 {
			got := make([]byte, 4096)
			if _, err := f.ReadAt(got, int64(i)*4096); err != nil || !bytes.Equal(got, want) {
				t.Fatalf("%s block %d: %v, data equal %v", dev, i, err, bytes.Equal(got, want))
			}
		}
		f.Close()
	}
	m.stopClean(t)
}
