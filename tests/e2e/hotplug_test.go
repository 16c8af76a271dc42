package e2e

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mpathfs/mpathfs/internal/needs"
	"github.com/mpathfs/mpathfs/mpath"
)

// attachLoop attaches a loop device over img and detaches it in cleanup.
func attachLoop(t *testing.T, img string) string {
	t.Helper()
	out, err := runCmd("losetup", "--find", "--show", "--direct-io=on", img)
	if err != nil {
		out, err = runCmd("losetup", "--find", "--show", img)
	}
	if err != nil {
		t.Fatalf("losetup: %v %s", err, out)
	}
	dev := strings.TrimSpace(out)
	t.Cleanup(func() { runCmd("losetup", "-d", dev) })
	return dev
}

// TestBlockPathsHotplug: two loop devices over one image are two block
// paths to one device. `losetup -d` is a hot removal: the path is failed
// and taken out while fio runs, with no fio error. A new loop device over
// the same image joins the device live as a new path and carries I/O.
func TestBlockPathsHotplug(t *testing.T) {
	needs.Tools(t, "losetup", "fio")
	img := filepath.Join(t.TempDir(), "disk.img")
	f, _ := os.Create(img)
	f.Truncate(128 << 20)
	f.Close()
	a, b := attachLoop(t, img), attachLoop(t, img)
	m := startMount(t, "--name", "d0", "--path", "block://"+a, "--path", b, "--psp", "VMW_PSP_RR", "--psp-option", "iops=1", "--check-interval", "500ms")
	st := m.status()
	if len(st.Devices[0].Paths) != 2 || st.Devices[0].WWID == "" {
		t.Fatalf("two loop paths to one image should form one device with a WWID: %+v", st.Devices[0])
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	run := startFio(ctx, verifyJob(m.file("d0"), 10, "--size=32M")...)
	time.Sleep(1500 * time.Millisecond)
	if o, err := runCmd("losetup", "-d", a); err != nil {
		t.Fatalf("losetup -d %s: %v %s", a, err, o)
	}
	waitFor(t, 10*time.Second, "the removed loop path to leave the device", func() bool {
		for _, p := range m.status().Devices[0].Paths {
			if p.URI == "block://"+a {
				return false
			}
		}
		return true
	})
	c := attachLoop(t, img)
	waitFor(t, 10*time.Second, "the new loop device to join as an active path", func() bool {
		for _, p := range m.status().Devices[0].Paths {
			if p.URI == "block://"+c && p.State == "active" {
				return true
			}
		}
		return false
	})
	r, out, err := run.wait()
	if err != nil || r.Jobs[0].TotalErr != 0 || r.Jobs[0].Error != 0 {
		t.Fatalf("fio across hot removal and hot add: %v\n%s\n--- mpathfs:\n%s", err, out, m.out.String())
	}
	var added uint64
	for _, p := range m.status().Devices[0].Paths {
		if p.URI == "block://"+c {
			added = p.Reads + p.Writes
		}
	}
	if added == 0 {
		t.Errorf("the hot-added path carried no I/O")
	}
	t.Logf("mpathfs said:\n%s", m.out.String())
	m.stopClean(t)
}

// TestGroupByWWID: four loop devices over two images form two devices,
// named like dm-multipath's user_friendly_names.
func TestGroupByWWID(t *testing.T) {
	needs.Tools(t, "losetup")
	dir := t.TempDir()
	var devs []string
	for _, name := range []string{"x.img", "y.img"} {
		img := filepath.Join(dir, name)
		f, _ := os.Create(img)
		f.Truncate(16 << 20)
		f.Close()
		devs = append(devs, attachLoop(t, img), attachLoop(t, img))
	}
	// x, y, x, y order on the command line.
	m := startMount(t, "--group-by-wwid", "--path", devs[0], "--path", devs[2], "--path", devs[1], "--path", devs[3])
	st := m.status()
	if len(st.Devices) != 2 || st.Devices[0].Name != "mpatha" || st.Devices[1].Name != "mpathb" {
		t.Fatalf("want devices mpatha and mpathb, got %+v", st.Devices)
	}
	for i, d := range st.Devices {
		if len(d.Paths) != 2 || d.Paths[0].URI != devs[2*i] || d.Paths[1].URI != devs[2*i+1] {
			t.Errorf("device %s paths: %+v", d.Name, d.Paths)
		}
		if d.WWID == st.Devices[1-i].WWID {
			t.Errorf("both devices have WWID %s", d.WWID)
		}
	}
	m.stopClean(t)
}

// TestUeventProbesReturningPath: a block path that failed comes back on
// its device's uevent, not at the next checker round. The checker runs
// once an hour here; the path fails by an injected fault (probes fail
// too), the fault is cleared and the path stays dead — nothing probes it —
// until the kernel reports a change on its loop device (the "change" uevent
// that udev's watch or `udevadm trigger` makes, written to the device's
// uevent file); then it is probed at once and active again, the reason
// naming the uevent, and carries I/O.
func TestUeventProbesReturningPath(t *testing.T) {
	needs.Tools(t, "losetup")
	img := filepath.Join(t.TempDir(), "disk.img")
	f, _ := os.Create(img)
	f.Truncate(64 << 20)
	f.Close()
	a, b := attachLoop(t, img), attachLoop(t, img)
	m := startMount(t, "--name", "d0", "--path", a, "--path", b, "--psp", "VMW_PSP_RR", "--psp-option", "iops=1", "--check-interval", "1h")
	name := ""
	for _, p := range m.status().Devices[0].Paths {
		if p.URI == "block://"+a || p.URI == a {
			name = p.Name
		}
	}
	if name == "" {
		t.Fatalf("no path %s in %+v", a, m.status().Devices[0].Paths)
	}
	pathA := func() mpath.PathStatus { return pathStatus(m, "d0", name) }
	if out, err := m.ctl("fault", "inject", name, "--error", "path-failure"); err != nil {
		t.Fatalf("fault inject: %v %s", err, out)
	}
	fd, err := os.OpenFile(m.file("d0"), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer fd.Close()
	buf := make([]byte, 4096)
	for i := 0; i < 8; i++ { // RR with iops=1: some reach the faulty path
		if _, err := fd.ReadAt(buf, int64(i)*4096); err != nil {
			t.Fatalf("read %d across the path failure: %v", i, err)
		}
	}
	waitFor(t, 10*time.Second, "the faulty path to be dead", func() bool { return pathA().State == "dead" })
	if out, err := m.ctl("fault", "clear", name); err != nil {
		t.Fatalf("fault clear: %v %s", err, out)
	}
	time.Sleep(2 * time.Second)
	if p := pathA(); p.State != "dead" {
		t.Fatalf("path %s is %s (%s) 2 s after the fault was cleared, with an hourly checker and no uevent: something else probed it", name, p.State, p.Reason)
	}
	uevent := filepath.Join("/sys/class/block", filepath.Base(a), "uevent")
	if err := os.WriteFile(uevent, []byte("change"), 0); err != nil {
		t.Fatalf("writing change to %s: %v", uevent, err)
	}
	waitFor(t, 20*time.Second, "the path to be active again after its device's uevent", func() bool { return pathA().State == "active" })
	if r := pathA().Reason; !strings.Contains(r, "uevent") {
		t.Errorf("the returned path's reason does not name the uevent: %q", r)
	}
	before := pathA().Reads
	for i := 0; i < 8; i++ {
		if _, err := fd.ReadAt(buf, int64(i)*4096); err != nil {
			t.Fatalf("read %d after the return: %v", i, err)
		}
	}
	if pathA().Reads == before {
		t.Errorf("the returned path carried no read")
	}
	if !strings.Contains(m.out.String(), "probed at once") {
		t.Errorf("mpathfs did not report the uevent-triggered probe:\n%s", m.out.String())
	}
	fd.Close()
	m.stopClean(t)
}
