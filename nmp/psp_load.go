package nmp

import (
	"fmt"
	"sync/atomic"

	"github.com/mpathfs/mpathfs/mpath"
)

// The dm-multipath selectors, for paths that differ in speed.
const (
	// PSPQueueLength sends each I/O to the usable path with the fewest I/Os
	// in flight (dm-multipath's queue-length).
	PSPQueueLength = "queue-length"
	// PSPServiceTime sends each I/O to the usable path with the shortest
	// estimated service time: bytes in flight plus this I/O, times the
	// path's recent latency per 4 KiB (dm-multipath's service-time).
	PSPServiceTime = "service-time"
)

func init() {
	RegisterPSP(PSPQueueLength, "dm-multipath queue-length: the path with the fewest I/Os in flight", func(o map[string]string, p []*mpath.Path) (PSP, error) {
		return newLoad(PSPQueueLength, o)
	})
	RegisterPSP(PSPServiceTime, "dm-multipath service-time: the path with the shortest estimated service time", func(o map[string]string, p []*mpath.Path) (PSP, error) {
		return newLoad(PSPServiceTime, o)
	})
}

type loadBalancer struct {
	name   string
	useANO bool
	rot    atomic.Uint64 // rotates the start so ties spread
	opts   map[string]string
}

var _ PSP = (*loadBalancer)(nil)

func newLoad(name string, opts map[string]string) (PSP, error) {
	o := NewOptions(name, opts)
	useANO := o.Bool("useANO", false)
	if err := o.Done(); err != nil {
		return nil, err
	}
	l := &loadBalancer{name: name, useANO: useANO, opts: map[string]string{}}
	if useANO {
		l.opts["useANO"] = "1"
	}
	return l, nil
}

func (l *loadBalancer) Name() string { return l.name }

func (l *loadBalancer) Select(v *View, _ mpath.OpKind, n int) (*mpath.Path, Reason) {
	c := v.Candidates(l.useANO)
	if len(c) == 0 {
		return nil, ReasonNone
	}
	if len(c) == 1 {
		return c[0], ReasonOnlyPath
	}
	start := int(l.rot.Add(1) % uint64(len(c)))
	var best *mpath.Path
	var bestScore uint64
	for i := range c {
		p := c[(start+i)%len(c)]
		var score uint64
		if l.name == PSPQueueLength {
			score = uint64(p.Inflight.Load())
		} else {
			score = uint64(p.InflightBytes.Load()+int64(n)) * (p.EWMALatencyNs.Load() + 1)
		}
		if best == nil || score < bestScore {
			best, bestScore = p, score
		}
	}
	if l.name == PSPQueueLength {
		return best, ReasonLowestQueue
	}
	return best, ReasonServiceTime
}

func (l *loadBalancer) ViewChanged(*View) {}

func (l *loadBalancer) Config() string {
	ano := 0
	if l.useANO {
		ano = 1
	}
	return fmt.Sprintf("{policy=%s,useANO=%d}", l.name, ano)
}

func (l *loadBalancer) Options() map[string]string { return l.opts }
