package nmp

import (
	"fmt"
	"slices"
	"sync/atomic"

	"github.com/mpathfs/mpathfs/mpath"
)

// PSPMRU is VMW_PSP_MRU: keep using the most recently used path; on its
// failure move to the highest-ranked usable path (claim order breaks ties)
// and stay there — no failback. With ALUA it moves to the best group
// (active/optimized) when the current path is no longer in it.
const PSPMRU = "VMW_PSP_MRU"

func init() {
	RegisterPSP(PSPMRU, "Most Recently Used: stays on the current path; never fails back; path ranks", newMRU)
}

type mru struct {
	current atomic.Pointer[mpath.Path]
}

var _ PSP = (*mru)(nil)

func newMRU(opts map[string]string, _ []*mpath.Path) (PSP, error) {
	o := NewOptions(PSPMRU, opts)
	if err := o.Done(); err != nil {
		return nil, err
	}
	return &mru{}, nil
}

func (m *mru) Name() string { return PSPMRU }

func (m *mru) Select(v *View, _ mpath.OpKind, _ int) (*mpath.Path, Reason) {
	best := v.Best()
	if len(best) == 0 {
		return nil, ReasonNone
	}
	cur := m.current.Load()
	for _, p := range best {
		if p == cur {
			return p, ReasonMostRecent
		}
	}
	pick := best[0]
	for _, p := range best[1:] {
		if p.Rank.Load() > pick.Rank.Load() {
			pick = p
		}
	}
	if m.current.CompareAndSwap(cur, pick) {
		return pick, ReasonRank
	}
	// Another I/O moved first; follow it if it is usable.
	if now := m.current.Load(); now != nil {
		for _, p := range best {
			if p == now {
				return p, ReasonMostRecent
			}
		}
	}
	return pick, ReasonRank
}

func (m *mru) ViewChanged(*View) {}

func (m *mru) Config() string {
	cur := "none"
	if p := m.current.Load(); p != nil {
		cur = p.Name
	}
	return fmt.Sprintf("{current=%s}", cur)
}

func (m *mru) Options() map[string]string { return map[string]string{} }

// Switch is the administrator's path switch (ESXi's "fail back by hand"):
// p is the most recently used path from now on.
func (m *mru) Switch(v *View, p *mpath.Path) error {
	if !slices.Contains(v.Best(), p) {
		return fmt.Errorf("%s: path %s is usable but not in the best group (e.g. active/non-optimized): MRU would leave it at the next I/O", PSPMRU, p.Name)
	}
	m.current.Store(p)
	return nil
}
