package alua_test

import (
	"errors"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/mpathfs/mpathfs/alua"
	"github.com/mpathfs/mpathfs/array"
	"github.com/mpathfs/mpathfs/ioerr"
	"github.com/mpathfs/mpathfs/mpath"
	"github.com/mpathfs/mpathfs/nmp"
	"github.com/mpathfs/mpathfs/scsi"
)

func senseErr(s ioerr.Sense, c ioerr.Class) error {
	return &ioerr.Error{Class: c, Op: "read", Sense: &s}
}

func TestClassifyALUA(t *testing.T) {
	s, err := alua.NewALUASATP(map[string]string{"retry_backoff_ms": "10", "max_backoff_ms": "40"})
	if err != nil {
		t.Fatal(err)
	}
	p := &mpath.Path{Name: "p"}
	for _, tc := range []struct {
		name string
		err  error
		want nmp.Verdict
	}{
		{"unit attention", senseErr(ioerr.SenseAccessChanged, ioerr.ClassRetryable), nmp.Verdict{Class: ioerr.ClassRetryable, State: mpath.StateActive, Retry: true, Update: true, Event: alua.EventAccessChanged}},
		{"power on", senseErr(scsi.SensePowerOnReset, ioerr.ClassRetryable), nmp.Verdict{Class: ioerr.ClassRetryable, State: mpath.StateActive, Retry: true, Update: true}},
		{"transitioning 1", senseErr(ioerr.SenseALUATransitioning, ioerr.ClassRetryable), nmp.Verdict{Class: ioerr.ClassRetryable, Retry: true, Update: true, Backoff: 10 * time.Millisecond}},
		{"transitioning 2", senseErr(ioerr.SenseALUATransitioning, ioerr.ClassRetryable), nmp.Verdict{Class: ioerr.ClassRetryable, Retry: true, Backoff: 20 * time.Millisecond}},
		{"transitioning 3", senseErr(ioerr.SenseALUATransitioning, ioerr.ClassRetryable), nmp.Verdict{Class: ioerr.ClassRetryable, Retry: true, Backoff: 40 * time.Millisecond}},
		{"transitioning 4 (capped)", senseErr(ioerr.SenseALUATransitioning, ioerr.ClassRetryable), nmp.Verdict{Class: ioerr.ClassRetryable, Retry: true, Backoff: 40 * time.Millisecond}},
		{"standby", senseErr(ioerr.SenseALUAStandby, ioerr.ClassNotReady), nmp.Verdict{Class: ioerr.ClassNotReady, State: mpath.StateStandby, Retry: true, Update: true}},
		{"unavailable", senseErr(ioerr.SenseALUAUnavailable, ioerr.ClassNotReady), nmp.Verdict{Class: ioerr.ClassNotReady, State: mpath.StateStandby, Retry: true, Update: true}},
		{"path failure", ioerr.NewError(ioerr.ClassPathFailure, "read", errors.New("reset")), nmp.Verdict{Class: ioerr.ClassPathFailure, State: mpath.StateDead, Retry: true, Update: true}},
		{"medium error", senseErr(ioerr.SenseUnrecoveredRead, ioerr.ClassDeviceError), nmp.Verdict{Class: ioerr.ClassDeviceError}},
		{"medium error sent as a path failure", senseErr(ioerr.SenseUnrecoveredRead, ioerr.ClassPathFailure), nmp.Verdict{Class: ioerr.ClassDeviceError}},
		{"busy", ioerr.NewError(ioerr.ClassRetryable, "read", nil), nmp.Verdict{Class: ioerr.ClassRetryable, Retry: true, Backoff: 10 * time.Millisecond}},
	} {
		v := s.Classify(p, mpath.OpRead, tc.err)
		v.Reason = ""
		if v != tc.want {
			t.Errorf("%s: got %+v, want %+v", tc.name, v, tc.want)
		}
	}
	// action_OnRetryErrors=on fails the path on a plain retryable error, not on a transition.
	s, _ = alua.NewALUASATP(map[string]string{"action_OnRetryErrors": "on"})
	if v := s.Classify(p, mpath.OpRead, ioerr.NewError(ioerr.ClassRetryable, "read", nil)); v.State != mpath.StateDead {
		t.Errorf("action_OnRetryErrors=on: %+v", v)
	}
	if v := s.Classify(p, mpath.OpRead, senseErr(ioerr.SenseALUATransitioning, ioerr.ClassRetryable)); v.State != mpath.StateUnknown {
		t.Errorf("action_OnRetryErrors=on on a transition: %+v", v)
	}
}

func TestGroupAndPathState(t *testing.T) {
	for _, tc := range []struct {
		st     scsi.State
		known  bool
		group  int
		usable bool
		path   mpath.PathState
	}{
		{scsi.ActiveOptimized, true, 0, true, mpath.StateActive},
		{scsi.ActiveNonOptimized, true, 1, true, mpath.StateActive},
		{scsi.Transitioning, true, 1, true, mpath.StateActive},
		{scsi.Standby, true, 0, false, mpath.StateStandby},
		{scsi.Unavailable, true, 0, false, mpath.StateStandby},
		{scsi.Offline, true, 0, false, mpath.StateDead},
		{0, false, 1, true, mpath.StateActive},
	} {
		g, ok := alua.GroupFor(tc.st, tc.known)
		if g != tc.group || ok != tc.usable {
			t.Errorf("GroupFor(%s, %v) = %d, %v", tc.st.Abbrev(), tc.known, g, ok)
		}
		if tc.known {
			if ps := alua.PathStateFor(tc.st); ps != tc.path {
				t.Errorf("PathStateFor(%s) = %s, want %s", tc.st.Abbrev(), ps, tc.path)
			}
		}
	}
}

func TestCheckedALUA(t *testing.T) {
	na := senseErr(ioerr.SenseALUAUnavailable, ioerr.ClassNotReady)
	tr := senseErr(ioerr.SenseALUATransitioning, ioerr.ClassRetryable)
	gone := ioerr.NewError(ioerr.ClassPathFailure, "probe", nil)
	for _, tc := range []struct {
		cur   mpath.PathState
		st    scsi.State
		known bool
		err   error
		want  mpath.PathState
		stale bool
	}{
		{mpath.StateDead, scsi.ActiveOptimized, true, nil, mpath.StateActive, false},
		{mpath.StateActive, scsi.Standby, true, nil, mpath.StateStandby, false},
		{mpath.StateDead, scsi.Offline, true, nil, mpath.StateActive, true},
		{mpath.StateActive, 0, false, nil, mpath.StateActive, false},
		{mpath.StateActive, scsi.Unavailable, true, na, mpath.StateStandby, false},
		{mpath.StateActive, scsi.Transitioning, true, tr, mpath.StateActive, false},
		{mpath.StateStandby, scsi.Transitioning, true, tr, mpath.StateStandby, false},
		{mpath.StateActive, scsi.ActiveOptimized, true, gone, mpath.StateDead, false},
	} {
		got, stale, _ := alua.CheckedALUA(tc.cur, tc.st, tc.known, tc.err)
		if got != tc.want || stale != tc.stale {
			t.Errorf("CheckedALUA(%s, %s, %v, %v) = %s, %v; want %s, %v", tc.cur, tc.st.Abbrev(), tc.known, tc.err, got, stale, tc.want, tc.stale)
		}
	}
}

func TestPlanChangesAndActivation(t *testing.T) {
	p := func(n string) *mpath.Path { return &mpath.Path{Name: n} }
	a1, a2, b1, b2 := p("a1"), p("a2"), p("b1"), p("b2")
	plan := []alua.PathALUA{
		{Path: a1, Cur: mpath.StateActive, TPG: 1, Known: true, State: scsi.Offline},
		{Path: a2, Cur: mpath.StateDead, TPG: 1, Known: true, State: scsi.Offline},
		{Path: b1, Cur: mpath.StateActive, TPG: 2, Known: true, WasOK: true, Was: scsi.ActiveNonOptimized, State: scsi.ActiveOptimized},
		{Path: b2, Cur: mpath.StateDead, TPG: 2, Known: true, State: scsi.ActiveOptimized},
	}
	var got []string
	for _, c := range alua.PlanChanges(plan) {
		got = append(got, c.Path.Name+"="+c.State.String())
	}
	// a1 dies; a2 stays dead; b1 is regrouped (ANO→AO); b2 is the checker's to revive.
	if g := strings.Join(got, " "); g != "a1=dead b1=active" {
		t.Fatalf("PlanChanges: %s", g)
	}
	tpgs := map[uint16]scsi.TPG{1: {ID: 1, State: scsi.Offline, Pref: true}, 2: {ID: 2, State: scsi.Standby}, 3: {ID: 3, State: scsi.Standby, Pref: true}}
	standby := []alua.PathALUA{
		{Path: a1, Cur: mpath.StateDead, TPG: 1, Known: true, State: scsi.Offline},
		{Path: b1, Cur: mpath.StateStandby, TPG: 2, Known: true, State: scsi.Standby},
		{Path: b2, Cur: mpath.StateStandby, TPG: 3, Known: true, State: scsi.Standby},
	}
	if id, ok := alua.PlanActivation(tpgs, standby, true, true); !ok || id != 3 {
		t.Fatalf("PlanActivation: %d %v, want the PREF group 3", id, ok)
	}
	if _, ok := alua.PlanActivation(tpgs, standby, false, true); ok {
		t.Fatal("activated without explicit support")
	}
	if _, ok := alua.PlanActivation(tpgs, standby, true, false); ok {
		t.Fatal("activated with explicit_allow=off")
	}
	withANO := append(standby, alua.PathALUA{Path: a2, Cur: mpath.StateActive, TPG: 4, Known: true, State: scsi.ActiveNonOptimized})
	if _, ok := alua.PlanActivation(tpgs, withANO, true, true); ok {
		t.Fatal("activated although an ANO path is usable")
	}
	tpgs2 := map[uint16]scsi.TPG{1: {ID: 1, State: scsi.ActiveNonOptimized, Pref: true}, 2: {ID: 2, State: scsi.ActiveOptimized}}
	fb := []alua.PathALUA{{Path: a1, Cur: mpath.StateActive, TPG: 1, Known: true, State: scsi.ActiveNonOptimized}}
	if id, ok := alua.PlanFailback(tpgs2, fb, false, true, true); !ok || id != 1 {
		t.Fatalf("PlanFailback with followover off: %d %v", id, ok)
	}
	if _, ok := alua.PlanFailback(tpgs2, fb, true, true, true); ok {
		t.Fatal("PlanFailback with followover on")
	}
}

// TestFixedWithinBestGroup: Fixed's preferred path on the ANO group is not
// used while the AO group is usable; MRU ranks apply within the best group.
func TestFixedAndMRUWithinBestGroup(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		for _, tc := range []struct {
			psp  string
			opts map[string]string
			rank string
		}{
			{nmp.PSPFixed, map[string]string{"preferred": "vmhba3:C0:T0:L0"}, ""},
			{nmp.PSPMRU, nil, "vmhba2:C0:T0:L0"},
		} {
			cfg := array.DefaultLabArray()
			cfg.ANOLatency = 0
			l := newLab(t, cfg, alua.SATPALUA, tc.psp, tc.opts)
			if tc.rank != "" {
				l.dev.SetPathRank(tc.rank, 5)
				l.dev.SetPathRank("vmhba3:C0:T0:L0", 9) // ANO: rank does not lift it above AO
			}
			l.run(t, 300*time.Millisecond)
			base := ioCount(l.dev)
			l.run(t, 300*time.Millisecond)
			c := ioCount(l.dev)
			switch tc.psp {
			case nmp.PSPFixed:
				if c["vmhba3:C0:T0:L0"] != base["vmhba3:C0:T0:L0"] || c["vmhba1:C0:T0:L0"] == base["vmhba1:C0:T0:L0"] {
					t.Errorf("Fixed with an ANO preferred path: %v -> %v", base, c)
				}
				// The preferred path's group becomes AO: Fixed moves to it.
				if err := l.arr.TransferOwnership("B"); err != nil {
					t.Fatal(err)
				}
				l.run(t, 2*time.Second)
				base = ioCount(l.dev)
				l.run(t, 300*time.Millisecond)
				c = ioCount(l.dev)
				if c["vmhba3:C0:T0:L0"] == base["vmhba3:C0:T0:L0"] {
					t.Errorf("Fixed did not use its preferred path once its group became AO: %v -> %v (%s)", base, c, states(l.dev))
				}
			case nmp.PSPMRU:
				if c["vmhba3:C0:T0:L0"] != 0 {
					t.Errorf("MRU used a high-ranked ANO path: %v", c)
				}
			}
			l.dev.Close()
		}
	})
}
