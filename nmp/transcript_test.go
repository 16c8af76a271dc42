package nmp

import (
	"bytes"
	"context"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/mpathfs/mpathfs/backends"
	"github.com/mpathfs/mpathfs/internal/transcript"
	"github.com/mpathfs/mpathfs/ioerr"
	"github.com/mpathfs/mpathfs/mpath"
)

// Failover stories as transcripts, in the style of pebble's and raft's
// datadriven tests: testdata/transcripts/*.txt hold commands, each followed
// by "----" and the output it gives (the I/Os and the paths that served
// them from the per-I/O trace, events, path states). The test runs every
// story in a synctest bubble, so time is fake and the output deterministic,
// and compares (internal/transcript runs the files); with -rewrite it
// writes the outputs it got instead:
//
//	go test ./nmp -run TestTranscripts -rewrite
//
// Commands:
//
//	paths N [psp=NAME] [satp=NAME] [apd=D] [io-timeout=D] [check=D]
//	        [flap-threshold=N] [flap-window=D] [hold-down=D] [failback=M]
//	        [no-path-retry=V] [marginal-errors=N] [marginal-window=D] [PSP option=V…]
//	                          a new device over N fake paths p1…pN (check: the
//	                          checker's interval, default 1h: use "check")
//	fail PATH CLASS [ops=read,write,flush,probe]   the path fails I/O with an
//	                          error of the class (all operations by default;
//	                          without probe in ops the checker sees no fault)
//	hang PATH [ops=…]         operations hang until recover or their deadline
//	slow PATH D               operations take D longer
//	recover PATH              the fault ends; hung operations proceed
//	write SIZE@OFF [xN] [&]   I/O through the device; & runs it in the
//	read SIZE@OFF [xN] [&]    background (see wait)
//	wait                      wait for the background I/Os and print them
//	flush                     flush the device; prints which paths flushed
//	check                     one round of the path checker
//	admin PATH on|off         the administrator's switch
//	policy NAME [opt=V…]      change the PSP live
//	switch PATH               the administrator's path switch
//	queue on|off              queueing restored or disabled
//	rank PATH N               the path's MRU rank
//	fail-path PATH            mark a path dead at once (hot removal)
//	sleep D                   let fake time pass (the checker ticks)
//	status                    one line per path with its counters
//	expect [PATH=STATE] [apd=BOOL] [preferred=PATH] [served=PATH] [held=PATH…]
//	                          assertions: a mismatch fails the test whatever
//	                          the golden output says
//
// After each command the output lists the events published during it and
// a state line: fake time since the start, each path's state, APD and, for
// VMW_PSP_FIXED, the preferred path.

func TestTranscripts(t *testing.T) {
	for _, file := range transcript.Files(t, "testdata/transcripts/*.txt", 6) {
		t.Run(strings.TrimSuffix(filepath.Base(file), ".txt"), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				s := &story{t: t, start: time.Now()}
				transcript.Run(t, file, s.run)
				s.close()
			})
		})
	}
}

// story is the state of one transcript run, inside its bubble.
type story struct {
	t      *testing.T
	start  time.Time
	r      *rig
	model  []byte
	seq    byte
	lastOK string // the path that served the last synchronous I/O
	bg     []*bgIO
	out    []string
}

type bgIO struct {
	desc  string
	id    uint64
	op    string
	buf   []byte
	off   int64
	start time.Time
	done  chan ioResult
}

func (s *story) printf(format string, args ...any) {
	s.out = append(s.out, fmt.Sprintf(format, args...))
}

func (s *story) fatalf(format string, args ...any) {
	s.t.Helper()
	s.t.Fatalf(format, args...)
}

func (s *story) close() {
	if s.r != nil {
		for _, f := range s.r.fakes {
			f.recover()
		}
		s.r.d.Close()
	}
}

func (s *story) run(cmd string) []string {
	s.out = nil
	f := strings.Fields(cmd)
	args := f[1:]
	if f[0] != "paths" && s.r == nil {
		s.fatalf("%q before paths", cmd)
	}
	switch f[0] {
	case "paths":
		s.newDevice(args)
	case "fail", "hang":
		if len(args) < 1 {
			s.fatalf("%s: want PATH", cmd)
		}
		fk := s.r.fake(args[0])
		var ops []string
		rest := args[1:]
		if len(rest) > 0 && strings.HasPrefix(rest[len(rest)-1], "ops=") {
			ops = []string{strings.TrimPrefix(rest[len(rest)-1], "ops=")}
			rest = rest[:len(rest)-1]
		}
		if f[0] == "hang" {
			fk.hangOps(ops...)
			break
		}
		if len(rest) != 1 {
			s.fatalf("%s: want fail PATH CLASS [ops=…]", cmd)
		}
		c, err := ioerr.ParseClass(rest[0])
		if err != nil {
			s.fatalf("%s: %v", cmd, err)
		}
		fk.failClass(c, ops...)
	case "slow":
		d, err := time.ParseDuration(args[1])
		if err != nil {
			s.fatalf("%s: %v", cmd, err)
		}
		s.r.fake(args[0]).slow(d)
	case "recover":
		s.r.fake(args[0]).recover()
	case "write", "read":
		s.io(f[0], args)
	case "wait":
		s.wait()
	case "flush":
		before := flushCounts(s.r)
		err := s.r.d.Flush(context.Background())
		var flushed []string
		for i, n := range flushCounts(s.r) {
			if n > before[i] {
				flushed = append(flushed, s.r.fakes[i].name)
			}
		}
		s.printf("flush: %s; reached %s", errString(err), orNone(flushed))
	case "check":
		s.r.d.CheckNow()
	case "admin":
		if err := s.r.d.SetPathAdmin(args[0], args[1] == "on"); err != nil {
			s.printf("error: %v", err)
		}
	case "switch":
		if err := s.r.d.SwitchPath(args[0]); err != nil {
			s.printf("error: %v", err)
		}
	case "queue":
		if err := s.r.d.SetQueueing(args[0] == "on"); err != nil {
			s.printf("error: %v", err)
		}
	case "policy":
		name, opts := args[0], kv(args[1:])
		if err := s.r.d.SetPolicy(name, opts); err != nil {
			s.printf("error: %v", err)
		}
	case "rank":
		n, _ := strconv.Atoi(args[1])
		if err := s.r.d.SetPathRank(args[0], n); err != nil {
			s.printf("error: %v", err)
		}
	case "fail-path":
		if err := s.r.d.FailPath(args[0], "test: hot removed"); err != nil {
			s.printf("error: %v", err)
		}
	case "sleep":
		d, err := time.ParseDuration(args[0])
		if err != nil {
			s.fatalf("%s: %v", cmd, err)
		}
		time.Sleep(d)
	case "status":
		for _, p := range s.r.d.Status().Paths {
			s.printf("%s state=%s admin=%s preferred=%v held=%v pdl=%v reads=%d writes=%d flushes=%d errors=%v",
				p.Name, p.State, p.Admin, p.Preferred, p.HeldDown, p.PDL, p.Reads, p.Writes, p.Flushes, p.ErrorsBy)
		}
	case "expect":
		s.expect(args)
	default:
		s.fatalf("unknown command %q", cmd)
	}
	synctest.Wait()
	for _, ev := range s.r.drainEvents() {
		line := "event: " + ev.Kind
		if ev.Path != "" {
			line += " " + ev.Path
		}
		if ev.From != "" || ev.To != "" {
			line += " " + ev.From + " -> " + ev.To
		}
		if ev.Reason != "" {
			line += " (" + ev.Reason + ")"
		}
		s.printf("%s", line)
	}
	s.printf("%s", s.stateLine())
	return s.out
}

func orNone(s []string) string {
	if len(s) == 0 {
		return "none"
	}
	return strings.Join(s, " ")
}

func kv(args []string) map[string]string {
	m := map[string]string{}
	for _, a := range args {
		k, v, _ := strings.Cut(a, "=")
		m[k] = v
	}
	return m
}

func (s *story) newDevice(args []string) {
	if s.r != nil {
		s.fatalf("one device per story")
	}
	n, err := strconv.Atoi(args[0])
	if err != nil {
		s.fatalf("paths: %v", err)
	}
	cfg := mpath.DeviceConfig{Name: "dev0", CheckInterval: time.Hour, PSPOptions: map[string]string{}}
	dur := func(v string) time.Duration {
		d, err := time.ParseDuration(v)
		if err != nil {
			s.fatalf("paths: %v", err)
		}
		return d
	}
	for k, v := range kv(args[1:]) {
		switch k {
		case "psp":
			cfg.PSP = v
		case "satp":
			cfg.SATP = v
		case "apd":
			cfg.APDTimeout = dur(v)
		case "io-timeout":
			cfg.IOTimeout = dur(v)
		case "check":
			cfg.CheckInterval = dur(v)
		case "flap-threshold":
			cfg.FlapThreshold, _ = strconv.Atoi(v)
		case "flap-window":
			cfg.FlapWindow = dur(v)
		case "hold-down":
			cfg.HoldDown = dur(v)
		case "failback":
			cfg.Failback = v
		case "no-path-retry":
			cfg.NoPathRetry = v
		case "marginal-errors":
			cfg.MarginalErrors, _ = strconv.Atoi(v)
		case "marginal-window":
			cfg.MarginalWindow = dur(v)
		default:
			cfg.PSPOptions[k] = v
		}
	}
	s.r = newRig(s.t, n, cfg)
	s.model = make([]byte, rigSize)
	c := s.r.d.Config()
	s.printf("device dev0: %d paths, %s %s, satp %s", n, c.PSP, s.r.d.PSP().Config(), c.SATP)
	s.printf("timing: io-timeout=%v apd=%v check=%v flap=%d in %v hold-down=%v", c.IOTimeout, c.APDTimeout, c.CheckInterval, c.FlapThreshold, c.FlapWindow, c.HoldDown)
}

// io runs "write 4k@0 [xN] [&]".
func (s *story) io(op string, args []string) {
	if len(args) == 0 {
		s.fatalf("%s: want SIZE@OFF", op)
	}
	sz, off, ok := strings.Cut(args[0], "@")
	size, err1 := backends.ParseSize(sz)
	offset, err2 := backends.ParseSize(off)
	if !ok || err1 != nil || err2 != nil {
		s.fatalf("%s %s: want SIZE@OFF", op, args[0])
	}
	count, background := 1, false
	for _, a := range args[1:] {
		switch {
		case a == "&":
			background = true
		case strings.HasPrefix(a, "x"):
			count, _ = strconv.Atoi(a[1:])
		}
	}
	desc := op + " " + args[0]
	for range count {
		buf := make([]byte, size)
		if op == "write" {
			s.seq++
			for i := range buf {
				buf[i] = s.seq
			}
		}
		b := &bgIO{desc: desc, op: op, buf: buf, off: offset, start: time.Now(), done: make(chan ioResult, 1)}
		go func() {
			var err error
			if op == "write" {
				_, err = s.r.d.WriteAt(context.Background(), buf, offset)
			} else {
				_, err = s.r.d.ReadAt(context.Background(), buf, offset)
			}
			b.done <- ioResult{err: err, elapsed: time.Since(b.start)}
		}()
		// The I/O has begun once the goroutines settle: its trace ID is known.
		synctest.Wait()
		b.id = s.r.d.ioSeq.Load()
		if background {
			select {
			case res := <-b.done:
				s.printf("%s", s.result(b, res))
			default:
				s.bg = append(s.bg, b)
				s.printf("%s: queued as [%d]", desc, len(s.bg))
			}
			continue
		}
		s.printf("%s", s.result(b, <-b.done))
	}
}

// result describes a finished I/O from its trace record and checks it
// against the model.
func (s *story) result(b *bgIO, res ioResult) string {
	var rec *TraceRecord
	for _, r := range s.r.tracer.Records() {
		if r.ID == b.id {
			rec = &r
		}
	}
	line := b.desc + ": "
	if res.err != nil {
		line += "error: " + res.err.Error()
	} else {
		line += "ok"
		if b.op == "write" {
			copy(s.model[b.off:], b.buf)
		} else if !bytes.Equal(b.buf, s.model[b.off:b.off+int64(len(b.buf))]) {
			line += " DATA MISMATCH"
			s.t.Errorf("%s: read other data than written", b.desc)
		} else {
			line += ", data ok"
		}
	}
	if res.elapsed > 0 {
		line += fmt.Sprintf(" (took %v)", res.elapsed)
	}
	if rec == nil {
		s.t.Errorf("%s: no trace record #%d", b.desc, b.id)
		return line
	}
	var tries []string
	for _, a := range rec.Attempts {
		tr := a.Path + " (" + a.Reason + ")"
		if a.Class != "" {
			tr += " failed: " + a.Class
		}
		tries = append(tries, tr)
	}
	s.lastOK = ""
	if res.err == nil && len(rec.Attempts) > 0 {
		s.lastOK = rec.Attempts[len(rec.Attempts)-1].Path
	}
	if len(tries) == 0 {
		return line + " via no path"
	}
	return line + " via " + strings.Join(tries, " -> ")
}

func (s *story) wait() {
	for i, b := range s.bg {
		s.printf("[%d] %s", i+1, s.result(b, <-b.done))
	}
	s.bg = nil
}

func (s *story) stateLine() string {
	st := s.r.d.Status()
	var b strings.Builder
	fmt.Fprintf(&b, "t=%v:", time.Since(s.start))
	for _, p := range st.Paths {
		fmt.Fprintf(&b, " %s=%s", p.Name, p.State)
		var marks []string
		if p.HeldDown {
			marks = append(marks, "held")
		}
		if p.PDL {
			marks = append(marks, "pdl")
		}
		if len(marks) > 0 {
			b.WriteString("(" + strings.Join(marks, ",") + ")")
		}
	}
	if st.APD {
		b.WriteString(" APD")
	}
	if f, ok := s.r.d.PSP().(*fixed); ok {
		if p, user := f.Preferred(); p != nil {
			kind := "default"
			if user {
				kind = "user"
			}
			fmt.Fprintf(&b, " preferred=%s(%s)", p.Name, kind)
		}
	}
	return b.String()
}

func (s *story) expect(args []string) {
	st := s.r.d.Status()
	var fails []string
	for _, a := range args {
		k, v, _ := strings.Cut(a, "=")
		switch k {
		case "apd":
			if got := strconv.FormatBool(st.APD); got != v {
				fails = append(fails, "apd="+got)
			}
		case "served":
			if s.lastOK != v {
				fails = append(fails, "served="+s.lastOK)
			}
		case "preferred":
			f, ok := s.r.d.PSP().(*fixed)
			if !ok {
				fails = append(fails, "preferred: not VMW_PSP_FIXED")
				break
			}
			if p, _ := f.Preferred(); p == nil || p.Name != v {
				fails = append(fails, fmt.Sprintf("preferred=%v", p.Name))
			}
		case "held":
			for _, name := range strings.Split(v, ",") {
				for _, p := range st.Paths {
					if p.Name == name && !p.HeldDown {
						fails = append(fails, name+" not held down")
					}
				}
			}
		default:
			p := s.r.d.FindPath(k)
			if p == nil {
				s.fatalf("expect: unknown key %q", k)
			}
			if p.State().String() != v {
				fails = append(fails, k+"="+p.State().String())
			}
		}
	}
	if len(fails) > 0 {
		s.t.Errorf("expect %s: got %s", strings.Join(args, " "), strings.Join(fails, " "))
		s.printf("FAILED: %s", strings.Join(fails, " "))
		return
	}
	s.printf("ok")
}
