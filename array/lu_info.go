package array

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"

	"github.com/mpathfs/mpathfs/ioerr"
	"github.com/mpathfs/mpathfs/scsi"
)

// alloc16 is the allocation length at CDB bytes i, i+1.
func alloc16(cdb []byte, i int) int { return int(binary.BigEndian.Uint16(cdb[i:])) }

func pad(s string, n int) []byte {
	b := bytes.Repeat([]byte{' '}, n)
	copy(b, s)
	return b
}

// standardInquiry builds the 96-byte standard INQUIRY data.
func (l *lu) standardInquiry() []byte {
	b := make([]byte, 96)
	b[2] = 0x06        // SPC-4
	b[3] = 0x10 | 0x02 // HISUP, response data format 2
	b[4] = byte(len(b) - 5)
	b[5] = byte(l.h.tpgsField()&3) << 4
	b[6] = 0x10 // MULTIP
	b[7] = 0x02 // CMDQUE
	copy(b[8:], pad(l.cfg.Vendor, 8))
	copy(b[16:], pad(l.cfg.Model, 16))
	copy(b[32:], pad(l.cfg.Revision, 4))
	// version descriptors: SAM-5, iSCSI, SPC-4, SBC-3
	for i, v := range []uint16{0x00a0, 0x0960, 0x0460, 0x04c0} {
		binary.BigEndian.PutUint16(b[58+2*i:], v)
	}
	return b
}

func (l *lu) inquiry(cmd *scsi.Command, pv portView) scsi.Response {
	cdb := cmd.CDB
	alloc := alloc16(cdb, 3)
	if cdb[1]&0x02 != 0 { // CMDDT (obsolete)
		return checkCDB(1, 1)
	}
	if cdb[1]&0x01 == 0 {
		if cdb[2] != 0 {
			return checkCDB(2, -1)
		}
		return good(l.standardInquiry(), alloc, cmd.DataInLen)
	}
	var page []byte
	switch cdb[2] {
	case scsi.VPDSupportedPages:
		page = scsi.BuildVPDSupportedPages([]byte{0x00, 0x80, 0x83, 0xb0, 0xb1, 0xb2})
	case scsi.VPDUnitSerialNumber:
		page = scsi.BuildVPDSerial(l.cfg.Serial)
	case scsi.VPDDeviceIdentification:
		page = l.deviceID(cmd.Nexus, pv)
	case scsi.VPDBlockLimits:
		page = scsi.BuildVPDBlockLimits(scsi.BlockLimits{
			MaxCompareAndWrite:      maxCompareAndWrite,
			OptimalGranularity:      uint16(4096 / l.bs),
			MaxTransfer:             maxTransferBytes / l.bs,
			OptimalTransfer:         (1 << 20) / l.bs,
			MaxUnmapLBACount:        maxUnmapBlocks,
			MaxUnmapDescriptors:     maxUnmapDescs,
			OptimalUnmapGranularity: 1,
			MaxWriteSame:            maxWriteSameBytes / uint64(l.bs),
		})
		page[4] |= 0x01 // WSNZ: WRITE SAME with 0 blocks is refused
	case scsi.VPDBlockDeviceCharacter:
		page = scsi.BuildVPDBlockDeviceCharacteristics(1)
	case scsi.VPDLogicalBlockProvisioning:
		page = scsi.BuildVPDProvisioning(scsi.Provisioning{LBPU: true, LBPWS: true, LBPWS10: true, LBPRZ: true, Type: 2})
	default:
		return checkCDB(2, -1)
	}
	return good(page, alloc, cmd.DataInLen)
}

// deviceID is VPD page 0x83: the LU's NAA name and T10 vendor id, the
// relative target port and target port group of the port the command
// came through, and the target's SCSI name string.
func (l *lu) deviceID(n scsi.Nexus, pv portView) []byte {
	var d []byte
	d = scsi.AppendDesignator(d, 0, scsi.CodeSetBinary, false, scsi.AssocLU, scsi.DesigNAA, l.naa)
	t10 := append(pad(l.cfg.Vendor, 8), l.cfg.Serial...)
	d = scsi.AppendDesignator(d, 0, scsi.CodeSetASCII, false, scsi.AssocLU, scsi.DesigT10, t10)
	port := make([]byte, 4)
	binary.BigEndian.PutUint16(port[2:], n.TargetPort)
	d = scsi.AppendDesignator(d, scsi.ProtocolISCSI, scsi.CodeSetBinary, true, scsi.AssocTargetPort, scsi.DesigRelativePort, port)
	tpg := make([]byte, 4)
	g := pv.tpg
	if l.h.arr == nil {
		g = n.TPG
	}
	binary.BigEndian.PutUint16(tpg[2:], g)
	d = scsi.AppendDesignator(d, scsi.ProtocolISCSI, scsi.CodeSetBinary, true, scsi.AssocTargetPort, scsi.DesigTPG, tpg)
	if name := l.h.cfg.TargetName; name != "" {
		v := []byte(name)
		v = append(v, make([]byte, 4-len(v)%4)...) // NUL-terminated, padded to 4
		if len(v) <= 255 {
			d = scsi.AppendDesignator(d, scsi.ProtocolISCSI, scsi.CodeSetUTF8, true, scsi.AssocTarget, scsi.DesigSCSIName, v)
		}
	}
	return scsi.BuildVPDDeviceID(d)
}

// inquiryNoLU answers INQUIRY to a LUN that does not exist: peripheral
// qualifier 3 (no LU can be here), device type 0x1F.
func (h *Handler) inquiryNoLU(cmd *scsi.Command) scsi.Response {
	cdb := cmd.CDB
	if len(cdb) < 6 {
		return checkCDB(uint16(len(cdb)), -1)
	}
	if cdb[1]&0x01 != 0 || cdb[2] != 0 {
		return check(ioerr.SenseLUNotSupported)
	}
	b := make([]byte, 36)
	b[0] = 0x7f
	b[2], b[3], b[4] = 0x06, 0x12, 31
	return good(b, alloc16(cdb, 3), cmd.DataInLen)
}

// reportLUNs is REPORT LUNS: every LU, single-level addressing (peripheral
// for 0-255, flat space above).
func (h *Handler) reportLUNs(cmd *scsi.Command) scsi.Response {
	cdb := cmd.CDB
	if len(cdb) < 12 {
		return checkCDB(uint16(len(cdb)), -1)
	}
	alloc := int(binary.BigEndian.Uint32(cdb[6:]))
	if alloc < 16 {
		return checkCDB(6, -1)
	}
	switch cdb[2] {
	case 0x00, 0x02:
	case 0x01: // well known LUs only: none
		return good(make([]byte, 8), alloc, cmd.DataInLen)
	default:
		return checkCDB(2, -1)
	}
	luns := h.LUNs(cmd.Nexus)
	b := make([]byte, 8+8*len(luns))
	binary.BigEndian.PutUint32(b, uint32(8*len(luns)))
	for i, n := range luns {
		e := b[8+8*i:]
		if n < 256 {
			e[1] = byte(n)
		} else {
			e[0], e[1] = 0x40|byte(n>>8), byte(n)
		}
	}
	return good(b, alloc, cmd.DataInLen)
}

// requestSense returns the nexus's pending unit attention as parameter
// data and clears it (SPC-4 5.11.2), or the not-ready sense of an
// inaccessible port, or NO SENSE.
func (l *lu) requestSense(cmd *scsi.Command, st *nexusState, pv portView) scsi.Response {
	if cmd.CDB[1]&0x01 != 0 {
		return checkCDB(1, 0) // DESC: descriptor format is not supported
	}
	alloc := int(cmd.CDB[4])
	var s ioerr.Sense
	l.mu.Lock()
	if len(st.ua) > 0 {
		s = st.ua[0]
		st.ua = st.ua[1:]
	}
	l.mu.Unlock()
	if s == (ioerr.Sense{}) {
		if g := l.h.aluaGate(context.Background(), pv, scsi.OpTestUnitReady, 0, 0); g != nil {
			s = *g
		}
	}
	return good(scsi.FixedSense(s), alloc, cmd.DataInLen)
}

func (h *Handler) requestSenseNoLU(cmd *scsi.Command) scsi.Response {
	if len(cmd.CDB) < 6 {
		return checkCDB(uint16(len(cmd.CDB)), -1)
	}
	return good(scsi.FixedSense(ioerr.SenseLUNotSupported), int(cmd.CDB[4]), cmd.DataInLen)
}

// modePages builds the pages asked for (0x3F: all) for page control pc.
func (l *lu) modePages(page, sub byte, pc int) ([]byte, bool) {
	ch := pc == scsi.PageControlChangeable
	wce := !l.cfg.WriteCacheOff
	var out []byte
	if sub != 0 && !(page == scsi.ModePageAll && sub == 0xff) {
		return nil, false
	}
	if page == scsi.ModePageRWErrorRecovery || page == scsi.ModePageAll {
		out = append(out, scsi.BuildRWErrorRecoveryPage(ch)...)
	}
	if page == scsi.ModePageCaching || page == scsi.ModePageAll {
		out = append(out, scsi.BuildCachingPage(wce, ch)...)
	}
	if page == scsi.ModePageControl || page == scsi.ModePageAll {
		out = append(out, scsi.BuildControlPage(false, ch)...)
	}
	return out, out != nil
}

func (l *lu) modeSense(cmd *scsi.Command) scsi.Response {
	cdb := cmd.CDB
	six := cdb[0] == scsi.OpModeSense6
	dbd := cdb[1]&0x08 != 0
	llbaa := !six && cdb[1]&0x10 != 0
	pc := int(cdb[2] >> 6)
	page, sub := cdb[2]&0x3f, cdb[3]
	alloc := int(cdb[4])
	if !six {
		alloc = alloc16(cdb, 7)
	}
	if pc == scsi.PageControlSaved {
		return check(scsi.SenseSavingNotSupported)
	}
	pages, ok := l.modePages(page, sub, pc)
	if !ok {
		if sub != 0 {
			return checkCDB(3, -1)
		}
		return checkCDB(2, 5)
	}
	var desc []byte
	if !dbd {
		if llbaa {
			desc = scsi.BuildLongBlockDescriptor(l.nblocks(), l.bs)
		} else {
			desc = scsi.BuildShortBlockDescriptor(l.nblocks(), l.bs)
		}
	}
	if six {
		return good(scsi.BuildModeSense6(scsi.ModeDeviceDPOFUA, desc, pages), alloc, cmd.DataInLen)
	}
	return good(scsi.BuildModeSense10(scsi.ModeDeviceDPOFUA, desc, pages), alloc, cmd.DataInLen)
}

// modeSelect accepts a parameter list whose pages repeat the current
// values (nothing is changeable) and refuses any change with INVALID
// FIELD IN PARAMETER LIST.
func (l *lu) modeSelect(cmd *scsi.Command) scsi.Response {
	cdb := cmd.CDB
	six := cdb[0] == scsi.OpModeSelect6
	if cdb[1]&0x01 != 0 {
		return checkCDB(1, 0) // SP: saving pages is not supported
	}
	plen := int(cdb[4])
	hdr := 4
	if !six {
		plen, hdr = alloc16(cdb, 7), 8
	}
	if plen == 0 {
		return good(nil)
	}
	if plen < hdr || len(cmd.DataOut) < plen {
		return check(scsi.SenseParamListLengthError)
	}
	p := cmd.DataOut[:plen]
	bdl := int(p[3])
	if !six {
		bdl = int(binary.BigEndian.Uint16(p[6:]))
	}
	if hdr+bdl > plen {
		return check(scsi.SenseParamListLengthError)
	}
	if bdl > 0 {
		bd := p[hdr : hdr+bdl]
		var blen uint32
		if bdl >= 16 && !six && p[4]&1 != 0 {
			blen = binary.BigEndian.Uint32(bd[12:])
		} else if bdl >= 8 {
			blen = uint32(bd[5])<<16 | uint32(bd[6])<<8 | uint32(bd[7])
		}
		if blen != 0 && blen != l.bs {
			return checkParam(uint16(hdr + 5))
		}
	}
	cur, _ := l.modePages(scsi.ModePageAll, 0, scsi.PageControlCurrent)
	rest := p[hdr+bdl:]
	for off := hdr + bdl; len(rest) > 0; {
		if len(rest) < 2 {
			return check(scsi.SenseParamListLengthError)
		}
		n := 2 + int(rest[1])
		if n > len(rest) || rest[0]&0x40 != 0 {
			return check(scsi.SenseParamListLengthError)
		}
		pg := rest[:n]
		want := findPage(cur, pg[0]&0x3f)
		if want == nil || !bytes.Equal(want[2:], pg[2:]) || len(want) != len(pg) {
			return checkParam(uint16(off))
		}
		rest, off = rest[n:], off+n
	}
	return good(nil)
}

func findPage(pages []byte, code byte) []byte {
	for len(pages) >= 2 {
		n := 2 + int(pages[1])
		if pages[0]&0x3f == code {
			return pages[:n]
		}
		pages = pages[n:]
	}
	return nil
}

// reportTPGs is REPORT TARGET PORT GROUPS, in the length-only or the
// extended header format; refused with INVALID COMMAND OPERATION CODE
// when the array reports TPGS=0.
func (l *lu) reportTPGs(cmd *scsi.Command) scsi.Response {
	if l.h.tpgsField() == 0 {
		return check(scsi.SenseInvalidOpcode)
	}
	cdb := cmd.CDB
	alloc := int(binary.BigEndian.Uint32(cdb[6:]))
	format := cdb[1] >> 5
	if format > 1 {
		return checkCDB(1, 5)
	}
	b := make([]byte, 4)
	if format == 1 {
		b = append(b, 0x10, byte(l.h.transitionSeconds()), 0, 0)
	}
	for _, g := range l.h.reportTPGs() {
		d := make([]byte, 8, 8+4*len(g.Ports))
		d[0] = byte(g.State) & 0x0f
		if g.Pref {
			d[0] |= 0x80
		}
		for _, s := range g.Supported {
			switch s {
			case scsi.Transitioning:
				d[1] |= 0x80
			case scsi.Offline:
				d[1] |= 0x40
			case scsi.Unavailable:
				d[1] |= 0x08
			case scsi.Standby:
				d[1] |= 0x04
			case scsi.ActiveNonOptimized:
				d[1] |= 0x02
			case scsi.ActiveOptimized:
				d[1] |= 0x01
			}
		}
		binary.BigEndian.PutUint16(d[2:], g.ID)
		d[7] = byte(len(g.Ports))
		for _, p := range g.Ports {
			d = append(d, 0, 0, byte(p>>8), byte(p))
		}
		b = append(b, d...)
	}
	binary.BigEndian.PutUint32(b, uint32(len(b)-4))
	return good(b, alloc, cmd.DataInLen)
}

// setTPGs is SET TARGET PORT GROUPS: refused with INVALID COMMAND
// OPERATION CODE without explicit ALUA; a request the core cannot honour
// is INVALID FIELD IN PARAMETER LIST.
func (l *lu) setTPGs(ctx context.Context, cmd *scsi.Command) scsi.Response {
	if l.h.tpgsField()&2 == 0 {
		return check(scsi.SenseInvalidOpcode)
	}
	plen := int(binary.BigEndian.Uint32(cmd.CDB[6:]))
	if plen == 0 {
		return good(nil)
	}
	if plen < 4 || (plen-4)%4 != 0 || len(cmd.DataOut) < plen {
		return check(scsi.SenseParamListLengthError)
	}
	states := map[uint16]scsi.State{}
	for off := 4; off < plen; off += 4 {
		d := cmd.DataOut[off:]
		id := binary.BigEndian.Uint16(d[2:])
		if _, dup := states[id]; dup {
			return checkParam(uint16(off + 2))
		}
		states[id] = scsi.State(d[0] & 0x0f)
	}
	if ctx.Err() != nil {
		return aborted()
	}
	refused, err := l.h.setTPGs(states)
	if err != nil {
		if refused {
			return checkParam(4)
		}
		return check(scsi.SenseInternalTargetFailure)
	}
	// The sender learns the new states from its own command; it gets no
	// unit attention for the change it asked for.
	pv := l.h.port(cmd.Nexus.TargetPort)
	l.mu.Lock()
	if st := l.nexus[cmd.Nexus]; st != nil {
		st.aluaGen = pv.gen
	}
	l.mu.Unlock()
	return good(nil)
}

// opInfo describes one supported command for REPORT SUPPORTED OPERATION
// CODES.
type opInfo struct {
	op, sa byte
	hasSA  bool
}

var supportedOps = []opInfo{
	{op: scsi.OpTestUnitReady}, {op: scsi.OpRequestSense}, {op: scsi.OpRead6}, {op: scsi.OpWrite6},
	{op: scsi.OpInquiry}, {op: scsi.OpModeSelect6}, {op: scsi.OpReserve6}, {op: scsi.OpRelease6},
	{op: scsi.OpModeSense6}, {op: scsi.OpStartStopUnit}, {op: scsi.OpReadCapacity10},
	{op: scsi.OpRead10}, {op: scsi.OpWrite10}, {op: scsi.OpVerify10}, {op: scsi.OpSynchronizeCache10},
	{op: scsi.OpWriteSame10}, {op: scsi.OpUnmap}, {op: scsi.OpModeSelect10}, {op: scsi.OpReserve10},
	{op: scsi.OpRelease10}, {op: scsi.OpModeSense10},
	{op: scsi.OpPersistentReserveIn, sa: scsi.PRInReadKeys, hasSA: true},
	{op: scsi.OpPersistentReserveIn, sa: scsi.PRInReadReservation, hasSA: true},
	{op: scsi.OpPersistentReserveIn, sa: scsi.PRInReportCapabilities, hasSA: true},
	{op: scsi.OpPersistentReserveIn, sa: scsi.PRInReadFullStatus, hasSA: true},
	{op: scsi.OpPersistentReserveOut, sa: scsi.PROutRegister, hasSA: true},
	{op: scsi.OpPersistentReserveOut, sa: scsi.PROutReserve, hasSA: true},
	{op: scsi.OpPersistentReserveOut, sa: scsi.PROutRelease, hasSA: true},
	{op: scsi.OpPersistentReserveOut, sa: scsi.PROutClear, hasSA: true},
	{op: scsi.OpPersistentReserveOut, sa: scsi.PROutPreempt, hasSA: true},
	{op: scsi.OpPersistentReserveOut, sa: scsi.PROutPreemptAndAbort, hasSA: true},
	{op: scsi.OpPersistentReserveOut, sa: scsi.PROutRegisterAndIgnoreExisting, hasSA: true},
	{op: scsi.OpPersistentReserveOut, sa: scsi.PROutRegisterAndMove, hasSA: true},
	{op: scsi.OpRead16}, {op: scsi.OpCompareAndWrite}, {op: scsi.OpWrite16}, {op: scsi.OpVerify16},
	{op: scsi.OpSynchronizeCache16}, {op: scsi.OpWriteSame16},
	{op: scsi.OpServiceActionIn16, sa: scsi.OpReadCapacity16SA, hasSA: true},
	{op: scsi.OpReportLUNs},
	{op: scsi.OpMaintenanceIn, sa: scsi.OpTargetPortGroupsSA, hasSA: true},
	{op: scsi.OpMaintenanceIn, sa: scsi.OpReportSupportedOpsSA, hasSA: true},
	{op: scsi.OpMaintenanceIn, sa: scsi.OpReportSupportedTMFsSA, hasSA: true},
	{op: scsi.OpMaintenanceOut, sa: scsi.OpTargetPortGroupsSA, hasSA: true},
	{op: scsi.OpRead12}, {op: scsi.OpWrite12}, {op: scsi.OpVerify12},
}

// cdbUsage is the CDB USAGE DATA of a command: its opcode, then a mask of
// the bits the device server looks at (here: every bit but the service
// action field's reserved ones).
func cdbUsage(o opInfo) []byte {
	n := scsi.CDBLength(o.op)
	u := bytes.Repeat([]byte{0xff}, n)
	u[0] = o.op
	if o.hasSA {
		u[1] = 0xe0 | o.sa
	}
	u[n-1] = 0x07 // CONTROL: NACA, LINK, obsolete; vendor bits unused
	return u
}

// timeouts is the command timeouts descriptor (no timeouts reported).
func timeouts() []byte { return []byte{0, 0x0a, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0} }

// reportSupportedOps is REPORT SUPPORTED OPERATION CODES: all commands
// (option 0) or one (options 1, 2, 3), with timeouts descriptors on RCTD.
func (l *lu) reportSupportedOps(cmd *scsi.Command) scsi.Response {
	cdb := cmd.CDB
	rctd := cdb[2]&0x80 != 0
	opt := cdb[2] & 0x07
	reqOp, reqSA := cdb[3], byte(binary.BigEndian.Uint16(cdb[4:]))
	alloc := int(binary.BigEndian.Uint32(cdb[6:]))
	switch opt {
	case 0:
		b := make([]byte, 4)
		for _, o := range supportedOps {
			d := make([]byte, 8)
			d[0] = o.op
			if o.hasSA {
				binary.BigEndian.PutUint16(d[2:], uint16(o.sa))
				d[5] |= 0x01
			}
			if rctd {
				d[5] |= 0x02
			}
			binary.BigEndian.PutUint16(d[6:], uint16(scsi.CDBLength(o.op)))
			b = append(b, d...)
			if rctd {
				b = append(b, timeouts()...)
			}
		}
		binary.BigEndian.PutUint32(b, uint32(len(b)-4))
		return good(b, alloc, cmd.DataInLen)
	case 1, 2, 3:
	default:
		return checkCDB(2, 2)
	}
	hasSA, known := false, false
	var found *opInfo
	for i, o := range supportedOps {
		if o.op != reqOp {
			continue
		}
		known = true
		hasSA = o.hasSA
		if !o.hasSA || o.sa == reqSA {
			found = &supportedOps[i]
			break
		}
	}
	switch {
	case opt == 1 && known && hasSA:
		return checkCDB(3, -1) // the opcode has service actions: use option 2
	case opt == 2 && known && !hasSA:
		return checkCDB(3, -1)
	}
	b := make([]byte, 4)
	if found == nil {
		b[1] = 0x01 // not supported
		return good(b, alloc, cmd.DataInLen)
	}
	u := cdbUsage(*found)
	b[1] = 0x03 // supported, as the standard says
	if rctd {
		b[1] |= 0x80
	}
	binary.BigEndian.PutUint16(b[2:], uint16(len(u)))
	b = append(b, u...)
	if rctd {
		b = append(b, timeouts()...)
	}
	return good(b, alloc, cmd.DataInLen)
}

// String names the LU for errors and status.
func (l *lu) String() string { return fmt.Sprintf("LU %d (%s)", l.cfg.LUN, l.cfg.Name) }

// reportSupportedTMFs is REPORT SUPPORTED TASK MANAGEMENT FUNCTIONS: the
// ones the iSCSI target implements (ABORT TASK, ABORT TASK SET, CLEAR TASK
// SET, LOGICAL UNIT RESET, TARGET RESET, I_T NEXUS RESET); 16 bytes with
// REPD, else 4.
func reportSupportedTMFs(cmd *scsi.Command) scsi.Response {
	alloc := int(binary.BigEndian.Uint32(cmd.CDB[6:]))
	if alloc < 4 {
		return checkCDB(6, -1)
	}
	b := []byte{0x80 | 0x40 | 0x10 | 0x08 | 0x02, 0x01, 0, 0}
	if cmd.CDB[2]&0x80 != 0 {
		b = append(b, make([]byte, 12)...)
		b[3] = 0x0c // additional data length
	}
	return good(b, alloc, cmd.DataInLen)
}
