package array

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mpathfs/mpathfs/backends"
	"github.com/mpathfs/mpathfs/ioerr"
	"github.com/mpathfs/mpathfs/scsi"
)

// Limits the logical units report in the block limits VPD page and
// enforce.
const (
	maxTransferBytes   = 64 << 20 // per READ/WRITE (the iSCSI target's own bound too)
	maxCompareAndWrite = 16       // blocks per COMPARE AND WRITE
	maxUnmapBlocks     = 1 << 20  // blocks per UNMAP descriptor and command
	maxUnmapDescs      = 256
	maxWriteSameBytes  = 1 << 30 // per WRITE SAME
)

// lu is one logical unit.
type lu struct {
	h     *Handler
	cfg   LUConfig
	store backends.Backend
	bs    uint32
	nblk  atomic.Uint64 // capacity in blocks; Resize changes it
	naa   []byte

	// gate orders reservation changes against commands: a command holds
	// it shared from its reservation check until its side effect is done;
	// PERSISTENT RESERVE OUT, RESERVE and RELEASE hold it exclusively.
	gate sync.RWMutex
	// io makes COMPARE AND WRITE atomic: it holds io exclusively, every
	// other read or write shares it.
	io sync.RWMutex

	mu    sync.Mutex // everything below
	nexus map[scsi.Nexus]*nexusState
	pr    prState
	res2  *scsi.Nexus // SCSI-2 reservation holder
}

// nexusState is what a logical unit keeps per I_T nexus.
type nexusState struct {
	ua      []ioerr.Sense
	aluaGen uint64
}

func newLU(h *Handler, cfg LUConfig, store backends.Backend) (*lu, error) {
	size := store.Size()
	if size < int64(cfg.BlockSize) {
		return nil, fmt.Errorf("array handler: %s: store of %d bytes is smaller than one %d-byte block", cfg.Name, size, cfg.BlockSize)
	}
	naa, _ := naaBytes(cfg.WWID)
	l := &lu{h: h, cfg: cfg, store: store, bs: cfg.BlockSize, naa: naa, nexus: map[scsi.Nexus]*nexusState{}}
	l.nblk.Store(uint64(size) / uint64(cfg.BlockSize))
	if err := l.loadPR(); err != nil {
		return nil, err
	}
	return l, nil
}

func (l *lu) nblocks() uint64 { return l.nblk.Load() }

// state returns the nexus's state, creating it with a power-on unit
// attention on first contact. l.mu is held.
func (l *lu) state(n scsi.Nexus, gen uint64) *nexusState {
	s := l.nexus[n]
	if s == nil {
		s = &nexusState{ua: []ioerr.Sense{scsi.SensePowerOnReset}, aluaGen: gen}
		l.nexus[n] = s
	}
	return s
}

// addUA queues a unit attention for a nexus. A reset supersedes every
// other pending condition; a condition already queued is not repeated.
// l.mu is held.
func (l *lu) addUA(n scsi.Nexus, s ioerr.Sense) {
	st := l.nexus[n]
	if st == nil {
		return // first contact reports power-on anyway
	}
	if s.ASC == 0x29 {
		st.ua = []ioerr.Sense{s}
		return
	}
	for _, q := range st.ua {
		if q == s || q.ASC == 0x29 {
			return
		}
	}
	st.ua = append(st.ua, s)
}

// addUAAll queues a unit attention for every known nexus but except.
func (l *lu) addUAAll(except *scsi.Nexus, s ioerr.Sense) {
	for n := range l.nexus {
		if except != nil && n == *except {
			continue
		}
		l.addUA(n, s)
	}
}

// reset is a LUN or target reset: SCSI-2 reservations go, and every I_T
// nexus — the one that asked too, as multipath initiators expect to learn
// of it on every path — gets the unit attention.
func (l *lu) reset(s ioerr.Sense) {
	l.gate.Lock()
	defer l.gate.Unlock()
	l.mu.Lock()
	defer l.mu.Unlock()
	l.res2 = nil
	l.addUAAll(nil, s)
}

func (l *lu) nexusReset(n scsi.Nexus) {
	l.gate.Lock()
	defer l.gate.Unlock()
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.res2 != nil && *l.res2 == n {
		l.res2 = nil
	}
	l.addUA(n, scsi.SenseNexusLossOccurred)
}

func (l *lu) nexusLost(n scsi.Nexus) {
	l.gate.Lock()
	defer l.gate.Unlock()
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.res2 != nil && *l.res2 == n {
		l.res2 = nil
	}
	delete(l.nexus, n)
}

// class is how reservations treat a command (SPC-4 5.12.1 tables, SBC-3
// 4.17): always allowed, a read, or a write.
type class uint8

const (
	classAlways class = iota
	classRead
	classWrite
)

func classOf(op, sa byte) class {
	switch op {
	case scsi.OpInquiry, scsi.OpReportLUNs, scsi.OpRequestSense, scsi.OpTestUnitReady,
		scsi.OpReadCapacity10, scsi.OpMaintenanceIn, scsi.OpPersistentReserveIn:
		return classAlways
	case scsi.OpServiceActionIn16:
		if sa == scsi.OpReadCapacity16SA {
			return classAlways
		}
		return classRead
	case scsi.OpRead6, scsi.OpRead10, scsi.OpRead12, scsi.OpRead16,
		scsi.OpVerify10, scsi.OpVerify12, scsi.OpVerify16,
		scsi.OpModeSense6, scsi.OpModeSense10:
		return classRead
	}
	return classWrite
}

func serviceAction(cdb []byte) byte {
	switch cdb[0] {
	case scsi.OpMaintenanceIn, scsi.OpMaintenanceOut, scsi.OpServiceActionIn16,
		scsi.OpPersistentReserveIn, scsi.OpPersistentReserveOut:
		return cdb[1] & 0x1f
	}
	return 0
}

// execute runs a command on the LU: unit attention, ALUA access,
// reservations, then the command itself.
func (l *lu) execute(ctx context.Context, cmd *scsi.Command, late time.Duration) scsi.Response {
	op := cmd.CDB[0]
	sa := serviceAction(cmd.CDB)
	pv := l.h.port(cmd.Nexus.TargetPort)

	l.mu.Lock()
	st := l.state(cmd.Nexus, pv.gen)
	if st.aluaGen != pv.gen {
		st.aluaGen = pv.gen
		l.addUA(cmd.Nexus, ioerr.SenseAccessChanged)
	}
	switch op {
	case scsi.OpInquiry, scsi.OpReportLUNs:
		// neither report nor clear (SPC-4 7.6, 6.33)
		if op == scsi.OpReportLUNs {
			l.clearUA(st, scsi.SenseReportedLUNsChanged)
		}
	case scsi.OpRequestSense:
		l.mu.Unlock()
		return l.requestSense(cmd, st, pv)
	default:
		if len(st.ua) > 0 {
			s := st.ua[0]
			st.ua = st.ua[1:]
			l.mu.Unlock()
			return check(s)
		}
	}
	l.mu.Unlock()

	if moved, did := l.h.trespassOnIO(cmd.Nexus.TargetPort, pv, op); did {
		// The nexus that moved the LU learns of it from its own command,
		// as the sender of an STPG does; every other nexus gets 2A/06.
		pv = moved
		l.mu.Lock()
		st.aluaGen = pv.gen
		l.mu.Unlock()
	} else {
		pv = moved
	}
	if s := l.h.aluaGate(ctx, pv, op, sa, cmd.DataInLen+len(cmd.DataOut)); s != nil {
		return check(*s)
	}

	switch op {
	case scsi.OpPersistentReserveOut:
		return l.persistentReserveOut(ctx, cmd)
	case scsi.OpReserve6, scsi.OpReserve10:
		return l.reserve(cmd)
	case scsi.OpRelease6, scsi.OpRelease10:
		return l.release(cmd)
	}

	l.gate.RLock()
	defer l.gate.RUnlock()
	l.mu.Lock()
	c := classOf(op, sa)
	blocked := l.scsi2Conflict(cmd.Nexus, op, sa) || (op != scsi.OpPersistentReserveIn && l.pr.conflicts(cmd.Nexus, c))
	l.mu.Unlock()
	if blocked {
		return conflict()
	}
	if err := ctx.Err(); err != nil {
		return aborted()
	}
	if late > 0 {
		return l.landLate(cmd, pv, late)
	}
	return l.dispatch(ctx, cmd, pv)
}

func (l *lu) clearUA(st *nexusState, s ioerr.Sense) {
	for i, q := range st.ua {
		if q == s {
			st.ua = append(st.ua[:i], st.ua[i+1:]...)
			return
		}
	}
}

func (l *lu) dispatch(ctx context.Context, cmd *scsi.Command, pv portView) scsi.Response {
	cdb := cmd.CDB
	switch cdb[0] {
	case scsi.OpTestUnitReady:
		return good(nil)
	case scsi.OpInquiry:
		return l.inquiry(cmd, pv)
	case scsi.OpReportLUNs:
		return l.h.reportLUNs(cmd)
	case scsi.OpReadCapacity10:
		return l.readCapacity10(cmd)
	case scsi.OpServiceActionIn16:
		if cdb[1]&0x1f == scsi.OpReadCapacity16SA {
			return l.readCapacity16(cmd)
		}
		return checkCDB(1, 4)
	case scsi.OpRead6, scsi.OpRead10, scsi.OpRead12, scsi.OpRead16:
		return l.read(ctx, cmd)
	case scsi.OpWrite6, scsi.OpWrite10, scsi.OpWrite12, scsi.OpWrite16:
		return l.write(ctx, cmd)
	case scsi.OpVerify10, scsi.OpVerify12, scsi.OpVerify16:
		return l.verify(ctx, cmd)
	case scsi.OpSynchronizeCache10, scsi.OpSynchronizeCache16:
		return l.syncCache(ctx, cmd)
	case scsi.OpWriteSame10, scsi.OpWriteSame16:
		return l.writeSame(ctx, cmd)
	case scsi.OpUnmap:
		return l.unmap(ctx, cmd)
	case scsi.OpCompareAndWrite:
		return l.compareAndWrite(ctx, cmd)
	case scsi.OpModeSense6, scsi.OpModeSense10:
		return l.modeSense(cmd)
	case scsi.OpModeSelect6, scsi.OpModeSelect10:
		return l.modeSelect(cmd)
	case scsi.OpStartStopUnit:
		return good(nil)
	case scsi.OpMaintenanceIn:
		switch cdb[1] & 0x1f {
		case scsi.OpTargetPortGroupsSA:
			return l.reportTPGs(cmd)
		case scsi.OpReportSupportedOpsSA:
			return l.reportSupportedOps(cmd)
		case scsi.OpReportSupportedTMFsSA:
			return reportSupportedTMFs(cmd)
		}
		return checkCDB(1, 4)
	case scsi.OpMaintenanceOut:
		if cdb[1]&0x1f == scsi.OpTargetPortGroupsSA {
			return l.setTPGs(ctx, cmd)
		}
		return checkCDB(1, 4)
	case scsi.OpPersistentReserveIn:
		return l.persistentReserveIn(cmd)
	}
	return check(scsi.SenseInvalidOpcode)
}
