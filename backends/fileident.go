package backends

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"

	"golang.org/x/sys/unix"
)

// LabelXattr is the user extended attribute that labels a file store with
// the WWID its device asserts. It is read through every path, so two mounts
// of one file (NFS 4.2, SMB, a local file system) agree on it; a file that
// carries a different label, or none while another path's file carries one,
// is a different store.
const LabelXattr = "user.mpathfs.wwid"

// maxLabel bounds a label's length (a WWID is short; xattr values are not).
const maxLabel = 255

var (
	// ErrNoLabel: the file system keeps extended attributes, the file has
	// no label.
	ErrNoLabel = errors.New("no " + LabelXattr + " label")
	// ErrLabelsUnsupported: the file system (or the path's transport) keeps
	// no user extended attributes: the label cannot be checked there.
	ErrLabelsUnsupported = errors.New("the file system keeps no user extended attributes")
)

// Labeler is implemented by backends whose store can carry a label (a user
// extended attribute on a file). Label returns the label, ErrNoLabel when
// the store carries none, or ErrLabelsUnsupported when it cannot carry one.
type Labeler interface {
	Label(ctx context.Context) (string, error)
	SetLabel(ctx context.Context, wwid string) error
}

var _ Labeler = (*File)(nil)

// Label reads the file's label (LabelXattr) through this path's descriptor.
func (b *File) Label(ctx context.Context) (string, error) {
	if err := ctx.Err(); err != nil {
		return "", err
	}
	return readLabelFd(b.fd, b.name)
}

// SetLabel writes the file's label through this path's descriptor.
func (b *File) SetLabel(ctx context.Context, wwid string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := ValidLabel(wwid); err != nil {
		return err
	}
	return labelErr(unix.Fsetxattr(b.fd, LabelXattr, []byte(wwid), 0), "setxattr", b.name)
}

// ValidLabel checks a WWID is fit to be a label: printable, no spaces,
// not empty, not too long.
func ValidLabel(wwid string) error {
	if wwid == "" {
		return errors.New("empty wwid")
	}
	if len(wwid) > maxLabel {
		return fmt.Errorf("wwid %.20q… is longer than %d bytes", wwid, maxLabel)
	}
	for _, r := range wwid {
		if r <= ' ' || r > '~' {
			return fmt.Errorf("wwid %q: only printable ASCII without spaces", wwid)
		}
	}
	return nil
}

func readLabelFd(fd int, name string) (string, error) {
	buf := make([]byte, maxLabel+1)
	n, err := unix.Fgetxattr(fd, LabelXattr, buf)
	if err != nil {
		return "", labelErr(err, "getxattr", name)
	}
	return strings.TrimSpace(string(buf[:n])), nil
}

// ReadLabel reads the label of a file by name (following symlinks).
func ReadLabel(name string) (string, error) {
	buf := make([]byte, maxLabel+1)
	n, err := unix.Getxattr(name, LabelXattr, buf)
	if err != nil {
		return "", labelErr(err, "getxattr", name)
	}
	return strings.TrimSpace(string(buf[:n])), nil
}

// WriteLabel labels a file by name.
func WriteLabel(name, wwid string) error {
	if err := ValidLabel(wwid); err != nil {
		return err
	}
	return labelErr(unix.Setxattr(name, LabelXattr, []byte(wwid), 0), "setxattr", name)
}

// RemoveLabel removes a file's label; a file without one is not an error.
func RemoveLabel(name string) error {
	err := labelErr(unix.Removexattr(name, LabelXattr), "removexattr", name)
	if errors.Is(err, ErrNoLabel) {
		return nil
	}
	return err
}

// labelErr maps the errno values of the xattr calls onto ErrNoLabel and
// ErrLabelsUnsupported, keeping the rest as path errors.
func labelErr(err error, op, name string) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, unix.ENODATA):
		return fmt.Errorf("%s: %w", name, ErrNoLabel)
	case errors.Is(err, unix.ENOTSUP), errors.Is(err, unix.ENOSYS):
		return fmt.Errorf("%s: %w", name, ErrLabelsUnsupported)
	case errors.Is(err, unix.ERANGE):
		return fmt.Errorf("%s: %s label longer than %d bytes", name, LabelXattr, maxLabel)
	}
	return &os.PathError{Op: op, Path: name, Err: err}
}
