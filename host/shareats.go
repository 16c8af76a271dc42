package host

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/mpathfs/mpathfs/ioerr"
	"github.com/mpathfs/mpathfs/iscsi/iscsipath"
	"github.com/mpathfs/mpathfs/mpath"
)

// The lock of an array LU (device key lock_sector: auto, the default, or
// last), as VMFS keeps
// its on-disk locks: a lock record on the LU's last logical block, hidden
// from the device's size, changed only by COMPARE AND WRITE (ATS), so two
// hosts never both win, and kept alive by a heartbeat. The record:
//
//	0..8            magic "MPFSLOCK" (an all-zero block is an empty record)
//	8 + 56*i        entry i (0: the exclusive holder, 1..8: writer slots):
//	  +0  int64     heartbeat, Unix nanoseconds (0: free)
//	  +8  uint32    pid
//	  +12 byte      mode (1 exclusive, 2 multi-writer)
//	  +16 [16]byte  host name
//	  +32 [24]byte  device name
//
// 512 bytes in all, the smallest logical block. A holder rewrites its
// heartbeat every atsBeat; an entry whose heartbeat is older than
// atsStale is free to take over (the hosts' clocks are assumed to agree
// within a few seconds).
//
// A holder that cannot prove it still holds its entry loses the lock, as
// a VMFS host that loses its lock stops writing: when its last written
// heartbeat is atsStale-atsBeat old (one beat before another host may
// take the entry over, so that writes in flight land first), or when the
// record it reads no longer names it in its slot, names a live holder its
// mode excludes, or is no record at all. From then on the device refuses
// writes, discards, zeroing and flushes with ENOLCK (LockLostError), and
// gives up those in flight that wait for a path; reads go on. It stays
// lost: only a new mount takes the lock again.

const (
	atsMagic    = "MPFSLOCK"
	atsEntry    = 56
	atsRecord   = 8 + atsEntry*(mpath.MaxWriters+1)
	atsBeat     = 3 * time.Second
	atsStale    = 4 * atsBeat
	atsAttempts = 50
)

// The lock_sector values.
const (
	// LockSectorAuto (the default, also ""): lock an array LU in its last
	// block when that block is empty or an mpathfs lock record already;
	// when it holds other data, serve the LU unlocked at full size and
	// warn.
	LockSectorAuto = "auto"
	// LockSectorLast: always lock an array LU in its last block; refuse
	// one whose last block holds data.
	LockSectorLast = "last"
	// LockSectorNone: no lock on array LUs.
	LockSectorNone = "none"
)

// errLockBlockData: the LU's last block holds data, not a lock record.
var errLockBlockData = errors.New("the LU's last block holds data, not an mpathfs lock record: lock_sector: last would hide it from the device; copy the data off the last block (or use a fresh LU) first")

// errNoATS: the LU refused COMPARE AND WRITE as an illegal request.
var errNoATS = errors.New("the LU does not support COMPARE AND WRITE (ATS)")

// LockLostError is what a device whose LU lock was lost answers writes,
// discards, zeroing and flushes with: ENOLCK for the application (it
// unwraps to syscall.ENOLCK), a message naming the new holder if any and
// how to recover.
type LockLostError struct {
	Device string
	Store  string
	LBA    uint64
	Since  time.Time
	// Why says how the lock was lost.
	Why string
	// Holder is the entry that stands in the record instead of this
	// host's, if any.
	Holder *mpath.ShareHolder
}

func (e *LockLostError) Error() string {
	s := fmt.Sprintf("device %s: the lock on LU %s (its last block, LBA %d) was lost at %s: %s", e.Device, e.Store, e.LBA, e.Since.UTC().Format(time.RFC3339), e.Why)
	if e.Holder != nil {
		s += "; the record names " + describeHolder(*e.Holder) + " now"
	}
	return s + ": this host no longer writes to the LU (writes, discards and flushes fail with ENOLCK; reads go on). To write again, stop what uses the device, unmount this mount and mount again: the new mount takes the lock afresh (and is refused, naming the holder, while another host holds it)"
}

// Unwrap makes the error ENOLCK to the application (fusedev.ToErrno).
func (e *LockLostError) Unwrap() error { return syscall.ENOLCK }

// atsBackend is a path that can carry the lock: iscsipath.Backend.
type atsBackend interface {
	ReadAt(ctx context.Context, p []byte, off int64) (int, error)
	CompareAndWrite(ctx context.Context, lba uint64, compare, write []byte) error
	BlockSize() int
	Size() int64
}

// isMiscompare: the compare of a COMPARE AND WRITE failed (another host
// wrote in between).
func isMiscompare(err error) bool { return errors.Is(err, iscsipath.ErrMiscompare) }

type atsSlot struct {
	beat   time.Time
	pid    int
	mode   string
	host   string
	device string
}

func (e atsSlot) live(now time.Time) bool {
	return !e.beat.IsZero() && now.Sub(e.beat) < atsStale
}

func (e atsSlot) holder(slot int) mpath.ShareHolder {
	return mpath.ShareHolder{Host: e.host, PID: e.pid, Device: e.device, Mode: e.mode, Slot: slot, Since: e.beat}
}

type atsRec [mpath.MaxWriters + 1]atsSlot

// parseATS reads a lock record from a block: an all-zero block is empty;
// anything else without the magic is someone's data.
func parseATS(b []byte) (atsRec, error) {
	var r atsRec
	if len(b) < atsRecord {
		return r, fmt.Errorf("the lock block is %d bytes, less than the record's %d", len(b), atsRecord)
	}
	if string(b[:8]) != atsMagic {
		if bytes.Count(b, []byte{0}) == len(b) {
			return r, nil
		}
		return r, errLockBlockData
	}
	for i := range r {
		e := b[8+i*atsEntry:]
		ns := int64(binary.BigEndian.Uint64(e[0:8]))
		if ns != 0 {
			r[i].beat = time.Unix(0, ns)
		}
		r[i].pid = int(binary.BigEndian.Uint32(e[8:12]))
		switch e[12] {
		case 1:
			r[i].mode = mpath.ShareExclusive
		case 2:
			r[i].mode = mpath.ShareMultiWriter
		}
		r[i].host = strings.TrimRight(string(e[16:32]), "\x00")
		r[i].device = strings.TrimRight(string(e[32:56]), "\x00")
	}
	return r, nil
}

// encode writes the record into a block of size n.
func (r atsRec) encode(n int) []byte {
	b := make([]byte, n)
	copy(b, atsMagic)
	for i, s := range r {
		e := b[8+i*atsEntry:]
		if s.beat.IsZero() {
			continue
		}
		binary.BigEndian.PutUint64(e[0:8], uint64(s.beat.UnixNano()))
		binary.BigEndian.PutUint32(e[8:12], uint32(s.pid))
		e[12] = 1
		if s.mode == mpath.ShareMultiWriter {
			e[12] = 2
		}
		copy(e[16:32], s.host)
		copy(e[32:56], s.device)
	}
	return b
}

// atsLock is a device's entry in its LU's lock record.
type atsLock struct {
	me      mpath.ShareHolder
	paths   []atsBackend // tried in order
	block   int
	lba     uint64
	publish func(mpath.Event)

	// now, beat and stale are time.Now, atsBeat and atsStale but in
	// tests; tick is how often the heartbeat goroutine beats (0: beat).
	now               func() time.Time
	beat, stale, tick time.Duration
	store             string

	mu   sync.Mutex // guards paths, slot, last, proven, lost, failing
	slot int
	last []byte // the block as this host last wrote or saw it
	// proven is the heartbeat this host last wrote into its entry.
	proven  time.Time
	lost    *LockLostError
	failing bool
	stop    chan struct{}
	done    chan struct{}
	// expiry declares the lock lost when no heartbeat was written for
	// stale-beat, even while the heartbeat goroutine waits on the LU.
	expiry *time.Timer
	// gone is cancelled when the lock is lost: the writes in flight then
	// (waiting for a path, backing off) are given up (bind).
	gone       context.Context
	cancelGone context.CancelFunc
}

func newATSLock(me mpath.ShareHolder, paths []atsBackend, publish func(mpath.Event)) (*atsLock, error) {
	if len(paths) == 0 {
		return nil, errors.New("lock_sector: last needs iSCSI paths (COMPARE AND WRITE)")
	}
	block := paths[0].BlockSize()
	if block < atsRecord {
		return nil, fmt.Errorf("the LU's %d-byte blocks are smaller than the %d-byte lock record", block, atsRecord)
	}
	size := paths[0].Size()
	gone, cancel := context.WithCancel(context.Background())
	return &atsLock{me: me, paths: paths, block: block, lba: uint64(size/int64(block)) - 1, publish: publish,
		now: time.Now, beat: atsBeat, stale: atsStale, gone: gone, cancelGone: cancel}, nil
}

// addPath lets a path that joined the device carry the lock too.
func (a *atsLock) addPath(p atsBackend) {
	a.mu.Lock()
	a.paths = append(a.paths, p)
	a.mu.Unlock()
}

func (a *atsLock) pathList() []atsBackend {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]atsBackend(nil), a.paths...)
}

// atsRetries bounds how often one lock command is sent again on the same
// path after a retryable answer (a unit attention, busy, an ALUA
// transition); atsRetryWait is the first wait between two tries, doubled
// each time.
const (
	atsRetries   = 8
	atsRetryWait = 2 * time.Millisecond
)

// again sends one lock command on one path, sending it again while the
// answer is retryable. A unit attention is reported once per change (an
// ownership or access state change, as when another host moves the LU
// between an active/passive array's controllers), so the next try meets
// the LU as it is now; without this, a heartbeat on an LU that other
// hosts' I/O keeps moving fails on every path until the lock is lost.
func again(ctx context.Context, op func() error) error {
	wait := atsRetryWait
	for try := 0; ; try++ {
		err := op()
		if err == nil || try == atsRetries || ioerr.ClassOf(err) != ioerr.ClassRetryable {
			return err
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return err
		case <-t.C:
		}
		wait *= 2
	}
}

// read reads the lock block through the first path that answers.
func (a *atsLock) read(ctx context.Context) ([]byte, error) {
	var err error
	for _, p := range a.pathList() {
		b := make([]byte, a.block)
		if err = again(ctx, func() error {
			_, err := p.ReadAt(ctx, b, int64(a.lba)*int64(a.block))
			return err
		}); err == nil {
			return b, nil
		}
	}
	return nil, fmt.Errorf("reading the lock block: %v", err)
}

// caw compares and writes the lock block through the first path that
// answers; a miscompare is returned at once.
func (a *atsLock) caw(ctx context.Context, old, new []byte) error {
	var err error
	for _, p := range a.pathList() {
		if err = again(ctx, func() error { return p.CompareAndWrite(ctx, a.lba, old, new) }); err == nil || isMiscompare(err) {
			return err
		}
		if sense, ok := ioerr.SenseOf(err); ok && sense.Key == ioerr.SenseIllegalRequest {
			return fmt.Errorf("%w: %v", errNoATS, err)
		}
	}
	return err
}

func (a *atsLock) mine(e atsSlot) bool {
	return e.pid == a.me.PID && e.host == truncate(a.me.Host, 16) && e.device == truncate(a.me.Device, 24)
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

// acquire takes an entry of the record by COMPARE AND WRITE, refusing with
// a *ShareError when live entries of other hosts forbid it.
func (a *atsLock) acquire(ctx context.Context, store string) error {
	a.store = store
	for attempt := 0; attempt < atsAttempts; attempt++ {
		old, err := a.read(ctx)
		if err != nil {
			return err
		}
		rec, err := parseATS(old)
		if err != nil {
			return err
		}
		now := a.now()
		var live []mpath.ShareHolder
		held := mpath.ShareMultiWriter
		for i, e := range rec {
			if e.live(now) {
				h := e.holder(i)
				h.Store = store
				live = append(live, h)
				if i == 0 {
					held = mpath.ShareExclusive
				}
			}
		}
		slot := -1
		switch {
		case a.me.Mode == mpath.ShareExclusive && len(live) == 0:
			slot = 0
		case a.me.Mode == mpath.ShareMultiWriter && !rec[0].live(now):
			for i := 1; i <= mpath.MaxWriters; i++ {
				if !rec[i].live(now) {
					slot = i
					break
				}
			}
		}
		if slot < 0 {
			return &ShareError{Device: a.me.Device, Store: store, Mode: a.me.Mode, Held: held, Holders: live}
		}
		rec[slot] = atsSlot{beat: now, pid: a.me.PID, mode: a.me.Mode, host: truncate(a.me.Host, 16), device: truncate(a.me.Device, 24)}
		next := rec.encode(a.block)
		err = a.caw(ctx, old, next)
		if isMiscompare(err) {
			continue // another host wrote in between: read again
		}
		if err != nil {
			return fmt.Errorf("writing the lock block: %w", err)
		}
		a.mu.Lock()
		a.slot, a.last, a.proven = slot, next, now
		a.expiry = time.AfterFunc(a.stale-a.beat, func() { a.check() })
		a.mu.Unlock()
		a.stop, a.done = make(chan struct{}), make(chan struct{})
		go a.heartbeat()
		return nil
	}
	return fmt.Errorf("the lock block changed under %d attempts in a row", atsAttempts)
}

// taken says whether a record shows this host's entry gone: why, and the
// entry that stands instead, if any ("" when the entry is still this
// host's and no live entry of another host excludes it).
func (a *atsLock) taken(rec atsRec, slot int, now time.Time) (string, *mpath.ShareHolder) {
	other := func(i int) *mpath.ShareHolder {
		h := rec[i].holder(i)
		h.Store = a.store
		return &h
	}
	if !a.mine(rec[slot]) {
		if rec[slot].beat.IsZero() {
			return fmt.Sprintf("the lock record's slot %d no longer names this host (cleared by another host)", slot), nil
		}
		return fmt.Sprintf("another host wrote its entry over this host's in slot %d of the lock record (as a host does once this host's heartbeat is %v old)", slot, a.stale), other(slot)
	}
	for i, e := range rec {
		if i == slot || !e.live(now) || a.mine(e) {
			continue
		}
		if slot == 0 || i == 0 {
			return fmt.Sprintf("another host holds slot %d of the lock record, which this host's %s entry excludes (it took the LU as this host's heartbeat was %v old)", i, a.me.Mode, a.stale), other(i)
		}
	}
	return "", nil
}

// update rewrites this host's entry (change it; nil clears it) by COMPARE
// AND WRITE, re-reading after a miscompare. When the record shows the
// entry is no longer this host's (taken), it writes nothing and says why,
// with the entry that stands instead, if any.
func (a *atsLock) update(ctx context.Context, change func(*atsSlot)) (lost string, holder *mpath.ShareHolder, err error) {
	a.mu.Lock()
	old, slot := a.last, a.slot
	a.mu.Unlock()
	for attempt := 0; attempt < atsAttempts; attempt++ {
		rec, err := parseATS(old)
		if errors.Is(err, errLockBlockData) {
			return "the LU's last block no longer holds a lock record: another host or program wrote data over it", nil, nil
		}
		if err != nil {
			return "", nil, err
		}
		if why, h := a.taken(rec, slot, a.now()); why != "" {
			return why, h, nil
		}
		change(&rec[slot])
		next := rec.encode(a.block)
		err = a.caw(ctx, old, next)
		if err == nil {
			a.mu.Lock()
			a.last = next
			a.mu.Unlock()
			return "", nil, nil
		}
		if !isMiscompare(err) {
			return "", nil, err
		}
		if old, err = a.read(ctx); err != nil {
			return "", nil, err
		}
	}
	return "", nil, fmt.Errorf("the lock block changed under %d attempts in a row", atsAttempts)
}

// beatOnce writes one heartbeat: the lock is lost when the record shows
// the entry taken, or when the heartbeat could not be written for
// stale-beat (check).
func (a *atsLock) beatOnce() {
	if a.lostErr() != nil {
		return // a lost lock stays lost
	}
	ctx, cancel := context.WithTimeout(context.Background(), a.beat)
	var beat time.Time
	why, holder, err := a.update(ctx, func(e *atsSlot) { beat = a.now(); e.beat = beat })
	cancel()
	switch {
	case why != "":
		a.loseLock(why, holder)
	case err != nil:
		a.mu.Lock()
		first := !a.failing
		a.failing = true
		a.mu.Unlock()
		if a.check() != nil {
			return
		}
		if first {
			a.publish(mpath.Event{Time: a.now(), Kind: "lock-heartbeat-failed", Device: a.me.Device, Reason: fmt.Sprintf("%v: unless a heartbeat is written within %v of the last one, this host stops writing (lock lost), and after %v another host may take the LU over", err, a.stale-a.beat, a.stale)})
		}
	default:
		a.mu.Lock()
		a.proven = beat
		a.expiry.Reset(a.stale - a.beat - a.now().Sub(beat))
		was := a.failing
		a.failing = false
		a.mu.Unlock()
		if was {
			a.publish(mpath.Event{Time: a.now(), Kind: "lock-heartbeat-ok", Device: a.me.Device, Reason: "the heartbeat is written again"})
		}
	}
}

// check returns the LockLostError once the lock is lost, declaring it
// lost when the last heartbeat written is stale-beat old: another host
// may take the entry over one beat later.
func (a *atsLock) check() error {
	if a == nil {
		return nil
	}
	a.mu.Lock()
	lost, proven := a.lost, a.proven
	a.mu.Unlock()
	if lost != nil {
		return lost
	}
	if proven.IsZero() {
		return nil
	}
	if age := a.now().Sub(proven); age >= a.stale-a.beat {
		return a.loseLock(fmt.Sprintf("no heartbeat could be written for %v (the LU unreachable, or too slow), so this host cannot prove it still holds its entry: another host may take it over %v after the last heartbeat", age.Round(time.Millisecond), a.stale), nil)
	}
	return nil
}

// loseLock marks the lock lost (once) and publishes lock-lost.
func (a *atsLock) loseLock(why string, holder *mpath.ShareHolder) error {
	a.mu.Lock()
	if a.lost != nil {
		defer a.mu.Unlock()
		return a.lost
	}
	a.lost = &LockLostError{Device: a.me.Device, Store: a.store, LBA: a.lba, Since: a.now(), Why: why, Holder: holder}
	lost := a.lost
	a.expiry.Stop()
	a.mu.Unlock()
	a.cancelGone()
	a.publish(mpath.Event{Time: lost.Since, Kind: "lock-lost", Device: a.me.Device, Reason: lost.Error()})
	return lost
}

// bind ties an operation to the lock: its context is cancelled when the
// lock is lost, so that a write waiting for a path or backing off is
// given up rather than sent after another host may have taken the LU
// over. done says what the operation's error becomes: the LockLostError
// once the lock is lost.
func (a *atsLock) bind(ctx context.Context) (context.Context, func(err error) error) {
	c, cancel := context.WithCancel(ctx)
	stop := context.AfterFunc(a.gone, cancel)
	return c, func(err error) error {
		stop()
		cancel()
		if err != nil {
			if l := a.lostErr(); l != nil {
				return l
			}
		}
		return err
	}
}

// lostErr is the LockLostError if the lock is lost (nil otherwise).
func (a *atsLock) lostErr() *LockLostError {
	if a == nil {
		return nil
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.lost
}

func (a *atsLock) heartbeat() {
	defer close(a.done)
	tick := a.tick
	if tick == 0 {
		tick = a.beat
	}
	t := time.NewTicker(tick)
	defer t.Stop()
	for {
		select {
		case <-a.stop:
			return
		case <-t.C:
		}
		a.beatOnce()
		if a.lostErr() != nil {
			return // a lost lock stays lost: no more heartbeats
		}
	}
}

// release stops the heartbeat and clears this host's entry.
func (a *atsLock) release() error {
	if a == nil || a.stop == nil {
		return nil
	}
	select {
	case <-a.stop:
		return nil
	default:
	}
	close(a.stop)
	<-a.done
	a.mu.Lock()
	a.expiry.Stop()
	a.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	// An entry that is another's now is left alone (update writes
	// nothing then).
	_, _, err := a.update(ctx, func(e *atsSlot) { *e = atsSlot{} })
	return err
}

// holders reads the record: every live entry, this host's marked Self.
func (a *atsLock) holders(store string) []mpath.ShareHolder {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	b, err := a.read(ctx)
	if err != nil {
		return nil
	}
	rec, err := parseATS(b)
	if err != nil {
		return nil
	}
	now := a.now()
	var out []mpath.ShareHolder
	for i, e := range rec {
		if !e.live(now) {
			continue
		}
		h := e.holder(i)
		h.Store = store
		if i == a.slot && a.mine(e) {
			h.Self, h.Mountpoint = true, a.me.Mountpoint
		}
		out = append(out, h)
	}
	return out
}

func (a *atsLock) describe() string {
	if a.slot == 0 {
		return fmt.Sprintf("%s ATS lock on the LU's last block (LBA %d)", a.me.Mode, a.lba)
	}
	return fmt.Sprintf("%s ATS lock on the LU's last block (LBA %d), writer slot %d of %d", a.me.Mode, a.lba, a.slot, mpath.MaxWriters)
}
