package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/mpathfs/mpathfs/backends"
)

// `mpathfs label`: read or write the label (the user.mpathfs.wwid extended
// attribute) that ties a file store to the WWID its device asserts. It
// works on the file itself, without a running mount.

func cmdLabel(args []string, stdout io.Writer) error {
	fs := newFlags(stdout, "label", "label [--wwid W [--force] | --remove] FILE|/dev/loopN...")
	wwid := fs.String("wwid", "", "write this WWID as the file's label (the device's wwid: in the config, or mount --wwid)")
	force := fs.Bool("force", false, "replace a different label already on the file")
	remove := fs.Bool("remove", false, "remove the label")
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if len(pos) == 0 {
		return usagef("give at least one FILE")
	}
	if *remove && *wwid != "" {
		return usagef("give either --wwid or --remove")
	}
	if *wwid != "" {
		if err := backends.ValidLabel(*wwid); err != nil {
			return usagef("--wwid: %v", err)
		}
	}
	for _, arg := range pos {
		name, err := labelTarget(arg)
		if err != nil {
			return err
		}
		cur, err := backends.ReadLabel(name)
		if err != nil && !errors.Is(err, backends.ErrNoLabel) {
			if errors.Is(err, backends.ErrLabelsUnsupported) {
				return fmt.Errorf("%s: %w: the label cannot be kept here; label the file through a mount that keeps user extended attributes (a local file system, NFS 4.2, SMB), or rely on the sample-block check alone", name, err)
			}
			return err
		}
		switch {
		case *remove:
			if err := backends.RemoveLabel(name); err != nil {
				return err
			}
			fmt.Fprintf(stdout, "%s: label removed\n", name)
		case *wwid != "":
			if cur != "" && cur != *wwid && !*force {
				return fmt.Errorf("%s is labelled %q already: it belongs to another device; give --force to relabel it", name, cur)
			}
			if err := backends.WriteLabel(name, *wwid); err != nil {
				return err
			}
			fmt.Fprintf(stdout, "%s: labelled %s\n", name, *wwid)
		case cur == "":
			fmt.Fprintf(stdout, "%s: no label\n", name)
		default:
			fmt.Fprintf(stdout, "%s: %s\n", name, cur)
		}
	}
	return nil
}

// labelTarget is the file a label goes on: the file itself, or a loop
// device's backing file.
func labelTarget(arg string) (string, error) {
	if !strings.HasPrefix(arg, "/dev/") {
		if st, err := os.Stat(arg); err != nil {
			return "", err
		} else if !st.Mode().IsRegular() {
			return "", fmt.Errorf("%s is not a regular file: a label goes on a file store (or a loop device's backing file)", arg)
		}
		return arg, nil
	}
	real, err := filepath.EvalSymlinks(arg)
	if err != nil {
		return "", err
	}
	bf, err := os.ReadFile(filepath.Join("/sys/class/block", filepath.Base(real), "loop", "backing_file"))
	if err != nil {
		return "", fmt.Errorf("%s is not a loop device: only a loop device's backing file carries a label (a SCSI LU names itself)", arg)
	}
	return strings.TrimSuffix(strings.TrimSpace(string(bf)), " (deleted)"), nil
}
