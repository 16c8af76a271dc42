package e2e

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/mpathfs/mpathfs/internal/needs"
)

// TestFaultScripts runs the scripts of tests/faults against a mounted device
// under fio with verification: flapping, failing the busiest path, rolling
// failures and a short all-paths-down must all pass with zero fio errors.
func TestFaultScripts(t *testing.T) {
	needs.Tools(t, "fio", "jq")
	st := store(t, 256<<20)
	m := startMount(t, append([]string{"--name", "d0", "--psp", "VMW_PSP_RR", "--psp-option", "iops=8", "--check-interval", "300ms", "--flap-threshold", "100"}, filePaths(st, 3)...)...)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	run := startFio(ctx, verifyJob(m.file("d0"), 14)...)
	time.Sleep(time.Second)
	paths := m.status().Devices[0].Paths
	dir, _ := filepath.Abs("../faults")
	env := append(os.Environ(), "MPATHFS="+binary)
	for _, script := range [][]string{
		{"flap.sh", paths[0].Name, "0.5", "3"},
		{"fail-active.sh", "d0", "1"},
		{"rolling.sh", "d0", "1"},
		{"apd.sh", "d0", "1"},
	} {
		args := append([]string{"--control", m.socket}, script[1:]...)
		cmd := exec.CommandContext(ctx, filepath.Join(dir, script[0]), args...)
		cmd.Env = env
		o, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("%s: %v\n%s", script[0], err, o)
		}
		t.Logf("%s:\n%s", script[0], o)
	}
	r, out, err := run.wait()
	if err != nil || r.Jobs[0].TotalErr != 0 || r.Jobs[0].Error != 0 {
		t.Fatalf("fio across the fault scripts: %v\n%s", err, out)
	}
	if f := m.mustCtl("fault", "list"); f != "no active faults\n" {
		t.Errorf("the scripts left faults behind:\n%s", f)
	}
	m.stopClean(t)
}
