package iscsiconf

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/mpathfs/mpathfs/internal/needs"
)

// mpathfs runs `mpathfs ARGS… --control tg.control` and returns its
// output and error.
func (tg target) mpathfs(args ...string) (string, error) {
	out, err := exec.Command(binary, append(args, "--control", tg.control)...).CombinedOutput()
	return string(out), err
}

// inq runs libiscsi's iscsi-inq through portal i: nil when INQUIRY works.
func (tg target) inq(i int) error {
	out, err := exec.Command("iscsi-inq", tg.url(i)).CombinedOutput()
	if err != nil {
		return fmt.Errorf("iscsi-inq %s: %v: %s", tg.url(i), err, out)
	}
	return nil
}

// The array server's commands, seen from a real iSCSI client (libiscsi's
// iscsi-inq): a fault on one port answers INQUIRY with CHECK CONDITION
// there and nowhere else; a port offline refuses logins; a failed
// controller takes its ports down and moves ownership; status shows it
// all; SIGTERM stops the server with exit status 0.
func TestArrayServeCommands(t *testing.T) {
	needs.Tools(t, "root", "iscsi-inq")
	dir := t.TempDir()
	cfg := filepath.Join(dir, "array.yaml")
	require.NoError(t, os.WriteFile(cfg, []byte(conformanceConfig(filepath.Join(dir, "array.img"), filepath.Join(dir, "state"))), 0o600))
	tg := startArray(t, cfg)
	require.Len(t, tg.portals, 4)
	require.NoError(t, tg.inq(0), "port 1 answers INQUIRY")

	out, err := tg.mpathfs("array", "fault", "inject", "--port", "1", "--op", "other", "--sense", "05/25/00")
	require.NoError(t, err, out)
	assert.Contains(t, out, "array fault 1:")
	assert.Error(t, tg.inq(0), "port 1 answers INQUIRY with CHECK CONDITION")
	assert.NoError(t, tg.inq(2), "port 3 has no fault")
	out, err = tg.mpathfs("array", "fault", "list")
	require.NoError(t, err, out)
	assert.Contains(t, out, "--port 1 --op other --sense 05/25/00")
	out, err = tg.mpathfs("array", "fault", "clear", "--all")
	require.NoError(t, err, out)
	assert.NoError(t, tg.inq(0), "port 1 answers again")

	out, err = tg.mpathfs("array", "fault", "inject", "--port", "2", "--status", "sleepy")
	require.Error(t, err, "a bad fault is refused")
	assert.Contains(t, out, "want busy, task-set-full or reservation-conflict")

	out, err = tg.mpathfs("array", "port", "offline", "2")
	require.NoError(t, err, out)
	assert.Error(t, tg.inq(1), "port 2 is offline")
	out, err = tg.mpathfs("array", "port", "online", "2")
	require.NoError(t, err, out)
	assert.NoError(t, tg.inq(1), "port 2 is back")

	out, err = tg.mpathfs("array", "fail", "A")
	require.NoError(t, err, out)
	assert.Contains(t, out, "owner=B")
	assert.Error(t, tg.inq(0), "controller A's ports are down")
	assert.NoError(t, tg.inq(2), "controller B serves")

	out, err = tg.mpathfs("array", "status", "--json")
	require.NoError(t, err, out)
	var st struct {
		Target string `json:"target"`
		Array  struct {
			Owner       string `json:"owner"`
			Controllers []struct {
				Name string `json:"name"`
				Up   bool   `json:"up"`
			} `json:"controllers"`
		} `json:"array"`
		Portals []struct {
			Port   int    `json:"port"`
			Addr   string `json:"portal"`
			Online bool   `json:"online"`
		} `json:"portals"`
		LUs []struct {
			Size int64 `json:"size"`
		} `json:"lus"`
	}
	require.NoError(t, json.Unmarshal([]byte(out), &st), out)
	assert.Equal(t, tg.iqn, st.Target)
	assert.Equal(t, "B", st.Array.Owner)
	assert.Len(t, st.Portals, 4)
	require.Len(t, st.LUs, 1)
	assert.EqualValues(t, 64<<20, st.LUs[0].Size)
	out, err = tg.mpathfs("array", "status")
	require.NoError(t, err, out)
	assert.Contains(t, out, "Controller")
	assert.Contains(t, out, "reservations:")

	out, err = tg.mpathfs("array", "restore", "A")
	require.NoError(t, err, out)
	assert.NoError(t, tg.inq(0), "controller A is back")

	out, err = tg.mpathfs("array", "session", "drop", "iqn.2026-12.io.mpathfs.test:nobody")
	require.Error(t, err)
	assert.Contains(t, out, "no connection")

	require.NoError(t, tg.proc.cmd.Process.Signal(syscall.SIGTERM))
	select {
	case <-tg.proc.exited:
	case <-time.After(20 * time.Second):
		t.Fatalf("array serve did not stop 20 s after SIGTERM:\n%s", tg.proc.out.String())
	}
	assert.NoError(t, tg.proc.err, "SIGTERM is a clean stop:\n%s", tg.proc.out.String())
	assert.True(t, strings.Contains(tg.proc.out.String(), "stopping"))
	_, err = os.Stat(tg.control)
	assert.True(t, os.IsNotExist(err), "the control socket is removed")
}

// A config with a mistake: the server refuses to start, names the problem
// and exits with status 2.
func TestArrayServeBadConfig(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "bad.yaml")
	require.NoError(t, os.WriteFile(cfg, []byte("target: iqn.2026-12.x:y\nlus: [{file: /x, size: 1G, colour: red}]\n"), 0o600))
	cmd := exec.Command(binary, "array", "serve", "--config", cfg, "--control", filepath.Join(dir, "s.sock"))
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	require.ErrorAs(t, err, &ee, string(out))
	assert.Equal(t, 2, ee.ExitCode())
	assert.Contains(t, string(out), `unknown key "colour" in an entry of lus`)
}
