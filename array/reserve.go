package array

import (
	"github.com/mpathfs/mpathfs/scsi"
)

// SCSI-2 reservations (RESERVE/RELEASE 6 and 10, SPC-2 7.21, 7.13): one
// I_T nexus holds the whole LU; every other nexus meets RESERVATION
// CONFLICT except for INQUIRY, REPORT LUNS, REQUEST SENSE, RELEASE and the
// MAINTENANCE IN reports. The reservation is released by RELEASE from its
// holder, a LUN or target reset, an I_T nexus reset and the nexus's loss.
// With a persistent reservation in place they behave as SPC-4 5.12.3
// (compatible reservation handling) says: RESERVE succeeds without effect
// for the persistent reservation holder and conflicts for everyone else;
// RELEASE succeeds without effect for a registrant and conflicts otherwise.

// scsi2Conflict reports whether a SCSI-2 reservation of another nexus
// blocks the command. l.mu is held.
func (l *lu) scsi2Conflict(n scsi.Nexus, op, sa byte) bool {
	if l.res2 == nil || *l.res2 == n {
		return false
	}
	switch op {
	case scsi.OpInquiry, scsi.OpReportLUNs, scsi.OpRequestSense, scsi.OpRelease6, scsi.OpRelease10, scsi.OpMaintenanceIn:
		return false
	}
	return true
}

func (l *lu) reserve(cmd *scsi.Command) scsi.Response {
	cdb := cmd.CDB
	if cdb[0] == scsi.OpReserve10 && cdb[1]&0x12 != 0 {
		return checkCDB(1, 4) // third-party and long-id reservations are not supported
	}
	if cdb[0] == scsi.OpReserve6 && cdb[1]&0x01 != 0 {
		return checkCDB(1, 0) // extents (obsolete)
	}
	l.gate.Lock()
	defer l.gate.Unlock()
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.pr.res != nil {
		if l.pr.holds(cmd.Nexus) {
			return good(nil)
		}
		return conflict()
	}
	if l.res2 != nil && *l.res2 != cmd.Nexus {
		return conflict()
	}
	n := cmd.Nexus
	l.res2 = &n
	return good(nil)
}

func (l *lu) release(cmd *scsi.Command) scsi.Response {
	cdb := cmd.CDB
	if cdb[0] == scsi.OpRelease10 && cdb[1]&0x12 != 0 {
		return checkCDB(1, 4)
	}
	l.gate.Lock()
	defer l.gate.Unlock()
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.pr.res != nil {
		if l.pr.find(cmd.Nexus) != nil {
			return good(nil)
		}
		return conflict()
	}
	if l.res2 != nil && *l.res2 == cmd.Nexus {
		l.res2 = nil
	}
	return good(nil)
}
