package main

import (
	"fmt"
	"os"
	"syscall"

	"golang.org/x/sys/unix"
)

// createOutput opens name for writing an output file (a trace, a
// report), creating it with perm or emptying it, without following a
// symbolic link and without touching what is not ours: mpathfs often runs
// as root and writes where a user told it to, maybe in a directory others
// can write to (/tmp), where a planted symlink or hard link would
// otherwise make it overwrite any file on the system.
//
// The last component must not be a symlink (O_NOFOLLOW), and an existing
// file must be a regular file with one link, owned by us; only then is it
// truncated (after the checks, so a refused file is left intact). FIFOs
// and devices are refused without blocking (O_NONBLOCK).
func createOutput(name string, perm os.FileMode) (*os.File, error) {
	f, err := os.OpenFile(name, os.O_WRONLY|os.O_CREATE|syscall.O_NOFOLLOW|syscall.O_NONBLOCK|syscall.O_CLOEXEC, perm)
	if err != nil {
		if pe, ok := err.(*os.PathError); ok && pe.Err == syscall.ELOOP {
			return nil, fmt.Errorf("%s is a symbolic link: refusing to write through it", name)
		}
		return nil, err
	}
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		f.Close()
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	switch {
	case st.Mode&unix.S_IFMT != unix.S_IFREG:
		f.Close()
		return nil, fmt.Errorf("%s is not a regular file: refusing to write to it", name)
	case st.Nlink != 1:
		f.Close()
		return nil, fmt.Errorf("%s has %d hard links: refusing to write to it", name, st.Nlink)
	case st.Uid != uint32(os.Geteuid()):
		f.Close()
		return nil, fmt.Errorf("%s belongs to uid %d, not to us (uid %d): refusing to write to it", name, st.Uid, os.Geteuid())
	}
	if err := f.Truncate(0); err != nil {
		f.Close()
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return f, nil
}
