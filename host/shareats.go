package host

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/mpathfs/mpathfs/iscsi/iscsipath"
	"github.com/mpathfs/mpathfs/mpath"
)

// The lock of an array LU (device key lock_sector: last), as VMFS keeps
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

const (
	atsMagic    = "MPFSLOCK"
	atsEntry    = 56
	atsRecord   = 8 + atsEntry*(mpath.MaxWriters+1)
	atsBeat     = 3 * time.Second
	atsStale    = 4 * atsBeat
	atsAttempts = 50
)

// LockSectorLast is the lock_sector value that keeps the lock on the LU's
// last block.
const LockSectorLast = "last"

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
		return r, errors.New("the LU's last block holds data, not an mpathfs lock record: lock_sector: last would hide it from the device; copy the data off the last block (or use a fresh LU) first")
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

	mu   sync.Mutex
	slot int
	last []byte // the block as this host last wrote or saw it
	lost bool
	stop chan struct{}
	done chan struct{}
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
	return &atsLock{me: me, paths: paths, block: block, lba: uint64(size/int64(block)) - 1, publish: publish}, nil
}

// read reads the lock block through the first path that answers.
func (a *atsLock) read(ctx context.Context) ([]byte, error) {
	var err error
	for _, p := range a.paths {
		b := make([]byte, a.block)
		if _, err = p.ReadAt(ctx, b, int64(a.lba)*int64(a.block)); err == nil {
			return b, nil
		}
	}
	return nil, fmt.Errorf("reading the lock block: %v", err)
}

// caw compares and writes the lock block through the first path that
// answers; a miscompare is returned at once.
func (a *atsLock) caw(ctx context.Context, old, new []byte) error {
	var err error
	for _, p := range a.paths {
		if err = p.CompareAndWrite(ctx, a.lba, old, new); err == nil || isMiscompare(err) {
			return err
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
	for attempt := 0; attempt < atsAttempts; attempt++ {
		old, err := a.read(ctx)
		if err != nil {
			return err
		}
		rec, err := parseATS(old)
		if err != nil {
			return err
		}
		now := time.Now()
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
			return fmt.Errorf("writing the lock block: %v", err)
		}
		a.mu.Lock()
		a.slot, a.last = slot, next
		a.mu.Unlock()
		a.stop, a.done = make(chan struct{}), make(chan struct{})
		go a.heartbeat()
		return nil
	}
	return fmt.Errorf("the lock block changed under %d attempts in a row", atsAttempts)
}

// update rewrites this host's entry (change it; nil clears it) by COMPARE
// AND WRITE, re-reading after a miscompare; it reports false when the
// entry is no longer this host's (taken over).
func (a *atsLock) update(ctx context.Context, change func(*atsSlot)) (bool, error) {
	a.mu.Lock()
	old, slot := a.last, a.slot
	a.mu.Unlock()
	for attempt := 0; attempt < atsAttempts; attempt++ {
		rec, err := parseATS(old)
		if err != nil {
			return false, err
		}
		if !a.mine(rec[slot]) {
			return false, nil
		}
		change(&rec[slot])
		next := rec.encode(a.block)
		err = a.caw(ctx, old, next)
		if err == nil {
			a.mu.Lock()
			a.last = next
			a.mu.Unlock()
			return true, nil
		}
		if !isMiscompare(err) {
			return true, err
		}
		if old, err = a.read(ctx); err != nil {
			return true, err
		}
	}
	return true, fmt.Errorf("the lock block changed under %d attempts in a row", atsAttempts)
}

func (a *atsLock) heartbeat() {
	defer close(a.done)
	t := time.NewTicker(atsBeat)
	defer t.Stop()
	failing := false
	for {
		select {
		case <-a.stop:
			return
		case <-t.C:
		}
		ctx, cancel := context.WithTimeout(context.Background(), atsBeat)
		ok, err := a.update(ctx, func(e *atsSlot) { e.beat = time.Now() })
		cancel()
		switch {
		case !ok:
			a.mu.Lock()
			a.lost = true
			a.mu.Unlock()
			a.publish(mpath.Event{Time: time.Now(), Kind: "lock-lost", Device: a.me.Device, Reason: fmt.Sprintf("the lock record's slot %d on LU block %d is another host's now: its heartbeat was missed for %v and the entry taken over", a.slot, a.lba, atsStale)})
			return
		case err != nil && !failing:
			failing = true
			a.publish(mpath.Event{Time: time.Now(), Kind: "lock-heartbeat-failed", Device: a.me.Device, Reason: fmt.Sprintf("%v: after %v without a heartbeat another host may take the LU over", err, atsStale)})
		case err == nil && failing:
			failing = false
			a.publish(mpath.Event{Time: time.Now(), Kind: "lock-heartbeat-ok", Device: a.me.Device, Reason: "the heartbeat is written again"})
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
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err := a.update(ctx, func(e *atsSlot) { *e = atsSlot{} })
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
	now := time.Now()
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
