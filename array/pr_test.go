package array

import (
	"context"
	"encoding/binary"
	"os"
	"path/filepath"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/mpathfs/mpathfs/ioerr"
	"github.com/mpathfs/mpathfs/scsi"
)

func TestPRRegisterReserveRelease(t *testing.T) {
	e := newEnv(t)
	e.ready(nxA, nxB, nxC)
	gen0, keys := e.readKeys(nxA)
	assert.Empty(t, keys)

	// REGISTER with a wrong reservation key from an unregistered nexus.
	assert.Equal(t, scsi.StatusReservationConflict, e.prOut(nxA, scsi.PROutRegister, 0, scsi.PROutParams{Key: 5, SAKey: 0xa}).Status)
	e.register(nxA, 0xa)
	e.register(nxB, 0xb)
	gen, keys := e.readKeys(nxC)
	assert.Equal(t, gen0+2, gen)
	assert.ElementsMatch(t, []uint64{0xa, 0xb}, keys)
	// Re-register with the wrong key conflicts; with the right one changes it.
	assert.Equal(t, scsi.StatusReservationConflict, e.prOut(nxA, scsi.PROutRegister, 0, scsi.PROutParams{Key: 0xb, SAKey: 0xaa}).Status)
	requireGood(t, e.prOut(nxA, scsi.PROutRegister, 0, scsi.PROutParams{Key: 0xa, SAKey: 0xaa}), "change key")
	requireGood(t, e.prOut(nxA, scsi.PROutRegisterAndIgnoreExisting, 0, scsi.PROutParams{SAKey: 0xa}), "register and ignore")

	// RESERVE: unregistered conflicts; wrong key conflicts.
	assert.Equal(t, scsi.StatusReservationConflict, e.prOut(nxC, scsi.PROutReserve, scsi.PRWriteExclusive, scsi.PROutParams{Key: 0xc}).Status)
	assert.Equal(t, scsi.StatusReservationConflict, e.prOut(nxA, scsi.PROutReserve, scsi.PRWriteExclusive, scsi.PROutParams{Key: 0xb}).Status)
	requireGood(t, e.prOut(nxA, scsi.PROutReserve, scsi.PRWriteExclusive, scsi.PROutParams{Key: 0xa}), "reserve")
	requireGood(t, e.prOut(nxA, scsi.PROutReserve, scsi.PRWriteExclusive, scsi.PROutParams{Key: 0xa}), "reserve again, same type")
	assert.Equal(t, scsi.StatusReservationConflict, e.prOut(nxA, scsi.PROutReserve, scsi.PRExclusiveAccess, scsi.PROutParams{Key: 0xa}).Status, "other type")
	assert.Equal(t, scsi.StatusReservationConflict, e.prOut(nxB, scsi.PROutReserve, scsi.PRWriteExclusive, scsi.PROutParams{Key: 0xb}).Status, "not the holder")
	key, typ := e.readReservation(nxC)
	assert.Equal(t, uint64(0xa), key)
	assert.Equal(t, scsi.PRWriteExclusive, typ)

	// RELEASE by a non-holder does nothing; with the wrong type it fails.
	requireGood(t, e.prOut(nxB, scsi.PROutRelease, scsi.PRWriteExclusive, scsi.PROutParams{Key: 0xb}), "release by non-holder")
	_, typ = e.readReservation(nxC)
	assert.Equal(t, scsi.PRWriteExclusive, typ)
	requireSense(t, e.prOut(nxA, scsi.PROutRelease, scsi.PRExclusiveAccess, scsi.PROutParams{Key: 0xa}), ioerr.Sense{Key: 5, ASC: 0x26, ASCQ: 0x04}, "release of another type")
	requireGood(t, e.prOut(nxA, scsi.PROutRelease, scsi.PRWriteExclusive, scsi.PROutParams{Key: 0xa}), "release")
	_, typ = e.readReservation(nxC)
	assert.Zero(t, typ)

	// Unregistering the holder of a registrants-only reservation releases
	// it and tells the other registrants.
	requireGood(t, e.prOut(nxA, scsi.PROutReserve, scsi.PRWriteExclusiveRegOnly, scsi.PROutParams{Key: 0xa}), "reserve WERO")
	requireGood(t, e.prOut(nxA, scsi.PROutRegister, 0, scsi.PROutParams{Key: 0xa, SAKey: 0}), "unregister holder")
	_, typ = e.readReservation(nxC)
	assert.Zero(t, typ)
	requireSense(t, e.do(nxB, make([]byte, 6), nil), scsi.SenseReservationsReleased, "B told")
}

// TestPRConflictMatrix checks SPC-4's table for every type: A holds the
// reservation, B is registered, C is not.
func TestPRConflictMatrix(t *testing.T) {
	type access struct{ read, write bool }
	for _, tc := range []struct {
		typ  scsi.PRType
		a, b access // holder, registrant
		c    access // not registered
	}{
		{scsi.PRWriteExclusive, access{true, true}, access{true, false}, access{true, false}},
		{scsi.PRExclusiveAccess, access{true, true}, access{false, false}, access{false, false}},
		{scsi.PRWriteExclusiveRegOnly, access{true, true}, access{true, true}, access{true, false}},
		{scsi.PRExclusiveAccessRegOnly, access{true, true}, access{true, true}, access{false, false}},
		{scsi.PRWriteExclusiveAllReg, access{true, true}, access{true, true}, access{true, false}},
		{scsi.PRExclusiveAccessAllReg, access{true, true}, access{true, true}, access{false, false}},
	} {
		t.Run(tc.typ.String(), func(t *testing.T) {
			e := newEnv(t)
			e.ready(nxA, nxB, nxC)
			e.register(nxA, 1)
			e.register(nxB, 2)
			requireGood(t, e.prOut(nxA, scsi.PROutReserve, tc.typ, scsi.PROutParams{Key: 1}), "reserve")
			for _, x := range []struct {
				n    scsi.Nexus
				want access
			}{{nxA, tc.a}, {nxB, tc.b}, {nxC, tc.c}} {
				rd := e.do(x.n, cdbRW16(scsi.OpRead16, 0, 1, 0), nil)
				wr := e.do(x.n, cdbRW16(scsi.OpWrite16, 0, 1, 0), block(1))
				sc := e.do(x.n, cdbRW10(scsi.OpSynchronizeCache10, 0, 0, 0), nil)
				assert.Equal(t, x.want.read, rd.Status == scsi.StatusGood, "%s read by %s", tc.typ, x.n.Initiator)
				assert.Equal(t, x.want.write, wr.Status == scsi.StatusGood, "%s write by %s", tc.typ, x.n.Initiator)
				assert.Equal(t, x.want.write, sc.Status == scsi.StatusGood, "%s sync cache by %s", tc.typ, x.n.Initiator)
				if !x.want.write {
					assert.Equal(t, scsi.StatusReservationConflict, wr.Status)
				}
				// Always allowed.
				for _, cdb := range [][]byte{scsi.CDBInquiry(false, 0, 36), make([]byte, 6), {scsi.OpReadCapacity10, 0, 0, 0, 0, 0, 0, 0, 0, 0}, scsi.CDBPersistentReserveIn(0, 100), scsi.CDBReportTPGs(100)} {
					requireGood(t, e.do(x.n, cdb, nil), "always allowed")
				}
			}
			// READ RESERVATION: all-registrants types report key 0.
			key, typ := e.readReservation(nxC)
			assert.Equal(t, tc.typ, typ)
			if tc.typ.AllRegistrants() {
				assert.Zero(t, key)
			} else {
				assert.Equal(t, uint64(1), key)
			}
			// The all-registrants reservation survives its reserver leaving.
			requireGood(t, e.prOut(nxA, scsi.PROutRegister, 0, scsi.PROutParams{Key: 1}), "A unregisters")
			_, typ = e.readReservation(nxC)
			if tc.typ.AllRegistrants() {
				assert.Equal(t, tc.typ, typ, "B still holds it")
				requireGood(t, e.do(nxB, cdbRW16(scsi.OpWrite16, 0, 1, 0), block(2)), "B writes")
			} else {
				assert.Zero(t, typ)
			}
		})
	}
}

func TestPRPreemptClear(t *testing.T) {
	e := newEnv(t)
	e.ready(nxA, nxB, nxC)
	e.register(nxA, 1)
	e.register(nxB, 2)
	e.register(nxC, 3)
	requireGood(t, e.prOut(nxB, scsi.PROutReserve, scsi.PRExclusiveAccess, scsi.PROutParams{Key: 2}), "B reserves")
	// Preempting needs a registration.
	assert.Equal(t, scsi.StatusReservationConflict, e.prOut(nxA, scsi.PROutPreempt, scsi.PRWriteExclusive, scsi.PROutParams{Key: 9, SAKey: 2}).Status)
	// A preempts the holder B with a new type: B's registration goes, A holds.
	var abortedVictims []scsi.Nexus
	e.h.OnPreemptAbort = func(v []scsi.Nexus, lun uint64) { abortedVictims = append(abortedVictims, v...) }
	requireGood(t, e.prOut(nxA, scsi.PROutPreemptAndAbort, scsi.PRWriteExclusive, scsi.PROutParams{Key: 1, SAKey: 2}), "preempt and abort")
	assert.Equal(t, []scsi.Nexus{nxB}, abortedVictims, "the transport aborts B's tasks")
	requireSense(t, e.do(nxB, make([]byte, 6), nil), scsi.SenseRegistrationsPreempted, "B told")
	requireSense(t, e.do(nxC, make([]byte, 6), nil), scsi.SenseReservationsReleased, "C: type changed")
	key, typ := e.readReservation(nxC)
	assert.Equal(t, uint64(1), key)
	assert.Equal(t, scsi.PRWriteExclusive, typ)
	_, keys := e.readKeys(nxC)
	assert.ElementsMatch(t, []uint64{1, 3}, keys)
	// Preempting a key nobody has conflicts; a key of 0 with no holder match is invalid.
	assert.Equal(t, scsi.StatusReservationConflict, e.prOut(nxA, scsi.PROutPreempt, scsi.PRWriteExclusive, scsi.PROutParams{Key: 1, SAKey: 77}).Status)
	requireSense(t, e.prOut(nxA, scsi.PROutPreempt, scsi.PRWriteExclusive, scsi.PROutParams{Key: 1, SAKey: 0}), scsi.SenseInvalidFieldInParamList, "SA key 0")
	// Preempting a non-holder's key removes the registration only.
	requireGood(t, e.prOut(nxA, scsi.PROutPreempt, scsi.PRWriteExclusive, scsi.PROutParams{Key: 1, SAKey: 3}), "preempt C")
	_, keys = e.readKeys(nxA)
	assert.Equal(t, []uint64{1}, keys)

	// CLEAR removes everything and tells the others.
	e.register(nxB, 2)
	requireGood(t, e.prOut(nxB, scsi.PROutClear, 0, scsi.PROutParams{Key: 2}), "clear")
	requireSense(t, e.do(nxA, make([]byte, 6), nil), scsi.SenseReservationsPreempted, "A told")
	_, keys = e.readKeys(nxA)
	assert.Empty(t, keys)
	_, typ = e.readReservation(nxA)
	assert.Zero(t, typ)

	// All-registrants: PREEMPT with key 0 takes it over alone.
	e.register(nxA, 1)
	e.register(nxB, 2)
	requireGood(t, e.prOut(nxA, scsi.PROutReserve, scsi.PRExclusiveAccessAllReg, scsi.PROutParams{Key: 1}), "EAAR")
	requireGood(t, e.prOut(nxB, scsi.PROutPreempt, scsi.PRExclusiveAccess, scsi.PROutParams{Key: 2, SAKey: 0}), "preempt all")
	requireSense(t, e.do(nxA, make([]byte, 6), nil), scsi.SenseRegistrationsPreempted, "A preempted")
	e.ready(nxC)
	key, typ = e.readReservation(nxC)
	assert.Equal(t, uint64(2), key)
	assert.Equal(t, scsi.PRExclusiveAccess, typ)
	_, keys = e.readKeys(nxC)
	assert.Equal(t, []uint64{2}, keys)
}

func TestPRReportCapabilitiesAndFullStatus(t *testing.T) {
	e := newEnv(t)
	e.ready(nxA, nxB)
	r := e.do(nxA, scsi.CDBPersistentReserveIn(scsi.PRInReportCapabilities, 8), nil)
	requireGood(t, r, "report capabilities")
	require.Len(t, r.DataIn, 8)
	assert.Equal(t, byte(8), r.DataIn[1])
	assert.Equal(t, byte(0x15), r.DataIn[2], "CRH, ATP_C, PTPL_C")
	assert.Equal(t, []byte{0xea, 0x01}, r.DataIn[4:6], "all six types")

	requireGood(t, e.prOut(nxA, scsi.PROutRegister, 0, scsi.PROutParams{SAKey: 1, AllTgPt: true}), "register all target ports")
	e.register(nxB, 2)
	requireGood(t, e.prOut(nxA, scsi.PROutReserve, scsi.PRWriteExclusive, scsi.PROutParams{Key: 1}), "reserve")
	// A holds through every port: C's port 2 is the same initiator port? no: A through port 2.
	a2 := nxA
	a2.TargetPort = 2
	e.ready(a2)
	requireGood(t, e.do(a2, cdbRW16(scsi.OpWrite16, 0, 1, 0), block(3)), "holder through another port (ALL_TG_PT)")

	r = e.do(nxB, scsi.CDBPersistentReserveIn(scsi.PRInReadFullStatus, 4096), nil)
	requireGood(t, r, "read full status")
	d := r.DataIn[8:]
	assert.Equal(t, uint64(1), binary.BigEndian.Uint64(d))
	assert.Equal(t, byte(0x03), d[12], "ALL_TG_PT, R_HOLDER")
	assert.Equal(t, byte(scsi.PRWriteExclusive), d[13])
	tidLen := int(binary.BigEndian.Uint32(d[20:]))
	tid, _, err := scsi.ParseTransportID(d[24 : 24+tidLen])
	require.NoError(t, err)
	assert.Equal(t, scsi.TransportID{Name: nxA.Initiator, ISID: nxA.ISID}, tid)
	d = d[24+tidLen:]
	assert.Equal(t, uint64(2), binary.BigEndian.Uint64(d))
	assert.Equal(t, byte(0), d[12])
	assert.Equal(t, uint16(3), binary.BigEndian.Uint16(d[18:]))

	st := e.h.Reservations()
	require.Len(t, st, 1)
	assert.Equal(t, "WE", st[0].Type)
	assert.Len(t, st[0].Registrations, 2)
}

func TestPRRegisterAndMove(t *testing.T) {
	e := newEnv(t)
	e.ready(nxA, nxB)
	e.register(nxA, 1)
	requireGood(t, e.prOut(nxA, scsi.PROutReserve, scsi.PRExclusiveAccess, scsi.PROutParams{Key: 1}), "reserve")
	mv := scsi.RegisterAndMoveParams{Key: 1, SAKey: 5, Unreg: true, RelativeTargetPort: nxB.TargetPort, TransportID: scsi.TransportID{Name: nxB.Initiator, ISID: nxB.ISID}}.Encode()
	requireGood(t, e.do(nxA, scsi.CDBPersistentReserveOut(scsi.PROutRegisterAndMove, scsi.PRExclusiveAccess, uint32(len(mv))), mv), "register and move")
	key, typ := e.readReservation(nxB)
	assert.Equal(t, uint64(5), key)
	assert.Equal(t, scsi.PRExclusiveAccess, typ)
	_, keys := e.readKeys(nxB)
	assert.Equal(t, []uint64{5}, keys, "A unregistered")
	requireGood(t, e.do(nxB, cdbRW16(scsi.OpWrite16, 0, 1, 0), block(1)), "B holds")
	assert.Equal(t, scsi.StatusReservationConflict, e.do(nxA, cdbRW16(scsi.OpRead16, 0, 1, 0), nil).Status, "A does not")
	// Unknown target port.
	bad := scsi.RegisterAndMoveParams{Key: 5, SAKey: 6, RelativeTargetPort: 99, TransportID: scsi.TransportID{Name: nxA.Initiator, ISID: nxA.ISID}}.Encode()
	requireSense(t, e.do(nxB, scsi.CDBPersistentReserveOut(scsi.PROutRegisterAndMove, scsi.PRExclusiveAccess, uint32(len(bad))), bad), scsi.SenseInvalidFieldInParamList, "unknown port")
}

// TestPRAPTPL: with APTPL the state survives a restart (a new handler
// over the same state file); without, the file goes.
func TestPRAPTPL(t *testing.T) {
	e := newEnv(t)
	e.ready(nxA, nxB)
	requireGood(t, e.prOut(nxA, scsi.PROutRegister, 0, scsi.PROutParams{SAKey: 0x1234, APTPL: true}), "register aptpl")
	e.register(nxB, 0x99)
	requireGood(t, e.prOut(nxB, scsi.PROutRegister, 0, scsi.PROutParams{Key: 0x99, SAKey: 0x98, APTPL: true}), "aptpl again")
	requireGood(t, e.prOut(nxA, scsi.PROutReserve, scsi.PRWriteExclusiveRegOnly, scsi.PROutParams{Key: 0x1234}), "reserve")
	file := filepath.Join(e.dir, "store.pr")
	require.FileExists(t, file)

	h2, err := NewHandler(HandlerConfig{Array: e.arr, LUs: []LUConfig{{PRFile: file}}}, luStore(t, luBlocks*512))
	require.NoError(t, err)
	e2 := &env{t: t, h: h2, arr: e.arr}
	e2.ready(nxA, nxB, nxC)
	gen1, keys1 := e.readKeys(nxA)
	gen2, keys2 := e2.readKeys(nxA)
	assert.Equal(t, gen1, gen2)
	assert.Equal(t, keys1, keys2)
	key, typ := e2.readReservation(nxC)
	assert.Equal(t, uint64(0x1234), key)
	assert.Equal(t, scsi.PRWriteExclusiveRegOnly, typ)
	r := e2.do(nxA, scsi.CDBPersistentReserveIn(scsi.PRInReportCapabilities, 8), nil)
	assert.Equal(t, byte(0x81), r.DataIn[3], "TMV, PTPL_A")

	// APTPL off: the file is removed and a restart starts empty.
	requireGood(t, e2.prOut(nxB, scsi.PROutRegister, 0, scsi.PROutParams{Key: 0x98, SAKey: 0x97}), "aptpl off")
	assert.NoFileExists(t, file)

	// A corrupt file is an error that says how to fix it.
	require.NoError(t, os.WriteFile(file, []byte("{"), 0o600))
	_, err = NewHandler(HandlerConfig{LUs: []LUConfig{{PRFile: file}}}, luStore(t, 1<<20))
	require.ErrorContains(t, err, "fix or delete it")

	// Without a state file APTPL is refused.
	h3, err := NewHandler(HandlerConfig{}, luStore(t, 1<<20))
	require.NoError(t, err)
	e3 := &env{t: t, h: h3}
	e3.ready(nxA)
	requireSense(t, e3.prOut(nxA, scsi.PROutRegister, 0, scsi.PROutParams{SAKey: 1, APTPL: true}), scsi.SenseInvalidFieldInParamList, "no PTPL_C")
}

func TestSCSI2Reservations(t *testing.T) {
	e := newEnv(t)
	e.ready(nxA, nxB)
	reserve6 := []byte{scsi.OpReserve6, 0, 0, 0, 0, 0}
	release6 := []byte{scsi.OpRelease6, 0, 0, 0, 0, 0}
	requireGood(t, e.do(nxA, reserve6, nil), "A reserves")
	requireGood(t, e.do(nxA, reserve6, nil), "A again")
	assert.Equal(t, scsi.StatusReservationConflict, e.do(nxB, reserve6, nil).Status)
	assert.Equal(t, scsi.StatusReservationConflict, e.do(nxB, cdbRW16(scsi.OpRead16, 0, 1, 0), nil).Status)
	assert.Equal(t, scsi.StatusReservationConflict, e.do(nxB, make([]byte, 6), nil).Status)
	assert.Equal(t, scsi.StatusReservationConflict, e.do(nxB, scsi.CDBPersistentReserveIn(0, 100), nil).Status)
	requireGood(t, e.do(nxB, scsi.CDBInquiry(false, 0, 36), nil), "inquiry allowed")
	requireGood(t, e.do(nxB, release6, nil), "release by another: no effect")
	assert.Equal(t, scsi.StatusReservationConflict, e.do(nxB, cdbRW16(scsi.OpRead16, 0, 1, 0), nil).Status)
	requireGood(t, e.do(nxA, cdbRW16(scsi.OpWrite16, 0, 1, 0), block(1)), "holder writes")
	requireGood(t, e.do(nxA, release6, nil), "release")
	requireGood(t, e.do(nxB, []byte{scsi.OpReserve10, 0, 0, 0, 0, 0, 0, 0, 0, 0}, nil), "B reserves(10)")

	// Released by a LUN reset, by an I_T nexus reset and by nexus loss.
	e.h.Reset(nxA, scsi.TMFLUNReset, 0)
	e.ready(nxA, nxB)
	requireGood(t, e.do(nxA, reserve6, nil), "after LUN reset")
	e.h.Reset(nxA, scsi.TMFITNexusReset, 0)
	e.ready(nxB)
	requireGood(t, e.do(nxB, reserve6, nil), "after I_T nexus reset")
	e.h.NexusLost(nxB)
	e.ready(nxA)
	requireGood(t, e.do(nxA, reserve6, nil), "after nexus loss")

	// With a persistent reservation: compatible reservation handling.
	requireGood(t, e.do(nxA, release6, nil), "release")
	e.ready(nxB)
	e.register(nxA, 1)
	requireGood(t, e.prOut(nxA, scsi.PROutReserve, scsi.PRWriteExclusive, scsi.PROutParams{Key: 1}), "PR")
	requireGood(t, e.do(nxA, reserve6, nil), "holder: RESERVE is a no-op")
	assert.Equal(t, scsi.StatusReservationConflict, e.do(nxB, reserve6, nil).Status)
	assert.Equal(t, scsi.StatusReservationConflict, e.do(nxB, release6, nil).Status, "non-registrant RELEASE")
}

func TestAbortedCommandNeverWrites(t *testing.T) {
	e := newEnv(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	// A cancelled command never executes a write.
	e.ready(nxA)
	r := e.h.Execute(ctx, &scsi.Command{Nexus: nxA, CDB: cdbRW16(scsi.OpWrite16, 0, 1, 0), DataOut: block(7)})
	assert.Equal(t, scsi.StatusTaskAborted, r.Status)
	assert.Equal(t, block(0), e.do(nxA, cdbRW16(scsi.OpRead16, 0, 1, 0), nil).DataIn)
}

// TestPreemptAndAbortFences: B's write is in flight (held by a delay at
// the array) when A preempts B with PREEMPT AND ABORT; the transport's hook
// aborts B's task and waits for it, so the write never lands — the fencing
// guarantee a host that takes over needs.
func TestPreemptAndAbortFences(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newEnv(t)
		e.ready(nxA, nxB)
		e.register(nxA, 1)
		e.register(nxB, 2)
		requireGood(t, e.prOut(nxB, scsi.PROutReserve, scsi.PRWriteExclusive, scsi.PROutParams{Key: 2}), "B reserves")
		_, err := e.h.AddFault(FaultRule{Initiator: nxB.Initiator, Ops: []string{"write"}, Delay: time.Hour})
		require.NoError(t, err)

		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan scsi.Response, 1)
		go func() {
			done <- e.h.Execute(ctx, &scsi.Command{Nexus: nxB, CDB: cdbRW16(scsi.OpWrite16, 9, 1, 0), DataOut: block(0xbb)})
		}()
		synctest.Wait() // B's write is held at the array

		var victims []scsi.Nexus
		e.h.OnPreemptAbort = func(v []scsi.Nexus, lun uint64) {
			victims = v
			cancel() // the transport aborts B's tasks on the LUN …
			<-done   // … and waits until none can still execute
		}
		requireGood(t, e.prOut(nxA, scsi.PROutPreemptAndAbort, scsi.PRWriteExclusive, scsi.PROutParams{Key: 1, SAKey: 2}), "A preempts B")
		assert.Equal(t, []scsi.Nexus{nxB}, victims)
		e.h.ClearFaults()
		time.Sleep(2 * time.Hour)
		assert.Equal(t, block(0), e.do(nxA, cdbRW16(scsi.OpRead16, 9, 1, 0), nil).DataIn, "B's write never landed")
		requireSense(t, e.do(nxB, make([]byte, 6), nil), scsi.SenseRegistrationsPreempted, "B learns it")
		assert.Equal(t, scsi.StatusReservationConflict, e.do(nxB, cdbRW16(scsi.OpWrite16, 9, 1, 0), block(0xbb)).Status, "and B is fenced")
	})
}
