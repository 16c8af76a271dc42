package mpath

import "time"

// Sharing modes of a device's store (`mount --multi-writer`).
const (
	// ShareExclusive: one host at a time opens the store (the default).
	ShareExclusive = "exclusive"
	// ShareMultiWriter: up to MaxWriters hosts share the store.
	ShareMultiWriter = "multi-writer"
)

// MaxWriters is how many hosts share a store in multi-writer mode, VMFS's
// limit for a multi-writer disk.
const MaxWriters = 8

// Sharing is how a device shares its store with other hosts, as `status
// --json` shows it.
type Sharing struct {
	// Mode is ShareExclusive or ShareMultiWriter.
	Mode string `json:"mode"`
	// Holders are the hosts holding the device's stores now, this one
	// (Self) included.
	Holders []ShareHolder `json:"holders"`
	// Unlocked lists the paths whose store no lock covers, and why (an
	// NBD export, an iSCSI LU with lock_sector: none or whose last block
	// holds data).
	Unlocked []string `json:"unlocked,omitempty"`
	// LULock is the state of the lock in the device's array LU (its last
	// block): "held" or "lost"; empty when the device keeps none.
	LULock string `json:"lu_lock,omitempty"`
	// LockLost says when and why the LU lock was lost: the device refuses
	// writes, discards and flushes (ENOLCK) until it is mounted again.
	LockLost *LockLost `json:"lock_lost,omitempty"`
}

// LockLost is a lost LU lock, as status shows it.
type LockLost struct {
	Since time.Time `json:"since"`
	// Reason says how it was lost and how to recover.
	Reason string `json:"reason"`
	// Holder is the entry that stands in the record instead of this
	// host's, if any.
	Holder *ShareHolder `json:"holder,omitempty"`
}

// ShareHolder is one host holding a store: what it recorded beside its
// lock when it took it.
type ShareHolder struct {
	Host       string `json:"host"`
	PID        int    `json:"pid"`
	Mountpoint string `json:"mountpoint,omitempty"`
	Device     string `json:"device"`
	Mode       string `json:"mode"`
	// Slot is the writer slot (1..MaxWriters) of a multi-writer holder,
	// 0 for the exclusive one.
	Slot  int       `json:"slot"`
	Since time.Time `json:"since"`
	// Store is the file or device node the lock is on.
	Store string `json:"store,omitempty"`
	// Self: the holder is this mount's device.
	Self bool `json:"self,omitempty"`
	// Unknown: the lock is held but no record of its holder was found
	// (being written, or the store keeps none).
	Unknown bool `json:"unknown,omitempty"`
}
