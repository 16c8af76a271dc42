// Package e2e drives the real mpathfs binary: a real FUSE mount, real fio,
// real loop devices and ext4, real NBD servers. In CI (CI set) a missing
// tool fails the test; elsewhere it skips with the reason.
package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/mpathfs/mpathfs/control"
	"github.com/mpathfs/mpathfs/internal/needs"
)

var binary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "mpathfs-e2e-bin")
	if err != nil {
		panic(err)
	}
	binary = filepath.Join(dir, "mpathfs")
	cmd := exec.Command("go", "build", "-o", binary, "../../cmd/mpathfs")
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "e2e: building mpathfs:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// mount is a running `mpathfs mount`.
type mount struct {
	t       *testing.T
	dir     string
	socket  string
	cmd     *exec.Cmd
	out     *syncBuffer
	exited  chan struct{}
	waitErr error
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// startMount runs `mpathfs mount ARGS… MOUNTPOINT` and waits until the
// control socket answers and every device file exists. Cleanup stops it by
// PID and makes sure nothing stays mounted.
func startMount(t *testing.T, args ...string) *mount {
	t.Helper()
	return startMountDir(t, "", args...)
}

func startMountDir(t *testing.T, dir string, args ...string) *mount {
	t.Helper()
	needs.Tools(t, "root", "/dev/fuse", "fusermount3")
	base := t.TempDir()
	if dir == "" {
		dir = filepath.Join(base, "mnt")
	}
	m := &mount{t: t, dir: dir, socket: filepath.Join(base, "ctl.sock"), out: &syncBuffer{}, exited: make(chan struct{})}
	full := append([]string{"mount", "--control", m.socket}, args...)
	full = append(full, m.dir)
	m.cmd = exec.Command(binary, full...)
	m.cmd.Stdout, m.cmd.Stderr = m.out, m.out
	m.cmd.Env = append(os.Environ(), "MPATHFS_STATE_DIR="+filepath.Join(base, "state"))
	if err := m.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { m.waitErr = m.cmd.Wait(); close(m.exited) }()
	t.Cleanup(m.stop)
	deadline := time.Now().Add(30 * time.Second)
	for {
		select {
		case <-m.exited:
			t.Fatalf("mpathfs mount exited early: %v\n%s", m.waitErr, m.out.String())
		default:
		}
		if strings.Contains(m.out.String(), "control socket") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("mpathfs mount did not come up in 30s:\n%s", m.out.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	// On failure, what the mount saw (runs before m.stop: cleanups run
	// last-registered first).
	t.Cleanup(func() {
		if !t.Failed() {
			return
		}
		if out, err := m.ctl("events", "--last", "150"); err == nil {
			t.Logf("mpathfs events (last 150):\n%s", out)
		}
		out := m.out.String()
		if len(out) > 8000 {
			out = "…" + out[len(out)-8000:]
		}
		t.Logf("mpathfs output:\n%s", out)
	})
	return m
}

// stop sends SIGTERM, waits, and cleans up by force if it must.
func (m *mount) stop() {
	if m.cmd.Process == nil {
		return
	}
	select {
	case <-m.exited:
	default:
		m.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-m.exited:
		case <-time.After(20 * time.Second):
			m.t.Errorf("mpathfs did not stop 20s after SIGTERM; killing PID %d", m.cmd.Process.Pid)
			m.cmd.Process.Kill()
			<-m.exited
		}
	}
	if isMounted(m.dir) {
		m.t.Errorf("%s is still mounted after mpathfs exited; unmounting lazily", m.dir)
		exec.Command("fusermount3", "-u", "-z", m.dir).Run()
	}
}

// stopClean stops the mount and asserts it exited 0 and unmounted.
func (m *mount) stopClean(t *testing.T) {
	t.Helper()
	m.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-m.exited:
	case <-time.After(20 * time.Second):
		t.Fatalf("mpathfs did not stop 20s after SIGTERM")
	}
	if m.waitErr != nil {
		t.Errorf("mpathfs exited with %v:\n%s", m.waitErr, m.out.String())
	}
	if isMounted(m.dir) {
		t.Errorf("%s still mounted after SIGTERM", m.dir)
	}
}

func isMounted(dir string) bool {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return false
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) > 4 && f[4] == dir {
			return true
		}
	}
	return false
}

// file is the device file of a device.
func (m *mount) file(dev string) string { return filepath.Join(m.dir, dev) }

// ctl runs an mpathfs client command against this mount.
func (m *mount) ctl(args ...string) (string, error) {
	full := append([]string{args[0], "--control", m.socket}, args[1:]...)
	if len(args) > 1 && (args[0] == "path" || args[0] == "fault" || args[0] == "policy" || args[0] == "adapter" || args[0] == "device") {
		full = append([]string{args[0], args[1], "--control", m.socket}, args[2:]...)
	}
	if len(args) > 1 && (args[0] == "claimrule" || args[0] == "claiming" || args[0] == "satp") {
		full = append(append([]string(nil), args...), "--control", m.socket)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, binary, full...).CombinedOutput()
	return string(out), err
}

func (m *mount) mustCtl(args ...string) string {
	m.t.Helper()
	out, err := m.ctl(args...)
	if err != nil {
		m.t.Fatalf("mpathfs %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

// status returns `mpathfs status --json`.
func (m *mount) status() control.Status {
	m.t.Helper()
	out := m.mustCtl("status", "--json")
	var st control.Status
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		m.t.Fatalf("status --json: %v\n%s", err, out)
	}
	return st
}

// fioResult is the part of fio's JSON the tests read.
type fioResult struct {
	Jobs []struct {
		Error    int `json:"error"`
		TotalErr int `json:"total_err"`
		Read     struct {
			IOPS    float64 `json:"iops"`
			IOBytes int64   `json:"io_bytes"`
			ClatNs  struct {
				Max float64 `json:"max"`
			} `json:"clat_ns"`
		} `json:"read"`
		Write struct {
			IOPS    float64 `json:"iops"`
			IOBytes int64   `json:"io_bytes"`
			ClatNs  struct {
				Max float64 `json:"max"`
			} `json:"clat_ns"`
		} `json:"write"`
	} `json:"jobs"`
}

// runFio runs fio with JSON output; it returns the result and fio's exit error.
func runFio(ctx context.Context, args ...string) (fioResult, string, error) {
	// --verify_state_save=0 before the first job: a global option, so no
	// job of any test leaves a verify state file in the package directory.
	full := append([]string{"--output-format=json", "--verify_state_save=0"}, args...)
	cmd := exec.CommandContext(ctx, "fio", full...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var r fioResult
	if jerr := json.Unmarshal(stdout.Bytes(), &r); jerr != nil && err == nil {
		err = fmt.Errorf("fio output: %v", jerr)
	}
	return r, stdout.String() + stderr.String(), err
}

// fioRun is fio running in the background (startFio).
type fioRun struct {
	done chan struct{} // closed when fio has exited
	r    fioResult
	out  string
	err  error
}

// startFio runs fio with runFio in the background, until it exits or ctx
// ends.
func startFio(ctx context.Context, args ...string) *fioRun {
	f := &fioRun{done: make(chan struct{})}
	go func() {
		defer close(f.done)
		f.r, f.out, f.err = runFio(ctx, args...)
	}()
	return f
}

// wait waits for fio and returns what runFio returned.
func (f *fioRun) wait() (fioResult, string, error) {
	<-f.done
	return f.r, f.out, f.err
}

// verifyJob is fio's 4k randrw with crc32c verification of every block it
// wrote, during the run (backlog) and after it.
func verifyJob(file string, seconds int, extra ...string) []string {
	return append([]string{"--name=verify", "--filename=" + file, "--direct=1", "--rw=randrw", "--bs=4k",
		"--ioengine=libaio", "--iodepth=16", "--size=64M", "--io_size=2G", fmt.Sprintf("--runtime=%d", seconds),
		"--verify=crc32c", "--do_verify=1", "--verify_backlog=1024", "--verify_fatal=1", "--verify_state_save=0",
		"--randseed=42"}, extra...)
}

// pathIO is reads+writes per path.
func pathIO(st control.Status, dev string) map[string]uint64 {
	out := map[string]uint64{}
	for _, d := range st.Devices {
		if d.Name != dev {
			continue
		}
		for _, p := range d.Paths {
			out[p.Name] = p.Reads + p.Writes
		}
	}
	return out
}

func pathState(st control.Status, dev, path string) string {
	for _, d := range st.Devices {
		if d.Name != dev {
			continue
		}
		for _, p := range d.Paths {
			if p.Name == path {
				return p.State
			}
		}
	}
	return "missing"
}

// waitFor polls cond until it holds or the timeout passes.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// store makes a sparse file store of the given size.
func store(t *testing.T, size int64) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "store.img")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	f.Close()
	return p
}
