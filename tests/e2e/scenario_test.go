package e2e

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mpathfs/mpathfs/internal/needs"
)

// scenarioCmd runs `mpathfs scenario ARGS…` against a mount.
func (m *mount) scenario(ctx context.Context, sub string, args ...string) (string, error) {
	full := append([]string{"scenario", sub, "--control", m.socket}, args...)
	out, err := exec.CommandContext(ctx, binary, full...).CombinedOutput()
	return string(out), err
}

// TestScenarioExampleUnderFio plays tests/scenarios/lab-failover.scn
// against the default lab while fio verifies every block it writes: fio
// sees no error, the run reports every fault and no problem, and the
// integrity oracle of --verify finds nothing.
func TestScenarioExampleUnderFio(t *testing.T) {
	needs.Tools(t, "fio")
	m := startMount(t, "--verify")
	scn, _ := filepath.Abs("../scenarios/lab-failover.scn")
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	type fioOut struct {
		r   fioResult
		out string
		err error
	}
	fioc := make(chan fioOut, 1)
	go func() {
		r, out, err := runFio(ctx, verifyJob(m.file("lab"), 46, "--time_based")...)
		fioc <- fioOut{r, out, err}
	}()
	time.Sleep(2 * time.Second)
	out, err := m.scenario(ctx, "run", "--quiet", "--report", filepath.Join(dir, "r.md"), "--svg", filepath.Join(dir, "r.svg"), scn)
	if err != nil {
		t.Errorf("scenario run: %v\n%s", err, out)
	}
	f := <-fioc
	if f.err != nil || len(f.r.Jobs) == 0 || f.r.Jobs[0].Error != 0 || f.r.Jobs[0].TotalErr != 0 {
		t.Fatalf("fio: %v\n%s", f.err, f.out)
	}
	md, err := os.ReadFile(filepath.Join(dir, "r.md"))
	if err != nil {
		t.Fatal(err)
	}
	report := string(md)
	if !strings.Contains(report, "result: PASS") {
		t.Errorf("report does not pass:\n%s", report)
	}
	for i := 1; i <= 11; i++ {
		if !strings.Contains(report, fmt.Sprintf("| F%d |", i)) {
			t.Errorf("report lacks fault F%d:\n%s", i, report)
		}
	}
	svg, err := os.ReadFile(filepath.Join(dir, "r.svg"))
	if err != nil || !strings.Contains(string(svg), "<polyline") {
		t.Errorf("svg: %v", err)
	}
	if out, err := m.ctl("verify", "lab"); err != nil || !strings.Contains(out, "no lost, stale, torn or misdirected writes") {
		t.Errorf("verify: %v\n%s", err, out)
	}
	m.stopClean(t)
}

// TestScenarioCheckErrors: `scenario check` names the line and column of
// every error and exits 2; a good file prints its timeline.
func TestScenarioCheckErrors(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.scn")
	os.WriteFile(bad, []byte("seed 1\n# a comment\nat 2s fial path P\nat 3s fail path P with path-failure op reed\n"), 0o644)
	out, err := exec.Command(binary, "scenario", "check", bad).CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 2 {
		t.Fatalf("exit %v, want 2\n%s", err, out)
	}
	for _, want := range []string{
		bad + `:3:7: unknown action "fial" (want fail, hang, land-late, corrupt, slow, flap, path, all-paths-down, array, policy, exec, reset, device)`,
		bad + `:4:37: --op "reed"`,
	} {
		if !strings.Contains(string(out), want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	scn, _ := filepath.Abs("../scenarios/lab-failover.scn")
	out, err = exec.Command(binary, "scenario", "check", scn).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "seed 42, 24 steps") {
		t.Errorf("check of the example: %v\n%s", err, out)
	}
}

// TestScenarioGrayFailureEachPSP: a path whose probe passes but whose data
// I/O fails, under fio verify, with every PSP: no fio error, no problem in
// the report. With hedging off and on: a slow path beside the gray one is
// what hedging demotes, and the retries must still find a good path (this
// story once sent I/Os to EIO with hedging on under queue-length).
func TestScenarioGrayFailureEachPSP(t *testing.T) {
	needs.Tools(t, "fio")
	for _, hedge := range []string{"off", "on"} {
		for _, psp := range []string{"VMW_PSP_FIXED", "VMW_PSP_MRU", "VMW_PSP_RR", "queue-length", "service-time"} {
			t.Run("hedge="+hedge+"/"+psp, func(t *testing.T) { grayFailure(t, psp, hedge) })
		}
	}
}

// grayFailure is one run of TestScenarioGrayFailureEachPSP.
func grayFailure(t *testing.T, psp, hedge string) {
	st := store(t, 256<<20)
	args := append(filePaths(st, 3), "--psp", psp, "--check-interval", "500ms", "--hedge", hedge)
	if psp == "VMW_PSP_RR" {
		args = append(args, "--psp-option", "iops=1")
	}
	m := startMount(t, args...)
	scn := filepath.Join(t.TempDir(), "gray.scn")
	os.WriteFile(scn, []byte("at 1s fail path vmhba1:C0:T0:L0 with path-failure op read,write for 3s\n"+
		"at 1s slow path vmhba2:C0:T0:L0 x10 latency 1ms for 3s\nend 5s\n"), 0o644)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	fio := startFio(ctx, verifyJob(m.file("mp0"), 6, "--time_based")...)
	time.Sleep(500 * time.Millisecond)
	out, err := m.scenario(ctx, "run", "--quiet", scn)
	if err != nil {
		t.Errorf("scenario run: %v\n%s", err, out)
	}
	r, fout, ferr := fio.wait()
	if ferr != nil || r.Jobs[0].Error != 0 || r.Jobs[0].TotalErr != 0 {
		t.Fatalf("fio: %v\n%s", ferr, fout)
	}
	if !strings.Contains(out, "| F1 |") || !strings.Contains(out, "result: PASS") {
		t.Errorf("report:\n%s", out)
	}
}

// TestMountScenario: `mount --scenario FILE` plays it in process and
// writes the report next to it.
func TestMountScenario(t *testing.T) {
	dir := t.TempDir()
	scn := filepath.Join(dir, "m.scn")
	os.WriteFile(scn, []byte("at 500ms fail path vmhba1:C0:T0:L0 with path-failure for 1s\nat 1s path vmhba2:C0:T0:L0 off\nat 2s path vmhba2:C0:T0:L0 on\n"), 0o644)
	m := startMount(t, append(filePaths(store(t, 64<<20), 3), "--scenario", scn)...)
	waitFor(t, 30*time.Second, "the scenario to finish", func() bool { return strings.Contains(m.out.String(), "scenario "+scn+" done") })
	md, err := os.ReadFile(scn + ".report.md")
	if err != nil || !strings.Contains(string(md), "| F2 |") {
		t.Fatalf("report: %v\n%s\n%s", err, md, m.out.String())
	}
	m.stopClean(t)
}
