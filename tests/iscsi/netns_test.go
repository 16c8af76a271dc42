package iscsiconf

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/mpathfs/mpathfs/internal/needs"
)

// TestArrayServeInNetns: the array server runs inside a network namespace
// the test created, with the built-in default array (four portals on the
// namespace's own 127.0.0.1:3260-3263, which the host's ports do not
// touch); a real client inside the namespace logs in and gets INQUIRY
// through two portals, while the control socket (a file) is reached from
// outside it.
func TestArrayServeInNetns(t *testing.T) {
	needs.Tools(t, "root", "ip", "iscsi-inq")
	ns := fmt.Sprintf("mpathfs-test-%d", os.Getpid())
	if out, err := exec.Command("ip", "netns", "add", ns).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add %s: %v: %s", ns, err, out)
	}
	t.Cleanup(func() { exec.Command("ip", "netns", "delete", ns).Run() })
	out, err := exec.Command("ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up").CombinedOutput()
	require.NoError(t, err, "lo up in %s: %s", ns, out)

	dir := t.TempDir()
	sock := filepath.Join(dir, "array.sock")
	// ip netns exec execs the command in place: the PID is the server's.
	p := start(t, "mpathfs array serve (netns)", []string{"MPATHFS_STATE_DIR=" + filepath.Join(dir, "state")},
		"ip", "netns", "exec", ns, binary, "array", "serve", "--control", sock)
	p.waitFor("ready line", func() bool {
		return strings.Contains(p.out.String(), "\nready") || strings.HasPrefix(p.out.String(), "ready")
	})
	assert.Contains(t, p.out.String(), "127.0.0.1:3260")

	for _, port := range []string{"3260", "3262"} {
		url := "iscsi://127.0.0.1:" + port + "/iqn.2026-12.io.mpathfs:array/0"
		out, err := exec.Command("ip", "netns", "exec", ns, "iscsi-inq", url).CombinedOutput()
		require.NoError(t, err, "iscsi-inq %s inside %s: %s", url, ns, out)
		assert.Contains(t, string(out), "MPATHFS", "standard INQUIRY names the vendor")
	}
	status, err := exec.Command(binary, "array", "status", "--control", sock).CombinedOutput()
	require.NoError(t, err, "array status from outside the namespace: %s", status)
	assert.Contains(t, string(status), "3263")
	p.stop()

	// One server in the host's namespace with a portal of each controller
	// inside the test's namespace (`netns:` in the config): the portals
	// there answer a client inside it, the others a client outside.
	cfg := filepath.Join(dir, "netns.yaml")
	require.NoError(t, os.WriteFile(cfg, []byte(fmt.Sprintf(`target: iqn.2026-12.io.mpathfs.test:netns
state_dir: %s
lus:
  - {name: n, lun: 0, file: %s, size: 16M}
controllers:
  - name: A
    ports:
      - {id: 1, portal: "127.0.0.1:0"}
      - {id: 2, portal: "127.0.0.1:3270", netns: %s}
  - name: B
    ports:
      - {id: 3, portal: "127.0.0.1:0"}
      - {id: 4, portal: "127.0.0.1:3271", netns: %s}
`, filepath.Join(dir, "state2"), filepath.Join(dir, "n.img"), ns, ns)), 0o600))
	tg := startArray(t, cfg)
	require.Len(t, tg.portals, 4, "four portals printed")
	for _, port := range []string{"3270", "3271"} {
		url := "iscsi://127.0.0.1:" + port + "/" + tg.iqn + "/0"
		out, err := exec.Command("ip", "netns", "exec", ns, "iscsi-inq", url).CombinedOutput()
		require.NoError(t, err, "iscsi-inq %s inside %s: %s", url, ns, out)
	}
	outside := 0
	for _, portal := range tg.portals {
		if strings.HasSuffix(portal, ":3270") || strings.HasSuffix(portal, ":3271") {
			continue
		}
		outside++
		url := "iscsi://" + portal + "/" + tg.iqn + "/0"
		out, err := exec.Command("iscsi-inq", url).CombinedOutput()
		require.NoError(t, err, "iscsi-inq %s from the host's namespace: %s", url, out)
	}
	assert.Equal(t, 2, outside, "two portals in the host's namespace: %v", tg.portals)
}
