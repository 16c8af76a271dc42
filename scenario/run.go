package scenario

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/mpathfs/mpathfs/mpath"
	"github.com/mpathfs/mpathfs/nmp"
)

// Options tune a run.
type Options struct {
	// SampleInterval is how often status is sampled for per-path IOPS
	// (default 100ms; negative: never).
	SampleInterval time.Duration
	// Settle keeps watching this long after the last step (default 1s).
	Settle time.Duration
	// NoTrace does not follow the per-I/O trace (the report then has no
	// recovery times, latencies or error counts).
	NoTrace bool
	// KeepFaults leaves faults without a lifetime in place at the end
	// (by default the runner clears every fault it injected).
	KeepFaults bool
	// ContinueOnError goes on after a step failed (default: stop, clear
	// what was injected and return the error).
	ContinueOnError bool
	// Log, when set, gets one line per step as it runs.
	Log io.Writer
	// Exec starts an exec step's command (a cluster scenario's runner
	// sets it per host); wait returns its exit status. Run waits for
	// every command it started before it reports. Nil: exec steps fail.
	Exec func(ctx context.Context, argv []string) (wait func() error, err error)
}

// StepResult is what happened to one step.
type StepResult struct {
	Step
	// Offset is when it ran, from the start of the run.
	Offset time.Duration `json:"offset"`
	// IDs are the faults it injected, by path.
	IDs map[string]int `json:"ids,omitempty"`
	Err string         `json:"error,omitempty"`
}

// Sample is one status sample: IOPS per path since the previous sample
// (in Report.Paths order) and each path's state.
type Sample struct {
	At     time.Duration `json:"at"`
	IOPS   []float64     `json:"iops"`
	States []string      `json:"states"`
}

// timedRecord is a trace record with its start and end relative to the run.
type timedRecord struct {
	start, end time.Duration
	rec        nmp.TraceRecord
}

// run is the state of one Run.
type run struct {
	sc    *Scenario
	t     Target
	opts  Options
	start time.Time
	dev   string // the default device

	waits []func() error // exec'd commands still to wait for

	mu      sync.Mutex
	events  []mpath.Event
	records []timedRecord
	nrec    int
	samples []Sample
	paths   []string
	last    *sampleState
}

// Run plays a scenario against a target: it checks every path and device
// the scenario names, follows events and traces, samples status, runs the
// steps at their times and, at the end, clears the faults it injected and
// reports. Steps that fail stop the run unless opts.ContinueOnError; the
// report of what ran is returned with the error.
func Run(ctx context.Context, sc *Scenario, t Target, opts Options) (*Report, error) {
	if opts.SampleInterval == 0 {
		opts.SampleInterval = 100 * time.Millisecond
	}
	if opts.Settle == 0 {
		opts.Settle = time.Second
	}
	steps := sc.Expand()
	r := &run{sc: sc, t: t, opts: opts}
	devices, err := r.preflight(ctx, steps)
	if err != nil {
		return nil, err
	}

	wctx, stopWatch := context.WithCancel(ctx)
	var wg sync.WaitGroup
	evc, err := t.Events(wctx)
	if err != nil {
		stopWatch()
		return nil, fmt.Errorf("scenario: events: %w", err)
	}
	var traces []<-chan nmp.TraceRecord
	if !opts.NoTrace {
		for _, d := range devices {
			c, err := t.Trace(wctx, d)
			if err != nil {
				stopWatch()
				return nil, fmt.Errorf("scenario: trace of %s: %w", d, err)
			}
			traces = append(traces, c)
		}
	}
	r.start = time.Now()
	wg.Add(1)
	go func() {
		defer wg.Done()
		for ev := range evc {
			r.mu.Lock()
			r.events = append(r.events, ev)
			r.mu.Unlock()
		}
	}()
	for _, c := range traces {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for rec := range c {
				r.addRecord(rec)
			}
		}()
	}
	if opts.SampleInterval > 0 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r.sampler(wctx, devices)
		}()
	}

	results, runErr := r.play(ctx, steps)

	// Let the last effects show, then stop watching.
	end := r.start.Add(sc.Length() + opts.Settle)
	if runErr == nil || opts.ContinueOnError {
		sleepUntil(ctx, end)
	}
	for _, w := range r.waits {
		if err := w(); err != nil {
			runErr = errors.Join(runErr, err)
		}
	}
	r.cleanup(steps, results)
	if opts.SampleInterval > 0 {
		r.sample(wctx, devices) // a last sample
	}
	stopWatch()
	wg.Wait()
	rep := r.report(steps, results, time.Since(r.start))
	if runErr == nil && ctx.Err() != nil {
		runErr = ctx.Err()
	}
	return rep, runErr
}

// preflight resolves the default device and checks every name the
// scenario uses before anything is injected. It returns the devices to
// follow.
func (r *run) preflight(ctx context.Context, steps []Step) ([]string, error) {
	st, err := r.t.Status(ctx)
	if err != nil {
		return nil, fmt.Errorf("scenario: status: %w", err)
	}
	var names []string
	pathDev := map[string]string{}
	for _, d := range st.Devices {
		names = append(names, d.Name)
		for _, p := range d.Paths {
			pathDev[p.Name] = d.Name
			pathDev[p.URI] = d.Name
		}
	}
	r.dev = r.sc.Device
	if r.dev == "" && len(st.Devices) == 1 {
		r.dev = st.Devices[0].Name
	}
	var errs []error
	use := map[string]bool{}
	where := func(s Step) string { return fmt.Sprintf("%s:%d", r.sc.Name, s.Line) }
	for _, s := range steps {
		switch s.Kind {
		case StepInject, StepAdmin, StepClearPath:
			d, ok := pathDev[s.Path]
			if !ok {
				var all []string
				for _, d := range st.Devices {
					for _, p := range d.Paths {
						all = append(all, p.Name)
					}
				}
				errs = append(errs, fmt.Errorf("%s: no path %q (paths: %s)", where(s), s.Path, strings.Join(all, ", ")))
				continue
			}
			use[d] = true
		case StepInjectDevice, StepPolicy:
			d := s.Device
			if d == "" {
				d = r.dev
			}
			if d == "" {
				errs = append(errs, fmt.Errorf("%s: which device? the target has %d (%s): name it in the statement or with `device NAME`", where(s), len(names), strings.Join(names, ", ")))
				continue
			}
			if !slices.Contains(names, d) {
				errs = append(errs, fmt.Errorf("%s: no device %q (devices: %s)", where(s), d, strings.Join(names, ", ")))
				continue
			}
			use[d] = true
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	if r.dev != "" {
		use[r.dev] = true
	}
	var out []string
	for _, n := range names {
		if use[n] {
			out = append(out, n)
		}
	}
	return out, nil
}

func (r *run) addRecord(rec nmp.TraceRecord) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.nrec++
	if rec.Time == nil {
		if !strings.HasPrefix(rec.Status, "ok") || len(rec.Attempts) > 1 {
			r.records = append(r.records, timedRecord{start: -1, end: -1, rec: rec})
		}
		return
	}
	s := rec.Time.Sub(r.start)
	e := s
	if rec.LatencyUs != nil {
		e += time.Duration(*rec.LatencyUs * 1e3)
	}
	r.records = append(r.records, timedRecord{start: s, end: e, rec: rec})
}

func sleepUntil(ctx context.Context, t time.Time) bool {
	d := time.Until(t)
	if d <= 0 {
		return ctx.Err() == nil
	}
	tm := time.NewTimer(d)
	defer tm.Stop()
	select {
	case <-tm.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// play runs the steps at their times.
func (r *run) play(ctx context.Context, steps []Step) ([]StepResult, error) {
	results := make([]StepResult, len(steps))
	var errs []error
	for i, s := range steps {
		results[i].Step = s
		results[i].Offset = -1
	}
	for i, s := range steps {
		if !sleepUntil(ctx, r.start.Add(s.At)) {
			return results, ctx.Err()
		}
		res := &results[i]
		res.Offset = time.Since(r.start)
		err := r.exec(ctx, s, res, results)
		if r.opts.Log != nil {
			status := "ok"
			if err != nil {
				status = "error: " + err.Error()
			}
			fmt.Fprintf(r.opts.Log, "%8s  %s  %s\n", fmtOffset(res.Offset), s.What(), status)
		}
		if err != nil {
			res.Err = err.Error()
			err = fmt.Errorf("%s:%d: %s: %w", r.sc.Name, s.Line, s.What(), err)
			if !r.opts.ContinueOnError {
				return results, err
			}
			errs = append(errs, err)
		}
	}
	return results, errors.Join(errs...)
}

func (r *run) device(s Step) string {
	if s.Device != "" {
		return s.Device
	}
	return r.dev
}

func (r *run) exec(ctx context.Context, s Step, res *StepResult, results []StepResult) error {
	switch s.Kind {
	case StepInject:
		id, err := r.t.InjectFault(ctx, s.Path, s.Spec)
		if err != nil {
			return err
		}
		res.IDs = map[string]int{s.Path: id}
	case StepInjectDevice:
		paths, err := r.t.Paths(ctx, r.device(s))
		if err != nil {
			return err
		}
		res.IDs = map[string]int{}
		for _, p := range paths {
			id, err := r.t.InjectFault(ctx, p, s.Spec)
			if err != nil {
				return err
			}
			res.IDs[p] = id
		}
	case StepRestore:
		// The fault carries its lifetime and may have expired on its own
		// already; clear what is left.
		for p, id := range results[s.Ref].IDs {
			_ = r.t.ClearFault(ctx, p, id)
		}
	case StepClearPath:
		return r.t.ClearFault(ctx, s.Path, 0)
	case StepAdmin:
		return r.t.SetPathAdmin(ctx, s.Path, s.Admin == "on")
	case StepPolicy:
		return r.t.SetPolicy(ctx, r.device(s), s.PSP, s.Options)
	case StepArray:
		return r.t.Array(ctx, s.Array)
	case StepExec:
		if r.opts.Exec == nil {
			return errors.New("exec needs a cluster run: `mpathfs scenario run` of a file that declares its hosts")
		}
		wait, err := r.opts.Exec(ctx, s.Argv)
		if err != nil {
			return err
		}
		line := s.Line
		r.waits = append(r.waits, func() error {
			if err := wait(); err != nil {
				return fmt.Errorf("%s:%d: exec %s: %w", r.sc.Name, line, strings.Join(s.Argv, " "), err)
			}
			return nil
		})
	}
	return nil
}

// cleanup clears every fault the run injected that has not ended.
func (r *run) cleanup(steps []Step, results []StepResult) {
	if r.opts.KeepFaults {
		return
	}
	restored := map[int]bool{}
	for _, res := range results {
		if res.Kind == StepRestore && res.Offset >= 0 {
			restored[res.Ref] = true
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, res := range results {
		if restored[res.Index] {
			continue
		}
		for p, id := range res.IDs {
			_ = r.t.ClearFault(ctx, p, id)
		}
	}
}

func (r *run) sampler(ctx context.Context, devices []string) {
	tk := time.NewTicker(r.opts.SampleInterval)
	defer tk.Stop()
	r.sample(ctx, devices)
	for {
		select {
		case <-ctx.Done():
			return
		case <-tk.C:
			r.sample(ctx, devices)
		}
	}
}

// sampleState is the previous sample's counters.
type sampleState struct {
	at  time.Duration
	ios map[string]uint64
}

func (r *run) sample(ctx context.Context, devices []string) {
	st, err := r.t.Status(ctx)
	if err != nil {
		return
	}
	at := time.Since(r.start)
	ios := map[string]uint64{}
	states := map[string]string{}
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, d := range st.Devices {
		if !slices.Contains(devices, d.Name) {
			continue
		}
		for _, p := range d.Paths {
			if !slices.Contains(r.paths, p.Name) {
				r.paths = append(r.paths, p.Name)
			}
			ios[p.Name] = p.Reads + p.Writes
			s := p.State
			if p.HeldDown {
				s += ",held-down"
			}
			states[p.Name] = s
		}
	}
	smp := Sample{At: at}
	prev := r.last
	for _, p := range r.paths {
		var iops float64
		if prev != nil && at > prev.at {
			iops = float64(ios[p]-min(ios[p], prev.ios[p])) / (at - prev.at).Seconds()
		}
		smp.IOPS = append(smp.IOPS, iops)
		smp.States = append(smp.States, states[p])
	}
	if prev != nil {
		r.samples = append(r.samples, smp)
	}
	r.last = &sampleState{at: at, ios: ios}
}
