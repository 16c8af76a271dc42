package host

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/mpathfs/mpathfs/backends"
	"github.com/mpathfs/mpathfs/ioerr"
	"github.com/mpathfs/mpathfs/mpath"
	"github.com/mpathfs/mpathfs/scsi"
)

// shareMode is the sharing mode a device config asks for.
func (d DeviceConfig) shareMode() string {
	if d.MultiWriter {
		return mpath.ShareMultiWriter
	}
	return mpath.ShareExclusive
}

// holderName is the name a holder record gives this host: its --host
// name, else the machine's.
func (h *Host) holderName() string {
	if h.name != "" {
		return h.name
	}
	n, err := os.Hostname()
	if err != nil || n == "" {
		return "unknown"
	}
	return n
}

// lockStores locks the stores of a device's paths (share.go), publishing
// lock-taken for each lock, lock-none for each path no lock covers and
// lock-refused when another host holds a store; on a refusal it releases
// what it took.
func (h *Host) lockStores(dc DeviceConfig, open []opened) (*shareLock, error) {
	s := newShareLock(mpath.ShareHolder{Host: h.holderName(), PID: os.Getpid(), Mountpoint: h.mountpoint, Device: dc.Name, Mode: dc.shareMode()})
	for _, o := range open {
		if dc.locksLU() && isISCSI(o.uri) {
			continue // lockLU locks the LU
		}
		if _, err := h.lockStore(s, dc.Name, o.uri); err != nil {
			s.release()
			return nil, err
		}
	}
	return s, nil
}

// lockStore locks one path's store for a device: the lock it took (nil if
// none: the device holds the store already, or no lock covers it).
func (h *Host) lockStore(s *shareLock, device, uri string) (*storeLock, error) {
	sl, none, err := s.add(uri)
	now := time.Now()
	var se *ShareError
	switch {
	case errors.As(err, &se):
		h.publish(mpath.Event{Time: now, Kind: "lock-refused", Device: device, Reason: err.Error()})
		return nil, err
	case err != nil:
		return nil, fmt.Errorf("device %s: %v", device, err)
	case sl != nil:
		h.publish(mpath.Event{Time: now, Kind: "lock-taken", Device: device, To: s.me.Mode, Reason: sl.describe(s.me.Mode)})
	case none != "":
		h.publish(mpath.Event{Time: now, Kind: "lock-none", Device: device, Reason: none})
	}
	return sl, nil
}

// Sharing is how a device shares its store with other hosts: its mode,
// the holders of its stores and the paths no lock covers (nil for a
// device adopted from elsewhere).
func (h *Host) Sharing(device string) (*mpath.Sharing, error) {
	m, err := h.member(device)
	if err != nil {
		return nil, err
	}
	if m.share == nil {
		return nil, nil
	}
	return m.share.status(), nil
}

func isISCSI(uri string) bool {
	u, err := backends.ParseURI(uri)
	return err == nil && u.Scheme == "iscsi"
}

// lockSector is the device's lock_sector: auto, last or none.
func (d DeviceConfig) lockSector() string {
	if d.LockSector == "" {
		return LockSectorAuto
	}
	return d.LockSector
}

// locksLU says whether the device locks its array LU (lockLU).
func (d DeviceConfig) locksLU() bool { return d.lockSector() != LockSectorNone }

// lockLU takes the device's entry in its LU's lock record (lock_sector:
// auto or last) through its iSCSI paths. With auto, an LU whose last
// block holds data (or that refuses COMPARE AND WRITE) is served unlocked
// at full size: the iSCSI paths are listed as unlocked, lock-none is
// published and mount warns (LockWarnings).
func (h *Host) lockLU(ctx context.Context, s *shareLock, dc DeviceConfig, open []opened) error {
	var paths []atsBackend
	var uris []string
	store := ""
	for _, o := range open {
		if !isISCSI(o.uri) {
			continue
		}
		uris = append(uris, o.uri)
		if a, ok := backends.As[atsBackend](o.raw); ok {
			paths = append(paths, a)
			if store == "" {
				store = strings.SplitN(o.uri, "?", 2)[0]
			}
		}
	}
	auto := dc.lockSector() == LockSectorAuto
	if auto && len(uris) == 0 {
		return nil // no array LU to lock
	}
	unlocked := func(why string) error {
		if store == "" {
			store = strings.SplitN(uris[0], "?", 2)[0]
		}
		msg := fmt.Sprintf("device %s: LU %s is not locked: %s; it is served unlocked at its full size, and other hosts are not kept off it. To insist on the lock, mount with --lock-sector last (lock_sector: last), which refuses this LU until its last block is free; to mount it unlocked without this warning, --lock-sector none", dc.Name, store, why)
		s.mu.Lock()
		for _, u := range uris {
			s.unlocked = append(s.unlocked, u+": lock_sector auto: "+why)
		}
		s.warnings = append(s.warnings, msg)
		s.mu.Unlock()
		h.publish(mpath.Event{Time: time.Now(), Kind: "lock-none", Device: dc.Name, Reason: msg})
		return nil
	}
	if auto && len(paths) == 0 {
		return unlocked("its paths cannot send COMPARE AND WRITE")
	}
	a, err := newATSLock(s.me, paths, h.publish)
	if err != nil {
		return fmt.Errorf("device %s: %v", dc.Name, err)
	}
	a.me.Mountpoint = h.mountpoint
	actx, cancel := context.WithTimeout(ctx, h.openTimeout)
	defer cancel()
	err = a.acquire(actx, store)
	var se *ShareError
	switch {
	case errors.As(err, &se):
		h.publish(mpath.Event{Time: time.Now(), Kind: "lock-refused", Device: dc.Name, Reason: err.Error()})
		return err
	case auto && errors.Is(err, errLockBlockData):
		return unlocked("its last block holds data, not an mpathfs lock record (a file system or partition table may end there)")
	case auto && errors.Is(err, errNoATS):
		return unlocked(err.Error())
	case err != nil:
		return fmt.Errorf("device %s: the lock on LU %s: %v", dc.Name, store, err)
	}
	s.mu.Lock()
	s.ats, s.atsStore = a, store
	s.mu.Unlock()
	h.publish(mpath.Event{Time: time.Now(), Kind: "lock-taken", Device: dc.Name, To: s.me.Mode, Reason: a.describe()})
	return nil
}

// LockWarnings are what the devices' locks have to say on mount's
// stderr: an LU lock_sector auto left unlocked, and why.
func (h *Host) LockWarnings() []string {
	h.mu.RLock()
	defer h.mu.RUnlock()
	var out []string
	for _, m := range h.members {
		if m.share != nil {
			m.share.mu.Lock()
			out = append(out, m.share.warnings...)
			m.share.mu.Unlock()
		}
	}
	return out
}

// LockLosses counts, per device that keeps a lock in its array LU, how
// often the lock was lost (0 or 1: a lost lock stays lost), for the
// metrics.
func (h *Host) LockLosses() map[string]uint64 {
	h.mu.RLock()
	defer h.mu.RUnlock()
	out := map[string]uint64{}
	for _, m := range h.members {
		if m.share == nil || m.share.ats == nil {
			continue
		}
		n := uint64(0)
		if m.share.ats.lostErr() != nil {
			n = 1
		}
		out[m.dev.Name()] = n
	}
	return out
}

// served is what a member serves: the device, or the integrity checker in
// front of it, behind the fence of its LU lock if it keeps one.
func (m *member) served() IO {
	var io IO = m.dev
	if m.oracle != nil {
		io = m.oracle
	}
	if m.share == nil || m.share.ats == nil {
		return io
	}
	f := &fenced{IO: io, lock: m.share.ats}
	if r, ok := io.(reserver); ok {
		return &fencedPR{f, r}
	}
	return f
}

// fenced refuses writes, discards, zeroing and flushes once the device's
// LU lock is lost (LockLostError, ENOLCK); reads go on.
type fenced struct {
	IO
	lock *atsLock
}

func (f *fenced) refuse(op string) error {
	if err := f.lock.check(); err != nil {
		return &ioerr.Error{Class: ioerr.ClassDeviceError, Op: op, Err: err}
	}
	return nil
}

// run runs a write-like operation bound to the lock (atsLock.bind).
func (f *fenced) run(ctx context.Context, op string, do func(context.Context) error) error {
	if err := f.refuse(op); err != nil {
		return err
	}
	c, done := f.lock.bind(ctx)
	if err := done(do(c)); err != nil {
		var lost *LockLostError
		if errors.As(err, &lost) {
			return &ioerr.Error{Class: ioerr.ClassDeviceError, Op: op, Err: lost}
		}
		return err
	}
	return nil
}

func (f *fenced) WriteAt(ctx context.Context, p []byte, off int64) (n int, err error) {
	err = f.run(ctx, "write", func(c context.Context) error {
		n, err = f.IO.WriteAt(c, p, off)
		return err
	})
	return n, err
}

func (f *fenced) Flush(ctx context.Context) error {
	return f.run(ctx, "flush", f.IO.Flush)
}

func (f *fenced) Discard(ctx context.Context, off, length int64) error {
	return f.run(ctx, "discard", func(c context.Context) error { return f.IO.Discard(c, off, length) })
}

func (f *fenced) WriteZeroes(ctx context.Context, off, length int64) error {
	return f.run(ctx, "write-zeroes", func(c context.Context) error { return f.IO.WriteZeroes(c, off, length) })
}

// Detached passes the device's detached state on (fusedev.Detacher).
func (f *fenced) Detached() bool {
	d, ok := f.IO.(interface{ Detached() bool })
	return ok && d.Detached()
}

// reserver is fusedev.Reserver: the persistent-reservation ioctls.
type reserver interface {
	PRRegister(ctx context.Context, oldKey, newKey uint64, ignore bool) error
	PRReserve(ctx context.Context, key uint64, typ scsi.PRType) error
	PRRelease(ctx context.Context, key uint64, typ scsi.PRType) error
	PRPreempt(ctx context.Context, key, victim uint64, typ scsi.PRType, abort bool) error
	PRClear(ctx context.Context, key uint64) error
}

// fencedPR is fenced for a device that takes the reservation ioctls:
// they pass through to it.
type fencedPR struct {
	*fenced
	reserver
}

var _ reserver = (*fencedPR)(nil)
