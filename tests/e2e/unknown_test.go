package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/mpathfs/mpathfs/internal/needs"
	"github.com/mpathfs/mpathfs/mpath"
)

// pathStateEvents returns the path-added and path-state events of path
// (from `mpathfs events --json`), as "kind from→to".
func pathStateEvents(t *testing.T, m *mount, path string) []string {
	t.Helper()
	var out []string
	for _, line := range strings.Split(strings.TrimSpace(m.mustCtl("events", "--json", "--last", "1000")), "\n") {
		var ev mpath.Event
		require.NoError(t, json.Unmarshal([]byte(line), &ev), "line %q", line)
		if ev.Path == path && (ev.Kind == "path-added" || ev.Kind == "path-state") {
			out = append(out, ev.Kind+" "+ev.From+"→"+ev.To)
		}
	}
	return out
}

// TestMountProbesPathsFirst: mount returns once every path's first probe
// judged it: a path whose probe is slow (a fault delays it) is active, one
// whose probe fails is dead, the serving line says so and no path is
// unknown when the mount answers; each path's history starts with its
// first probe's verdict (unknown → active or dead); fio --verify then runs
// without an error on the active paths.
func TestMountProbesPathsFirst(t *testing.T) {
	needs.Tools(t, "fio")
	dir := t.TempDir()
	img := filepath.Join(dir, "lun.img")
	cfg := filepath.Join(dir, "unknown.yaml")
	require.NoError(t, os.WriteFile(cfg, []byte(`devices:
  - name: d0
    size: 64M
    psp: VMW_PSP_RR
    psp_options: {iops: "1"}
    check_interval: 1m
    probe_timeout: 10s
    paths:
      - {uri: "file://`+img+`", name: fast}
      - {uri: "file://`+img+`", name: slow, faults: ["--latency 1s --op probe --count 1"]}
      - {uri: "file://`+img+`", name: failing, faults: ["--error path-failure --op probe"]}
`), 0o600))
	m := startMount(t, "--config", cfg)
	assert.Contains(t, m.out.String(), "3 paths: 2 active, 1 dead;", "the serving line gives the paths' judged states:\n%s", m.out.String())
	st := m.status()
	require.Len(t, st.Devices, 1)
	for _, p := range st.Devices[0].Paths {
		assert.NotEqual(t, "unknown", p.State, "%s: the mount answered before its first probe did", p.Name)
	}
	assert.Equal(t, "active", pathState(st, "d0", "fast"))
	assert.Equal(t, "active", pathState(st, "d0", "slow"))
	assert.Equal(t, "dead", pathState(st, "d0", "failing"))
	assert.False(t, st.Devices[0].APD)
	assert.Equal(t, []string{"path-state unknown→active"}, pathStateEvents(t, m, "fast"))
	assert.Equal(t, []string{"path-state unknown→active"}, pathStateEvents(t, m, "slow"))
	assert.Equal(t, []string{"path-state unknown→dead"}, pathStateEvents(t, m, "failing"))

	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	r, out, err := runFio(ctx, verifyJob(m.file("d0"), 3)...)
	require.NoError(t, err, "fio: %s", out)
	require.Len(t, r.Jobs, 1)
	assert.Equal(t, 0, r.Jobs[0].Error, "fio error")
	assert.Equal(t, 0, r.Jobs[0].TotalErr, "fio I/O errors")
	io := pathIO(m.status(), "d0")
	assert.Positive(t, io["fast"])
	assert.Positive(t, io["slow"])
	assert.Zero(t, io["failing"], "I/O on the path its probe judged dead")
	m.stopClean(t)
}

// TestPathAddUnknownUntilProbed: a path joining live (`path add`) through
// a port of `mpathfs array serve` whose TEST UNIT READY the array holds
// for 4 s is `unknown` in status and path list while the checker's first
// probe waits, and carries no I/O; path add returns with the probe's
// verdict, active, and the events say path-added (unknown), then
// path-state unknown → active.
func TestPathAddUnknownUntilProbed(t *testing.T) {
	needs.Tools(t, "root", "/dev/fuse")
	s := startArrayServe(t)
	uri := func(i int) string {
		return fmt.Sprintf("iscsi://%s/%s/0?initiator=iqn.2026-01.io.mpathfs.e2e:host-a", s.portals[i], s.iqn)
	}
	dir := t.TempDir()
	cfg := filepath.Join(dir, "unknown.yaml")
	require.NoError(t, os.WriteFile(cfg, []byte(`devices:
  - name: d0
    psp: VMW_PSP_RR
    psp_options: {iops: "1"}
    check_interval: 1m
    probe_timeout: 20s
    paths:
      - {uri: "`+uri(0)+`", name: first}
`), 0o600))
	m := startMount(t, "--config", cfg)
	require.Equal(t, "active", pathState(m.status(), "d0", "first"))
	s.ctl(t, "fault", "inject", "--port", "2", "--op", "probe", "--delay", "4s")

	type result struct {
		out string
		err error
	}
	done := make(chan result, 1)
	go func() {
		out, err := m.ctl("path", "add", "d0", uri(1), "--name", "slow")
		done <- result{out, err}
	}()
	var seen []string
	var list string
	var res result
	deadline := time.After(60 * time.Second)
poll:
	for {
		select {
		case res = <-done:
			break poll
		case <-deadline:
			t.Fatalf("path add did not return in 60 s")
		default:
		}
		st := m.status()
		state := pathState(st, "d0", "slow")
		if state != "missing" && (len(seen) == 0 || seen[len(seen)-1] != state) {
			seen = append(seen, state)
		}
		if state == "unknown" && list == "" {
			list = m.mustCtl("path", "list")
			for _, d := range st.Devices {
				for _, p := range d.Paths {
					if p.Name == "slow" {
						assert.Zero(t, p.Reads+p.Writes, "I/O on a path not probed yet")
						assert.Equal(t, "undef", p.Checker)
					}
				}
			}
			f, err := os.OpenFile(m.file("d0"), os.O_RDWR, 0)
			require.NoError(t, err)
			buf := make([]byte, 4096)
			for i := range 8 {
				_, err := f.WriteAt(buf, int64(i)*4096)
				require.NoError(t, err, "a write while the new path waits for its probe")
			}
			require.NoError(t, f.Sync())
			f.Close()
			assert.Zero(t, pathIO(m.status(), "d0")["slow"], "I/O on a path not probed yet")
		}
		time.Sleep(50 * time.Millisecond)
	}
	require.NoError(t, res.err, "path add: %s", res.out)
	assert.Contains(t, res.out, "state active", "path add answers with the probe's verdict")
	require.NotEmpty(t, seen, "status never listed the joining path while path add ran")
	assert.Equal(t, "unknown", seen[0], "the joining path's first state in status: %v", seen)
	slowEntry := "" // path list's entry of the joining path
	for _, e := range strings.Split(list, "\n\n") {
		if strings.Contains(e, "URI: "+strings.SplitN(uri(1), "?", 2)[0]) {
			slowEntry = e
		}
	}
	assert.Contains(t, slowEntry, "   State: unknown\n", "path list shows the joining path unknown:\n%s", list)
	assert.Contains(t, slowEntry, "Last Change: waiting for its first probe", "path list:\n%s", list)
	assert.Equal(t, "active", pathState(m.status(), "d0", "slow"))
	assert.Equal(t, []string{"path-added →unknown", "path-state unknown→active"}, pathStateEvents(t, m, "slow"))
	s.ctl(t, "fault", "clear", "--all")
	m.stopClean(t)
}
