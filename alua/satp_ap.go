package alua

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/mpathfs/mpathfs/backends"
	"github.com/mpathfs/mpathfs/ioerr"
	"github.com/mpathfs/mpathfs/mpath"
	"github.com/mpathfs/mpathfs/nmp"
	"github.com/mpathfs/mpathfs/scsi"
)

// SATPDefaultAP is VMW_SATP_DEFAULT_AP: active/passive arrays. Only the
// owning controller's paths carry I/O; the passive controller's answer
// not ready and are standby. When no active path is left the SATP
// trespasses the LU to the controller of a standby path, at most once per
// trespass_interval_ms and trespass_limit times per trespass_window_ms,
// so two hosts (or a fail-back-happy PSP) cannot ping-pong the LU between
// the controllers.
const SATPDefaultAP = "VMW_SATP_DEFAULT_AP"

func init() {
	nmp.RegisterSATP(SATPDefaultAP, "Active/passive arrays: trespasses the LU to the passive controller on failover, damped", nmp.PSPMRU, func(o map[string]string) (nmp.SATP, error) {
		return NewAPSATP(o)
	})
}

// TrespassGuard damps trespasses: at least MinInterval between two, and
// at most Limit within any Window (Limit 0: no limit). It is pure: the
// caller passes the time.
type TrespassGuard struct {
	MinInterval time.Duration
	Limit       int
	Window      time.Duration
	history     []time.Time
}

// Check says whether a trespass may go ahead at now; if not, how long to
// wait and why.
func (g *TrespassGuard) Check(now time.Time) (ok bool, wait time.Duration, reason string) {
	if n := len(g.history); n > 0 {
		last := g.history[n-1]
		if since := now.Sub(last); since < g.MinInterval {
			return false, g.MinInterval - since, fmt.Sprintf("last trespass %v ago, minimum interval %v", since, g.MinInterval)
		}
	}
	if g.Limit > 0 {
		g.prune(now)
		if len(g.history) >= g.Limit {
			w := g.history[0].Add(g.Window).Sub(now)
			return false, w, fmt.Sprintf("%d trespasses within %v (limit %d)", len(g.history), g.Window, g.Limit)
		}
	}
	return true, 0, ""
}

func (g *TrespassGuard) prune(now time.Time) {
	cut := now.Add(-g.Window)
	keep := g.history[:0]
	for _, t := range g.history {
		if t.After(cut) {
			keep = append(keep, t)
		}
	}
	g.history = keep
}

// Record notes a trespass at now.
func (g *TrespassGuard) Record(now time.Time) {
	g.history = append(g.history, now)
	if g.Limit > 0 && g.Window > 0 {
		g.prune(now)
	} else if len(g.history) > 1 {
		g.history = g.history[len(g.history)-1:]
	}
}

// Count is how many trespasses the guard remembers.
func (g *TrespassGuard) Count() int { return len(g.history) }

type apSATP struct {
	backoff time.Duration
	mu      struct {
		sync.Mutex
		guard TrespassGuard
		total uint64
		seen  uint64 // ownership changes the paths reported (2A/06)
		last  string
	}
}

var (
	_ nmp.SATP      = (*apSATP)(nil)
	_ nmp.Updater   = (*apSATP)(nil)
	_ nmp.Activator = (*apSATP)(nil)
)

// NewAPSATP makes a VMW_SATP_DEFAULT_AP instance from options:
// trespass_interval_ms (10000), trespass_limit (5, 0: none),
// trespass_window_ms (300000), retry_backoff_ms (10).
func NewAPSATP(opts map[string]string) (nmp.SATP, error) {
	o := nmp.NewOptions(SATPDefaultAP, opts)
	s := &apSATP{backoff: time.Duration(o.Uint("retry_backoff_ms", 10, 0)) * time.Millisecond}
	s.mu.guard = TrespassGuard{
		MinInterval: time.Duration(o.Uint("trespass_interval_ms", 10000, 0)) * time.Millisecond,
		Limit:       int(o.Uint("trespass_limit", 5, 0)),
		Window:      time.Duration(o.Uint("trespass_window_ms", 300000, 0)) * time.Millisecond,
	}
	if err := o.Done(); err != nil {
		return nil, err
	}
	return s, nil
}

func (s *apSATP) Name() string       { return SATPDefaultAP }
func (s *apSATP) DefaultPSP() string { return nmp.PSPMRU }

// ActivePassive marks the SATP as an active/passive array's: the NMP sends
// no hedged reads, which could trespass the LU.
func (s *apSATP) ActivePassive() {}

// Group: every active path is equal; passive paths are standby, not active.
func (s *apSATP) Group(p *mpath.Path) (int, bool) { return 0, p.State() == mpath.StateActive }

// ClassifyAP is the active/passive judgement: not ready (a passive
// controller, 02/04/xx other than a transition) puts the path in standby
// and sweeps the paths with TUR; a path failure kills the path and
// sweeps; the rest as VMW_SATP_DEFAULT_AA.
func ClassifyAP(err error, backoff time.Duration) nmp.Verdict {
	c := nmp.ClassifyError(err)
	v := nmp.VerdictFor(c, backoff)
	switch c {
	case ioerr.ClassNotReady:
		v.Reason = "not ready: passive controller"
		v.Update = true
	case ioerr.ClassPathFailure:
		v.Update = true
	}
	if se, ok := ioerr.SenseOf(err); ok && se == ioerr.SenseAccessChanged {
		v.Event = EventOwnershipChanged
		v.Update = true
		v.Backoff = 0 // a report of a change, not a busy LU: retry at once
		v.Reason = "unit attention " + se.String() + ": the LU changed controllers (a trespass by another host or by the array)"
	}
	return v
}

// EventOwnershipChanged is the event VMW_SATP_DEFAULT_AP publishes when
// a path reports that the LU moved to another controller (unit attention
// 2A/06): on an array that trespasses on I/O, a count of these is a count
// of the trespasses other hosts made — path thrashing shows up as a stream
// of them.
const EventOwnershipChanged = "ownership-changed"

func (s *apSATP) Classify(p *mpath.Path, op mpath.OpKind, err error) nmp.Verdict {
	v := ClassifyAP(err, s.backoff)
	if v.Event == EventOwnershipChanged {
		s.mu.Lock()
		s.mu.seen++
		s.mu.Unlock()
	}
	return v
}

// CheckedAP turns a TUR into a path state: passes → active, not ready →
// standby (passive), busy or transitioning → unchanged, else dead.
func CheckedAP(cur mpath.PathState, probeErr error) (mpath.PathState, string) {
	if probeErr == nil {
		return mpath.StateActive, "path checker: TUR passed"
	}
	switch nmp.ClassifyError(probeErr) {
	case ioerr.ClassNotReady:
		return mpath.StateStandby, "path checker: passive controller: " + probeErr.Error()
	case ioerr.ClassRetryable:
		return cur, "path checker: busy"
	case ioerr.ClassConflict:
		return cur, nmp.CheckedConflict // up, but a passive port may answer so too: keep its state
	}
	return mpath.StateDead, "path checker: " + probeErr.Error()
}

func (s *apSATP) Checked(p *mpath.Path, probeErr error) (mpath.PathState, string) {
	return CheckedAP(p.State(), probeErr)
}

// Update sends TUR through every path that is not dead or disabled and
// returns the changes the answers mean (dead paths are the checker's).
func (s *apSATP) Update(ctx context.Context, paths []*mpath.Path) ([]nmp.Change, error) {
	var out []nmp.Change
	for _, p := range paths {
		cur := p.State()
		if p.AdminOff() || cur == mpath.StateDead || cur == mpath.StateDisabled {
			continue
		}
		pr, ok := backends.As[backends.Prober](p.Backend)
		if !ok {
			continue
		}
		want, reason := CheckedAP(cur, pr.Probe(ctx))
		if want != cur {
			out = append(out, nmp.Change{Path: p, State: want, Reason: reason})
		}
		if ctx.Err() != nil {
			return out, ctx.Err()
		}
	}
	return out, nil
}

// Activate trespasses the LU to the controller of a standby path when no
// path is active, waiting for the guard within the deadline.
func (s *apSATP) Activate(ctx context.Context, paths []*mpath.Path) ([]nmp.Change, error) {
	var via []*mpath.Path
	for _, p := range paths {
		switch {
		case p.AdminOff():
		case p.State() == mpath.StateActive:
			return s.Update(ctx, paths)
		case p.State() == mpath.StateStandby:
			via = append(via, p)
		}
	}
	if len(via) == 0 {
		return nil, errors.New(SATPDefaultAP + ": no standby path to trespass through")
	}
	for {
		s.mu.Lock()
		ok, wait, why := s.mu.guard.Check(time.Now())
		s.mu.Unlock()
		if ok {
			break
		}
		if dl, has := ctx.Deadline(); has && time.Until(dl) < wait {
			return nil, fmt.Errorf("%s: trespass damped (%s): next allowed in %v", SATPDefaultAP, why, wait.Round(time.Millisecond))
		}
		if err := backends.Sleep(ctx, wait); err != nil {
			return nil, err
		}
	}
	var err error
	for _, p := range via {
		t, ok := backends.As[scsi.Trespasser](p.Backend)
		if !ok {
			continue
		}
		if err = t.Trespass(ctx); err == nil {
			s.mu.Lock()
			s.mu.guard.Record(time.Now())
			s.mu.total++
			s.mu.last = p.Name
			s.mu.Unlock()
			return s.Update(ctx, paths)
		}
		if nmp.ClassifyError(err) == ioerr.ClassDeviceError || ctx.Err() != nil {
			break
		}
	}
	if err == nil {
		err = errors.New("no standby path offers trespass")
	}
	return nil, fmt.Errorf("%s: trespass: %w", SATPDefaultAP, err)
}

// Config prints the damping settings and the trespasses made.
func (s *apSATP) Config() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	last := s.mu.last
	if last == "" {
		last = "none"
	}
	g := s.mu.guard
	return fmt.Sprintf("{trespass_interval=%v; trespass_limit=%d/%v; trespasses=%d; last_trespass_via=%s; ownership_changes_seen=%d}", g.MinInterval, g.Limit, g.Window, s.mu.total, last, s.mu.seen)
}
