package iscsi_test

import (
	"bytes"
	"context"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/mpathfs/mpathfs/iscsi"
	"github.com/mpathfs/mpathfs/iscsi/iscsitest"
	"github.com/mpathfs/mpathfs/scsi"
)

// quickRAM is a RAM disk that reports its READs and WRITEs quick
// (iscsi.QuickHandler) except those at LBA slow, and records for each
// command's LBA whether Execute ran on the connection's reader goroutine.
type quickRAM struct {
	*iscsitest.RAM
	slow byte

	mu       sync.Mutex
	onReader map[byte]bool
}

// serveQuick serves a target over q (the quick handler) on a free port.
func serveQuick(t *testing.T, q *quickRAM) *testTarget {
	t.Helper()
	tgt, err := iscsi.NewTarget(iscsi.TargetConfig{Name: targetName}, q)
	require.NoError(t, err)
	return serveTarget(t, tgt, q.RAM, &logBuf{})
}

func newQuickRAM(slow byte) *quickRAM {
	return &quickRAM{RAM: iscsitest.NewRAM(1, 64, 512), slow: slow, onReader: map[byte]bool{}}
}

func (q *quickRAM) Quick(_ scsi.Nexus, cmd *scsi.Command) bool {
	return (cmd.CDB[0] == 0x28 || cmd.CDB[0] == 0x2a) && cmd.CDB[5] != q.slow
}

func (q *quickRAM) Execute(ctx context.Context, cmd *scsi.Command) scsi.Response {
	buf := make([]byte, 64<<10)
	stack := string(buf[:runtime.Stack(buf, false)])
	q.mu.Lock()
	if len(cmd.CDB) >= 6 {
		q.onReader[cmd.CDB[5]] = strings.Contains(stack, "iscsi.(*conn).fullFeature")
	}
	q.mu.Unlock()
	return q.RAM.Execute(ctx, cmd)
}

func (q *quickRAM) ranOnReader(lba byte) (on, seen bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	on, seen = q.onReader[lba]
	return on, seen
}

// A quick command that is the only one in progress runs on the reader
// goroutine; with an interception hook set (it may delay commands), or
// for a command the handler does not call quick, it gets a goroutine of
// its own. The data is the same either way.
func TestQuickCommandRunsOnReader(t *testing.T) {
	q := newQuickRAM(9)
	tt := serveQuick(t, q)
	r := dial(t, tt.addr)
	r.mustLogin("iqn.2026-01.org.test:quick", 1)

	st, _, _ := r.response(r.command(0, cdbWrite10(3, 1), false, true, 512, block('q')))
	require.Equal(t, uint8(0), st)
	on, seen := q.ranOnReader(3)
	require.True(t, seen)
	assert.True(t, on, "a quick write alone in its session runs on the reader")
	st, data, _ := r.response(r.command(0, cdbRead10(3, 1), true, false, 512, nil))
	require.Equal(t, uint8(0), st)
	assert.True(t, bytes.Equal(block('q'), data))

	st, _, _ = r.response(r.command(0, cdbWrite10(9, 1), false, true, 512, block('s')))
	require.Equal(t, uint8(0), st)
	on, _ = q.ranOnReader(9)
	assert.False(t, on, "a command the handler does not call quick runs on its own goroutine")

	tt.SetIntercept(func(scsi.Nexus, *scsi.Command) (time.Duration, *scsi.Response, bool) { return 0, nil, false })
	st, _, _ = r.response(r.command(0, cdbWrite10(4, 1), false, true, 512, block('i')))
	require.Equal(t, uint8(0), st)
	on, _ = q.ranOnReader(4)
	assert.False(t, on, "with an interception hook set, no command runs on the reader")
	tt.SetIntercept(nil)
	assert.Equal(t, block('i'), q.Disk(0)[4*512:5*512])
}

// While a slow command is held, a quick one does not run on the reader
// (it is not alone), and the held command can still be aborted: the
// reader goes on reading.
func TestQuickCommandNotAloneAndAbort(t *testing.T) {
	q := newQuickRAM(7)
	started := make(chan struct{}, 1)
	q.Hook = func(ctx context.Context, cmd *scsi.Command) *scsi.Response {
		if cmd.CDB[0] != 0x2a || cmd.CDB[5] != 7 {
			return nil
		}
		started <- struct{}{}
		<-ctx.Done()
		return &scsi.Response{Status: scsi.StatusTaskAborted}
	}
	tt := serveQuick(t, q)
	r := dial(t, tt.addr)
	r.mustLogin("iqn.2026-01.org.test:notalone", 1)
	sn := r.cmdSN
	held := r.command(0, cdbWrite10(7, 1), false, true, 512, block('h'))
	<-started
	st, _, _ := r.response(r.command(0, cdbWrite10(5, 1), false, true, 512, block('w')))
	require.Equal(t, uint8(0), st)
	on, seen := q.ranOnReader(5)
	require.True(t, seen)
	assert.False(t, on, "a quick command with another in progress runs on its own goroutine")
	require.Equal(t, iscsi.TMFRespComplete, r.tmf(iscsi.TMFAbortTask, 0, held, sn))
	assert.Equal(t, make([]byte, 512), q.Disk(0)[7*512:8*512], "the aborted write never reached the medium")
}

// The drop hook drops the connection a command came on, and, unlike an
// interception hook, leaves quick commands on the reader.
func TestDropHook(t *testing.T) {
	q := newQuickRAM(9)
	tt := serveQuick(t, q)
	tt.SetDropHook(func(n scsi.Nexus, _ *scsi.Command) bool { return strings.HasSuffix(n.Initiator, ":drop") })
	keep := dial(t, tt.addr)
	keep.mustLogin("iqn.2026-01.org.test:keep", 1)
	st, _, _ := keep.response(keep.command(0, cdbWrite10(2, 1), false, true, 512, block('k')))
	require.Equal(t, uint8(0), st)
	on, _ := q.ranOnReader(2)
	assert.True(t, on, "a drop hook keeps quick commands on the reader")
	drop := dial(t, tt.addr)
	drop.mustLogin("iqn.2026-01.org.test:drop", 2)
	drop.command(0, cdbWrite10(6, 1), false, true, 512, block('d'))
	assert.True(t, drop.closed())
	assert.Equal(t, make([]byte, 512), q.Disk(0)[6*512:7*512], "the dropped command never reached the medium")
	tt.SetDropHook(nil)
	st, _, _ = keep.response(keep.command(0, cdbWrite10(6, 1), false, true, 512, block('k')))
	assert.Equal(t, uint8(0), st)
}

// overwriteReadBuffer sends a NOP-Out ping carrying a block of 'z' and
// waits for its echo: by then the target's reader has read a PDU over the
// buffer an earlier command's immediate data was read into.
func overwriteReadBuffer(r *rawInit) {
	r.t.Helper()
	r.send(&iscsi.NOPOut{Immediate: true, ITT: r.nextITT(), TTT: iscsi.ReservedTag, CmdSN: r.cmdSN}, block('z'))
	for {
		p := r.recv()
		if p.BHS.Opcode() == iscsi.OpNOPIn {
			require.Equal(r.t, block('z'), p.Data)
			return
		}
	}
}

// A write whose data all came as immediate data and which waits for its
// CmdSN turn keeps its data while the reader reads the PDUs after it (the
// reader lends a quick command the data where it read it, and copies it
// for a command that does not run at once); an ABORT TASK aimed at such
// a quick write, waiting behind the gap, means it never executes.
func TestQuickWriteBehindGap(t *testing.T) {
	q := newQuickRAM(99)
	tt := serveQuick(t, q)
	r := dial(t, tt.addr)
	r.mustLogin("iqn.2026-01.org.test:gap", 1)

	gap := r.cmdSN
	r.cmdSN++
	kept := r.command(0, cdbWrite10(3, 1), false, true, 512, block('a'))
	abortedSN := r.cmdSN
	aborted := r.command(0, cdbWrite10(4, 1), false, true, 512, block('x'))
	overwriteReadBuffer(r)
	require.Equal(t, iscsi.TMFRespComplete, r.tmf(iscsi.TMFAbortTask, 0, aborted, abortedSN))
	overwriteReadBuffer(r)
	_, seen := q.ranOnReader(3)
	require.False(t, seen, "the write behind the gap waits for its turn")

	next := r.cmdSN
	r.cmdSN = gap
	tur := r.command(0, make([]byte, 6), false, false, 0, nil)
	r.cmdSN = next
	got := map[uint32]uint8{}
	for len(got) < 2 {
		p := r.recv()
		if p.BHS.Opcode() != iscsi.OpSCSIResp {
			continue
		}
		var m iscsi.SCSIResponse
		m.Decode(&p.BHS)
		got[m.ITT] = m.Status
	}
	assert.Equal(t, map[uint32]uint8{tur: 0, kept: 0}, got, "the aborted write is not answered")
	assert.Equal(t, block('a'), q.Disk(0)[3*512:4*512], "the write behind the gap wrote its own data")
	_, seen = q.ranOnReader(4)
	assert.False(t, seen, "the aborted quick write never executed")
	assert.Equal(t, make([]byte, 512), q.Disk(0)[4*512:5*512])
}

// A quick write that is not alone runs on a goroutine of its own, with its
// own copy of the data: the reader reading on meanwhile does not change
// what it writes.
func TestQuickWriteOnGoroutineOwnsItsData(t *testing.T) {
	q := newQuickRAM(7)
	held, reached, release := make(chan struct{}, 1), make(chan struct{}, 1), make(chan struct{})
	q.Hook = func(ctx context.Context, cmd *scsi.Command) *scsi.Response {
		switch {
		case cmd.CDB[0] == 0x2a && cmd.CDB[5] == 7:
			held <- struct{}{}
			<-ctx.Done()
			return &scsi.Response{Status: scsi.StatusTaskAborted}
		case cmd.CDB[0] == 0x2a && cmd.CDB[5] == 5:
			reached <- struct{}{}
			<-release
		}
		return nil
	}
	tt := serveQuick(t, q)
	r := dial(t, tt.addr)
	r.mustLogin("iqn.2026-01.org.test:owns", 1)
	sn := r.cmdSN
	slow := r.command(0, cdbWrite10(7, 1), false, true, 512, block('h'))
	<-held
	w := r.command(0, cdbWrite10(5, 1), false, true, 512, block('w'))
	<-reached // the target read the write: the ping comes in a read of its own
	overwriteReadBuffer(r)
	close(release)
	st, _, _ := r.response(w)
	require.Equal(t, uint8(0), st)
	on, seen := q.ranOnReader(5)
	require.True(t, seen)
	assert.False(t, on)
	assert.Equal(t, block('w'), q.Disk(0)[5*512:6*512])
	require.Equal(t, iscsi.TMFRespComplete, r.tmf(iscsi.TMFAbortTask, 0, slow, sn))
}

// Commands reach the interception hook (and the logical unit) in the order
// they started, even though each runs on a goroutine of its own.
func TestCommandsEnterInOrder(t *testing.T) {
	q := newQuickRAM(99)
	tt := serveQuick(t, q)
	var mu sync.Mutex
	var order []uint64
	tt.SetIntercept(func(_ scsi.Nexus, cmd *scsi.Command) (time.Duration, *scsi.Response, bool) {
		mu.Lock()
		order = append(order, cmd.Tag)
		mu.Unlock()
		return 0, nil, false
	})
	r := dial(t, tt.addr)
	r.mustLogin("iqn.2026-01.org.test:order", 1)
	var sent []uint64
	for i := range 24 {
		sent = append(sent, uint64(r.command(0, cdbWrite10(uint32(i), 1), false, true, 512, block(byte(i)))))
	}
	for range sent {
		p := r.recv()
		require.Equal(t, iscsi.OpSCSIResp, p.BHS.Opcode())
	}
	mu.Lock()
	defer mu.Unlock()
	assert.Equal(t, sent, order)
	for i := range 24 {
		assert.Equal(t, block(byte(i)), q.Disk(0)[i*512:(i+1)*512])
	}
}
