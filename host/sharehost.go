package host

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/mpathfs/mpathfs/backends"
	"github.com/mpathfs/mpathfs/mpath"
)

// shareMode is the sharing mode a device config asks for.
func (d DeviceConfig) shareMode() string {
	if d.MultiWriter {
		return mpath.ShareMultiWriter
	}
	return mpath.ShareExclusive
}

// hostName is the name a holder record gives this host.
func hostName() string {
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
	s := newShareLock(mpath.ShareHolder{Host: hostName(), PID: os.Getpid(), Mountpoint: h.mountpoint, Device: dc.Name, Mode: dc.shareMode()})
	for _, o := range open {
		if dc.LockSector == LockSectorLast && isISCSI(o.uri) {
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

// lockLU takes the device's entry in its LU's lock record (lock_sector:
// last) through its iSCSI paths.
func (h *Host) lockLU(ctx context.Context, s *shareLock, dc DeviceConfig, open []opened) error {
	var paths []atsBackend
	store := ""
	for _, o := range open {
		if a, ok := backends.As[atsBackend](o.raw); ok {
			paths = append(paths, a)
			if store == "" {
				store = strings.SplitN(o.uri, "?", 2)[0]
			}
		}
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
	case err != nil:
		return fmt.Errorf("device %s: the lock on LU %s: %v", dc.Name, store, err)
	}
	s.mu.Lock()
	s.ats, s.atsStore = a, store
	s.mu.Unlock()
	h.publish(mpath.Event{Time: time.Now(), Kind: "lock-taken", Device: dc.Name, To: s.me.Mode, Reason: a.describe()})
	return nil
}
