package alua

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mpathfs/mpathfs/backends"
	"github.com/mpathfs/mpathfs/ioerr"
	"github.com/mpathfs/mpathfs/mpath"
	"github.com/mpathfs/mpathfs/nmp"
	"github.com/mpathfs/mpathfs/scsi"
)

// SATPALUA is VMW_SATP_ALUA: arrays that report target port groups.
const SATPALUA = "VMW_SATP_ALUA"

func init() {
	nmp.RegisterSATP(SATPALUA, "ALUA arrays: groups paths by target port group state (AO, then ANO)", nmp.PSPMRU, func(o map[string]string) (nmp.SATP, error) {
		return NewALUASATP(o)
	})
}

// EventAccessChanged is the event VMW_SATP_ALUA publishes when a path
// reports that the target port groups' states changed (unit attention
// 2A/06) — another host's STPG or the array's implicit transition.
const EventAccessChanged = "alua-state-changed"

// ALUA SATP options.
type aluaOpts struct {
	explicitAllow bool          // explicit_allow: may send STPG
	followover    bool          // alua_followover: follow state changes others make
	onRetry       bool          // action_OnRetryErrors: retryable errors fail the path
	backoff       time.Duration // retry_backoff_ms: first wait during a transition
	maxBackoff    time.Duration // max_backoff_ms
}

// aluaSATP is VMW_SATP_ALUA for one device. What it knows of the array it
// learned through the paths: each path's target port group (PortInfo)
// and the groups' states (RTPG). Classify, Group and Checked work on that
// knowledge without I/O; Update and Activate are the thin wrappers that
// send RTPG and STPG.
type aluaSATP struct {
	opts aluaOpts
	// tStreak counts transitioning answers since the last RTPG that saw
	// no transition: the backoff doubles with it.
	tStreak atomic.Int32

	mu struct {
		sync.Mutex
		k knowledge
	}
}

var (
	_ nmp.SATP          = (*aluaSATP)(nil)
	_ nmp.Updater       = (*aluaSATP)(nil)
	_ nmp.Activator     = (*aluaSATP)(nil)
	_ nmp.PathDecorator = (*aluaSATP)(nil)
)

// knowledge is what an ALUA SATP knows of the array.
type knowledge struct {
	port map[*mpath.Path]scsi.PortInfo
	tpg  map[uint16]scsi.TPG
	tpgs int // INQUIRY TPGS bits, as the ports report them
}

func (k *knowledge) stateOf(p *mpath.Path) (uint16, scsi.State, bool) {
	pi, ok := k.port[p]
	if !ok {
		return 0, 0, false
	}
	t, ok := k.tpg[pi.TPG]
	return pi.TPG, t.State, ok
}

// NewALUASATP makes a VMW_SATP_ALUA instance from options: explicit_allow
// (on), alua_followover (on), action_OnRetryErrors (off),
// retry_backoff_ms (10) and max_backoff_ms (250).
func NewALUASATP(opts map[string]string) (nmp.SATP, error) {
	o := nmp.NewOptions(SATPALUA, opts)
	s := &aluaSATP{opts: aluaOpts{
		explicitAllow: o.Bool("explicit_allow", true),
		followover:    o.Bool("alua_followover", true),
		onRetry:       o.Bool("action_OnRetryErrors", false),
		backoff:       time.Duration(o.Uint("retry_backoff_ms", 10, 1)) * time.Millisecond,
		maxBackoff:    time.Duration(o.Uint("max_backoff_ms", 250, 1)) * time.Millisecond,
	}}
	if err := o.Done(); err != nil {
		return nil, err
	}
	if s.opts.maxBackoff < s.opts.backoff {
		s.opts.maxBackoff = s.opts.backoff
	}
	s.mu.k = knowledge{port: map[*mpath.Path]scsi.PortInfo{}, tpg: map[uint16]scsi.TPG{}}
	return s, nil
}

func (s *aluaSATP) Name() string       { return SATPALUA }
func (s *aluaSATP) DefaultPSP() string { return nmp.PSPMRU }

// GroupFor is the ALUA grouping: AO paths in group 0, ANO in 1;
// transitioning paths stay usable in group 1 (their I/O is retried with
// backoff, the path is not failed); paths of unknown state (no RTPG yet)
// are usable in group 1; S, U and O paths carry no I/O.
func GroupFor(st scsi.State, known bool) (int, bool) {
	if !known {
		return 1, true
	}
	switch st {
	case scsi.ActiveOptimized:
		return 0, true
	case scsi.ActiveNonOptimized, scsi.Transitioning:
		return 1, true
	}
	return 0, false
}

// PathStateFor is the path state an access state means: AO, ANO and T
// paths are active; S and U paths standby (the port answers; the LU is
// not accessible through it — an SATP may activate an S group); O paths
// dead (the port is gone).
func PathStateFor(st scsi.State) mpath.PathState {
	switch st {
	case scsi.ActiveOptimized, scsi.ActiveNonOptimized, scsi.Transitioning:
		return mpath.StateActive
	case scsi.Standby, scsi.Unavailable:
		return mpath.StateStandby
	}
	return mpath.StateDead
}

func (s *aluaSATP) Group(p *mpath.Path) (int, bool) {
	s.mu.Lock()
	_, st, ok := s.mu.k.stateOf(p)
	s.mu.Unlock()
	return GroupFor(st, ok)
}

// Backoff is the wait before retrying the n-th (from 0) transitioning
// answer in a row: base doubled n times, at most max.
func Backoff(base, max time.Duration, n int) time.Duration {
	d := base
	for i := 0; i < n && d < max; i++ {
		d *= 2
	}
	return min(d, max)
}

// ClassifyALUA is the ALUA SATP's judgement of an I/O error, given how
// many transitioning answers came in a row before it. It is pure.
//
//	unit attention (06/xx/xx)   retry; re-inquire the groups (RTPG)
//	transitioning (02/04/0A)    retry after a doubling backoff; the path stays
//	standby, unavailable        the path goes standby; re-inquire; retry elsewhere
//	path failure                the path is dead; re-inquire through the others; retry
//	retryable, others           as VMW_SATP_DEFAULT_AA; with action_OnRetryErrors=on
//	                            a retryable error fails the path
func classifyALUA(err error, o aluaOpts, streak int) nmp.Verdict {
	if s, ok := ioerr.SenseOf(err); ok {
		switch {
		case s == ioerr.SenseAccessChanged:
			// Another host's STPG, or the array's own transition: with
			// alua_followover the next RTPG follows it.
			return nmp.Verdict{Class: ioerr.ClassRetryable, State: mpath.StateActive, Retry: true, Update: true,
				Event: EventAccessChanged, Reason: "unit attention " + s.String() + ": asymmetric access state changed; re-inquire target port groups"}
		case s.Key == ioerr.SenseUnitAttention:
			return nmp.Verdict{Class: ioerr.ClassRetryable, State: mpath.StateActive, Retry: true, Update: true,
				Reason: "unit attention " + s.String() + ": re-inquire target port groups"}
		case s == ioerr.SenseALUATransitioning:
			return nmp.Verdict{Class: ioerr.ClassRetryable, Retry: true, Update: streak == 0,
				Backoff: Backoff(o.backoff, o.maxBackoff, streak), Reason: "ALUA state transition in progress: retry after backoff"}
		case s == ioerr.SenseALUAStandby, s == ioerr.SenseALUAUnavailable:
			return nmp.Verdict{Class: ioerr.ClassNotReady, State: mpath.StateStandby, Retry: true, Update: true,
				Reason: "target port group not accessible (" + s.String() + ")"}
		case s.Key == ioerr.SenseMediumError:
			// The LU's medium, behind every port alike: the I/O fails, the
			// path and its group stay, whatever class the transport gave.
			return nmp.Verdict{Class: ioerr.ClassDeviceError, Reason: "medium error " + s.String()}
		}
	}
	c := nmp.ClassifyError(err)
	v := nmp.VerdictFor(c, o.backoff)
	switch c {
	case ioerr.ClassPathFailure, ioerr.ClassNotReady:
		v.Update = true
	case ioerr.ClassRetryable:
		if o.onRetry {
			v.State = mpath.StateDead
			v.Reason = "retryable error with action_OnRetryErrors=on: path failed"
		}
	}
	return v
}

func (s *aluaSATP) Classify(p *mpath.Path, op mpath.OpKind, err error) nmp.Verdict {
	streak := 0
	if se, ok := ioerr.SenseOf(err); ok && se == ioerr.SenseALUATransitioning {
		streak = int(s.tStreak.Add(1)) - 1
	}
	return classifyALUA(err, s.opts, streak)
}

// CheckedALUA turns a TUR result into a path state, knowing the path's
// group state (known=false: no RTPG yet). Standby ports pass TUR but stay
// standby; a port that passes although its group was last seen offline
// or unavailable is active until the next RTPG says otherwise (stale
// reports true).
func CheckedALUA(cur mpath.PathState, st scsi.State, known bool, probeErr error) (want mpath.PathState, stale bool, reason string) {
	if probeErr == nil {
		switch {
		case known && st == scsi.Standby:
			return mpath.StateStandby, false, "path checker: TUR passed; target port group standby"
		case known && (st == scsi.Offline || st == scsi.Unavailable):
			return mpath.StateActive, true, "path checker: TUR passed; target port group state stale, re-inquiring"
		}
		return mpath.StateActive, false, "path checker: TUR passed"
	}
	if se, ok := ioerr.SenseOf(probeErr); ok && se == ioerr.SenseALUATransitioning {
		return cur, false, "path checker: target port group transitioning"
	}
	switch nmp.ClassifyError(probeErr) {
	case ioerr.ClassNotReady:
		return mpath.StateStandby, false, "path checker: not ready: " + probeErr.Error()
	case ioerr.ClassRetryable:
		return cur, false, "path checker: busy"
	case ioerr.ClassConflict:
		if known && st == scsi.Standby {
			return mpath.StateStandby, false, nmp.CheckedConflict
		}
		return mpath.StateActive, false, nmp.CheckedConflict
	}
	return mpath.StateDead, false, "path checker: " + probeErr.Error()
}

func (s *aluaSATP) Checked(p *mpath.Path, probeErr error) (mpath.PathState, string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	id, st, ok := s.mu.k.stateOf(p)
	want, stale, reason := CheckedALUA(p.State(), st, ok, probeErr)
	if stale {
		delete(s.mu.k.tpg, id)
	}
	return want, reason
}

// PathALUA is one path as the change planner sees it.
type PathALUA struct {
	Path  *mpath.Path
	Cur   mpath.PathState
	TPG   uint16
	Known bool       // the path's group state is known
	Was   scsi.State // the group's state before this RTPG (WasKnown: it was known)
	WasOK bool
	State scsi.State
}

// PlanChanges turns the groups' states into path state changes. Dead
// paths are left to the path checker (only it revives them), disabled
// paths to the administrator. A path that stays active but moves between
// groups gets a change to its current state: a regroup request.
func PlanChanges(paths []PathALUA) []nmp.Change {
	var out []nmp.Change
	for _, p := range paths {
		if !p.Known || p.Cur == mpath.StateDisabled {
			continue
		}
		want := PathStateFor(p.State)
		if p.Cur == mpath.StateDead && want != mpath.StateDead {
			continue
		}
		if want != p.Cur {
			out = append(out, nmp.Change{Path: p.Path, State: want, Reason: "ALUA: target port group " + p.State.String()})
			continue
		}
		if want == mpath.StateActive && (!p.WasOK || p.Was != p.State) {
			g1, _ := GroupFor(p.Was, p.WasOK)
			g2, _ := GroupFor(p.State, true)
			if g1 != g2 {
				was := "unknown"
				if p.WasOK {
					was = p.Was.Abbrev()
				}
				out = append(out, nmp.Change{Path: p.Path, State: want, Reason: fmt.Sprintf("ALUA: target port group %s → %s (regroup)", was, p.State.Abbrev())})
			}
		}
	}
	return out
}

// PlanActivation decides which group to make active/optimized with an
// explicit STPG: only when explicit ALUA is supported and allowed and no
// path to an AO, ANO or transitioning group is active. It picks a standby
// group that has a path that is not dead, the PREF group first, then the
// lowest id.
func PlanActivation(tpgs map[uint16]scsi.TPG, paths []PathALUA, explicitSupported, explicitAllowed bool) (uint16, bool) {
	if !explicitSupported || !explicitAllowed {
		return 0, false
	}
	reach := map[uint16]bool{}
	for _, p := range paths {
		if !p.Known {
			continue
		}
		if p.Cur == mpath.StateActive {
			switch p.State {
			case scsi.ActiveOptimized, scsi.ActiveNonOptimized, scsi.Transitioning:
				return 0, false
			}
		}
		if p.Cur != mpath.StateDead && p.Cur != mpath.StateDisabled {
			reach[p.TPG] = true
		}
	}
	var cands []scsi.TPG
	for id, t := range tpgs {
		if t.State == scsi.Standby && reach[id] {
			cands = append(cands, t)
		}
	}
	if len(cands) == 0 {
		return 0, false
	}
	sort.Slice(cands, func(i, j int) bool {
		if cands[i].Pref != cands[j].Pref {
			return cands[i].Pref
		}
		return cands[i].ID < cands[j].ID
	})
	return cands[0].ID, true
}

// PlanFailback is alua_followover=off: when the PREF group is usable but
// not AO, ask for it to be AO again (with followover on, the SATP follows
// the states the array or another host chose).
func PlanFailback(tpgs map[uint16]scsi.TPG, paths []PathALUA, followover, explicitSupported, explicitAllowed bool) (uint16, bool) {
	if followover || !explicitSupported || !explicitAllowed {
		return 0, false
	}
	for id, t := range tpgs {
		if !t.Pref || t.State != scsi.ActiveNonOptimized {
			continue
		}
		for _, p := range paths {
			if p.Known && p.TPG == id && p.Cur == mpath.StateActive {
				return id, true
			}
		}
	}
	return 0, false
}

// snapshot returns the planner's view of paths (lock held).
func (s *aluaSATP) planLocked(paths []*mpath.Path, before map[uint16]scsi.TPG) []PathALUA {
	out := make([]PathALUA, 0, len(paths))
	for _, p := range paths {
		e := PathALUA{Path: p, Cur: p.State()}
		if pi, ok := s.mu.k.port[p]; ok {
			e.TPG = pi.TPG
			if t, ok := s.mu.k.tpg[pi.TPG]; ok {
				e.Known, e.State = true, t.State
			}
			if t, ok := before[pi.TPG]; ok {
				e.WasOK, e.Was = true, t.State
			}
		}
		out = append(out, e)
	}
	return out
}

// reportOrder is the order RTPG is tried in: active paths, then standby,
// then the rest (a dead path's controller may be back).
func reportOrder(paths []*mpath.Path) []*mpath.Path {
	rank := func(p *mpath.Path) int {
		switch p.State() {
		case mpath.StateActive:
			return 0
		case mpath.StateStandby:
			return 1
		case mpath.StateDisabled:
			return 3
		}
		return 2
	}
	out := append([]*mpath.Path(nil), paths...)
	sort.SliceStable(out, func(i, j int) bool { return rank(out[i]) < rank(out[j]) })
	return out
}

// refresh learns unknown ports (PortInfo) and the groups' states (RTPG
// through the first path that answers). It returns the states before.
func (s *aluaSATP) refresh(ctx context.Context, paths []*mpath.Path) (map[uint16]scsi.TPG, error) {
	s.mu.Lock()
	var unknown []*mpath.Path
	for _, p := range paths {
		if _, ok := s.mu.k.port[p]; !ok {
			unknown = append(unknown, p)
		}
	}
	s.mu.Unlock()
	learned := map[*mpath.Path]scsi.PortInfo{}
	for _, p := range unknown {
		if p.AdminOff() {
			continue
		}
		if r, ok := backends.As[scsi.Reporter](p.Backend); ok {
			if pi, err := r.PortInfo(ctx); err == nil {
				learned[p] = pi
			}
		}
	}
	var tpgs []scsi.TPG
	var lastErr error
	for _, p := range reportOrder(paths) {
		if p.AdminOff() {
			continue
		}
		r, ok := backends.As[scsi.Reporter](p.Backend)
		if !ok {
			continue
		}
		t, err := r.ReportTPGs(ctx)
		if err == nil {
			tpgs = t
			lastErr = nil
			break
		}
		lastErr = fmt.Errorf("path %s: %w", p.Name, err)
		if ctx.Err() != nil {
			break
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for p, pi := range learned {
		s.mu.k.port[p] = pi
		s.mu.k.tpgs |= pi.TPGS
	}
	before := make(map[uint16]scsi.TPG, len(s.mu.k.tpg))
	for id, t := range s.mu.k.tpg {
		before[id] = t
	}
	if tpgs == nil {
		if lastErr == nil {
			lastErr = errors.New("no path offers Report Target Port Groups")
		}
		return before, fmt.Errorf("%s: RTPG failed on every path: %w", SATPALUA, lastErr)
	}
	transitioning := false
	for _, t := range tpgs {
		s.mu.k.tpg[t.ID] = t
		transitioning = transitioning || t.State == scsi.Transitioning
	}
	if !transitioning {
		s.tStreak.Store(0)
	}
	return before, nil
}

// Update re-inquires the groups' states through the paths (RTPG) and
// returns the path state changes they mean.
//
// With alua_followover=off it also asks (STPG) for the PREF group to be
// active/optimized again when it is usable but non-optimized.
func (s *aluaSATP) Update(ctx context.Context, paths []*mpath.Path) ([]nmp.Change, error) {
	before, err := s.refresh(ctx, paths)
	s.mu.Lock()
	plan := s.planLocked(paths, before)
	id, back := PlanFailback(s.mu.k.tpg, plan, s.opts.followover, s.mu.k.tpgs&2 != 0, s.opts.explicitAllow)
	s.mu.Unlock()
	if err == nil && back {
		if serr := s.stpg(ctx, paths, id); serr == nil {
			_, err = s.refresh(ctx, paths)
			s.mu.Lock()
			plan = s.planLocked(paths, before)
			s.mu.Unlock()
		}
	}
	return PlanChanges(plan), err
}

// Activate makes a standby group active/optimized with STPG when explicit
// ALUA is supported and allowed and no active path to an AO or ANO group
// is left; then it re-inquires.
func (s *aluaSATP) Activate(ctx context.Context, paths []*mpath.Path) ([]nmp.Change, error) {
	before, err := s.refresh(ctx, paths)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	plan := s.planLocked(paths, before)
	id, ok := PlanActivation(s.mu.k.tpg, plan, s.mu.k.tpgs&2 != 0, s.opts.explicitAllow)
	s.mu.Unlock()
	if !ok {
		return PlanChanges(plan), nil
	}
	if err := s.stpg(ctx, paths, id); err != nil {
		return PlanChanges(plan), err
	}
	return s.Update(ctx, paths)
}

// stpg asks for group id to be active/optimized, through the group's own
// paths first, then any other that answers.
func (s *aluaSATP) stpg(ctx context.Context, paths []*mpath.Path, id uint16) error {
	var via []*mpath.Path
	s.mu.Lock()
	for _, p := range reportOrder(paths) {
		if pi, known := s.mu.k.port[p]; known && pi.TPG == id && p.State() != mpath.StateDead {
			via = append(via, p)
		}
	}
	for _, p := range reportOrder(paths) {
		if pi, known := s.mu.k.port[p]; !known || pi.TPG != id {
			via = append(via, p)
		}
	}
	s.mu.Unlock()
	var err error
	for _, p := range via {
		if p.AdminOff() {
			continue
		}
		st, has := backends.As[scsi.Setter](p.Backend)
		if !has {
			continue
		}
		err = st.SetTPGs(ctx, map[uint16]scsi.State{id: scsi.ActiveOptimized})
		if err == nil {
			return nil
		}
		if nmp.ClassifyError(err) == ioerr.ClassDeviceError || ctx.Err() != nil {
			break // the array refused: another path would not help
		}
	}
	if err == nil {
		err = errors.New("no path offers Set Target Port Groups")
	}
	return fmt.Errorf("%s: STPG to make group %d active/optimized: %w", SATPALUA, id, err)
}

// DecoratePath adds the path's target port group and its state to status.
func (s *aluaSATP) DecoratePath(p *mpath.Path, st *mpath.PathStatus) {
	s.mu.Lock()
	defer s.mu.Unlock()
	pi, ok := s.mu.k.port[p]
	if !ok {
		return
	}
	id := int(pi.TPG)
	st.TPG = &id
	if t, ok := s.mu.k.tpg[pi.TPG]; ok {
		st.ALUAState = t.State.Abbrev()
	}
}

// Config prints the SATP configuration the ESXi way.
func (s *aluaSATP) Config() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var b strings.Builder
	fmt.Fprintf(&b, "{implicit_support=%s; explicit_support=%s; explicit_allow=%s; alua_followover=%s; action_OnRetryErrors=%s; ",
		onOff(s.mu.k.tpgs&1 != 0), onOff(s.mu.k.tpgs&2 != 0), onOff(s.opts.explicitAllow), onOff(s.opts.followover), onOff(s.opts.onRetry))
	ids := make([]int, 0, len(s.mu.k.tpg))
	for id := range s.mu.k.tpg {
		ids = append(ids, int(id))
	}
	sort.Ints(ids)
	for _, id := range ids {
		fmt.Fprintf(&b, "{TPG_id=%d,TPG_state=%s}", id, s.mu.k.tpg[uint16(id)].State.Abbrev())
	}
	b.WriteString("}")
	return b.String()
}

// onOff prints a boolean option the way ESXi lists it.
func onOff(b bool) string {
	if b {
		return "on"
	}
	return "off"
}
