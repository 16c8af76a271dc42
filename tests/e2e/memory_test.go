package e2e

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/mpathfs/mpathfs/internal/needs"
)

// vmRSS is a process's resident set in bytes, from /proc/PID/status.
func vmRSS(t *testing.T, pid int) int64 {
	t.Helper()
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			if err != nil {
				t.Fatalf("VmRSS line %q: %v", sc.Text(), err)
			}
			return kb << 10
		}
	}
	t.Fatalf("no VmRSS in /proc/%d/status", pid)
	return 0
}

// TestMemoryBoundedAtQD64: with the default request bound and the automatic
// soft memory limit, the daemon's RSS stays bounded under fio at queue
// depth 64 (unbounded, it swung between 120 and 410 MiB: one 1 MiB request
// buffer per request in flight, emptied pools at every GC). The bound here
// is generous (the benchmark measures ~45 MiB); it catches the regression,
// not the last MiB.
func TestMemoryBoundedAtQD64(t *testing.T) {
	needs.Tools(t, "fio")
	st := store(t, 256<<20)
	m := startMount(t, append([]string{"--name", "d0", "--psp", "VMW_PSP_RR", "--psp-option", "iops=1"}, filePaths(st, 2)...)...)
	if !strings.Contains(m.out.String(), "soft memory limit") {
		t.Fatalf("mount did not report its soft memory limit:\n%s", m.out.String())
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	run := startFio(ctx, "--name=qd64", "--filename="+m.file("d0"), "--direct=1", "--rw=randrw", "--bs=4k",
		"--ioengine=libaio", "--iodepth=64", "--size=256M", "--time_based", "--runtime=8", "--randrepeat=0")
	var peak int64
	samples := 0
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	for running := true; running; {
		select {
		case <-run.done:
			running = false
		case <-tick.C:
			peak = max(peak, vmRSS(t, m.cmd.Process.Pid))
			samples++
		}
	}
	r, out, err := run.wait()
	if err != nil || r.Jobs[0].Error != 0 {
		t.Fatalf("fio: %v\n%s", err, out)
	}
	iops := r.Jobs[0].Read.IOPS + r.Jobs[0].Write.IOPS
	t.Logf("QD64 4k randrw: %.0f IOPS, peak VmRSS %d MiB over %d samples", iops, peak>>20, samples)
	if samples < 10 {
		t.Fatalf("only %d RSS samples during fio", samples)
	}
	if iops < 1000 {
		t.Errorf("fio did %.0f IOPS at QD64: the request bound starves the device", iops)
	}
	if peak > 96<<20 {
		t.Errorf("peak VmRSS %d MiB at QD64, want at most 96 MiB (default --max-requests and --memory-limit auto)", peak>>20)
	}
	// The profiler answers on the control socket (what docs/design.md's
	// memory findings were read from).
	hc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", m.socket)
		}}}
	resp, err := hc.Get("http://mpathfs/debug/pprof/allocs?debug=1")
	if err != nil {
		t.Fatalf("GET /debug/pprof/allocs: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), "heap profile") {
		t.Errorf("GET /debug/pprof/allocs: %s, body starts %.80q", resp.Status, body)
	}
	m.stopClean(t)
}

// numGC is the daemon's count of completed collections, from the Go
// collector's metrics.
func numGC(t *testing.T, m *mount) int64 {
	t.Helper()
	v := metricValue(t, m, "go_gc_duration_seconds_count")
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil {
		t.Fatalf("go_gc_duration_seconds_count %q: %v", v, err)
	}
	return n
}

// TestMemoryLimitNoCollectorStorm: the automatic soft memory limit leaves
// the collector room under one NBD path at 4k QD32×2. With 8 MiB of
// headroom the heap goal could sit at the live heap, and the collector ran
// back to back: 200–325 collections in 6 s, about 2 per 1000 I/Os, each
// emptying go-fuse's buffer pool so that new 1 MiB buffers filled the heap
// again (0.82 of the IOPS). With 24 MiB: 4–7, about 0.03 per 1000. The
// bound, 0.5 per 1000 I/Os, is far from both; counted per I/O, not per
// second, so a slow machine does not move it.
func TestMemoryLimitNoCollectorStorm(t *testing.T) {
	needs.Tools(t, "fio")
	srv := startNbdkit(t, store(t, 256<<20))
	m := startMount(t, "--name", "d0", "--path", srv.uri(), "--metrics", "127.0.0.1:0")
	if !strings.Contains(m.out.String(), "soft memory limit") {
		t.Fatalf("mount did not report its soft memory limit:\n%s", m.out.String())
	}
	before := numGC(t, m)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	r, out, err := runFio(ctx, "--name=qd32x2", "--filename="+m.file("d0"), "--direct=1", "--rw=randrw", "--bs=4k",
		"--ioengine=libaio", "--iodepth=32", "--numjobs=2", "--size=256M", "--time_based", "--runtime=6", "--randrepeat=0")
	if err != nil {
		t.Fatalf("fio: %v\n%s", err, out)
	}
	collections := numGC(t, m) - before
	var bytes int64
	for _, j := range r.Jobs {
		if j.Error != 0 {
			t.Fatalf("fio job error %d\n%s", j.Error, out)
		}
		bytes += j.Read.IOBytes + j.Write.IOBytes
	}
	ios := bytes / 4096
	if ios < 5000 {
		t.Fatalf("fio did only %d I/Os in 6 s", ios)
	}
	per := float64(collections) * 1000 / float64(ios)
	t.Logf("4k randrw QD32x2 over NBD: %d I/Os, %d collections (%.3f per 1000 I/Os); %s", ios, collections, per,
		strings.TrimSpace(lastLine(m.out.String(), "soft memory limit")))
	if per > 0.5 {
		t.Errorf("%d collections for %d I/Os (%.2f per 1000, want at most 0.5): the automatic memory limit leaves the collector no room", collections, ios, per)
	}
}
