package scenario

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/mpathfs/mpathfs/backends/fault"
	"github.com/mpathfs/mpathfs/control"
	"github.com/mpathfs/mpathfs/mpath"
	"github.com/mpathfs/mpathfs/nmp"
)

func TestParseCluster(t *testing.T) {
	sc, err := ParseFile("testdata/cluster-2host.scn")
	require.NoError(t, err)
	require.NotNil(t, sc.Serve)
	require.Equal(t, "", sc.Serve.Config)
	require.Len(t, sc.Hosts, 2)
	require.Equal(t, "a", sc.Hosts[0].Name)
	require.Equal(t, []string{"--name", "d0", "--verify"}, sc.Hosts[0].Args[:3])
	a := sc.ForHost("a", true)
	b := sc.ForHost("b", false)
	require.Len(t, a.Stmts, 5, "a's exec, policy, verify and the two array statements")
	require.Len(t, b.Stmts, 2)
	require.Equal(t, sc.Length(), a.Length())
	require.Equal(t, sc.Length(), b.Length(), "every host runs as long as the whole")
	var kinds []StepKind
	for _, s := range b.Expand() {
		kinds = append(kinds, s.Kind)
		require.Equal(t, "b", s.Host)
	}
	require.Equal(t, []StepKind{StepExec, StepExec}, kinds)

	for _, tc := range []struct{ src, want string }{
		{"host a --path x\nat 1s policy d0 psp VMW_PSP_MRU", "which host? this scenario starts hosts a"},
		{"host a --path x\nat 1s host c policy d0 psp VMW_PSP_MRU", `host "c" is not declared (hosts: a)`},
		{"at 1s host a policy d0 psp VMW_PSP_MRU", "a cluster scenario starts its hosts"},
		{"at 1s exec true", "exec runs a command on a host of a cluster scenario"},
		{"host a --path x\nhost a --path y", `host "a" is declared twice`},
		{"host a/b --path x", "want letters, digits and '-'"},
		{"host a", "host a needs its mount arguments"},
		{"array serve", "array serve starts an array for the hosts"},
		{"host a --path x\nat 1s host a exec", "exec needs a command"},
	} {
		_, err := Parse("t.scn", tc.src)
		require.ErrorContains(t, err, tc.want, tc.src)
	}
}

func TestExpandVars(t *testing.T) {
	v := map[string]string{"portal1": "127.0.0.1:3260", "target": "iqn.x"}
	got, err := ExpandVars("iscsi://${portal1}/${target}/0", v)
	require.NoError(t, err)
	require.Equal(t, "iscsi://127.0.0.1:3260/iqn.x/0", got)
	_, err = ExpandVars("${portal9}", v)
	require.ErrorContains(t, err, "unknown variable ${portal9} (known here: ${portal1}, ${target})")
	_, err = ExpandVars("${portal1", v)
	require.ErrorContains(t, err, "unterminated")
}

// TestRunClusterRoutes: each host's statements go to its own target, the
// array statements to the array target, exec to the cluster's Exec with
// the host's name, and a failing command fails the run.
func TestRunClusterRoutes(t *testing.T) {
	sc, err := Parse("c.scn", `host a --path x
host b --path y
at 0s host a policy d0 psp VMW_PSP_MRU
at 0s host b exec false
at 10ms array lab controller A fail`)
	require.NoError(t, err)
	ta, tb, arr := newRecTarget(), newRecTarget(), newRecTarget()
	var execs []string
	c := Cluster{Hosts: map[string]Target{"a": ta, "b": tb}, Array: arr,
		Exec: func(_ context.Context, host string, argv []string) (func() error, error) {
			execs = append(execs, host+":"+argv[0])
			return func() error {
				if argv[0] == "false" {
					return errExit
				}
				return nil
			}, nil
		}}
	reps, err := RunCluster(context.Background(), sc, c, Options{SampleInterval: -1, Settle: time.Millisecond, NoTrace: true})
	require.ErrorIs(t, err, errExit)
	require.Len(t, reps, 2)
	require.Equal(t, []string{"policy d0 VMW_PSP_MRU"}, ta.calls())
	require.Empty(t, tb.calls())
	require.Equal(t, []string{"array lab controller-fail A"}, arr.calls())
	require.Equal(t, []string{"b:false"}, execs)
}

var errExit = errors.New("exit status 1")

// recTarget records what a run asked of it; it has one device d0 with one
// path p.
type recTarget struct {
	mu  sync.Mutex
	log []string
}

func newRecTarget() *recTarget { return &recTarget{} }

func (r *recTarget) rec(s string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.log = append(r.log, s)
}

func (r *recTarget) calls() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.log...)
}

func (r *recTarget) Status(context.Context) (control.Status, error) {
	return control.Status{Devices: []mpath.DeviceStatus{{Name: "d0", Paths: []mpath.PathStatus{{Name: "p"}}}}}, nil
}
func (r *recTarget) Paths(context.Context, string) ([]string, error) { return []string{"p"}, nil }
func (r *recTarget) InjectFault(_ context.Context, path string, _ fault.Spec) (int, error) {
	r.rec("inject " + path)
	return 1, nil
}
func (r *recTarget) ClearFault(_ context.Context, path string, _ int) error { return nil }
func (r *recTarget) SetPathAdmin(_ context.Context, path string, on bool) error {
	r.rec(fmt.Sprintf("admin %s %v", path, on))
	return nil
}
func (r *recTarget) SetPolicy(_ context.Context, dev, psp string, _ map[string]string) error {
	r.rec("policy " + dev + " " + psp)
	return nil
}
func (r *recTarget) Array(_ context.Context, req ArrayRequest) error {
	r.rec("array " + req.Array + " " + req.Action + " " + req.Controller)
	return nil
}
func (r *recTarget) Events(ctx context.Context) (<-chan mpath.Event, error) {
	c := make(chan mpath.Event)
	go func() { <-ctx.Done(); close(c) }()
	return c, nil
}
func (r *recTarget) Trace(ctx context.Context, _ string) (<-chan nmp.TraceRecord, error) {
	c := make(chan nmp.TraceRecord)
	go func() { <-ctx.Done(); close(c) }()
	return c, nil
}
