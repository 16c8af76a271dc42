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
