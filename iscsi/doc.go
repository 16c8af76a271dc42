// Package iscsi speaks iSCSI (RFC 7143): the PDU codec (basic header
// segments of every opcode, additional header segments, data segments with
// their padding, CRC32C header and data digests), the text key=value codec
// and login/operational negotiation shared by both sides, and the target: a
// Target serves the logical units behind a scsi.Handler on any number of
// portals, with login (no authentication or CHAP), full-feature-phase
// command, data and R2T sequencing, task management and session
// reinstatement.
//
// The package sits above the SCSI vocabulary (scsi) and the error taxonomy
// (ioerr) and below the array and the host: it never imports what executes
// the commands.
package iscsi
