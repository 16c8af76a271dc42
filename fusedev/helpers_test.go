package fusedev

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"github.com/mpathfs/mpathfs/backends"
	"github.com/mpathfs/mpathfs/internal/needs"
)

// need fails the test in CI and skips it elsewhere when FUSE or a tool is
// missing.
func need(t testing.TB, tools ...string) {
	t.Helper()
	reqs := append([]string{"/dev/fuse"}, tools...)
	for _, tool := range tools {
		switch tool {
		case "losetup", "mount", "mkfs.ext4":
			reqs = append(reqs, "root")
		}
	}
	needs.Tools(t, reqs...)
}

// testDev is a Device over a temporary sparse file, with hooks to inject
// errors and hangs and counters of the calls that matter.
type testDev struct {
	name string
	f    *backends.File

	flushes, discards, zeroes, writes atomic.Int64

	mu struct {
		sync.Mutex
		readErr, writeErr, flushErr, discardErr, zeroErr error
		hang                                             chan struct{} // non-nil: I/O blocks until closed or ctx is done
	}
	inHang chan struct{} // receives when an I/O starts hanging
}

var _ Device = (*testDev)(nil)

func newTestDev(t testing.TB, name string, size int64) *testDev {
	t.Helper()
	p := filepath.Join(t.TempDir(), name+".img")
	if err := os.WriteFile(p, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(p, size); err != nil {
		t.Fatal(err)
	}
	f, err := backends.OpenFile(p, backends.FileOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return &testDev{name: name, f: f, inHang: make(chan struct{}, 64)}
}

func (d *testDev) set(fn func(d *testDev)) {
	d.mu.Lock()
	defer d.mu.Unlock()
	fn(d)
}

func (d *testDev) hooks() (hang chan struct{}, readErr, writeErr, flushErr, discardErr, zeroErr error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.mu.hang, d.mu.readErr, d.mu.writeErr, d.mu.flushErr, d.mu.discardErr, d.mu.zeroErr
}

func (d *testDev) wait(ctx context.Context, hang chan struct{}) error {
	if hang == nil {
		return nil
	}
	select {
	case d.inHang <- struct{}{}:
	default:
	}
	select {
	case <-hang:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (d *testDev) Name() string { return d.name }
func (d *testDev) Size() int64  { return d.f.Size() }

func (d *testDev) ReadAt(ctx context.Context, p []byte, off int64) (int, error) {
	hang, rerr, _, _, _, _ := d.hooks()
	if err := d.wait(ctx, hang); err != nil {
		return 0, err
	}
	if rerr != nil {
		return 0, rerr
	}
	return d.f.ReadAt(ctx, p, off)
}

func (d *testDev) WriteAt(ctx context.Context, p []byte, off int64) (int, error) {
	hang, _, werr, _, _, _ := d.hooks()
	if err := d.wait(ctx, hang); err != nil {
		return 0, err
	}
	if werr != nil {
		return 0, werr
	}
	d.writes.Add(1)
	return d.f.WriteAt(ctx, p, off)
}

func (d *testDev) Flush(ctx context.Context) error {
	_, _, _, ferr, _, _ := d.hooks()
	d.flushes.Add(1)
	if ferr != nil {
		return ferr
	}
	return d.f.Flush(ctx)
}

func (d *testDev) Discard(ctx context.Context, off, length int64) error {
	_, _, _, _, derr, _ := d.hooks()
	d.discards.Add(1)
	if derr != nil {
		return derr
	}
	return d.f.Discard(ctx, off, length)
}

func (d *testDev) WriteZeroes(ctx context.Context, off, length int64) error {
	_, _, _, _, _, zerr := d.hooks()
	d.zeroes.Add(1)
	if zerr != nil {
		return zerr
	}
	return d.f.WriteZeroes(ctx, off, length)
}

// mountT mounts devs on a fresh directory and unmounts in t.Cleanup, lazily
// as a last resort, so that no test leaves a mount behind.
func mountT(t testing.TB, opts Options, devs ...Device) (*Server, string) {
	t.Helper()
	need(t)
	mp := t.TempDir()
	if opts.UnmountTimeout == 0 {
		opts.UnmountTimeout = time.Second
	}
	s, err := Mount(mp, devs, opts)
	if err != nil {
		t.Fatalf("Mount: %v", err)
	}
	t.Cleanup(func() { cleanupMount(t, s, mp) })
	return s, mp
}

func cleanupMount(t testing.TB, s *Server, mp string) {
	done := make(chan error, 1)
	go func() { done <- s.Unmount() }()
	select {
	case err := <-done:
		if err != nil {
			t.Logf("Unmount: %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Errorf("Unmount hung; detaching %s lazily", mp)
	}
	if _, listed := findFuseMount(cleanAbs(mp)); listed {
		t.Errorf("mount %s still listed after Unmount; detaching lazily", mp)
		_ = exec.Command("fusermount3", "-u", "-z", mp).Run()
		_ = syscall.Unmount(mp, syscall.MNT_DETACH)
	}
}

// alignedBuf returns a buffer of n bytes aligned for O_DIRECT.
func alignedBuf(n int) []byte {
	const align = 4096
	b := make([]byte, n+align)
	off := int(align - uintptr(unsafe.Pointer(&b[0]))%align)
	if off == align {
		off = 0
	}
	return b[off : off+n : off+n]
}

func pattern(n int, seed byte) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*7) ^ seed ^ byte(i>>12)
	}
	return b
}

// run runs a command with a timeout and fails the test with its output.
func run(t testing.TB, timeout time.Duration, name string, args ...string) string {
	t.Helper()
	out, err := runErr(timeout, name, args...)
	if err != nil {
		t.Fatalf("%s %v: %v\n%s", name, args, err, out)
	}
	return out
}

func runErr(timeout time.Duration, name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.WaitDelay = time.Second
	out, err := cmd.CombinedOutput()
	if ctx.Err() != nil {
		err = fmt.Errorf("%w (timed out after %v)", err, timeout)
	}
	return string(out), err
}

// The child half of TestCleanStale: the test binary re-executed with
// FUSEDEV_TEST_CHILD=mountpoint mounts one device, says "ready" and waits
// to be killed.
const childEnv = "FUSEDEV_TEST_CHILD"

func TestMain(m *testing.M) {
	if mp := os.Getenv(childEnv); mp != "" {
		os.Exit(childMount(mp))
	}
	os.Exit(m.Run())
}

func childMount(mp string) int {
	img := mp + ".child.img"
	if err := os.WriteFile(img, nil, 0o600); err != nil {
		fmt.Println("error:", err)
		return 1
	}
	defer os.Remove(img)
	if err := os.Truncate(img, 1<<20); err != nil {
		fmt.Println("error:", err)
		return 1
	}
	f, err := backends.OpenFile(img, backends.FileOptions{})
	if err != nil {
		fmt.Println("error:", err)
		return 1
	}
	d := &testDev{name: "child", f: f, inHang: make(chan struct{}, 1)}
	if _, err := Mount(mp, []Device{d}, Options{}); err != nil {
		fmt.Println("error:", err)
		return 1
	}
	fmt.Println("ready")
	select {}
}

// startChildMount re-executes the test binary to mount at mp and returns
// once the mount is up.
func startChildMount(t *testing.T, mp string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"="+mp)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill() // by PID; harmless if already dead
		_ = cmd.Wait()
		if _, listed := findFuseMount(cleanAbs(mp)); listed {
			_ = exec.Command("fusermount3", "-u", "-z", mp).Run()
		}
	})
	line := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(out)
		if sc.Scan() {
			line <- sc.Text()
		}
		close(line)
	}()
	select {
	case l := <-line:
		if l != "ready" {
			t.Fatalf("child: %q", l)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("child did not mount in 20s")
	}
	return cmd
}

func errnoOf(err error) syscall.Errno {
	var e syscall.Errno
	if errors.As(err, &e) {
		return e
	}
	return 0
}
