package main

import (
	"fmt"
	"os"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"strings"

	"github.com/dustin/go-humanize"

	"github.com/mpathfs/mpathfs/backends"
	"github.com/mpathfs/mpathfs/fusedev"
)

// The daemon's memory is go-fuse's request buffers (one of MaxWrite bytes
// per request held, whatever the request's size) plus the Go heap's
// garbage between collections. go-fuse allocates a few hundred bytes per
// request besides, so under load the collector runs every second or so and
// empties go-fuse's buffer pools each time; with GOGC alone the heap then
// swings to twice the live buffers and the freed pages stay resident. A
// soft limit a little above what the bounded requests can hold keeps RSS
// flat (docs/design.md, "Memory").

// memoryHeadroom is what the automatic limit allows above the memory in use
// at start-up plus the request buffers: the NMP, trace and control buffers,
// the backends' per-request memory, goroutine stacks, heap fragmentation and
// a margin. Too little is a cliff, not a slope: once the heap goal sits at
// the live heap the collector runs back to back, each cycle empties
// go-fuse's buffer pool, the 1 MiB buffers made anew fill the heap again,
// and the next cycle starts at once. With 8 MiB one NBD path at 4k QD32×2
// ran 200–325 collections in 6 s (4–15 with a limit 6 MiB higher or more),
// 0.82 of the IOPS at 1.3 times the CPU per I/O and a higher peak RSS
// (docs/design.md, "Memory").
const memoryHeadroom = 24 << 20

// parseMemoryLimit reads --memory-limit / memory_limit: "" or "auto"
// (auto=true), "off" (limit 0), or a size.
func parseMemoryLimit(s string) (limit int64, auto bool, err error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "", "auto":
		return 0, true, nil
	case "off", "none":
		return 0, false, nil
	}
	n, err := backends.ParseSize(s)
	if err != nil || n == 0 {
		return 0, false, fmt.Errorf("memory limit %q: want auto, off or a size such as 256MiB", s)
	}
	if n < 16<<20 {
		return 0, false, fmt.Errorf("memory limit %q is below 16 MiB: the request buffers alone need more; give at least 64MiB, auto or off", s)
	}
	return n, false, nil
}

// goMemoryInUse is the memory the Go runtime holds from the OS and has not
// released: what RSS shows of the Go side.
func goMemoryInUse() int64 {
	s := []metrics.Sample{{Name: "/memory/classes/total:bytes"}, {Name: "/memory/classes/heap/released:bytes"}}
	metrics.Read(s)
	return int64(s[0].Value.Uint64()) - int64(s[1].Value.Uint64())
}

// applyMemoryLimit sets the soft memory limit once the devices are built
// (their tables, such as the oracle's checksums, are then part of the
// baseline). It returns a line for the log, empty when nothing was set.
func applyMemoryLimit(spec string, maxRequests int) string {
	if os.Getenv("GOMEMLIMIT") != "" {
		return "memory limit from GOMEMLIMIT=" + os.Getenv("GOMEMLIMIT")
	}
	limit, auto, err := parseMemoryLimit(spec)
	if err != nil || (!auto && limit == 0) {
		return ""
	}
	if auto {
		if maxRequests < 0 {
			return "" // unbounded requests: no limit could hold them
		}
		if maxRequests == 0 {
			maxRequests = fusedev.DefaultMaxRequests
		}
		runtime.GC()
		limit = goMemoryInUse() + int64(maxRequests)*int64(fusedev.RequestBytes(0)) + memoryHeadroom
	}
	debug.SetMemoryLimit(limit)
	return "soft memory limit " + humanize.IBytes(uint64(limit))
}
