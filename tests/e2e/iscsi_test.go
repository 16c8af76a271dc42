package e2e

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
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

// arrayServer is a running `mpathfs array serve`.
type arrayServer struct {
	iqn     string
	portals []string // in the order printed: ports 1, 2 (controller A), 3, 4 (B)
	control string
}

// runArrayServe starts `mpathfs array serve --config cfg` with its control
// socket and state in dir, stopped by PID in cleanup (SIGTERM, SIGKILL
// after 10 s), waits for its ready line and reads the target name and the
// portals it printed.
func runArrayServe(t *testing.T, dir, cfg string) (*arrayServer, *syncBuffer) {
	t.Helper()
	s := &arrayServer{control: filepath.Join(dir, "array.sock")}
	out := &syncBuffer{}
	cmd := exec.Command(binary, "array", "serve", "--config", cfg, "--control", s.control)
	cmd.Env = append(os.Environ(), "MPATHFS_STATE_DIR="+filepath.Join(dir, "state"))
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pid := cmd.Process.Pid
	t.Cleanup(func() {
		_ = syscall.Kill(pid, syscall.SIGTERM)
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = syscall.Kill(pid, syscall.SIGKILL)
			<-done
		}
	})
	waitFor(t, 20*time.Second, "the array server's ready line", func() bool { return strings.Contains(out.String(), "ready") })
	for _, l := range strings.Split(out.String(), "\n") {
		f := strings.Fields(l)
		switch {
		case len(f) >= 2 && f[0] == "target":
			s.iqn = f[1]
		case len(f) >= 2 && f[0] == "portal":
			s.portals = append(s.portals, f[1])
		}
	}
	return s, out
}

// startArrayServe runs `mpathfs array serve` with two controllers of two
// ports each (free ports of 127.0.0.1) and one 128 MiB LU, active-active
// with implicit and explicit ALUA; it is stopped by its PID.
func startArrayServe(t *testing.T) *arrayServer {
	t.Helper()
	dir := t.TempDir()
	cfg := filepath.Join(dir, "array.yaml")
	yaml := fmt.Sprintf(`target: iqn.2026-01.io.mpathfs.e2e:array
state_dir: %s
alua:
  access: active-active
  transitions: both
  owner: A
lus:
  - name: data
    lun: 0
    file: %s
    size: 128M
controllers:
  - name: A
    ports:
      - {id: 1, portal: "127.0.0.1:0"}
      - {id: 2, portal: "127.0.0.1:0"}
  - name: B
    ports:
      - {id: 3, portal: "127.0.0.1:0"}
      - {id: 4, portal: "127.0.0.1:0"}
`, filepath.Join(dir, "state"), filepath.Join(dir, "lu.img"))
	if err := os.WriteFile(cfg, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	s, out := runArrayServe(t, dir, cfg)
	if s.iqn == "" || len(s.portals) != 4 {
		t.Fatalf("array serve printed no target and four portals:\n%s", out.String())
	}
	return s
}

func (s *arrayServer) ctl(t *testing.T, args ...string) string {
	t.Helper()
	out, err := exec.Command(binary, append(append([]string{"array"}, args...), "--control", s.control)...).CombinedOutput()
	if err != nil {
		t.Fatalf("mpathfs array %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// TestISCSIArrayServeALUA: one device over the four iscsi:// paths of an
// `mpathfs array serve` (two controllers, two ports each): the LU reports
// TPGS, so the SATP rules pick VMW_SATP_ALUA, which reads the groups with
// REPORT TARGET PORT GROUPS. Controller A (the owner) fails under fio
// --verify: 0 fio errors, I/O continues through B's ports, and A's paths
// come back after the restore.
func TestISCSIArrayServeALUA(t *testing.T) {
	needs.Tools(t, "fio", "root", "/dev/fuse")
	s := startArrayServe(t)
	var args []string
	var uris []string
	for _, p := range s.portals {
		u := fmt.Sprintf("iscsi://%s/%s/0?initiator=iqn.2026-01.io.mpathfs.e2e:host-a", p, s.iqn)
		uris = append(uris, u)
		args = append(args, "--path", u)
	}
	m := startMount(t, append([]string{"--name", "d0", "--check-interval", "500ms", "--io-timeout", "2s"}, args...)...)
	st := m.status()
	if len(st.Devices) != 1 || st.Devices[0].SATP != "VMW_SATP_ALUA" {
		t.Fatalf("want one device claimed by VMW_SATP_ALUA, got %+v", st.Devices)
	}
	waitFor(t, 10*time.Second, "A's paths active optimized", func() bool {
		p := iscsiPath(m, uris[0])
		return p.ALUAState == "AO" && p.State == "active"
	})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	run := startFio(ctx, verifyJob(m.file("d0"), 10)...)
	time.Sleep(2 * time.Second)
	s.ctl(t, "fail", "A")
	waitFor(t, 15*time.Second, "I/O through controller B", func() bool {
		p := iscsiPath(m, uris[2])
		return p.ALUAState == "AO" && p.Reads+p.Writes > 0
	})
	time.Sleep(2 * time.Second)
	s.ctl(t, "restore", "A")
	r, out, err := run.wait()
	if err != nil || r.Jobs[0].TotalErr != 0 || r.Jobs[0].Error != 0 {
		t.Fatalf("fio across a controller failure of array serve: %v\n%s\n%s", err, out, m.out.String())
	}
	waitFor(t, 15*time.Second, "A's paths back", func() bool {
		st := iscsiPath(m, uris[0]).State
		return st == "active" || st == "standby"
	})
	t.Logf("fio: read %.0f IOPS write %.0f IOPS, max clat %.1f ms", r.Jobs[0].Read.IOPS, r.Jobs[0].Write.IOPS, r.Jobs[0].Write.ClatNs.Max/1e6)
	m.stopClean(t)
}

// TestISCSIArrayServeHungWrites: the array holds writes through port 1
// for 3 s before it executes them (`array fault inject --delay 3s`), three
// times the I/O deadline: the path's writes time out and are fenced the
// SCSI way (ABORT TASK, or the session's reinstatement; either ends the
// hold without executing) before they are retried on port 2, and fio
// --verify sees no error — no held write lands late over a newer one.
func TestISCSIArrayServeHungWrites(t *testing.T) {
	needs.Tools(t, "fio", "root", "/dev/fuse")
	s := startArrayServe(t)
	u1 := fmt.Sprintf("iscsi://%s/%s/0?initiator=iqn.2026-01.io.mpathfs.e2e:host-a", s.portals[0], s.iqn)
	u2 := fmt.Sprintf("iscsi://%s/%s/0?initiator=iqn.2026-01.io.mpathfs.e2e:host-a", s.portals[1], s.iqn)
	m := startMount(t, "--name", "d0", "--path", u1, "--path", u2, "--psp", "VMW_PSP_RR", "--psp-option", "iops=1",
		"--check-interval", "500ms", "--io-timeout", "1s")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	run := startFio(ctx, verifyJob(m.file("d0"), 10)...)
	time.Sleep(2 * time.Second)
	s.ctl(t, "fault", "inject", "--port", "1", "--op", "write", "--delay", "3s", "--count", "4")
	waitFor(t, 15*time.Second, "errors on the hung port's path", func() bool { return iscsiPath(m, u1).Errors > 0 })
	r, out, err := run.wait()
	if err != nil || r.Jobs[0].TotalErr != 0 || r.Jobs[0].Error != 0 {
		t.Fatalf("fio across hung writes: %v\n%s\n%s", err, out, m.out.String())
	}
	waitFor(t, 15*time.Second, "the hung port's path back", func() bool { return iscsiPath(m, u1).State == "active" })
	t.Logf("fio: read %.0f IOPS write %.0f IOPS, max clat %.1f ms; path 1 errors %d", r.Jobs[0].Read.IOPS, r.Jobs[0].Write.IOPS,
		r.Jobs[0].Write.ClatNs.Max/1e6, iscsiPath(m, u1).Errors)
	m.stopClean(t)
}
