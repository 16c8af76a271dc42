// Package e2e drives the real mpathfs binary: a real FUSE mount, real fio,
// real loop devices and ext4, real NBD servers. TestMain builds the binary
// from the work tree the tests run in (see harness_test.go). In CI (CI set)
// a missing tool fails the test; elsewhere it skips with the reason.
//
// The package has only tests; this file carries its doc comment.
package e2e
