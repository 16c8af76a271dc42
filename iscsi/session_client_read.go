package iscsi

import (
	"context"
	"encoding/binary"
	"fmt"

	"github.com/mpathfs/mpathfs/ioerr"
	"github.com/mpathfs/mpathfs/scsi"
)

// targetViolation is a PDU from the target that breaks the protocol: the
// connection is dropped (ErrorRecoveryLevel 0).
type targetViolation struct{ msg string }

func (e *targetViolation) Error() string { return "target broke the iSCSI protocol: " + e.msg }

func violation(format string, args ...any) error {
	return &targetViolation{fmt.Sprintf(format, args...)}
}

// readLoop reads the target's PDUs until the connection fails.
func (cc *clientConn) readLoop() {
	defer cc.wg.Done()
	var p PDU
	for {
		if err := cc.fr.ReadPDU(&p); err != nil {
			cc.fail(fmt.Errorf("reading from the target: %w", err))
			return
		}
		if err := cc.handle(&p); err != nil {
			cc.fail(err)
			return
		}
	}
}

// statSN advances ExpStatSN past a status-carrying PDU's StatSN.
func (cc *clientConn) statSNLocked(sn uint32) {
	if !serialLess(sn, cc.expStatSN) {
		cc.expStatSN = sn + 1
	}
}

// finishLocked completes a task.
func (cc *clientConn) finishLocked(ct *ctask) {
	delete(cc.mu.tasks, ct.itt)
	if ct.settle != nil {
		// the answer of an abandoned command: it ran, nothing can land later
		close(ct.settle)
		ct.settle = nil
	}
	if !ct.finished {
		ct.finished = true
		close(ct.done)
	}
}

// lookupLocked finds the task a target PDU names by its tag, of the kind
// expected.
func (cc *clientConn) lookupLocked(op Opcode, itt uint32, kind int) (*ctask, error) {
	ct := cc.mu.tasks[itt]
	if ct == nil || ct.kind != kind {
		return nil, violation("%v for task tag 0x%x, which names no %s of ours", op, itt, kindName(kind))
	}
	return ct, nil
}

func kindName(k int) string {
	switch k {
	case kindCmd:
		return "command"
	case kindNOP:
		return "ping"
	case kindTMF:
		return "task management request"
	}
	return "logout"
}

func (cc *clientConn) handle(p *PDU) error {
	op := p.BHS.Opcode()
	switch op {
	case OpDataIn:
		var m DataIn
		m.Decode(&p.BHS)
		cc.updateWindow(m.ExpCmdSN, m.MaxCmdSN)
		cc.mu.Lock()
		defer cc.mu.Unlock()
		ct, err := cc.lookupLocked(op, m.ITT, kindCmd)
		if err != nil {
			return err
		}
		if !ct.abandoned {
			buf := ct.t.DataIn
			if uint64(m.Offset)+uint64(len(p.Data)) > uint64(len(buf)) {
				return violation("Data-In of %d bytes at offset %d for a %d-byte buffer", len(p.Data), m.Offset, len(buf))
			}
			copy(buf[m.Offset:], p.Data)
			ct.received += len(p.Data)
		}
		if m.HasStatus {
			if !m.Final {
				return violation("Data-In with status but without the final bit")
			}
			cc.statSNLocked(m.StatSN)
			ct.res = Result{Status: scsi.Status(m.Status), InLen: min(ct.received, len(ct.t.DataIn))}
			cc.finishLocked(ct)
		}
	case OpSCSIResp:
		var m SCSIResponse
		m.Decode(&p.BHS)
		cc.updateWindow(m.ExpCmdSN, m.MaxCmdSN)
		cc.mu.Lock()
		defer cc.mu.Unlock()
		ct, err := cc.lookupLocked(op, m.ITT, kindCmd)
		if err != nil {
			return err
		}
		cc.statSNLocked(m.StatSN)
		ct.res = Result{Status: scsi.Status(m.Status), InLen: min(ct.received, len(ct.t.DataIn))}
		if m.Response != 0 {
			ct.err = ioerr.NewError(ioerr.ClassPathFailure, "", fmt.Errorf("iSCSI %s: target failure (response 0x%02x)", cc.s.cfg.Address, m.Response))
		} else if len(p.Data) >= 2 {
			n := int(binary.BigEndian.Uint16(p.Data))
			if n > len(p.Data)-2 {
				return violation("SCSI Response says %d bytes of sense data and carries %d", n, len(p.Data)-2)
			}
			ct.res.Sense = append([]byte(nil), p.Data[2:2+n]...)
		}
		cc.finishLocked(ct)
	case OpR2T:
		var m R2T
		m.Decode(&p.BHS)
		cc.updateWindow(m.ExpCmdSN, m.MaxCmdSN)
		cc.mu.Lock()
		ct, err := cc.lookupLocked(op, m.ITT, kindCmd)
		if err != nil {
			cc.mu.Unlock()
			return err
		}
		out := ct.out
		if m.Length == 0 || uint64(m.Offset)+uint64(m.Length) > uint64(len(out)) || m.Length > cc.params.MaxBurstLength {
			cc.mu.Unlock()
			return violation("R2T for %d bytes at offset %d of a %d-byte write (MaxBurstLength %d)", m.Length, m.Offset, len(out), cc.params.MaxBurstLength)
		}
		cc.mu.Unlock()
		cc.wg.Add(1)
		go cc.sendR2T(ct, m, out[m.Offset:m.Offset+m.Length])
	case OpNOPIn:
		var m NOPIn
		m.Decode(&p.BHS)
		cc.updateWindow(m.ExpCmdSN, m.MaxCmdSN)
		if m.ITT != ReservedTag {
			cc.mu.Lock()
			defer cc.mu.Unlock()
			ct, err := cc.lookupLocked(op, m.ITT, kindNOP)
			if err != nil {
				return err
			}
			cc.statSNLocked(m.StatSN)
			cc.finishLocked(ct)
			return nil
		}
		if m.TTT != ReservedTag {
			// the target pings: answer with its tag
			cc.wg.Add(1)
			go cc.answerNOP(m)
		}
	case OpTMFResp:
		var m TMFResponse
		m.Decode(&p.BHS)
		cc.updateWindow(m.ExpCmdSN, m.MaxCmdSN)
		cc.mu.Lock()
		defer cc.mu.Unlock()
		ct, err := cc.lookupLocked(op, m.ITT, kindTMF)
		if err != nil {
			return err
		}
		cc.statSNLocked(m.StatSN)
		ct.tmfResp = m.Response
		cc.finishLocked(ct)
	case OpLogoutResp:
		var m LogoutResponse
		m.Decode(&p.BHS)
		cc.mu.Lock()
		defer cc.mu.Unlock()
		ct, err := cc.lookupLocked(op, m.ITT, kindLogout)
		if err != nil {
			return err
		}
		cc.statSNLocked(m.StatSN)
		cc.finishLocked(ct)
	case OpReject:
		var m Reject
		m.Decode(&p.BHS)
		if len(p.Data) < BHSLen {
			return violation("Reject (reason 0x%02x) without the rejected header", m.Reason)
		}
		var h BHS
		copy(h[:], p.Data)
		cc.mu.Lock()
		defer cc.mu.Unlock()
		cc.statSNLocked(m.StatSN)
		if ct := cc.mu.tasks[h.ITT()]; ct != nil && h.ITT() != ReservedTag {
			ct.err = ioerr.NewError(ioerr.ClassPathFailure, "", fmt.Errorf("iSCSI %s: target rejected our %v (reason 0x%02x)", cc.s.cfg.Address, h.Opcode(), m.Reason))
			if ct.kind == kindCmd && h.Opcode() == OpSCSICmd {
				// a rejected command was not executed
				cc.finishLocked(ct)
				return nil
			}
			// a rejected Data-Out leaves its command hanging: drop
			return violation("target rejected our %v (reason 0x%02x)", h.Opcode(), m.Reason)
		}
	case OpAsync:
		var m AsyncMessage
		m.Decode(&p.BHS)
		cc.updateWindow(m.ExpCmdSN, m.MaxCmdSN)
		switch m.Event {
		case AsyncSCSIEvent, AsyncVendor:
		case AsyncRenegotiate:
		default:
			return fmt.Errorf("target asked us to log out or dropped the session (asynchronous event %d)", m.Event)
		}
	default:
		return violation("unexpected %v (opcode 0x%02x) in the full feature phase", op, uint8(op))
	}
	return nil
}

// sendR2T answers one R2T with Data-Out PDUs of at most the target's
// MaxRecvDataSegmentLength.
func (cc *clientConn) sendR2T(ct *ctask, m R2T, data []byte) {
	defer cc.wg.Done()
	ctx := context.Background()
	if err := cc.acquire(ctx); err != nil {
		return
	}
	defer cc.release()
	seg := int(cc.params.PeerMaxRecvDataSegmentLength)
	for off, sn := 0, uint32(0); off < len(data); sn++ {
		n := min(len(data)-off, seg)
		d := &DataOut{Final: off+n == len(data), LUN: EncodeLUN(ct.lun), ITT: ct.itt, TTT: m.TTT,
			ExpStatSN: cc.expStatSNNow(), DataSN: sn, Offset: m.Offset + uint32(off)}
		if err := cc.write(ctx, d, data[off:off+n]); err != nil {
			return
		}
		off += n
	}
}

// answerNOP answers a target's NOP-In ping.
func (cc *clientConn) answerNOP(m NOPIn) {
	defer cc.wg.Done()
	ctx := context.Background()
	if err := cc.acquire(ctx); err != nil {
		return
	}
	defer cc.release()
	cc.mu.Lock()
	sn := cc.cmdSN
	cc.mu.Unlock()
	_ = cc.write(ctx, &NOPOut{Immediate: true, LUN: m.LUN, ITT: ReservedTag, TTT: m.TTT, CmdSN: sn, ExpStatSN: cc.expStatSNNow()}, nil)
}
