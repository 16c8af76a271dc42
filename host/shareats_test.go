package host

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/mpathfs/mpathfs/iscsi/iscsipath"
	"github.com/mpathfs/mpathfs/mpath"
)

// fakeLU is an LU that keeps COMPARE AND WRITE atomic, as an array does.
type fakeLU struct {
	mu    sync.Mutex
	data  []byte
	block int
	down  bool
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
	return copy(p, l.data[off:]), nil
}

func (l *fakeLU) CompareAndWrite(_ context.Context, lba uint64, compare, write []byte) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.down {
		return errors.New("path down")
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

	ok, err := a.update(context.Background(), func(e *atsSlot) { e.beat = time.Now() })
	require.NoError(t, err)
	assert.False(t, ok, "the old holder finds its entry is another's")
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
	a.paths = []atsBackend{down, lu}
	before, _ := parseATS(lu.data[7*512:])
	time.Sleep(time.Millisecond)
	ok, err := a.update(context.Background(), func(e *atsSlot) { e.beat = time.Now() })
	require.NoError(t, err)
	require.True(t, ok)
	after, _ := parseATS(lu.data[7*512:])
	assert.True(t, after[1].beat.After(before[1].beat), "the heartbeat moved")
	assert.Equal(t, before[2], after[2], "the other host's entry is kept")
}
