package host

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/mpathfs/mpathfs/backends"
	"github.com/mpathfs/mpathfs/mpath"
)

// Exclusive by default, multi-writer on request. A device's file stores
// (file paths, plain paths, block device nodes) are locked with OFD locks
// (fcntl F_OFD_SETLK) on a descriptor of the device's own, once per store
// (one file reached through two names is locked once; two stores are two
// locks), and held until the host closes. The lock bytes lie far beyond
// any data (locks are advisory; nothing of the I/O meets them):
//
//	lockBase+0          the mode byte: exclusive holds a write lock on it,
//	                    every multi-writer host a read lock
//	lockBase+1..+8      the writer slots: a multi-writer host write-locks
//	                    the first free one; none free, the ninth is refused
//
// OFD locks do not say who holds them, so each holder records itself
// beside its lock: a JSON mpath.ShareHolder in the user extended attribute
// holderXattr+SLOT of the store, or, where the store keeps no user
// extended attributes (device nodes, some file systems), in the file
// HolderDir/DEV-INO.SLOT. A record is only believed while its slot is
// locked, so a crashed holder's record is harmless. NBD paths take no
// lock (their store lives behind a server); iSCSI paths are locked in
// the LU itself (lock_sector: auto, the default, or last; shareats.go)
// unless lock_sector is none or auto found data in the LU's last block.
// The device says which paths no lock covers in an event and in its
// status.

const (
	// lockBase is where the lock bytes start: 2^62, beyond any store.
	lockBase = int64(1) << 62
	// holderXattr (+ the slot number) is the attribute holding a holder's
	// record.
	holderXattr = "user.mpathfs.holder."
)

// setXattr writes an extended attribute (a variable so that tests can
// play a file system without user extended attributes).
var setXattr = unix.Fsetxattr

// HolderDir keeps holder records for stores without user extended
// attributes. A variable so that tests can move it.
var HolderDir = "/run/mpathfs/holders"

// ShareError: the store is held by other hosts in a way that refuses this
// one. It names the holders.
type ShareError struct {
	Device string
	Store  string
	// Mode is what this host asked for; Held how the store is held
	// (ShareExclusive or ShareMultiWriter).
	Mode, Held string
	Holders    []mpath.ShareHolder
}

func (e *ShareError) Error() string {
	who := make([]string, len(e.Holders))
	for i, h := range e.Holders {
		who[i] = describeHolder(h)
	}
	list := strings.Join(who, "; ")
	if list == "" {
		list = "a host that has not recorded itself yet"
	}
	switch {
	case e.Held == mpath.ShareExclusive && e.Mode == mpath.ShareExclusive:
		return fmt.Sprintf("device %s: store %s is held exclusively by %s: unmount it there first, or mount both with --multi-writer to share the store (up to %d hosts, which must coordinate their writes)", e.Device, e.Store, list, mpath.MaxWriters)
	case e.Held == mpath.ShareExclusive:
		return fmt.Sprintf("device %s: store %s is held exclusively by %s: a multi-writer host shares a store only with other multi-writer hosts; unmount it there first, or mount it there with --multi-writer too", e.Device, e.Store, list)
	case e.Mode == mpath.ShareExclusive:
		return fmt.Sprintf("device %s: store %s is shared by %d multi-writer host(s): %s: a host without --multi-writer opens a store alone; mount this one with --multi-writer to join them, or unmount them first", e.Device, e.Store, max(len(e.Holders), 1), list)
	default:
		return fmt.Sprintf("device %s: store %s already has %d writers, the most a store shares in multi-writer mode: %s: unmount one of them first", e.Device, e.Store, mpath.MaxWriters, list)
	}
}

func (e *ShareError) Unwrap() error { return ErrRefused }

func describeHolder(h mpath.ShareHolder) string {
	if h.Unknown {
		return fmt.Sprintf("an unrecorded host (slot %d; its record is being written, or the store keeps none)", h.Slot)
	}
	s := fmt.Sprintf("host %s (pid %d, device %s", h.Host, h.PID, h.Device)
	if h.Mountpoint != "" {
		s += " mounted at " + h.Mountpoint
	}
	if h.Slot > 0 {
		s += fmt.Sprintf(", writer slot %d", h.Slot)
	}
	return s + ", since " + h.Since.UTC().Format(time.RFC3339) + ")"
}

// storeLock is the lock on one store.
type storeLock struct {
	f      *os.File
	name   string
	key    string // DEV-INO of the store
	slot   int
	record string // where the record went: "xattr", a file, or ""
	since  time.Time
}

// shareLock is a device's locks on its stores.
type shareLock struct {
	me       mpath.ShareHolder // the template of this host's records
	mu       sync.Mutex
	stores   []*storeLock
	unlocked []string
	closed   bool
	// ats is the lock on the device's array LU (lock_sector: auto or
	// last), and atsStore names the LU in records and errors.
	ats      *atsLock
	atsStore string
	// warnings are what mount prints on stderr about the device's locks
	// (an LU auto left unlocked).
	warnings []string
}

func newShareLock(me mpath.ShareHolder) *shareLock {
	if me.Mode == "" {
		me.Mode = mpath.ShareExclusive
	}
	return &shareLock{me: me}
}

// lockTarget names the file a path URI's lock is on; ok false with why
// when the path carries no lock.
func lockTarget(uri string) (name string, ok bool, why string) {
	u, err := backends.ParseURI(uri)
	if err != nil {
		return "", false, err.Error()
	}
	switch {
	case u.Scheme == "file" || u.Scheme == "block":
		if ro, _ := backends.QueryBool(u, "ro", false); ro {
			return "", false, "a read-only path takes no lock"
		}
		name = u.Path
		if name == "" {
			name = u.Opaque
		}
		return name, name != "", "no file name"
	case strings.HasPrefix(u.Scheme, "nbd"):
		return "", false, "an NBD export carries no lock: the store lives behind its server, which lets every client in; keep other hosts off it yourself"
	case u.Scheme == "iscsi":
		return "", false, "an iSCSI LU takes no lock but the one the device keeps in the LU's last block (lock_sector: auto or last), none with lock_sector: none or when auto found data there: the array lets every host in"
	default:
		return "", false, fmt.Sprintf("a %s path carries no lock", u.Scheme)
	}
}

// add locks the store a path leads to, unless the device holds it
// already. It returns the lock it took (nil when it took none: the store
// is locked already, or the path carries no lock: then none says why,
// as unlocked keeps it).
func (s *shareLock) add(uri string) (taken *storeLock, none string, err error) {
	name, ok, why := lockTarget(uri)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, "", errors.New("the device is closing")
	}
	if !ok {
		none = uri + ": " + why
		s.unlocked = append(s.unlocked, none)
		return nil, none, nil
	}
	f, err := os.OpenFile(name, os.O_RDWR, 0)
	if err != nil {
		none = fmt.Sprintf("%s: cannot open the store to lock it: %v", uri, err)
		s.unlocked = append(s.unlocked, none)
		return nil, none, nil
	}
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		f.Close()
		return nil, "", fmt.Errorf("store %s: %v", name, err)
	}
	key := fmt.Sprintf("%d-%d", st.Dev, st.Ino)
	if st.Mode&unix.S_IFMT == unix.S_IFBLK {
		key = fmt.Sprintf("b%d-%d", st.Rdev, st.Ino)
	}
	for _, o := range s.stores {
		if o.key == key {
			f.Close()
			return nil, "", nil
		}
	}
	sl := &storeLock{f: f, name: name, key: key, since: time.Now()}
	if sl.slot, err = s.acquire(sl); err != nil {
		f.Close()
		return nil, "", err
	}
	me := s.me
	me.Slot, me.Since, me.Store = sl.slot, sl.since, name
	sl.record = writeRecord(sl, me)
	s.stores = append(s.stores, sl)
	return sl, "", nil
}

// acquire takes the locks of s's mode on a store: the slot it holds.
func (s *shareLock) acquire(sl *storeLock) (int, error) {
	fd := int(sl.f.Fd())
	refuse := func() error {
		holders := otherHolders(sl)
		held := mpath.ShareMultiWriter
		for _, h := range holders {
			if h.Slot == 0 {
				held = mpath.ShareExclusive
			}
		}
		return &ShareError{Device: s.me.Device, Store: sl.name, Mode: s.me.Mode, Held: held, Holders: holders}
	}
	if s.me.Mode == mpath.ShareExclusive {
		if err := setLock(fd, unix.F_WRLCK, 0); err != nil {
			if busy(err) {
				return 0, refuse()
			}
			return 0, fmt.Errorf("store %s: locking: %v", sl.name, err)
		}
		return 0, nil
	}
	if err := setLock(fd, unix.F_RDLCK, 0); err != nil {
		if busy(err) {
			return 0, refuse()
		}
		return 0, fmt.Errorf("store %s: locking: %v", sl.name, err)
	}
	for slot := 1; slot <= mpath.MaxWriters; slot++ {
		err := setLock(fd, unix.F_WRLCK, slot)
		if err == nil {
			return slot, nil
		}
		if !busy(err) {
			setLock(fd, unix.F_UNLCK, 0)
			return 0, fmt.Errorf("store %s: locking writer slot %d: %v", sl.name, slot, err)
		}
	}
	setLock(fd, unix.F_UNLCK, 0)
	return 0, refuse()
}

func setLock(fd int, typ int16, slot int) error {
	fl := unix.Flock_t{Type: typ, Whence: io.SeekStart, Start: lockBase + int64(slot), Len: 1}
	return unix.FcntlFlock(uintptr(fd), unix.F_OFD_SETLK, &fl)
}

func busy(err error) bool { return errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EACCES) }

// otherHolders lists the holders of a store other than sl's own
// descriptor: the exclusive holder (slot 0) or the multi-writer ones, by
// slot.
func otherHolders(sl *storeLock) []mpath.ShareHolder {
	fd := int(sl.f.Fd())
	var out []mpath.ShareHolder
	for slot := 0; slot <= mpath.MaxWriters; slot++ {
		fl := unix.Flock_t{Type: unix.F_WRLCK, Whence: io.SeekStart, Start: lockBase + int64(slot), Len: 1}
		if err := unix.FcntlFlock(uintptr(fd), unix.F_OFD_GETLK, &fl); err != nil || fl.Type == unix.F_UNLCK {
			continue
		}
		if slot == 0 && fl.Type == unix.F_RDLCK {
			continue // the multi-writers' mode lock: their slots name them
		}
		h, ok := readRecord(sl, slot)
		if !ok {
			mode := mpath.ShareMultiWriter
			if slot == 0 {
				mode = mpath.ShareExclusive
			}
			h = mpath.ShareHolder{Slot: slot, Mode: mode, Unknown: true}
		}
		h.Slot, h.Store, h.Self = slot, sl.name, false
		out = append(out, h)
	}
	return out
}

func recordFile(key string, slot int) string {
	return filepath.Join(HolderDir, fmt.Sprintf("%s.%d", key, slot))
}

// writeRecord records this host beside its lock: in the store's extended
// attribute, else in a file under HolderDir. It says where ("": nowhere,
// other hosts then see an unrecorded holder).
func writeRecord(sl *storeLock, me mpath.ShareHolder) string {
	me.Self = false
	b, _ := json.Marshal(me)
	fd := int(sl.f.Fd())
	attr := fmt.Sprintf("%s%d", holderXattr, sl.slot)
	if err := setXattr(fd, attr, b, 0); err == nil {
		os.Remove(recordFile(sl.key, sl.slot))
		return "xattr"
	}
	unix.Fremovexattr(fd, attr)
	name := recordFile(sl.key, sl.slot)
	if err := os.MkdirAll(HolderDir, 0o755); err != nil {
		return ""
	}
	tmp := fmt.Sprintf("%s.%d.tmp", name, os.Getpid())
	if err := os.WriteFile(tmp, b, 0o644); err != nil {
		os.Remove(tmp)
		return ""
	}
	if err := os.Rename(tmp, name); err != nil {
		os.Remove(tmp)
		return ""
	}
	return name
}

// readRecord reads the record of a slot's holder.
func readRecord(sl *storeLock, slot int) (mpath.ShareHolder, bool) {
	var h mpath.ShareHolder
	buf := make([]byte, 4096)
	n, err := unix.Fgetxattr(int(sl.f.Fd()), fmt.Sprintf("%s%d", holderXattr, slot), buf)
	if err == nil && json.Unmarshal(buf[:n], &h) == nil {
		return h, true
	}
	b, err := os.ReadFile(recordFile(sl.key, slot))
	if err == nil && json.Unmarshal(b, &h) == nil {
		return h, true
	}
	return h, false
}

// release drops the record, then the lock (closing the descriptor
// releases every lock on it).
func (sl *storeLock) release() error {
	switch sl.record {
	case "":
	case "xattr":
		unix.Fremovexattr(int(sl.f.Fd()), fmt.Sprintf("%s%d", holderXattr, sl.slot))
	default:
		os.Remove(sl.record)
	}
	return sl.f.Close()
}

// drop releases one store lock add took (a path that was refused after).
func (s *shareLock) drop(sl *storeLock) {
	if s == nil || sl == nil {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for i, o := range s.stores {
		if o == sl {
			s.stores = append(s.stores[:i], s.stores[i+1:]...)
			sl.release()
			return
		}
	}
}

// releaseATS stops the LU lock's heartbeat and clears its entry; the
// device's paths must still be open.
func (s *shareLock) releaseATS() error {
	if s == nil {
		return nil
	}
	return s.ats.release()
}

// release releases every lock of the device.
func (s *shareLock) release() error {
	if s == nil {
		return nil
	}
	first := s.releaseATS()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	for _, sl := range s.stores {
		if err := sl.release(); err != nil && first == nil {
			first = err
		}
	}
	s.stores = nil
	return first
}

// status is the device's sharing as status shows it: its mode, every
// holder of its stores (this one first on each store) and the paths no
// lock covers.
func (s *shareLock) status() *mpath.Sharing {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := &mpath.Sharing{Mode: s.me.Mode, Holders: []mpath.ShareHolder{}, Unlocked: append([]string(nil), s.unlocked...)}
	for _, sl := range s.stores {
		me := s.me
		me.Slot, me.Since, me.Store, me.Self = sl.slot, sl.since, sl.name, true
		hs := append([]mpath.ShareHolder{me}, otherHolders(sl)...)
		sort.SliceStable(hs, func(i, j int) bool { return hs[i].Slot < hs[j].Slot })
		out.Holders = append(out.Holders, hs...)
	}
	if s.ats != nil {
		out.Holders = append(out.Holders, s.ats.holders(s.atsStore)...)
		out.LULock = "held"
		if l := s.ats.lostErr(); l != nil {
			out.LULock = "lost"
			out.LockLost = &mpath.LockLost{Since: l.Since, Reason: l.Error(), Holder: l.Holder}
		}
	}
	return out
}

// describe says what lock a store lock is, for events.
func (sl *storeLock) describe(mode string) string {
	if sl.slot == 0 {
		return fmt.Sprintf("%s lock on %s", mode, sl.name)
	}
	return fmt.Sprintf("%s lock on %s, writer slot %d of %d", mode, sl.name, sl.slot, mpath.MaxWriters)
}
