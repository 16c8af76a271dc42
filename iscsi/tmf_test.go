package iscsi_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/mpathfs/mpathfs/backends"
	"github.com/mpathfs/mpathfs/ioerr"
	"github.com/mpathfs/mpathfs/iscsi"
	"github.com/mpathfs/mpathfs/iscsi/iscsitest"
	"github.com/mpathfs/mpathfs/scsi"
)

func dialSession(t *testing.T, addr, initiator string) *iscsi.Session {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	s, err := iscsi.Dial(ctx, iscsi.InitiatorConfig{Address: addr, TargetName: targetName, InitiatorName: initiator})
	require.NoError(t, err)
	t.Cleanup(func() { s.Close() })
	return s
}

// A task-set function ends, with a retryable and settled error, the
// commands of the session in flight on what it covers — the target
// aborts them silently, so without that they would wait for their
// timeout — and none of them reaches the medium; the target counts it.
func TestInitiatorTaskManagementEndsCommands(t *testing.T) {
	for _, fn := range []uint8{iscsi.TMFAbortTaskSet, iscsi.TMFLogicalUnitReset, iscsi.TMFTargetWarmReset} {
		t.Run(iscsi.TMFName(fn), func(t *testing.T) {
			ram := iscsitest.NewRAM(1, 64, 512)
			started := holdWrites(ram, 7)
			tt := startTarget(t, iscsi.TargetConfig{}, ram)
			s := dialSession(t, tt.addr, "iqn.2026-01.org.test:a")
			res := make(chan error, 1)
			go func() {
				ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
				defer cancel()
				_, err := s.Do(ctx, &iscsi.Task{LUN: 0, CDB: cdbWrite10(7, 1), DataOut: block('w'), Mutating: true})
				res <- err
			}()
			<-started
			n, err := s.TaskManagement(context.Background(), fn, 0)
			require.NoError(t, err)
			assert.Equal(t, 1, n, "the held write was ended")
			var werr error
			select {
			case werr = <-res:
			case <-time.After(30 * time.Second):
				t.Fatal("the aborted write did not end when the task management function completed")
			}
			require.Error(t, werr)
			assert.True(t, iscsi.IsAborted(werr), "error says the command was aborted: %v", werr)
			assert.Equal(t, ioerr.ClassRetryable, ioerr.ClassOf(werr), "an aborted command is retried, the path is fine: %v", werr)
			var pe backends.Pending
			require.True(t, errors.As(werr, &pe), "a mutating command's error carries its settlement")
			select {
			case <-pe.Settled():
			default:
				t.Fatal("the function's answer proves the aborted write will not execute: settled")
			}
			assert.Equal(t, make([]byte, 512), ram.Disk(0)[7*512:8*512], "the aborted write never reached the medium")
			// the session goes on
			r, err := s.Do(context.Background(), &iscsi.Task{LUN: 0, CDB: cdbWrite10(8, 1), DataOut: block('v'), Mutating: true})
			require.NoError(t, err)
			assert.Equal(t, scsi.StatusGood, r.Status)
			assert.Equal(t, block('v'), ram.Disk(0)[8*512:9*512])
			assert.Equal(t, []iscsi.TMFCount{{Function: iscsi.TMFName(fn), Response: "Function Complete", Count: 1}}, tt.TaskManagementCounts())
		})
	}
}

// A function the target refuses ends nothing and says what the target
// answered.
func TestInitiatorTaskManagementRefused(t *testing.T) {
	tt := startTarget(t, iscsi.TargetConfig{}, iscsitest.NewRAM(1, 64, 512))
	s := dialSession(t, tt.addr, "iqn.2026-01.org.test:a")
	_, err := s.TaskManagement(context.Background(), iscsi.TMFLogicalUnitReset, 5)
	var te *iscsi.TMFError
	require.True(t, errors.As(err, &te), "%v", err)
	assert.Equal(t, iscsi.TMFRespNoLUN, te.Response)
	assert.False(t, te.Unsupported())
	assert.Contains(t, err.Error(), "answered LOGICAL UNIT RESET with LUN Does Not Exist")
	_, err = s.TaskManagement(context.Background(), iscsi.TMFAbortTask, 0)
	require.ErrorContains(t, err, "ABORT TASK is not a function that ends a task set")
	require.NoError(t, s.Ping(context.Background()), "the session survives refused functions")
}

// ABORT TASK SET ends only the tasks of the nexus that sent it: another
// initiator's command on the same LU completes.
func TestAbortTaskSetOwnNexusOnly(t *testing.T) {
	ram := iscsitest.NewRAM(1, 64, 512)
	release := make(chan struct{})
	held := make(chan string, 4)
	ram.Hook = func(ctx context.Context, cmd *scsi.Command) *scsi.Response {
		if cmd.CDB[0] != 0x2a || cmd.CDB[5] != 7 {
			return nil
		}
		held <- cmd.Nexus.Initiator
		select {
		case <-ctx.Done():
			return &scsi.Response{Status: scsi.StatusTaskAborted}
		case <-release:
			return nil
		}
	}
	tt := startTarget(t, iscsi.TargetConfig{}, ram)
	a := dialSession(t, tt.addr, "iqn.2026-01.org.test:a")
	b := dialSession(t, tt.addr, "iqn.2026-01.org.test:b")
	resA, resB := make(chan error, 1), make(chan error, 1)
	for _, x := range []struct {
		s   *iscsi.Session
		res chan error
	}{{a, resA}, {b, resB}} {
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			r, err := x.s.Do(ctx, &iscsi.Task{LUN: 0, CDB: cdbWrite10(7, 1), DataOut: block('b'), Mutating: true})
			if err == nil && r.Status != scsi.StatusGood {
				err = fmt.Errorf("status %#x", r.Status)
			}
			x.res <- err
		}()
		<-held
	}
	require.NoError(t, a.AbortTaskSet(context.Background(), 0))
	require.True(t, iscsi.IsAborted(<-resA))
	close(release)
	require.NoError(t, <-resB, "the other nexus's command is not touched")
}

// A task-set function covers the requesting session's commands sent
// before it (CmdSN lower than its own), not one that carries its CmdSN or
// a later one: that command arrived after the request and runs on.
func TestTaskSetCoversEarlierCmdSNOnly(t *testing.T) {
	ram := iscsitest.NewRAM(1, 64, 512)
	started := holdWrites(ram, 7)
	tt := startTarget(t, iscsi.TargetConfig{}, ram)
	r := dial(t, tt.addr)
	r.mustLogin("iqn.2026-01.org.test:a", 1)
	sn := r.cmdSN
	r.command(0, cdbWrite10(7, 1), false, true, 512, block('x'))
	<-started
	// As if the request had gone out before the command: it carries the
	// command's CmdSN.
	r.cmdSN = sn
	require.Equal(t, iscsi.TMFRespComplete, r.tmf(iscsi.TMFAbortTaskSet, 0, iscsi.ReservedTag, 0))
	for _, ev := range ram.Events() {
		assert.NotContains(t, ev, "returned", "a command after the request is not aborted")
	}
	r.cmdSN = sn + 1
	require.Equal(t, iscsi.TMFRespComplete, r.tmf(iscsi.TMFAbortTaskSet, 0, iscsi.ReservedTag, 0))
	ev := ram.Events()
	assert.Equal(t, "returned iqn.2026-01.org.test:a", ev[len(ev)-1], "the next request covers it")
	assert.Equal(t, make([]byte, 512), ram.Disk(0)[7*512:8*512])
}
