package alua_test

import (
	"context"
	"fmt"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/mpathfs/mpathfs/alua"
	"github.com/mpathfs/mpathfs/array"
	"github.com/mpathfs/mpathfs/backends"
	"github.com/mpathfs/mpathfs/backends/backendtest"
	"github.com/mpathfs/mpathfs/internal/transcript"
	"github.com/mpathfs/mpathfs/ioerr"
	"github.com/mpathfs/mpathfs/mpath"
	"github.com/mpathfs/mpathfs/nmp"
	"github.com/mpathfs/mpathfs/scsi"
)

// TestTranscripts runs the scenarios under testdata/*.txt. Each block is
// a command, a line "----" and the expected output, ended by a blank
// line. Commands:
//
//	array [mode=alua|ap] [implicit=on|off] [explicit=on|off] [transition=D] [failback=on]
//	fail C | restore C | transfer C | stpg ID=STATE… (through port 1 of an up controller) | force ID=STATE
//	sleep D                      advance the (fake) clock
//	io port=N                    one 4 KiB read through the port
//	probe port=N | rtpg port=N | stpg-via port=N ID=STATE… | trespass port=N
//	satp port=N                  one read; VMW_SATP_ALUA's verdict on its error
//	satp-new K=V…                a fresh VMW_SATP_ALUA with options
//	update | satp-activate       its Update (RTPG) or Activate (STPG); the changes
//	guard NAME interval=D limit=N window=D
//	activate NAME port=N         NAME's guard permitting, trespass through the port
//	status
func TestTranscripts(t *testing.T) {
	for _, f := range transcript.Files(t, "testdata/*.txt", 1) {
		t.Run(filepath.Base(f), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				tr := &story{t: t, guards: map[string]*alua.TrespassGuard{}, start: time.Now()}
				transcript.Run(t, f, func(cmd string) []string { return transcript.Lines(tr.do(cmd)) })
			})
		})
	}
}

// story is the state of one transcript run: the array, its ports and the SATP.
type story struct {
	t      *testing.T
	arr    *array.Array
	ports  map[uint16]backends.Backend
	satp   nmp.SATP
	path   map[uint16]*mpath.Path
	guards map[string]*alua.TrespassGuard
	start  time.Time
}

func args(fields []string) map[string]string {
	m := map[string]string{}
	for _, f := range fields {
		k, v, _ := strings.Cut(f, "=")
		m[k] = v
	}
	return m
}

func (tr *story) port(a map[string]string) (uint16, backends.Backend) {
	n, err := strconv.Atoi(a["port"])
	if err != nil {
		tr.t.Fatalf("port=%q", a["port"])
	}
	return uint16(n), tr.ports[uint16(n)]
}

func tpgStates(a map[string]string, skip ...string) map[uint16]scsi.State {
	m := map[uint16]scsi.State{}
outer:
	for k, v := range a {
		for _, s := range skip {
			if k == s {
				continue outer
			}
		}
		id, err := strconv.Atoi(k)
		if err != nil {
			continue
		}
		st, err := scsi.ParseState(v)
		if err != nil {
			panic(err)
		}
		m[uint16(id)] = st
	}
	return m
}

func errString(err error) string {
	if err == nil {
		return "ok"
	}
	c := nmp.ClassifyError(err)
	s := "error: " + c.String()
	if se, ok := ioerr.SenseOf(err); ok {
		s += " sense " + se.String()
	}
	return s
}

func (tr *story) do(cmd string) string {
	f := strings.Fields(cmd)
	a := args(f[1:])
	ctx := context.Background()
	switch f[0] {
	case "array":
		cfg := array.DefaultLabArray()
		cfg.ANOLatency, cfg.ANOBandwidth = 0, 0
		on := func(k string, def bool) bool {
			if v, ok := a[k]; ok {
				return v == "on"
			}
			return def
		}
		if m, ok := a["mode"]; ok {
			cfg.Mode = array.Mode(m)
		}
		cfg.Implicit = on("implicit", cfg.Implicit)
		cfg.Explicit = on("explicit", cfg.Explicit && cfg.Mode == array.ModeALUA)
		cfg.Failback = on("failback", false)
		if d, ok := a["transition"]; ok {
			cfg.Transition, _ = time.ParseDuration(d)
		}
		arr, err := array.New(cfg)
		if err != nil {
			return "error: " + err.Error()
		}
		tr.arr = arr
		tr.ports = map[uint16]backends.Backend{}
		tr.path = map[uint16]*mpath.Path{}
		store := backendtest.NewMem(1 << 16)
		for _, id := range arr.Ports() {
			tr.ports[id] = arr.Port(id, store)
			tr.path[id] = &mpath.Path{Name: fmt.Sprintf("port%d", id), Backend: tr.ports[id]}
			tr.path[id].SetState(mpath.StateActive, "", time.Now())
		}
		tr.satp, _ = alua.NewALUASATP(nil)
		q, _ := tr.ports[1].(backends.Inquirer).Inquiry(ctx)
		return fmt.Sprintf("tpgs=%d %s", q.TPGS, arr.Status())
	case "fail", "restore", "transfer":
		var err error
		switch f[0] {
		case "fail":
			err = tr.arr.FailController(f[1])
		case "restore":
			err = tr.arr.RestoreController(f[1])
		default:
			err = tr.arr.TransferOwnership(f[1])
		}
		if err != nil {
			return "error: " + err.Error()
		}
		return tr.arr.Status().String()
	case "force":
		for id, st := range tpgStates(a) {
			if err := tr.arr.ForceTPGState(id, st); err != nil {
				return "error: " + err.Error()
			}
		}
		return tr.arr.Status().String()
	case "stpg":
		for id, st := range tpgStates(a) {
			if err := tr.arr.SetTPGState(id, st); err != nil {
				return "error: " + err.Error()
			}
		}
		return tr.arr.Status().String()
	case "sleep":
		d, _ := time.ParseDuration(f[1])
		time.Sleep(d)
		return fmt.Sprintf("t=+%v %s", time.Since(tr.start), tr.arr.Status())
	case "status":
		return tr.arr.Status().String()
	case "io":
		_, p := tr.port(a)
		_, err := p.ReadAt(ctx, make([]byte, 4096), 0)
		return errString(err)
	case "probe":
		_, p := tr.port(a)
		return errString(p.(backends.Prober).Probe(ctx))
	case "rtpg":
		_, p := tr.port(a)
		tpgs, err := p.(scsi.Reporter).ReportTPGs(ctx)
		if err != nil {
			return errString(err)
		}
		var s []string
		for _, g := range tpgs {
			x := fmt.Sprintf("%d:%s", g.ID, g.State.Abbrev())
			if g.Pref {
				x += "(pref)"
			}
			s = append(s, x)
		}
		return strings.Join(s, " ")
	case "stpg-via":
		_, p := tr.port(a)
		err := p.(scsi.Setter).SetTPGs(ctx, tpgStates(a, "port"))
		if err != nil {
			return errString(err)
		}
		return "ok " + tr.arr.Status().String()
	case "trespass":
		_, p := tr.port(a)
		if err := p.(scsi.Trespasser).Trespass(ctx); err != nil {
			return errString(err)
		}
		return "ok " + tr.arr.Status().String()
	case "satp":
		id, p := tr.port(a)
		_, err := p.ReadAt(ctx, make([]byte, 4096), 0)
		if err == nil {
			return "ok"
		}
		v := tr.satp.Classify(tr.path[id], mpath.OpRead, err)
		s := errString(err) + " -> " + v.Class.String()
		if v.State != mpath.StateUnknown {
			s += " path=" + v.State.String()
		}
		if v.Retry {
			s += " retry"
		}
		if v.Backoff > 0 {
			s += " backoff=" + v.Backoff.String()
		}
		if v.Update {
			s += " rtpg"
			paths := tr.sortedPaths()
			changes, err := tr.satp.(nmp.Updater).Update(ctx, paths)
			if err != nil {
				s += " (" + err.Error() + ")"
			}
			s += tr.apply(changes)
		}
		return s
	case "satp-new":
		satp, err := alua.NewALUASATP(a)
		if err != nil {
			return "error: " + err.Error()
		}
		tr.satp = satp
		return satp.Config()
	case "update", "satp-activate":
		var changes []nmp.Change
		var err error
		if f[0] == "update" {
			changes, err = tr.satp.(nmp.Updater).Update(ctx, tr.sortedPaths())
		} else {
			changes, err = tr.satp.(nmp.Activator).Activate(ctx, tr.sortedPaths())
		}
		s := tr.satp.Config()
		if err != nil {
			s += "\nerror: " + err.Error()
		}
		return s + tr.apply(changes)
	case "guard":
		g := &alua.TrespassGuard{}
		g.MinInterval, _ = time.ParseDuration(a["interval"])
		g.Limit, _ = strconv.Atoi(a["limit"])
		g.Window, _ = time.ParseDuration(a["window"])
		tr.guards[f[1]] = g
		return "ok"
	case "activate":
		g := tr.guards[f[1]]
		_, p := tr.port(a)
		ok, wait, why := g.Check(time.Now())
		if !ok {
			return fmt.Sprintf("damped: %s; next in %v", why, wait)
		}
		if err := p.(scsi.Trespasser).Trespass(ctx); err != nil {
			return errString(err)
		}
		g.Record(time.Now())
		st := tr.arr.Status()
		return fmt.Sprintf("trespassed: %s trespasses=%d", st, st.Trespasses)
	}
	tr.t.Fatalf("unknown command %q", cmd)
	return ""
}

func (tr *story) sortedPaths() []*mpath.Path {
	var paths []*mpath.Path
	ids := make([]int, 0, len(tr.path))
	for id := range tr.path {
		ids = append(ids, int(id))
	}
	sort.Ints(ids)
	for _, id := range ids {
		paths = append(paths, tr.path[uint16(id)])
	}
	return paths
}

// apply applies the changes an SATP asked for, as the NMP would (dead
// paths revive only through the checker), and prints them.
func (tr *story) apply(changes []nmp.Change) string {
	s := ""
	for _, c := range changes {
		if c.State == c.Path.State() || (c.Path.State() == mpath.StateDead && c.State == mpath.StateActive) {
			continue
		}
		s += fmt.Sprintf("\n  %s: %s -> %s", c.Path.Name, c.Path.State(), c.State)
		c.Path.SetState(c.State, c.Reason, time.Now())
	}
	return s
}
