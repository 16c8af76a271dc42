package array

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"

	"github.com/mpathfs/mpathfs/backends"
	"github.com/mpathfs/mpathfs/ioerr"
	"github.com/mpathfs/mpathfs/scsi"
)

// LUConfig describes one logical unit the Handler serves.
type LUConfig struct {
	// LUN is the logical unit number (the transport decodes the SAM LUN
	// field; Command.LUN is this number).
	LUN uint64 `yaml:"lun" json:"lun"`
	// Name is for people (status, errors); default "lun<N>".
	Name string `yaml:"name" json:"name,omitempty"`
	// Vendor (8 chars), Model (16), Revision (4) and Serial of INQUIRY;
	// WWID ("naa." + 16 or 32 hex digits) of VPD page 0x83. Defaults come
	// from the array's config (LUN 0 takes the array's identity as is;
	// other LUNs a WWID and serial derived from it).
	Vendor   string `yaml:"vendor" json:"vendor,omitempty"`
	Model    string `yaml:"model" json:"model,omitempty"`
	Revision string `yaml:"revision" json:"revision,omitempty"`
	Serial   string `yaml:"serial" json:"serial,omitempty"`
	WWID     string `yaml:"wwid" json:"wwid,omitempty"`
	// BlockSize is the logical block length: 512 (default) or 4096.
	BlockSize uint32 `yaml:"block_size" json:"block_size,omitempty"`
	// PRFile keeps the persistent reservation state when a host asks for
	// APTPL (activate persist through power loss); it is read at start.
	// Empty: APTPL is refused (REPORT CAPABILITIES says PTPL_C=0). The
	// server puts it beside the store: STORE.pr.
	PRFile string `yaml:"pr_file" json:"pr_file,omitempty"`
	// WriteCacheOff reports the write cache disabled (caching page WCE=0);
	// the store's own durability is unchanged.
	WriteCacheOff bool `yaml:"write_cache_off" json:"write_cache_off,omitempty"`
}

// HandlerConfig is the Handler's configuration.
type HandlerConfig struct {
	// Array is the ALUA core the logical units report and obey: target
	// port groups, access states, STPG. Nil: every port is
	// active/optimized and INQUIRY reports TPGS=0.
	Array *Array
	// TargetName, if set, is reported as the SCSI target name string
	// designator of VPD page 0x83 (the iSCSI target's IQN).
	TargetName string
	// LUs pairs with the stores given to NewHandler, in order. Empty: one
	// LU per store, numbered from 0.
	LUs []LUConfig
}

// Handler is the simulated array's logical units as a scsi.Handler: it
// executes SCSI commands (SPC-4, SBC-3) against the stores, with ALUA
// access states from the array's core, persistent reservations, SCSI-2
// reservations, unit attentions per I_T nexus, and injectable faults.
type Handler struct {
	cfg HandlerConfig
	arr *Array

	mu    sync.RWMutex // lus and order; AddLU and RemoveLU change them
	lus   map[uint64]*lu
	order []uint64

	// OnPreemptAbort, if set, is called by PERSISTENT RESERVE OUT with
	// PREEMPT AND ABORT, after the registrations are removed and before
	// the command completes, with the preempted I_T nexuses: the transport
	// aborts their tasks on lun (as ABORT TASK SET would, without
	// answering them) and returns once none of them can still execute.
	// The logical unit cannot reach the transport's task set itself. It
	// is never called with a lock of the Handler held. Set it before the
	// first command.
	OnPreemptAbort func(victims []scsi.Nexus, lun uint64)

	faults faultSet
	late   sync.WaitGroup
}

var _ scsi.Handler = (*Handler)(nil)

// NewHandler builds the logical units over stores (one per LU, in
// cfg.LUs order). It loads each LU's persisted reservation state.
func NewHandler(cfg HandlerConfig, stores ...backends.Backend) (*Handler, error) {
	if len(stores) == 0 {
		return nil, errors.New("array handler: no stores: give one backing store per logical unit")
	}
	if len(cfg.LUs) == 0 {
		for i := range stores {
			cfg.LUs = append(cfg.LUs, LUConfig{LUN: uint64(i)})
		}
	}
	if len(cfg.LUs) != len(stores) {
		return nil, fmt.Errorf("array handler: %d logical units configured but %d stores given: give one store per LU", len(cfg.LUs), len(stores))
	}
	h := &Handler{cfg: cfg, arr: cfg.Array, lus: map[uint64]*lu{}}
	for i, lc := range cfg.LUs {
		if _, dup := h.lus[lc.LUN]; dup {
			return nil, fmt.Errorf("array handler: two logical units numbered %d: give each its own lun", lc.LUN)
		}
		if lc.LUN > 16383 {
			return nil, fmt.Errorf("array handler: LUN %d: numbers above 16383 are not supported (flat addressing)", lc.LUN)
		}
		lc, err := h.defaults(lc)
		if err != nil {
			return nil, err
		}
		if stores[i] == nil {
			return nil, fmt.Errorf("array handler: %s: no store", lc.Name)
		}
		l, err := newLU(h, lc, stores[i])
		if err != nil {
			return nil, err
		}
		h.lus[lc.LUN] = l
		h.order = append(h.order, lc.LUN)
	}
	sort.Slice(h.order, func(i, j int) bool { return h.order[i] < h.order[j] })
	return h, nil
}

// lu returns a logical unit, nil if there is none with that number.
func (h *Handler) lu(lun uint64) *lu {
	h.mu.RLock()
	defer h.mu.RUnlock()
	return h.lus[lun]
}

// units returns the logical units in LUN order.
func (h *Handler) units() []*lu {
	h.mu.RLock()
	defer h.mu.RUnlock()
	out := make([]*lu, 0, len(h.order))
	for _, n := range h.order {
		out = append(out, h.lus[n])
	}
	return out
}

// defaults fills in and checks an LU's identity.
func (h *Handler) defaults(lc LUConfig) (LUConfig, error) {
	if lc.Name == "" {
		lc.Name = fmt.Sprintf("lun%d", lc.LUN)
	}
	base := "mpathfs"
	vendor, model, serial, wwid := "MPATHFS", "ARRAY LU", "", ""
	if h.arr != nil {
		ac := h.arr.Config()
		base, vendor, model = ac.Name, ac.Vendor, ac.Model
		if lc.LUN == 0 {
			serial, wwid = ac.Serial, ac.WWID
		}
	}
	sum := sha256.Sum256([]byte(fmt.Sprintf("mpathfs-array:%s:lun%d", base, lc.LUN)))
	if serial == "" {
		serial = "ARR" + hex.EncodeToString(sum[:6])
	}
	if wwid == "" {
		wwid = "naa.6" + hex.EncodeToString(sum[8:24])[:31]
	}
	set := func(p *string, def string) {
		if *p == "" {
			*p = def
		}
	}
	set(&lc.Vendor, vendor)
	set(&lc.Model, model)
	set(&lc.Serial, serial)
	set(&lc.WWID, wwid)
	set(&lc.Revision, "0001")
	if len(lc.Vendor) > 8 || len(lc.Model) > 16 || len(lc.Revision) > 4 {
		return lc, fmt.Errorf("array handler: %s: vendor %q, model %q or revision %q too long (at most 8, 16 and 4 characters)", lc.Name, lc.Vendor, lc.Model, lc.Revision)
	}
	if len(lc.Serial) > 252 {
		return lc, fmt.Errorf("array handler: %s: serial of %d characters is too long (at most 252)", lc.Name, len(lc.Serial))
	}
	if _, err := naaBytes(lc.WWID); err != nil {
		return lc, fmt.Errorf("array handler: %s: %w", lc.Name, err)
	}
	switch lc.BlockSize {
	case 0:
		lc.BlockSize = 512
	case 512, 4096:
	default:
		return lc, fmt.Errorf("array handler: %s: block size %d: want 512 or 4096", lc.Name, lc.BlockSize)
	}
	return lc, nil
}

// naaBytes decodes "naa.<16 or 32 hex digits>".
func naaBytes(wwid string) ([]byte, error) {
	s, ok := strings.CutPrefix(strings.ToLower(wwid), "naa.")
	if !ok {
		return nil, fmt.Errorf("WWID %q: want naa. followed by 16 or 32 hex digits", wwid)
	}
	b, err := hex.DecodeString(s)
	if err != nil || (len(b) != 8 && len(b) != 16) {
		return nil, fmt.Errorf("WWID %q: want naa. followed by 16 or 32 hex digits", wwid)
	}
	return b, nil
}

// LUNs lists every logical unit: all are visible through every port.
func (h *Handler) LUNs(scsi.Nexus) []uint64 {
	h.mu.RLock()
	defer h.mu.RUnlock()
	return append([]uint64(nil), h.order...)
}

// Close waits for the writes a land-late fault holds back to land (or
// for ctx), then returns. The stores stay open: they are the caller's.
func (h *Handler) Close(ctx context.Context) error {
	done := make(chan struct{})
	go func() { h.late.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("array handler: writes held by land-late faults still pending: %w", ctx.Err())
	}
}

// Reset applies a task management function's effect on the logical
// units: LUN RESET and target resets release SCSI-2 reservations and
// establish unit attentions (29/03 after a LUN reset, 29/00 after a target
// reset) for every I_T nexus, the issuer's included; I_T NEXUS RESET
// releases the nexus's SCSI-2 reservations and gives it 29/07. Persistent
// reservations survive all of them.
func (h *Handler) Reset(n scsi.Nexus, f scsi.TMF, lun uint64) {
	switch f {
	case scsi.TMFLUNReset:
		if l := h.lu(lun); l != nil {
			l.reset(scsi.SenseBusDeviceReset)
		}
	case scsi.TMFTargetWarmReset, scsi.TMFTargetColdReset:
		for _, l := range h.units() {
			l.reset(scsi.SensePowerOnReset)
		}
	case scsi.TMFITNexusReset:
		for _, l := range h.units() {
			l.nexusReset(n)
		}
	}
}

// NexusLost forgets an ended I_T nexus: its SCSI-2 reservations are
// released and its unit attentions dropped (a new nexus starts with
// 29/00). Persistent reservations and registrations stay.
func (h *Handler) NexusLost(n scsi.Nexus) {
	for _, l := range h.units() {
		l.nexusLost(n)
	}
}

// Execute runs one command (the scsi.Handler contract): faults first,
// then unit attentions, ALUA access, reservations, then the command.
func (h *Handler) Execute(ctx context.Context, cmd *scsi.Command) scsi.Response {
	if len(cmd.CDB) == 0 {
		return checkCDB(0, -1)
	}
	op := cmd.CDB[0]
	l := h.lu(cmd.LUN)
	if l == nil {
		switch op {
		case scsi.OpInquiry:
			return h.inquiryNoLU(cmd)
		case scsi.OpReportLUNs:
			return h.reportLUNs(cmd)
		case scsi.OpRequestSense:
			return h.requestSenseNoLU(cmd)
		}
		return check(ioerr.SenseLUNotSupported)
	}
	if n := scsi.CDBLength(op); n == 0 || len(cmd.CDB) < n {
		if n == 0 {
			return check(scsi.SenseInvalidOpcode)
		}
		return checkCDB(uint16(len(cmd.CDB)), -1)
	}
	r, done, late := h.applyFaults(ctx, cmd)
	if done {
		return r
	}
	return l.execute(ctx, cmd, late)
}

// Responses.

func good(data []byte, limits ...int) scsi.Response {
	for _, n := range limits {
		if n >= 0 && len(data) > n {
			data = data[:n]
		}
	}
	return scsi.Response{Status: scsi.StatusGood, DataIn: data}
}

func check(s ioerr.Sense) scsi.Response {
	return scsi.Response{Status: scsi.StatusCheckCondition, Sense: scsi.FixedSense(s)}
}

func checkData(d scsi.SenseData) scsi.Response {
	return scsi.Response{Status: scsi.StatusCheckCondition, Sense: d.Fixed()}
}

// checkCDB is INVALID FIELD IN CDB at byte field (bit, or -1).
func checkCDB(field uint16, bit int) scsi.Response {
	return checkData(scsi.InvalidCDBField(field, bit))
}

// checkParam is INVALID FIELD IN PARAMETER LIST at byte field.
func checkParam(field uint16) scsi.Response { return checkData(scsi.InvalidParamField(field)) }

func conflict() scsi.Response { return scsi.Response{Status: scsi.StatusReservationConflict} }

func aborted() scsi.Response { return scsi.Response{Status: scsi.StatusTaskAborted} }

// storeErr turns a store's error into sense: the error's own sense if it
// carries one, else MEDIUM ERROR (unrecovered read error or write error),
// else HARDWARE ERROR, INTERNAL TARGET FAILURE.
func storeErr(op string, err error) scsi.Response {
	if s, ok := ioerr.SenseOf(err); ok {
		return check(s)
	}
	switch op {
	case "read":
		return check(ioerr.SenseUnrecoveredRead)
	case "write":
		return check(scsi.SenseWriteError)
	}
	return check(scsi.SenseInternalTargetFailure)
}
