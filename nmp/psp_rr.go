package nmp

import (
	"fmt"
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
	opts     map[string]string
}

var _ PSP = (*roundRobin)(nil)

func newRR(opts map[string]string, _ []*mpath.Path) (PSP, error) {
	o := newOptions(PSPRR, opts)
	typ := o.str("type", rrIOPS)
	iops := o.uint("iops", 1000, 1)
	bytes := o.uint("bytes", 10485760, 1)
	useANO := o.bool("useANO", false)
	if err := o.done(); err != nil {
		return nil, err
	}
	r := &roundRobin{typ: typ, useANO: useANO}
	switch typ {
	case rrIOPS:
		r.limit = iops
	case rrBytes:
		r.limit = bytes
	default:
		return nil, fmt.Errorf("%s option type=%q: want iops or bytes", PSPRR, typ)
	}
	r.opts = map[string]string{"type": typ, typ: strconv.FormatUint(r.limit, 10)}
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
	var k uint64
	if r.typ == rrBytes {
		k = r.n.Add(uint64(n)) - uint64(n)
	} else {
		k = r.n.Add(1) - 1
	}
	turn := k / r.limit
	idx := int(turn % uint64(len(c)))
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

func (r *roundRobin) ViewChanged(*View) {}

func (r *roundRobin) Config() string {
	ano := 0
	if r.useANO {
		ano = 1
	}
	if r.typ == rrBytes {
		return fmt.Sprintf("{policy=bytes,bytes=%d,useANO=%d; lastPathIndex=%d}", r.limit, ano, r.lastPath.Load())
	}
	return fmt.Sprintf("{policy=iops,iops=%d,useANO=%d; lastPathIndex=%d}", r.limit, ano, r.lastPath.Load())
}

func (r *roundRobin) Options() map[string]string { return r.opts }
