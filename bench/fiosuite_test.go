package bench

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/mpathfs/mpathfs/internal/needs"
)

// The contract of fio-suite.sh that run.sh, fuse-options.sh and profile.sh
// rely on: one JSON line per job with these fields, exit status 0 only when
// every job's error is 0.
var suiteFields = []string{"label", "job", "target", "direct", "engine", "numjobs", "iodepth", "bs",
	"rd_iops", "rd_mibs", "rd_p50_us", "rd_p99_us", "rd_max_us",
	"wr_iops", "wr_mibs", "wr_p50_us", "wr_p99_us", "wr_max_us",
	"error", "verify", "note"}

// runSuite runs fio-suite.sh TARGET LABEL SIZE with env added and returns
// its JSON lines, decoded, and its exit status.
func runSuite(t *testing.T, env []string, target, label, size string) ([]map[string]any, int) {
	t.Helper()
	cmd := exec.Command("bash", "fio-suite.sh", target, label, size)
	cmd.Env = append(os.Environ(), env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	rc := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		rc = ee.ExitCode()
	} else {
		require.NoError(t, err)
	}
	t.Logf("fio-suite.sh stderr:\n%s", stderr.String())
	var lines []map[string]any
	sc := bufio.NewScanner(&stdout)
	for sc.Scan() {
		var m map[string]any
		require.NoError(t, json.Unmarshal(sc.Bytes(), &m), "not a JSON line: %q", sc.Text())
		for _, f := range suiteFields {
			assert.Contains(t, m, f, "line %q lacks %s", sc.Text(), f)
		}
		lines = append(lines, m)
	}
	return lines, rc
}

func TestFioSuiteJobs(t *testing.T) {
	needs.Tools(t, "fio", "jq", "timeout")
	target := filepath.Join(t.TempDir(), "target.img")
	raw := t.TempDir()
	lines, rc := runSuite(t, []string{"JOBS=randread4k seqwrite1m verify", "RUNTIME=1", "RAMP=0",
		"VERIFY_SIZE=8M", "RAWDIR=" + raw}, target, "t 1", "16M")
	require.Equal(t, 0, rc)
	require.Len(t, lines, 3)

	rr := lines[0]
	assert.Equal(t, "t 1", rr["label"])
	assert.Equal(t, "randread4k", rr["job"])
	assert.Equal(t, target, rr["target"])
	assert.EqualValues(t, 1, rr["direct"])
	assert.Equal(t, "psync", rr["engine"])
	assert.EqualValues(t, 1, rr["numjobs"])
	assert.EqualValues(t, 1, rr["iodepth"])
	assert.Equal(t, "4k", rr["bs"])
	assert.Greater(t, rr["rd_iops"], 0.0)
	assert.EqualValues(t, 0, rr["wr_iops"])
	assert.EqualValues(t, 0, rr["error"])
	assert.Nil(t, rr["verify"])

	sw := lines[1]
	assert.Equal(t, "seqwrite1m", sw["job"])
	assert.EqualValues(t, 8, sw["iodepth"])
	assert.Equal(t, "1M", sw["bs"])
	assert.Greater(t, sw["wr_mibs"], 0.0)
	assert.EqualValues(t, 0, sw["rd_iops"])

	v := lines[2]
	assert.Equal(t, "verify", v["job"])
	assert.EqualValues(t, 0, v["error"])
	assert.Equal(t, "ok", v["verify"])
	assert.Greater(t, v["rd_iops"], 0.0, "the verify job reads back what it wrote")

	for _, j := range []string{"randread4k", "seqwrite1m", "verify"} {
		assert.FileExists(t, filepath.Join(raw, "t_1."+j+".json"), "RAWDIR keeps fio's JSON")
	}
}

func TestFioSuiteReportsFailures(t *testing.T) {
	needs.Tools(t, "fio", "jq", "timeout")
	dir := t.TempDir()
	// A target of zeros and an fio that only verifies: every block is
	// wrong, as if the writes had been lost.
	target := filepath.Join(dir, "zeros.img")
	require.NoError(t, os.WriteFile(target, make([]byte, 8<<20), 0o600))
	fakeFio := filepath.Join(dir, "fio")
	require.NoError(t, os.WriteFile(fakeFio, []byte("#!/bin/sh\n"+
		"case \"$*\" in *--enghelp*) exec fio \"$@\";; esac\n"+
		"exec fio --verify_only \"$@\"\n"), 0o755))

	lines, rc := runSuite(t, []string{"JOBS=verify nosuchjob", "FIO=" + fakeFio, "VERIFY_SIZE=4M"}, target, "f", "8M")
	require.Equal(t, 1, rc, "a failed job makes the exit status 1")
	require.Len(t, lines, 2)
	assert.Equal(t, "verify", lines[0]["job"])
	assert.NotEqualValues(t, 0, lines[0]["error"])
	assert.Equal(t, "failed", lines[0]["verify"])
	assert.NotEmpty(t, lines[0]["note"], "the note carries fio's first error line")
	assert.Equal(t, "nosuchjob", lines[1]["job"])
	assert.EqualValues(t, 1, lines[1]["error"])
	assert.True(t, strings.Contains(lines[1]["note"].(string), "nosuchjob.fio"), "note: %v", lines[1]["note"])
}

func TestFioSuiteEngineFallback(t *testing.T) {
	needs.Tools(t, "fio", "jq", "timeout")
	target := filepath.Join(t.TempDir(), "target.img")
	lines, rc := runSuite(t, []string{"JOBS=randrw4k", "RUNTIME=1", "RAMP=0", "AIO_ENGINE=no-such-engine"}, target, "e", "16M")
	require.Equal(t, 0, rc)
	require.Len(t, lines, 1)
	assert.Equal(t, "psync", lines[0]["engine"])
	assert.Contains(t, lines[0]["note"], "no-such-engine")
	assert.EqualValues(t, 0, lines[0]["error"])
}

func TestFioSuiteUsage(t *testing.T) {
	cmd := exec.Command("bash", "fio-suite.sh", "only-a-target")
	err := cmd.Run()
	var ee *exec.ExitError
	require.ErrorAs(t, err, &ee)
	assert.Equal(t, 2, ee.ExitCode())
}
