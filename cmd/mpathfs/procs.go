package main

import (
	"fmt"
	"net/url"
	"os"
	"runtime"

	"golang.org/x/sys/unix"

	"github.com/mpathfs/mpathfs/host"
)

// blockingProcs is GOMAXPROCS for devices whose paths block in system
// calls: a pread on a file on disk or a block device holds an OS thread
// (and, until sysmon takes it back, a P) per request in flight, and with
// GOMAXPROCS at the core count the I/O path starves (the bench README:
// 4k QD32 on an O_DIRECT file on disk doubled from 2 to 8).
const blockingProcs = 8

// tuneProcs raises GOMAXPROCS to blockingProcs unless every path is a file
// in memory (tmpfs, ramfs) or the user set GOMAXPROCS. Files in memory run
// best at the core count: more Ps than cores only add thread hand-offs
// (measured on 2 cores, two file paths in /dev/shm: 4k randrw QD32×2 129k
// IOPS at GOMAXPROCS 2 against 117k at 8, 1 MiB writes 5916 against 5342
// MiB/s; docs/design.md, "Threads"). It returns a line for the log.
func tuneProcs(devs []host.Device) string {
	if os.Getenv("GOMAXPROCS") != "" {
		return ""
	}
	why := firstBlocking(devs)
	if why == "" || runtime.GOMAXPROCS(0) >= blockingProcs {
		return ""
	}
	runtime.GOMAXPROCS(blockingProcs)
	return fmt.Sprintf("GOMAXPROCS %d: %s blocks in system calls", blockingProcs, why)
}

// firstBlocking is the URI of the first path that blocks, or "".
func firstBlocking(devs []host.Device) string {
	for _, d := range devs {
		for _, p := range d.Paths() {
			if blocksInSyscalls(p.URI) {
				return p.URI
			}
		}
	}
	return ""
}

// blocksInSyscalls tells whether I/O on a path URI waits (in a system call
// on a device, or for a network reply): everything but files in memory.
func blocksInSyscalls(uri string) bool {
	name := uri
	if u, err := url.Parse(uri); err == nil && u.Scheme != "" {
		switch u.Scheme {
		case "file":
			name = u.Path
		case "block":
			return true
		default:
			// NBD: the netpoller waits, not a thread, but go-fuse's
			// readers block in read(2) on /dev/fuse holding Ps, and a
			// reply that arrives needs one at once. Measured with one
			// NBD path (multi-conn) against nbdfuse in the same runs:
			// 1.01–1.15× on every job at 8, 0.92–0.93× on 4k QD1
			// writes and 1 MiB I/O at 2.
			return true
		}
	}
	if fi, err := os.Stat(name); err != nil || fi.Mode()&os.ModeDevice != 0 {
		return true // a device node, or cannot tell: assume a disk
	}
	var st unix.Statfs_t
	if err := unix.Statfs(name, &st); err != nil {
		return true // cannot tell: assume a disk
	}
	switch st.Type {
	case unix.TMPFS_MAGIC, unix.RAMFS_MAGIC:
		return false
	}
	return true
}
