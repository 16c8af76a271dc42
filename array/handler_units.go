package array

import (
	"fmt"
	"sort"

	"github.com/mpathfs/mpathfs/backends"
	"github.com/mpathfs/mpathfs/scsi"
)

// LUInfo describes a logical unit for status reports.
type LUInfo struct {
	LUN       uint64 `json:"lun"`
	Name      string `json:"name"`
	Vendor    string `json:"vendor"`
	Model     string `json:"model"`
	Serial    string `json:"serial"`
	WWID      string `json:"wwid"`
	BlockSize uint32 `json:"block_size"`
	Blocks    uint64 `json:"blocks"`
}

// Units describes every logical unit, in LUN order.
func (h *Handler) Units() []LUInfo {
	var out []LUInfo
	for _, l := range h.units() {
		c := l.cfg
		out = append(out, LUInfo{LUN: c.LUN, Name: c.Name, Vendor: c.Vendor, Model: c.Model, Serial: c.Serial, WWID: c.WWID, BlockSize: l.bs, Blocks: l.nblocks()})
	}
	return out
}

// AddLU adds a logical unit while the target runs. Every I_T nexus that
// knows another LU gets REPORTED LUNS DATA HAS CHANGED (06/3F/0E) there.
func (h *Handler) AddLU(cfg LUConfig, store backends.Backend) error {
	if store == nil {
		return fmt.Errorf("array handler: LUN %d: no store", cfg.LUN)
	}
	if cfg.LUN > 16383 {
		return fmt.Errorf("array handler: LUN %d: numbers above 16383 are not supported (flat addressing)", cfg.LUN)
	}
	cfg, err := h.defaults(cfg)
	if err != nil {
		return err
	}
	l, err := newLU(h, cfg, store)
	if err != nil {
		return err
	}
	h.mu.Lock()
	if _, dup := h.lus[cfg.LUN]; dup {
		h.mu.Unlock()
		return fmt.Errorf("array handler: LUN %d exists already: remove it first or pick another number", cfg.LUN)
	}
	h.lus[cfg.LUN] = l
	h.order = append(h.order, cfg.LUN)
	sort.Slice(h.order, func(i, j int) bool { return h.order[i] < h.order[j] })
	h.mu.Unlock()
	h.lunsChanged(cfg.LUN)
	return nil
}

// RemoveLU removes a logical unit; its store stays open (the caller's).
// Commands to it then fail with LOGICAL UNIT NOT SUPPORTED; the other
// LUs report REPORTED LUNS DATA HAS CHANGED.
func (h *Handler) RemoveLU(lun uint64) error {
	h.mu.Lock()
	if _, ok := h.lus[lun]; !ok {
		h.mu.Unlock()
		return fmt.Errorf("array handler: no logical unit %d (have %v)", lun, h.order)
	}
	delete(h.lus, lun)
	for i, n := range h.order {
		if n == lun {
			h.order = append(h.order[:i], h.order[i+1:]...)
			break
		}
	}
	h.mu.Unlock()
	h.lunsChanged(lun)
	return nil
}

func (h *Handler) lunsChanged(except uint64) {
	for _, l := range h.units() {
		if l.cfg.LUN == except {
			continue
		}
		l.mu.Lock()
		l.addUAAll(nil, scsi.SenseReportedLUNsChanged)
		l.mu.Unlock()
	}
}

// Resize re-reads a logical unit's store size (after the store grew or
// shrank) and, if the capacity changed, gives every I_T nexus CAPACITY
// DATA HAS CHANGED (06/2A/09).
func (h *Handler) Resize(lun uint64) error {
	l := h.lu(lun)
	if l == nil {
		return fmt.Errorf("array handler: no logical unit %d", lun)
	}
	blocks := uint64(l.store.Size()) / uint64(l.bs)
	if blocks == 0 {
		return fmt.Errorf("array handler: %s: store is smaller than one block", l)
	}
	if l.nblk.Swap(blocks) == blocks {
		return nil
	}
	l.mu.Lock()
	l.addUAAll(nil, scsi.SenseCapacityDataChanged)
	l.mu.Unlock()
	return nil
}
