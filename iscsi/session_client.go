package iscsi

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/mpathfs/mpathfs/ioerr"
	"github.com/mpathfs/mpathfs/scsi"
)

// The initiator's full feature phase. One Session is one path's I_T nexus:
// it holds at most one connection at a time (MaxConnections=1) and keeps
// its ISID across re-logins, so a re-login is a session reinstatement.
//
// Commands are pipelined: each gets an initiator task tag and a CmdSN,
// goes out as soon as the CmdSN window (ExpCmdSN..MaxCmdSN) allows, and one
// reader goroutine per connection routes Data-In, R2T, SCSI Response,
// NOP-In, task management and logout responses to their tasks by tag.
//
// Fencing: a command that may change the medium (Task.Mutating) and whose
// caller gave up after it was sent fails with a PendingError. Its Settled
// channel closes on proof that it can no longer execute: its response
// arrived anyway, the target answered ABORT TASK (Function Complete or Task
// Does Not Exist: the command arrived before the abort on the same
// connection, so either it ran before the answer or never will), or LUN
// RESET, or — when the connection broke or the target did not answer
// those — a new login with the same ISID completed (session reinstatement:
// the target terminates the old session's tasks before it answers).

// ErrSessionDown is matched (errors.Is) by the errors of commands that
// found or lost the session's connection down.
var ErrSessionDown = errors.New("iSCSI session down")

// Task is one SCSI command for Session.Do.
type Task struct {
	LUN uint64
	// CDB is the command descriptor block, at most 16 bytes.
	CDB []byte
	// DataOut is the data to send (writes, parameter lists), DataIn the
	// buffer for the data to receive; at most one of them is non-empty.
	DataOut, DataIn []byte
	// Mutating marks a command that may change the medium or the LU's
	// state: if its outcome is unknown its error is a PendingError.
	Mutating bool
}

// Result is a command's outcome.
type Result struct {
	Status scsi.Status
	// Sense is the sense data of a CHECK CONDITION (a copy).
	Sense []byte
	// InLen is the number of DataIn bytes the target sent.
	InLen int
}

// PendingError is the error of a mutating command whose outcome is
// unknown: Settled closes on proof that it can no longer execute. It
// implements the backends.Pending contract.
type PendingError struct {
	Err     error
	settle  <-chan struct{}
	waiting func() string
}

func (e *PendingError) Error() string            { return e.Err.Error() }
func (e *PendingError) Unwrap() error            { return e.Err }
func (e *PendingError) Settled() <-chan struct{} { return e.settle }

// WaitingFor names the proof still awaited.
func (e *PendingError) WaitingFor() string {
	select {
	case <-e.settle:
		return "nothing: the command was aborted, answered or its session reinstated"
	default:
	}
	return e.waiting()
}

// Session is an initiator session to one target portal.
type Session struct {
	cfg InitiatorConfig

	mu struct {
		sync.Mutex
		cc     *clientConn
		gen    int // logins so far
		fenced int // every connection of a generation below this is fenced
		closed bool
		// mutating commands of broken connections, waiting for a reinstatement
		orphans []orphan
	}
	reinstateMu sync.Mutex
	wg          sync.WaitGroup // fencers
}

type orphan struct {
	gen    int
	settle chan struct{}
}

// Dial logs in to the target and returns the session in full feature
// phase.
func Dial(ctx context.Context, cfg InitiatorConfig) (*Session, error) {
	cfg.defaults()
	if err := CheckNodeName(cfg.TargetName); err != nil {
		return nil, fmt.Errorf("target name: %w", err)
	}
	if err := CheckNodeName(cfg.InitiatorName); err != nil {
		return nil, fmt.Errorf("initiator name: %w", err)
	}
	s := &Session{cfg: cfg}
	cc, err := s.connect(ctx)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	s.mu.cc = cc
	s.mu.Unlock()
	return s, nil
}

// ISID returns the session's initiator session identifier.
func (s *Session) ISID() [6]byte { return s.cfg.ISID }

// Params returns the negotiated parameters of the current connection.
func (s *Session) Params() (Params, bool) {
	cc := s.current()
	if cc == nil {
		return Params{}, false
	}
	return cc.params, true
}

// connect dials and logs in one connection.
func (s *Session) connect(ctx context.Context) (*clientConn, error) {
	lctx, cancel := context.WithTimeout(ctx, s.cfg.LoginTimeout)
	defer cancel()
	nc, err := s.cfg.Dialer(lctx, "tcp", s.cfg.Address)
	if err != nil {
		return nil, ioerr.NewError(ioerr.ClassPathFailure, "login", fmt.Errorf("iSCSI portal %s: %w", s.cfg.Address, err))
	}
	s.mu.Lock()
	s.mu.gen++
	gen := s.mu.gen
	s.mu.Unlock()
	cc := newClientConn(s, nc, gen)
	if err := login(lctx, &s.cfg, nc, cc); err != nil {
		nc.Close()
		return nil, ioerr.NewError(loginClass(err), "login", err)
	}
	cc.start()
	return cc, nil
}

func (s *Session) current() *clientConn {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.mu.cc != nil && s.mu.cc.down() {
		return nil
	}
	return s.mu.cc
}

// Alive reports whether the session has a working connection.
func (s *Session) Alive() bool { return s.current() != nil }

func (s *Session) downErr(cause error) error {
	return ioerr.NewError(ioerr.ClassPathFailure, "", fmt.Errorf("iSCSI %s %s: %w: %v", s.cfg.Address, s.cfg.TargetName, ErrSessionDown, cause))
}

// Do runs one SCSI command. A transport failure returns a path-failure
// error (a PendingError for a mutating command that may still execute);
// a SCSI status comes back in the Result.
func (s *Session) Do(ctx context.Context, t *Task) (Result, error) {
	if len(t.CDB) == 0 || len(t.CDB) > 16 {
		return Result{}, ioerr.NewError(ioerr.ClassDeviceError, "", fmt.Errorf("CDB of %d bytes: this initiator sends 1 to 16", len(t.CDB)))
	}
	if len(t.DataOut) > 0 && len(t.DataIn) > 0 {
		return Result{}, ioerr.NewError(ioerr.ClassDeviceError, "", errors.New("bidirectional commands are not supported"))
	}
	cc := s.current()
	if cc == nil {
		return Result{}, s.downErr(errors.New("no connection (waiting for the path checker to log in again)"))
	}
	return cc.do(ctx, t)
}

// Ping sends a NOP-Out and waits for the target's NOP-In.
func (s *Session) Ping(ctx context.Context) error {
	cc := s.current()
	if cc == nil {
		return s.downErr(errors.New("no connection"))
	}
	ctx, cancel := context.WithTimeout(ctx, s.cfg.TMFTimeout)
	defer cancel()
	_, err := cc.control(ctx, kindNOP, 0, 0, 0)
	return err
}

// LUNReset sends LOGICAL UNIT RESET: every task on the LU is aborted
// (tmf.go).
func (s *Session) LUNReset(ctx context.Context, lun uint64) error {
	_, err := s.TaskManagement(ctx, TMFLogicalUnitReset, lun)
	return err
}

// Drop tears the connection down at once: every command in flight fails
// with a path failure, mutating ones with a PendingError that settles when
// the session is reinstated.
func (s *Session) Drop(reason error) {
	s.mu.Lock()
	cc := s.mu.cc
	s.mu.Unlock()
	if cc != nil {
		cc.fail(fmt.Errorf("dropped: %w", reason))
	}
}

// Reinstate drops the connection (if any) and logs in again with the same
// ISID. Once the login completes the target has terminated the old
// session's tasks: every pending command of earlier connections is
// settled.
func (s *Session) Reinstate(ctx context.Context) error {
	s.reinstateMu.Lock()
	defer s.reinstateMu.Unlock()
	s.mu.Lock()
	if s.mu.closed {
		s.mu.Unlock()
		return s.downErr(errors.New("session closed"))
	}
	old := s.mu.cc
	s.mu.cc = nil
	s.mu.Unlock()
	if old != nil {
		old.fail(errors.New("reinstating the session"))
		old.wait()
	}
	cc, err := s.connect(ctx)
	if err != nil {
		return err
	}
	s.mu.Lock()
	if s.mu.closed {
		s.mu.Unlock()
		cc.fail(errors.New("session closed"))
		cc.wait()
		return s.downErr(errors.New("session closed"))
	}
	s.mu.cc = cc
	s.mu.fenced = cc.gen
	keep := s.mu.orphans[:0]
	for _, o := range s.mu.orphans {
		if o.gen < cc.gen {
			close(o.settle)
		} else {
			keep = append(keep, o)
		}
	}
	s.mu.orphans = keep
	s.mu.Unlock()
	return nil
}

// orphan registers the settle channel of a mutating command of connection
// generation gen that only a reinstatement can settle.
func (s *Session) orphan(gen int, settle chan struct{}) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if gen < s.mu.fenced {
		close(settle)
		return
	}
	s.mu.orphans = append(s.mu.orphans, orphan{gen, settle})
}

func (s *Session) orphanCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.mu.orphans)
}

// Close logs out (waiting at most the TMF timeout for the answer), closes
// the connection and waits for the session's goroutines. Pending commands
// not settled stay unsettled.
func (s *Session) Close() error {
	s.mu.Lock()
	if s.mu.closed {
		s.mu.Unlock()
		return nil
	}
	s.mu.closed = true
	cc := s.mu.cc
	s.mu.cc = nil
	s.mu.Unlock()
	if cc != nil {
		if !cc.down() {
			ctx, cancel := context.WithTimeout(context.Background(), s.cfg.TMFTimeout)
			_, _ = cc.control(ctx, kindLogout, 0, 0, 0)
			cancel()
		}
		cc.fail(errors.New("session closed"))
		cc.wait()
	}
	s.wg.Wait()
	return nil
}

// task kinds
const (
	kindCmd = iota
	kindNOP
	kindTMF
	kindLogout
)

type ctask struct {
	kind     int
	lun      uint64
	itt      uint32
	cmdSN    uint32
	t        *Task
	out      []byte // the data R2Ts ask for (a copy when R2Ts may come)
	sent     bool
	finished bool
	done     chan struct{}
	res      Result
	err      error
	received int
	// abandoned: the caller gave up; late data is dropped
	abandoned bool
	// settle: a mutating abandoned command's proof channel
	settle chan struct{}
	// tmfResp: the response code of a TMF
	tmfResp uint8
}

type clientConn struct {
	s      *Session
	gen    int
	nc     net.Conn
	fr     *Framer
	params Params
	tsih   uint16

	wsem chan struct{} // one writer at a time
	wpdu PDU

	// login-phase sequence numbers, used before the reader starts
	cmdSN, expStatSN uint32

	mu struct {
		sync.Mutex
		expCmdSN, maxCmdSN uint32
		windowSet          bool
		window             chan struct{} // closed when the window moves
		tasks              map[uint32]*ctask
		nextITT            uint32
		err                error
	}
	done chan struct{}
	wg   sync.WaitGroup // reader, R2T senders, NOP answers
}

func newClientConn(s *Session, nc net.Conn, gen int) *clientConn {
	cc := &clientConn{s: s, gen: gen, nc: nc, fr: NewFramer(nc, nc, 64<<10), wsem: make(chan struct{}, 1), done: make(chan struct{})}
	cc.mu.tasks = map[uint32]*ctask{}
	cc.mu.window = make(chan struct{})
	cc.mu.nextITT = 1
	cc.cmdSN = 1
	return cc
}

func (cc *clientConn) start() {
	cc.mu.Lock()
	if cc.mu.windowSet {
		cc.cmdSN = cc.mu.expCmdSN
	} else {
		cc.mu.expCmdSN, cc.mu.maxCmdSN, cc.mu.windowSet = cc.cmdSN, cc.cmdSN, true
	}
	cc.mu.Unlock()
	cc.wg.Add(1)
	go cc.readLoop()
}

// serialLess compares sequence numbers with serial arithmetic (RFC 1982).
func serialLess(a, b uint32) bool { return a != b && int32(a-b) < 0 }

// updateWindow takes ExpCmdSN and MaxCmdSN from a target PDU (RFC 7143
// 4.2.2.1: ignored when MaxCmdSN < ExpCmdSN-1).
func (cc *clientConn) updateWindow(exp, maxSN uint32) {
	if serialLess(maxSN, exp-1) {
		return
	}
	cc.mu.Lock()
	moved := false
	if serialLess(cc.mu.expCmdSN, exp) || !cc.mu.windowSet {
		cc.mu.expCmdSN = exp
		moved = true
	}
	if serialLess(cc.mu.maxCmdSN, maxSN) || !cc.mu.windowSet {
		cc.mu.maxCmdSN = maxSN
		moved = true
	}
	cc.mu.windowSet = true
	if moved && cc.mu.window != nil {
		close(cc.mu.window)
		cc.mu.window = make(chan struct{})
	}
	cc.mu.Unlock()
}

func (cc *clientConn) down() bool {
	select {
	case <-cc.done:
		return true
	default:
		return false
	}
}

func (cc *clientConn) wait() { cc.wg.Wait() }

// fail takes the connection down: the socket is closed and every task
// still waiting completes with a session-down error.
func (cc *clientConn) fail(cause error) {
	cc.mu.Lock()
	if cc.mu.err != nil {
		cc.mu.Unlock()
		return
	}
	cc.mu.err = cause
	close(cc.done)
	var orphans []chan struct{}
	for itt, t := range cc.mu.tasks {
		delete(cc.mu.tasks, itt)
		if t.settle != nil {
			orphans = append(orphans, t.settle)
			t.settle = nil
		}
		if !t.finished {
			t.finished = true
			t.err = cc.s.downErr(cause)
			close(t.done)
		}
	}
	cc.mu.Unlock()
	_ = cc.nc.Close()
	for _, o := range orphans {
		cc.s.orphan(cc.gen, o)
	}
}

// acquire takes the writer's turn.
func (cc *clientConn) acquire(ctx context.Context) error {
	select {
	case cc.wsem <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-cc.done:
		return cc.s.downErr(cc.cause())
	}
}

func (cc *clientConn) release() { <-cc.wsem }

func (cc *clientConn) cause() error {
	cc.mu.Lock()
	defer cc.mu.Unlock()
	return cc.mu.err
}

// write sends one PDU; the caller holds the writer's turn. A failed write
// leaves the stream out of step: the connection is failed. The context's
// deadline bounds the write; a cancellation does not interrupt it (that
// would cost the connection for a caller that merely lost interest).
func (cc *clientConn) write(ctx context.Context, m Message, data []byte) error {
	dl, _ := ctx.Deadline()
	_ = cc.nc.SetWriteDeadline(dl)
	cc.wpdu.Encode(m, data)
	err := cc.fr.WritePDU(&cc.wpdu)
	if err != nil {
		cc.fail(fmt.Errorf("sending %v: %w", m.Op(), err))
		return cc.s.downErr(err)
	}
	return nil
}

// register gives a task a tag and, for a non-immediate command, the next
// CmdSN once the window allows it. The caller holds the writer's turn, so
// CmdSNs go out in order.
func (cc *clientConn) registerLocked(t *ctask, immediate bool) bool {
	if !immediate && serialLess(cc.mu.maxCmdSN, cc.cmdSN) {
		return false
	}
	for {
		itt := cc.mu.nextITT
		cc.mu.nextITT++
		if itt == ReservedTag || itt == 0 {
			continue
		}
		if _, busy := cc.mu.tasks[itt]; busy {
			continue
		}
		t.itt = itt
		break
	}
	t.cmdSN = cc.cmdSN
	if !immediate {
		cc.cmdSN++
	}
	cc.mu.tasks[t.itt] = t
	return true
}

// begin waits for the writer's turn and a CmdSN in the window, and
// registers t. On success the caller holds the writer's turn.
func (cc *clientConn) begin(ctx context.Context, t *ctask, immediate bool) error {
	for {
		if err := cc.acquire(ctx); err != nil {
			return err
		}
		cc.mu.Lock()
		if cc.mu.err != nil {
			err := cc.mu.err
			cc.mu.Unlock()
			cc.release()
			return cc.s.downErr(err)
		}
		if cc.registerLocked(t, immediate) {
			cc.mu.Unlock()
			return nil
		}
		w := cc.mu.window
		cc.mu.Unlock()
		cc.release()
		select {
		case <-w:
		case <-ctx.Done():
			return ctx.Err()
		case <-cc.done:
			return cc.s.downErr(cc.cause())
		}
	}
}

// timeoutErr is the error of a command whose caller gave up: a deadline
// that passed is a path failure; a cancellation (a hedged read that lost,
// an unmount) says nothing about the path and carries no class.
func (cc *clientConn) timeoutErr(err error) error {
	if errors.Is(err, context.DeadlineExceeded) {
		return ioerr.NewError(ioerr.ClassPathFailure, "", fmt.Errorf("iSCSI %s: no answer in time: %w", cc.s.cfg.Address, err))
	}
	return fmt.Errorf("iSCSI %s: %w", cc.s.cfg.Address, err)
}

func (cc *clientConn) do(ctx context.Context, t *Task) (Result, error) {
	p := cc.params
	ct := &ctask{kind: kindCmd, lun: t.LUN, t: t, done: make(chan struct{})}
	out := t.DataOut
	imm := 0
	if p.ImmediateData {
		imm = min(len(out), int(p.FirstBurstLength), int(p.PeerMaxRecvDataSegmentLength))
	}
	unsol := imm
	if !p.InitialR2T {
		unsol = min(len(out), int(p.FirstBurstLength))
	}
	if unsol < len(out) {
		// R2Ts will ask for the rest after Do may have returned: keep a copy
		ct.out = append([]byte(nil), out...)
	}
	if err := cc.begin(ctx, ct, false); err != nil {
		if ctx.Err() != nil {
			return Result{}, cc.timeoutErr(err)
		}
		return Result{}, err
	}
	cmd := &SCSICommand{Final: unsol == imm, Read: len(t.DataIn) > 0, Write: len(out) > 0, Attr: 1,
		LUN: EncodeLUN(t.LUN), ITT: ct.itt, CmdSN: ct.cmdSN, ExpStatSN: cc.expStatSNNow()}
	cmd.ExpectedDataTransferLength = uint32(len(out) + len(t.DataIn))
	copy(cmd.CDB[:], t.CDB)
	cc.mu.Lock()
	ct.sent = true // from here on the target may hold it
	cc.mu.Unlock()
	err := cc.write(ctx, cmd, out[:imm])
	for off, sn := imm, uint32(0); err == nil && off < unsol; sn++ {
		n := min(unsol-off, int(p.PeerMaxRecvDataSegmentLength))
		err = cc.write(ctx, &DataOut{Final: off+n == unsol, LUN: cmd.LUN, ITT: ct.itt, TTT: ReservedTag,
			ExpStatSN: cc.expStatSNNow(), DataSN: sn, Offset: uint32(off)}, out[off:off+n])
		off += n
	}
	cc.release()
	return cc.await(ctx, ct)
}

// await waits for a command's end, or abandons it when ctx ends first.
func (cc *clientConn) await(ctx context.Context, ct *ctask) (Result, error) {
	select {
	case <-ct.done:
	case <-ctx.Done():
	}
	cc.mu.Lock()
	if ct.finished {
		res, err := ct.res, ct.err
		sent := ct.sent
		cc.mu.Unlock()
		if err != nil && ct.t.Mutating && sent && errors.Is(err, ErrSessionDown) {
			// the connection broke with the command out: only a
			// reinstatement proves it will not run
			settle := make(chan struct{})
			cc.s.orphan(cc.gen, settle)
			return res, &PendingError{Err: err, settle: settle, waiting: cc.reinstateWaiting}
		}
		return res, err
	}
	ct.abandoned = true
	mutating := ct.t.Mutating
	ct.t = &Task{LUN: ct.lun, Mutating: mutating} // never touch the caller's buffers again
	var settle chan struct{}
	if mutating {
		settle = make(chan struct{})
		ct.settle = settle
	}
	cc.mu.Unlock()
	err := cc.timeoutErr(ctx.Err())
	if !mutating {
		return Result{}, err
	}
	cc.s.wg.Add(1)
	go cc.fence(ct)
	return Result{}, &PendingError{Err: err, settle: settle, waiting: func() string {
		if cc.down() {
			return cc.reinstateWaiting()
		}
		return fmt.Sprintf("iSCSI %s: ABORT TASK, then LUN RESET, then a session reinstatement to end the abandoned command (tag 0x%x)", cc.s.cfg.Address, ct.itt)
	}}
}

func (cc *clientConn) reinstateWaiting() string {
	return fmt.Sprintf("iSCSI %s: a new login with the same ISID (session reinstatement), which the path checker attempts", cc.s.cfg.Address)
}

func (cc *clientConn) expStatSNNow() uint32 {
	cc.mu.Lock()
	defer cc.mu.Unlock()
	return cc.expStatSN
}

// fence proves an abandoned mutating command cannot run any more: ABORT
// TASK, else LUN RESET, else the connection is dropped and the proof waits
// for a reinstatement.
func (cc *clientConn) fence(ct *ctask) {
	defer cc.s.wg.Done()
	settleNow := func() bool {
		cc.mu.Lock()
		defer cc.mu.Unlock()
		if ct.settle == nil {
			return true // fail() handed it to the session
		}
		close(ct.settle)
		ct.settle = nil
		// the entry stays: a late response for the tag finishes it
		return true
	}
	ctx, cancel := context.WithTimeout(context.Background(), cc.s.cfg.TMFTimeout)
	resp, err := cc.control(ctx, kindTMF, TMFAbortTask, ct.lun, ct.itt, ct.cmdSN)
	cancel()
	if err == nil && (resp == TMFRespComplete || resp == TMFRespNoTask) {
		settleNow()
		return
	}
	if err == nil || errors.Is(err, context.DeadlineExceeded) || !errors.Is(err, ErrSessionDown) {
		ctx, cancel := context.WithTimeout(context.Background(), cc.s.cfg.TMFTimeout)
		_, err = cc.taskSet(ctx, TMFLogicalUnitReset, ct.lun)
		cancel()
		if err == nil {
			return // the reset settled it with the LU's other tasks
		}
	}
	cc.fail(fmt.Errorf("neither ABORT TASK nor LUN RESET ended an abandoned command: %v", err))
}

// control sends an immediate NOP-Out ping, TMF request or logout and waits
// for its answer; it returns a TMF's response code.
func (cc *clientConn) control(ctx context.Context, kind int, fn uint8, lun uint64, ref uint32, refSN ...uint32) (uint8, error) {
	resp, _, err := cc.controlSN(ctx, kind, fn, lun, ref, refSN...)
	return resp, err
}

// controlSN is control that also returns the CmdSN the request carried:
// the commands sent before it have lower ones.
func (cc *clientConn) controlSN(ctx context.Context, kind int, fn uint8, lun uint64, ref uint32, refSN ...uint32) (uint8, uint32, error) {
	ct := &ctask{kind: kind, lun: lun, done: make(chan struct{}), t: &Task{LUN: lun}}
	if err := cc.begin(ctx, ct, true); err != nil {
		return 0, 0, err
	}
	var m Message
	switch kind {
	case kindNOP:
		m = &NOPOut{Immediate: true, ITT: ct.itt, TTT: ReservedTag, CmdSN: ct.cmdSN, ExpStatSN: cc.expStatSNNow()}
	case kindTMF:
		r := &TMFRequest{Immediate: true, Function: fn, LUN: EncodeLUN(lun), ITT: ct.itt, ReferencedTag: ref,
			CmdSN: ct.cmdSN, ExpStatSN: cc.expStatSNNow()}
		if len(refSN) > 0 {
			r.RefCmdSN = refSN[0]
		}
		m = r
	case kindLogout:
		m = &LogoutRequest{Immediate: true, Reason: LogoutCloseSession, ITT: ct.itt, CmdSN: ct.cmdSN, ExpStatSN: cc.expStatSNNow()}
	}
	err := cc.write(ctx, m, nil)
	cc.release()
	if err != nil {
		return 0, 0, err
	}
	select {
	case <-ct.done:
	case <-ctx.Done():
		cc.mu.Lock()
		if !ct.finished {
			ct.abandoned = true // the entry stays: a late answer finishes it
		}
		cc.mu.Unlock()
		return 0, 0, cc.timeoutErr(ctx.Err())
	}
	return ct.tmfResp, ct.cmdSN, ct.err
}

// SetTMFTimeout changes the bound on task management requests and pings
// (tests shorten it).
func (s *Session) SetTMFTimeout(d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.cfg.TMFTimeout = d
}
