package iscsipath

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/mpathfs/mpathfs/backends"
	"github.com/mpathfs/mpathfs/ioerr"
	"github.com/mpathfs/mpathfs/iscsi"
	"github.com/mpathfs/mpathfs/iscsi/iscsitest"
	"github.com/mpathfs/mpathfs/scsi"
)

const ownIQN = "iqn.2026-01.io.mpathfs.test:own"

// ownTarget serves our own iSCSI target over a RAM disk (LUNs 0 and 1,
// 8 MiB each) on a free port of 127.0.0.1.
func ownTarget(t *testing.T, cfg iscsi.TargetConfig, ram *iscsitest.RAM) string {
	t.Helper()
	cfg.Name = ownIQN
	tg, err := iscsi.NewTarget(cfg, ram)
	require.NoError(t, err)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	done := make(chan error, 1)
	go func() { done <- tg.Serve(l, iscsi.Portal{TPGT: 1, RelativePort: 3, TPG: 7}) }()
	t.Cleanup(func() {
		require.NoError(t, tg.Close())
		<-done
	})
	return l.Addr().String()
}

// TestOwnTargetIO: our initiator against our target, with CRC32C digests
// and mutual CHAP: round trip, identity.
func TestOwnTargetIO(t *testing.T) {
	ram := iscsitest.NewRAM(2, 16384, 512)
	addr := ownTarget(t, iscsi.TargetConfig{RequireCHAP: true, CHAP: map[string]iscsi.CHAPSecret{
		"iqn.2026-01.io.mpathfs.test:host-a": {User: "alice", Secret: "alicesecret12", TargetUser: "own", TargetSecret: "targetsecret3"},
	}}, ram)
	b := open(t, fmt.Sprintf("iscsi://%s/%s/1?initiator=iqn.2026-01.io.mpathfs.test:host-a&chap_user=alice&chap_secret=alicesecret12&mutual_user=own&mutual_secret=targetsecret3&header_digest=crc32c&data_digest=crc32c", addr, ownIQN))
	ctx := context.Background()
	require.Equal(t, int64(8<<20), b.Size())
	data := pattern(2<<20, 9)
	_, err := b.WriteAt(ctx, data, 512<<10)
	require.NoError(t, err)
	require.Equal(t, data, ram.Disk(1)[512<<10:512<<10+len(data)])
	back := make([]byte, len(data))
	_, err = b.ReadAt(ctx, back, 512<<10)
	require.NoError(t, err)
	require.True(t, bytes.Equal(data, back))
	require.NoError(t, b.Flush(ctx))
	require.NoError(t, b.(backends.Prober).Probe(ctx))
	inq, err := b.(backends.Inquirer).Inquiry(ctx)
	require.NoError(t, err)
	require.Equal(t, "MPATHFS", inq.Vendor)
	require.Equal(t, "naa.6001405000000001", inq.WWID)
}

// TestOwnTargetAbortFences: the LU holds a write until it is aborted; the
// caller gives up, ABORT TASK is answered only after the LU dropped the
// write (the target's guarantee), which settles the Pending — and the
// write never reaches the disk.
func TestOwnTargetAbortFences(t *testing.T) {
	ram := iscsitest.NewRAM(2, 2048, 512)
	held := make(chan struct{}, 1)
	ram.Hook = func(ctx context.Context, cmd *scsi.Command) *scsi.Response {
		if cmd.CDB[0] == 0x8a && binary.BigEndian.Uint64(cmd.CDB[2:]) == 100 {
			held <- struct{}{}
			<-ctx.Done()
			return &scsi.Response{Status: scsi.StatusTaskAborted}
		}
		return nil
	}
	addr := ownTarget(t, iscsi.TargetConfig{}, ram)
	b := open(t, fmt.Sprintf("iscsi://%s/%s/1", addr, ownIQN)).(*Backend)
	ctx, cancel := context.WithCancel(context.Background())
	var err error
	var wg sync.WaitGroup
	wg.Go(func() { _, err = b.WriteAt(ctx, pattern(4096, 1), 100*512) })
	<-held
	cancel()
	wg.Wait()
	p, ok := errors.AsType[backends.Pending](err)
	require.True(t, ok, "%v", err)
	select {
	case <-p.Settled():
	case <-time.After(10 * time.Second):
		t.Fatalf("not settled: %s", p.WaitingFor())
	}
	require.Equal(t, make([]byte, 4096), ram.Disk(1)[100*512:100*512+4096], "an aborted write reached the disk")
	require.True(t, b.sess.Alive(), "ABORT TASK worked: no need to drop the session")
	_, err = b.WriteAt(context.Background(), pattern(4096, 2), 0)
	require.NoError(t, err)
}

// aluaHook makes LU 1 an ALUA LU: TPGS in the standard INQUIRY, the
// target port group in VPD 0x83, REPORT and SET TARGET PORT GROUPS over
// two groups (7: this portal's, 8: another's).
func aluaHook(mu *sync.Mutex, states map[uint16]scsi.State) func(ctx context.Context, cmd *scsi.Command) *scsi.Response {
	return func(ctx context.Context, cmd *scsi.Command) *scsi.Response {
		c := cmd.CDB
		switch {
		case c[0] == 0x12 && c[1]&1 == 0:
			b := make([]byte, 36)
			b[2], b[3], b[4], b[5], b[7] = 6, 2, 31, 0x30, 0x02 // TPGS both
			copy(b[8:], "MPATHFS ALUA            0001")
			return &scsi.Response{DataIn: b[:min(len(b), cmd.DataInLen)]}
		case c[0] == 0x12 && c[2] == 0x83:
			page := []byte{0x01, 0x03, 0x00, 0x08, 0x60, 0x01, 0x40, 0x50, 0, 0, 0, 0x77,
				0x61, 0x94, 0x00, 0x04, 0, 0, byte(cmd.Nexus.TargetPort >> 8), byte(cmd.Nexus.TargetPort),
				0x61, 0x95, 0x00, 0x04, 0, 0, byte(cmd.Nexus.TPG >> 8), byte(cmd.Nexus.TPG)}
			b := append([]byte{0, 0x83, 0, byte(len(page))}, page...)
			return &scsi.Response{DataIn: b[:min(len(b), cmd.DataInLen)]}
		case c[0] == 0xa3 && c[1]&0x1f == 0x0a:
			mu.Lock()
			defer mu.Unlock()
			b := make([]byte, 4)
			for _, g := range []uint16{7, 8} {
				d := []byte{byte(states[g]), 0x8f, byte(g >> 8), byte(g), 0, 0, 0, 1, 0, 0, 0, byte(g - 4)}
				b = append(b, d...)
			}
			binary.BigEndian.PutUint32(b, uint32(len(b)-4))
			return &scsi.Response{DataIn: b[:min(len(b), cmd.DataInLen)]}
		case c[0] == 0xa4 && c[1]&0x1f == 0x0a:
			mu.Lock()
			defer mu.Unlock()
			for p := cmd.DataOut[4:]; len(p) >= 4; p = p[4:] {
				states[binary.BigEndian.Uint16(p[2:])] = scsi.State(p[0] & 0x0f)
			}
			return &scsi.Response{}
		}
		return nil
	}
}

// TestOwnTargetALUA: a LU reporting TPGS opens as an ALUA path: its port
// and group come from VPD 0x83, RTPG reports the groups, STPG changes them.
func TestOwnTargetALUA(t *testing.T) {
	ram := iscsitest.NewRAM(2, 2048, 512)
	var mu sync.Mutex
	states := map[uint16]scsi.State{7: scsi.Standby, 8: scsi.ActiveOptimized}
	ram.Hook = aluaHook(&mu, states)
	addr := ownTarget(t, iscsi.TargetConfig{}, ram)
	b := open(t, fmt.Sprintf("iscsi://%s/%s/1", addr, ownIQN))
	a, ok := b.(*ALUABackend)
	require.True(t, ok, "a LU with TPGS must open as an ALUA path")
	_, ok = backends.As[scsi.Reporter](b)
	require.True(t, ok)
	ctx := context.Background()
	pi, err := a.PortInfo(ctx)
	require.NoError(t, err)
	require.Equal(t, scsi.PortInfo{TPG: 7, RelativePort: 3, TPGS: 3}, pi)
	groups, err := a.ReportTPGs(ctx)
	require.NoError(t, err)
	require.Len(t, groups, 2)
	require.Equal(t, uint16(7), groups[0].ID)
	require.Equal(t, scsi.Standby, groups[0].State)
	require.NoError(t, a.SetTPGs(ctx, map[uint16]scsi.State{7: scsi.ActiveOptimized, 8: scsi.Standby}))
	groups, err = a.ReportTPGs(ctx)
	require.NoError(t, err)
	require.Equal(t, scsi.ActiveOptimized, groups[0].State)
	require.Equal(t, scsi.Standby, groups[1].State)
}

// TestOwnTargetSense: the LU's answers reach the taxonomy with their sense.
func TestOwnTargetSense(t *testing.T) {
	ram := iscsitest.NewRAM(2, 2048, 512)
	var mu sync.Mutex
	answer := map[uint64]scsi.Response{}
	ram.Hook = func(ctx context.Context, cmd *scsi.Command) *scsi.Response {
		if cmd.CDB[0] != 0x88 {
			return nil
		}
		mu.Lock()
		defer mu.Unlock()
		if r, ok := answer[binary.BigEndian.Uint64(cmd.CDB[2:])]; ok {
			return &r
		}
		return nil
	}
	sense := func(k, asc, ascq byte) scsi.Response {
		s := make([]byte, 18)
		s[0], s[2], s[7], s[12], s[13] = 0x70, k, 10, asc, ascq
		return scsi.Response{Status: scsi.StatusCheckCondition, Sense: s}
	}
	answer[1] = sense(2, 4, 0x0b)
	answer[2] = sense(3, 0x11, 0)
	answer[3] = scsi.Response{Status: scsi.StatusReservationConflict}
	answer[4] = scsi.Response{Status: scsi.StatusBusy}
	answer[5] = sense(6, 0x2a, 6)
	addr := ownTarget(t, iscsi.TargetConfig{}, ram)
	b := open(t, fmt.Sprintf("iscsi://%s/%s/1", addr, ownIQN))
	for lba, want := range map[int64]ioerr.Class{1: ioerr.ClassNotReady, 2: ioerr.ClassDeviceError, 3: ioerr.ClassConflict, 4: ioerr.ClassRetryable, 5: ioerr.ClassRetryable} {
		_, err := b.ReadAt(context.Background(), make([]byte, 512), lba*512)
		require.Equal(t, want, ioerr.ClassOf(err), "LBA %d: %v", lba, err)
		require.Equal(t, lba == 3, errors.Is(err, ioerr.ErrReservationConflict))
	}
	s, ok := ioerr.SenseOf(func() error { _, err := b.ReadAt(context.Background(), make([]byte, 512), 512); return err }())
	require.True(t, ok)
	require.Equal(t, ioerr.SenseALUAStandby, s)
}

// TestOwnTargetSmallLimits: a target with small limits (4 KiB data
// segments, 8 KiB first burst, 16 KiB bursts) agrees to them at login; a
// 1 MiB write goes out as immediate data, unsolicited Data-Out and 64 R2T
// bursts of 4 KiB PDUs, and the disk and a read back agree with it.
func TestOwnTargetSmallLimits(t *testing.T) {
	ram := iscsitest.NewRAM(2, 8192, 512)
	addr := ownTarget(t, iscsi.TargetConfig{Limits: iscsi.Limits{MaxRecvDataSegmentLength: 4096, FirstBurstLength: 8192, MaxBurstLength: 16384}}, ram)
	b := open(t, fmt.Sprintf("iscsi://%s/%s/1?header_digest=crc32c", addr, ownIQN)).(*Backend)
	p, ok := b.sess.Params()
	require.True(t, ok)
	require.Equal(t, uint32(4096), p.PeerMaxRecvDataSegmentLength)
	require.Equal(t, uint32(8192), p.FirstBurstLength)
	require.Equal(t, uint32(16384), p.MaxBurstLength)
	ctx := context.Background()
	data := pattern(1<<20, 4)
	_, err := b.WriteAt(ctx, data, 4096)
	require.NoError(t, err)
	require.True(t, bytes.Equal(data, ram.Disk(1)[4096:4096+len(data)]))
	back := make([]byte, len(data))
	_, err = b.ReadAt(ctx, back, 4096)
	require.NoError(t, err)
	require.True(t, bytes.Equal(data, back))
}
