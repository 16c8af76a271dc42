package scenario

import (
	"fmt"
	"io"
	"math"
	"strings"
	"time"

	"github.com/mpathfs/mpathfs/ioerr"
	"github.com/mpathfs/mpathfs/mpath"
	"github.com/mpathfs/mpathfs/nmp"
	"github.com/mpathfs/mpathfs/svgplot"
)

// Report is what a run measured.
type Report struct {
	Scenario string        `json:"scenario"`
	Seed     uint64        `json:"seed"`
	Start    time.Time     `json:"start"`
	Length   time.Duration `json:"length"`
	// Paths are the sampled paths, in the order of Sample.IOPS.
	Paths   []string      `json:"paths"`
	Steps   []StepResult  `json:"steps"`
	Faults  []FaultResult `json:"faults"`
	Samples []Sample      `json:"samples,omitempty"`
	Events  []mpath.Event `json:"events,omitempty"`
	// TraceRecords is how many I/Os the trace showed; IOErrors how many of
	// them failed to the application.
	TraceRecords int `json:"trace_records"`
	IOErrors     int `json:"io_errors"`
	// PathIO is each path's I/Os (reads+writes) during the run.
	PathIO map[string]uint64 `json:"path_io,omitempty"`
}

// FaultResult is one fault (an injection or a path switched off) and what
// it did. Durations are offsets from the start of the run, or delays from
// the injection (Detect, Recover); -1 means "did not happen" or "unknown".
type FaultResult struct {
	Fault  int    `json:"fault"`
	Step   int    `json:"step"`
	Line   int    `json:"line"`
	Source string `json:"source"`
	// Target is the path, or "device NAME" for All-Paths-Down.
	Target string `json:"target"`
	// What is the fault in short: path-failure, retryable p=0.1, hang,
	// slow x5, admin off, all-paths-down…
	What     string        `json:"what"`
	Injected time.Duration `json:"injected"`
	Restored time.Duration `json:"restored"`
	// Detect is the delay to the path's state change (or APD entry).
	Detect     time.Duration `json:"detect"`
	DetectedBy string        `json:"detected_by,omitempty"`
	// Recover is the delay to the first I/O that completed on another path
	// after failing on this one (or, if none did, the first good I/O
	// elsewhere after detection; after APD, the first good I/O at all).
	Recover time.Duration `json:"recover"`
	// MaxLatency is the worst I/O latency while the fault was active.
	MaxLatency time.Duration `json:"max_latency"`
	// Errors is how many I/Os failed to the application while it was
	// active; ErrorsExpected when the fault is meant to surface them
	// (device errors, PDL, All-Paths-Down).
	Errors         int  `json:"errors"`
	ErrorsExpected bool `json:"errors_expected"`
}

// Problems lists what went wrong: failed steps, and I/O errors surfaced
// while another path was alive.
func (r *Report) Problems() []string {
	var out []string
	for _, s := range r.Steps {
		if s.Err != "" {
			out = append(out, fmt.Sprintf("step %d (line %d, %s) failed: %s", s.Index, s.Line, s.What(), s.Err))
		}
	}
	for _, f := range r.Faults {
		if f.Errors > 0 && !f.ErrorsExpected {
			out = append(out, fmt.Sprintf("F%d (%s on %s): %d I/O errors reached the application while other paths were alive", f.Fault, f.What, f.Target, f.Errors))
		}
	}
	return out
}

func (r *run) report(steps []Step, results []StepResult, length time.Duration) *Report {
	r.mu.Lock()
	defer r.mu.Unlock()
	rep := &Report{
		Scenario: r.sc.Name, Seed: r.sc.Seed, Start: r.start, Length: length,
		Paths: r.paths, Steps: results, Samples: r.samples, Events: r.events,
		TraceRecords: r.nrec, PathIO: map[string]uint64{},
	}
	for _, s := range r.samples {
		for i, p := range r.paths {
			rep.PathIO[p] += uint64(math.Round(s.IOPS[i] * r.opts.SampleInterval.Seconds()))
		}
	}
	for _, tr := range r.records {
		if !strings.HasPrefix(tr.rec.Status, "ok") {
			rep.IOErrors++
		}
	}
	restoredAt := map[int]time.Duration{}
	for _, res := range results {
		if res.Kind == StepRestore && res.Offset >= 0 {
			restoredAt[res.Ref] = res.Offset
		}
	}
	for _, res := range results {
		if res.Fault == 0 || res.Offset < 0 || res.Err != "" {
			continue
		}
		dev := ""
		f := FaultResult{Fault: res.Fault, Step: res.Index, Line: res.Line, Source: res.Source,
			Target: res.Path, Injected: res.Offset, Restored: -1, Detect: -1, Recover: -1, MaxLatency: -1}
		if t, ok := restoredAt[res.Index]; ok {
			f.Restored = t
		}
		// A path switched off is restored by the next "on" of it.
		if res.Kind == StepAdmin {
			f.What = "admin off"
			for _, o := range results[res.Index+1:] {
				if o.Kind == StepAdmin && o.Path == res.Path && o.Admin == "on" && o.Offset >= 0 {
					f.Restored = o.Offset
					break
				}
			}
		} else if res.Kind == StepArray {
			f.What = "controller fail"
			f.Target = fmt.Sprintf("array %s controller %s", res.Array.Array, res.Array.Controller)
			dev = "array"
			for _, o := range results[res.Index+1:] {
				if o.Kind == StepArray && o.Array.Action == "controller-restore" && o.Array.Array == res.Array.Array &&
					o.Array.Controller == res.Array.Controller && o.Offset >= 0 {
					f.Restored = o.Offset
					break
				}
			}
		} else {
			f.What = describe(res.Step)
		}
		if res.Kind == StepInjectDevice {
			dev = r.device(res.Step)
			f.Target = "device " + dev
			f.ErrorsExpected = true
		}
		if c, err := ioerr.ParseClass(res.Spec.Error); err == nil && (c == ioerr.ClassDeviceError || c == ioerr.ClassPermanentLoss) {
			f.ErrorsExpected = true
		}
		end := f.Restored
		if end < 0 {
			end = length
		}
		r.detect(&f, res, dev, end)
		r.measure(&f, res, dev, end)
		rep.Faults = append(rep.Faults, f)
	}
	return rep
}

// describe names a fault in a few words.
func describe(s Step) string {
	sp := s.Spec
	var parts []string
	switch {
	case s.Kind == StepInjectDevice:
		parts = append(parts, "all-paths-down")
	case sp.Hang:
		parts = append(parts, "hang")
	case sp.LandLate > 0:
		d := "land-late " + sp.LandLate.String()
		if sp.Silent {
			d += " silent"
		}
		parts = append(parts, d)
	case sp.Corrupt != "":
		parts = append(parts, "corrupt "+sp.Corrupt)
	case sp.Error != "":
		parts = append(parts, sp.Error)
	case sp.SlowFactor > 1:
		parts = append(parts, fmt.Sprintf("slow x%g", sp.SlowFactor))
	case sp.Latency > 0:
		parts = append(parts, "latency "+sp.Latency.String())
	}
	if sp.Error != "" && sp.SlowFactor > 1 {
		parts = append(parts, fmt.Sprintf("slow x%g", sp.SlowFactor))
	}
	if len(sp.Ops) > 0 {
		parts = append(parts, "op "+strings.Join(sp.Ops, ","))
	}
	if sp.Probability > 0 {
		parts = append(parts, fmt.Sprintf("p=%g", sp.Probability))
	}
	if sp.Length > 0 {
		parts = append(parts, fmt.Sprintf("range %d:%d", sp.Offset, sp.Length))
	}
	return strings.Join(parts, " ")
}

func (r *run) detect(f *FaultResult, res StepResult, dev string, end time.Duration) {
	for _, ev := range r.events {
		at := ev.Time.Sub(r.start)
		if at < f.Injected-time.Millisecond || at > end {
			continue
		}
		switch {
		case dev == "array" && ev.Kind == "path-state" && ev.From == "active":
			f.DetectedBy = ev.Path + " " + ev.From + "→" + ev.To
		case dev != "" && ev.Kind == "apd-enter" && ev.Device == dev:
			f.DetectedBy = "apd-enter"
		case dev == "" && ev.Kind == "path-state" && ev.Path == res.Path && ev.From == "active":
			f.DetectedBy = ev.From + "→" + ev.To
		default:
			continue
		}
		f.Detect = max(0, at-f.Injected)
		return
	}
}

func lastPath(a []nmp.TraceAttempt) string {
	if len(a) == 0 {
		return ""
	}
	return a[len(a)-1].Path
}

func (r *run) measure(f *FaultResult, res StepResult, dev string, end time.Duration) {
	grace := 500 * time.Millisecond
	var firstRetry, firstAfterDetect, firstAfterRestore time.Duration = -1, -1, -1
	for _, tr := range r.records {
		if tr.start < 0 {
			continue
		}
		if tr.end < f.Injected || tr.start > end+grace {
			continue
		}
		rec := tr.rec
		ok := strings.HasPrefix(rec.Status, "ok")
		if tr.start >= f.Injected && tr.start <= end {
			if lat := tr.end - tr.start; lat > f.MaxLatency {
				f.MaxLatency = lat
			}
		}
		if !ok {
			if tr.end <= end+grace {
				f.Errors++
			}
			continue
		}
		last := lastPath(rec.Attempts)
		if dev != "" && dev != "array" {
			if f.Restored >= 0 && tr.end >= f.Restored && (firstAfterRestore < 0 || tr.end < firstAfterRestore) {
				firstAfterRestore = tr.end
			}
			continue
		}
		if last == res.Path {
			continue
		}
		for _, a := range rec.Attempts[:len(rec.Attempts)-1] {
			if a.Path == res.Path && (firstRetry < 0 || tr.end < firstRetry) {
				firstRetry = tr.end
			}
		}
		if f.Detect >= 0 && tr.end >= f.Injected+f.Detect && (firstAfterDetect < 0 || tr.end < firstAfterDetect) {
			firstAfterDetect = tr.end
		}
	}
	switch {
	case dev != "" && dev != "array" && firstAfterRestore >= 0:
		f.Recover = firstAfterRestore - f.Injected
	case firstRetry >= 0:
		f.Recover = firstRetry - f.Injected
	case firstAfterDetect >= 0:
		f.Recover = firstAfterDetect - f.Injected
	}
}

func fmtDelay(d time.Duration) string {
	switch {
	case d < 0:
		return "—"
	case d < time.Millisecond:
		return fmt.Sprintf("%dµs", d.Microseconds())
	case d < time.Second:
		return fmt.Sprintf("%.1fms", float64(d.Microseconds())/1e3)
	}
	return fmt.Sprintf("%.3fs", d.Seconds())
}

// Markdown writes the report as Markdown: a summary, the fault table, the
// steps, per-path I/O and the path state changes.
func (r *Report) Markdown(w io.Writer) error {
	var b strings.Builder
	fmt.Fprintf(&b, "# Scenario report: %s\n\n", r.Scenario)
	fmt.Fprintf(&b, "- seed %d; started %s; ran %.1fs; %d steps, %d faults\n", r.Seed, r.Start.UTC().Format(time.RFC3339), r.Length.Seconds(), len(r.Steps), len(r.Faults))
	fmt.Fprintf(&b, "- trace: %d I/Os seen, %d failed to the application\n", r.TraceRecords, r.IOErrors)
	if p := r.Problems(); len(p) > 0 {
		fmt.Fprintf(&b, "- **result: FAIL**\n")
		for _, s := range p {
			fmt.Fprintf(&b, "  - %s\n", s)
		}
	} else {
		fmt.Fprintf(&b, "- result: PASS (every step ran; no I/O error reached the application while a path was alive)\n")
	}
	b.WriteString("\n## Faults\n\n")
	b.WriteString("Times are from the start of the run; *detected* is the delay to the path's state change (or APD entry), *first good I/O elsewhere* the delay to the first I/O that completed on another path after failing on this one (or the first after detection; after APD, the first after restore), *max latency* the worst I/O latency while the fault was active.\n\n")
	b.WriteString("| # | line | injected | fault | target | detected | first good I/O elsewhere | max latency | I/O errors | restored |\n")
	b.WriteString("|---|---:|---:|---|---|---|---:|---:|---:|---:|\n")
	for _, f := range r.Faults {
		det := fmtDelay(f.Detect)
		if f.DetectedBy != "" {
			det += " (" + f.DetectedBy + ")"
		}
		errs := fmt.Sprint(f.Errors)
		if f.Errors > 0 && !f.ErrorsExpected {
			errs = "**" + errs + "**"
		} else if f.ErrorsExpected {
			errs += " (expected)"
		}
		rest := "end of run"
		if f.Restored >= 0 {
			rest = fmtOffset(f.Restored)
		}
		fmt.Fprintf(&b, "| F%d | %d | %s | %s | %s | %s | %s | %s | %s | %s |\n", f.Fault, f.Line, fmtOffset(f.Injected),
			mdEscape(f.What), mdEscape(f.Target), det, fmtDelay(f.Recover), fmtDelay(f.MaxLatency), errs, rest)
	}
	b.WriteString("\n## Steps\n\n| step | at | ran at | what | result |\n|---:|---:|---:|---|---|\n")
	for _, s := range r.Steps {
		ran, result := "—", "not run"
		if s.Offset >= 0 {
			ran, result = fmtOffset(s.Offset), "ok"
		}
		if s.Err != "" {
			result = "error: " + s.Err
		}
		fmt.Fprintf(&b, "| %d | %s | %s | %s | %s |\n", s.Index, fmtOffset(s.At), ran, mdEscape(s.What()), mdEscape(result))
	}
	if len(r.Paths) > 0 {
		var total uint64
		for _, p := range r.Paths {
			total += r.PathIO[p]
		}
		b.WriteString("\n## Path I/O (from status samples)\n\n| path | I/Os | share | state at the end |\n|---|---:|---:|---|\n")
		for i, p := range r.Paths {
			share := 0.0
			if total > 0 {
				share = 100 * float64(r.PathIO[p]) / float64(total)
			}
			state := ""
			if n := len(r.Samples); n > 0 {
				state = r.Samples[n-1].States[i]
			}
			fmt.Fprintf(&b, "| %s | %d | %.1f%% | %s |\n", p, r.PathIO[p], share, state)
		}
	}
	b.WriteString("\n## Path events\n\n| at | event | path | change | reason |\n|---:|---|---|---|---|\n")
	n := 0
	for _, ev := range r.Events {
		if ev.Kind == "fault" {
			continue
		}
		if n++; n > 200 {
			fmt.Fprintf(&b, "| | … | | | %d more |\n", len(r.Events)-200)
			break
		}
		change := ""
		if ev.From != "" || ev.To != "" {
			change = ev.From + " → " + ev.To
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s |\n", fmtOffset(ev.Time.Sub(r.Start)), ev.Kind, ev.Path, mdEscape(change), mdEscape(ev.Reason))
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func mdEscape(s string) string {
	return strings.NewReplacer("|", `\|`, "\n", " ").Replace(s)
}

// SVG writes a plot of per-path IOPS over time with the faults marked as
// shaded spans (a path switched off in grey), drawn with svgplot.
func (r *Report) SVG(w io.Writer) error {
	length := r.Length.Seconds()
	if length <= 0 {
		length = 1
	}
	panel := svgplot.Panel{
		Height: 310, XMin: 0, XMax: length,
		XLabel: "time since start of run", YLabel: "IOPS (reads + writes)",
		XFormat: func(t float64) string { return fmt.Sprintf("%gs", math.Round(t*1000)/1000) },
	}
	for i, p := range r.Paths {
		s := svgplot.Series{Name: p, Color: svgplot.Color(i), Width: 1.5}
		for _, smp := range r.Samples {
			if i < len(smp.IOPS) {
				s.Points = append(s.Points, svgplot.Point{X: smp.At.Seconds(), Y: smp.IOPS[i]})
			}
		}
		panel.Series = append(panel.Series, s)
	}
	for _, f := range r.Faults {
		end := f.Restored
		if end < 0 {
			end = r.Length
		}
		color := faultColor
		if f.What == "admin off" {
			color = offColor
		}
		panel.Spans = append(panel.Spans, svgplot.Span{
			From: f.Injected.Seconds(), To: end.Seconds(), Color: color,
			Label: fmt.Sprintf("F%d", f.Fault), Title: fmt.Sprintf("F%d %s on %s", f.Fault, f.What, f.Target),
		})
	}
	panel.Legend = []svgplot.LegendEntry{
		{Name: "fault active", Color: faultColor, Swatch: true},
		{Name: "path off", Color: offColor, Swatch: true},
	}
	fig := svgplot.Figure{
		Title:  fmt.Sprintf("%s: IOPS per path (seed %d)", r.Scenario, r.Seed),
		Panels: []svgplot.Panel{panel},
	}
	return fig.Render(w)
}

const (
	faultColor = "#d62728"
	offColor   = "#7f7f7f"
)
