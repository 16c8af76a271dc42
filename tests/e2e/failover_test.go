package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/mpathfs/mpathfs/internal/needs"
)

// fourPaths returns --path flags for n file paths to one store.
func filePaths(storePath string, n int) []string {
	var args []string
	for i := 0; i < n; i++ {
		args = append(args, "--path", "file://"+storePath)
	}
	return args
}

// busiest returns the path that carried the most I/O since before.
func busiest(before, after map[string]uint64) string {
	var names []string
	for n := range after {
		names = append(names, n)
	}
	sort.Strings(names)
	best, bestN := "", uint64(0)
	for _, n := range names {
		if d := after[n] - before[n]; best == "" || d > bestN {
			best, bestN = n, d
		}
	}
	return best
}

// TestFioPathFailureEachPSP: fio randrw with crc32c verification while a
// path failure hits the busiest path: zero fio errors, the path dead, I/O
// carried on by the others — for every PSP.
func TestFioPathFailureEachPSP(t *testing.T) {
	needs.Tools(t, "fio")
	for _, psp := range []string{"VMW_PSP_FIXED", "VMW_PSP_MRU", "VMW_PSP_RR", "queue-length", "service-time"} {
		t.Run(psp, func(t *testing.T) {
			st := store(t, 256<<20)
			args := append([]string{"--name", "d0", "--psp", psp, "--io-timeout", "2s", "--check-interval", "500ms"}, filePaths(st, 4)...)
			if psp == "VMW_PSP_RR" {
				args = append(args, "--psp-option", "iops=1")
			}
			m := startMount(t, args...)
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			type res struct {
				r   fioResult
				out string
				err error
			}
			done := make(chan res, 1)
			go func() {
				r, out, err := runFio(ctx, verifyJob(m.file("d0"), 8)...)
				done <- res{r, out, err}
			}()
			time.Sleep(1500 * time.Millisecond)
			before := pathIO(m.status(), "d0")
			time.Sleep(500 * time.Millisecond)
			mid := pathIO(m.status(), "d0")
			victim := busiest(before, mid)
			m.mustCtl("fault", "inject", victim, "--error", "path-failure")
			time.Sleep(500 * time.Millisecond)
			afterFault := pathIO(m.status(), "d0")
			r := <-done
			if r.err != nil || len(r.r.Jobs) == 0 || r.r.Jobs[0].Error != 0 || r.r.Jobs[0].TotalErr != 0 {
				t.Fatalf("fio failed across the path failure: %v\n%s\n--- mpathfs:\n%s", r.err, r.out, m.out.String())
			}
			final := m.status()
			if s := pathState(final, "d0", victim); s != "dead" {
				t.Errorf("victim %s is %s after a path failure, want dead", victim, s)
			}
			end := pathIO(final, "d0")
			var others uint64
			for n, v := range end {
				if n != victim {
					others += v - afterFault[n]
				}
			}
			if others == 0 {
				t.Errorf("no I/O on the other paths after the failure: %v -> %v", afterFault, end)
			}
			if end[victim] != afterFault[victim] {
				// I/O already in flight may complete; new I/O must not go there.
				if end[victim]-afterFault[victim] > 64 {
					t.Errorf("dead path %s kept carrying I/O: %d more", victim, end[victim]-afterFault[victim])
				}
			}
			t.Logf("%s: victim %s; fio read %.0f IOPS write %.0f IOPS, max clat %.1f ms; I/O on others after the fault: %d",
				psp, victim, r.r.Jobs[0].Read.IOPS, r.r.Jobs[0].Write.IOPS, r.r.Jobs[0].Write.ClatNs.Max/1e6, others)
			m.stopClean(t)
		})
	}
}

// TestAdminOffOnUnderLoad switches paths off and on while fio runs.
func TestAdminOffOnUnderLoad(t *testing.T) {
	needs.Tools(t, "fio")
	st := store(t, 256<<20)
	m := startMount(t, append([]string{"--name", "d0", "--psp", "VMW_PSP_RR", "--psp-option", "iops=4", "--check-interval", "500ms"}, filePaths(st, 3)...)...)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	run := startFio(ctx, verifyJob(m.file("d0"), 8)...)
	names := []string{}
	for _, d := range m.status().Devices {
		for _, p := range d.Paths {
			names = append(names, p.Name)
		}
	}
	for i := 0; i < 6; i++ {
		time.Sleep(400 * time.Millisecond)
		p := names[i%len(names)]
		m.mustCtl("path", "set", "--state", "off", p)
		if s := pathState(m.status(), "d0", p); s != "disabled" {
			t.Errorf("after path set --state off %s: state %s, want disabled", p, s)
		}
		before := pathIO(m.status(), "d0")[p]
		time.Sleep(400 * time.Millisecond)
		if after := pathIO(m.status(), "d0")[p]; after-before > 32 {
			t.Errorf("disabled path %s carried %d I/Os", p, after-before)
		}
		m.mustCtl("path", "set", "--state", "on", p)
		if s := pathState(m.status(), "d0", p); s != "active" {
			t.Errorf("after path set --state on %s: state %s, want active", p, s)
		}
	}
	r, out, err := run.wait()
	if err != nil || r.Jobs[0].TotalErr != 0 || r.Jobs[0].Error != 0 {
		t.Fatalf("fio: %v\n%s", err, out)
	}
	m.stopClean(t)
}

// TestAllPathsDown: shorter than the APD timeout, I/O waits and succeeds;
// longer, it fails with EIO; when a path returns, I/O works again.
func TestAllPathsDown(t *testing.T) {
	st := store(t, 64<<20)
	m := startMount(t, append([]string{"--name", "d0", "--apd-timeout", "3s", "--check-interval", "200ms", "--io-timeout", "1s"}, filePaths(st, 2)...)...)
	paths := []string{}
	for _, p := range m.status().Devices[0].Paths {
		paths = append(paths, p.Name)
	}
	f, err := os.OpenFile(m.file("d0"), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 4096)
	for i := range buf {
		buf[i] = byte(i)
	}

	// Short outage: both paths fail for ~1 s (faults that expire), I/O waits.
	for _, p := range paths {
		m.mustCtl("fault", "inject", p, "--error", "path-failure", "--for", "1s")
	}
	start := time.Now()
	if _, err := f.WriteAt(buf, 8192); err != nil {
		t.Fatalf("write during a 1s all-paths-down (APD timeout 3s) failed: %v", err)
	}
	t.Logf("write waited %v through a short all-paths-down", time.Since(start).Round(time.Millisecond))

	// Long outage: the write fails with EIO after the APD timeout.
	for _, p := range paths {
		m.mustCtl("fault", "inject", p, "--error", "path-failure")
	}
	start = time.Now()
	_, err = f.WriteAt(buf, 16384)
	took := time.Since(start)
	if err == nil {
		t.Fatal("write succeeded although every path is down longer than the APD timeout")
	}
	if !strings.Contains(err.Error(), "input/output error") {
		t.Errorf("write error %v, want EIO", err)
	}
	if took < 2*time.Second || took > 20*time.Second {
		t.Errorf("write failed after %v, want about the APD timeout (3s)", took)
	}
	st0 := m.status()
	if !st0.Devices[0].APD {
		t.Errorf("status does not show all-paths-down")
	}
	// Recovery.
	for _, p := range paths {
		m.mustCtl("fault", "clear", p)
	}
	waitFor(t, 10*time.Second, "a path to come back", func() bool { return !m.status().Devices[0].APD })
	if _, err := f.WriteAt(buf, 16384); err != nil {
		t.Fatalf("write after recovery: %v", err)
	}
	got := make([]byte, 4096)
	if _, err := f.ReadAt(got, 8192); err != nil || string(got) != string(buf) {
		t.Fatalf("read back after recovery: %v", err)
	}
	f.Close()
	m.stopClean(t)
}

// TestExt4OnLoopFailovers: ext4 on a loop device over the device file
// survives 20 failovers during writes; fsck is clean.
func TestExt4OnLoopFailovers(t *testing.T) {
	needs.Tools(t, "losetup", "mkfs.ext4", "e2fsck", "mount", "umount")
	st := store(t, 256<<20)
	m := startMount(t, append([]string{"--name", "d0", "--psp", "VMW_PSP_RR", "--psp-option", "iops=8", "--io-timeout", "2s", "--check-interval", "200ms", "--flap-threshold", "1000"}, filePaths(st, 3)...)...)
	loopOut, err := runCmd("losetup", "--find", "--show", "--direct-io=on", m.file("d0"))
	if err != nil {
		loopOut, err = runCmd("losetup", "--find", "--show", m.file("d0"))
	}
	if err != nil {
		t.Fatalf("losetup: %v %s", err, loopOut)
	}
	loop := strings.TrimSpace(loopOut)
	t.Cleanup(func() { runCmd("losetup", "-d", loop) })
	if out, err := runCmd("mkfs.ext4", "-q", "-F", loop); err != nil {
		t.Fatalf("mkfs.ext4: %v %s", err, out)
	}
	mnt := filepath.Join(t.TempDir(), "ext4")
	os.MkdirAll(mnt, 0o755)
	if out, err := runCmd("mount", loop, mnt); err != nil {
		t.Fatalf("mount: %v %s", err, out)
	}
	mounted := true
	t.Cleanup(func() {
		if mounted {
			runCmd("umount", "-l", mnt)
		}
	})
	paths := []string{}
	for _, p := range m.status().Devices[0].Paths {
		paths = append(paths, p.Name)
	}
	stop := make(chan struct{})
	failovers := make(chan int, 1)
	base := m.status().Devices[0].Failovers
	go func() {
		// 20 failovers, counted by the device: each time, fail the next
		// data I/O of an active path (the probe is spared, so the fault is
		// spent on I/O), wait until it fired, clear it, go on.
		n := 0
		defer func() { failovers <- n }()
		for i := 0; n < 20; i++ {
			select {
			case <-stop:
				return
			default:
			}
			p := paths[i%len(paths)]
			if pathState(m.status(), "d0", p) != "active" {
				time.Sleep(50 * time.Millisecond)
				continue
			}
			if _, err := m.ctl("fault", "inject", p, "--error", "path-failure", "--count", "1", "--op", "read,write"); err != nil {
				return
			}
			deadline := time.Now().Add(5 * time.Second)
			for time.Now().Before(deadline) {
				out, _ := m.ctl("fault", "list", "--json")
				if !strings.Contains(out, `"injected": 0`) {
					break
				}
				time.Sleep(20 * time.Millisecond)
			}
			m.ctl("fault", "clear", p)
			n = int(m.status().Devices[0].Failovers - base)
		}
	}()
	payload := make([]byte, 1<<20)
	for i := range payload {
		payload[i] = byte(i * 7)
	}
	// Write until the 20 failovers happened (at least 60 files of 1 MiB).
	files := 0
	var n int
	for done := false; !done || files < 60; files++ {
		name := filepath.Join(mnt, fmt.Sprintf("f%03d", files))
		if err := os.WriteFile(name, payload, 0o644); err != nil {
			t.Fatalf("writing %s: %v", name, err)
		}
		if files%4 == 3 {
			if out, err := runCmd("sync"); err != nil {
				t.Fatalf("sync: %v %s", err, out)
			}
		}
		select {
		case n = <-failovers:
			done = true
		default:
		}
		if files >= 100 {
			os.Remove(filepath.Join(mnt, fmt.Sprintf("f%03d", files-100)))
		}
		if files > 20000 {
			t.Fatalf("only %d failovers happened while writing 20000 files", m.status().Devices[0].Failovers-base)
		}
	}
	close(stop)
	if out, err := runCmd("sync"); err != nil {
		t.Fatalf("sync: %v %s", err, out)
	}
	if out, err := runCmd("umount", mnt); err != nil {
		t.Fatalf("umount: %v %s", err, out)
	}
	mounted = false
	if out, err := runCmd("e2fsck", "-fn", loop); err != nil {
		t.Fatalf("e2fsck -fn after %d failovers: %v\n%s", n, err, out)
	}
	// Remount and check the data.
	if out, err := runCmd("mount", loop, mnt); err != nil {
		t.Fatalf("remount: %v %s", err, out)
	}
	mounted = true
	for i := 0; i < files; i++ {
		got, err := os.ReadFile(filepath.Join(mnt, fmt.Sprintf("f%03d", i)))
		if os.IsNotExist(err) {
			continue
		}
		if err != nil || string(got) != string(payload) {
			t.Fatalf("file f%03d differs after %d failovers (err %v)", i, n, err)
		}
	}
	runCmd("umount", mnt)
	mounted = false
	st0 := m.status()
	t.Logf("%d failovers observed while writing %d files; device failovers counted: %d", n, files, st0.Devices[0].Failovers)
	if n < 20 || st0.Devices[0].Failovers < 20 {
		t.Errorf("only %d (device: %d) failovers happened, want 20", n, st0.Devices[0].Failovers)
	}
	if out, err := runCmd("losetup", "-d", loop); err != nil {
		t.Errorf("losetup -d: %v %s", err, out)
	}
	m.stopClean(t)
}
