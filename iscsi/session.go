package iscsi

import (
	"encoding/hex"
	"fmt"
	"sync"

	"github.com/mpathfs/mpathfs/scsi"
)

// sessionKey identifies a session for reinstatement: the initiator port
// (name and ISID) and the target portal group.
type sessionKey struct {
	initiator string
	isid      [6]byte
	tpgt      uint16
}

// session is one iSCSI session (one connection: MaxConnections=1).
type session struct {
	t         *Target
	c         *conn
	key       sessionKey
	tsih      uint16
	nexus     scsi.Nexus
	discovery bool
	params    Params

	mu struct {
		sync.Mutex
		tasks map[uint32]*task
		// lastStarted is the last task started that has not reached
		// the interception hook and the logical unit yet (nil when
		// every started task has).
		lastStarted *task
		ending      bool
	}
	tasks sync.WaitGroup // task goroutines

	endOnce sync.Once
	ended   chan struct{}
}

func (s *session) kind() string {
	if s.discovery {
		return "discovery"
	}
	return "normal"
}

func (s *session) info() SessionInfo {
	s.mu.Lock()
	n := len(s.mu.tasks)
	s.mu.Unlock()
	return SessionInfo{Initiator: s.key.initiator, ISID: s.nexus.ISID, TSIH: s.tsih, TPGT: s.key.tpgt,
		Portal: s.c.portal.Addr, Remote: s.c.nc.RemoteAddr().String(), Discovery: s.discovery,
		Nexus: s.nexus, Params: s.params, Tasks: n}
}

// startSession ends the login: it reinstates (ends) a session of the same
// initiator port on the same portal group, waits until that session's
// tasks are over and the logical units were told the nexus is lost, and
// registers the new session. It runs before the final Login Response.
func (c *conn) startSession(ls *loginState) error {
	t := c.t
	key := sessionKey{initiator: ls.initiator, isid: ls.isid, tpgt: c.portal.TPGT}
	if ls.tsih != 0 {
		t.mu.Lock()
		_, exists := t.mu.sessions[key]
		t.mu.Unlock()
		if exists {
			return loginFail(LoginTooManyConnections, "this target allows one connection per session (MaxConnections=1)")
		}
		return loginFail(LoginSessionNotExist, "no session with TSIH %d to add a connection to", ls.tsih)
	}
	s := &session{t: t, c: c, key: key, discovery: ls.discovery, params: ls.params, ended: make(chan struct{})}
	s.mu.tasks = map[uint32]*task{}
	s.nexus = scsi.Nexus{Initiator: ls.initiator, ISID: hex.EncodeToString(ls.isid[:]),
		TargetPort: c.portal.RelativePort, TPG: c.portal.TPG}
	for {
		t.mu.Lock()
		if t.mu.closed {
			t.mu.Unlock()
			return loginFail(LoginServiceUnavailable, "the target is shutting down")
		}
		old := t.mu.sessions[key]
		if old == nil {
			if len(t.mu.sessions) >= t.cfg.Limits.MaxSessions {
				t.mu.Unlock()
				return loginFail(LoginOutOfResources, "the target has its maximum of %d sessions", t.cfg.Limits.MaxSessions)
			}
			t.mu.nextTSIH++
			if t.mu.nextTSIH == 0 {
				t.mu.nextTSIH = 1
			}
			s.tsih = t.mu.nextTSIH
			t.mu.sessions[key] = s
			t.mu.Unlock()
			break
		}
		t.mu.Unlock()
		// Session reinstatement (RFC 7143 6.3.5): the old session ends
		// (its tasks aborted and waited for, the nexus reported lost)
		// before the new one exists.
		t.logf("iscsi: %s (ISID %s): reinstating TSIH %d", ls.initiator, s.nexus.ISID, old.tsih)
		old.c.close()
		old.end()
	}
	ls.tsih = s.tsih
	c.sess = s
	name := ls.initiator
	c.initiator.Store(&name)
	return nil
}

// end ends the session once: it aborts every task and waits for them,
// tells the logical units the nexus is lost, and unregisters the session.
// Every caller returns after all of that is done.
func (s *session) end() {
	s.endOnce.Do(func() {
		s.mu.Lock()
		s.mu.ending = true // no task registers or starts from now on
		var ts []*task
		for _, tk := range s.mu.tasks {
			ts = append(ts, tk)
		}
		s.mu.Unlock()
		s.abort(ts, false)
		s.tasks.Wait()
		if !s.discovery {
			s.t.h.NexusLost(s.nexus)
		}
		s.t.mu.Lock()
		if s.t.mu.sessions[s.key] == s {
			delete(s.t.mu.sessions, s.key)
		}
		s.t.mu.Unlock()
		close(s.ended)
	})
	<-s.ended
}

// fullFeature is the reader loop of the full feature phase.
func (c *conn) fullFeature() error {
	c.wg.Add(1)
	go c.pinger()
	c.touch()
	var p PDU
	for {
		err := c.fr.ReadPDU(&p)
		if err == ErrDataDigest {
			// The PDU was read whole: the stream is in step. A command
			// or its data fails with PROTOCOL SERVICE CRC ERROR (the
			// command keeps its CmdSN turn); anything else is rejected.
			c.touch()
			c.t.logf("iscsi: %s: data digest error in %v", c.initiatorName(), p.BHS.Opcode())
			switch p.BHS.Opcode() {
			case OpSCSICmd:
				if err := c.scsiCommandDigestBad(&p); err != nil {
					return err
				}
			case OpDataOut:
				var m DataOut
				m.Decode(&p.BHS)
				c.dataOutDigestBad(&m)
			default:
				c.reject(RejectDataDigest, &p.BHS)
			}
			continue
		}
		if err != nil {
			return err
		}
		c.touch()
		if err := c.dispatch(&p); err != nil {
			return err
		}
		if c.isClosed() {
			return nil
		}
	}
}

func (c *conn) touch() { c.lastRecv.Store(nowNano()) }

// dispatch handles one PDU of the full feature phase. An error ends the
// connection.
func (c *conn) dispatch(p *PDU) error {
	s := c.sess
	op := p.BHS.Opcode()
	if s.discovery {
		switch op {
		case OpTextReq, OpLogoutReq, OpNOPOut:
		default:
			c.reject(RejectProtocolError, &p.BHS)
			return nil
		}
	}
	switch op {
	case OpNOPOut:
		var m NOPOut
		m.Decode(&p.BHS)
		return c.nopOut(&m, p.Data)
	case OpSCSICmd:
		return c.scsiCommand(p)
	case OpDataOut:
		var m DataOut
		m.Decode(&p.BHS)
		return c.dataOut(&m, p.Data)
	case OpTMFReq:
		var m TMFRequest
		m.Decode(&p.BHS)
		c.ordered(m.CmdSN, m.Immediate, func() {
			c.wg.Add(1)
			go func() {
				defer c.wg.Done()
				c.taskManagement(&m)
			}()
		})
		return nil
	case OpTextReq:
		var m TextRequest
		m.Decode(&p.BHS)
		data := append([]byte(nil), p.Data...)
		c.ordered(m.CmdSN, m.Immediate, func() { c.text(&m, data) })
		return nil
	case OpLogoutReq:
		var m LogoutRequest
		m.Decode(&p.BHS)
		c.ordered(m.CmdSN, m.Immediate, func() {
			c.wg.Add(1)
			go func() {
				defer c.wg.Done()
				c.logout(&m)
			}()
		})
		return nil
	case OpSNACKReq:
		c.reject(RejectSNACK, &p.BHS)
		return nil
	case OpLoginReq:
		c.reject(RejectProtocolError, &p.BHS)
		return protocolError("Login Request in full feature phase")
	}
	if op.Known() {
		// A target opcode sent to the target.
		c.reject(RejectProtocolError, &p.BHS)
		return nil
	}
	c.reject(RejectNotSupported, &p.BHS)
	return nil
}

func (c *conn) nopOut(m *NOPOut, data []byte) error {
	if m.ITT == ReservedTag {
		// An answer to our ping, or a one-way ping: no reply.
		if !m.Immediate {
			return protocolError("NOP-Out with the reserved ITT must be immediate")
		}
		return nil
	}
	if m.TTT != ReservedTag {
		return protocolError("NOP-Out ping with TTT 0x%x (must be 0xffffffff)", m.TTT)
	}
	echo := append([]byte(nil), data...)
	c.ordered(m.CmdSN, m.Immediate, func() {
		_ = c.send(&NOPIn{LUN: m.LUN, ITT: m.ITT, TTT: ReservedTag}, echo, true, true)
	})
	return nil
}

// text answers Text Requests: SendTargets, and Reject/NotUnderstood for
// keys that cannot be renegotiated in full feature phase.
func (c *conn) text(m *TextRequest, data []byte) {
	resp := &TextResponse{Final: true, LUN: m.LUN, ITT: m.ITT, TTT: ReservedTag}
	if m.TTT != ReservedTag {
		// The initiator asks for the rest of a long answer.
		if m.TTT != c.textTTT || m.ITT != c.textITT || c.textRest == nil {
			var hdr BHS
			m.Encode(&hdr)
			c.reject(RejectInvalidField, &hdr)
			return
		}
		c.sendText(resp, c.textRest)
		return
	}
	c.textRest = nil
	if m.Continue || !m.Final {
		// This target never needs more than one Text Request.
		_ = c.send(resp, nil, true, true)
		return
	}
	kv, err := ParseText(data)
	if err != nil {
		c.t.logf("iscsi: %s: Text Request: %v", c.initiatorName(), err)
		var hdr BHS
		m.Encode(&hdr)
		c.reject(RejectProtocolError, &hdr)
		return
	}
	var out Text
	for _, p := range kv {
		switch p.Key {
		case "SendTargets":
			if p.Value != "All" && p.Value != "" && p.Value != c.t.cfg.Name {
				continue // another target: nothing to report
			}
			out.Add("TargetName", c.t.cfg.Name)
			for _, pt := range c.t.portals() {
				out = append(out, KV{"TargetAddress", fmt.Sprintf("%s,%d", pt.Addr, pt.TPGT)})
			}
		default:
			if _, known := keyDefs[p.Key]; known {
				out.Add(p.Key, ValueReject)
			} else {
				out.Add(p.Key, ValueNotUnderstood)
			}
		}
	}
	c.sendText(resp, out.Marshal())
}

// sendText sends a text answer, or its first PeerMaxRecvDataSegmentLength
// bytes with the C bit and a TTT under which the initiator asks for the
// rest (RFC 7143 11.10.2).
func (c *conn) sendText(resp *TextResponse, b []byte) {
	limit := int(c.sess.params.PeerMaxRecvDataSegmentLength)
	if len(b) <= limit {
		c.textRest = nil
		_ = c.send(resp, b, true, true)
		return
	}
	c.textTTT++
	if c.textTTT == ReservedTag {
		c.textTTT = 1
	}
	c.textITT, c.textRest = resp.ITT, b[limit:]
	resp.Final, resp.Continue, resp.TTT = false, true, c.textTTT
	_ = c.send(resp, b[:limit], true, true)
}

func (c *conn) logout(m *LogoutRequest) {
	s := c.sess
	resp := &LogoutResponse{ITT: m.ITT}
	if m.Reason == LogoutRemoveForRecov {
		resp.Response = 2 // connection recovery is not supported
		_ = c.send(resp, nil, true, true)
		return
	}
	// ErrorRecoveryLevel 0: closing the (only) connection closes the
	// session. Commands still running are aborted first.
	s.mu.Lock()
	var ts []*task
	for _, tk := range s.mu.tasks {
		ts = append(ts, tk)
	}
	s.mu.Unlock()
	s.abort(ts, false)
	_ = c.send(resp, nil, true, true)
	c.t.logf("iscsi: %s (ISID %s) logged out", s.nexus.Initiator, s.nexus.ISID)
	c.close()
}

// task is one SCSI command in the task set of a session.
type task struct {
	s   *session
	itt uint32
	// cmdSN orders it against an immediate task management request: the
	// request covers the session's commands with a lower CmdSN
	cmdSN  uint32
	lun    uint64 // logical unit number
	lunF   uint64 // the LUN field as sent
	cmd    scsi.Command
	cdbBuf [16]byte // cmd.CDB, unless an extended CDB is longer
	edtl   uint32
	read   bool
	// write data
	write bool
	buf   []byte
	// borrowed: buf is the reader's data segment of the SCSI Command
	// PDU (all the data came as immediate data), valid only until the
	// reader reads the next PDU; command copies it before returning
	// unless the task already ran, maybeStart before handing it to a
	// goroutine (reader goroutine only)
	borrowed bool
	received uint32
	spdtl    int // SCSI transfer length in bytes, -1 unknown
	// the unsolicited burst: its length and next expected DataSN
	unsolLen    uint32
	unsolGot    uint32
	unsolDataSN uint32
	// solicited transfers
	nextR2T  uint32 // offset of the next R2T to send
	r2tSN    uint32
	nextTTT  uint32
	r2ts     map[uint32]*r2tState // made by the first R2T
	dataInSN uint32               // Data-In PDUs and R2Ts sent (ExpDataSN)

	ctx taskCtx

	// the messages respond sends, here so they are not allocated
	resp SCSIResponse
	din  DataIn

	// under s.mu
	delivered   bool // its turn in CmdSN order came
	running     bool
	aborted     bool
	abortNotify bool // answer TASK ABORTED (another nexus aborted it)
	// completed: the logical unit ran it and its answer is on the way;
	// too late to abort (ABORT TASK answers TASK DOES NOT EXIST).
	completed bool
	finished  bool
	// done is closed when the task finished; made only by an abort
	// that must wait for it
	done         chan struct{}
	overflowFail bool
	failSense    []byte // the data phase failed: answer with this sense
	counted      bool   // in conn.outstanding
	uncounted    bool   // taken out of it (or never to be counted)
	// entered: it reached the interception hook and the logical unit;
	// prev is the task started before it that had not yet (it waits
	// for it), enteredCh is made by the task started after it that
	// waits, and closed when it entered
	entered   bool
	prev      *task
	enteredCh chan struct{}
}

type r2tState struct {
	offset, length, got uint32
	dataSN              uint32
}

func (tk *task) dataDone() bool { return !tk.write || tk.received >= tk.edtl }
