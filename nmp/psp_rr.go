package nmp

import (
	"fmt"
	"slices"
	"strconv"
	"sync/atomic"

	"github.com/mpathfs/mpathfs/mpath"
)

// PSPRR is VMW_PSP_RR: rotate through the usable paths of the best group
// (all usable paths with useANO=1), switching after a number of I/Os
// (type=iops, default 1000) or bytes (type=bytes, default 10485760).
const PSPRR = "VMW_PSP_RR"

func init() {
	RegisterPSP(PSPRR, "Round Robin: rotates over active (optimized) paths every N I/Os or bytes", newRR)
}

const (
	rrIOPS  = "iops"
	rrBytes = "bytes"
)

type roundRobin struct {
	typ      string
	limit    uint64
	useANO   bool
	n        atomic.Uint64
	lastPath atomic.Int64
	rot      atomic.Pointer[rrRotation]
	opts     map[string]string
	lat      *latencyRR // type=latency (psp_rr_latency.go)
}

// rrRotation places the rotation over one view's candidates: the I/O (or
// byte) numbered k goes to candidate (off + (k+shift)/limit) mod len. Every
// view gets its own, made by ViewChanged (under the device lock) so that the
// rotation carries on from the path in turn when the candidates change;
// Select only loads it. The previous view's placement is kept for I/Os that
// still route by that view while the new one is being published.
type rrRotation struct {
	view, prevView *View
	// ref is the last view with candidates, the one off and shift place
	// the rotation over (v itself unless all paths are down).
	ref        *View
	off, shift uint64
	prevOff    uint64
	prevShift  uint64
}

// place returns the placement for I/Os routed by v.
func (r *rrRotation) place(v *View) (off, shift uint64) {
	if r == nil {
		return 0, 0
	}
	if v != r.view && v == r.prevView {
		return r.prevOff, r.prevShift
	}
	return r.off, r.shift
}

var _ PSP = (*roundRobin)(nil)

func newRR(opts map[string]string, _ []*mpath.Path) (PSP, error) {
	o := NewOptions(PSPRR, opts)
	typ := o.String("type", rrIOPS)
	iops := o.Uint("iops", 1000, 1)
	bytes := o.Uint("bytes", 10485760, 1)
	useANO := o.Bool("useANO", false)
	var lat *latencyRR
	if typ == rrLatency {
		var err error
		if lat, err = parseLatencyOptions(o); err != nil {
			return nil, err
		}
	}
	if err := o.Done(); err != nil {
		return nil, err
	}
	r := &roundRobin{typ: typ, useANO: useANO, lat: lat}
	switch typ {
	case rrIOPS:
		r.limit = iops
	case rrBytes:
		r.limit = bytes
	case rrLatency:
		r.limit = 1
	default:
		return nil, fmt.Errorf("%s option type=%q: want iops, bytes or latency", PSPRR, typ)
	}
	r.opts = map[string]string{"type": typ, typ: strconv.FormatUint(r.limit, 10)}
	if lat != nil {
		r.opts = map[string]string{"type": typ}
		lat.options(r.opts)
	}
	if useANO {
		r.opts["useANO"] = "1"
	}
	return r, nil
}

func (r *roundRobin) Name() string { return PSPRR }

func (r *roundRobin) Select(v *View, _ mpath.OpKind, n int) (*mpath.Path, Reason) {
	c := v.Candidates(r.useANO)
	if len(c) == 0 {
		return nil, ReasonNone
	}
	if r.lat != nil {
		return r.selectLatency(v, c)
	}
	off, shift := r.rot.Load().place(v)
	var k uint64
	if r.typ == rrBytes {
		k = r.n.Add(uint64(n)) - uint64(n)
	} else {
		k = r.n.Add(1) - 1
	}
	k += shift
	turn := k / r.limit
	idx := int((off + turn%uint64(len(c))) % uint64(len(c)))
	reason := ReasonRRTurn
	if r.typ == rrIOPS && k%r.limit == 0 {
		reason = ReasonRRSwitch
	}
	p := c[idx]
	if int64(idx) != r.lastPath.Load() {
		r.lastPath.Store(int64(idx))
	}
	if len(c) == 1 {
		reason = ReasonOnlyPath
	}
	return p, reason
}

// ViewChanged keeps the rotation going where it was, the way ESXi moves from
// its lastPathIndex to the next active path: if the path in turn is still a
// candidate, it finishes its turn and the paths after it follow; if it left,
// the next surviving path after it starts a fresh turn at once. Without this
// the rotation would jump wherever count/limit mod the new length fell (p2 of
// p1..p4 dying handed its turn to p4, then to p1 which had just had one).
func (r *roundRobin) ViewChanged(v *View) {
	old := r.rot.Load()
	nr := &rrRotation{view: v, ref: v}
	if old != nil {
		nr.prevView, nr.prevOff, nr.prevShift = old.view, old.off, old.shift
		nr.off, nr.shift = old.off, old.shift
	}
	nc := v.Candidates(r.useANO)
	if len(nc) == 0 && old != nil {
		// All paths down: no I/O goes anywhere; carry on from the last
		// candidates when some come back.
		nr.ref = old.ref
	}
	if old == nil || old.ref == nil || len(nc) == 0 {
		r.rot.Store(nr)
		return
	}
	oc := old.ref.Candidates(r.useANO)
	if len(oc) == 0 {
		r.rot.Store(nr)
		return
	}
	// Selects routed by v draw counts from n on.
	n := r.n.Load()
	k := n + old.shift
	turn := k / r.limit
	at := func(turn uint64) int { return int((old.off + turn%uint64(len(oc))) % uint64(len(oc))) }
	// after returns the candidate of v that follows oc[i]: the next one in
	// v if oc[i] is still there, else the next path after it that survived.
	after := func(i int) int {
		if j := slices.Index(nc, oc[i]); j >= 0 {
			return (j + 1) % len(nc)
		}
		for d := 1; d < len(oc); d++ {
			if j := slices.Index(nc, oc[(i+d)%len(oc)]); j >= 0 {
				return j
			}
		}
		return 0
	}
	var target int // the candidate of v that takes (or keeps) the turn
	switch cur := at(turn); {
	case k%r.limit == 0 && turn > 0:
		// Between turns: the path after the one that just had its turn.
		target = after(at(turn - 1))
	case slices.Contains(nc, oc[cur]):
		// The path in turn is still a candidate: it finishes its turn.
		target = slices.Index(nc, oc[cur])
	default:
		// The path in turn left: the next path after it that is still a
		// candidate starts a full turn at once.
		target = after(cur)
		nr.shift = (r.limit - n%r.limit) % r.limit
		turn = (n + nr.shift) / r.limit
	}
	// Place it so that (off + turn) mod len(nc) == target.
	l := uint64(len(nc))
	nr.off = (uint64(target) + l - turn%l) % l
	r.rot.Store(nr)
}

func (r *roundRobin) Config() string {
	ano := 0
	if r.useANO {
		ano = 1
	}
	if r.lat != nil {
		return r.lat.config(ano)
	}
	if r.typ == rrBytes {
		return fmt.Sprintf("{policy=bytes,bytes=%d,useANO=%d; lastPathIndex=%d}", r.limit, ano, r.lastPath.Load())
	}
	return fmt.Sprintf("{policy=iops,iops=%d,useANO=%d; lastPathIndex=%d}", r.limit, ano, r.lastPath.Load())
}

func (r *roundRobin) Options() map[string]string { return r.opts }
