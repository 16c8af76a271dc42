package array

import (
	"encoding/binary"

	"github.com/mpathfs/mpathfs/scsi"
)

// TransferLength tells the transport how many bytes a command transfers
// by its CDB (the SCSI transfer length), so it can report residuals
// exactly: the blocks of READ, WRITE and VERIFY (with BYTCHK), one block
// for WRITE SAME (none with NDOB), both instances of COMPARE AND WRITE, and
// the parameter list length of UNMAP, MODE SELECT, PERSISTENT RESERVE OUT
// and SET TARGET PORT GROUPS. ok is false for the commands whose data-in
// length only the response tells, and for an unknown LUN or a malformed
// CDB.
func (h *Handler) TransferLength(_ scsi.Nexus, lun uint64, cdb []byte) (int, bool) {
	l := h.lu(lun)
	if l == nil || len(cdb) == 0 {
		return 0, false
	}
	if n := scsi.CDBLength(cdb[0]); n == 0 || len(cdb) < n {
		return 0, false
	}
	bs := uint64(l.bs)
	blocks := func(n uint64) (int, bool) {
		if n*bs > maxTransferBytes*4 {
			return 0, false // the command fails on its own; let the transport not guess
		}
		return int(n * bs), true
	}
	switch cdb[0] {
	case scsi.OpRead6, scsi.OpRead10, scsi.OpRead12, scsi.OpRead16,
		scsi.OpWrite6, scsi.OpWrite10, scsi.OpWrite12, scsi.OpWrite16:
		return blocks(parseRW(cdb).blocks)
	case scsi.OpVerify10, scsi.OpVerify12, scsi.OpVerify16:
		r := parseRW(cdb)
		if r.bytchk == 0 {
			return 0, true
		}
		return blocks(r.blocks)
	case scsi.OpWriteSame10:
		return int(bs), true
	case scsi.OpWriteSame16:
		if cdb[1]&0x01 != 0 {
			return 0, true
		}
		return int(bs), true
	case scsi.OpCompareAndWrite:
		if cdb[13] == 0 {
			return 0, false // let the data the initiator sent through: it is an error the LU reports
		}
		return blocks(2 * uint64(cdb[13]))
	case scsi.OpUnmap, scsi.OpModeSelect10:
		return int(binary.BigEndian.Uint16(cdb[7:])), true
	case scsi.OpModeSelect6:
		return int(cdb[4]), true
	case scsi.OpPersistentReserveOut:
		return int(binary.BigEndian.Uint32(cdb[5:])), true
	case scsi.OpMaintenanceOut:
		if cdb[1]&0x1f == scsi.OpTargetPortGroupsSA {
			return int(binary.BigEndian.Uint32(cdb[6:])), true
		}
	case scsi.OpTestUnitReady, scsi.OpSynchronizeCache10, scsi.OpSynchronizeCache16,
		scsi.OpReserve6, scsi.OpRelease6, scsi.OpReserve10, scsi.OpRelease10, scsi.OpStartStopUnit:
		return 0, true
	}
	return 0, false
}

// HasLUN reports whether the handler has logical unit lun (for every
// nexus: LUNs is the same for all); iscsi.LUNHaver.
func (h *Handler) HasLUN(_ scsi.Nexus, lun uint64) bool { return h.lu(lun) != nil }

// inliner is a store whose system calls never wait for a device (a file
// in memory: backends.File reports it).
type inliner interface{ Inline() bool }

// Quick tells the transport that Execute of cmd returns at memory speed:
// it waits for no device, no fault rule, no interconnect penalty and no
// other command, so the transport may run it on the goroutine that read
// it instead of handing it to one of its own (iscsi.QuickHandler). That
// holds for READ and WRITE (6, 10, 12, 16) on a LU whose store is in
// memory, through an active/optimized port (or a non-optimized one without
// a penalty), while no fault rule is armed. Anything else may wait, and
// must stay abortable while it does.
func (h *Handler) Quick(n scsi.Nexus, cmd *scsi.Command) bool {
	if len(cmd.CDB) == 0 {
		return false
	}
	switch cmd.CDB[0] {
	case scsi.OpRead6, scsi.OpRead10, scsi.OpRead12, scsi.OpRead16,
		scsi.OpWrite6, scsi.OpWrite10, scsi.OpWrite12, scsi.OpWrite16:
	default:
		return false
	}
	l := h.lu(cmd.LUN)
	if l == nil {
		return false
	}
	if st, ok := l.store.(inliner); !ok || !st.Inline() {
		return false
	}
	h.faults.mu.Lock()
	armed := len(h.faults.rules) > 0
	h.faults.mu.Unlock()
	if armed {
		return false
	}
	switch h.port(n.TargetPort).state {
	case scsi.ActiveOptimized:
		return true
	case scsi.ActiveNonOptimized:
		c := h.arr.cfg
		return c.ANOLatency == 0 && c.ANOBandwidth == 0
	}
	return false
}
