package iscsi_test

import (
	"bytes"
	"context"
	"fmt"
	"slices"
	"strings"
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
