package scenario

import (
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/mpathfs/mpathfs/backends/fault"
	"github.com/mpathfs/mpathfs/control"
	"github.com/mpathfs/mpathfs/ioerr"
	"github.com/mpathfs/mpathfs/nmp"
)

// Scenario is a parsed scenario file.
type Scenario struct {
	// Name is the file name errors and reports use.
	Name string
	// Seed seeds every injected fault (default 1).
	Seed uint64
	// Device is the device of device-scoped statements ("" = the target's
	// only device).
	Device string
	// End keeps the run going until this offset even after the last step.
	End time.Duration
	// Stmts are the timed statements in file order.
	Stmts []Stmt
	// Hosts are the hosts a cluster scenario starts (`host NAME ARGS…`),
	// in file order; none for a scenario run against one mount.
	Hosts []HostDecl
	// Serve is the `array serve [CONFIG]` statement, if any.
	Serve *ServeDecl
}

// HostDecl is `host NAME MOUNT-ARGS…`: a host the scenario starts, an
// `mpathfs mount` with these arguments (its control socket and mount
// point are the runner's).
type HostDecl struct {
	Line int
	Name string
	Args []string
}

// ServeDecl is `array serve [CONFIG]`: the runner starts `mpathfs array
// serve` (with CONFIG, relative to the scenario file, or the built-in
// array) before the hosts, and sends array statements to it.
type ServeDecl struct {
	Line   int
	Config string
}

// Stmt is one timed statement of a scenario.
type Stmt struct {
	Line, Col int    // where it starts
	Text      string // the source line, without its comment
	At        time.Duration
	// Period and Span: a flap's half-period and total length.
	Period, Span time.Duration
	// Action is fail, hang, land-late, slow, flap, path, all-paths-down,
	// array, policy or clear.
	Action string
	Path   string
	Device string
	// Spec is the fault of fail, hang, land-late, slow and all-paths-down.
	Spec fault.Spec
	// Lifetime is how long the fault lasts (0: until the end of the run).
	Lifetime time.Duration
	// Admin is on or off (path).
	Admin string
	// PSP and Options (policy).
	PSP     string
	Options map[string]string
	// Array is the command of an array statement.
	Array ArrayRequest
	// Host is the host of `at TIME host NAME ACTION` ("": the target).
	Host string
	// Argv is the command of exec.
	Argv []string
}

// ArrayRequest is the body of POST /v1/array, the simulated ALUA array's
// endpoint (control.ArrayRequest).
type ArrayRequest = control.ArrayRequest

// Error is a parse error at a line and column.
type Error struct {
	File      string
	Line, Col int
	Msg       string
}

func (e *Error) Error() string {
	return fmt.Sprintf("%s:%d:%d: %s", e.File, e.Line, e.Col, e.Msg)
}

// ErrorList is every parse error of a file, in order.
type ErrorList []*Error

func (l ErrorList) Error() string {
	var b strings.Builder
	for i, e := range l {
		if i > 0 {
			b.WriteByte('\n')
		}
		b.WriteString(e.Error())
	}
	return b.String()
}

// ParseFile reads and parses a scenario file.
func ParseFile(name string) (*Scenario, error) {
	b, err := os.ReadFile(name)
	if err != nil {
		return nil, fmt.Errorf("scenario: %w", err)
	}
	return Parse(name, string(b))
}

// actions lists the actions an "at" takes, for error messages.
const actions = "fail, hang, land-late, corrupt, slow, flap, path, all-paths-down, array, policy, exec"

// maxErrors stops a parse of a file that is not a scenario at all.
const maxErrors = 20

type token struct {
	s   string
	col int
}

type parser struct {
	file string
	line int
	toks []token
	i    int
	eol  int // the column after the last token
	errs ErrorList
}

// errAt stops the parse of a line.
type lineErr struct{}

func (p *parser) failAt(col int, format string, a ...any) {
	p.errs = append(p.errs, &Error{File: p.file, Line: p.line, Col: col, Msg: fmt.Sprintf(format, a...)})
	panic(lineErr{})
}

func (p *parser) peek() (token, bool) {
	if p.i < len(p.toks) {
		return p.toks[p.i], true
	}
	return token{col: p.eol}, false
}

func (p *parser) next(what string) token {
	t, ok := p.peek()
	if !ok {
		p.failAt(t.col, "missing %s at the end of the line", what)
	}
	p.i++
	return t
}

func (p *parser) keyword(kw string) token {
	t, ok := p.peek()
	if !ok {
		p.failAt(t.col, "missing %q at the end of the line", kw)
	}
	if t.s != kw {
		p.failAt(t.col, "want %q, got %q", kw, t.s)
	}
	p.i++
	return t
}

func (p *parser) accept(kw string) bool {
	if t, ok := p.peek(); ok && t.s == kw {
		p.i++
		return true
	}
	return false
}

func (p *parser) end() {
	if t, ok := p.peek(); ok {
		p.failAt(t.col, "unexpected %q after the end of the statement", t.s)
	}
}

func (p *parser) duration(what string) time.Duration {
	t := p.next(what)
	d, err := time.ParseDuration(t.s)
	if t.s == "0" {
		d, err = 0, nil
	}
	if err != nil {
		p.failAt(t.col, "%s %q: want a duration such as 500ms, 2s or 1m30s", what, t.s)
	}
	if d < 0 {
		p.failAt(t.col, "%s %q is negative", what, t.s)
	}
	return d
}

// Parse parses a scenario from its text; name is used in errors.
func Parse(name, text string) (*Scenario, error) {
	sc := &Scenario{Name: name, Seed: 1}
	p := &parser{file: name}
	for i, line := range strings.Split(text, "\n") {
		if len(p.errs) >= maxErrors {
			break
		}
		p.line = i + 1
		if c := strings.IndexByte(line, '#'); c >= 0 {
			line = line[:c]
		}
		line = strings.TrimRight(line, " \t\r")
		p.toks, p.i = tokenize(line), 0
		p.eol = len(line) + 1
		if len(p.toks) == 0 {
			continue
		}
		p.statement(sc, strings.TrimSpace(line))
	}
	p.checkHosts(sc)
	if len(p.errs) > 0 {
		return nil, p.errs
	}
	return sc, nil
}

// checkHosts checks the host statements against the declarations: in a
// cluster scenario (with host declarations) every statement but array
// names a declared host; without declarations none names one.
func (p *parser) checkHosts(sc *Scenario) {
	if sc.Serve != nil && len(sc.Hosts) == 0 {
		p.errs = append(p.errs, &Error{File: p.file, Line: sc.Serve.Line, Col: 1,
			Msg: "array serve starts an array for the hosts of the scenario: declare them with `host NAME --path iscsi://${portal1}/${target}/0?initiator=IQN …`"})
	}
	declared := map[string]bool{}
	for _, h := range sc.Hosts {
		declared[h.Name] = true
	}
	for _, st := range sc.Stmts {
		fail := func(format string, a ...any) {
			p.errs = append(p.errs, &Error{File: p.file, Line: st.Line, Col: st.Col, Msg: fmt.Sprintf(format, a...)})
		}
		switch {
		case st.Host != "" && !declared[st.Host]:
			if len(sc.Hosts) == 0 {
				fail("host %q is not declared: a cluster scenario starts its hosts with `host NAME --path URI …` lines", st.Host)
			} else {
				fail("host %q is not declared (hosts: %s)", st.Host, strings.Join(hostNames(sc), ", "))
			}
		case st.Host == "" && len(sc.Hosts) > 0 && st.Action != "array":
			fail("which host? this scenario starts hosts %s: write `at %v host NAME %s …`", strings.Join(hostNames(sc), ", "), st.At, st.Action)
		case st.Action == "exec" && st.Host == "":
			fail("exec runs a command on a host of a cluster scenario: declare hosts with `host NAME …` and write `at TIME host NAME exec …`")
		}
	}
}

func hostNames(sc *Scenario) []string {
	var out []string
	for _, h := range sc.Hosts {
		out = append(out, h.Name)
	}
	return out
}

func tokenize(line string) []token {
	var out []token
	start := -1
	for i := 0; i <= len(line); i++ {
		space := i == len(line) || line[i] == ' ' || line[i] == '\t'
		if space && start >= 0 {
			out = append(out, token{line[start:i], start + 1})
			start = -1
		} else if !space && start < 0 {
			start = i
		}
	}
	return out
}

func (p *parser) statement(sc *Scenario, text string) {
	defer func() {
		if r := recover(); r != nil {
			if _, ok := r.(lineErr); !ok {
				panic(r)
			}
		}
	}()
	t := p.next("statement")
	switch t.s {
	case "seed":
		v := p.next("seed value")
		n, err := strconv.ParseUint(v.s, 0, 64)
		if err != nil {
			p.failAt(v.col, "seed %q: want an unsigned integer", v.s)
		}
		sc.Seed = n
		p.end()
	case "device":
		sc.Device = p.next("device name").s
		p.end()
	case "end":
		sc.End = p.duration("end time")
		p.end()
	case "host":
		n := p.next("host name")
		if !validHostName(n.s) {
			p.failAt(n.col, "host name %q: want letters, digits and '-' (e.g. a, esx-1)", n.s)
		}
		for _, h := range sc.Hosts {
			if h.Name == n.s {
				p.failAt(n.col, "host %q is declared twice (first on line %d)", n.s, h.Line)
			}
		}
		h := HostDecl{Line: p.line, Name: n.s}
		for _, a := range p.toks[p.i:] {
			h.Args = append(h.Args, a.s)
		}
		if len(h.Args) == 0 {
			p.failAt(p.eol, "host %s needs its mount arguments, e.g. `host %s --name d0 --path iscsi://${portal1}/${target}/0?initiator=iqn.2026-01.com.example:%s`", n.s, n.s, n.s)
		}
		sc.Hosts = append(sc.Hosts, h)
	case "array":
		p.keyword("serve")
		if sc.Serve != nil {
			p.failAt(t.col, "array serve is declared twice (first on line %d)", sc.Serve.Line)
		}
		d := &ServeDecl{Line: p.line}
		if c, ok := p.peek(); ok {
			d.Config = c.s
			p.i++
		}
		p.end()
		sc.Serve = d
	case "at":
		st := Stmt{Line: p.line, Col: t.col, Text: text}
		st.At = p.duration("time")
		if p.accept("host") {
			st.Host = p.next("host name").s
		}
		p.action(sc, &st)
		sc.Stmts = append(sc.Stmts, st)
	case "every":
		st := Stmt{Line: p.line, Col: t.col, Text: text, Action: "flap"}
		st.Period = p.duration("period")
		if st.Period == 0 {
			p.failAt(p.toks[p.i-1].col, "the period of every must be positive")
		}
		if p.accept("from") {
			st.At = p.duration("start time")
		}
		a := p.next("action")
		if a.s != "flap" {
			p.failAt(a.col, "every repeats flap (want `every 500ms flap path PATH for 10s`; use at for one-off actions), got %q", a.s)
		}
		p.keyword("path")
		st.Path = p.next("path name").s
		p.keyword("for")
		st.Span = p.duration("flap length")
		p.end()
		sc.Stmts = append(sc.Stmts, st)
	default:
		p.failAt(t.col, "unknown statement %q (want seed, device, end, host, array serve, at or every)", t.s)
	}
}

func (p *parser) action(sc *Scenario, st *Stmt) {
	a := p.next("action")
	st.Action = a.s
	switch a.s {
	case "fail":
		p.keyword("path")
		st.Path = p.next("path name").s
		p.keyword("with")
		c := p.next("error class")
		cls, err := ioerr.ParseClass(c.s)
		if err != nil {
			p.failAt(c.col, "unknown error class %q (want path-failure, retryable, not-ready, device-error or permanent-loss)", c.s)
		}
		p.faultTail(st, []string{"--error", cls.String()})
	case "hang":
		p.keyword("path")
		st.Path = p.next("path name").s
		p.faultTail(st, []string{"--hang"})
	case "land-late":
		p.keyword("path")
		st.Path = p.next("path name").s
		d := p.duration("land-late delay")
		if d == 0 {
			p.failAt(p.toks[p.i-1].col, "a land-late delay of 0 lands nothing late (want e.g. land-late path PATH 2s op write)")
		}
		p.faultTail(st, []string{"--land-late", d.String()})
	case "corrupt":
		p.keyword("path")
		st.Path = p.next("path name").s
		k := p.next("corruption (bitflip, misdirect, drop or torn)")
		p.faultTail(st, []string{"--corrupt", k.s})
	case "slow":
		p.keyword("path")
		st.Path = p.next("path name").s
		x := p.next("slow factor (x5)")
		num, ok := strings.CutPrefix(x.s, "x")
		if !ok {
			num, ok = strings.CutSuffix(x.s, "x")
		}
		f, err := strconv.ParseFloat(num, 64)
		if !ok || err != nil || !(f >= 1) {
			p.failAt(x.col, "slow factor %q: want xN with N ≥ 1, e.g. x5", x.s)
		}
		p.faultTail(st, []string{"--slow", num})
	case "flap":
		p.keyword("path")
		st.Path = p.next("path name").s
		p.keyword("every")
		st.Period = p.duration("period")
		if st.Period == 0 {
			p.failAt(p.toks[p.i-1].col, "the flap period must be positive")
		}
		p.keyword("for")
		st.Span = p.duration("flap length")
		p.end()
	case "path":
		st.Path = p.next("path name").s
		s := p.next("on or off")
		if s.s != "on" && s.s != "off" {
			p.failAt(s.col, "path state %q: want on or off", s.s)
		}
		st.Admin = s.s
		p.end()
	case "clear":
		p.keyword("path")
		st.Path = p.next("path name").s
		p.end()
	case "all-paths-down", "apd":
		st.Action = "all-paths-down"
		if p.accept("device") {
			st.Device = p.next("device name").s
		}
		p.faultTail(st, []string{"--error", "path-failure"})
	case "array":
		p.array(st)
	case "exec":
		for _, a := range p.toks[p.i:] {
			st.Argv = append(st.Argv, a.s)
		}
		if len(st.Argv) == 0 {
			p.failAt(p.eol, "exec needs a command, e.g. `exec fio --name=w --filename=${dev} --rw=randwrite --size=16M`")
		}
		p.i = len(p.toks)
	case "policy":
		if t, ok := p.peek(); ok && t.s != "psp" {
			st.Device = t.s
			p.i++
		}
		p.keyword("psp")
		ps := p.next("PSP name")
		known := []string{}
		for _, i := range nmp.PSPs() {
			known = append(known, i.Name)
		}
		if !slices.Contains(known, ps.s) {
			p.failAt(ps.col, "unknown PSP %q (want one of %s)", ps.s, strings.Join(known, ", "))
		}
		st.PSP = ps.s
		for {
			t, ok := p.peek()
			if !ok {
				break
			}
			k, v, found := strings.Cut(t.s, "=")
			if !found || k == "" {
				p.failAt(t.col, "PSP option %q: want NAME=VALUE, e.g. iops=1", t.s)
			}
			if st.Options == nil {
				st.Options = map[string]string{}
			}
			st.Options[k] = v
			p.i++
		}
	default:
		p.failAt(a.col, "unknown action %q (want %s)", a.s, actions)
	}
}

func validHostName(s string) bool {
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-') {
			return false
		}
	}
	return s != ""
}

func (p *parser) array(st *Stmt) {
	st.Array.Array = p.next("array name").s
	t := p.next("array command (controller, transfer-ownership or tpg)")
	switch t.s {
	case "controller":
		st.Array.Controller = p.next("controller name").s
		a := p.next("fail or restore")
		switch a.s {
		case "fail", "restore":
			st.Array.Action = "controller-" + a.s
		default:
			p.failAt(a.col, "controller action %q: want fail or restore", a.s)
		}
	case "transfer-ownership":
		st.Array.Action = "transfer-ownership"
		st.Array.Controller = p.next("controller name").s
	case "tpg":
		n := p.next("target port group number")
		v, err := strconv.Atoi(n.s)
		if err != nil || v < 0 {
			p.failAt(n.col, "target port group %q: want a number", n.s)
		}
		st.Array.TPG = &v
		p.keyword("state")
		st.Array.State = p.next("ALUA state").s
		st.Array.Action = "tpg-state"
	default:
		p.failAt(t.col, "unknown array command %q (want controller, transfer-ownership or tpg)", t.s)
	}
	p.end()
}

// boolFlags are the fault flags that take no value.
var boolFlags = map[string]bool{"late": true, "hang": true, "silent": true}

// faultFlags are the names fault.ParseArgs knows.
var faultFlags = []string{"error", "sense", "late", "hang", "op", "ops", "offset", "length", "range", "probability", "p",
	"every", "after", "count", "duration", "latency", "jitter", "slow", "bandwidth", "seed", "land-late", "silent",
	"bits", "misdirect-by", "torn-at"}

// faultTail reads fault options (the flags of `fault inject`, dashes
// optional) up to "for DUR", "until TIME" or the end of the line.
func (p *parser) faultTail(st *Stmt, args []string) {
	start := p.i
	for {
		t, ok := p.peek()
		if !ok || t.s == "for" || t.s == "until" {
			break
		}
		p.i++
		name, _, hasVal := strings.Cut(strings.TrimLeft(t.s, "-"), "=")
		if !slices.Contains(faultFlags, name) {
			p.failAt(t.col, "unknown fault option %q (want %s, or for/until)", t.s, strings.Join(faultFlags, ", "))
		}
		args = append(args, "--"+strings.TrimLeft(t.s, "-"))
		if !hasVal && !boolFlags[name] {
			v := p.next("value of " + name)
			args = append(args, v.s)
		}
	}
	col := p.eol
	if start < len(p.toks) {
		col = p.toks[start].col
	}
	spec, err := fault.ParseArgs(args)
	if err != nil {
		p.failAt(col, "%s", strings.TrimPrefix(err.Error(), "fault spec: "))
	}
	if spec.Duration > 0 {
		st.Lifetime = spec.Duration
	}
	if t, ok := p.peek(); ok {
		p.i++
		switch t.s {
		case "for":
			st.Lifetime = p.duration("fault length")
			if st.Lifetime == 0 {
				p.failAt(p.toks[p.i-1].col, "a fault lasting 0 does nothing")
			}
		case "until":
			u, _ := p.peek()
			until := p.duration("end time")
			if until <= st.At {
				p.failAt(u.col, "until %v is not after the statement's time %v", until, st.At)
			}
			st.Lifetime = until - st.At
		}
	}
	spec.Duration = st.Lifetime
	st.Spec = spec
	p.end()
}
