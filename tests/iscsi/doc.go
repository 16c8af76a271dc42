// Package iscsiconf proves the array server with clients nobody here wrote:
// libiscsi's conformance suite iscsi-test-cu runs, family by family,
// against `mpathfs array serve` (two portals for MultipathIO) and against
// Debian's tgt as the peer, both started by the test on free ports of
// 127.0.0.1 and stopped by PID. A test of a family that fails against
// array serve fails the run unless allow-list.txt lists it with its
// reason; tgt's results are reported beside ours, never judged. In CI (CI
// set) a missing tool fails the test; elsewhere it skips with the reason.
//
// The package has only tests; this file carries its doc comment.
package iscsiconf
