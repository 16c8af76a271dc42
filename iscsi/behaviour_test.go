package iscsi_test

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"slices"
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

// holdWrites makes the RAM disk hold every WRITE at lba until its context
// is cancelled; started receives each held command's initiator.
func holdWrites(ram *iscsitest.RAM, lba byte) chan string {
	started := make(chan string, 16)
	ram.Hook = func(ctx context.Context, cmd *scsi.Command) *scsi.Response {
		if cmd.CDB[0] != 0x2a || cmd.CDB[5] != lba {
			return nil
		}
		ram.Record("held %s", cmd.Nexus.Initiator)
		started <- cmd.Nexus.Initiator
		<-ctx.Done()
		ram.Record("returned %s", cmd.Nexus.Initiator)
		return &scsi.Response{Status: scsi.StatusTaskAborted}
	}
	return started
}

func block(b byte) []byte { return bytes.Repeat([]byte{b}, 512) }

// ABORT TASK is answered only after the aborted command's Execute
// returned, the aborted command gets no response, and its write never
// reaches the medium.
func TestAbortTaskGuarantee(t *testing.T) {
	ram := iscsitest.NewRAM(1, 64, 512)
	started := holdWrites(ram, 7)
	tt := startTarget(t, iscsi.TargetConfig{}, ram)
	r := dial(t, tt.addr)
	r.mustLogin("iqn.2026-01.org.test:a", 1)
	sn := r.cmdSN
	itt := r.command(0, cdbWrite10(7, 1), false, true, 512, block('x'))
	<-started
	require.Equal(t, iscsi.TMFRespComplete, r.tmf(iscsi.TMFAbortTask, 0, itt, sn))
	ev := ram.Events()
	require.NotEmpty(t, ev)
	assert.Equal(t, "returned iqn.2026-01.org.test:a", ev[len(ev)-1], "Execute returned before the TMF response")
	// The next status on the connection is that of the next command, not
	// of the aborted one.
	tur := r.command(0, make([]byte, 6), false, false, 0, nil)
	st, _, _ := r.response(tur)
	assert.Equal(t, uint8(0), st)
	assert.Equal(t, make([]byte, 512), ram.Disk(0)[7*512:8*512], "the aborted write never reached the medium")
	// Aborting it again: the task no longer exists.
	assert.Equal(t, iscsi.TMFRespNoTask, r.tmf(iscsi.TMFAbortTask, 0, itt, sn))
}

// LUN RESET from one initiator aborts another initiator's task (which is
// answered TASK ABORTED) and tells the logical unit.
func TestLUNResetAcrossSessions(t *testing.T) {
	ram := iscsitest.NewRAM(1, 64, 512)
	started := holdWrites(ram, 3)
	tt := startTarget(t, iscsi.TargetConfig{}, ram)
	a := dial(t, tt.addr)
	a.mustLogin("iqn.2026-01.org.test:a", 1)
	b := dial(t, tt.addr)
	b.mustLogin("iqn.2026-01.org.test:b", 1)
	itt := a.command(0, cdbWrite10(3, 1), false, true, 512, block('y'))
	<-started
	require.Equal(t, iscsi.TMFRespComplete, b.tmf(iscsi.TMFLogicalUnitReset, 0, iscsi.ReservedTag, 0))
	st, _, _ := a.response(itt)
	assert.Equal(t, uint8(scsi.StatusTaskAborted), st, "the other nexus's task is answered TASK ABORTED")
	ev := ram.Events()
	require.GreaterOrEqual(t, len(ev), 3)
	assert.Equal(t, []string{"held iqn.2026-01.org.test:a", "returned iqn.2026-01.org.test:a",
		fmt.Sprintf("reset %d lun 0 by iqn.2026-01.org.test:b,i,0x800000000001", scsi.TMFLUNReset)}, ev[len(ev)-3:])
	assert.Equal(t, iscsi.TMFRespNoLUN, b.tmf(iscsi.TMFLogicalUnitReset, 5, iscsi.ReservedTag, 0))
	assert.Equal(t, iscsi.TMFRespNotSupported, b.tmf(iscsi.TMFClearACA, 0, iscsi.ReservedTag, 0))
}

// A login with the same initiator name and ISID reinstates the session:
// the old session's task is aborted and waited for, and the logical unit
// hears the nexus was lost, before the new login is answered.
func TestSessionReinstatement(t *testing.T) {
	ram := iscsitest.NewRAM(1, 64, 512)
	started := holdWrites(ram, 9)
	tt := startTarget(t, iscsi.TargetConfig{}, ram)
	old := dial(t, tt.addr)
	old.mustLogin("iqn.2026-01.org.test:a", 4)
	old.command(0, cdbWrite10(9, 1), false, true, 512, block('z'))
	<-started
	other := dial(t, tt.addr)
	other.mustLogin("iqn.2026-01.org.test:a", 5) // another ISID: another session
	require.Len(t, tt.Sessions(), 2)

	fresh := dial(t, tt.addr)
	fresh.mustLogin("iqn.2026-01.org.test:a", 4)
	ev := ram.Events()
	require.GreaterOrEqual(t, len(ev), 2)
	assert.Equal(t, []string{"returned iqn.2026-01.org.test:a", "lost iqn.2026-01.org.test:a,i,0x800000000004"}, ev[len(ev)-2:])
	assert.True(t, old.closed(), "the reinstated session's connection is closed")
	ss := tt.Sessions()
	require.Len(t, ss, 2)
	isids := []string{ss[0].ISID, ss[1].ISID}
	slices.Sort(isids)
	assert.Equal(t, []string{"800000000004", "800000000005"}, isids)
	assert.Equal(t, make([]byte, 512), ram.Disk(0)[9*512:10*512])
}

// Writes through R2Ts honour MaxBurstLength and MaxOutstandingR2T, with
// CRC32C data digests, and read back the same.
func TestR2TWithDataDigest(t *testing.T) {
	ram := iscsitest.NewRAM(1, 64, 512)
	tt := startTarget(t, iscsi.TargetConfig{RequireDataDigest: true, RequireHeaderDigest: true}, ram)
	r := dial(t, tt.addr)
	r.mustLogin("iqn.2026-01.org.test:r2t", 1,
		iscsi.KV{Key: "HeaderDigest", Value: "None,CRC32C"}, iscsi.KV{Key: "DataDigest", Value: "CRC32C"},
		iscsi.KV{Key: "InitialR2T", Value: "Yes"}, iscsi.KV{Key: "ImmediateData", Value: "No"},
		iscsi.KV{Key: "MaxBurstLength", Value: "1024"}, iscsi.KV{Key: "FirstBurstLength", Value: "1024"},
		iscsi.KV{Key: "MaxOutstandingR2T", Value: "1"}, iscsi.KV{Key: "MaxRecvDataSegmentLength", Value: "512"})
	for k, want := range map[string]string{"HeaderDigest": "CRC32C", "DataDigest": "CRC32C", "InitialR2T": "Yes",
		"ImmediateData": "No", "MaxBurstLength": "1024", "MaxOutstandingR2T": "1"} {
		v, _ := r.params.Get(k)
		assert.Equal(t, want, v, k)
	}
	data := make([]byte, 4096)
	for i := range data {
		data[i] = byte(i * 7)
	}
	itt := r.command(0, cdbWrite10(8, 8), false, true, 4096, nil)
	var r2ts int
	for got := 0; got < len(data); {
		p := r.recv()
		require.Equal(t, iscsi.OpR2T, p.BHS.Opcode())
		var m iscsi.R2T
		m.Decode(&p.BHS)
		assert.Equal(t, uint32(r2ts), m.R2TSN)
		assert.Equal(t, uint32(got), m.Offset)
		assert.Equal(t, uint32(1024), m.Length, "each burst is MaxBurstLength")
		for i, off := uint32(0), m.Offset; off < m.Offset+m.Length; i, off = i+1, off+512 {
			r.send(&iscsi.DataOut{Final: off+512 == m.Offset+m.Length, LUN: iscsi.EncodeLUN(0), ITT: itt, TTT: m.TTT,
				DataSN: i, Offset: off}, data[off:off+512])
		}
		got += int(m.Length)
		r2ts++
	}
	st, _, _ := r.response(itt)
	require.Equal(t, uint8(0), st)
	assert.Equal(t, 4, r2ts)
	assert.Equal(t, data, ram.Disk(0)[8*512:16*512])
	itt = r.command(0, cdbRead10(8, 8), true, false, 4096, nil)
	st, in, _ := r.response(itt)
	require.Equal(t, uint8(0), st)
	assert.Equal(t, data, in)
}

// Commands run in CmdSN order: one that arrives ahead of a gap waits for
// the gap to fill.
func TestCmdSNOrder(t *testing.T) {
	ram := iscsitest.NewRAM(1, 64, 512)
	ram.Hook = func(_ context.Context, cmd *scsi.Command) *scsi.Response {
		ram.Record("exec tag %d", cmd.Tag)
		return nil
	}
	tt := startTarget(t, iscsi.TargetConfig{}, ram)
	r := dial(t, tt.addr)
	r.mustLogin("iqn.2026-01.org.test:sn", 1)
	r.cmdSN++ // leave a gap
	late := r.command(0, make([]byte, 6), false, false, 0, nil)
	// A ping proves the target has read the command.
	r.send(&iscsi.NOPOut{Immediate: true, ITT: 0x77, TTT: iscsi.ReservedTag, CmdSN: r.cmdSN}, []byte("ping"))
	p := r.recv()
	require.Equal(t, iscsi.OpNOPIn, p.BHS.Opcode())
	assert.Equal(t, "ping", string(p.Data), "a ping is echoed")
	assert.Empty(t, ram.Events(), "the command after the gap has not run")
	r.cmdSN -= 2
	first := r.command(0, make([]byte, 6), false, false, 0, nil)
	got := map[uint32]uint8{}
	for len(got) < 2 {
		p := r.recv()
		require.Equal(t, iscsi.OpSCSIResp, p.BHS.Opcode())
		var m iscsi.SCSIResponse
		m.Decode(&p.BHS)
		got[m.ITT] = m.Status
	}
	assert.Equal(t, map[uint32]uint8{first: 0, late: 0}, got)
	assert.ElementsMatch(t, []string{fmt.Sprintf("exec tag %d", first), fmt.Sprintf("exec tag %d", late)}, ram.Events())
}

// Malformed PDUs get a Reject or a dropped connection; the target goes on
// serving others.
func TestMalformedPDUs(t *testing.T) {
	tt := startTarget(t, iscsi.TargetConfig{Limits: iscsi.Limits{MaxRecvDataSegmentLength: 8192}}, nil)
	r := dial(t, tt.addr)
	r.mustLogin("iqn.2026-01.org.test:bad", 1)
	var bad iscsi.BHS
	bad[0] = 0x1f // no such opcode
	r.fr.WritePDU(&iscsi.PDU{BHS: bad})
	p := r.recv()
	require.Equal(t, iscsi.OpReject, p.BHS.Opcode())
	var rej iscsi.Reject
	rej.Decode(&p.BHS)
	assert.Equal(t, iscsi.RejectNotSupported, rej.Reason)
	assert.Equal(t, bad[:], p.Data, "a Reject carries the rejected header")

	r.send(&iscsi.DataIn{ITT: 5}, nil) // a target's PDU
	p = r.recv()
	require.Equal(t, iscsi.OpReject, p.BHS.Opcode())
	rej.Decode(&p.BHS)
	assert.Equal(t, iscsi.RejectProtocolError, rej.Reason)

	// A data segment beyond MaxRecvDataSegmentLength: the stream cannot
	// be trusted any more.
	r.send(&iscsi.NOPOut{Immediate: true, ITT: 9, TTT: iscsi.ReservedTag}, make([]byte, 9000))
	assert.True(t, r.closed())

	// Garbage instead of a login.
	g := dial(t, tt.addr)
	_, err := g.nc.Write(bytes.Repeat([]byte{0xff}, 200))
	require.NoError(t, err)
	assert.True(t, g.closed())

	// Malformed login text.
	m := dial(t, tt.addr)
	m.send(&iscsi.LoginRequest{Transit: true, CSG: 1, NSG: 3, ISID: [6]byte{0x80}, ITT: 1}, []byte("InitiatorName\x00"))
	lp := m.recv()
	var lr iscsi.LoginResponse
	lr.Decode(&lp.BHS)
	assert.Equal(t, iscsi.LoginInitiatorError, lr.Status)

	ok := dial(t, tt.addr)
	ok.mustLogin("iqn.2026-01.org.test:good", 1)
	tur := ok.command(0, make([]byte, 6), false, false, 0, nil)
	st, _, _ := ok.response(tur)
	assert.Equal(t, uint8(0), st, "the target still serves")
}

func TestLoginFailures(t *testing.T) {
	tt := startTarget(t, iscsi.TargetConfig{}, nil)
	r := dial(t, tt.addr)
	st, _ := r.login("iqn.2026-01.org.test:x", 1, iscsi.KV{Key: "MaxConnections", Value: "1"}, iscsi.KV{Key: "MaxConnections", Value: "1"})
	assert.Equal(t, iscsi.LoginInitiatorError, st, "a key twice")

	r = dial(t, tt.addr)
	req := &iscsi.LoginRequest{Transit: true, CSG: 1, NSG: 3, ISID: [6]byte{0x80}, ITT: 1}
	r.send(req, iscsi.Text{{Key: "InitiatorName", Value: "iqn.2026-01.org.test:x"}, {Key: "TargetName", Value: "iqn.2026-01.org.other:t"}}.Marshal())
	p := r.recv()
	var resp iscsi.LoginResponse
	resp.Decode(&p.BHS)
	assert.Equal(t, iscsi.LoginNotFound, resp.Status)

	r = dial(t, tt.addr)
	r.send(req, iscsi.Text{{Key: "TargetName", Value: targetName}}.Marshal())
	p = r.recv()
	resp.Decode(&p.BHS)
	assert.Equal(t, iscsi.LoginMissingParameter, resp.Status, "no InitiatorName")

	r = dial(t, tt.addr)
	v := *req
	v.VersionMin, v.VersionMax = 2, 3
	r.send(&v, iscsi.Text{{Key: "InitiatorName", Value: "iqn.2026-01.org.test:x"}, {Key: "TargetName", Value: targetName}}.Marshal())
	p = r.recv()
	resp.Decode(&p.BHS)
	assert.Equal(t, iscsi.LoginUnsupportedVersion, resp.Status)

	cs := startTarget(t, iscsi.TargetConfig{RequireCHAP: true}, nil)
	r = dial(t, cs.addr)
	st, _ = r.login("iqn.2026-01.org.test:x", 1)
	assert.Equal(t, iscsi.LoginAuthFailed, st, "CHAP required, none configured for this initiator")
}

func TestLoginTimeout(t *testing.T) {
	tt := startTarget(t, iscsi.TargetConfig{Limits: iscsi.Limits{LoginTimeout: 100 * time.Millisecond}}, nil)
	r := dial(t, tt.addr)
	assert.True(t, r.closed(), "a silent connection is closed once LoginTimeout passed")
}

func TestPortOfflineAndDropInitiator(t *testing.T) {
	tt := startTarget(t, iscsi.TargetConfig{}, nil)
	r := dial(t, tt.addr)
	r.mustLogin("iqn.2026-01.org.test:p", 1)
	tt.SetPortOffline(1, true)
	assert.True(t, r.closed())
	assert.True(t, dial(t, tt.addr).closed(), "an offline port refuses connections")
	tt.SetPortOffline(1, false)
	r = dial(t, tt.addr)
	r.mustLogin("iqn.2026-01.org.test:p", 1)
	assert.Equal(t, 0, tt.DropInitiator("iqn.2026-01.org.test:nobody"))
	assert.Equal(t, 1, tt.DropInitiator("iqn.2026-01.org.test:p"))
	assert.True(t, r.closed())
}

func TestInterceptHook(t *testing.T) {
	tt := startTarget(t, iscsi.TargetConfig{}, nil)
	tt.SetIntercept(func(n scsi.Nexus, cmd *scsi.Command) (time.Duration, *scsi.Response, bool) {
		switch {
		case strings.HasSuffix(n.Initiator, ":busy"):
			return time.Millisecond, &scsi.Response{Status: scsi.StatusBusy}, false
		case strings.HasSuffix(n.Initiator, ":drop"):
			return 0, nil, true
		}
		return 0, nil, false
	})
	busy := dial(t, tt.addr)
	busy.mustLogin("iqn.2026-01.org.test:busy", 1)
	st, _, _ := busy.response(busy.command(0, make([]byte, 6), false, false, 0, nil))
	assert.Equal(t, uint8(scsi.StatusBusy), st)
	drop := dial(t, tt.addr)
	drop.mustLogin("iqn.2026-01.org.test:drop", 1)
	drop.command(0, make([]byte, 6), false, false, 0, nil)
	assert.True(t, drop.closed())
	tt.SetIntercept(nil)
	st, _, _ = busy.response(busy.command(0, make([]byte, 6), false, false, 0, nil))
	assert.Equal(t, uint8(0), st)
}

// Reads report residuals from the logical unit's transfer length, and a
// LUN the handler lacks is CHECK CONDITION / LOGICAL UNIT NOT SUPPORTED.
func TestResidualsAndMissingLUN(t *testing.T) {
	tt := startTarget(t, iscsi.TargetConfig{}, nil)
	r := dial(t, tt.addr)
	r.mustLogin("iqn.2026-01.org.test:res", 1)
	itt := r.command(0, cdbRead10(0, 2), true, false, 512, nil)
	var status iscsi.DataIn
	for {
		p := r.recv()
		require.Equal(t, iscsi.OpDataIn, p.BHS.Opcode())
		status.Decode(&p.BHS)
		if status.HasStatus {
			break
		}
	}
	assert.Equal(t, itt, status.ITT)
	assert.True(t, status.Overflow)
	assert.Equal(t, uint32(512), status.Residual)
	st, _, sense := r.response(r.command(7, make([]byte, 6), false, false, 0, nil))
	assert.Equal(t, uint8(scsi.StatusCheckCondition), st)
	require.Len(t, sense, 18)
	assert.Equal(t, []byte{0x05, 0x25}, []byte{sense[2], sense[12]})
}

func TestNewTargetValidates(t *testing.T) {
	ram := iscsitest.NewRAM(1, 8, 512)
	for _, c := range []struct {
		cfg  iscsi.TargetConfig
		want string
	}{
		{iscsi.TargetConfig{Name: "target"}, "not an iSCSI name"},
		{iscsi.TargetConfig{Name: targetName, Limits: iscsi.Limits{MaxRecvDataSegmentLength: 100}}, "MaxRecvDataSegmentLength"},
		{iscsi.TargetConfig{Name: targetName, Limits: iscsi.Limits{FirstBurstLength: 1 << 21}}, "FirstBurstLength"},
		{iscsi.TargetConfig{Name: targetName, CHAP: map[string]iscsi.CHAPSecret{"iqn.x": {}}}, "secret"},
	} {
		_, err := iscsi.NewTarget(c.cfg, ram)
		assert.ErrorContains(t, err, c.want)
	}
	_, err := iscsi.NewTarget(iscsi.TargetConfig{Name: targetName}, nil)
	assert.Error(t, err)
}

// AbortTasks (PREEMPT AND ABORT's hook) aborts the victims' tasks without
// answering them and returns once they are over; the PREEMPT AND ABORT
// command calling it is not waited for, even when its nexus is a victim.
func TestAbortTasksForPreempt(t *testing.T) {
	ram := iscsitest.NewRAM(1, 64, 512)
	started := holdWrites(ram, 2)
	held := ram.Hook
	var mu sync.Mutex
	var target *testTarget // set once the target runs
	ram.Hook = func(ctx context.Context, cmd *scsi.Command) *scsi.Response {
		if cmd.CDB[0] == 0x5f {
			mu.Lock()
			tt := target
			mu.Unlock()
			var victims []scsi.Nexus
			for _, s := range tt.Sessions() {
				victims = append(victims, s.Nexus)
			}
			tt.AbortTasks(victims, 0)
			ram.Record("preempted")
			return &scsi.Response{}
		}
		return held(ctx, cmd)
	}
	tt := startTarget(t, iscsi.TargetConfig{}, ram)
	mu.Lock()
	target = tt
	mu.Unlock()
	victim := dial(t, tt.addr)
	victim.mustLogin("iqn.2026-01.org.test:victim", 1)
	victim.command(0, cdbWrite10(2, 1), false, true, 512, block('v'))
	<-started
	pre := dial(t, tt.addr)
	pre.mustLogin("iqn.2026-01.org.test:preempter", 1)
	cdb := make([]byte, 10)
	cdb[0], cdb[1], cdb[8] = 0x5f, 0x05, 24
	st, _, _ := pre.response(pre.command(0, cdb, false, true, 24, make([]byte, 24)))
	assert.Equal(t, uint8(0), st)
	ev := ram.Events()
	require.GreaterOrEqual(t, len(ev), 2)
	assert.Equal(t, []string{"returned iqn.2026-01.org.test:victim", "preempted"}, ev[len(ev)-2:])
	st, _, _ = victim.response(victim.command(0, make([]byte, 6), false, false, 0, nil))
	assert.Equal(t, uint8(0), st, "the aborted write was not answered; the next command is")
	assert.Equal(t, make([]byte, 512), ram.Disk(0)[2*512:3*512])
}

// hideLength is a handler without the TransferLengther capability.
type hideLength struct{ scsi.Handler }

// Without TransferLengther, a read's underflow is still reported (from the
// data returned); DataInLen is the EDTL.
func TestResidualWithoutTransferLength(t *testing.T) {
	ram := iscsitest.NewRAM(1, 64, 512)
	ram.Hook = func(_ context.Context, cmd *scsi.Command) *scsi.Response {
		if cmd.CDB[0] == 0x28 {
			ram.Record("datain %d", cmd.DataInLen)
		}
		return nil
	}
	tgt, err := iscsi.NewTarget(iscsi.TargetConfig{Name: targetName}, hideLength{ram})
	require.NoError(t, err)
	tt := serveTarget(t, tgt, ram, &logBuf{})
	r := dial(t, tt.addr)
	r.mustLogin("iqn.2026-01.org.test:u", 1)
	itt := r.command(0, cdbRead10(0, 1), true, false, 1024, nil)
	var m iscsi.DataIn
	for !m.HasStatus {
		p := r.recv()
		require.Equal(t, iscsi.OpDataIn, p.BHS.Opcode())
		m.Decode(&p.BHS)
	}
	assert.Equal(t, itt, m.ITT)
	assert.True(t, m.Underflow)
	assert.Equal(t, uint32(512), m.Residual)
	assert.Equal(t, []string{"datain 1024"}, ram.Events())
}

// The target pings an idle initiator and drops one that does not answer.
func TestNOPInPing(t *testing.T) {
	tt := startTarget(t, iscsi.TargetConfig{Limits: iscsi.Limits{NOPInterval: 20 * time.Millisecond, NOPTimeout: 50 * time.Millisecond}}, nil)
	r := dial(t, tt.addr)
	r.mustLogin("iqn.2026-01.org.test:nop", 1)
	p := r.recv()
	require.Equal(t, iscsi.OpNOPIn, p.BHS.Opcode())
	var m iscsi.NOPIn
	m.Decode(&p.BHS)
	assert.Equal(t, uint32(iscsi.ReservedTag), m.ITT)
	assert.NotEqual(t, uint32(iscsi.ReservedTag), m.TTT)
	// Answer the first ping, then stay silent.
	r.send(&iscsi.NOPOut{Immediate: true, ITT: iscsi.ReservedTag, TTT: m.TTT, CmdSN: r.cmdSN, ExpStatSN: r.expStatSN}, nil)
	assert.True(t, r.closed(), "a silent initiator is dropped after NOPTimeout")
	assert.Contains(t, tt.logs.String(), "no answer to a NOP-In")
}

// A login whose text spans two Login Requests (C bit) is answered once
// the text is whole.
func TestLoginContinuation(t *testing.T) {
	tt := startTarget(t, iscsi.TargetConfig{}, nil)
	r := dial(t, tt.addr)
	text := iscsi.Text{{Key: "InitiatorName", Value: "iqn.2026-01.org.test:cont"}, {Key: "TargetName", Value: targetName},
		{Key: "MaxBurstLength", Value: "65536"}}.Marshal()
	half := len(text) / 2
	r.send(&iscsi.LoginRequest{Continue: true, CSG: 1, ISID: [6]byte{0x80, 0, 0, 0, 0, 7}, ITT: 1, CmdSN: 1}, text[:half])
	p := r.recv()
	var resp iscsi.LoginResponse
	resp.Decode(&p.BHS)
	require.Equal(t, iscsi.LoginSuccess, resp.Status)
	assert.False(t, resp.Transit)
	assert.Empty(t, p.Data, "a C-bit request gets an empty response")
	r.send(&iscsi.LoginRequest{Transit: true, CSG: 1, NSG: 3, ISID: [6]byte{0x80, 0, 0, 0, 0, 7}, ITT: 1, CmdSN: 1}, text[half:])
	p = r.recv()
	resp.Decode(&p.BHS)
	require.Equal(t, iscsi.LoginSuccess, resp.Status)
	assert.True(t, resp.Transit)
	kv, err := iscsi.ParseText(p.Data)
	require.NoError(t, err)
	v, _ := kv.Get("MaxBurstLength")
	assert.Equal(t, "65536", v)
	v, _ = kv.Get("TargetPortalGroupTag")
	assert.Equal(t, "1", v)
}

// Many initiators, several sessions each, write and read their own blocks
// at once. The test drives every session from one goroutine (its
// initiator fails the test on error), with every session's command
// outstanding together so the target serves them concurrently.
func TestManyInitiators(t *testing.T) {
	ram := iscsitest.NewRAM(1, 256, 512)
	tt := startTarget(t, iscsi.TargetConfig{}, ram)
	const initiators, sessions = 6, 2
	var rs []*rawInit
	for i := range initiators {
		for j := range sessions {
			r := dial(t, tt.addr)
			r.mustLogin(fmt.Sprintf("iqn.2026-01.org.test:host%d", i), byte(j+1))
			rs = append(rs, r)
		}
	}
	require.Len(t, tt.Sessions(), initiators*sessions)
	itts := make([]uint32, len(rs))
	for k, r := range rs {
		itts[k] = r.command(0, cdbWrite10(uint32(k), 1), false, true, 512, block(byte(k+1)))
	}
	for k, r := range rs {
		st, _, _ := r.response(itts[k])
		require.Equal(t, uint8(0), st)
	}
	for k, r := range rs {
		itts[k] = r.command(0, cdbRead10(uint32(k), 1), true, false, 512, nil)
	}
	for k, r := range rs {
		st, data, _ := r.response(itts[k])
		require.Equal(t, uint8(0), st)
		assert.Equal(t, block(byte(k+1)), data)
	}
}

// MaxCmdSN bounds the queue depth: with CmdWindow commands outstanding the
// window is closed (MaxCmdSN = ExpCmdSN-1), and it opens as they end.
func TestCommandWindowIsQueueDepth(t *testing.T) {
	ram := iscsitest.NewRAM(1, 64, 512)
	started := holdWrites(ram, 1)
	tt := startTarget(t, iscsi.TargetConfig{Limits: iscsi.Limits{CmdWindow: 2}}, ram)
	r := dial(t, tt.addr)
	r.mustLogin("iqn.2026-01.org.test:qd", 1)
	r.command(0, cdbWrite10(1, 1), false, true, 512, block(1))
	r.command(0, cdbWrite10(1, 1), false, true, 512, block(2))
	<-started
	<-started
	r.send(&iscsi.NOPOut{Immediate: true, ITT: 0x55, TTT: iscsi.ReservedTag, CmdSN: r.cmdSN}, nil)
	p := r.recv()
	require.Equal(t, iscsi.OpNOPIn, p.BHS.Opcode())
	var nop iscsi.NOPIn
	nop.Decode(&p.BHS)
	assert.Equal(t, r.cmdSN, nop.ExpCmdSN)
	assert.Equal(t, nop.ExpCmdSN-1, nop.MaxCmdSN, "the window is closed")
	// A command beyond MaxCmdSN is ignored: it is never executed.
	r.command(0, make([]byte, 6), false, false, 0, nil)
	require.Equal(t, iscsi.TMFRespComplete, r.tmf(iscsi.TMFAbortTaskSet, 0, iscsi.ReservedTag, 0))
	r.cmdSN-- // the ignored command's CmdSN is free again
	r.send(&iscsi.NOPOut{Immediate: true, ITT: 0x56, TTT: iscsi.ReservedTag, CmdSN: r.cmdSN}, nil)
	p = r.recv()
	require.Equal(t, iscsi.OpNOPIn, p.BHS.Opcode())
	nop.Decode(&p.BHS)
	assert.Equal(t, nop.ExpCmdSN+1, nop.MaxCmdSN, "open again once the tasks ended")
	st, _, _ := r.response(r.command(0, make([]byte, 6), false, false, 0, nil))
	assert.Equal(t, uint8(0), st)
}

// SendTargets lists every portal; an answer longer than the initiator's
// MaxRecvDataSegmentLength comes in pieces the initiator asks for.
func TestSendTargetsContinuation(t *testing.T) {
	tt := startTarget(t, iscsi.TargetConfig{}, nil)
	// More portals, so the answer outgrows 512 bytes.
	for i := range 30 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		require.NoError(t, err)
		done := make(chan struct{})
		go func() {
			defer close(done)
			_ = tt.Serve(l, iscsi.Portal{TPGT: uint16(2 + i), RelativePort: uint16(2 + i), TPG: 2})
		}()
		t.Cleanup(func() { l.Close(); <-done })
		// A login through the portal is answered only once Serve runs,
		// and so has listed the portal (on a loaded machine the Serve
		// goroutines may not have started yet when SendTargets asks).
		dial(t, l.Addr().String()).mustLogin(fmt.Sprintf("iqn.2026-01.org.test:p%d", i), 1)
	}
	r := dial(t, tt.addr)
	r.mustLogin("iqn.2026-01.org.test:st", 1, iscsi.KV{Key: "MaxRecvDataSegmentLength", Value: "512"})
	var all []byte
	ttt := uint32(iscsi.ReservedTag)
	for pieces := 1; ; pieces++ {
		require.Less(t, pieces, 20)
		var ask []byte // the first request asks; the next ones only continue
		if ttt == iscsi.ReservedTag {
			ask = []byte("SendTargets=All\x00")
		}
		r.send(&iscsi.TextRequest{Immediate: true, Final: true, ITT: 0x99, TTT: ttt, CmdSN: r.cmdSN, ExpStatSN: r.expStatSN}, ask)
		p := r.recv()
		require.Equal(t, iscsi.OpTextResp, p.BHS.Opcode())
		var m iscsi.TextResponse
		m.Decode(&p.BHS)
		require.LessOrEqual(t, len(p.Data), 512)
		all = append(all, p.Data...)
		if m.Final {
			assert.Greater(t, pieces, 1, "the answer needed several PDUs")
			break
		}
		require.True(t, m.Continue)
		ttt = m.TTT
	}
	kv := strings.Count(string(all), "TargetAddress=")
	assert.Equal(t, 31, kv, "every portal is listed: %q", all)
	assert.Contains(t, string(all), "TargetName="+targetName)
}

// A Data-Out or a command whose data fails its digest fails that command
// (ABORTED COMMAND, PROTOCOL SERVICE CRC ERROR) and keeps the connection.
func TestDataDigestErrorFailsCommand(t *testing.T) {
	ram := iscsitest.NewRAM(1, 64, 512)
	tt := startTarget(t, iscsi.TargetConfig{}, ram)
	r := dial(t, tt.addr)
	r.mustLogin("iqn.2026-01.org.test:crc", 1, iscsi.KV{Key: "DataDigest", Value: "CRC32C"},
		iscsi.KV{Key: "HeaderDigest", Value: "CRC32C"}, iscsi.KV{Key: "InitialR2T", Value: "No"})
	require.True(t, r.fr.DataDigest)
	corrupt := func(m iscsi.Message, data []byte) {
		var w pipeBuf
		fr := iscsi.NewFramer(nil, &w, 0)
		fr.HeaderDigest, fr.DataDigest = true, true
		var p iscsi.PDU
		p.Encode(m, data)
		require.NoError(t, fr.WritePDU(&p))
		w.b[iscsi.BHSLen+4+1] ^= 0xff // a data byte, after the header digest
		_, err := r.nc.Write(w.b)
		require.NoError(t, err)
	}
	// Immediate data with a bad digest.
	itt := r.nextITT()
	cmd := &iscsi.SCSICommand{Final: true, Write: true, LUN: iscsi.EncodeLUN(0), ITT: itt, ExpectedDataTransferLength: 512,
		CmdSN: r.cmdSN, ExpStatSN: r.expStatSN}
	copy(cmd.CDB[:], cdbWrite10(4, 1))
	r.cmdSN++
	corrupt(cmd, block('c'))
	st, _, sense := r.response(itt)
	require.Equal(t, uint8(scsi.StatusCheckCondition), st)
	require.Len(t, sense, 18)
	assert.Equal(t, []byte{0x0b, 0x47, 0x05}, []byte{sense[2], sense[12], sense[13]})
	// An unsolicited Data-Out with a bad digest.
	itt = r.command(0, cdbWrite10(4, 2), false, true, 1024, block('d'))
	corrupt(&iscsi.DataOut{Final: true, LUN: iscsi.EncodeLUN(0), ITT: itt, TTT: iscsi.ReservedTag, Offset: 512}, block('e'))
	st, _, sense = r.response(itt)
	require.Equal(t, uint8(scsi.StatusCheckCondition), st)
	assert.Equal(t, []byte{0x0b, 0x47, 0x05}, []byte{sense[2], sense[12], sense[13]})
	assert.Equal(t, make([]byte, 1024), ram.Disk(0)[4*512:6*512], "nothing was written")
	st, _, _ = r.response(r.command(0, make([]byte, 6), false, false, 0, nil))
	assert.Equal(t, uint8(0), st, "the connection goes on")
}

// An ABORT TASK that reaches a task after the logical unit completed it
// (its GOOD status about to be sent) is answered TASK DOES NOT EXIST: a
// command is never both completed and reported aborted (libiscsi's
// AbortTaskSimpleAsync checks exactly this).
func TestAbortTaskAfterCompletion(t *testing.T) {
	ram := iscsitest.NewRAM(1, 64, 512)
	tt := startTarget(t, iscsi.TargetConfig{}, ram)
	r := dial(t, tt.addr)
	r.mustLogin("iqn.2026-01.org.test:late-abort", 1)
	reached, proceed := make(chan uint32, 1), make(chan struct{})
	iscsi.SetCompletedHook(t, func(itt uint32) {
		reached <- itt
		<-proceed
	})
	sn := r.cmdSN
	itt := r.command(0, cdbWrite10(11, 1), false, true, 512, block('c'))
	require.Equal(t, itt, <-reached)
	m := &iscsi.TMFRequest{Immediate: true, Function: iscsi.TMFAbortTask, LUN: iscsi.EncodeLUN(0), ITT: r.nextITT(),
		ReferencedTag: itt, CmdSN: r.cmdSN, ExpStatSN: r.expStatSN, RefCmdSN: sn}
	r.send(m, nil)
	// Let the request reach the task before the answer goes out.
	release := time.AfterFunc(200*time.Millisecond, func() { close(proceed) })
	defer release.Stop()
	var writeStatus *uint8
	for {
		p := r.recv()
		switch p.BHS.Opcode() {
		case iscsi.OpSCSIResp:
			var sr iscsi.SCSIResponse
			sr.Decode(&p.BHS)
			require.Equal(t, itt, sr.ITT)
			writeStatus = &sr.Status
			continue
		case iscsi.OpTMFResp:
		default:
			continue
		}
		var resp iscsi.TMFResponse
		resp.Decode(&p.BHS)
		require.NotNil(t, writeStatus, "the write's status goes out before the TMF response")
		assert.Equal(t, uint8(scsi.StatusGood), *writeStatus)
		assert.Equal(t, iscsi.TMFRespNoTask, resp.Response, "a completed task is not reported aborted")
		break
	}
	assert.Equal(t, block('c'), ram.Disk(0)[11*512:12*512], "the write completed")
}
