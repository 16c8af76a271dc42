package scenario

import (
	"fmt"
	"io"
	"maps"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/mpathfs/mpathfs/backends/fault"
)

// StepKind is what a step does.
type StepKind string

const (
	// StepInject injects Spec on Path.
	StepInject StepKind = "inject"
	// StepInjectDevice injects Spec on every path of Device (All-Paths-Down).
	StepInjectDevice StepKind = "inject-device"
	// StepRestore ends the fault of step Ref.
	StepRestore StepKind = "restore"
	// StepClearPath clears every fault of Path.
	StepClearPath StepKind = "clear-path"
	// StepAdmin switches Path on or off.
	StepAdmin StepKind = "admin"
	// StepPolicy sets Device's PSP.
	StepPolicy StepKind = "policy"
	// StepArray sends Array to the array endpoint.
	StepArray StepKind = "array"
	// StepExec starts Argv on the host (Options.Exec).
	StepExec StepKind = "exec"
)

// Step is one timed operation of an expanded scenario.
type Step struct {
	Index int
	At    time.Duration
	Kind  StepKind
	Line  int // the statement's line
	Path  string
	// Device is the device of inject-device and policy ("" = the default).
	Device  string
	Spec    fault.Spec
	Admin   string
	PSP     string
	Options map[string]string
	Array   ArrayRequest
	// Host is the host of a cluster scenario's step ("" for array steps
	// and in a one-mount scenario).
	Host string `json:",omitempty"`
	// Argv is the command of exec.
	Argv []string `json:",omitempty"`
	// Ref is the index of the step a restore ends (-1 for other kinds).
	Ref int
	// Fault numbers the faults (inject, inject-device, admin off,
	// controller-fail) from 1 in
	// time order; 0 for other steps.
	Fault int
	// Source is the statement's text.
	Source string
}

// StepSeed is the seed of the fault a step injects: splitmix64 of the
// scenario's seed and the step's index.
func StepSeed(seed uint64, index int) uint64 {
	z := seed + uint64(index+1)*0x9e3779b97f4a7c15
	z = (z ^ z>>30) * 0xbf58476d1ce4e5b9
	z = (z ^ z>>27) * 0x94d049bb133111eb
	z ^= z >> 31
	if z == 0 {
		z = 1 // 0 means "derive it" to the fault package
	}
	return z
}

// Expand turns the scenario into its timeline: steps sorted by time
// (statements at the same time in file order), faults seeded from the
// scenario's seed and their step's index.
func (sc *Scenario) Expand() []Step {
	type pending struct {
		s   Step
		key int // the inject a restore refers to, by creation order
		ord int
	}
	var ps []pending
	add := func(s Step, ref int) int {
		ps = append(ps, pending{s: s, key: ref, ord: len(ps)})
		return len(ps) - 1
	}
	for _, st := range sc.Stmts {
		base := Step{At: st.At, Line: st.Line, Path: st.Path, Device: st.Device, Ref: -1, Source: st.Text, Host: st.Host}
		switch st.Action {
		case "fail", "hang", "land-late", "corrupt", "slow", "all-paths-down":
			s := base
			s.Kind, s.Spec = StepInject, st.Spec
			s.Spec.Ops = slices.Clone(st.Spec.Ops)
			if st.Action == "all-paths-down" {
				s.Kind, s.Path = StepInjectDevice, ""
				if s.Device == "" {
					s.Device = sc.Device
				}
			}
			i := add(s, -1)
			if st.Lifetime > 0 {
				r := base
				r.Kind, r.At, r.Path, r.Device = StepRestore, st.At+st.Lifetime, s.Path, s.Device
				add(r, i)
			}
		case "flap":
			for k := 0; time.Duration(k)*st.Period < st.Span; k += 2 {
				s := base
				s.Kind = StepInject
				s.At = st.At + time.Duration(k)*st.Period
				life := min(st.Period, st.Span-time.Duration(k)*st.Period)
				s.Spec = fault.Spec{Error: "path-failure", Duration: life}
				i := add(s, -1)
				r := base
				r.Kind, r.At = StepRestore, s.At+life
				add(r, i)
			}
		case "path":
			s := base
			s.Kind, s.Admin = StepAdmin, st.Admin
			add(s, -1)
		case "clear":
			s := base
			s.Kind = StepClearPath
			add(s, -1)
		case "policy":
			s := base
			s.Kind, s.PSP, s.Options = StepPolicy, st.PSP, maps.Clone(st.Options)
			if s.Device == "" {
				s.Device = sc.Device
			}
			add(s, -1)
		case "array":
			s := base
			s.Kind, s.Array = StepArray, st.Array
			add(s, -1)
		case "exec":
			s := base
			s.Kind, s.Argv = StepExec, slices.Clone(st.Argv)
			add(s, -1)
		}
	}
	sort.SliceStable(ps, func(i, j int) bool { return ps[i].s.At < ps[j].s.At })
	pos := make([]int, len(ps)) // creation order -> sorted index
	for i, p := range ps {
		pos[p.ord] = i
	}
	out := make([]Step, len(ps))
	nfault := 0
	for i, p := range ps {
		s := p.s
		s.Index = i
		if p.key >= 0 {
			s.Ref = pos[p.key]
		}
		switch {
		case s.Kind == StepInject || s.Kind == StepInjectDevice:
			if s.Spec.Seed == 0 {
				s.Spec.Seed = StepSeed(sc.Seed, i)
			}
			nfault++
			s.Fault = nfault
		case s.Kind == StepAdmin && s.Admin == "off",
			s.Kind == StepArray && s.Array.Action == "controller-fail":
			nfault++
			s.Fault = nfault
		}
		out[i] = s
	}
	return out
}

// Length is when the run ends: the last step or End, whichever is later.
func (sc *Scenario) Length() time.Duration {
	end := sc.End
	for _, s := range sc.Expand() {
		end = max(end, s.At)
	}
	return end
}

// What describes a step in a few words (the timeline and the report).
func (s Step) What() string {
	switch s.Kind {
	case StepInject:
		return fmt.Sprintf("inject on %s: %s", s.Path, s.Spec.String())
	case StepInjectDevice:
		dev := s.Device
		if dev == "" {
			dev = "the device"
		}
		return fmt.Sprintf("all-paths-down on %s: %s", dev, s.Spec.String())
	case StepRestore:
		return fmt.Sprintf("restore fault of step %d", s.Ref)
	case StepClearPath:
		return "clear every fault of " + s.Path
	case StepAdmin:
		return fmt.Sprintf("path %s %s", s.Path, s.Admin)
	case StepPolicy:
		dev := s.Device
		if dev == "" {
			dev = "the device"
		}
		var opts []string
		for _, k := range slices.Sorted(maps.Keys(s.Options)) {
			opts = append(opts, k+"="+s.Options[k])
		}
		return strings.TrimSpace(fmt.Sprintf("policy %s psp %s %s", dev, s.PSP, strings.Join(opts, " ")))
	case StepExec:
		return "exec " + strings.Join(s.Argv, " ")
	case StepArray:
		a := s.Array
		switch a.Action {
		case "tpg-state":
			return fmt.Sprintf("array %s tpg %d state %s", a.Array, *a.TPG, a.State)
		default:
			return fmt.Sprintf("array %s %s %s", a.Array, a.Action, a.Controller)
		}
	}
	return string(s.Kind)
}

// PrintTimeline writes the expanded timeline, one step a line.
func PrintTimeline(w io.Writer, sc *Scenario) {
	steps := sc.Expand()
	fmt.Fprintf(w, "%s: seed %d, %d steps, %v\n", sc.Name, sc.Seed, len(steps), sc.Length())
	for _, s := range steps {
		f := "   "
		if s.Fault > 0 {
			f = fmt.Sprintf("F%-2d", s.Fault)
		}
		what := s.What()
		if s.Host != "" {
			what = "host " + s.Host + ": " + what
		}
		fmt.Fprintf(w, "%4d %10s %s %-14s %s  (line %d)\n", s.Index, fmtOffset(s.At), f, s.Kind, what, s.Line)
	}
}

func fmtOffset(d time.Duration) string {
	return fmt.Sprintf("%.3fs", d.Seconds())
}
