package array

import (
	"context"
	"encoding/binary"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/mpathfs/mpathfs/backends"
	"github.com/mpathfs/mpathfs/ioerr"
	"github.com/mpathfs/mpathfs/scsi"
)

// FaultRule is a fault injected at the array's logical units: which
// commands it matches, and what happens to them. The array server's
// `mpathfs array fault` commands build these.
type FaultRule struct {
	// ID is assigned by AddFault.
	ID int `json:"id"`

	// Matching; a zero field matches everything.
	//
	// LUNs limits the rule to these logical units.
	LUNs []uint64 `json:"luns,omitempty"`
	// Initiator matches the initiator name, or its initiator port
	// (NAME,i,0xISID), case-insensitively.
	Initiator string `json:"initiator,omitempty"`
	// Port is the relative target port.
	Port uint16 `json:"port,omitempty"`
	// Ops are operation classes: read (READ, VERIFY), write (WRITE,
	// WRITE SAME, COMPARE AND WRITE), flush (SYNCHRONIZE CACHE), discard
	// (UNMAP, WRITE SAME with UNMAP), probe (TEST UNIT READY), other
	// (everything else: INQUIRY, reservations, mode pages …), any. Empty:
	// read, write, flush and discard.
	Ops []string `json:"ops,omitempty"`
	// LBAFrom and LBATo (inclusive) limit read/write/discard matches to
	// commands overlapping the range; both zero: any LBA.
	LBAFrom uint64 `json:"lba_from,omitempty"`
	LBATo   uint64 `json:"lba_to,omitempty"`
	// Count: the rule removes itself after this many matches (0: never).
	Count int `json:"count,omitempty"`

	// Effects, in order: Delay, then one of Hang, Status, Sense or
	// LandLate (at most one).
	//
	// Delay holds the command this long before it executes (or until the
	// command is aborted).
	Delay time.Duration `json:"delay,omitempty"`
	// Hang holds the command until it is aborted: it never executes.
	Hang bool `json:"hang,omitempty"`
	// Status answers with this status instead of executing: BUSY, TASK SET
	// FULL or RESERVATION CONFLICT.
	Status scsi.Status `json:"status,omitempty"`
	// Sense answers CHECK CONDITION with this sense instead of executing.
	Sense *ioerr.Sense `json:"sense,omitempty"`
	// LandLate acknowledges a write (GOOD) at once and applies it this
	// much later: the write that lands late, after the host may have
	// written the same blocks through another path. Only write-class
	// commands (WRITE, WRITE SAME, UNMAP) land late; others execute.
	LandLate time.Duration `json:"land_late,omitempty"`

	hits int
}

var faultOps = []string{"read", "write", "flush", "discard", "probe", "other", "any"}

// Validate checks a rule and says what is wrong.
func (r FaultRule) Validate() error {
	for _, o := range r.Ops {
		if !slices.Contains(faultOps, o) {
			return fmt.Errorf("array fault: unknown operation %q (want %s)", o, strings.Join(faultOps, ", "))
		}
	}
	effects := 0
	for _, on := range []bool{r.Hang, r.Status != 0, r.Sense != nil, r.LandLate > 0} {
		if on {
			effects++
		}
	}
	if effects > 1 {
		return fmt.Errorf("array fault: give at most one of hang, status, sense and land-late")
	}
	if effects == 0 && r.Delay <= 0 {
		return fmt.Errorf("array fault: does nothing: give a delay, hang, status, sense or land-late")
	}
	switch r.Status {
	case 0, scsi.StatusBusy, scsi.StatusTaskSetFull, scsi.StatusReservationConflict:
	default:
		return fmt.Errorf("array fault: status 0x%02x: want BUSY (0x08), TASK SET FULL (0x28) or RESERVATION CONFLICT (0x18)", uint8(r.Status))
	}
	if r.Delay < 0 || r.LandLate < 0 || r.Count < 0 {
		return fmt.Errorf("array fault: delay, land-late and count must not be negative")
	}
	if r.LBATo < r.LBAFrom {
		return fmt.Errorf("array fault: LBA range %d-%d is empty: give FROM-TO with FROM <= TO", r.LBAFrom, r.LBATo)
	}
	return nil
}

type faultSet struct {
	mu    sync.Mutex
	rules []*FaultRule
	next  int
}

// AddFault installs a rule and returns its id.
func (h *Handler) AddFault(r FaultRule) (int, error) {
	if err := r.Validate(); err != nil {
		return 0, err
	}
	for _, lun := range r.LUNs {
		if h.lu(lun) == nil {
			return 0, fmt.Errorf("array fault: no logical unit %d (have %v)", lun, h.LUNs(scsi.Nexus{}))
		}
	}
	h.faults.mu.Lock()
	defer h.faults.mu.Unlock()
	h.faults.next++
	r.ID, r.hits = h.faults.next, 0
	h.faults.rules = append(h.faults.rules, &r)
	return r.ID, nil
}

// RemoveFault removes one rule; false if there is none with that id.
func (h *Handler) RemoveFault(id int) bool {
	h.faults.mu.Lock()
	defer h.faults.mu.Unlock()
	for i, r := range h.faults.rules {
		if r.ID == id {
			h.faults.rules = append(h.faults.rules[:i], h.faults.rules[i+1:]...)
			return true
		}
	}
	return false
}

// ClearFaults removes every rule.
func (h *Handler) ClearFaults() {
	h.faults.mu.Lock()
	h.faults.rules = nil
	h.faults.mu.Unlock()
}

// Faults lists the rules in force.
func (h *Handler) Faults() []FaultRule {
	h.faults.mu.Lock()
	defer h.faults.mu.Unlock()
	out := make([]FaultRule, 0, len(h.faults.rules))
	for _, r := range h.faults.rules {
		out = append(out, *r)
	}
	return out
}

// opClass names a command's fault class, and its LBA range if it has one.
func opClass(cdb []byte) (cls string, lba, blocks uint64, ranged bool) {
	switch cdb[0] {
	case scsi.OpRead6, scsi.OpRead10, scsi.OpRead12, scsi.OpRead16, scsi.OpVerify10, scsi.OpVerify12, scsi.OpVerify16:
		r := parseRW(cdb)
		return "read", r.lba, r.blocks, true
	case scsi.OpWrite6, scsi.OpWrite10, scsi.OpWrite12, scsi.OpWrite16:
		r := parseRW(cdb)
		return "write", r.lba, r.blocks, true
	case scsi.OpWriteSame10, scsi.OpWriteSame16:
		r := parseRW(cdb)
		if cdb[1]&0x08 != 0 {
			return "discard", r.lba, r.blocks, true
		}
		return "write", r.lba, r.blocks, true
	case scsi.OpCompareAndWrite:
		if len(cdb) < 16 {
			return "write", 0, 0, false
		}
		return "write", binary.BigEndian.Uint64(cdb[2:]), uint64(cdb[13]), true
	case scsi.OpUnmap:
		return "discard", 0, 0, false
	case scsi.OpSynchronizeCache10, scsi.OpSynchronizeCache16:
		return "flush", 0, 0, false
	case scsi.OpTestUnitReady:
		return "probe", 0, 0, false
	}
	return "other", 0, 0, false
}

func (r *FaultRule) matches(n scsi.Nexus, lun uint64, cls string, lba, blocks uint64, ranged bool) bool {
	if len(r.LUNs) > 0 && !slices.Contains(r.LUNs, lun) {
		return false
	}
	if r.Initiator != "" && !strings.EqualFold(r.Initiator, n.Initiator) && !strings.EqualFold(r.Initiator, n.InitiatorPort()) {
		return false
	}
	if r.Port != 0 && r.Port != n.TargetPort {
		return false
	}
	ops := r.Ops
	if len(ops) == 0 {
		ops = []string{"read", "write", "flush", "discard"}
	}
	if !slices.Contains(ops, "any") && !slices.Contains(ops, cls) {
		return false
	}
	if r.LBAFrom != 0 || r.LBATo != 0 {
		if !ranged || blocks == 0 {
			return cls != "read" && cls != "write" && cls != "discard"
		}
		last := lba + blocks - 1
		if last < r.LBAFrom || lba > r.LBATo {
			return false
		}
	}
	return true
}

// applyFaults runs the first matching rule's effects. done reports that
// the rule answered the command (r is the answer); otherwise the command
// executes normally, landing late by late if that is not zero.
func (h *Handler) applyFaults(ctx context.Context, cmd *scsi.Command) (r scsi.Response, done bool, late time.Duration) {
	h.faults.mu.Lock()
	if len(h.faults.rules) == 0 {
		h.faults.mu.Unlock()
		return r, false, 0
	}
	cls, lba, blocks, ranged := opClass(cmd.CDB)
	var rule FaultRule
	found := false
	for i, fr := range h.faults.rules {
		if fr.matches(cmd.Nexus, cmd.LUN, cls, lba, blocks, ranged) {
			fr.hits++
			rule, found = *fr, true
			if fr.Count > 0 && fr.hits >= fr.Count {
				h.faults.rules = append(h.faults.rules[:i], h.faults.rules[i+1:]...)
			}
			break
		}
	}
	h.faults.mu.Unlock()
	if !found {
		return r, false, 0
	}
	if rule.Delay > 0 {
		if err := backends.Sleep(ctx, rule.Delay); err != nil {
			return aborted(), true, 0
		}
	}
	switch {
	case rule.Hang:
		<-ctx.Done()
		return aborted(), true, 0
	case rule.Status != 0:
		return scsi.Response{Status: rule.Status}, true, 0
	case rule.Sense != nil:
		return check(*rule.Sense), true, 0
	case rule.LandLate > 0 && (cls == "write" || cls == "discard") && cmd.CDB[0] != scsi.OpCompareAndWrite:
		return r, false, rule.LandLate
	}
	return r, false, 0
}

// landLate acknowledges a write that passed every check (unit attention,
// ALUA, reservations) and executes it d later, outside any task: aborting
// the command no longer stops it, and a reservation taken meanwhile does
// not either (the array had accepted it).
func (l *lu) landLate(cmd *scsi.Command, pv portView, d time.Duration) scsi.Response {
	c := *cmd
	c.CDB = append([]byte(nil), cmd.CDB...)
	c.DataOut = append([]byte(nil), cmd.DataOut...)
	l.h.late.Add(1)
	time.AfterFunc(d, func() {
		defer l.h.late.Done()
		l.dispatch(context.Background(), &c, pv)
	})
	return good(nil)
}
