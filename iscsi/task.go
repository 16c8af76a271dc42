package iscsi

import (
	"bytes"
	"slices"
	"time"

	"github.com/mpathfs/mpathfs/scsi"
)

// maxWriteLen bounds the data-out buffer of one command.
const maxWriteLen = 64 << 20

// cdbLen is the length of a CDB by its operation code's group (SPC-4
// 4.2.5.1); the extended-CDB AHS may make it longer.
func cdbLen(op byte) int {
	switch op >> 5 {
	case 0:
		return 6
	case 1, 2:
		return 10
	case 5:
		return 12
	}
	return 16
}

// taskAttr maps the ATTR field of a SCSI Command (RFC 7143 11.3.1:
// 0 untagged, 1 simple, 2 ordered, 3 head of queue, 4 ACA).
func taskAttr(a uint8) scsi.TaskAttr {
	switch a {
	case 2:
		return scsi.TaskOrdered
	case 3:
		return scsi.TaskHeadOfQueue
	case 4:
		return scsi.TaskACA
	}
	return scsi.TaskSimple
}

// senseFixed builds fixed-format sense data (SPC-4 4.5.3).
func senseFixed(key, asc, ascq byte) []byte {
	b := make([]byte, 18)
	b[0], b[2], b[7], b[12], b[13] = 0x70, key, 10, asc, ascq
	return b
}

// Sense keys and codes the transport itself reports.
var (
	senseLUNNotSupported   = func() []byte { return senseFixed(0x05, 0x25, 0x00) }
	senseInvalidFieldInCDB = func() []byte { return senseFixed(0x05, 0x24, 0x00) }
)

// scsiCommand takes a SCSI Command PDU: it registers the task, takes its
// immediate data, sends the R2Ts it may, and queues it in CmdSN order.
func (c *conn) scsiCommand(p *PDU) error { return c.command(p, nil) }

// scsiCommandDigestBad takes a SCSI Command whose immediate data failed
// its digest: the command fails in its CmdSN turn without its data.
func (c *conn) scsiCommandDigestBad(p *PDU) error {
	p.Data = p.Data[:0]
	return c.command(p, senseFixed(0x0b, 0x47, 0x05))
}

// dataOutDigestBad fails the write a Data-Out with a bad data digest
// belongs to.
func (c *conn) dataOutDigestBad(m *DataOut) {
	s := c.sess
	s.mu.Lock()
	tk := s.mu.tasks[m.ITT]
	if tk == nil || !tk.write || tk.aborted || tk.failSense != nil {
		s.mu.Unlock()
		return
	}
	s.failDataSense(tk, senseFixed(0x0b, 0x47, 0x05), "Data-Out of ITT 0x%x failed its data digest", m.ITT)
}

// command registers a SCSI Command; failSense non-nil fails it (in its
// CmdSN turn, without reaching the logical unit).
func (c *conn) command(p *PDU, failSense []byte) error {
	s := c.sess
	var m SCSICommand
	m.Decode(&p.BHS)
	if !m.Immediate && !c.inWindow(m.CmdSN) {
		c.t.logf("iscsi: %s: SCSI Command with CmdSN %d outside the window: ignored", c.initiatorName(), m.CmdSN)
		return nil
	}
	tk := &task{s: s, itt: m.ITT, cmdSN: m.CmdSN, lunF: m.LUN, edtl: m.ExpectedDataTransferLength, read: m.Read, write: m.Write, spdtl: -1}
	cdb := tk.cdbBuf[:copy(tk.cdbBuf[:], m.CDB[:cdbLen(m.CDB[0])])]
	if err := WalkAHS(p.AHS, func(typ uint8, spec []byte) {
		if typ == AHSExtendedCDB {
			cdb = append(append(make([]byte, 0, len(m.CDB)+len(spec)), m.CDB[:]...), spec...)
		}
	}); err != nil {
		c.reject(RejectProtocolError, &p.BHS)
		return nil
	}
	lun, lunOK := DecodeLUN(m.LUN)
	tk.lun = lun
	tk.cmd = scsi.Command{Nexus: s.nexus, LUN: lun, CDB: cdb, Tag: uint64(m.ITT), Attr: taskAttr(m.Attr)}
	if !lunOK {
		tk.cmd.LUN = m.LUN
	}
	if tl, ok := c.t.h.(TransferLengther); ok && lunOK {
		if n, known := tl.TransferLength(s.nexus, lun, cdb); known {
			tk.spdtl = n
		}
	}
	imm := p.Data
	if tk.write {
		switch {
		case tk.edtl > maxWriteLen:
			tk.write, tk.overflowFail = false, true
			imm = nil
		case len(imm) > 0 && !s.params.ImmediateData:
			c.reject(RejectProtocolError, &p.BHS)
			return protocolError("immediate data sent although ImmediateData=No")
		case uint32(len(imm)) > tk.edtl || uint32(len(imm)) > s.params.FirstBurstLength:
			c.reject(RejectProtocolError, &p.BHS)
			return protocolError("%d bytes of immediate data exceed EDTL %d or FirstBurstLength %d", len(imm), tk.edtl, s.params.FirstBurstLength)
		}
		if tk.write {
			if len(imm) > 0 && uint32(len(imm)) == tk.edtl {
				// All the data came with the command: use it where
				// the reader put it (copied below if the task does
				// not run before the reader goes on).
				tk.buf, tk.borrowed = imm, true
			} else {
				tk.buf = make([]byte, tk.edtl)
				copy(tk.buf, imm)
			}
			tk.received = uint32(len(imm))
			tk.unsolGot = tk.received
			tk.unsolLen = tk.received
			if !m.Final && !s.params.InitialR2T {
				tk.unsolLen = min(s.params.FirstBurstLength, tk.edtl)
			}
			tk.nextR2T = tk.unsolLen
		}
	} else if len(imm) > 0 {
		c.reject(RejectProtocolError, &p.BHS)
		return nil
	}
	if !m.Immediate {
		c.qmu.Lock()
		gone := c.abortedSN[m.CmdSN]
		delete(c.abortedSN, m.CmdSN)
		c.qmu.Unlock()
		if gone {
			c.ordered(m.CmdSN, false, func() {})
			return nil
		}
	}
	if failSense != nil {
		tk.failSense = failSense
		tk.received = tk.edtl
		tk.nextR2T = tk.edtl
	}
	s.mu.Lock()
	if s.mu.ending {
		s.mu.Unlock()
		return nil
	}
	if _, dup := s.mu.tasks[m.ITT]; dup {
		s.mu.Unlock()
		c.reject(RejectTaskInProgress, &p.BHS)
		return nil
	}
	s.mu.tasks[m.ITT] = tk
	s.mu.Unlock()
	c.sendR2Ts(tk)
	c.orderedDeliver(m.CmdSN, m.Immediate, tk)
	s.mu.Lock()
	if !tk.uncounted {
		tk.counted = true
		c.outstanding.Add(1)
	}
	if tk.borrowed {
		// The reader reads the next PDU into buf once this returns.
		tk.borrowed = false
		if !tk.running && !tk.finished {
			tk.buf = bytes.Clone(tk.buf)
		}
	}
	s.mu.Unlock()
	return nil
}

// orderedDeliver is ordered(cmdSN, immediate, func() { s.deliver(tk) })
// without the closure (an allocation per command) when the command's turn
// is now (turnNow).
func (c *conn) orderedDeliver(cmdSN uint32, immediate bool, tk *task) {
	if immediate || c.turnNow(cmdSN) {
		tk.s.deliver(tk)
		return
	}
	c.ordered(cmdSN, false, func() { tk.s.deliver(tk) })
}

// uncount takes a task out of the outstanding count (once), just before
// its status goes out, so the MaxCmdSN of that status already counts the
// freed slot.
func (s *session) uncount(tk *task) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if tk.uncounted {
		return
	}
	tk.uncounted = true
	if tk.counted {
		s.c.outstanding.Add(-1)
	}
}

// sendR2Ts sends R2Ts for the rest of a write, keeping at most
// MaxOutstandingR2T outstanding, each at most MaxBurstLength long.
func (c *conn) sendR2Ts(tk *task) {
	s := c.sess
	var out []R2T
	s.mu.Lock()
	for tk.write && !tk.aborted && uint32(len(tk.r2ts)) < s.params.MaxOutstandingR2T && tk.nextR2T < tk.edtl {
		n := min(s.params.MaxBurstLength, tk.edtl-tk.nextR2T)
		tk.nextTTT++
		if tk.nextTTT == ReservedTag {
			tk.nextTTT = 1
		}
		ttt := tk.nextTTT
		if tk.r2ts == nil {
			tk.r2ts = map[uint32]*r2tState{}
		}
		tk.r2ts[ttt] = &r2tState{offset: tk.nextR2T, length: n}
		out = append(out, R2T{LUN: tk.lunF, ITT: tk.itt, TTT: ttt, R2TSN: tk.r2tSN, Offset: tk.nextR2T, Length: n})
		tk.r2tSN++
		tk.dataInSN++
		tk.nextR2T += n
	}
	s.mu.Unlock()
	for i := range out {
		if c.send(&out[i], nil, false, i == len(out)-1) != nil {
			return
		}
	}
}

// dataOut takes one Data-Out PDU. DataSN and offsets must follow in order
// (DataPDUInOrder and DataSequenceInOrder are Yes here); at
// ErrorRecoveryLevel 0 any deviation ends the connection.
func (c *conn) dataOut(m *DataOut, data []byte) error {
	s := c.sess
	s.mu.Lock()
	tk := s.mu.tasks[m.ITT]
	if tk == nil || !tk.write || tk.aborted || tk.failSense != nil {
		s.mu.Unlock()
		return nil // data for an aborted, failed or finished task is discarded
	}
	n := uint32(len(data))
	if m.TTT == ReservedTag {
		switch {
		case m.DataSN != tk.unsolDataSN:
			return s.failData(tk, "unsolicited Data-Out of ITT 0x%x has DataSN %d, expected %d", m.ITT, m.DataSN, tk.unsolDataSN)
		case m.Offset != tk.unsolGot || tk.unsolGot+n > tk.unsolLen:
			return s.failData(tk, "unsolicited Data-Out of ITT 0x%x at offset %d+%d, expected %d within the first burst of %d",
				m.ITT, m.Offset, n, tk.unsolGot, tk.unsolLen)
		}
		tk.unsolDataSN++
		tk.unsolGot += n
	} else {
		r := tk.r2ts[m.TTT]
		switch {
		case r == nil:
			return s.failData(tk, "Data-Out of ITT 0x%x for unknown TTT 0x%x", m.ITT, m.TTT)
		case m.DataSN != r.dataSN:
			return s.failData(tk, "Data-Out of ITT 0x%x has DataSN %d, expected %d", m.ITT, m.DataSN, r.dataSN)
		case m.Offset != r.offset+r.got || r.got+n > r.length:
			return s.failData(tk, "Data-Out of ITT 0x%x at offset %d+%d, expected %d within the R2T of %d+%d",
				m.ITT, m.Offset, n, r.offset+r.got, r.offset, r.length)
		}
		r.dataSN++
		r.got += n
		if r.got == r.length {
			delete(tk.r2ts, m.TTT)
		}
	}
	copy(tk.buf[m.Offset:], data)
	tk.received += n
	more := tk.nextR2T < tk.edtl && uint32(len(tk.r2ts)) < s.params.MaxOutstandingR2T
	s.mu.Unlock()
	if more {
		c.sendR2Ts(tk)
	}
	s.maybeStart(tk)
	return nil
}

// failData ends a write whose Data-Out broke the sequence rules (DataSN,
// offset, TTT): the data phase is over and the command is answered with
// CHECK CONDITION, ABORTED COMMAND, DATA PHASE ERROR in its CmdSN turn,
// without reaching the logical unit. Later Data-Out PDUs of the task are
// discarded. Called with s.mu held; releases it.
func (s *session) failData(tk *task, format string, args ...any) error {
	s.failDataSense(tk, senseFixed(0x0b, 0x4b, 0x00), format, args...)
	return nil
}

// failDataSense is failData with the sense to answer. Called with s.mu
// held; releases it.
func (s *session) failDataSense(tk *task, sense []byte, format string, args ...any) {
	tk.failSense = sense
	tk.received = tk.edtl
	clear(tk.r2ts)
	tk.nextR2T = tk.edtl
	s.mu.Unlock()
	s.t.logf("iscsi: %s: "+format+": failing the command", append([]any{s.nexus.Initiator}, args...)...)
	s.maybeStart(tk)
}

// deliver marks a task's turn in CmdSN order.
func (s *session) deliver(tk *task) {
	s.mu.Lock()
	tk.delivered = true
	s.mu.Unlock()
	s.maybeStart(tk)
}

// maybeStart starts a task whose turn came and whose data is in.
func (s *session) maybeStart(tk *task) {
	s.mu.Lock()
	if !tk.delivered || tk.running || tk.aborted || tk.finished || !tk.dataDone() || s.mu.ending {
		s.mu.Unlock()
		return
	}
	tk.running = true
	// It reaches the hook and the logical unit after the task started
	// before it (nil when that one already did: always so for a task
	// alone in its session).
	tk.prev, s.mu.lastStarted = s.mu.lastStarted, tk
	s.tasks.Add(1)
	alone := len(s.mu.tasks) == 1
	s.mu.Unlock()
	if alone && s.quick(tk) {
		// The only command in progress, and one that cannot wait: run it
		// here, on the reader, rather than pay a goroutine hand-off.
		s.run(tk)
		return
	}
	if tk.borrowed {
		tk.buf, tk.borrowed = bytes.Clone(tk.buf), false
	}
	go s.run(tk)
}

// quick reports whether tk may run on the connection's reader goroutine:
// it is answered without the logical unit (its data phase failed or it
// overflows), or the logical unit says it is quick (QuickHandler) and no
// interception hook, which may delay it, is set.
func (s *session) quick(tk *task) bool {
	if tk.overflowFail || tk.failSense != nil {
		return true
	}
	if s.t.quick == nil || s.t.intercept.Load() != nil {
		return false
	}
	if tk.write {
		tk.cmd.DataOut = tk.buf
	}
	return s.t.quick.Quick(s.nexus, &tk.cmd)
}

// finish removes a task from the task set and releases its waiters.
func (s *session) finish(tk *task) {
	tk.ctx.cancel()
	s.uncount(tk)
	s.mu.Lock()
	defer s.mu.Unlock()
	if tk.finished {
		return
	}
	tk.finished = true
	if s.mu.tasks[tk.itt] == tk {
		delete(s.mu.tasks, tk.itt)
	}
	if tk.done != nil {
		close(tk.done)
	}
}

// completedHook, when set (tests only), runs after a task completed and
// before its answer is sent: the window in which an ABORT TASK for it
// must be answered TASK DOES NOT EXIST.
var completedHook func(itt uint32)

// run executes a task and answers it, unless it was aborted meanwhile.
func (s *session) run(tk *task) {
	defer s.tasks.Done()
	defer s.finish(tk)
	resp, drop, ran := s.execute(tk)
	if drop {
		s.t.logf("iscsi: %s: connection dropped by the interception hook at ITT 0x%x", s.nexus.Initiator, tk.itt)
		s.c.close()
		return
	}
	// Deciding to answer and an abort's decision to abort are one step
	// under s.mu: a task whose GOOD status goes out is never also
	// reported aborted to an ABORT TASK that raced with it.
	s.mu.Lock()
	aborted, notify := tk.aborted, tk.abortNotify
	tk.completed = !aborted && ran
	s.mu.Unlock()
	if h := completedHook; h != nil && tk.completed {
		h(tk.itt)
	}
	if aborted || !ran {
		if notify {
			s.sendAborted(tk)
		}
		return
	}
	s.respond(tk, resp)
}

// execute runs the interception hook and the logical unit. ran is false
// when the command was aborted before the logical unit saw it.
func (s *session) execute(tk *task) (resp scsi.Response, drop, ran bool) {
	// The tasks reach the hook and the logical unit in the order they
	// started (CmdSN order for those whose data was in at their turn).
	s.enter(tk)
	cmd := &tk.cmd
	if tk.write {
		cmd.DataOut = tk.buf
		if tk.spdtl >= 0 && tk.spdtl < len(tk.buf) {
			cmd.DataOut = tk.buf[:tk.spdtl]
		}
	}
	cmd.DataInLen = int(tk.edtl)
	if tk.overflowFail {
		return scsi.Response{Status: scsi.StatusCheckCondition, Sense: senseInvalidFieldInCDB()}, false, true
	}
	if tk.failSense != nil {
		return scsi.Response{Status: scsi.StatusCheckCondition, Sense: tk.failSense}, false, true
	}
	if !s.lunExists(tk.cmd.LUN) && !lunlessOp(cmd.CDB[0]) {
		return scsi.Response{Status: scsi.StatusCheckCondition, Sense: senseLUNNotSupported()}, false, true
	}
	if f := s.t.drop.Load(); f != nil && (*f)(s.nexus, cmd) {
		return resp, true, false
	}
	if f := s.t.intercept.Load(); f != nil {
		delay, r, dropConn := (*f)(s.nexus, cmd)
		if dropConn {
			return resp, true, false
		}
		if delay > 0 {
			tm := time.NewTimer(delay)
			select {
			case <-tk.ctx.Done():
				tm.Stop()
				return resp, false, false
			case <-tm.C:
			}
		}
		if r != nil {
			if tk.ctx.Err() != nil {
				return resp, false, false
			}
			return *r, false, true
		}
	}
	if tk.ctx.Err() != nil {
		return resp, false, false
	}
	return s.t.h.Execute(&tk.ctx, cmd), false, true
}

// enter waits until the task started before tk reached the hook and the
// logical unit, and marks tk as having reached them. Channels are made
// only when a task has to wait.
func (s *session) enter(tk *task) {
	s.mu.Lock()
	if p := tk.prev; p != nil {
		tk.prev = nil
		if !p.entered {
			if p.enteredCh == nil {
				p.enteredCh = make(chan struct{})
			}
			ch := p.enteredCh
			s.mu.Unlock()
			<-ch
			s.mu.Lock()
		}
	}
	tk.entered = true
	if s.mu.lastStarted == tk {
		s.mu.lastStarted = nil
	}
	if tk.enteredCh != nil {
		close(tk.enteredCh)
	}
	s.mu.Unlock()
}

// lunlessOp reports the commands a logical unit answers even for a LUN
// it does not have: INQUIRY, REPORT LUNS, REQUEST SENSE.
func lunlessOp(op byte) bool { return op == 0x12 || op == 0xa0 || op == 0x03 }

func (s *session) lunExists(lun uint64) bool {
	if h, ok := s.t.h.(LUNHaver); ok {
		return h.HasLUN(s.nexus, lun)
	}
	return slices.Contains(s.t.h.LUNs(s.nexus), lun)
}

// respond sends a task's data and status: Data-In PDUs (the last one
// carrying the status when it is GOOD: phase collapse), else a SCSI
// Response with the sense data.
func (s *session) respond(tk *task, resp scsi.Response) {
	c := s.c
	s.uncount(tk)
	data := resp.DataIn
	var over, under bool
	var residual uint32
	spdtl := tk.spdtl
	if spdtl < 0 && !tk.write && resp.Status == scsi.StatusGood {
		// Without the logical unit's transfer length, the data it
		// returned is all that is known (an underflow shows, an
		// overflow does not).
		spdtl = len(data)
	}
	if len(data) > int(tk.edtl) {
		data = data[:tk.edtl]
	}
	if spdtl >= 0 {
		switch {
		case uint64(spdtl) > uint64(tk.edtl):
			over, residual = true, uint32(min(uint64(spdtl)-uint64(tk.edtl), 1<<32-1))
		case uint64(spdtl) < uint64(tk.edtl):
			under, residual = true, tk.edtl-uint32(spdtl)
		}
	}
	collapse := len(data) > 0 && resp.Status == scsi.StatusGood && len(resp.Sense) == 0
	if len(data) > 0 {
		seg := int(s.params.PeerMaxRecvDataSegmentLength)
		burst := int(s.params.MaxBurstLength)
		for off := 0; off < len(data); {
			n := min(seg, len(data)-off, burst-off%burst)
			last := off+n == len(data)
			m := &tk.din
			*m = DataIn{Final: last || (off+n)%burst == 0, LUN: tk.lunF, ITT: tk.itt, TTT: ReservedTag,
				DataSN: tk.dataInSN, Offset: uint32(off)}
			tk.dataInSN++
			if last && collapse {
				m.HasStatus, m.Status = true, uint8(resp.Status)
				m.Overflow, m.Underflow, m.Residual = over, under, residual
			}
			if c.send(m, data[off:off+n], last && collapse, last && collapse) != nil {
				return
			}
			off += n
		}
		if collapse {
			return
		}
	}
	var seg []byte
	if len(resp.Sense) > 0 {
		seg = make([]byte, 2+len(resp.Sense))
		put16(seg, uint16(len(resp.Sense)))
		copy(seg[2:], resp.Sense)
	}
	r := &tk.resp
	*r = SCSIResponse{Status: uint8(resp.Status), ITT: tk.itt, ExpDataSN: tk.dataInSN,
		Overflow: over, Underflow: under, Residual: residual}
	_ = c.send(r, seg, true, true)
}

// sendAborted answers a task another nexus's task management aborted
// with TASK ABORTED (TAS=1 behaviour).
func (s *session) sendAborted(tk *task) {
	s.uncount(tk)
	_ = s.c.send(&SCSIResponse{Status: uint8(scsi.StatusTaskAborted), ITT: tk.itt, ExpDataSN: tk.dataInSN}, nil, true, true)
}

// abort aborts tasks of this session and waits until none of them can
// still reach the logical unit: a task not yet started never will, a
// running one is cancelled and waited for (scsi.Handler's contract makes
// Execute return promptly and begin no side effect after cancellation).
// notify answers them with TASK ABORTED. A task that already completed
// (its answer is being sent) is not aborted; abort still waits for its
// answer to go out, so the caller's own answer follows it. abort returns
// how many tasks it aborted.
func (s *session) abort(ts []*task, notify bool) int {
	var wait, idle []*task
	n := 0
	s.mu.Lock()
	for _, tk := range ts {
		if tk.finished || tk.aborted || tk.completed {
			if !tk.finished {
				wait = append(wait, tk)
				if tk.aborted {
					n++ // aborted already: it will not complete either
				}
			}
			continue
		}
		n++
		tk.aborted, tk.abortNotify = true, notify
		tk.ctx.cancel()
		if tk.running {
			wait = append(wait, tk)
		} else {
			idle = append(idle, tk)
		}
	}
	for _, tk := range wait {
		if tk.done == nil {
			tk.done = make(chan struct{})
		}
	}
	s.mu.Unlock()
	for _, tk := range idle {
		if notify {
			s.sendAborted(tk)
		}
		s.finish(tk)
	}
	for _, tk := range wait {
		<-tk.done
	}
	return n
}

// tasksWhere returns the session's tasks that match keep.
func (s *session) tasksWhere(keep func(*task) bool) []*task {
	s.mu.Lock()
	defer s.mu.Unlock()
	var ts []*task
	for _, tk := range s.mu.tasks {
		if keep(tk) {
			ts = append(ts, tk)
		}
	}
	return ts
}

// taskManagement performs a TMF and answers it once every task it
// aborted is over.
func (c *conn) taskManagement(m *TMFRequest) {
	s := c.sess
	t := c.t
	resp := &TMFResponse{ITT: m.ITT, Response: TMFRespComplete}
	lun, lunOK := DecodeLUN(m.LUN)
	onLUN := func(tk *task) bool { return tk.lunF == m.LUN }
	all := func(*task) bool { return true }
	// mine narrows keep to this session's commands the request covers:
	// those sent before it (RFC 7143 4.2.3.3: a lower CmdSN), not those
	// that arrived while it runs.
	mine := func(keep func(*task) bool) func(*task) bool {
		return func(tk *task) bool { return keep(tk) && int32(tk.cmdSN-m.CmdSN) < 0 }
	}
	// abortEverywhere aborts the matching tasks of every session: this
	// session's silently, the others' with TASK ABORTED.
	abortEverywhere := func(keep func(*task) bool) {
		for _, o := range t.allSessions() {
			if o == s {
				continue
			}
			o.abort(o.tasksWhere(keep), true)
		}
		s.abort(s.tasksWhere(mine(keep)), false)
	}
	switch m.Function {
	case TMFAbortTask:
		s.mu.Lock()
		tk := s.mu.tasks[m.ReferencedTag]
		s.mu.Unlock()
		switch {
		case tk != nil && tk.lunF == m.LUN:
			if s.abort([]*task{tk}, false) == 0 {
				// It completed before the request reached it.
				resp.Response = TMFRespNoTask
			}
		case tk != nil:
			resp.Response = TMFRespNoTask
		case c.inWindow(m.RefCmdSN) && int32(m.RefCmdSN-m.CmdSN) < 0:
			// Not received yet (RFC 7143 11.5.1): the function is
			// complete and the command, should it arrive, is discarded.
			c.qmu.Lock()
			c.abortedSN[m.RefCmdSN] = true
			c.qmu.Unlock()
		default:
			// Completed (or never sent): nothing to abort.
			resp.Response = TMFRespNoTask
		}
	case TMFAbortTaskSet:
		if !lunOK || !s.lunExists(lun) {
			resp.Response = TMFRespNoLUN
			break
		}
		s.abort(s.tasksWhere(mine(onLUN)), false)
	case TMFClearTaskSet:
		if !lunOK || !s.lunExists(lun) {
			resp.Response = TMFRespNoLUN
			break
		}
		abortEverywhere(onLUN)
	case TMFLogicalUnitReset:
		if !lunOK || !s.lunExists(lun) {
			resp.Response = TMFRespNoLUN
			break
		}
		abortEverywhere(onLUN)
		t.h.Reset(s.nexus, scsi.TMFLUNReset, lun)
	case TMFTargetWarmReset, TMFTargetColdReset:
		abortEverywhere(all)
		f := scsi.TMFTargetWarmReset
		if m.Function == TMFTargetColdReset {
			f = scsi.TMFTargetColdReset
		}
		t.h.Reset(s.nexus, f, 0)
	case TMFTaskReassign:
		resp.Response = TMFRespNoReassign
	default:
		// CLEAR ACA (no ACA here) and functions this target lacks.
		resp.Response = TMFRespNotSupported
	}
	t.logf("iscsi: %s (ISID %s): task management function %d on LUN %d: response %d", s.nexus.Initiator, s.nexus.ISID, m.Function, lun, resp.Response)
	t.tmfs.add(m.Function, resp.Response)
	_ = c.send(resp, nil, true, true)
	if m.Function == TMFTargetColdReset && resp.Response == TMFRespComplete {
		// RFC 7143 11.5.1: after a cold reset the target closes every
		// connection.
		t.mu.Lock()
		for oc := range t.mu.conns {
			oc.close()
		}
		t.mu.Unlock()
	}
}

func nowNano() int64 { return time.Now().UnixNano() }

// AbortTasks aborts the tasks of the given I_T nexuses on a logical unit,
// without answering them, and returns once none of them can still reach
// the logical unit: what PERSISTENT RESERVE OUT with PREEMPT AND ABORT
// needs from the transport (wire it as the array handler's
// OnPreemptAbort). The PREEMPT AND ABORT command that calls it is never
// among the tasks waited for, even if its own nexus is a victim.
func (t *Target) AbortTasks(victims []scsi.Nexus, lun uint64) {
	for _, s := range t.allSessions() {
		if !slices.Contains(victims, s.nexus) {
			continue
		}
		s.abort(s.tasksWhere(func(tk *task) bool {
			return tk.cmd.LUN == lun && !(tk.running && isPreemptAndAbort(tk.cmd.CDB))
		}), false)
	}
}

// isPreemptAndAbort reports a PERSISTENT RESERVE OUT, PREEMPT AND ABORT.
func isPreemptAndAbort(cdb []byte) bool {
	return len(cdb) > 1 && cdb[0] == 0x5f && cdb[1]&0x1f == 0x05
}
