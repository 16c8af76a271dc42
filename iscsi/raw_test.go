package iscsi_test

import (
	"encoding/binary"
	"errors"
	"io"
	"net"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/mpathfs/mpathfs/iscsi"
)

// rawInit is a minimal initiator written from the codec, for the cases a
// real initiator never produces (aborts at chosen moments, reinstatement,
// malformed PDUs).
type rawInit struct {
	t         *testing.T
	nc        net.Conn
	fr        *iscsi.Framer
	cmdSN     uint32
	expStatSN uint32
	itt       uint32
	tsih      uint16
	params    iscsi.Text // the login response keys
}

// ioTimeout bounds every read of a test initiator: a target that never
// answers fails the test instead of hanging it.
const ioTimeout = 20 * time.Second

func dial(t *testing.T, addr string) *rawInit {
	t.Helper()
	nc, err := net.Dial("tcp", addr)
	require.NoError(t, err)
	t.Cleanup(func() { nc.Close() })
	return &rawInit{t: t, nc: nc, fr: iscsi.NewFramer(nc, nc, 0), cmdSN: 1, itt: 0x100}
}

// login logs in with one Login Request (operational stage straight to full
// feature) and returns the Login Response's status.
func (r *rawInit) login(initiator string, isid byte, keys ...iscsi.KV) (uint16, iscsi.Text) {
	r.t.Helper()
	tx := iscsi.Text{{Key: "InitiatorName", Value: initiator}, {Key: "TargetName", Value: targetName},
		{Key: "SessionType", Value: "Normal"}}
	tx = append(tx, keys...)
	req := &iscsi.LoginRequest{Transit: true, CSG: iscsi.StageOperational, NSG: iscsi.StageFullFeature,
		ISID: [6]byte{0x80, 0, 0, 0, 0, isid}, ITT: r.nextITT(), CmdSN: r.cmdSN}
	r.send(req, tx.Marshal())
	p := r.recv()
	require.Equal(r.t, iscsi.OpLoginResp, p.BHS.Opcode())
	var resp iscsi.LoginResponse
	resp.Decode(&p.BHS)
	kv, err := iscsi.ParseText(p.Data)
	require.NoError(r.t, err)
	r.expStatSN = resp.StatSN + 1
	r.tsih = resp.TSIH
	r.params = kv
	if resp.Status == iscsi.LoginSuccess {
		require.True(r.t, resp.Transit)
		require.Equal(r.t, iscsi.StageFullFeature, resp.NSG)
		hd, _ := kv.Get("HeaderDigest")
		dd, _ := kv.Get("DataDigest")
		r.fr.HeaderDigest, r.fr.DataDigest = hd == "CRC32C", dd == "CRC32C"
	}
	return resp.Status, kv
}

func (r *rawInit) mustLogin(initiator string, isid byte, keys ...iscsi.KV) {
	r.t.Helper()
	st, kv := r.login(initiator, isid, keys...)
	require.Equal(r.t, iscsi.LoginSuccess, st, "login status (response keys %v)", kv)
}

func (r *rawInit) nextITT() uint32 { r.itt++; return r.itt }

func (r *rawInit) send(m iscsi.Message, data []byte) {
	r.t.Helper()
	var p iscsi.PDU
	p.Encode(m, data)
	require.NoError(r.t, r.fr.WritePDU(&p))
}

// recv reads one PDU (failing the test after ioTimeout).
func (r *rawInit) recv() iscsi.PDU {
	r.t.Helper()
	p, err := r.tryRecv()
	require.NoError(r.t, err)
	return p
}

func (r *rawInit) tryRecv() (iscsi.PDU, error) {
	_ = r.nc.SetReadDeadline(time.Now().Add(ioTimeout))
	var p iscsi.PDU
	err := r.fr.ReadPDU(&p)
	p.Data = append([]byte(nil), p.Data...)
	p.AHS = append([]byte(nil), p.AHS...)
	return p, err
}

// closed reports whether the target closed the connection (reading
// returns EOF or a reset rather than a PDU).
func (r *rawInit) closed() bool {
	r.t.Helper()
	for {
		p, err := r.tryRecv()
		if err != nil {
			var ne net.Error
			require.False(r.t, errors.As(err, &ne) && ne.Timeout(), "the target neither answered nor closed the connection")
			return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, net.ErrClosed) || isReset(err)
		}
		if p.BHS.Opcode() == iscsi.OpReject || p.BHS.Opcode() == iscsi.OpNOPIn {
			continue
		}
		return false
	}
}

func isReset(err error) bool {
	var oe *net.OpError
	return errors.As(err, &oe)
}

// command sends a SCSI command and returns its ITT.
func (r *rawInit) command(lun uint64, cdb []byte, read, write bool, edtl uint32, imm []byte) uint32 {
	r.t.Helper()
	m := &iscsi.SCSICommand{Final: true, Read: read, Write: write, Attr: 1, LUN: iscsi.EncodeLUN(lun), ITT: r.nextITT(),
		ExpectedDataTransferLength: edtl, CmdSN: r.cmdSN, ExpStatSN: r.expStatSN}
	copy(m.CDB[:], cdb)
	r.cmdSN++
	r.send(m, imm)
	return m.ITT
}

// response reads PDUs up to the status of itt and returns the status,
// the data-in and the sense data.
func (r *rawInit) response(itt uint32) (status uint8, data, sense []byte) {
	r.t.Helper()
	for {
		p := r.recv()
		switch p.BHS.Opcode() {
		case iscsi.OpDataIn:
			var m iscsi.DataIn
			m.Decode(&p.BHS)
			require.Equal(r.t, itt, m.ITT)
			data = append(data, p.Data...)
			if m.HasStatus {
				r.expStatSN = m.StatSN + 1
				return m.Status, data, nil
			}
		case iscsi.OpSCSIResp:
			var m iscsi.SCSIResponse
			m.Decode(&p.BHS)
			require.Equal(r.t, itt, m.ITT)
			r.expStatSN = m.StatSN + 1
			if len(p.Data) >= 2 {
				n := int(binary.BigEndian.Uint16(p.Data))
				sense = p.Data[2 : 2+n]
			}
			return m.Status, data, sense
		case iscsi.OpNOPIn, iscsi.OpR2T:
			continue
		default:
			r.t.Fatalf("unexpected %v while waiting for the status of ITT 0x%x", p.BHS.Opcode(), itt)
		}
	}
}

// tmf sends a task management request and returns its response code.
func (r *rawInit) tmf(fn uint8, lun uint64, ref uint32, refCmdSN uint32) uint8 {
	r.t.Helper()
	m := &iscsi.TMFRequest{Immediate: true, Function: fn, LUN: iscsi.EncodeLUN(lun), ITT: r.nextITT(),
		ReferencedTag: ref, CmdSN: r.cmdSN, ExpStatSN: r.expStatSN, RefCmdSN: refCmdSN}
	r.send(m, nil)
	for {
		p := r.recv()
		if p.BHS.Opcode() != iscsi.OpTMFResp {
			continue
		}
		var resp iscsi.TMFResponse
		resp.Decode(&p.BHS)
		require.Equal(r.t, m.ITT, resp.ITT)
		return resp.Response
	}
}

func cdbRead10(lba uint32, blocks uint16) []byte {
	c := make([]byte, 10)
	c[0] = 0x28
	binary.BigEndian.PutUint32(c[2:], lba)
	binary.BigEndian.PutUint16(c[7:], blocks)
	return c
}

func cdbWrite10(lba uint32, blocks uint16) []byte {
	c := cdbRead10(lba, blocks)
	c[0] = 0x2a
	return c
}
