package nmp

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/mpathfs/mpathfs/internal/transcript"
	"github.com/mpathfs/mpathfs/ioerr"
	"github.com/mpathfs/mpathfs/mpath"
)

// The decider's transcripts: testdata/decide/*.txt feed events to the pure
// decision function (decide.go) and list the actions it returns, with no
// device, no goroutine and no clock but the story's. The story applies the
// actions the way the owner does (states, PDL, the administrator's switch,
// views), so each event sees the states the previous ones left. Rewrite
// with:
//
//	go test ./nmp -run TestDecideTranscripts -rewrite
//
// Commands:
//
//	paths N [satp=NAME|activator|grouped] [check=D] [flap-threshold=N] [flap-window=D] [hold-down=D]
//	        [failback=MODE] [no-path-retry=V] [apd=D] [unprobed]
//	                          a decider over paths p1…pN, all active (unprobed:
//	                          all unknown, as NewDevice makes them before its
//	                          first probe)
//	io-failed PATH CLASS [op=OP]   an I/O failed on PATH with an error of CLASS
//	probed PATH=ok|CLASS…     a checker round's probe results
//	checked [sched] [took=D]  the round is over (sched: one the decider started)
//	changes PATH=STATE…       an SATP asks for state changes
//	activated [failed]        an activation returned
//	admin PATH on|off [probe=CLASS]
//	fail PATH                 hot removal
//	add NAME                  a path joins (unknown until a probed judges it)
//	remove NAME               a path leaves
//	tick                      the check timer fired
//	close                     the device closes
//	advance D                 the story's clock moves on
//	switch PATH               the administrator's path switch
//	queue on|off              queueing restored or disabled
//	wait-limit                how long an I/O would wait with no path
//
// After each command: the actions, one a line, then the paths' states
// (marks: pdl, off, held for flap damping, fb-held waiting for failback).
func TestDecideTranscripts(t *testing.T) {
	for _, file := range transcript.Files(t, "testdata/decide/*.txt", 4) {
		t.Run(strings.TrimSuffix(filepath.Base(file), ".txt"), func(t *testing.T) {
			ds := &decideStory{t: t, now: time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)}
			transcript.Run(t, file, ds.run)
		})
	}
}

type decideStory struct {
	t     *testing.T
	now   time.Time
	cfg   mpath.DeviceConfig
	dec   *decider
	start time.Time
	out   []string
}

func (ds *decideStory) path(name string) *mpath.Path {
	p := findPath(ds.dec.paths, name)
	if p == nil {
		ds.t.Fatalf("no path %s", name)
	}
	return p
}

// probeErr is nil for "ok", else an error of the class named.
func (ds *decideStory) probeErr(v string) error {
	if v == "ok" || v == "" {
		return nil
	}
	c, err := ioerr.ParseClass(v)
	require.NoError(ds.t, err)
	return &ioerr.Error{Class: c, Op: "probe", Err: errors.New("test fault")}
}

func (ds *decideStory) run(cmd string) []string {
	ds.out = nil
	f := strings.Fields(cmd)
	args := f[1:]
	if f[0] != "paths" && ds.dec == nil {
		ds.t.Fatalf("%q before paths", cmd)
	}
	ev := event{now: ds.now}
	switch f[0] {
	case "paths":
		ds.newDecider(args)
		return ds.finish(nil)
	case "advance":
		d, err := time.ParseDuration(args[0])
		require.NoError(ds.t, err)
		ds.now = ds.now.Add(d)
		return ds.finish(nil)
	case "io-failed":
		p := ds.path(args[0])
		c, err := ioerr.ParseClass(args[1])
		require.NoError(ds.t, err)
		ev.kind, ev.path, ev.op = evIOFailed, p, mpath.OpWrite
		for _, a := range args[2:] {
			if v, ok := strings.CutPrefix(a, "op="); ok && v == "read" {
				ev.op = mpath.OpRead
			}
		}
		ev.err = &ioerr.Error{Class: c, Op: ev.op.String(), Path: p.Name, Err: errors.New("test fault")}
		ev.verdict = ds.dec.satp.Classify(p, ev.op, ev.err)
	case "probed":
		ev.kind = evProbed
		for _, a := range args {
			k, v, _ := strings.Cut(a, "=")
			ev.probes = append(ev.probes, probeResult{p: ds.path(k), err: ds.probeErr(v)})
		}
	case "checked":
		ev.kind, ev.start = evChecked, ds.now
		for _, a := range args {
			if a == "sched" {
				ev.sched = true
			}
			if v, ok := strings.CutPrefix(a, "took="); ok {
				d, err := time.ParseDuration(v)
				require.NoError(ds.t, err)
				ev.start = ds.now.Add(-d)
			}
		}
	case "changes", "activated":
		ev.kind = evChanges
		if f[0] == "activated" {
			ev.kind = evActivated
		}
		for _, a := range args {
			if a == "failed" {
				ev.err = errors.New("test: activation refused")
				continue
			}
			k, v, _ := strings.Cut(a, "=")
			st, err := mpath.ParsePathState(v)
			require.NoError(ds.t, err)
			ev.changes = append(ev.changes, Change{Path: ds.path(k), State: st, Reason: "test: satp says " + v})
		}
	case "admin":
		ev.kind, ev.path, ev.on = evAdmin, ds.path(args[0]), args[1] == "on"
		for _, a := range args[2:] {
			if v, ok := strings.CutPrefix(a, "probe="); ok {
				ev.err = ds.probeErr(v)
			}
		}
	case "fail":
		ev.kind, ev.path, ev.reason = evFail, ds.path(args[0]), "test: hot removed"
	case "add":
		ev.kind = evAdd
		ev.path = &mpath.Path{Name: args[0], URI: "fake://" + args[0]}
		if len(args) > 1 {
			ds.t.Fatalf("%q: add takes a name only (a probe's verdict is a probed line)", cmd)
		}
	case "remove":
		ev.kind, ev.name = evRemove, args[0]
	case "tick":
		ev.kind = evTick
	case "close":
		ev.kind = evClose
	case "switch":
		ev.kind, ev.path = evSwitch, ds.path(args[0])
	case "queue":
		ev.kind, ev.on = evQueue, args[0] == "on"
	case "wait-limit":
		limit, forever, why := ds.dec.waitLimit()
		if forever {
			ds.out = append(ds.out, "wait: forever ("+why+")")
		} else {
			ds.out = append(ds.out, fmt.Sprintf("wait: %v (%s)", limit, why))
		}
		return ds.finish(nil)
	default:
		ds.t.Fatalf("unknown command %q", cmd)
	}
	acts, res := ds.dec.step(ev)
	if res.err != nil {
		ds.out = append(ds.out, "error: "+res.err.Error())
	}
	return ds.finish(acts)
}

// finish applies the actions as the owner does, listing them, then prints
// the state line.
func (ds *decideStory) finish(acts []action) []string {
	ds.apply(acts)
	var b strings.Builder
	fmt.Fprintf(&b, "t=%v:", ds.now.Sub(ds.start))
	for _, p := range ds.dec.paths {
		fmt.Fprintf(&b, " %s=%s", p.Name, p.State())
		var marks []string
		if p.PDL() {
			marks = append(marks, "pdl")
		}
		if p.AdminOff() {
			marks = append(marks, "off")
		}
		if ds.dec.held(p, ds.now) {
			marks = append(marks, "held")
		}
		if ds.dec.isHeld(p) {
			marks = append(marks, "fb-held")
		}
		if len(marks) > 0 {
			b.WriteString("(" + strings.Join(marks, ",") + ")")
		}
	}
	if !ds.dec.apdSince.IsZero() {
		b.WriteString(" APD")
	}
	if ds.dec.activating {
		b.WriteString(" activating")
	}
	if ds.dec.checking {
		b.WriteString(" checking")
	}
	ds.out = append(ds.out, b.String())
	return ds.out
}

func (ds *decideStory) apply(acts []action) {
	for _, a := range acts {
		switch a.kind {
		case actSetState:
			a.path.SetState(a.to, a.reason, ds.now)
		case actSetPDL:
			a.path.SetPDL(a.on)
		case actSetAdmin:
			a.path.SetAdminOff(a.on)
		case actView:
			v, more := ds.dec.view(ds.now)
			ds.out = append(ds.out, action{kind: actView, view: v}.String())
			ds.apply(more)
			continue
		}
		ds.out = append(ds.out, a.String())
	}
}

func (ds *decideStory) newDecider(args []string) {
	n, err := strconv.Atoi(args[0])
	require.NoError(ds.t, err)
	ds.cfg = mpath.DeviceConfig{Name: "dev0"}
	satpName := SATPDefaultAA
	unprobed := false
	for _, a := range args[1:] {
		k, v, _ := strings.Cut(a, "=")
		dur := func() time.Duration {
			d, err := time.ParseDuration(v)
			require.NoError(ds.t, err)
			return d
		}
		switch k {
		case "satp":
			satpName = v
		case "check":
			ds.cfg.CheckInterval = dur()
		case "flap-threshold":
			ds.cfg.FlapThreshold, _ = strconv.Atoi(v)
		case "flap-window":
			ds.cfg.FlapWindow = dur()
		case "hold-down":
			ds.cfg.HoldDown = dur()
		case "failback":
			ds.cfg.Failback = v
		case "no-path-retry":
			ds.cfg.NoPathRetry = v
		case "apd":
			ds.cfg.APDTimeout = dur()
		case "unprobed":
			unprobed = true
		default:
			ds.t.Fatalf("paths: unknown option %s", a)
		}
	}
	setDefaults(&ds.cfg)
	_, err = parsePolicy(&ds.cfg)
	require.NoError(ds.t, err)
	activator, grouped := satpName == "activator", satpName == "grouped"
	if activator || grouped {
		satpName = SATPDefaultAA
	}
	satp, err := NewSATP(satpName, nil)
	require.NoError(ds.t, err)
	if activator {
		satp = activatorSATP{satp}
	}
	if grouped {
		satp = twoGroupSATP{satp}
	}
	var paths []*mpath.Path
	for i := range n {
		p := &mpath.Path{Name: fmt.Sprintf("p%d", i+1), URI: fmt.Sprintf("fake://p%d", i+1)}
		if unprobed {
			p.SetState(mpath.StateUnknown, ReasonUnprobed, ds.now)
		} else {
			p.SetState(mpath.StateActive, "claimed", ds.now)
		}
		paths = append(paths, p)
	}
	ds.start = ds.now
	ds.dec = newDecider("dev0", &ds.cfg, satp, paths)
	ds.out = append(ds.out, fmt.Sprintf("decider dev0: %d paths, satp %s, check=%v flap=%d in %v hold-down=%v",
		n, satpName, ds.cfg.CheckInterval, ds.cfg.FlapThreshold, ds.cfg.FlapWindow, ds.cfg.HoldDown))
	ds.apply([]action{{kind: actView}})
}

// activatorSATP is VMW_SATP_DEFAULT_AA that can activate standby paths (the
// decider never calls Activate: the owner does).
type activatorSATP struct{ SATP }

func (activatorSATP) Activate(context.Context, []*mpath.Path) ([]Change, error) { return nil, nil }

// twoGroupSATP is VMW_SATP_DEFAULT_AA with two priority groups, as ALUA's
// AO and ANO: p1 and p2 in group 0, the other paths in group 1.
type twoGroupSATP struct{ SATP }

func (twoGroupSATP) Group(p *mpath.Path) (int, bool) {
	if p.Name == "p1" || p.Name == "p2" {
		return 0, true
	}
	return 1, true
}
