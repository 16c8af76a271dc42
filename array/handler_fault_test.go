package array

import (
	"context"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/mpathfs/mpathfs/ioerr"
	"github.com/mpathfs/mpathfs/scsi"
)

func TestFaultRuleValidate(t *testing.T) {
	for _, tc := range []struct {
		r    FaultRule
		want string
	}{
		{FaultRule{}, "does nothing"},
		{FaultRule{Hang: true, Status: scsi.StatusBusy}, "at most one"},
		{FaultRule{Status: scsi.StatusGood + 1}, "want BUSY"},
		{FaultRule{Hang: true, Ops: []string{"scribble"}}, "unknown operation"},
		{FaultRule{Hang: true, LBAFrom: 5, LBATo: 4}, "is empty"},
		{FaultRule{Delay: -1}, "does nothing"},
	} {
		require.ErrorContains(t, tc.r.Validate(), tc.want)
	}
	e := newEnv(t)
	_, err := e.h.AddFault(FaultRule{Hang: true, LUNs: []uint64{3}})
	require.ErrorContains(t, err, "no logical unit 3")
}

func TestFaults(t *testing.T) {
	e := newEnv(t)
	e.ready(nxA, nxB)
	read := cdbRW16(scsi.OpRead16, 10, 1, 0)
	medium := ioerr.Sense{Key: ioerr.SenseMediumError, ASC: 0x11, ASCQ: 0}

	// Check condition for one initiator's reads of one LBA range.
	id, err := e.h.AddFault(FaultRule{Initiator: nxA.Initiator, Ops: []string{"read"}, LBAFrom: 5, LBATo: 15, Sense: &medium})
	require.NoError(t, err)
	requireSense(t, e.do(nxA, read, nil), medium, "A reads in range")
	requireGood(t, e.do(nxA, cdbRW16(scsi.OpRead16, 20, 1, 0), nil), "A reads out of range")
	requireGood(t, e.do(nxB, read, nil), "B reads")
	requireGood(t, e.do(nxA, cdbRW16(scsi.OpWrite16, 10, 1, 0), block(1)), "A writes")
	require.Len(t, e.h.Faults(), 1)
	require.True(t, e.h.RemoveFault(id))
	requireGood(t, e.do(nxA, read, nil), "removed")

	// Status for a port, counted.
	_, err = e.h.AddFault(FaultRule{Port: 3, Status: scsi.StatusBusy, Count: 2})
	require.NoError(t, err)
	assert.Equal(t, scsi.StatusBusy, e.do(nxB, read, nil).Status)
	assert.Equal(t, scsi.StatusBusy, e.do(nxB, read, nil).Status)
	requireGood(t, e.do(nxB, read, nil), "count used up")
	assert.Empty(t, e.h.Faults())

	// "any" matches INQUIRY too; the default op set does not.
	_, err = e.h.AddFault(FaultRule{Status: scsi.StatusTaskSetFull})
	require.NoError(t, err)
	requireGood(t, e.do(nxA, scsi.CDBInquiry(false, 0, 36), nil), "inquiry unaffected")
	assert.Equal(t, scsi.StatusTaskSetFull, e.do(nxA, read, nil).Status)
	e.h.ClearFaults()
	_, err = e.h.AddFault(FaultRule{Ops: []string{"any"}, Status: scsi.StatusReservationConflict})
	require.NoError(t, err)
	assert.Equal(t, scsi.StatusReservationConflict, e.do(nxA, scsi.CDBInquiry(false, 0, 36), nil).Status)
	e.h.ClearFaults()

	// Hang: until the command is aborted; it never executes.
	_, err = e.h.AddFault(FaultRule{Hang: true, Ops: []string{"write"}})
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan scsi.Response)
	go func() {
		done <- e.h.Execute(ctx, &scsi.Command{Nexus: nxA, CDB: cdbRW16(scsi.OpWrite16, 10, 1, 0), DataOut: block(9)})
	}()
	cancel()
	assert.Equal(t, scsi.StatusTaskAborted, (<-done).Status)
	e.h.ClearFaults()
	assert.Equal(t, block(1), e.do(nxA, read, nil).DataIn, "the hung write never landed")
}

func TestFaultDelayAndLandLate(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newEnv(t)
		e.ready(nxA)
		_, err := e.h.AddFault(FaultRule{Ops: []string{"flush"}, Delay: 3 * time.Second})
		require.NoError(t, err)
		start := time.Now()
		requireGood(t, e.do(nxA, cdbRW10(scsi.OpSynchronizeCache10, 0, 0, 0), nil), "delayed flush")
		assert.Equal(t, 3*time.Second, time.Since(start), "fake clock: exactly the delay")
		e.h.ClearFaults()

		_, err = e.h.AddFault(FaultRule{Ops: []string{"write"}, LandLate: 10 * time.Second})
		require.NoError(t, err)
		requireGood(t, e.do(nxA, cdbRW16(scsi.OpWrite16, 4, 1, 0), block(0x77)), "acknowledged at once")
		e.h.ClearFaults()
		assert.Equal(t, block(0), e.do(nxA, cdbRW16(scsi.OpRead16, 4, 1, 0), nil).DataIn, "not landed yet")
		requireGood(t, e.do(nxA, cdbRW16(scsi.OpWrite16, 4, 1, 0), block(0x11)), "a newer write")
		time.Sleep(11 * time.Second)
		synctest.Wait()
		assert.Equal(t, block(0x77), e.do(nxA, cdbRW16(scsi.OpRead16, 4, 1, 0), nil).DataIn, "the old write landed late over the newer one")
		require.NoError(t, e.h.Close(context.Background()))
	})
}

// FuzzExecute: any CDB and data, through any nexus, never panics or
// hangs, and answers with a status and (for CHECK CONDITION) parseable
// sense.
func FuzzExecute(f *testing.F) {
	f.Add([]byte{scsi.OpRead10, 0, 0, 0, 0, 0, 0, 0, 1, 0}, []byte{}, uint8(0), 512)
	f.Add(cdbCAW(0, 1), make([]byte, 1024), uint8(1), 0)
	f.Add(scsi.CDBPersistentReserveOut(scsi.PROutRegisterAndMove, 1, 40), make([]byte, 40), uint8(2), 0)
	f.Add([]byte{scsi.OpUnmap, 0, 0, 0, 0, 0, 0, 0, 24, 0}, make([]byte, 24), uint8(0), 0)
	f.Add([]byte{scsi.OpModeSelect10, 0x10, 0, 0, 0, 0, 0, 0, 30, 0}, make([]byte, 30), uint8(0), 0)
	f.Add([]byte{scsi.OpMaintenanceOut, 0x0a, 0, 0, 0, 0, 0, 0, 0, 8, 0, 0}, []byte{0, 0, 0, 0, 0, 0, 0, 2}, uint8(1), 0)
	f.Add([]byte{scsi.OpMaintenanceIn, 0x0c, 0x82, 0x5f, 0, 7, 0, 0, 1, 0, 0, 0}, []byte{}, uint8(0), 4096)
	e := newEnv(f)
	nexuses := []scsi.Nexus{nxA, nxB, nxC}
	f.Fuzz(func(t *testing.T, cdb, data []byte, who uint8, inLen int) {
		if inLen < 0 || inLen > 1<<20 {
			inLen = 1 << 16
		}
		n := nexuses[int(who)%len(nexuses)]
		r := e.h.Execute(context.Background(), &scsi.Command{Nexus: n, LUN: uint64(who >> 6), CDB: cdb, DataOut: data, DataInLen: inLen})
		if len(r.DataIn) > inLen {
			t.Fatalf("returned %d bytes for a %d-byte buffer", len(r.DataIn), inLen)
		}
		if r.Status == scsi.StatusCheckCondition {
			if _, _, err := scsi.ParseSense(r.Sense); err != nil {
				t.Fatalf("bad sense: %v", err)
			}
		}
	})
}
