package iscsiconf

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mpathfs/mpathfs/internal/tgtd"
)

// target is an iSCSI target under test: its portals (host:port), target
// name and the LUN of the logical unit the suite runs on.
type target struct {
	name    string // "array serve" or "tgt"
	portals []string
	iqn     string
	lun     int
	control string   // array serve: its control socket
	proc    *process // array serve: the process
}

// url is libiscsi's URL of the logical unit through portal i.
func (tg target) url(i int) string {
	return fmt.Sprintf("iscsi://%s/%s/%d", tg.portals[i%len(tg.portals)], tg.iqn, tg.lun)
}

// process is a server the test started; stop ends it by PID.
type process struct {
	t      *testing.T
	name   string
	cmd    *exec.Cmd
	out    *syncBuffer
	exited chan struct{}
	err    error
}

func start(t *testing.T, name string, env []string, args ...string) *process {
	t.Helper()
	p := &process{t: t, name: name, out: &syncBuffer{}, exited: make(chan struct{})}
	p.cmd = exec.Command(args[0], args[1:]...)
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	p.cmd.Env = append(os.Environ(), env...)
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("starting %s: %v", name, err)
	}
	go func() { p.err = p.cmd.Wait(); close(p.exited) }()
	t.Cleanup(p.stop)
	return p
}

func (p *process) running() bool {
	select {
	case <-p.exited:
		return false
	default:
		return true
	}
}

// stop sends SIGTERM to the PID, then SIGKILL after 5 s.
func (p *process) stop() {
	if !p.running() {
		return
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
	case <-time.After(5 * time.Second):
		p.cmd.Process.Kill()
		<-p.exited
	}
}

// waitFor polls cond every 50 ms for up to 30 s; the process must keep
// running meanwhile.
func (p *process) waitFor(what string, cond func() bool) {
	p.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if !p.running() {
			p.t.Fatalf("%s exited (%v) before %s:\n%s", p.name, p.err, what, p.out.String())
		}
		if time.Now().After(deadline) {
			p.t.Fatalf("%s: no %s after 30 s:\n%s", p.name, what, p.out.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// startTGT runs Debian's tgtd (internal/tgtd: a free port of 127.0.0.1,
// its own management socket, killed by PID) with one thin-provisioned
// 64 MiB file-backed logical unit at LUN 1.
func startTGT(t *testing.T) target {
	t.Helper()
	d := tgtd.Start(t)
	tg := d.AddTarget("iqn.2026-12.io.mpathfs.test:tgt-peer")
	tg.AddLU(1, 64<<20)
	d.Adm("--op", "update", "--mode", "logicalunit", "--tid", strconv.Itoa(tg.TID), "--lun", "1", "--params", "thin_provisioning=1")
	return target{name: "tgt", portals: []string{d.Addr}, iqn: tg.IQN, lun: 1}
}

// startArray runs `mpathfs array serve --config cfg` and reads the portals
// and the target name it prints. cfg gives every portal port 0 (the
// server picks free ports and prints them).
func startArray(t *testing.T, cfg string) target {
	t.Helper()
	dir := t.TempDir()
	sock := filepath.Join(dir, "array.sock")
	p := start(t, "mpathfs array serve", []string{"MPATHFS_STATE_DIR=" + filepath.Join(dir, "state")},
		binary, "array", "serve", "--config", cfg, "--control", sock)
	p.waitFor("ready line", func() bool {
		return strings.Contains(p.out.String(), "\nready") || strings.HasPrefix(p.out.String(), "ready")
	})
	tg := target{name: "array serve", control: sock, proc: p}
	sc := bufio.NewScanner(strings.NewReader(p.out.String()))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		switch {
		case len(f) >= 2 && f[0] == "target":
			tg.iqn = f[1]
		case len(f) >= 2 && f[0] == "portal":
			tg.portals = append(tg.portals, f[1])
		}
	}
	if tg.iqn == "" || len(tg.portals) < 2 {
		t.Fatalf("mpathfs array serve printed no target and two portals:\n%s", p.out.String())
	}
	return tg
}

// runFamily runs one family of iscsi-test-cu (destructive tests allowed)
// against tg; MultipathIO gets two portals of tg (the same one twice when
// tg has only one). A family that does not finish in 5 minutes is a
// failure of every test it had not finished.
func runFamily(t *testing.T, tg target, family string) ([]Result, string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	args := []string{"-d", "-t", "ALL." + family, tg.url(0)}
	if family == "MultipathIO" {
		args = append(args, tg.url(len(tg.portals)/2))
	}
	cmd := exec.CommandContext(ctx, "iscsi-test-cu", args...)
	out, err := cmd.CombinedOutput()
	res, perr := parseCUnit(string(out))
	if ctx.Err() != nil {
		return res, string(out), fmt.Errorf("iscsi-test-cu %s against %s did not finish in 5 minutes", family, tg.name)
	}
	if perr != nil {
		return res, string(out), perr
	}
	if len(res) == 0 {
		return nil, string(out), fmt.Errorf("iscsi-test-cu %s against %s ran no test (exit %v)", family, tg.name, err)
	}
	return res, string(out), nil
}
