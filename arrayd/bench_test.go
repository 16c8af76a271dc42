package arrayd

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"syscall"
	"testing"

	"github.com/mpathfs/mpathfs/iscsi/iscsipath"
)

// benchConfig is one 64 MiB LU in memory (/dev/shm when there is one, as
// bench/iscsi.sh has it) behind controller A's port 1 and B's port 2.
const benchConfig = `target: iqn.2026-12.io.mpathfs.bench:array
state_dir: %s
lus:
  - {name: bench, lun: 0, file: %s, size: 64M}
controllers:
  - {name: A, ports: [{id: 1, portal: "127.0.0.1:0"}]}
  - {name: B, ports: [{id: 2, portal: "127.0.0.1:0"}]}
`

func benchDir(b *testing.B) string {
	b.Helper()
	if st, err := os.Stat("/dev/shm"); err == nil && st.IsDir() {
		d, err := os.MkdirTemp("/dev/shm", "arrayd-bench")
		if err == nil {
			b.Cleanup(func() { os.RemoveAll(d) })
			return d
		}
	}
	return b.TempDir()
}

// BenchmarkArrayServe drives the array server's whole write and read path
// in one process: our iSCSI initiator (package iscsipath) over a loopback
// TCP connection to the array server's active/optimized port, 4 KiB random
// writes and reads at queue depth 1 and 32 and 1 MiB writes at queue depth
// 1. The figure of interest is ns/op of write-4k-qd1: one command's round
// trip through the target (immediate data, the logical unit, the store,
// the response), with the initiator's cost in it too. cpu-ns/op is the
// processor time (user and system, both sides) per command: less
// sensitive than ns/op to what else runs on the machine.
func BenchmarkArrayServe(b *testing.B) {
	dir := benchDir(b)
	c, err := Parse([]byte(fmt.Sprintf(benchConfig, filepath.Join(dir, "state"), filepath.Join(dir, "bench.img"))))
	if err != nil {
		b.Fatal(err)
	}
	s, err := New(c, ISCSI)
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	if err := s.Start(); err != nil {
		b.Fatal(err)
	}
	var portal string
	for _, p := range s.Portals() {
		if p.Port == 1 {
			portal = p.Addr
		}
	}
	u, _ := url.Parse(fmt.Sprintf("iscsi://%s/%s/0?initiator=iqn.2026-12.io.mpathfs.bench:host", portal, c.Target))
	o, err := iscsipath.ParseURI(u)
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	be, err := iscsipath.Open(ctx, o)
	if err != nil {
		b.Fatal(err)
	}
	defer be.Close()
	blocks := be.Size() / 4096
	for _, bc := range []struct {
		name  string
		size  int
		write bool
		qd    int
	}{
		{"write-4k-qd1", 4096, true, 1}, {"write-4k-qd32", 4096, true, 32},
		{"read-4k-qd1", 4096, false, 1}, {"read-4k-qd32", 4096, false, 32},
		{"write-1m-qd1", 1 << 20, true, 1},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.SetBytes(int64(bc.size))
			one := func(buf []byte) error {
				off := rand.Int64N(blocks-int64(bc.size/4096)) * 4096
				var err error
				if bc.write {
					_, err = be.WriteAt(ctx, buf, off)
				} else {
					_, err = be.ReadAt(ctx, buf, off)
				}
				return err
			}
			cpu0 := cpuNanos(b)
			defer func() { b.ReportMetric(float64(cpuNanos(b)-cpu0)/float64(max(b.N, 1)), "cpu-ns/op") }()
			if bc.qd == 1 {
				buf := make([]byte, bc.size)
				for b.Loop() {
					if err := one(buf); err != nil {
						b.Fatal(err)
					}
				}
				return
			}
			b.SetParallelism(max(1, bc.qd/runtime.GOMAXPROCS(0)))
			b.RunParallel(func(pb *testing.PB) {
				buf := make([]byte, bc.size)
				for pb.Next() {
					if err := one(buf); err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
	}
}

// cpuNanos is the processor time (user and system) the process used.
func cpuNanos(b *testing.B) int64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return ru.Utime.Nano() + ru.Stime.Nano()
}
