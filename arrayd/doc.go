// Package arrayd is the simulated array as its own server: `mpathfs array
// serve` reads an array's description (Config: target name, logical units
// on file-backed stores, controllers whose ports are iSCSI portals, the
// ALUA mode, CHAP users, a persistence directory), builds the array's ALUA
// core and logical units (package array), serves them over iSCSI (package
// iscsi) on every port's portal, and answers its own control socket (the
// control package's socket: mode 0600, SO_PEERCRED checked), through which
// the `mpathfs array …` commands read status and fail controllers, move
// ownership, take ports offline, drop sessions and inject faults at the
// array.
//
// The package sits above array and iscsi (and beside control, whose socket
// it reuses); only cmd/mpathfs imports it.
package arrayd
