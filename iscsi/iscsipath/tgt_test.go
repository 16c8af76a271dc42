package iscsipath

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/mpathfs/mpathfs/backends"
	"github.com/mpathfs/mpathfs/internal/freezeproxy"
	"github.com/mpathfs/mpathfs/internal/tgtd"
	"github.com/mpathfs/mpathfs/ioerr"
)

const tgtIQN = "iqn.2026-01.io.mpathfs.test:disk"

// tgtTarget starts a tgtd with a target holding LU 1 (16 MiB) and LU 2
// (8 MiB, thin provisioned: UNMAP works).
func tgtTarget(t *testing.T) *tgtd.Daemon {
	t.Helper()
	d := tgtd.Start(t)
	tg := d.AddTarget(tgtIQN)
	tg.AddLU(1, 16<<20)
	tg.AddLU(2, 8<<20)
	d.Adm("--op", "update", "--mode", "logicalunit", "--tid", "1", "--lun", "2", "--params", "thin_provisioning=1")
	return d
}

func open(t *testing.T, uri string) backends.Backend {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	b, err := backends.Open(ctx, uri)
	require.NoError(t, err)
	t.Cleanup(func() { b.Close() })
	return b
}

func pattern(n int, seed byte) []byte {
	p := make([]byte, n)
	for i := range p {
		p[i] = byte(i*7) ^ seed
	}
	return p
}

func TestTgtBackendIO(t *testing.T) {
	d := tgtTarget(t)
	b := open(t, fmt.Sprintf("iscsi://%s/%s/1?initiator=iqn.2026-01.io.mpathfs.test:host-a", d.Addr, tgtIQN))
	ctx := context.Background()
	require.Equal(t, int64(16<<20), b.Size())
	require.NoError(t, b.(backends.Prober).Probe(ctx))

	// a write larger than the maximum transfer is split; read it back
	// whole, and unaligned pieces of it
	data := pattern(3<<20, 1)
	n, err := b.WriteAt(ctx, data, 1<<20)
	require.NoError(t, err)
	require.Equal(t, len(data), n)
	require.NoError(t, b.Flush(ctx))
	back := make([]byte, len(data))
	n, err = b.ReadAt(ctx, back, 1<<20)
	require.NoError(t, err)
	require.Equal(t, len(data), n)
	require.True(t, bytes.Equal(data, back), "read back differs")
	piece := make([]byte, 1000)
	_, err = b.ReadAt(ctx, piece, 1<<20+333)
	require.NoError(t, err)
	require.Equal(t, data[333:1333], piece)

	// the edges of the LU
	_, err = b.ReadAt(ctx, make([]byte, 4096), 16<<20-2048)
	require.Equal(t, ioerr.ClassDeviceError, ioerr.ClassOf(err))
	_, err = b.WriteAt(ctx, make([]byte, 100), 0)
	require.ErrorContains(t, err, "not aligned")

	// WRITE SAME zeroes a range
	require.True(t, backends.Can(b, backends.CapWriteZeroes))
	require.NoError(t, b.(backends.ZeroWriter).WriteZeroes(ctx, 1<<20, 64<<10))
	_, err = b.ReadAt(ctx, back[:128<<10], 1<<20)
	require.NoError(t, err)
	require.Equal(t, make([]byte, 64<<10), back[:64<<10])
	require.Equal(t, data[64<<10:128<<10], back[64<<10:128<<10])

	// LU 1 is thick: no UNMAP
	require.False(t, backends.Can(b, backends.CapDiscard))
}

func TestTgtBackendDiscard(t *testing.T) {
	d := tgtTarget(t)
	b := open(t, fmt.Sprintf("iscsi://%s/%s/2", d.Addr, tgtIQN))
	ctx := context.Background()
	require.True(t, backends.Can(b, backends.CapDiscard))
	_, err := b.WriteAt(ctx, pattern(1<<20, 3), 0)
	require.NoError(t, err)
	require.NoError(t, b.(backends.Discarder).Discard(ctx, 0, 512<<10))
	back := make([]byte, 1<<20)
	_, err = b.ReadAt(ctx, back, 0)
	require.NoError(t, err)
	require.Equal(t, make([]byte, 512<<10), back[:512<<10])
	require.Equal(t, pattern(1<<20, 3)[512<<10:], back[512<<10:])
}

// TestTgtIdentity: two sessions to one LU (two paths, as --group-by-wwid
// sees them) report the same WWID from VPD 0x83; another LU another one.
func TestTgtIdentity(t *testing.T) {
	d := tgtTarget(t)
	ctx := context.Background()
	a := open(t, fmt.Sprintf("iscsi://%s/%s/1", d.Addr, tgtIQN))
	b := open(t, fmt.Sprintf("iscsi://%s/%s/1?initiator=iqn.2026-01.io.mpathfs.test:other", d.Addr, tgtIQN))
	c := open(t, fmt.Sprintf("iscsi://%s/%s/2", d.Addr, tgtIQN))
	ia, err := a.(backends.Inquirer).Inquiry(ctx)
	require.NoError(t, err)
	ib, err := b.(backends.Inquirer).Inquiry(ctx)
	require.NoError(t, err)
	ic, err := c.(backends.Inquirer).Inquiry(ctx)
	require.NoError(t, err)
	require.NotEmpty(t, ia.WWID)
	require.Equal(t, ia.WWID, ib.WWID)
	require.NotEqual(t, ia.WWID, ic.WWID)
	// one LU, one cache: a flush on either path covers both
	require.NotEmpty(t, a.(backends.CacheSharer).CacheDomain())
	require.Equal(t, a.(backends.CacheSharer).CacheDomain(), b.(backends.CacheSharer).CacheDomain())
	require.NotEqual(t, a.(backends.CacheSharer).CacheDomain(), c.(backends.CacheSharer).CacheDomain())
	require.Equal(t, "iscsi", ia.Transport)
	require.Equal(t, "IET", ia.Vendor)
	require.NotEmpty(t, ia.Serial)
	// tgt reports no target port groups: a plain Backend, no ALUA face
	_, isALUA := a.(*ALUABackend)
	require.False(t, isALUA)
}

// TestTgtReservationConflict: host A registers and reserves Write
// Exclusive; host B's write meets RESERVATION CONFLICT, a device error
// that matches ioerr.ErrReservationConflict (no failover), while its reads
// pass; once A releases, B writes.
func TestTgtReservationConflict(t *testing.T) {
	d := tgtTarget(t)
	ctx := context.Background()
	a := open(t, fmt.Sprintf("iscsi://%s/%s/1?initiator=iqn.2026-01.io.mpathfs.test:host-a", d.Addr, tgtIQN)).(*Backend)
	b := open(t, fmt.Sprintf("iscsi://%s/%s/1?initiator=iqn.2026-01.io.mpathfs.test:host-b", d.Addr, tgtIQN)).(*Backend)
	require.NoError(t, a.PRRegister(ctx, 0, 0xaaaa, false))
	require.NoError(t, b.PRRegister(ctx, 0, 0xbbbb, true))
	_, keys, err := a.PRReadKeys(ctx)
	require.NoError(t, err)
	require.ElementsMatch(t, []uint64{0xaaaa, 0xbbbb}, keys)
	require.NoError(t, a.PRReserve(ctx, 0xaaaa, PRWriteExclusive))
	r, err := b.PRReadReservation(ctx)
	require.NoError(t, err)
	require.Equal(t, Reservation{Generation: r.Generation, Held: true, Key: 0xaaaa, Type: PRWriteExclusive}, r)

	_, err = b.WriteAt(ctx, make([]byte, 4096), 0)
	require.ErrorIs(t, err, ioerr.ErrReservationConflict)
	require.Equal(t, ioerr.ClassConflict, ioerr.ClassOf(err))
	_, err = b.ReadAt(ctx, make([]byte, 4096), 0)
	require.NoError(t, err)
	_, err = a.WriteAt(ctx, make([]byte, 4096), 0)
	require.NoError(t, err)

	require.NoError(t, a.PRRelease(ctx, 0xaaaa, PRWriteExclusive))
	_, err = b.WriteAt(ctx, make([]byte, 4096), 0)
	require.NoError(t, err)
	// B preempts A: A's key is gone (tgt refuses PREEMPT AND ABORT with
	// INVALID FIELD IN CDB, so plain PREEMPT)
	require.NoError(t, b.PRReserve(ctx, 0xbbbb, PRWriteExclusiveRegOnly))
	require.NoError(t, b.PRPreempt(ctx, 0xbbbb, 0xaaaa, PRWriteExclusiveRegOnly, false))
	_, keys, err = b.PRReadKeys(ctx)
	require.NoError(t, err)
	require.Equal(t, []uint64{0xbbbb}, keys)
	_, err = a.WriteAt(ctx, make([]byte, 4096), 0)
	for ioerr.ClassOf(err) == ioerr.ClassRetryable { // the unit attention of the preemption first
		_, err = a.WriteAt(ctx, make([]byte, 4096), 0)
	}
	require.ErrorIs(t, err, ioerr.ErrReservationConflict)
	require.NoError(t, b.PRClear(ctx, 0xbbbb))
}

// TestTgtFence: the network to tgtd swallows everything while a write is
// out: the write fails with a backends.Pending that stays unsettled while
// the path is down; the path checker's Probe reinstates the session once
// the network carries new connections, which settles it.
func TestTgtFence(t *testing.T) {
	d := tgtTarget(t)
	px := freezeproxy.Start(t, "tcp", "127.0.0.1:0", d.Addr)
	b := open(t, fmt.Sprintf("iscsi://%s/%s/1", px.Addr(), tgtIQN)).(*Backend)
	b.sess.SetTMFTimeout(300 * time.Millisecond)
	ctx := context.Background()
	_, err := b.WriteAt(ctx, pattern(4096, 5), 0)
	require.NoError(t, err)
	px.Freeze()
	wctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancel()
	_, err = b.WriteAt(wctx, pattern(4096, 6), 0)
	require.Error(t, err)
	p, ok := errors.AsType[backends.Pending](err)
	require.True(t, ok, "a write the target may hold must be Pending: %v", err)
	require.Equal(t, ioerr.ClassPathFailure, ioerr.ClassOf(err))
	require.Eventually(t, func() bool { return !b.sess.Alive() }, 10*time.Second, 10*time.Millisecond)
	pctx, pcancel := context.WithTimeout(ctx, 300*time.Millisecond)
	require.Error(t, b.Probe(pctx), "probe through a frozen network")
	pcancel()
	select {
	case <-p.Settled():
		t.Fatal("settled with the target unreachable")
	default:
	}
	px.Thaw()
	require.NoError(t, b.Probe(ctx))
	select {
	case <-p.Settled():
	default:
		t.Fatalf("not settled after the probe reinstated the session: %s", p.WaitingFor())
	}
	back := make([]byte, 4096)
	_, err = b.ReadAt(ctx, back, 0)
	require.NoError(t, err)
	require.True(t, bytes.Equal(back, pattern(4096, 5)) || bytes.Equal(back, pattern(4096, 6)))
}

// TestTgtConnectionKilled: the target closes the path's connection while
// writes are out: they fail as path failures (Pending until the session is
// reinstated), and the next Probe logs in again with the same ISID, which
// settles them.
func TestTgtConnectionKilled(t *testing.T) {
	d := tgtd.Start(t)
	tg := d.AddTarget(tgtIQN)
	tg.AddLU(1, 16<<20)
	b := open(t, fmt.Sprintf("iscsi://%s/%s/1?initiator=iqn.2026-01.io.mpathfs.test:victim", d.Addr, tgtIQN)).(*Backend)
	ctx := context.Background()
	require.NoError(t, b.Probe(ctx))
	require.Equal(t, 1, tg.DropInitiator("iqn.2026-01.io.mpathfs.test:victim"))
	require.Eventually(t, func() bool { return !b.sess.Alive() }, 10*time.Second, 10*time.Millisecond)
	_, err := b.WriteAt(ctx, make([]byte, 4096), 0)
	require.Equal(t, ioerr.ClassPathFailure, ioerr.ClassOf(err), "%v", err)
	p, ok := errors.AsType[backends.Pending](err)
	require.True(t, ok)
	select {
	case <-p.Settled(): // never left: settled at once
	default:
		t.Fatal("a write that never left must be settled")
	}
	isid := b.sess.ISID()
	require.NoError(t, b.Probe(ctx))
	require.Equal(t, isid, b.sess.ISID())
	_, err = b.WriteAt(ctx, make([]byte, 4096), 0)
	require.NoError(t, err)
}
