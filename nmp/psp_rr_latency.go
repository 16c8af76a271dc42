package nmp

import (
	"fmt"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/mpathfs/mpathfs/mpath"
)

// VMW_PSP_RR type=latency: ESXi's latency-based round robin. Every
// latencyEvalTime (default 3 minutes) the PSP samples the candidate paths:
// the next samplingCycles (default 16) I/Os per path go to each path in
// turn, and each path's mean completion latency over those I/Os is taken
// from its counters. Until the next evaluation, I/O rotates over the paths
// whose mean is the lowest — within 10 % of it, so that equal paths share
// the load. A path with no completion in the sample (hung, or too slow to
// answer while the others did) is not chosen. A change of the candidate
// paths (a path failed or returned) starts a new sample at once.

const (
	rrLatency             = "latency"
	defaultSamplingCycles = 16
	defaultLatencyEval    = 3 * time.Minute
	// latencyTolerance: paths within this fraction of the lowest mean
	// latency share the I/O.
	latencyTolerance = 0.10
)

// latencyRR is the latency type's configuration and state.
type latencyRR struct {
	cycles uint64
	eval   time.Duration
	st     atomic.Pointer[latSample]
}

// latSample is one evaluation: the candidates it samples, their counters
// when it began, and once it is over, the paths chosen.
type latSample struct {
	view    *View
	cands   []*mpath.Path
	baseLat []uint64
	baseN   []uint64
	n       atomic.Uint64 // I/Os dispatched in this evaluation
	chosen  atomic.Pointer[[]*mpath.Path]
	until   atomic.Int64 // settled: when the next evaluation is due (Unix ns)
	means   atomic.Pointer[[]time.Duration]
}

// parseLatencyOptions reads samplingCycles and latencyEvalTime (a duration,
// or a number of milliseconds as ESXi gives it).
func parseLatencyOptions(o *Options) (*latencyRR, error) {
	cycles := o.Uint("samplingCycles", defaultSamplingCycles, 1)
	evalS := o.String("latencyEvalTime", "")
	l := &latencyRR{cycles: cycles, eval: defaultLatencyEval}
	if evalS != "" {
		if ms, err := strconv.ParseUint(strings.TrimSpace(evalS), 10, 63); err == nil && ms > 0 {
			l.eval = time.Duration(ms) * time.Millisecond
		} else if d, err := time.ParseDuration(evalS); err == nil && d > 0 {
			l.eval = d
		} else {
			return nil, fmt.Errorf("%s option latencyEvalTime=%q: want a positive duration (3m) or milliseconds (180000)", PSPRR, evalS)
		}
	}
	return l, nil
}

func (l *latencyRR) options(m map[string]string) {
	m["samplingCycles"] = strconv.FormatUint(l.cycles, 10)
	m["latencyEvalTime"] = l.eval.String()
}

// begin starts an evaluation over the candidates c of view v.
func (l *latencyRR) begin(v *View, c []*mpath.Path, old *latSample) *latSample {
	s := &latSample{view: v, cands: c, baseLat: make([]uint64, len(c)), baseN: make([]uint64, len(c))}
	for i, p := range c {
		s.baseLat[i], s.baseN[i] = p.LatencyNs.Load(), p.Completions.Load()
	}
	if l.st.CompareAndSwap(old, s) {
		return s
	}
	if cur := l.st.Load(); cur != nil {
		return cur
	}
	return s
}

// settle picks the paths with the lowest mean latency since the sample
// began.
func (l *latencyRR) settle(s *latSample, now time.Time) []*mpath.Path {
	means := make([]time.Duration, len(s.cands))
	best := time.Duration(-1)
	for i, p := range s.cands {
		n := p.Completions.Load() - s.baseN[i]
		if n == 0 {
			means[i] = -1
			continue
		}
		means[i] = time.Duration((p.LatencyNs.Load() - s.baseLat[i]) / n)
		if best < 0 || means[i] < best {
			best = means[i]
		}
	}
	var chosen []*mpath.Path
	for i, p := range s.cands {
		if means[i] >= 0 && float64(means[i]) <= float64(best)*(1+latencyTolerance) {
			chosen = append(chosen, p)
		}
	}
	if len(chosen) == 0 {
		chosen = s.cands // nothing completed: keep sampling them all
	}
	s.until.Store(now.Add(l.eval).UnixNano())
	s.means.Store(&means)
	s.chosen.Store(&chosen)
	return chosen
}

// selectLatency is Select for type=latency.
func (r *roundRobin) selectLatency(v *View, c []*mpath.Path) (*mpath.Path, Reason) {
	l := r.lat
	s := l.st.Load()
	if s == nil || s.view != v {
		if s == nil || !sameCands(s.cands, c) {
			s = l.begin(v, c, s)
		}
	}
	k := s.n.Add(1) - 1
	if sampling := l.cycles * uint64(len(s.cands)); k < sampling {
		p := s.cands[k%uint64(len(s.cands))]
		r.lastPath.Store(int64(k % uint64(len(s.cands))))
		return p, ReasonLatencySample
	}
	ch := s.chosen.Load()
	now := time.Now()
	var chosen []*mpath.Path
	if ch == nil {
		chosen = l.settle(s, now)
	} else {
		chosen = *ch
		if now.UnixNano() > s.until.Load() {
			l.begin(v, c, s)
			return r.selectLatency(v, c) // the new evaluation's first sample
		}
	}
	if len(c) == 1 {
		return c[0], ReasonOnlyPath
	}
	p := chosen[k%uint64(len(chosen))]
	return p, ReasonLowestLatency
}

func sameCands(a, b []*mpath.Path) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// config prints the latency type's state the ESXi way.
func (l *latencyRR) config(useANO int) string {
	var b strings.Builder
	fmt.Fprintf(&b, "{policy=latency,latencyEvalTime=%dms,samplingCycles=%d,useANO=%d", l.eval.Milliseconds(), l.cycles, useANO)
	if s := l.st.Load(); s != nil {
		if m := s.means.Load(); m != nil {
			b.WriteString(";")
			for i, p := range s.cands {
				lat := "none"
				if (*m)[i] >= 0 {
					lat = (*m)[i].String()
				}
				fmt.Fprintf(&b, " %s latency=%s", p.Name, lat)
			}
			if ch := s.chosen.Load(); ch != nil {
				names := make([]string, len(*ch))
				for i, p := range *ch {
					names[i] = p.Name
				}
				fmt.Fprintf(&b, "; chosen=%s", strings.Join(names, ","))
			}
		} else {
			fmt.Fprintf(&b, "; sampling %d of %d", min(s.n.Load(), l.cycles*uint64(len(s.cands))), l.cycles*uint64(len(s.cands)))
		}
	}
	b.WriteString("}")
	return b.String()
}
