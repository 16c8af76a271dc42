// Package iscsipath is the iscsi:// path transport: a backends.Backend over
// one session of mpathfs's own iSCSI initiator (package iscsi). It turns
// block I/O into SCSI commands (READ/WRITE 16, SYNCHRONIZE CACHE, UNMAP,
// WRITE SAME, TEST UNIT READY, INQUIRY), SCSI status and sense into the
// error taxonomy (package ioerr, through scsi.ClassifySense), reads the
// LU's identity from VPD page 0x83, and drives ALUA (REPORT and SET TARGET
// PORT GROUPS) and persistent reservations for the SATPs and the host.
//
// URI form:
//
//	iscsi://HOST[:PORT]/TARGET-IQN/LUN?initiator=IQN&chap_user=U&chap_secret=S
//	    &mutual_user=U&mutual_secret=S&header_digest=crc32c&data_digest=crc32c
//	    &isid=HEX12&timeout=DUR&login_timeout=DUR&max_xfer=BYTES
//
// An ambiguous write (a deadline passed, or the connection broke, while a
// command that changes the medium was outstanding) fails with a
// backends.Pending that the session settles the SCSI way: ABORT TASK
// answered, LUN RESET answered, or the session reinstated (a new login with
// the same ISID, which makes the target abort the old session's tasks).
//
// It sits on floor 5 beside package iscsi, not under backends/: the
// transports of floor 3 may not import the iSCSI protocol package.
package iscsipath
