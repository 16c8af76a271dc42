package array

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/mpathfs/mpathfs/ioerr"
	"github.com/mpathfs/mpathfs/scsi"
)

// Persistent reservations (SPC-4 5.12): registrations per I_T nexus (or,
// with ALL_TG_PT, per initiator port through every target port), one
// reservation of one of six types, a generation counter, and APTPL
// persistence to LUConfig.PRFile.

// registration is one registered I_T nexus (or initiator port, allTgPt).
type registration struct {
	Initiator string `json:"initiator"`
	ISID      string `json:"isid"`
	Port      uint16 `json:"port"`
	AllTgPt   bool   `json:"all_tg_pt,omitempty"`
	Key       uint64 `json:"key"`
}

// matches reports whether the registration covers the nexus.
func (r *registration) matches(n scsi.Nexus) bool {
	return strings.EqualFold(r.Initiator, n.Initiator) && strings.EqualFold(r.ISID, n.ISID) &&
		(r.AllTgPt || r.Port == n.TargetPort)
}

func (r *registration) transportID() scsi.TransportID {
	return scsi.TransportID{Name: r.Initiator, ISID: strings.ToLower(r.ISID)}
}

// reservation is the persistent reservation. holder is the registration
// that holds it (for the all-registrants types every registration does).
type reservation struct {
	holder *registration
	typ    scsi.PRType
}

type prState struct {
	gen   uint32
	regs  []*registration
	res   *reservation
	aptpl bool
}

func (p *prState) find(n scsi.Nexus) *registration {
	for _, r := range p.regs {
		if r.matches(n) {
			return r
		}
	}
	return nil
}

// holds reports whether the nexus is a reservation holder.
func (p *prState) holds(n scsi.Nexus) bool {
	if p.res == nil {
		return false
	}
	if p.res.typ.AllRegistrants() {
		return p.find(n) != nil
	}
	return p.res.holder.matches(n)
}

// conflicts is SPC-4's table of commands allowed in the presence of a
// persistent reservation (5.12.1, tables 45-46; SBC-3 table 13): holders
// may do anything; registrants of the registrants-only and all-registrants
// types too; everybody else may read under the write exclusive types and
// do nothing but the always-allowed commands under exclusive access.
func (p *prState) conflicts(n scsi.Nexus, c class) bool {
	if p.res == nil || c == classAlways || p.holds(n) {
		return false
	}
	t := p.res.typ
	if (t.RegistrantsOnly() || t.AllRegistrants()) && p.find(n) != nil {
		return false
	}
	if c == classRead {
		return t.ExclusiveAccess()
	}
	return true
}

func (p *prState) remove(r *registration) {
	for i, q := range p.regs {
		if q == r {
			p.regs = append(p.regs[:i], p.regs[i+1:]...)
			return
		}
	}
}

// prFile is the APTPL file's content.
type prFile struct {
	Generation    uint32          `json:"generation"`
	Registrations []*registration `json:"registrations"`
	// Holder indexes Registrations (-1: no reservation).
	Holder int    `json:"holder"`
	Type   uint8  `json:"type,omitempty"`
	Note   string `json:"note,omitempty"`
}

// loadPR reads the persisted reservation state, if any.
func (l *lu) loadPR() error {
	if l.cfg.PRFile == "" {
		return nil
	}
	b, err := os.ReadFile(l.cfg.PRFile)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("array handler: %s: persistent reservations: %w", l.cfg.Name, err)
	}
	var f prFile
	if err := json.Unmarshal(b, &f); err != nil {
		return fmt.Errorf("array handler: %s: persistent reservation file %s is not valid JSON (%v): fix or delete it", l.cfg.Name, l.cfg.PRFile, err)
	}
	p := prState{gen: f.Generation, regs: f.Registrations, aptpl: true}
	for i, r := range p.regs {
		if r == nil || r.Initiator == "" || r.Key == 0 {
			return fmt.Errorf("array handler: %s: persistent reservation file %s: registration %d lacks an initiator or key: fix or delete the file", l.cfg.Name, l.cfg.PRFile, i)
		}
	}
	if f.Holder >= 0 && f.Holder < len(p.regs) {
		t := scsi.PRType(f.Type)
		if !t.Valid() {
			return fmt.Errorf("array handler: %s: persistent reservation file %s: reservation type %d is not one of 1, 3, 5, 6, 7, 8: fix or delete the file", l.cfg.Name, l.cfg.PRFile, f.Type)
		}
		p.res = &reservation{holder: p.regs[f.Holder], typ: t}
	}
	l.pr = p
	return nil
}

// savePR writes (APTPL) or removes (no APTPL) the state file. l.mu held.
func (l *lu) savePR() error {
	if l.cfg.PRFile == "" {
		return nil
	}
	if !l.pr.aptpl {
		if err := os.Remove(l.cfg.PRFile); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
		return nil
	}
	f := prFile{Generation: l.pr.gen, Registrations: l.pr.regs, Holder: -1, Note: "mpathfs array: persistent reservations kept through power loss (APTPL)"}
	if l.pr.res != nil {
		f.Type = uint8(l.pr.res.typ)
		for i, r := range l.pr.regs {
			if r == l.pr.res.holder {
				f.Holder = i
			}
		}
	}
	b, err := json.MarshalIndent(f, "", "  ")
	if err != nil {
		return err
	}
	tmp := l.cfg.PRFile + ".tmp"
	fh, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	if _, err := fh.Write(append(b, '\n')); err != nil {
		fh.Close()
		return err
	}
	if err := fh.Sync(); err != nil {
		fh.Close()
		return err
	}
	if err := fh.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp, l.cfg.PRFile); err != nil {
		return err
	}
	if d, err := os.Open(filepath.Dir(l.cfg.PRFile)); err == nil {
		d.Sync()
		d.Close()
	}
	return nil
}

func (l *lu) persistentReserveIn(cmd *scsi.Command) scsi.Response {
	cdb := cmd.CDB
	alloc := alloc16(cdb, 7)
	l.mu.Lock()
	defer l.mu.Unlock()
	p := &l.pr
	b := make([]byte, 8)
	binary.BigEndian.PutUint32(b, p.gen)
	switch cdb[1] & 0x1f {
	case scsi.PRInReadKeys:
		for _, r := range p.regs {
			b = binary.BigEndian.AppendUint64(b, r.Key)
		}
	case scsi.PRInReadReservation:
		if p.res != nil {
			d := make([]byte, 16)
			if !p.res.typ.AllRegistrants() {
				binary.BigEndian.PutUint64(d, p.res.holder.Key)
			}
			d[13] = byte(p.res.typ) // scope 0: LU
			b = append(b, d...)
		}
	case scsi.PRInReportCapabilities:
		b = make([]byte, 8)
		b[1] = 8
		b[2] = 0x10 | 0x04 // CRH, ATP_C
		if l.cfg.PRFile != "" {
			b[2] |= 0x01 // PTPL_C
		}
		b[3] = 0x80 // TMV: the type mask is valid
		if p.aptpl {
			b[3] |= 0x01 // PTPL_A
		}
		b[4] = 0x80 | 0x40 | 0x20 | 0x08 | 0x02 // WR_EX_AR, EX_AC_RO, WR_EX_RO, EX_AC, WR_EX
		b[5] = 0x01                             // EX_AC_AR
		return good(b, alloc, cmd.DataInLen)
	case scsi.PRInReadFullStatus:
		for _, r := range p.regs {
			tid := r.transportID().Encode()
			d := make([]byte, 24, 24+len(tid))
			binary.BigEndian.PutUint64(d, r.Key)
			if r.AllTgPt {
				d[12] |= 0x02
			}
			if p.res != nil && (p.res.typ.AllRegistrants() || p.res.holder == r) {
				d[12] |= 0x01
				d[13] = byte(p.res.typ)
			}
			binary.BigEndian.PutUint16(d[18:], r.Port)
			binary.BigEndian.PutUint32(d[20:], uint32(len(tid)))
			b = append(append(b, d...), tid...)
		}
	default:
		return checkCDB(1, 4)
	}
	binary.BigEndian.PutUint32(b[4:], uint32(len(b)-8))
	return good(b, alloc, cmd.DataInLen)
}

// persistentReserveOut executes PERSISTENT RESERVE OUT (SPC-4 5.12.5 to
// 5.12.11, 6.16).
func (l *lu) persistentReserveOut(ctx context.Context, cmd *scsi.Command) scsi.Response {
	cdb := cmd.CDB
	sa := cdb[1] & 0x1f
	scope, typ := cdb[2]>>4, scsi.PRType(cdb[2]&0x0f)
	plen := int(binary.BigEndian.Uint32(cdb[5:]))
	if sa > scsi.PROutRegisterAndMove {
		return checkCDB(1, 4)
	}
	switch sa {
	case scsi.PROutReserve, scsi.PROutRelease, scsi.PROutPreempt, scsi.PROutPreemptAndAbort, scsi.PROutRegisterAndMove:
		if scope != 0 {
			return checkCDB(2, 7)
		}
		if sa != scsi.PROutRegisterAndMove && !typ.Valid() { // REGISTER AND MOVE keeps the type it moves
			return checkCDB(2, 3)
		}
	}
	if len(cmd.DataOut) < plen {
		return check(scsi.SenseParamListLengthError)
	}
	data := cmd.DataOut[:plen]

	if sa == scsi.PROutRegisterAndMove {
		l.gate.Lock()
		defer l.gate.Unlock()
		l.mu.Lock()
		defer l.mu.Unlock()
		if l.scsi2Conflict(cmd.Nexus, cdb[0], sa) {
			return conflict()
		}
		return l.registerAndMove(cmd.Nexus, data)
	}
	if plen != scsi.PROutParamLen {
		pp, err := scsi.ParsePROutParams(data)
		if err != nil || !pp.SpecIPT {
			return check(scsi.SenseParamListLengthError)
		}
	}
	pp, _ := scsi.ParsePROutParams(data)
	if pp.SpecIPT {
		return checkParam(20) // SIP_C is 0: SPEC_I_PT is not supported
	}
	isReg := sa == scsi.PROutRegister || sa == scsi.PROutRegisterAndIgnoreExisting
	if isReg && pp.APTPL && l.cfg.PRFile == "" {
		return checkParam(20) // PTPL_C is 0 without a state file
	}
	if ctx.Err() != nil {
		return aborted()
	}

	l.gate.Lock()
	l.mu.Lock()
	if l.scsi2Conflict(cmd.Nexus, cdb[0], sa) {
		l.mu.Unlock()
		l.gate.Unlock()
		return conflict()
	}
	var victims []scsi.Nexus
	r, changed := l.prOut(cmd.Nexus, sa, typ, pp, &victims)
	if changed {
		if err := l.savePR(); err != nil {
			r = check(scsi.SenseInternalTargetFailure)
		}
	}
	l.mu.Unlock()
	l.gate.Unlock()
	if sa == scsi.PROutPreemptAndAbort && r.Status == scsi.StatusGood && len(victims) > 0 && l.h.OnPreemptAbort != nil {
		l.h.OnPreemptAbort(victims, l.cfg.LUN)
	}
	return r
}

// victimsOf lists the known nexuses a registration covers. l.mu held.
func (l *lu) victimsOf(r *registration) []scsi.Nexus {
	var out []scsi.Nexus
	for n := range l.nexus {
		if r.matches(n) {
			out = append(out, n)
		}
	}
	return out
}

// prOut applies one service action; changed reports whether the state to
// persist changed. l.gate and l.mu are held.
func (l *lu) prOut(n scsi.Nexus, sa byte, typ scsi.PRType, pp scsi.PROutParams, victims *[]scsi.Nexus) (scsi.Response, bool) {
	p := &l.pr
	reg := p.find(n)
	switch sa {
	case scsi.PROutRegister, scsi.PROutRegisterAndIgnoreExisting:
		if reg == nil {
			if sa == scsi.PROutRegister && pp.Key != 0 {
				return conflict(), false
			}
			if pp.SAKey == 0 {
				return good(nil), false
			}
			p.regs = append(p.regs, &registration{Initiator: n.Initiator, ISID: n.ISID, Port: n.TargetPort, AllTgPt: pp.AllTgPt, Key: pp.SAKey})
		} else {
			if sa == scsi.PROutRegister && pp.Key != reg.Key {
				return conflict(), false
			}
			if pp.SAKey == 0 {
				l.unregister(reg)
			} else {
				reg.Key = pp.SAKey
			}
		}
		p.aptpl = pp.APTPL
		p.gen++
		return good(nil), true
	}
	// Every other service action needs the nexus registered under Key.
	if reg == nil || reg.Key != pp.Key {
		return conflict(), false
	}
	switch sa {
	case scsi.PROutReserve:
		if p.res != nil {
			if p.holds(n) && p.res.typ == typ {
				return good(nil), false
			}
			return conflict(), false
		}
		p.res = &reservation{holder: reg, typ: typ}
		return good(nil), true
	case scsi.PROutRelease:
		if p.res == nil || !p.holds(n) {
			return good(nil), false
		}
		if p.res.typ != typ {
			return check(ioerr.Sense{Key: ioerr.SenseIllegalRequest, ASC: 0x26, ASCQ: 0x04}), false // INVALID RELEASE OF PERSISTENT RESERVATION
		}
		t := p.res.typ
		p.res = nil
		if t.RegistrantsOnly() || t.AllRegistrants() {
			l.uaRegistrants(n, scsi.SenseReservationsReleased)
		}
		return good(nil), true
	case scsi.PROutClear:
		for _, r := range p.regs {
			if r != reg {
				for _, v := range l.victimsOf(r) {
					l.addUA(v, scsi.SenseReservationsPreempted)
				}
			}
		}
		p.regs, p.res = nil, nil
		p.gen++
		return good(nil), true
	case scsi.PROutPreempt, scsi.PROutPreemptAndAbort:
		return l.preempt(n, reg, typ, pp.SAKey, victims)
	}
	return checkCDB(1, 4), false
}

// uaRegistrants queues a unit attention for every registrant's nexuses
// but n's. l.mu held.
func (l *lu) uaRegistrants(n scsi.Nexus, s ioerr.Sense) {
	for _, r := range l.pr.regs {
		for _, v := range l.victimsOf(r) {
			if v != n {
				l.addUA(v, s)
			}
		}
	}
}

// unregister removes a registration; if it held the reservation the
// reservation goes (for the all-registrants types only with the last
// registrant), and registrants-only/all-registrants holders' peers learn
// RESERVATIONS RELEASED. l.mu held.
func (l *lu) unregister(reg *registration) {
	p := &l.pr
	p.remove(reg)
	if p.res == nil {
		return
	}
	t := p.res.typ
	switch {
	case t.AllRegistrants():
		if len(p.regs) == 0 {
			p.res = nil
		} else if p.res.holder == reg {
			p.res.holder = p.regs[0]
		}
	case p.res.holder == reg:
		p.res = nil
		if t.RegistrantsOnly() {
			for _, r := range p.regs {
				for _, v := range l.victimsOf(r) {
					l.addUA(v, scsi.SenseReservationsReleased)
				}
			}
		}
	}
}

// preempt is PREEMPT and PREEMPT AND ABORT (SPC-4 5.12.11.4).
func (l *lu) preempt(n scsi.Nexus, reg *registration, typ scsi.PRType, saKey uint64, victims *[]scsi.Nexus) (scsi.Response, bool) {
	p := &l.pr
	removeKey := func(key uint64) int {
		count := 0
		for _, r := range append([]*registration(nil), p.regs...) {
			if r.Key != key || r == reg {
				continue
			}
			count++
			vs := l.victimsOf(r)
			*victims = append(*victims, vs...)
			for _, v := range vs {
				l.addUA(v, scsi.SenseRegistrationsPreempted)
			}
			p.remove(r)
		}
		return count
	}
	switch {
	case p.res == nil:
		if saKey == 0 {
			return checkParam(8), false
		}
		if removeKey(saKey) == 0 {
			return conflict(), false
		}
	case p.res.typ.AllRegistrants():
		if saKey == 0 {
			if !typ.Valid() {
				return checkCDB(2, 3), false
			}
			for _, r := range append([]*registration(nil), p.regs...) {
				if r != reg {
					removeKey(r.Key)
				}
			}
			p.res = &reservation{holder: reg, typ: typ}
		} else if removeKey(saKey) == 0 {
			return conflict(), false
		}
	case saKey == p.res.holder.Key:
		if !typ.Valid() {
			return checkCDB(2, 3), false
		}
		old := p.res.typ
		removeKey(saKey)
		p.res = &reservation{holder: reg, typ: typ}
		if old != typ {
			l.uaRegistrants(n, scsi.SenseReservationsReleased)
		}
	default:
		if saKey == 0 {
			return checkParam(8), false
		}
		if removeKey(saKey) == 0 {
			return conflict(), false
		}
	}
	p.gen++
	return good(nil), true
}

// registerAndMove is REGISTER AND MOVE (SPC-4 5.12.8): the reservation
// and a registration move to the I_T nexus the parameter list names.
// l.gate and l.mu are held.
func (l *lu) registerAndMove(n scsi.Nexus, data []byte) scsi.Response {
	if len(data) < 24 {
		return check(scsi.SenseParamListLengthError)
	}
	mp, err := scsi.ParseRegisterAndMove(data)
	if err != nil {
		return checkParam(24)
	}
	p := &l.pr
	reg := p.find(n)
	if reg == nil || reg.Key != mp.Key {
		return conflict()
	}
	if p.res == nil || !p.holds(n) || p.res.typ.AllRegistrants() {
		return conflict()
	}
	if mp.SAKey == 0 {
		return checkParam(8)
	}
	if mp.TransportID.ISID == "" {
		return checkParam(24) // the destination must name an initiator port
	}
	if mp.APTPL && l.cfg.PRFile == "" {
		return checkParam(17)
	}
	if l.h.arr != nil {
		if _, ok := l.h.arr.access(mp.RelativeTargetPort); !ok {
			return checkParam(18)
		}
	}
	dest := scsi.Nexus{Initiator: mp.TransportID.Name, ISID: mp.TransportID.ISID, TargetPort: mp.RelativeTargetPort}
	if reg.matches(dest) {
		return checkParam(24) // moving to itself
	}
	d := p.find(dest)
	if d == nil {
		d = &registration{Initiator: dest.Initiator, ISID: dest.ISID, Port: dest.TargetPort, Key: mp.SAKey}
		p.regs = append(p.regs, d)
	} else {
		d.Key = mp.SAKey
	}
	p.res = &reservation{holder: d, typ: p.res.typ}
	if mp.Unreg {
		p.remove(reg)
	}
	p.aptpl = mp.APTPL
	p.gen++
	if err := l.savePR(); err != nil {
		return check(scsi.SenseInternalTargetFailure)
	}
	return good(nil)
}

// PRStatus is a logical unit's persistent reservation state, as status
// reports show it.
type PRStatus struct {
	LUN           uint64           `json:"lun"`
	Generation    uint32           `json:"generation"`
	APTPL         bool             `json:"aptpl"`
	Registrations []PRRegistration `json:"registrations"`
	// Type is the reservation's type (WE, EA, WERO, EARO, WEAR, EAAR), ""
	// without one.
	Type string `json:"type,omitempty"`
	// SCSI2Holder is the initiator port holding a SCSI-2 reservation.
	SCSI2Holder string `json:"scsi2_holder,omitempty"`
}

// PRRegistration is one registration in a PRStatus.
type PRRegistration struct {
	InitiatorPort string `json:"initiator_port"`
	TargetPort    uint16 `json:"target_port"`
	AllTgPt       bool   `json:"all_tg_pt,omitempty"`
	Key           string `json:"key"`
	Holder        bool   `json:"holder"`
}

// Reservations reports every LU's reservation state.
func (h *Handler) Reservations() []PRStatus {
	var out []PRStatus
	for _, l := range h.units() {
		lun := l.cfg.LUN
		l.mu.Lock()
		s := PRStatus{LUN: lun, Generation: l.pr.gen, APTPL: l.pr.aptpl}
		if l.pr.res != nil {
			s.Type = l.pr.res.typ.String()
		}
		for _, r := range l.pr.regs {
			s.Registrations = append(s.Registrations, PRRegistration{
				InitiatorPort: r.Initiator + ",i,0x" + r.ISID, TargetPort: r.Port, AllTgPt: r.AllTgPt,
				Key:    fmt.Sprintf("0x%x", r.Key),
				Holder: l.pr.res != nil && (l.pr.res.typ.AllRegistrants() || l.pr.res.holder == r),
			})
		}
		if l.res2 != nil {
			s.SCSI2Holder = l.res2.InitiatorPort()
		}
		l.mu.Unlock()
		out = append(out, s)
	}
	return out
}
