package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/mpathfs/mpathfs/host"
	"github.com/mpathfs/mpathfs/internal/needs"
)

// TestISCSIResetsReachTheArray: one device over the four iscsi:// paths of
// an `mpathfs array serve` under fio --verify. `mpathfs reset lun`,
// `reset abort-task-set`, `reset target` and `adapter reset` send the real
// task management functions to the array (LOGICAL UNIT RESET once for the
// LU, ABORT TASK SET on each path, TARGET WARM RESET once for the target),
// inject nothing on those paths, and cost fio nothing: the commands the
// target aborted and its unit attentions are retried. The array's status
// counts the functions it performed.
func TestISCSIResetsReachTheArray(t *testing.T) {
	needs.Tools(t, "fio", "root", "/dev/fuse")
	s := startArrayServe(t)
	var args, uris []string
	for _, p := range s.portals {
		u := fmt.Sprintf("iscsi://%s/%s/0?initiator=iqn.2026-01.io.mpathfs.e2e:host-a", p, s.iqn)
		uris = append(uris, u)
		args = append(args, "--path", u)
	}
	m := startMount(t, append([]string{"--name", "d0", "--check-interval", "500ms", "--io-timeout", "5s"}, args...)...)
	issuing := iscsiPath(m, uris[0]).Name
	require.NotEmpty(t, issuing)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	run := startFio(ctx, verifyJob(m.file("d0"), 12)...)
	waitFor(t, 20*time.Second, "I/O on the device", func() bool {
		p := iscsiPath(m, uris[0])
		return p.Reads+p.Writes > 0
	})
	reset := func(kind string) host.ResetReport {
		var rep host.ResetReport
		require.NoError(t, json.Unmarshal([]byte(m.mustCtl("reset", kind, issuing, "--json")), &rep))
		t.Logf("reset %s: %d task(s) ended: %+v", kind, rep.Aborted, rep.Paths)
		return rep
	}
	// sent counts the paths a function was sent on (not TMFSentOn another)
	check := func(rep host.ResetReport, tmf string) (sent int) {
		require.NotEmpty(t, rep.Paths)
		for _, p := range rep.Paths {
			assert.Equal(t, tmf, p.TMF, "path %s", p.Name)
			assert.Empty(t, p.TMFError, "path %s", p.Name)
			assert.Empty(t, p.UnitAttention, "path %s: no synthetic unit attention on a path that got the real function", p.Name)
			if p.TMFSentOn == "" {
				sent++
			}
		}
		return sent
	}
	// The array holds writes through port 1 (the issuing path's) for 3 s:
	// the LUN reset finds them in flight and ends them.
	s.ctl(t, "fault", "inject", "--port", "1", "--op", "write", "--delay", "3s", "--count", "6")
	waitFor(t, 15*time.Second, "writes held by the array on port 1", func() bool { return arrayTasks(t, s, 1) > 0 })
	rep := reset("lun")
	assert.Len(t, rep.Paths, 4, "a LUN reset reaches every path to the LU")
	assert.Positive(t, rep.Aborted, "the held writes were aborted by the LUN reset")
	assert.Equal(t, 1, check(rep, "LOGICAL UNIT RESET"), "one LUN reset for the one LU")
	for _, p := range rep.Paths {
		if p.Name != issuing {
			assert.Equal(t, issuing, p.TMFSentOn, "the LUN reset went on the issuing path")
		}
	}
	time.Sleep(time.Second)
	rep = reset("abort-task-set")
	assert.Equal(t, 4, check(rep, "ABORT TASK SET"), "ABORT TASK SET on every path: each ends its own nexus's tasks")
	time.Sleep(time.Second)
	rep = reset("target")
	assert.Equal(t, 1, check(rep, "TARGET WARM RESET"), "one target reset for the one target")
	time.Sleep(time.Second)
	adapter, _, _ := strings.Cut(issuing, ":")
	m.mustCtl("adapter", "reset", adapter)
	r, out, err := run.wait()
	if err != nil || r.Jobs[0].TotalErr != 0 || r.Jobs[0].Error != 0 {
		t.Fatalf("fio across real resets: %v\n%s\n%s", err, out, m.out.String())
	}
	for _, u := range uris {
		assert.NotEqual(t, "dead", iscsiPath(m, u).State, "aborted commands and unit attentions do not fail a path")
	}
	var st struct {
		TaskManagement []struct {
			Function string `json:"function"`
			Response string `json:"response"`
			Count    int    `json:"count"`
		} `json:"task_management"`
	}
	sj := s.ctl(t, "status", "--json")
	require.NoError(t, json.Unmarshal([]byte(sj), &st), sj)
	got := map[string]int{}
	for _, c := range st.TaskManagement {
		got[c.Function+": "+c.Response] += c.Count
	}
	t.Logf("array task management: %v", got)
	assert.Equal(t, 1, got["LOGICAL UNIT RESET: Function Complete"], "the LUN reset arrived")
	assert.Equal(t, 4, got["ABORT TASK SET: Function Complete"])
	assert.Equal(t, 2, got["TARGET WARM RESET: Function Complete"], "the target reset and the adapter reset arrived")
	for k := range got {
		assert.Contains(t, k, "Function Complete")
	}
	t.Logf("fio: read %.0f IOPS write %.0f IOPS, max clat %.1f ms", r.Jobs[0].Read.IOPS, r.Jobs[0].Write.IOPS, r.Jobs[0].Write.ClatNs.Max/1e6)
	m.stopClean(t)
}

// arrayTasks counts the commands in progress in the array's sessions
// through a target port.
func arrayTasks(t *testing.T, s *arrayServer, port uint16) int {
	var st struct {
		Sessions []struct {
			TargetPort uint16 `json:"target_port"`
			Tasks      int    `json:"tasks"`
		} `json:"sessions"`
	}
	out := s.ctl(t, "status", "--json")
	require.NoError(t, json.Unmarshal([]byte(out), &st), out)
	n := 0
	for _, x := range st.Sessions {
		if x.TargetPort == port {
			n += x.Tasks
		}
	}
	return n
}
