package block

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/mpathfs/mpathfs/backends"
	"github.com/mpathfs/mpathfs/scsi"
)

// ErrNoIdentity: the device is neither SCSI nor a loop device and sysfs
// names no WWID for it.
var ErrNoIdentity = errors.New("block device has no identity (not SCSI, not loop, no wwid in sysfs)")

// Inquiry reports the LU's identity. A loop device is named after its
// backing file (vendor LINUX, model LOOP), with the same WWID a file://
// path to that file reports; a SCSI device answers INQUIRY over SG_IO (the
// standard page, VPD 0x80 and 0x83), or sysfs when SG_IO is refused.
func (d *Device) Inquiry(ctx context.Context) (backends.Inquiry, error) {
	if err := ctx.Err(); err != nil {
		return backends.Inquiry{}, err
	}
	if d.loop {
		var dev, ino uint64
		err := d.control(func(fd int) error {
			info, err := unix.IoctlLoopGetStatus64(fd)
			if err != nil {
				return err
			}
			dev, ino = info.Device, info.Inode
			return nil
		})
		if err != nil {
			return backends.Inquiry{}, &os.PathError{Op: "ioctl LOOP_GET_STATUS64", Path: d.name, Err: err}
		}
		return loopInquiry(dev, ino), nil
	}
	if d.scsi {
		inq, _, err := d.sgIdentity(ctx)
		if err == nil && inq.WWID != "" {
			return inq, nil
		}
		var pe *os.PathError
		if err != nil && !errors.As(err, &pe) {
			return backends.Inquiry{}, err // a SCSI error: report it
		}
	}
	return identifySys(d.sys)
}

// Identify reads a block device's identity from sysfs alone, without
// opening it: name is a kernel name (sdb, loop3, sdb1) or a device node
// path (/dev/sdb, /dev/disk/by-id/…). It agrees with Device.Inquiry's WWID.
func Identify(name string) (backends.Inquiry, error) {
	sys := "/sys/class/block/" + name
	if strings.Contains(name, "/") {
		var st unix.Stat_t
		if err := unix.Stat(name, &st); err != nil {
			return backends.Inquiry{}, &os.PathError{Op: "stat", Path: name, Err: err}
		}
		if st.Mode&unix.S_IFMT != unix.S_IFBLK {
			return backends.Inquiry{}, fmt.Errorf("%s is not a block device", name)
		}
		sys = fmt.Sprintf("/sys/dev/block/%d:%d", unix.Major(st.Rdev), unix.Minor(st.Rdev))
	}
	return identifySys(sys)
}

func identifySys(sys string) (backends.Inquiry, error) {
	real, err := filepath.EvalSymlinks(sys)
	if err != nil {
		return backends.Inquiry{}, fmt.Errorf("%s: %w", sys, ErrGone)
	}
	disk, suffix := real, ""
	if part := readSysString(filepath.Join(real, "partition")); part != "" {
		disk, suffix = filepath.Dir(real), "-part"+part
	}
	inq, err := identifyDisk(disk)
	if err != nil {
		return inq, err
	}
	inq.WWID += suffix
	return inq, nil
}

func identifyDisk(disk string) (backends.Inquiry, error) {
	if bf := readSysString(filepath.Join(disk, "loop", "backing_file")); bf != "" {
		var st unix.Stat_t
		if err := unix.Stat(bf, &st); err != nil {
			return backends.Inquiry{}, fmt.Errorf("loop device %s: backing file: %w", filepath.Base(disk), &os.PathError{Op: "stat", Path: bf, Err: err})
		}
		return loopInquiry(st.Dev, st.Ino), nil
	}
	dev := filepath.Join(disk, "device")
	inq := backends.Inquiry{
		Vendor:    readSysString(filepath.Join(dev, "vendor")),
		Model:     readSysString(filepath.Join(dev, "model")),
		Transport: "block",
	}
	if b, err := os.ReadFile(filepath.Join(dev, "inquiry")); err == nil {
		if std, err := scsi.ParseStdInquiry(b); err == nil {
			inq.TPGS = std.TPGS
			if inq.Vendor == "" {
				inq.Vendor, inq.Model = std.Vendor, std.Model
			}
		}
	}
	if b, err := os.ReadFile(filepath.Join(dev, "vpd_pg80")); err == nil {
		inq.Serial, _ = scsi.ParseVPD80(b)
	}
	if b, err := os.ReadFile(filepath.Join(dev, "vpd_pg83")); err == nil {
		if ds, err := scsi.ParseVPD83(b); err == nil {
			inq.WWID = scsi.WWIDFromDesignators(ds)
		}
	}
	for _, f := range []string{filepath.Join(dev, "wwid"), filepath.Join(disk, "wwid")} {
		if inq.WWID == "" {
			inq.WWID = readSysString(f)
		}
	}
	if inq.WWID == "" {
		return inq, fmt.Errorf("%s: %w", filepath.Base(disk), ErrNoIdentity)
	}
	return inq, nil
}

// loopInquiry names a loop device after its backing file's device and
// inode with the derivation backends.File.Inquiry means to use (sha256 of
// "dev:ino"; an NAA 6 name of 32 hex digits), so a loop device and a file
// path over the same image report the same WWID.
func loopInquiry(dev, ino uint64) backends.Inquiry {
	h := sha256.Sum256(fmt.Appendf(nil, "%d:%d", dev, ino))
	return backends.Inquiry{
		Vendor:    "LINUX",
		Model:     "LOOP",
		Serial:    hex.EncodeToString(h[:8]),
		WWID:      "naa.6" + hex.EncodeToString(h[:16])[:31],
		Transport: "block",
	}
}

func readSysString(name string) string {
	b, err := os.ReadFile(name)
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

// A loop device's identity is synthetic (its backing file's device and
// inode), so two loop devices over one file reached through two mounts
// report different WWIDs. Like file paths they then join one device only
// under an asserted wwid, checked by the backing file's label and by
// comparing sample blocks (see nmp.VerifySameStore).

var _ backends.Labeler = (*Device)(nil)

// backingFile is a loop device's backing file as sysfs names it.
func (d *Device) backingFile() (string, error) {
	if !d.loop {
		return "", backends.ErrLabelsUnsupported
	}
	bf := readSysString(filepath.Join(d.sys, "loop", "backing_file"))
	if bf == "" {
		return "", fmt.Errorf("loop device %s: %w", d.name, ErrGone)
	}
	// A backing file deleted while attached reads "/path (deleted)".
	return strings.TrimSuffix(bf, " (deleted)"), nil
}

// Label reads the label of a loop device's backing file. Other block
// devices carry no label (ErrLabelsUnsupported): their identity is their
// own.
func (d *Device) Label(ctx context.Context) (string, error) {
	if err := ctx.Err(); err != nil {
		return "", err
	}
	bf, err := d.backingFile()
	if err != nil {
		return "", err
	}
	return backends.ReadLabel(bf)
}

// SetLabel labels a loop device's backing file.
func (d *Device) SetLabel(ctx context.Context, wwid string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	bf, err := d.backingFile()
	if err != nil {
		return err
	}
	return backends.WriteLabel(bf, wwid)
}

// SyntheticIdentity reports whether an inquiry is one mpathfs made up
// from a file's device and inode (a file path, a loop device) rather than
// one the store reports: such identities differ between two mounts of one
// file.
func SyntheticIdentity(inq backends.Inquiry) bool {
	return inq.Transport == "file" || (inq.Transport == "block" && inq.Vendor == "LINUX" && inq.Model == "LOOP")
}
