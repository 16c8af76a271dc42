package host

import (
	"context"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/mpathfs/mpathfs/backends"
	"github.com/mpathfs/mpathfs/iscsi"
	"github.com/mpathfs/mpathfs/mpath"
)

// fakeTM is a path backend that does task management (as iscsipath's)
// and records what it was sent.
type fakeTM struct {
	backends.Backend
	target string
	lun    uint64
	err    error
	mu     *sync.Mutex
	sent   *[]string
	name   string
}

func (f *fakeTM) TaskManagement(_ context.Context, fn uint8) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	*f.sent = append(*f.sent, f.name+" "+iscsi.TMFName(fn))
	if f.err != nil {
		return 0, f.err
	}
	return 2, nil
}

func (f *fakeTM) TargetLUN() (string, uint64) { return f.target, f.lun }

// TestSendTMFs: a LUN reset goes once per target and LU, on the issuing
// path when it is among them; a target reset once per target; ABORT TASK
// SET on every path; a path without task management gets none; a refused
// function is reported on every path it covered.
func TestSendTMFs(t *testing.T) {
	h, d := fourPaths(t)
	var mu sync.Mutex
	var sent []string
	mk := func(name, target string, lun uint64, err error) adapterPath {
		var b backends.Backend
		if target != "" {
			b = &fakeTM{target: target, lun: lun, err: err, mu: &mu, sent: &sent, name: name}
		}
		return adapterPath{dev: d, p: &mpath.Path{Name: name, Backend: b}}
	}
	refused := &iscsi.TMFError{Address: "x", Function: iscsi.TMFLogicalUnitReset, Response: iscsi.TMFRespNotSupported}
	paths := []adapterPath{mk("a", "t1", 0, nil), mk("b", "t1", 0, nil), mk("c", "t1", 1, nil), mk("d", "", 0, nil), mk("e", "t2", 0, refused)}
	get := func(rps []ResetPath, name string) ResetPath {
		for _, rp := range rps {
			if rp.Name == name {
				return rp
			}
		}
		t.Fatalf("no path %s in %+v", name, rps)
		return ResetPath{}
	}

	rps := h.sendTMFs(paths, iscsi.TMFLogicalUnitReset, paths[1].p)
	assert.ElementsMatch(t, []string{"b LOGICAL UNIT RESET", "c LOGICAL UNIT RESET", "e LOGICAL UNIT RESET"}, sent)
	assert.Equal(t, ResetPath{Name: "a", Device: "d0", TMF: "LOGICAL UNIT RESET", TMFSentOn: "b"}, get(rps, "a"))
	assert.Equal(t, ResetPath{Name: "b", Device: "d0", TMF: "LOGICAL UNIT RESET", Aborted: 2}, get(rps, "b"))
	assert.Equal(t, ResetPath{Name: "d", Device: "d0"}, get(rps, "d"), "no task management: left to injection")
	e := get(rps, "e")
	assert.Equal(t, "LOGICAL UNIT RESET", e.TMF)
	assert.Contains(t, e.TMFError, "Task Management Function Not Supported")

	sent = nil
	rps = h.sendTMFs(paths, iscsi.TMFTargetWarmReset, nil)
	assert.ElementsMatch(t, []string{"a TARGET WARM RESET", "e TARGET WARM RESET"}, sent, "once per target, on its first path")
	assert.Equal(t, "a", get(rps, "c").TMFSentOn)

	sent = nil
	rps = h.sendTMFs(paths, iscsi.TMFAbortTaskSet, paths[0].p)
	assert.ElementsMatch(t, []string{"a ABORT TASK SET", "b ABORT TASK SET", "c ABORT TASK SET", "e ABORT TASK SET"}, sent, "each nexus")
	for _, rp := range rps {
		assert.Empty(t, rp.TMFSentOn)
	}
}

// TestResetInjectsOnPlainPaths: paths without task management (files)
// keep the injected effects, and the report says so.
func TestResetInjectsOnPlainPaths(t *testing.T) {
	h, _ := fourPaths(t)
	rep, err := h.Reset(ResetLUN, "vmhba1:C0:T0:L0")
	require.NoError(t, err)
	for _, rp := range rep.Paths {
		assert.Equal(t, TMFInjected, rp.TMF)
		assert.Equal(t, SenseBusDeviceReset, rp.UnitAttention)
	}
}
