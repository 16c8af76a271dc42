package fusedev

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// ErrLiveMount is returned by CleanStale when a FUSE file system at the
// mount point still answers: some process serves it.
var ErrLiveMount = errors.New("fusedev: mount point is served by a live FUSE process")

// CleanStale removes a dead FUSE mount at mountpoint, the leftover of a
// crashed server: without it, every access to the mount point fails with
// ENOTCONN and a new mount cannot be made there. Call it before Mount.
//
// A FUSE mount is listed in /proc/self/mountinfo; it is dead when statfs
// of the mount point fails with ENOTCONN, or does not answer within a
// second (a hung server). statfs, not stat: FUSE always sends STATFS to the
// server, while a stat of the mount root may be answered from the kernel's
// attribute cache even after the server died. A dead mount is unmounted (fusermount3 -u, then
// fusermount3 -u -z, then the connection is aborted). A live mount is left
// alone and reported as ErrLiveMount. Nothing at the mount point, or a
// mount that is not FUSE, is not an error.
func CleanStale(mountpoint string) error {
	mp := cleanAbs(mountpoint)
	for range 8 { // stacked mounts: clean from the top down
		mi, listed := findFuseMount(mp)
		err := probeTimeout(mp, time.Second)
		dead := errors.Is(err, syscall.ENOTCONN) || errors.Is(err, os.ErrDeadlineExceeded)
		if !listed && !dead {
			return nil
		}
		if listed && !dead {
			if err != nil {
				return fmt.Errorf("fusedev: statfs %s: %w", mp, err)
			}
			return fmt.Errorf("%w: %s (%s); stop it first", ErrLiveMount, mp, mi.fstype)
		}
		if uerr := unmountOnce(mp, false); uerr != nil {
			if lerr := unmountOnce(mp, true); lerr != nil {
				return fmt.Errorf("fusedev: clean stale mount %s: %v; lazy: %w", mp, uerr, lerr)
			}
		}
		if listed && errors.Is(err, os.ErrDeadlineExceeded) {
			// The hung server may still hold the connection; our stat
			// goroutine waits on it too.
			abortConnection(mi.minor)
		}
	}
	return fmt.Errorf("fusedev: %s: still a FUSE mount after repeated unmounts", mp)
}

// probeTimeout calls statfs on p, giving up after d with
// os.ErrDeadlineExceeded (the goroutine stays blocked until the mount is
// aborted).
func probeTimeout(p string, d time.Duration) error {
	ch := make(chan error, 1)
	go func() {
		var st syscall.Statfs_t
		ch <- syscall.Statfs(p, &st)
	}()
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case err := <-ch:
		if err == nil {
			return nil
		}
		return &os.PathError{Op: "statfs", Path: p, Err: err}
	case <-t.C:
		return &os.PathError{Op: "statfs", Path: p, Err: os.ErrDeadlineExceeded}
	}
}

func cleanAbs(p string) string {
	if a, err := filepath.Abs(p); err == nil {
		return a
	}
	return filepath.Clean(p)
}

// unmountOnce unmounts mp once: umount2 when permitted, fusermount3
// otherwise. lazy detaches a busy mount (MNT_DETACH, fusermount3 -z).
func unmountOnce(mp string, lazy bool) error {
	flags := 0
	if lazy {
		flags = syscall.MNT_DETACH
	}
	err := syscall.Unmount(mp, flags)
	if err == nil || err == syscall.EBUSY || err == syscall.EINVAL || err == syscall.ENOENT {
		if err != nil {
			return &os.PathError{Op: "umount", Path: mp, Err: err}
		}
		return nil
	}
	bin, lerr := exec.LookPath("fusermount3")
	if lerr != nil {
		if bin, lerr = exec.LookPath("fusermount"); lerr != nil {
			return &os.PathError{Op: "umount", Path: mp, Err: err}
		}
	}
	args := []string{"-u"}
	if lazy {
		args = append(args, "-z")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, bin, append(args, "--", mp)...)
	cmd.Stderr = &stderr
	if rerr := cmd.Run(); rerr != nil {
		return fmt.Errorf("%s %s: %v: %s (umount2: %w)", bin, strings.Join(args, " "), rerr, strings.TrimSpace(stderr.String()), err)
	}
	return nil
}

type mountInfo struct {
	minor  string // the connection number under /sys/fs/fuse/connections
	fstype string
}

// findFuseMount returns the topmost FUSE mount at mp listed in
// /proc/self/mountinfo. It reads only procfs, never the mount.
func findFuseMount(mp string) (mountInfo, bool) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return mountInfo{}, false
	}
	defer f.Close()
	var found mountInfo
	ok := false
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		// id parent major:minor root mountpoint opts [optional…] - fstype source superopts
		fields := strings.Fields(sc.Text())
		if len(fields) < 10 {
			continue
		}
		sep := -1
		for i := 6; i < len(fields); i++ {
			if fields[i] == "-" {
				sep = i
				break
			}
		}
		if sep < 0 || sep+1 >= len(fields) {
			continue
		}
		fstype := fields[sep+1]
		if fstype != "fuse" && fstype != "fuseblk" && !strings.HasPrefix(fstype, "fuse.") {
			continue
		}
		if unescapeMountinfo(fields[4]) != mp {
			continue
		}
		_, minor, _ := strings.Cut(fields[2], ":")
		found, ok = mountInfo{minor: minor, fstype: fstype}, true
	}
	return found, ok
}

// unescapeMountinfo undoes the octal escapes (\040 for space…) of
// /proc/self/mountinfo.
func unescapeMountinfo(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if v, ok := octal(s[i+1 : i+4]); ok {
				b.WriteByte(v)
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

func octal(s string) (byte, bool) {
	if len(s) != 3 {
		return 0, false
	}
	v := 0
	for _, c := range s {
		if c < '0' || c > '7' {
			return 0, false
		}
		v = v*8 + int(c-'0')
	}
	return byte(v), v < 256
}

const fusectlDir = "/sys/fs/fuse/connections"

// abortConnection aborts FUSE connection id through fusectl, mounting
// fusectl first if nobody did. Every request of the connection then fails
// with ENOTCONN and the server's reads of /dev/fuse with ENODEV.
func abortConnection(id string) {
	if id == "" {
		return
	}
	p := filepath.Join(fusectlDir, id, "abort")
	if _, err := os.Stat(filepath.Join(fusectlDir, id)); err != nil {
		// Not mounted yet (only root may): try once.
		_ = syscall.Mount("fusectl", fusectlDir, "fusectl", 0, "")
	}
	f, err := os.OpenFile(p, os.O_WRONLY, 0)
	if err != nil {
		return
	}
	_, _ = f.WriteString("1")
	_ = f.Close()
}
