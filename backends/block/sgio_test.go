package block

import (
	"testing"
	"unsafe"

	"github.com/mpathfs/mpathfs/ioerr"
	"github.com/mpathfs/mpathfs/scsi"
)

func TestSGIOHdrLayout(t *testing.T) {
	if unsafe.Sizeof(uintptr(0)) != 8 {
		t.Skip("the sg_io_hdr layout is checked on 64-bit platforms")
	}
	var h sgIOHdr
	if got := unsafe.Sizeof(h); got != 88 {
		t.Fatalf("sizeof(sg_io_hdr) = %d, want 88", got)
	}
	for _, c := range []struct {
		name string
		got  uintptr
		want uintptr
	}{
		{"dxfer_direction", unsafe.Offsetof(h.DxferDirection), 4},
		{"cmd_len", unsafe.Offsetof(h.CmdLen), 8},
		{"dxfer_len", unsafe.Offsetof(h.DxferLen), 12},
		{"dxferp", unsafe.Offsetof(h.Dxferp), 16},
		{"cmdp", unsafe.Offsetof(h.Cmdp), 24},
		{"sbp", unsafe.Offsetof(h.Sbp), 32},
		{"timeout", unsafe.Offsetof(h.Timeout), 40},
		{"pack_id", unsafe.Offsetof(h.PackID), 48},
		{"usr_ptr", unsafe.Offsetof(h.UsrPtr), 56},
		{"status", unsafe.Offsetof(h.Status), 64},
		{"sb_len_wr", unsafe.Offsetof(h.SbLenWr), 67},
		{"host_status", unsafe.Offsetof(h.HostStatus), 68},
		{"driver_status", unsafe.Offsetof(h.DriverStatus), 70},
		{"resid", unsafe.Offsetof(h.Resid), 72},
		{"duration", unsafe.Offsetof(h.Duration), 76},
		{"info", unsafe.Offsetof(h.Info), 80},
	} {
		if c.got != c.want {
			t.Errorf("offsetof(%s) = %d, want %d", c.name, c.got, c.want)
		}
	}
}

// fixedSense builds 18 bytes of fixed-format sense data.
func fixedSense(code, key, asc, ascq byte) []byte {
	b := make([]byte, 18)
	b[0], b[2], b[7], b[12], b[13] = code, key, 10, asc, ascq
	return b
}

func descSense(code, key, asc, ascq byte) []byte {
	return []byte{code, key, asc, ascq, 0, 0, 0, 0}
}

func TestResultError(t *testing.T) {
	for _, c := range []struct {
		name  string
		r     SGResult
		want  ioerr.Class
		sense *ioerr.Sense
	}{
		{"good", SGResult{}, ioerr.ClassNone, nil},
		{"good with sense flag", SGResult{DriverStatus: driverSenseBit}, ioerr.ClassNone, nil},
		{"no connect", SGResult{HostStatus: 0x01}, ioerr.ClassPathFailure, nil},
		{"timeout", SGResult{HostStatus: 0x03}, ioerr.ClassPathFailure, nil},
		{"bus busy", SGResult{HostStatus: 0x02}, ioerr.ClassRetryable, nil},
		{"driver timeout", SGResult{DriverStatus: 0x06}, ioerr.ClassPathFailure, nil},
		{"busy", SGResult{Status: uint8(scsi.StatusBusy)}, ioerr.ClassRetryable, nil},
		{"task set full", SGResult{Status: uint8(scsi.StatusTaskSetFull)}, ioerr.ClassRetryable, nil},
		{"reservation conflict", SGResult{Status: uint8(scsi.StatusReservationConflict)}, ioerr.ClassConflict, nil},
		{"transitioning", SGResult{Status: uint8(scsi.StatusCheckCondition), DriverStatus: driverSenseBit, Sense: fixedSense(0x70, 2, 4, 0x0a)}, ioerr.ClassRetryable, &ioerr.SenseALUATransitioning},
		{"standby", SGResult{Status: uint8(scsi.StatusCheckCondition), Sense: descSense(0x72, 2, 4, 0x0b)}, ioerr.ClassNotReady, &ioerr.SenseALUAStandby},
		{"recovered", SGResult{Status: uint8(scsi.StatusCheckCondition), Sense: fixedSense(0x70, 1, 0x17, 0)}, ioerr.ClassNone, nil},
		{"check condition without sense", SGResult{Status: uint8(scsi.StatusCheckCondition)}, ioerr.ClassPathFailure, nil},
	} {
		err := ResultError("read", c.r)
		if got := ioerr.ClassOf(err); got != c.want || (err == nil) != (c.want == ioerr.ClassNone) {
			t.Errorf("%s: %v (class %v), want class %v", c.name, err, got, c.want)
		}
		s, ok := ioerr.SenseOf(err)
		if (c.sense != nil) != ok || (ok && s != *c.sense) {
			t.Errorf("%s: sense %v %v, want %v", c.name, s, ok, c.sense)
		}
	}
}
