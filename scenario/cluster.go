package scenario

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
)

// A cluster scenario declares its hosts (`host NAME MOUNT-ARGS…`) and
// optionally an array server (`array serve [CONFIG]`); its statements name
// the host they act on (`at 2s host a policy d0 psp VMW_PSP_MRU`), and
// array statements go to the array server. The runner (`mpathfs scenario
// run`) starts the server and one mount per host, then RunCluster plays
// each host's statements against that host's mount, all at once on one
// clock, and reports per host.

// Cluster is what RunCluster drives.
type Cluster struct {
	// Hosts are the hosts' mounts, by name.
	Hosts map[string]Target
	// Array takes the array statements (an array server's control
	// socket); nil: the first host's mount (its simulated arrays).
	Array Target
	// Exec starts an exec step's command on a host; nil: exec fails.
	Exec func(ctx context.Context, host string, argv []string) (wait func() error, err error)
}

// ForHost is the scenario one host plays: the statements that name it and,
// with arrays, the array statements; it lasts as long as the whole.
func (sc *Scenario) ForHost(name string, arrays bool) *Scenario {
	sub := &Scenario{Name: sc.Name, Seed: sc.Seed, Device: sc.Device, End: sc.Length()}
	for _, st := range sc.Stmts {
		if st.Host == name || (arrays && st.Host == "" && st.Action == "array") {
			sub.Stmts = append(sub.Stmts, st)
		}
	}
	return sub
}

// arrayRouted sends array commands to another target (the array server).
type arrayRouted struct {
	Target
	array Target
}

func (t arrayRouted) Array(ctx context.Context, req ArrayRequest) error {
	return t.array.Array(ctx, req)
}

// HostReport is one host's part of a cluster run.
type HostReport struct {
	Host   string  `json:"host"`
	Report *Report `json:"report"`
	Err    string  `json:"error,omitempty"`
}

// RunCluster plays a cluster scenario: each host's statements against its
// mount, concurrently, from one start; the first host also plays the
// array statements. It returns one report per host in declaration order
// (a host whose run could not start has a nil Report and Err) and every
// error joined.
func RunCluster(ctx context.Context, sc *Scenario, c Cluster, opts Options) ([]HostReport, error) {
	if len(sc.Hosts) == 0 {
		return nil, errors.New("scenario: RunCluster needs a scenario that declares hosts (`host NAME …`)")
	}
	for _, h := range sc.Hosts {
		if c.Hosts[h.Name] == nil {
			return nil, fmt.Errorf("scenario: no mount for host %q", h.Name)
		}
	}
	out := make([]HostReport, len(sc.Hosts))
	errs := make([]error, len(sc.Hosts))
	var wg sync.WaitGroup
	for i, h := range sc.Hosts {
		t := c.Hosts[h.Name]
		if i == 0 && c.Array != nil {
			t = arrayRouted{Target: t, array: c.Array}
		}
		o := opts
		if opts.Log != nil {
			o.Log = &prefixWriter{w: opts.Log, prefix: "host " + h.Name + " ", mu: &logMu}
		}
		if c.Exec != nil {
			name := h.Name
			o.Exec = func(ctx context.Context, argv []string) (func() error, error) { return c.Exec(ctx, name, argv) }
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			rep, err := Run(ctx, sc.ForHost(h.Name, i == 0), t, o)
			out[i] = HostReport{Host: h.Name, Report: rep}
			if err != nil {
				out[i].Err = err.Error()
				errs[i] = fmt.Errorf("host %s: %w", h.Name, err)
			}
		}()
	}
	wg.Wait()
	return out, errors.Join(errs...)
}

var logMu sync.Mutex

// prefixWriter prefixes every line written through it; writers that share
// mu do not interleave their lines.
type prefixWriter struct {
	w      interface{ Write([]byte) (int, error) }
	prefix string
	mu     *sync.Mutex
}

func (p *prefixWriter) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	var sb strings.Builder
	for _, l := range strings.SplitAfter(string(b), "\n") {
		if l != "" {
			sb.WriteString(p.prefix + l)
		}
	}
	if _, err := p.w.Write([]byte(sb.String())); err != nil {
		return 0, err
	}
	return len(b), nil
}

// ExpandVars replaces ${NAME} in s with vars[NAME]; an unknown name is an
// error that lists the known ones.
func ExpandVars(s string, vars map[string]string) (string, error) {
	var b strings.Builder
	for {
		i := strings.Index(s, "${")
		if i < 0 {
			b.WriteString(s)
			return b.String(), nil
		}
		j := strings.IndexByte(s[i:], '}')
		if j < 0 {
			return "", fmt.Errorf("%q: unterminated ${", s)
		}
		name := s[i+2 : i+j]
		v, ok := vars[name]
		if !ok {
			var known []string
			for k := range vars {
				known = append(known, "${"+k+"}")
			}
			return "", fmt.Errorf("%q: unknown variable ${%s} (known here: %s)", s, name, strings.Join(slices.Sorted(slices.Values(known)), ", "))
		}
		b.WriteString(s[:i] + v)
		s = s[i+j+1:]
	}
}
