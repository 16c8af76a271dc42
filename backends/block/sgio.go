package block

// SG_IO: SCSI commands through the block device's descriptor (the sd
// driver accepts them; no /dev/sg node is needed).

import (
	"context"
	"errors"
	"fmt"
	"os"
	"runtime"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/mpathfs/mpathfs/backends"
	"github.com/mpathfs/mpathfs/ioerr"
	"github.com/mpathfs/mpathfs/scsi"
)

const (
	sgIO            = 0x2285
	sgGetVersionNum = 0x2282

	sgDxferNone    = -1
	sgDxferToDev   = -2
	sgDxferFromDev = -3

	senseLen       = 64
	defaultTimeout = 30 * time.Second
)

// sgIOHdr is struct sg_io_hdr of <scsi/sg.h>, laid out for 64-bit Linux
// (88 bytes on amd64; a test checks).
type sgIOHdr struct {
	InterfaceID    int32          // 'S'
	DxferDirection int32          // SG_DXFER_*
	CmdLen         uint8          // CDB length
	MxSbLen        uint8          // sense buffer size
	IovecCount     uint16         // 0: dxferp is a buffer
	DxferLen       uint32         // data length
	Dxferp         unsafe.Pointer // data buffer
	Cmdp           unsafe.Pointer // CDB
	Sbp            unsafe.Pointer // sense buffer
	Timeout        uint32         // milliseconds
	Flags          uint32
	PackID         int32
	UsrPtr         unsafe.Pointer
	Status         uint8
	MaskedStatus   uint8
	MsgStatus      uint8
	SbLenWr        uint8 // sense bytes written
	HostStatus     uint16
	DriverStatus   uint16
	Resid          int32
	Duration       uint32
	Info           uint32
}

// sgVersion returns the SG driver version, or 0 if the descriptor does not
// take SCSI commands.
func (d *Device) sgVersion() int {
	var v int32
	err := d.control(func(fd int) error {
		_, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), sgGetVersionNum, uintptr(unsafe.Pointer(&v)))
		if e != 0 {
			return e
		}
		return nil
	})
	if err != nil {
		return 0
	}
	return int(v)
}

// sgExec runs one command. dir is sgDxferNone, sgDxferToDev or
// sgDxferFromDev; buf is the data. It returns the residual count and a
// classified error for SCSI failures, or a raw errno if SG_IO itself
// failed.
func (d *Device) sgExec(ctx context.Context, op string, cdb []byte, dir int32, buf []byte) (resid int, err error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	timeout := defaultTimeout
	if dl, ok := ctx.Deadline(); ok {
		timeout = max(time.Until(dl), time.Millisecond)
	}
	sense := make([]byte, senseLen)
	h := sgIOHdr{
		InterfaceID:    'S',
		DxferDirection: dir,
		CmdLen:         uint8(len(cdb)),
		MxSbLen:        senseLen,
		Cmdp:           unsafe.Pointer(&cdb[0]),
		Sbp:            unsafe.Pointer(&sense[0]),
		Timeout:        uint32(min(timeout, time.Hour) / time.Millisecond),
	}
	if len(buf) > 0 {
		h.DxferLen = uint32(len(buf))
		h.Dxferp = unsafe.Pointer(&buf[0])
	}
	err = d.control(func(fd int) error {
		_, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), sgIO, uintptr(unsafe.Pointer(&h)))
		if e != 0 {
			return e
		}
		return nil
	})
	runtime.KeepAlive(cdb)
	runtime.KeepAlive(sense)
	runtime.KeepAlive(buf)
	if err != nil {
		return 0, &os.PathError{Op: "SG_IO " + op, Path: d.name, Err: err}
	}
	r := SGResult{Status: h.Status, HostStatus: h.HostStatus, DriverStatus: h.DriverStatus, Sense: sense[:min(int(h.SbLenWr), senseLen)]}
	// masked_status is the status shifted right; some drivers set only it.
	if r.Status == 0 && h.MaskedStatus != 0 {
		r.Status = h.MaskedStatus << 1
	}
	if err := ResultError(op, r); err != nil {
		var me *ioerr.Error
		if errors.As(err, &me) {
			me.Path = d.name
		}
		return int(h.Resid), err
	}
	return int(h.Resid), nil
}

func (d *Device) testUnitReady(ctx context.Context) error {
	_, err := d.sgExec(ctx, "test unit ready", scsi.CDBTestUnitReady(), sgDxferNone, nil)
	return err
}

// inquiry runs INQUIRY and returns the bytes the target sent.
func (d *Device) inquiry(ctx context.Context, evpd bool, page byte) ([]byte, error) {
	buf := make([]byte, 252)
	for {
		resid, err := d.sgExec(ctx, fmt.Sprintf("inquiry 0x%02x", page), scsi.CDBInquiry(evpd, page, uint16(len(buf))), sgDxferFromDev, buf)
		if err != nil {
			return nil, err
		}
		got := buf[:len(buf)-max(0, min(resid, len(buf)))]
		if !evpd || len(got) < 4 {
			return got, nil
		}
		want := 4 + int(got[2])<<8 | int(got[3])
		if want <= len(buf) || len(buf) >= 0xffff {
			return got, nil
		}
		buf = make([]byte, min(want, 0xffff))
	}
}

func (d *Device) stdInquiry(ctx context.Context) (scsi.StdInquiry, error) {
	b, err := d.inquiry(ctx, false, 0)
	if err != nil {
		return scsi.StdInquiry{}, err
	}
	return scsi.ParseStdInquiry(b)
}

// sgIdentity reads the identity over SG_IO: standard INQUIRY, VPD 0x80 and
// VPD 0x83.
func (d *Device) sgIdentity(ctx context.Context) (backends.Inquiry, []scsi.Designator, error) {
	std, err := d.stdInquiry(ctx)
	if err != nil {
		return backends.Inquiry{}, nil, err
	}
	inq := backends.Inquiry{Vendor: std.Vendor, Model: std.Model, TPGS: std.TPGS, Transport: "block"}
	if b, err := d.inquiry(ctx, true, 0x80); err == nil {
		inq.Serial, _ = scsi.ParseVPD80(b)
	}
	b, err := d.inquiry(ctx, true, 0x83)
	if err != nil {
		return inq, nil, err
	}
	ds, err := scsi.ParseVPD83(b)
	if err != nil {
		return inq, nil, err
	}
	inq.WWID = scsi.WWIDFromDesignators(ds)
	return inq, ds, nil
}

// PortInfo reads the relative target port and target port group the path
// reaches from VPD page 0x83.
func (a *ALUADevice) PortInfo(ctx context.Context) (scsi.PortInfo, error) {
	_, ds, err := a.sgIdentity(ctx)
	if err != nil {
		return scsi.PortInfo{}, err
	}
	pi, ok := scsi.PortFromDesignators(ds)
	if !ok {
		return scsi.PortInfo{}, fmt.Errorf("%s: VPD 0x83 lacks the relative target port or target port group designator", a.name)
	}
	pi.TPGS = a.tpgs
	return pi, nil
}

// ReportTPGs sends REPORT TARGET PORT GROUPS, growing the allocation
// length until the response fits.
func (a *ALUADevice) ReportTPGs(ctx context.Context) ([]scsi.TPG, error) {
	n := 1024
	for {
		buf := make([]byte, n)
		resid, err := a.sgExec(ctx, "report target port groups", scsi.CDBReportTPGs(uint32(n)), sgDxferFromDev, buf)
		if err != nil {
			return nil, err
		}
		r, err := scsi.ParseRTPG(buf[:len(buf)-max(0, min(resid, len(buf)))])
		if errors.Is(err, scsi.ErrRTPGTruncated) && r.Length > n && n < 1<<20 {
			n = min(r.Length, 1<<20)
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("%s: %w", a.name, err)
		}
		out := make([]scsi.TPG, len(r.Groups))
		for i, g := range r.Groups {
			out[i] = g.TPG()
		}
		return out, nil
	}
}

// SetTPGs sends SET TARGET PORT GROUPS for the groups named.
func (a *ALUADevice) SetTPGs(ctx context.Context, states map[uint16]scsi.State) error {
	if len(states) == 0 {
		return nil
	}
	p := scsi.STPGParams(states)
	_, err := a.sgExec(ctx, "set target port groups", scsi.CDBSetTPGs(uint32(len(p))), sgDxferToDev, p)
	return err
}

// Host status values of sg_io_hdr that mean "try again", not "path dead",
// and the driver status bit that only says sense data is there.
const (
	didBusBusy     = 0x02
	didSoftError   = 0x0b
	didImmRetry    = 0x0c
	didRequeue     = 0x0d
	driverSenseBit = 0x08
)

// SGResult is the outcome of one SG_IO command, as the sg_io_hdr reports it.
type SGResult struct {
	Status       uint8
	HostStatus   uint16
	DriverStatus uint16
	Sense        []byte
}

// ResultError turns an SG_IO outcome into nil or a classified error for op:
// the Linux host and driver status first (a transport's verdict), then the
// SCSI status and sense data, judged by scsi.StatusError.
func ResultError(op string, r SGResult) error {
	if r.HostStatus != 0 {
		c := ioerr.ClassPathFailure
		switch r.HostStatus {
		case didBusBusy, didSoftError, didImmRetry, didRequeue:
			c = ioerr.ClassRetryable
		}
		return ioerr.NewError(c, op, fmt.Errorf("SCSI host status 0x%02x", r.HostStatus))
	}
	err := scsi.StatusError(op, scsi.Status(r.Status), r.Sense)
	if err == nil && r.Status != uint8(scsi.StatusCheckCondition) && r.DriverStatus&^driverSenseBit != 0 {
		return ioerr.NewError(ioerr.ClassPathFailure, op, fmt.Errorf("SCSI driver status 0x%02x", r.DriverStatus))
	}
	return err
}
