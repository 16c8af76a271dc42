package mpath

import (
	"testing"
	"time"
)

func TestStateSummary(t *testing.T) {
	mk := func(states ...PathState) []*Path {
		var ps []*Path
		for _, s := range states {
			p := &Path{}
			p.SetState(s, "test", time.Now())
			ps = append(ps, p)
		}
		return ps
	}
	for _, tc := range []struct {
		paths []*Path
		want  string
	}{
		{nil, "no paths"},
		{mk(StateActive, StateActive), "2 active"},
		{mk(StateDead, StateUnknown, StateActive, StateStandby, StateDisabled), "1 active, 1 standby, 1 disabled, 1 dead, 1 unknown"},
		{[]*Path{{}}, "1 unknown"}, // a path nobody judged yet
	} {
		if got := StateSummary(tc.paths); got != tc.want {
			t.Errorf("StateSummary = %q, want %q", got, tc.want)
		}
	}
}
