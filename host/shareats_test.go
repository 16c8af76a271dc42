package host

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/mpathfs/mpathfs/fusedev"
	"github.com/mpathfs/mpathfs/ioerr"
	"github.com/mpathfs/mpathfs/iscsi/iscsipath"
	"github.com/mpathfs/mpathfs/mpath"
)

// fakeLU is an LU that keeps COMPARE AND WRITE atomic, as an array does.
type fakeLU struct {
	mu    sync.Mutex
	data  []byte
	block int
	down  bool
	// attentions: how many commands from now are answered with a unit
	// attention (as after another host moved the LU between controllers)
	// instead of being carried out.
	attentions int
}

// attention reports a pending unit attention, once (l.mu held).
func (l *fakeLU) attention() error {
	if l.attentions == 0 {
		return nil
	}
	l.attentions--
	return &ioerr.Error{Class: ioerr.ClassRetryable, Op: "fake LU", Err: errors.New("CHECK CONDITION"), Sense: &ioerr.Sense{Key: 0x6, ASC: 0x2a, ASCQ: 0x06}}
}

func newFakeLU(blocks, block int) *fakeLU {
	return &fakeLU{data: make([]byte, blocks*block), block: block}
}

func (l *fakeLU) ReadAt(_ context.Context, p []byte, off int64) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.down {
		return 0, errors.New("path down")
	}
	if err := l.attention(); err != nil {
		return 0, err
	}
	return copy(p, l.data[off:]), nil
}

func (l *fakeLU) CompareAndWrite(_ context.Context, lba uint64, compare, write []byte) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.down {
		return errors.New("path down")
	}
	if err := l.attention(); err != nil {
		return err
	}
	at := l.data[int(lba)*l.block : int(lba)*l.block+len(compare)]
	if !bytes.Equal(at, compare) {
		return fmt.Errorf("%w: sense 0e/1d/00", iscsipath.ErrMiscompare)
	}
	copy(at, write)
	return nil
}

func (l *fakeLU) BlockSize() int { return l.block }
func (l *fakeLU) Size() int64    { return int64(len(l.data)) }

func atsOf(t *testing.T, lu *fakeLU, dev, mode string) (*atsLock, error) {
	t.Helper()
	me := holder(dev, mode)
	me.PID = 1000 + len(dev) + int(dev[len(dev)-1]) // another "process" per device
	a, err := newATSLock(me, []atsBackend{lu}, func(mpath.Event) {})
	require.NoError(t, err)
	err = a.acquire(context.Background(), "iscsi://lu")
	if err == nil {
		t.Cleanup(func() { a.release() })
	}
	return a, err
}

// TestATSLock: on one LU, a second exclusive host is refused naming the
// first; eight multi-writer hosts share it and the ninth is refused;
// release clears the entry; the record is on the last block only.
func TestATSLock(t *testing.T) {
	lu := newFakeLU(64, 512)
	a, err := atsOf(t, lu, "a", mpath.ShareExclusive)
	require.NoError(t, err)
	assert.Equal(t, uint64(63), a.lba)
	assert.Equal(t, atsMagic, string(lu.data[63*512:63*512+8]))
	assert.Equal(t, make([]byte, 63*512), lu.data[:63*512], "nothing but the last block is written")

	_, err = atsOf(t, lu, "b", mpath.ShareExclusive)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "held exclusively by host host-a")
	_, err = atsOf(t, lu, "m", mpath.ShareMultiWriter)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "a multi-writer host shares a store only with other multi-writer hosts")
	hs := a.holders("iscsi://lu")
	require.Len(t, hs, 1)
	assert.True(t, hs[0].Self)

	require.NoError(t, a.release())
	rec, err := parseATS(lu.data[63*512:])
	require.NoError(t, err)
	assert.False(t, rec[0].live(time.Now()), "release clears the entry")

	var ws []*atsLock
	for i := 1; i <= mpath.MaxWriters; i++ {
		w, err := atsOf(t, lu, fmt.Sprintf("w%d", i), mpath.ShareMultiWriter)
		require.NoError(t, err, "writer %d", i)
		assert.Equal(t, i, w.slot)
		ws = append(ws, w)
	}
	_, err = atsOf(t, lu, "w9", mpath.ShareMultiWriter)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "already has 8 writers")
	_, err = atsOf(t, lu, "x", mpath.ShareExclusive)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "shared by 8 multi-writer host(s)")
	assert.Len(t, ws[0].holders("iscsi://lu"), mpath.MaxWriters)
	for _, w := range ws {
		require.NoError(t, w.release())
	}
}

// TestATSStaleTakenOver: an entry whose heartbeat is older than atsStale
// (its host died) is taken over; the old holder, heartbeating again,
// finds its entry gone and says so (lock-lost).
func TestATSStaleTakenOver(t *testing.T) {
	lu := newFakeLU(16, 512)
	var mu sync.Mutex
	var events []mpath.Event
	me := holder("a", mpath.ShareExclusive)
	a, err := newATSLock(me, []atsBackend{lu}, func(e mpath.Event) { mu.Lock(); events = append(events, e); mu.Unlock() })
	require.NoError(t, err)
	require.NoError(t, a.acquire(context.Background(), "lu"))
	close(a.stop) // the host hangs: no more heartbeats
	<-a.done

	// Its heartbeat ages past atsStale.
	lu.mu.Lock()
	rec, _ := parseATS(lu.data[15*512:])
	rec[0].beat = time.Now().Add(-atsStale - time.Second)
	copy(lu.data[15*512:], rec.encode(512))
	lu.mu.Unlock()

	b, err := atsOf(t, lu, "b", mpath.ShareExclusive)
	require.NoError(t, err, "a stale entry is taken over")
	assert.Equal(t, 0, b.slot)

	why, h, err := a.update(context.Background(), func(e *atsSlot) { e.beat = time.Now() })
	require.NoError(t, err)
	assert.Contains(t, why, "another host wrote its entry over this host's", "the old holder finds its entry is another's")
	require.NotNil(t, h)
	assert.Equal(t, "host-b", h.Host)
}

// TestATSDataRefused: a last block holding data (not a record) is not
// taken over: the error says what to do.
func TestATSDataRefused(t *testing.T) {
	lu := newFakeLU(8, 512)
	copy(lu.data[7*512:], "a file system's last block")
	_, err := atsOf(t, lu, "a", mpath.ShareExclusive)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "holds data, not an mpathfs lock record")
}

// TestATSHeartbeat: the heartbeat rewrites the entry by COMPARE AND WRITE
// while another host changes its own entry in between (a miscompare, read
// again); a path that fails is skipped for the next.
func TestATSHeartbeat(t *testing.T) {
	lu := newFakeLU(8, 512)
	down := &fakeLU{block: 512, down: true}
	me := holder("a", mpath.ShareMultiWriter)
	a, err := newATSLock(me, []atsBackend{lu}, func(mpath.Event) {})
	require.NoError(t, err)
	require.NoError(t, a.acquire(context.Background(), "lu"))
	defer a.release()
	_, err = atsOf(t, lu, "b", mpath.ShareMultiWriter) // changes the block after a's last write
	require.NoError(t, err)
	a.mu.Lock()
	a.paths = []atsBackend{down, lu}
	a.mu.Unlock()
	before, _ := parseATS(lu.data[7*512:])
	time.Sleep(time.Millisecond)
	why, _, err := a.update(context.Background(), func(e *atsSlot) { e.beat = time.Now() })
	require.NoError(t, err)
	require.Empty(t, why)
	after, _ := parseATS(lu.data[7*512:])
	assert.True(t, after[1].beat.After(before[1].beat), "the heartbeat moved")
	assert.Equal(t, before[2], after[2], "the other host's entry is kept")
}

// TestATSHeartbeatThroughUnitAttentions: unit attentions (an LU that other
// hosts' I/O moves between an active/passive array's controllers reports
// one per move) are sent again on the same path, so the heartbeat is
// written; only a path that keeps answering with them past the bound
// fails the beat.
func TestATSHeartbeatThroughUnitAttentions(t *testing.T) {
	lu := newFakeLU(16, 512)
	a, clock, log := clockedLock(t, lu, "a", mpath.ShareExclusive)
	before, _ := parseATS(lu.data[15*512:])
	lu.mu.Lock()
	lu.attentions = 5 // five in a row on the heartbeat's COMPARE AND WRITE
	lu.mu.Unlock()
	clock.add(atsBeat)
	a.beatOnce()
	require.NoError(t, a.check())
	assert.Empty(t, log.kinds(), "no heartbeat failed")
	after, _ := parseATS(lu.data[15*512:])
	assert.True(t, after[0].beat.After(before[0].beat), "the heartbeat was written through the unit attentions")
	lu.mu.Lock()
	assert.Zero(t, lu.attentions, "every unit attention was met")
	lu.attentions = atsRetries + 1 // one more than the bound
	lu.mu.Unlock()
	clock.add(atsBeat)
	a.beatOnce()
	assert.Equal(t, []string{"lock-heartbeat-failed"}, log.kinds(), "a path that keeps answering unit attentions fails the beat")
	log.mu.Lock()
	assert.Contains(t, log.events[0].Reason, "06/2a/06")
	log.mu.Unlock()
}

// fakeClock is the lock's clock in the lost-lock tests.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *fakeClock) add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// eventLog keeps the events a lock publishes.
type eventLog struct {
	mu     sync.Mutex
	events []mpath.Event
}

func (l *eventLog) publish(e mpath.Event) { l.mu.Lock(); l.events = append(l.events, e); l.mu.Unlock() }
func (l *eventLog) kinds() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []string
	for _, e := range l.events {
		out = append(out, e.Kind)
	}
	return out
}

// clockedLock is a lock on lu whose heartbeat is driven by hand
// (beatOnce) on a fake clock: no goroutine beats behind the test's back.
func clockedLock(t *testing.T, lu *fakeLU, dev, mode string) (*atsLock, *fakeClock, *eventLog) {
	t.Helper()
	clock := &fakeClock{t: time.Now()}
	log := &eventLog{}
	me := holder(dev, mode)
	me.PID = 2000 + int(dev[0])
	a, err := newATSLock(me, []atsBackend{lu}, log.publish)
	require.NoError(t, err)
	a.now = clock.now
	a.tick = time.Hour // the ticker never fires: the test calls beatOnce
	require.NoError(t, a.acquire(context.Background(), "iscsi://lu"))
	t.Cleanup(func() { a.release() })
	return a, clock, log
}

// fakeIO is a device that counts what reaches it.
type fakeIO struct {
	mu                    sync.Mutex
	reads, writes, others int
}

func (f *fakeIO) Name() string { return "d0" }
func (f *fakeIO) Size() int64  { return 1 << 20 }
func (f *fakeIO) ReadAt(_ context.Context, p []byte, _ int64) (int, error) {
	f.mu.Lock()
	f.reads++
	f.mu.Unlock()
	return len(p), nil
}
func (f *fakeIO) WriteAt(_ context.Context, p []byte, _ int64) (int, error) {
	f.mu.Lock()
	f.writes++
	f.mu.Unlock()
	return len(p), nil
}
func (f *fakeIO) Flush(context.Context) error { f.mu.Lock(); f.others++; f.mu.Unlock(); return nil }
func (f *fakeIO) Discard(context.Context, int64, int64) error {
	f.mu.Lock()
	f.others++
	f.mu.Unlock()
	return nil
}
func (f *fakeIO) WriteZeroes(context.Context, int64, int64) error {
	f.mu.Lock()
	f.others++
	f.mu.Unlock()
	return nil
}

// requireFenced: every write-like operation of f fails with ENOLCK (as
// the application sees it) naming why; reads go on.
func requireFenced(t *testing.T, f IO, inner *fakeIO, want string) {
	t.Helper()
	ctx := context.Background()
	_, err := f.WriteAt(ctx, make([]byte, 512), 0)
	require.Error(t, err)
	assert.Equal(t, syscall.ENOLCK, fusedev.ToErrno(err), "a write after the lock is lost: %v", err)
	assert.Contains(t, err.Error(), want)
	assert.Contains(t, err.Error(), "unmount this mount and mount again")
	for _, op := range []func() error{
		func() error { return f.Flush(ctx) },
		func() error { return f.Discard(ctx, 0, 512) },
		func() error { return f.WriteZeroes(ctx, 0, 512) },
	} {
		assert.Equal(t, syscall.ENOLCK, fusedev.ToErrno(op()))
	}
	_, err = f.ReadAt(ctx, make([]byte, 512), 0)
	assert.NoError(t, err, "reads go on")
	inner.mu.Lock()
	defer inner.mu.Unlock()
	assert.Zero(t, inner.writes+inner.others, "nothing write-like reached the device")
	assert.Positive(t, inner.reads)
}

// TestATSLostWhenHeartbeatFails: a heartbeat that fails once (one slow
// or failed write) only warns, and the next one that succeeds clears the
// warning; a heartbeat that cannot be written for atsStale-atsBeat loses
// the lock: writes fail with ENOLCK, reads go on, lock-lost is published
// once, the heartbeat stops, and the loss stays when the LU is back.
func TestATSLostWhenHeartbeatFails(t *testing.T) {
	lu := newFakeLU(16, 512)
	a, clock, log := clockedLock(t, lu, "a", mpath.ShareExclusive)
	inner := &fakeIO{}
	f := &fenced{IO: inner, lock: a}

	lu.mu.Lock()
	lu.down = true
	lu.mu.Unlock()
	clock.add(atsBeat)
	a.beatOnce()
	require.NoError(t, a.check(), "one failed heartbeat is no lost lock")
	_, err := f.WriteAt(context.Background(), make([]byte, 512), 0)
	require.NoError(t, err, "writes go on while the lock may still be proven")
	lu.mu.Lock()
	lu.down = false
	lu.mu.Unlock()
	clock.add(atsBeat)
	a.beatOnce()
	require.NoError(t, a.check())
	assert.Equal(t, []string{"lock-heartbeat-failed", "lock-heartbeat-ok"}, log.kinds())

	lu.mu.Lock()
	lu.down = true
	lu.mu.Unlock()
	for i := 0; i < 2; i++ {
		clock.add(atsBeat)
		a.beatOnce()
		require.NoError(t, a.check(), "beat %d: %v since the last heartbeat", i+1, time.Duration(i+1)*atsBeat)
	}
	clock.add(atsBeat)
	a.beatOnce()
	err = a.check()
	require.Error(t, err, "%v without a heartbeat: lost", atsStale-atsBeat)
	var lost *LockLostError
	require.ErrorAs(t, err, &lost)
	assert.Nil(t, lost.Holder, "nobody took it over yet")
	assert.Contains(t, lost.Error(), "no heartbeat could be written")
	inner.writes = 0
	requireFenced(t, f, inner, "no heartbeat could be written")
	assert.Equal(t, []string{"lock-heartbeat-failed", "lock-heartbeat-ok", "lock-heartbeat-failed", "lock-lost"}, log.kinds())

	lu.mu.Lock()
	lu.down = false
	lu.mu.Unlock()
	clock.add(atsBeat)
	a.beatOnce()
	assert.Error(t, a.check(), "a lost lock stays lost when the LU is back")
	assert.Len(t, log.kinds(), 4, "lock-lost is published once")
}

// TestATSLostWhenTakenOver: another host that took the entry over (as
// after a stalled heartbeat) makes the next heartbeat lose the lock,
// naming the new holder; this host's release leaves the new holder's
// entry alone.
func TestATSLostWhenTakenOver(t *testing.T) {
	lu := newFakeLU(16, 512)
	a, clock, log := clockedLock(t, lu, "a", mpath.ShareExclusive)

	// Host b writes its entry over a's, as it would once a's heartbeat
	// went stale.
	lu.mu.Lock()
	rec, err := parseATS(lu.data[15*512:])
	require.NoError(t, err)
	rec[0] = atsSlot{beat: time.Now(), pid: 77, mode: mpath.ShareExclusive, host: "host-b", device: "d0"}
	copy(lu.data[15*512:], rec.encode(512))
	lu.mu.Unlock()

	clock.add(atsBeat)
	a.beatOnce()
	err = a.check()
	var lost *LockLostError
	require.ErrorAs(t, err, &lost)
	require.NotNil(t, lost.Holder)
	assert.Equal(t, "host-b", lost.Holder.Host)
	assert.Contains(t, err.Error(), "host host-b (pid 77")
	assert.Contains(t, log.kinds(), "lock-lost")
	inner := &fakeIO{}
	requireFenced(t, &fenced{IO: inner, lock: a}, inner, "host host-b (pid 77")

	require.NoError(t, a.release())
	after, err := parseATS(lu.data[15*512:])
	require.NoError(t, err)
	assert.Equal(t, "host-b", after[0].host, "the old holder's release leaves the new holder's entry")
	assert.Equal(t, 77, after[0].pid)
}

// TestATSLostToExcludingHolder: a multi-writer host whose entry went
// stale while an exclusive host took slot 0 finds its own entry still in
// place but excluded: lost, naming the exclusive holder. A record
// overwritten with data is lost too.
func TestATSLostToExcludingHolder(t *testing.T) {
	lu := newFakeLU(16, 512)
	a, clock, _ := clockedLock(t, lu, "a", mpath.ShareMultiWriter)
	lu.mu.Lock()
	rec, _ := parseATS(lu.data[15*512:])
	rec[0] = atsSlot{beat: time.Now(), pid: 88, mode: mpath.ShareExclusive, host: "host-x", device: "d0"}
	copy(lu.data[15*512:], rec.encode(512))
	lu.mu.Unlock()
	clock.add(atsBeat)
	a.beatOnce()
	var lost *LockLostError
	require.ErrorAs(t, a.check(), &lost)
	assert.Equal(t, "host-x", lost.Holder.Host)
	assert.Contains(t, lost.Why, "excludes")

	lu2 := newFakeLU(16, 512)
	b, clock2, _ := clockedLock(t, lu2, "b", mpath.ShareExclusive)
	lu2.mu.Lock()
	copy(lu2.data[15*512:], "a file system wrote here")
	lu2.mu.Unlock()
	clock2.add(atsBeat)
	b.beatOnce()
	require.ErrorAs(t, b.check(), &lost)
	assert.Contains(t, lost.Why, "no longer holds a lock record")
}

// TestATSHeldNotFenced: while the heartbeat is written, writes pass the
// fence and nothing is lost, however long the lock is held.
func TestATSHeldNotFenced(t *testing.T) {
	lu := newFakeLU(16, 512)
	a, clock, log := clockedLock(t, lu, "a", mpath.ShareExclusive)
	inner := &fakeIO{}
	f := &fenced{IO: inner, lock: a}
	for i := 0; i < 20; i++ {
		clock.add(atsBeat)
		a.beatOnce()
		_, err := f.WriteAt(context.Background(), make([]byte, 512), 0)
		require.NoError(t, err)
	}
	assert.Equal(t, 20, inner.writes)
	assert.Empty(t, log.kinds())
}

// waitingIO is a device whose writes wait for a path that never comes
// (All-Paths-Down): until their context ends.
type waitingIO struct {
	fakeIO
	started chan struct{}
}

func (w *waitingIO) WriteAt(ctx context.Context, _ []byte, _ int64) (int, error) {
	w.started <- struct{}{}
	<-ctx.Done()
	return 0, ctx.Err()
}

// TestATSLostGivesUpWritesInFlight: a write that waits for a path when
// the lock is lost is given up with ENOLCK, not sent once a path returns.
func TestATSLostGivesUpWritesInFlight(t *testing.T) {
	lu := newFakeLU(16, 512)
	a, _, _ := clockedLock(t, lu, "a", mpath.ShareExclusive)
	inner := &waitingIO{started: make(chan struct{}, 1)}
	f := &fenced{IO: inner, lock: a}
	errc := make(chan error, 1)
	go func() {
		_, err := f.WriteAt(context.Background(), make([]byte, 512), 0)
		errc <- err
	}()
	<-inner.started
	a.loseLock("a test took it", nil)
	select {
	case err := <-errc:
		assert.Equal(t, syscall.ENOLCK, fusedev.ToErrno(err), "%v", err)
		assert.Contains(t, err.Error(), "a test took it")
	case <-time.After(time.Minute):
		t.Fatal("the write in flight was not given up when the lock was lost")
	}
}

// luBackend is a fakeLU as a path's backend (what lockLU finds the lock
// paths through); noATS makes it refuse COMPARE AND WRITE as tgt does.
type luBackend struct {
	*fakeLU
	noATS bool
}

func (b *luBackend) WriteAt(_ context.Context, p []byte, off int64) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return copy(b.data[off:], p), nil
}
func (b *luBackend) Flush(context.Context) error { return nil }
func (b *luBackend) Close() error                { return nil }
func (b *luBackend) CompareAndWrite(ctx context.Context, lba uint64, compare, write []byte) error {
	if b.noATS {
		return &ioerr.Error{Class: ioerr.ClassDeviceError, Op: "compare and write", Sense: &ioerr.Sense{Key: ioerr.SenseIllegalRequest, ASC: 0x20}}
	}
	return b.fakeLU.CompareAndWrite(ctx, lba, compare, write)
}

// TestLockLUAuto: lock_sector auto locks an LU whose last block is empty;
// one whose last block holds data, or that refuses COMPARE AND WRITE, is
// left unlocked with a warning, an unlocked entry and a lock-none event;
// last refuses the data-bearing LU; none takes no lock.
func TestLockLUAuto(t *testing.T) {
	const uri = "iscsi://127.0.0.1/iqn.2026-01.x:t/0?initiator=iqn.2026-01.x:a"
	lockLU := func(t *testing.T, b *luBackend, sector string) (*shareLock, []mpath.Event, error) {
		t.Helper()
		h := New(Options{})
		sub := h.Events().Subscribe(16)
		defer sub.Close()
		dc := DeviceConfig{Name: "d0", LockSector: sector, Paths: []PathConfig{{URI: uri}}}
		require.NoError(t, dc.Validate("devices[0]"))
		s, err := h.lockStores(dc, []opened{{uri: uri, raw: b}})
		require.NoError(t, err)
		t.Cleanup(func() { s.release() })
		if dc.locksLU() {
			err = h.lockLU(context.Background(), s, dc, []opened{{uri: uri, raw: b}})
		}
		var evs []mpath.Event
		for len(sub.C) > 0 {
			evs = append(evs, <-sub.C)
		}
		return s, evs, err
	}

	s, evs, err := lockLU(t, &luBackend{fakeLU: newFakeLU(16, 512)}, "")
	require.NoError(t, err)
	require.NotNil(t, s.ats, "an empty last block is locked by default")
	assert.Empty(t, s.warnings)
	assert.Equal(t, "held", s.status().LULock)
	require.Len(t, evs, 1)
	assert.Equal(t, "lock-taken", evs[0].Kind)

	data := newFakeLU(16, 512)
	copy(data.data[15*512:], bytes.Repeat([]byte("fs"), 256))
	s, evs, err = lockLU(t, &luBackend{fakeLU: data}, LockSectorAuto)
	require.NoError(t, err)
	assert.Nil(t, s.ats, "a last block holding data is not locked")
	require.Len(t, s.warnings, 1)
	assert.Contains(t, s.warnings[0], "LU iscsi://127.0.0.1/iqn.2026-01.x:t/0 is not locked: its last block holds data")
	assert.Contains(t, s.warnings[0], "--lock-sector last")
	assert.Contains(t, s.warnings[0], "--lock-sector none")
	st := s.status()
	assert.Empty(t, st.LULock)
	require.Len(t, st.Unlocked, 1)
	assert.Contains(t, st.Unlocked[0], uri+": lock_sector auto: its last block holds data")
	require.Len(t, evs, 1)
	assert.Equal(t, "lock-none", evs[0].Kind)
	assert.Equal(t, bytes.Repeat([]byte("fs"), 256), data.data[15*512:], "the data is left as it was")

	_, evs, err = lockLU(t, &luBackend{fakeLU: data}, LockSectorLast)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "holds data, not an mpathfs lock record")
	assert.Empty(t, evs)

	s, _, err = lockLU(t, &luBackend{fakeLU: newFakeLU(16, 512), noATS: true}, LockSectorAuto)
	require.NoError(t, err)
	assert.Nil(t, s.ats)
	require.Len(t, s.warnings, 1)
	assert.Contains(t, s.warnings[0], "does not support COMPARE AND WRITE")

	s, evs, err = lockLU(t, &luBackend{fakeLU: newFakeLU(16, 512)}, LockSectorNone)
	require.NoError(t, err)
	assert.Nil(t, s.ats)
	assert.Empty(t, s.warnings)
	require.Len(t, evs, 1)
	assert.Equal(t, "lock-none", evs[0].Kind, "none: the iSCSI path is listed as unlocked")

	bad := DeviceConfig{Name: "d0", LockSector: "first", Paths: []PathConfig{{URI: uri}}}
	assert.ErrorContains(t, bad.Validate("devices[0]"), `lock_sector "first": want auto (the default`)
}
