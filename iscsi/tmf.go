package iscsi

import (
	"context"
	"errors"
	"fmt"

	"github.com/mpathfs/mpathfs/ioerr"
)

// Task management functions that end a set of tasks: ABORT TASK SET,
// CLEAR TASK SET, LOGICAL UNIT RESET and TARGET WARM RESET. The request
// goes out immediate, carrying the CmdSN the next command will have, so
// the commands it covers are exactly those of this session sent before it
// (RFC 7143 4.2.3.3: CmdSN lower than the request's). The target aborts
// them without answering them and answers the request once none of them
// can still reach the logical unit. So when the answer is Function
// Complete the initiator ends each of them at once with a retryable error
// (the command was aborted, not failed: the multipath layer retries it);
// a mutating one is settled by that answer — it can no longer execute —
// and an abandoned mutating one awaiting its fencing proof gets it.
// Any other answer ends nothing and is a *TMFError.

// TMFName is a task management function's name as SAM spells it.
func TMFName(fn uint8) string {
	switch fn {
	case TMFAbortTask:
		return "ABORT TASK"
	case TMFAbortTaskSet:
		return "ABORT TASK SET"
	case TMFClearACA:
		return "CLEAR ACA"
	case TMFClearTaskSet:
		return "CLEAR TASK SET"
	case TMFLogicalUnitReset:
		return "LOGICAL UNIT RESET"
	case TMFTargetWarmReset:
		return "TARGET WARM RESET"
	case TMFTargetColdReset:
		return "TARGET COLD RESET"
	case TMFTaskReassign:
		return "TASK REASSIGN"
	}
	return fmt.Sprintf("task management function %d", fn)
}

// TMFResponseName names a Task Management Function Response code
// (RFC 7143 11.6.1).
func TMFResponseName(r uint8) string {
	switch r {
	case TMFRespComplete:
		return "Function Complete"
	case TMFRespNoTask:
		return "Task Does Not Exist"
	case TMFRespNoLUN:
		return "LUN Does Not Exist"
	case TMFRespTaskAllegiant:
		return "Task Still Allegiant"
	case TMFRespNoReassign:
		return "Task Allegiance Reassignment Not Supported"
	case TMFRespNotSupported:
		return "Task Management Function Not Supported"
	case TMFRespAuthFailed:
		return "Function Authorization Failed"
	case TMFRespRejected:
		return "Function Rejected"
	}
	return fmt.Sprintf("response %d", r)
}

// TMFError is a task management function the target answered with
// anything but Function Complete: it did nothing.
type TMFError struct {
	Address  string
	Function uint8
	Response uint8
}

func (e *TMFError) Error() string {
	return fmt.Sprintf("iSCSI %s: the target answered %s with %s (response %d): nothing was aborted",
		e.Address, TMFName(e.Function), TMFResponseName(e.Response), e.Response)
}

// Unsupported reports an answer that says the target does not do the
// function at all (not supported, rejected, not authorized), rather than
// that its object is missing.
func (e *TMFError) Unsupported() bool {
	switch e.Response {
	case TMFRespNotSupported, TMFRespRejected, TMFRespAuthFailed:
		return true
	}
	return false
}

// TaskManagement sends a task management function that ends a set of
// tasks — TMFAbortTaskSet, TMFClearTaskSet, TMFLogicalUnitReset (of lun)
// or TMFTargetWarmReset (lun ignored) — and waits for its answer (bounded
// by ctx, else by the TMF timeout). On Function Complete the commands it
// covered end with a retryable error and it returns how many; otherwise
// the error wraps a *TMFError.
func (s *Session) TaskManagement(ctx context.Context, fn uint8, lun uint64) (int, error) {
	switch fn {
	case TMFAbortTaskSet, TMFClearTaskSet, TMFLogicalUnitReset, TMFTargetWarmReset:
	default:
		return 0, fmt.Errorf("iSCSI %s: %s is not a function that ends a task set (want ABORT TASK SET, CLEAR TASK SET, LOGICAL UNIT RESET or TARGET WARM RESET)", s.cfg.Address, TMFName(fn))
	}
	cc := s.current()
	if cc == nil {
		return 0, s.downErr(errors.New("no connection"))
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, s.cfg.TMFTimeout)
		defer cancel()
	}
	return cc.taskSet(ctx, fn, lun)
}

// AbortTaskSet sends ABORT TASK SET for lun: this session's commands on
// the LU end (other initiators' tasks are not affected).
func (s *Session) AbortTaskSet(ctx context.Context, lun uint64) error {
	_, err := s.TaskManagement(ctx, TMFAbortTaskSet, lun)
	return err
}

// TargetWarmReset sends TARGET WARM RESET: every task on every LU of the
// target ends, for every initiator.
func (s *Session) TargetWarmReset(ctx context.Context) error {
	_, err := s.TaskManagement(ctx, TMFTargetWarmReset, 0)
	return err
}

// taskSet sends fn and, on Function Complete, ends the commands it
// covered and says how many.
func (cc *clientConn) taskSet(ctx context.Context, fn uint8, lun uint64) (int, error) {
	resp, sn, err := cc.controlSN(ctx, kindTMF, fn, lun, ReservedTag)
	if err != nil {
		return 0, err
	}
	if resp != TMFRespComplete {
		return 0, ioerr.NewError(ioerr.ClassPathFailure, "task management", &TMFError{Address: cc.s.cfg.Address, Function: fn, Response: resp})
	}
	return cc.endCovered(fn, lun, sn), nil
}

// endCovered ends the commands of this connection sent before the task
// management request with CmdSN sn: of lun, or of every LU for a target
// reset.
func (cc *clientConn) endCovered(fn uint8, lun uint64, sn uint32) int {
	cause := ioerr.NewError(ioerr.ClassRetryable, "", fmt.Errorf("iSCSI %s: command aborted by %s: retry it", cc.s.cfg.Address, TMFName(fn)))
	n := 0
	cc.mu.Lock()
	defer cc.mu.Unlock()
	for itt, t := range cc.mu.tasks {
		if t.kind != kindCmd || !serialLess(t.cmdSN, sn) || (fn != TMFTargetWarmReset && t.lun != lun) {
			continue
		}
		delete(cc.mu.tasks, itt)
		if t.settle != nil {
			close(t.settle)
			t.settle = nil
		}
		if !t.finished {
			t.finished = true
			t.err = &abortedError{cause}
			close(t.done)
			n++
		}
	}
	return n
}

// abortedError is the error of a command a task management function
// aborted: retryable, and — the function's answer proved it — settled.
type abortedError struct{ err error }

func (e *abortedError) Error() string { return e.err.Error() }
func (e *abortedError) Unwrap() error { return e.err }

// settledChan is closed: the proof is in.
var settledChan = func() chan struct{} { c := make(chan struct{}); close(c); return c }()

// Settled and WaitingFor make an aborted mutating command's error a
// settled backends.Pending: it will not execute later.
func (e *abortedError) Settled() <-chan struct{} { return settledChan }
func (e *abortedError) WaitingFor() string {
	return "nothing: a task management function aborted the command and the target confirmed it"
}

// IsAborted reports whether a command's error says a task management
// function aborted it.
func IsAborted(err error) bool {
	var a *abortedError
	return errors.As(err, &a)
}
