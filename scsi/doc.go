// Package scsi is the SCSI vocabulary the project shares: command
// descriptor blocks (builders and parsers), sense data (one decoding table),
// INQUIRY and VPD pages, ALUA states and target port group descriptors
// (REPORT/SET TARGET PORT GROUPS), persistent-reservation parameter lists, and
// the contract between a SCSI transport's target side (iSCSI) and the logical
// units that execute commands (the simulated array). It imports only the
// error taxonomy (ioerr) of this module: the block backend, the ALUA SATP,
// the array and the iSCSI initiator and target all build on it.
package scsi
