package nbd

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/mpathfs/mpathfs/backends"
	"github.com/mpathfs/mpathfs/ioerr"
)

func wantPathFailure(t *testing.T, what string, err error) {
	t.Helper()
	if !errors.Is(err, ioerr.ErrPathFailure) {
		t.Fatalf("%s: got %v, want a path failure", what, err)
	}
}

// TestPipelining: many goroutines share one connection; with a 50 ms
// server-side delay per read, 64 reads in parallel must overlap.
func TestPipelining(t *testing.T) {
	s := startNbdkit(t, false, "--filter=delay", "memory", "size=16M", "delay-read=50ms")
	c := openT(t, s.uri(""))
	defer c.Close()
	ctx := ctxTimeout(t, 30*time.Second)
	const workers = 64
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	start := time.Now()
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			off := int64(w) * 65536
			buf := bytes.Repeat([]byte{byte(w + 1)}, 65536)
			if _, err := c.WriteAt(ctx, buf, off); err != nil {
				errs <- err
				return
			}
			got := make([]byte, len(buf))
			if _, err := c.ReadAt(ctx, got, off); err != nil {
				errs <- err
				return
			}
			if !bytes.Equal(got, buf) {
				errs <- errors.New("data mismatch")
			}
		}(w)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if el := time.Since(start); el > workers*50*time.Millisecond/4 {
		t.Fatalf("64 delayed reads took %v: requests are not pipelined", el)
	}
}

// TestKillServerFailsInFlight: kill -9 of the server fails every request in
// flight promptly with a path failure; later requests fail fast without
// reconnecting; after a restart on the same port Probe reconnects.
func TestKillServerFailsInFlight(t *testing.T) {
	disk := sparseFile(t, 16<<20)
	s := startNbdkit(t, true, "--filter=delay", "file", disk, "delay-read=2000ms")
	c := openT(t, s.uri(""))
	defer c.Close()
	ctx := ctxTimeout(t, 30*time.Second)
	if _, err := c.WriteAt(ctx, bytes.Repeat([]byte{7}, 4096), 0); err != nil {
		t.Fatal(err)
	}
	const n = 16
	errs := make(chan error, n)
	for i := 0; i < n; i++ {
		go func(i int) {
			_, err := c.ReadAt(ctx, make([]byte, 4096), int64(i)*4096)
			errs <- err
		}(i)
	}
	time.Sleep(200 * time.Millisecond)
	killed := time.Now()
	syscall.Kill(s.pid(), syscall.SIGKILL)
	for i := 0; i < n; i++ {
		select {
		case err := <-errs:
			wantPathFailure(t, "in-flight read", err)
		case <-time.After(time.Second):
			t.Fatalf("only %d of %d in-flight reads failed within 1s of kill -9", i, n)
		}
	}
	t.Logf("all %d in-flight reads failed %v after kill -9", n, time.Since(killed))
	s.kill()

	begin := time.Now()
	_, err := c.ReadAt(ctx, make([]byte, 4096), 0)
	wantPathFailure(t, "read on a dead connection", err)
	if !errors.Is(err, ErrConnDown) {
		t.Fatalf("read on a dead connection: %v does not wrap ErrConnDown", err)
	}
	if el := time.Since(begin); el > 50*time.Millisecond {
		t.Fatalf("read on a dead connection took %v: it must fail fast", el)
	}
	_, err = c.WriteAt(ctx, make([]byte, 4096), 0)
	wantPathFailure(t, "write on a dead connection", err)

	pctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	err = c.Probe(pctx)
	cancel()
	wantPathFailure(t, "Probe with the server down", err)

	s.args = s.args[:len(s.args)-1] // restart without the delay
	s.restart()
	pctx, cancel = context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := c.Probe(pctx); err != nil {
		t.Fatalf("Probe after restart: %v", err)
	}
	got := make([]byte, 4096)
	if _, err := c.ReadAt(ctx, got, 0); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, bytes.Repeat([]byte{7}, 4096)) {
		t.Fatal("data written before the restart is gone")
	}
}

// TestHungServerDeadline: a server that never answers (delay filter) makes
// a read with a 500 ms deadline fail as a path failure soon after the
// deadline, and the connection is torn down.
func TestHungServerDeadline(t *testing.T) {
	s := startNbdkit(t, false, "--filter=delay", "memory", "size=4M", "delay-read=10000ms")
	c := openT(t, s.uri(""))
	defer c.Close()
	testHung(t, c)
}

// TestStoppedServerDeadline: the same with kill -STOP.
func TestStoppedServerDeadline(t *testing.T) {
	s := startNbdkit(t, true, "memory", "size=4M")
	c := openT(t, s.uri(""))
	defer c.Close()
	stopServer(t, s.pid())
	defer syscall.Kill(s.pid(), syscall.SIGCONT)
	testHung(t, c)
}

func testHung(t *testing.T, c *Client) {
	t.Helper()
	// A second request without a deadline, in flight at the same time.
	other := make(chan error, 1)
	go func() {
		_, err := c.ReadAt(context.Background(), make([]byte, 4096), 8192)
		other <- err
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := c.ReadAt(ctx, make([]byte, 4096), 0)
	el := time.Since(start)
	wantPathFailure(t, "read on a hung server", err)
	if el > 800*time.Millisecond {
		t.Fatalf("read on a hung server returned after %v, want ~500ms", el)
	}
	select {
	case err := <-other:
		wantPathFailure(t, "the other in-flight read", err)
	case <-time.After(time.Second):
		t.Fatal("the other in-flight read did not fail when the connection was torn down")
	}
	_, err = c.ReadAt(context.Background(), make([]byte, 512), 0)
	wantPathFailure(t, "read after teardown", err)
}

// TestWatchdogAbandoned: a request whose caller cancelled (not a deadline)
// leaves the connection up; when the hung reply outlives the request's
// deadline the watchdog tears the connection down.
func TestWatchdogAbandoned(t *testing.T) {
	s := startNbdkit(t, false, "memory", "size=4M")
	c := openT(t, s.uri("")+"&watchdog=20ms")
	defer c.Close()
	stopServer(t, s.pid())
	defer syscall.Kill(s.pid(), syscall.SIGCONT)
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	go func() { time.Sleep(50 * time.Millisecond); cancel() }()
	_, err := c.ReadAt(ctx, make([]byte, 4096), 0)
	if !errors.Is(err, context.Canceled) || errors.Is(err, ioerr.ErrPathFailure) {
		t.Fatalf("cancelled read: %v, want context.Canceled, not a path failure", err)
	}
	conn, _ := c.current("read")
	if !conn.alive() {
		t.Fatal("a cancelled request tore the connection down")
	}
	time.Sleep(400 * time.Millisecond)
	if conn.alive() {
		t.Fatal("the watchdog did not tear down a connection with a request past its deadline")
	}
}

func TestAbort(t *testing.T) {
	s := startNbdkit(t, false, "--filter=delay", "memory", "size=4M", "delay-read=5000ms")
	c := openT(t, s.uri(""))
	defer c.Close()
	errs := make(chan error, 8)
	for i := 0; i < 8; i++ {
		go func() {
			_, err := c.ReadAt(context.Background(), make([]byte, 4096), 0)
			errs <- err
		}()
	}
	time.Sleep(100 * time.Millisecond)
	c.Abort(errors.New("test abort"))
	for i := 0; i < 8; i++ {
		select {
		case err := <-errs:
			wantPathFailure(t, "aborted read", err)
		case <-time.After(time.Second):
			t.Fatal("Abort did not fail the requests in flight")
		}
	}
}

func TestReadOnly(t *testing.T) {
	s := startNbdkit(t, false, "-r", "memory", "size=4M")
	c := openT(t, s.uri(""))
	defer c.Close()
	ctx := ctxTimeout(t, 10*time.Second)
	if !c.ReadOnly() {
		t.Fatal("ReadOnly() = false for nbdkit -r")
	}
	_, err := c.WriteAt(ctx, make([]byte, 4096), 0)
	if !errors.Is(err, ioerr.ErrDeviceError) || !errors.Is(err, syscall.EROFS) {
		t.Fatalf("write to a read-only export: %v, want a device error (EROFS)", err)
	}
	if backends.Can(c, backends.CapDiscard) || backends.Can(c, backends.CapWriteZeroes) {
		t.Fatal("a read-only export offers discard or write-zeroes")
	}
	if _, err := c.ReadAt(ctx, make([]byte, 4096), 0); err != nil {
		t.Fatal(err)
	}
}

// TestErrorFilter: nbdkit's error filter with an error-file toggled live.
// EIO is a path failure, ENOSPC a device error; neither tears the
// connection down.
func TestErrorFilter(t *testing.T) {
	trigger := filepath.Join(t.TempDir(), "inject")
	s := startNbdkit(t, false, "--filter=error", "memory", "size=4M", "error=EIO", "error-rate=100%", "error-file="+trigger)
	c := openT(t, s.uri(""))
	defer c.Close()
	ctx := ctxTimeout(t, 10*time.Second)
	buf := make([]byte, 4096)
	if _, err := c.ReadAt(ctx, buf, 0); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(trigger, nil, 0o644)
	_, err := c.ReadAt(ctx, buf, 0)
	wantPathFailure(t, "read with EIO injected", err)
	if !errors.Is(err, syscall.EIO) {
		t.Fatalf("%v does not wrap EIO", err)
	}
	_, err = c.WriteAt(ctx, buf, 0)
	wantPathFailure(t, "write with EIO injected", err)
	os.Remove(trigger)
	if _, err := c.ReadAt(ctx, buf, 0); err != nil {
		t.Fatalf("read after removing the trigger: %v", err)
	}

	s2 := startNbdkit(t, false, "--filter=error", "memory", "size=4M", "error-pwrite=ENOSPC", "error-pwrite-rate=100%")
	c2 := openT(t, s2.uri(""))
	defer c2.Close()
	_, err = c2.WriteAt(ctx, buf, 0)
	if !errors.Is(err, ioerr.ErrDeviceError) || !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("write with ENOSPC injected: %v, want a device error (ENOSPC)", err)
	}
	if _, err := c2.ReadAt(ctx, buf, 0); err != nil {
		t.Fatalf("read after a device error: %v", err)
	}
}

func TestFlagsAndInquiry(t *testing.T) {
	disk := sparseFile(t, 4<<20)
	s := startNbdkit(t, true, "file", disk)
	c := openT(t, s.uri("myexport-with-a-long-name"))
	defer c.Close()
	ctx := ctxTimeout(t, 10*time.Second)
	if !c.MultiConn() {
		t.Error("nbdkit file: MultiConn() = false")
	}
	if !backends.Can(c, backends.CapDiscard) || !backends.Can(c, backends.CapWriteZeroes) {
		t.Error("nbdkit file: discard or write-zeroes not offered")
	}
	inq, err := c.Inquiry(ctx)
	if err != nil || inq.Transport != "nbd" || inq.Vendor != "NBD" || inq.Model != "myexport-with-a-" || inq.WWID != "" {
		t.Errorf("Inquiry = %+v, %v", inq, err)
	}
	p := bytes.Repeat([]byte{3}, 8192)
	if _, err := c.WriteAtFUA(ctx, p, 4096); err != nil {
		t.Fatalf("WriteAtFUA: %v", err)
	}
	if err := c.WriteZeroesNoHole(ctx, 4096, 4096); err != nil {
		t.Fatalf("WriteZeroesNoHole: %v", err)
	}
	got := make([]byte, 8192)
	c.ReadAt(ctx, got, 4096)
	if !bytes.Equal(got[:4096], make([]byte, 4096)) || !bytes.Equal(got[4096:], p[4096:]) {
		t.Fatal("WriteZeroesNoHole zeroed the wrong range")
	}

	s2 := startNbdkit(t, false, "--filter=multi-conn", "--filter=nozero", "file", disk, "multi-conn-mode=disable")
	c2 := openT(t, s2.uri(""))
	defer c2.Close()
	if c2.MultiConn() {
		t.Error("multi-conn-mode=disable: MultiConn() = true")
	}
	if backends.Can(c2, backends.CapWriteZeroes) {
		t.Error("nozero filter: write-zeroes offered")
	}
	if err := c2.WriteZeroes(ctx, 0, 4096); !errors.Is(err, backends.ErrNotSupported) {
		t.Errorf("WriteZeroes without the flag: %v, want ErrNotSupported", err)
	}
}

// TestBlockSizes: a server with a 4 KiB minimum and 64 KiB maximum block
// size: unaligned reads are widened, unaligned writes refused, large
// requests split.
func TestBlockSizes(t *testing.T) {
	s := startNbdkit(t, false, "--filter=blocksize-policy", "memory", "size=4M",
		"blocksize-minimum=4096", "blocksize-preferred=65536", "blocksize-maximum=65536", "blocksize-error-policy=error")
	c := openT(t, s.uri(""))
	defer c.Close()
	ctx := ctxTimeout(t, 10*time.Second)
	if min, pref, max := c.BlockSizes(); min != 4096 || pref != 65536 || max != 65536 {
		t.Fatalf("BlockSizes = %d, %d, %d", min, pref, max)
	}
	big := bytes.Repeat([]byte("0123456789abcdef"), 1<<16) // 1 MiB
	if _, err := c.WriteAt(ctx, big, 1<<20); err != nil {
		t.Fatalf("1 MiB write with a 64 KiB maximum: %v", err)
	}
	got := make([]byte, len(big))
	if _, err := c.ReadAt(ctx, got, 1<<20); err != nil || !bytes.Equal(got, big) {
		t.Fatalf("1 MiB read back: %v", err)
	}
	small := make([]byte, 100)
	if _, err := c.ReadAt(ctx, small, 1<<20+5); err != nil || !bytes.Equal(small, big[5:105]) {
		t.Fatalf("unaligned read: %v", err)
	}
	_, err := c.WriteAt(ctx, small, 5)
	if !errors.Is(err, ioerr.ErrDeviceError) || !errors.Is(err, syscall.EINVAL) {
		t.Fatalf("unaligned write: %v, want a device error (EINVAL)", err)
	}
}

func TestOpenErrors(t *testing.T) {
	ctx := ctxTimeout(t, 10*time.Second)
	port := freePort(t)
	_, err := backends.Open(ctx, "nbd://127.0.0.1:"+itoa(port)+"/x")
	if err == nil || !errors.Is(err, ioerr.ErrPathFailure) || !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("open with nothing listening: %v", err)
	}
	t.Logf("refused: %v", err)
	_, err = backends.Open(ctx, "nbd+unix:///x?socket="+filepath.Join(t.TempDir(), "none.sock"))
	if err == nil {
		t.Fatal("open of a missing socket succeeded")
	}
	// qemu-nbd has named exports: a wrong name is NBD_REP_ERR_UNKNOWN.
	q := startQemuNbd(t, sparseFile(t, 1<<20), "right")
	_, err = backends.Open(ctx, q.uri("wrong"))
	if err == nil || !bytes.Contains([]byte(err.Error()), []byte(`export "wrong" does not exist`)) {
		t.Fatalf("open of a missing export: %v", err)
	}
	t.Logf("unknown export: %v", err)
	// A server that accepts and never speaks: the connect timeout bounds it.
	s := startNbdkit(t, true, "memory", "size=1M")
	stopServer(t, s.pid())
	defer syscall.Kill(s.pid(), syscall.SIGCONT)
	start := time.Now()
	_, err = backends.Open(ctx, s.uri("")+"?connect-timeout=300ms")
	if err == nil || time.Since(start) > 2*time.Second {
		t.Fatalf("open of a stopped server: %v after %v", err, time.Since(start))
	}
	t.Logf("stopped server: %v", err)
}

func itoa(i int) string { return fmtInt(int64(i)) }

// stopServer sends SIGSTOP and waits until the kernel reports the process
// stopped: a request sent before that could still be answered.
func stopServer(t *testing.T, pid int) {
	t.Helper()
	syscall.Kill(pid, syscall.SIGSTOP)
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err == nil {
			f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
			if len(f) > 0 && (f[0] == "T" || f[0] == "t") {
				return
			}
		}
		time.Sleep(time.Millisecond)
	}
	t.Fatalf("nbdkit (pid %d) did not stop", pid)
}
