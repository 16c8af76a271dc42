package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/mpathfs/mpathfs/control"
	"github.com/mpathfs/mpathfs/scenario"
)

// `mpathfs scenario run FILE` of a cluster scenario: the runner starts
// `mpathfs array serve` (array serve [CONFIG]) and one `mpathfs mount` per
// host (host NAME ARGS…) in a temporary directory, each with its own
// control socket, state directory and mount point; plays the hosts'
// statements at once; and stops every process it started by its PID.
//
// Host arguments and exec commands may use ${target} (the served target's
// IQN), ${portalN} (the portal of relative target port N), ${array_control}
// (the server's control socket), ${mpathfs} (this binary), and in a host's
// own statements ${host}, ${mnt} (its mount point), ${control} (its
// control socket) and ${dev} (its first device file).

// child is a process the cluster runner started.
type child struct {
	name string
	cmd  *exec.Cmd
	out  *lineBuffer
	done chan struct{}
	err  error
}

// lineBuffer keeps a process's output and signals when a line with a
// marker appears.
type lineBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *lineBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lineBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func startChild(name string, env []string, argv ...string) (*child, error) {
	c := &child{name: name, out: &lineBuffer{}, done: make(chan struct{})}
	c.cmd = exec.Command(argv[0], argv[1:]...)
	c.cmd.Stdout, c.cmd.Stderr = c.out, c.out
	c.cmd.Env = append(os.Environ(), env...)
	if err := c.cmd.Start(); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	go func() { c.err = c.cmd.Wait(); close(c.done) }()
	return c, nil
}

// waitLine waits until the output has a line containing marker.
func (c *child) waitLine(ctx context.Context, marker string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for !strings.Contains(c.out.String(), marker) {
		select {
		case <-c.done:
			return fmt.Errorf("%s exited before it was ready (%v):\n%s", c.name, c.err, strings.TrimSpace(c.out.String()))
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s was not ready after %v:\n%s", c.name, timeout, strings.TrimSpace(c.out.String()))
		}
	}
	return nil
}

// stop ends the process by its PID: SIGTERM, then SIGKILL after 20 s.
func (c *child) stop() {
	select {
	case <-c.done:
		return
	default:
	}
	_ = c.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-c.done:
	case <-time.After(20 * time.Second):
		_ = c.cmd.Process.Kill()
		<-c.done
	}
}

// clusterRun is the processes of one cluster scenario run.
type clusterRun struct {
	dir      string
	exe      string
	vars     map[string]string
	hostVars map[string]map[string]string
	children []*child
	log      io.Writer
}

func (r *clusterRun) stopAll() {
	for i := len(r.children) - 1; i >= 0; i-- {
		r.children[i].stop()
	}
	if r.dir != "" {
		for name := range r.hostVars {
			_ = exec.Command("fusermount3", "-u", "-z", r.hostVars[name]["mnt"]).Run() // only if still mounted
		}
		os.RemoveAll(r.dir)
	}
}

// startServe runs `mpathfs array serve` and learns its target and portals.
func (r *clusterRun) startServe(ctx context.Context, sc *scenario.Scenario) (scenario.Target, error) {
	d := sc.Serve
	sock := filepath.Join(r.dir, "array.sock")
	argv := []string{r.exe, "array", "serve", "--control", sock}
	if d.Config != "" {
		cfg := d.Config
		if !filepath.IsAbs(cfg) {
			cfg = filepath.Join(filepath.Dir(sc.Name), cfg)
		}
		argv = append(argv, "--config", cfg)
	}
	c, err := startChild("array serve", []string{"MPATHFS_STATE_DIR=" + filepath.Join(r.dir, "array-state")}, argv...)
	if err != nil {
		return nil, err
	}
	r.children = append(r.children, c)
	if err := c.waitLine(ctx, "ready", 30*time.Second); err != nil {
		return nil, err
	}
	sc2 := bufio.NewScanner(strings.NewReader(c.out.String()))
	for sc2.Scan() {
		f := strings.Fields(sc2.Text())
		switch {
		case len(f) >= 2 && f[0] == "target":
			r.vars["target"] = f[1]
		case len(f) >= 4 && f[0] == "portal" && f[2] == "port":
			r.vars["portal"+f[3]] = f[1]
		}
	}
	r.vars["array_control"] = sock
	fmt.Fprintf(r.log, "cluster: array serve (PID %d): target %s, control %s\n", c.cmd.Process.Pid, r.vars["target"], sock)
	cl, err := control.Dial(sock)
	if err != nil {
		return nil, err
	}
	return scenario.ClientTarget{C: cl}, nil
}

// startHost runs one host's mount.
func (r *clusterRun) startHost(ctx context.Context, h scenario.HostDecl) (scenario.Target, error) {
	base := filepath.Join(r.dir, h.Name)
	mnt := filepath.Join(base, "mnt")
	if err := os.MkdirAll(mnt, 0o755); err != nil {
		return nil, err
	}
	sock := filepath.Join(base, "ctl.sock")
	argv := []string{r.exe, "mount", "--control", sock}
	vars := map[string]string{"host": h.Name, "mnt": mnt, "control": sock}
	for k, v := range r.vars {
		vars[k] = v
	}
	for _, a := range h.Args {
		x, err := scenario.ExpandVars(a, vars)
		if err != nil {
			return nil, fmt.Errorf("host %s (line %d): %w", h.Name, h.Line, err)
		}
		argv = append(argv, x)
	}
	argv = append(argv, mnt)
	c, err := startChild("host "+h.Name, []string{"MPATHFS_STATE_DIR=" + filepath.Join(base, "state")}, argv...)
	if err != nil {
		return nil, err
	}
	r.children = append(r.children, c)
	if err := c.waitLine(ctx, "control socket", 60*time.Second); err != nil {
		return nil, err
	}
	cl, err := control.Dial(sock)
	if err != nil {
		return nil, err
	}
	st, err := cl.Status(ctx)
	if err != nil {
		return nil, fmt.Errorf("host %s: status: %w", h.Name, err)
	}
	if len(st.Devices) > 0 {
		vars["dev"] = filepath.Join(mnt, st.Devices[0].Name)
	}
	r.hostVars[h.Name] = vars
	fmt.Fprintf(r.log, "cluster: host %s (PID %d): %s, control %s\n", h.Name, c.cmd.Process.Pid, mnt, sock)
	return scenario.ClientTarget{C: cl}, nil
}

// exec starts a host's exec command; its output is kept and shown when it
// fails.
func (r *clusterRun) exec(ctx context.Context, host string, argv []string) (func() error, error) {
	vars := r.hostVars[host]
	full := make([]string, 0, len(argv))
	for _, a := range argv {
		x, err := scenario.ExpandVars(a, vars)
		if err != nil {
			return nil, err
		}
		full = append(full, x)
	}
	if full[0] == "mpathfs" {
		full[0] = r.exe
	}
	cmd := exec.CommandContext(ctx, full[0], full[1:]...)
	out := &lineBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	cmd.Env = append(os.Environ(), "MPATHFS_CONTROL="+vars["control"])
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	return func() error {
		err := cmd.Wait()
		text := strings.TrimSpace(out.String())
		if err != nil {
			return fmt.Errorf("%w\n%s", err, tail(text, 20))
		}
		if text != "" {
			fmt.Fprintf(r.log, "host %s: exec %s:\n%s\n", host, strings.Join(argv, " "), tail(text, 4))
		}
		return nil
	}, nil
}

func tail(s string, n int) string {
	l := strings.Split(s, "\n")
	if len(l) > n {
		l = append([]string{"…"}, l[len(l)-n:]...)
	}
	return strings.Join(l, "\n")
}

// runClusterScenario starts the array server and the hosts, plays the
// scenario and writes one report per host.
func runClusterScenario(ctx context.Context, sc *scenario.Scenario, opts scenario.Options, md, svg, js string, stdout io.Writer) error {
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	dir, err := os.MkdirTemp("", "mpathfs-cluster-")
	if err != nil {
		return err
	}
	r := &clusterRun{dir: dir, exe: exe, vars: map[string]string{"mpathfs": exe}, hostVars: map[string]map[string]string{}, log: stdout}
	defer r.stopAll()
	c := scenario.Cluster{Hosts: map[string]scenario.Target{}, Exec: r.exec}
	if sc.Serve != nil {
		if c.Array, err = r.startServe(ctx, sc); err != nil {
			return err
		}
	}
	for _, h := range sc.Hosts {
		t, err := r.startHost(ctx, h)
		if err != nil {
			return err
		}
		c.Hosts[h.Name] = t
	}
	reps, runErr := scenario.RunCluster(ctx, sc, c, opts)
	var problems []string
	for _, hr := range reps {
		if hr.Report == nil {
			continue
		}
		suffix := func(f string) string {
			if f == "" {
				return ""
			}
			ext := filepath.Ext(f)
			return strings.TrimSuffix(f, ext) + "." + hr.Host + ext
		}
		if md == "" {
			fmt.Fprintf(stdout, "\n# host %s\n\n", hr.Host)
		}
		if err := writeReport(hr.Report, suffix(md), suffix(svg), suffix(js), stdout); err != nil {
			return err
		}
		for _, p := range hr.Report.Problems() {
			problems = append(problems, "host "+hr.Host+": "+p)
		}
	}
	if runErr != nil {
		return runErr
	}
	if len(problems) > 0 {
		return fmt.Errorf("%d problems: %s", len(problems), strings.Join(problems, "; "))
	}
	return nil
}

var errClusterInMount = errors.New("a scenario that declares hosts starts its own mounts: run it with `mpathfs scenario run FILE`, not mount --scenario")
