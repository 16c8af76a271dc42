package array

import (
	"context"
	"errors"
	"time"

	"github.com/mpathfs/mpathfs/backends"
	"github.com/mpathfs/mpathfs/ioerr"
	"github.com/mpathfs/mpathfs/scsi"
)

// portView is what a command's target port reports from the ALUA core.
type portView struct {
	tpg   uint16
	state scsi.State
	// gen changes whenever any group's state changes: every I_T nexus
	// then gets one unit attention 2A/06.
	gen uint64
	// ap: an active/passive array (standby answers 02/04/03).
	ap bool
	// autoTrespass: ap with trespass_on_io.
	autoTrespass bool
}

// port reads a target port's access state. Without an array, or for a
// port the array does not know, the port is active/optimized in group 0.
func (h *Handler) port(id uint16) portView {
	if h.arr == nil {
		return portView{}
	}
	var v portView
	h.arr.locked(func(c *Core, _ time.Time) error {
		v = viewOf(c, id)
		return nil
	})
	return v
}

// viewOf reads port id's view from the core; the caller holds the lock.
func viewOf(c *Core, id uint16) portView {
	var v portView
	acc, ok := c.Port(id)
	if !ok {
		return v
	}
	v.tpg, v.state = acc.TPG, acc.State
	if !acc.Up {
		v.state = scsi.Offline
	}
	for _, t := range c.tpgs {
		v.gen += t.gen
	}
	v.ap = c.cfg.Mode == ModeAP
	v.autoTrespass = v.ap && c.cfg.TrespassOnIO
	return v
}

// tpgsField is the INQUIRY TPGS field.
func (h *Handler) tpgsField() int {
	if h.arr == nil {
		return 0
	}
	return h.arr.Config().TPGS()
}

// reportTPGs is REPORT TARGET PORT GROUPS' content.
func (h *Handler) reportTPGs() []scsi.TPG {
	var out []scsi.TPG
	h.arr.locked(func(c *Core, _ time.Time) error { out = c.Report(); return nil })
	return out
}

// transitionSeconds is the implicit transition time RTPG's extended
// header reports.
func (h *Handler) transitionSeconds() int {
	s := int((h.arr.Config().Transition + time.Second - 1) / time.Second)
	if s > 255 {
		s = 255
	}
	return s
}

// setTPGs is SET TARGET PORT GROUPS; a request the core refuses is
// INVALID FIELD IN PARAMETER LIST.
func (h *Handler) setTPGs(states map[uint16]scsi.State) (refused bool, err error) {
	err = h.arr.locked(func(c *Core, now time.Time) error { return c.SetTPGs(states, now) })
	var r *refusal
	return errors.As(err, &r), err
}

// trespassOnIO is an auto-trespass array's answer to a command through
// a passive port: a data command moves the LU to the port's controller
// first (it reports whether it did); every other command (TEST UNIT READY,
// READ CAPACITY, INQUIRY …) runs as through an active port. Other arrays
// are left to aluaGate.
func (h *Handler) trespassOnIO(port uint16, v portView, op byte) (portView, bool) {
	if !v.autoTrespass || v.state != scsi.Standby {
		return v, false
	}
	if !isDataOp(op) {
		v.state = scsi.ActiveOptimized // TEST UNIT READY, READ CAPACITY …: the LU answers on every port
		return v, false
	}
	// The move and the view the command runs under are one step under
	// the array's lock: the command was admitted by the controller that
	// owns the LU at that instant, even if another host's I/O moves the
	// LU away again before it runs (a real array serializes the two the
	// same way), so it never meets its own port passive after all.
	moved := v
	err := h.arr.locked(func(c *Core, now time.Time) error {
		if err := c.Trespass(port, now); err != nil {
			return err
		}
		moved = viewOf(c, port)
		return nil
	})
	if err != nil {
		return v, false
	}
	return moved, true
}

// aluaGate decides whether cmd may run through a port in state v:
// not-ready sense for the commands SPC-4 5.16.2.4 does not allow in
// standby, unavailable, transitioning or offline; nil to go on. Through
// an active/non-optimized port it waits out the interconnect penalty.
func (h *Handler) aluaGate(ctx context.Context, v portView, op byte, sa byte, n int) *ioerr.Sense {
	switch v.state {
	case scsi.ActiveOptimized:
		return nil
	case scsi.ActiveNonOptimized:
		if h.arr != nil && isDataOp(op) {
			_ = backends.Sleep(ctx, h.arr.penalty(n))
		}
		return nil
	}
	if allowedIn(v.state, op, sa) {
		return nil
	}
	var s ioerr.Sense
	switch v.state {
	case scsi.Standby:
		s = ioerr.SenseALUAStandby
		if v.ap {
			s = SensePassive
		}
	case scsi.Unavailable:
		s = ioerr.SenseALUAUnavailable
	case scsi.Transitioning:
		s = ioerr.SenseALUATransitioning
	default: // offline
		s = senseALUAOffline
	}
	return &s
}

// senseALUAOffline: LU not accessible, target port in offline state... as
// LIO and SPC-4's table of ASCs name it: 02/04/12 (logical unit not ready,
// offline).
var senseALUAOffline = ioerr.Sense{Key: ioerr.SenseNotReady, ASC: 0x04, ASCQ: 0x12}

// allowedIn lists the commands SPC-4 (5.16.2.4.4 to .6) lets through a
// port that is not active: standby allows the reporting and reservation
// commands and mode pages; unavailable and transitioning only the
// reporting ones (transitioning not STPG).
func allowedIn(st scsi.State, op, sa byte) bool {
	switch op {
	case scsi.OpInquiry, scsi.OpReportLUNs, scsi.OpRequestSense:
		return true
	case scsi.OpMaintenanceIn:
		return true // RTPG, REPORT SUPPORTED OPERATION CODES / TMFs
	case scsi.OpMaintenanceOut:
		return sa == scsi.OpTargetPortGroupsSA && st != scsi.Transitioning && st != scsi.Offline
	case scsi.OpModeSense6, scsi.OpModeSense10, scsi.OpModeSelect6, scsi.OpModeSelect10,
		scsi.OpPersistentReserveIn, scsi.OpPersistentReserveOut, scsi.OpReadBuffer10, scsi.OpWriteBuffer10:
		return st == scsi.Standby
	}
	return false
}

func isDataOp(op byte) bool {
	switch op {
	case scsi.OpRead6, scsi.OpRead10, scsi.OpRead12, scsi.OpRead16,
		scsi.OpWrite6, scsi.OpWrite10, scsi.OpWrite12, scsi.OpWrite16,
		scsi.OpWriteSame10, scsi.OpWriteSame16, scsi.OpCompareAndWrite, scsi.OpUnmap,
		scsi.OpSynchronizeCache10, scsi.OpSynchronizeCache16,
		scsi.OpVerify10, scsi.OpVerify12, scsi.OpVerify16:
		return true
	}
	return false
}
