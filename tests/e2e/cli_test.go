package e2e

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/mpathfs/mpathfs/control"
	"github.com/mpathfs/mpathfs/mpath"
)

func runCmd(name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	return string(out), err
}

// TestDefaultLab: `mpathfs mount MOUNTPOINT` alone serves a 1 GiB device
// over four paths, ready for I/O.
func TestDefaultLab(t *testing.T) {
	m := startMount(t)
	fi, err := os.Stat(m.file("lab"))
	if err != nil {
		t.Fatalf("default lab device file: %v\n%s", err, m.out.String())
	}
	if fi.Size() != 1<<30 || fi.Mode().Perm() != 0o600 {
		t.Errorf("lab: size %d mode %v, want 1 GiB 0600", fi.Size(), fi.Mode().Perm())
	}
	st := m.status()
	if len(st.Devices) != 1 || len(st.Devices[0].Paths) != 4 {
		t.Fatalf("default lab topology: %+v", st)
	}
	if !strings.Contains(m.out.String(), "fio") {
		t.Errorf("mount output does not say how to run fio:\n%s", m.out.String())
	}
	f, err := os.OpenFile(m.file("lab"), os.O_RDWR|syscall.O_DIRECT, 0)
	if err != nil {
		t.Fatalf("O_DIRECT open: %v", err)
	}
	buf := alignedBlock(4096)
	copy(buf, "hello multipath")
	if _, err := f.WriteAt(buf, 1<<20); err != nil {
		t.Fatalf("O_DIRECT write: %v", err)
	}
	got := alignedBlock(4096)
	if _, err := f.ReadAt(got, 1<<20); err != nil || string(got[:15]) != "hello multipath" {
		t.Fatalf("O_DIRECT read back: %v %q", err, got[:15])
	}
	f.Close()
	// The human status names every path and the policy.
	out := m.mustCtl("status")
	for _, want := range []string{"lab", "VMW_SATP_ALUA", "VMW_PSP_MRU", "vmhba1:C0:T0:L0", "vmhba2:C0:T1:L0", "alua=AO", "alua=ANO"} {
		if !strings.Contains(out, want) {
			t.Errorf("status lacks %q:\n%s", want, out)
		}
	}
	out = m.mustCtl("path", "list")
	for _, want := range []string{"Runtime Name: vmhba2:C0:T0:L0", "State: active", "Plugin: NMP"} {
		if !strings.Contains(out, want) {
			t.Errorf("path list lacks %q:\n%s", want, out)
		}
	}
	m.stopClean(t)
}

func alignedBlock(n int) []byte {
	b := make([]byte, n+4096)
	off := 4096 - int(uintptrOf(b)%4096)
	if off == 4096 {
		off = 0
	}
	return b[off : off+n]
}

// TestStatusJSONShape pins the documented JSON shape scripts depend on.
func TestStatusJSONShape(t *testing.T) {
	st := store(t, 16<<20)
	m := startMount(t, "--name", "d0", "--path", st, "--path", "file://"+st)
	out := m.mustCtl("status", "--json")
	var raw struct {
		Devices []struct {
			Name  *string `json:"name"`
			Size  *int64  `json:"size"`
			SATP  *string `json:"satp"`
			PSP   *string `json:"psp"`
			Paths []struct {
				Name   *string `json:"name"`
				URI    *string `json:"uri"`
				State  *string `json:"state"`
				Reads  *uint64 `json:"reads"`
				Writes *uint64 `json:"writes"`
				Errors *uint64 `json:"errors"`
				// multipath -ll's and esxcli nmp path list's fields.
				DMState        *string `json:"dm_state"`
				Checker        *string `json:"checker"`
				DevState       *string `json:"dev_state"`
				GroupState     *string `json:"group_state"`
				SATPPathConfig *string `json:"satp_path_config"`
				PSPPathConfig  *string `json:"psp_path_config"`
			} `json:"paths"`
			// The device state and multipath -ll's and esxcli nmp device
			// list's fields.
			State  *string `json:"state"`
			HWH    *string `json:"hwhandler"`
			Groups []struct {
				Group  *int     `json:"group"`
				Policy *string  `json:"policy"`
				Prio   *int     `json:"prio"`
				Status *string  `json:"status"`
				Paths  []string `json:"paths"`
			} `json:"groups"`
			WorkingPaths []string `json:"working_paths"`
			IOsPending   *int64   `json:"ios_pending"`
		} `json:"devices"`
	}
	if err := json.Unmarshal([]byte(out), &raw); err != nil {
		t.Fatal(err)
	}
	if len(raw.Devices) != 1 {
		t.Fatalf("devices: %s", out)
	}
	d := raw.Devices[0]
	if d.Name == nil || *d.Name != "d0" || d.Size == nil || *d.Size != 16<<20 || d.SATP == nil || d.PSP == nil {
		t.Fatalf("device fields missing: %s", out)
	}
	if len(d.Paths) != 2 {
		t.Fatalf("paths: %s", out)
	}
	if d.State == nil || *d.State != "on" || d.HWH == nil || d.IOsPending == nil || len(d.WorkingPaths) == 0 || len(d.Groups) == 0 {
		t.Fatalf("device state, hwhandler, working paths, ios_pending or groups missing: %s", out)
	}
	for _, g := range d.Groups {
		if g.Group == nil || g.Policy == nil || g.Prio == nil || g.Status == nil || len(g.Paths) == 0 {
			t.Fatalf("group fields missing: %s", out)
		}
	}
	for _, p := range d.Paths {
		if p.Name == nil || p.URI == nil || p.State == nil || p.Reads == nil || p.Writes == nil || p.Errors == nil {
			t.Fatalf("path fields missing: %s", out)
		}
		if p.DMState == nil || p.Checker == nil || p.DevState == nil || p.GroupState == nil || p.SATPPathConfig == nil || p.PSPPathConfig == nil {
			t.Fatalf("path fields of multipath -ll or esxcli missing: %s", out)
		}
		switch *p.State {
		case "active", "standby", "disabled", "dead", "unknown":
		default:
			t.Errorf("path state %q not in the documented set", *p.State)
		}
	}
	m.stopClean(t)
}

// TestCLIErrors: wrong input gets one clear line on stderr and a non-zero exit.
func TestCLIErrors(t *testing.T) {
	st := store(t, 16<<20)
	other := store(t, 32<<20)
	dir := t.TempDir()
	badYAML := filepath.Join(dir, "bad.yaml")
	os.WriteFile(badYAML, []byte("devices:\n  - name: x\n    pathz: []\n"), 0o600)
	cases := []struct {
		args []string
		want string
	}{
		{[]string{"frobnicate"}, "unknown command"},
		{[]string{"mount"}, "MOUNTPOINT"},
		{[]string{"mount", "--psp", "VMW_PSP_NOPE", "--path", st, filepath.Join(dir, "m1")}, "unknown PSP"},
		{[]string{"mount", "--satp", "VMW_SATP_NOPE", "--path", st, filepath.Join(dir, "m2")}, "unknown SATP"},
		{[]string{"mount", "--path", st, "--path", other, filepath.Join(dir, "m3")}, "different stores"},
		{[]string{"mount", "--path", "/nonexistent/x.img", filepath.Join(dir, "m4")}, "does not exist"},
		{[]string{"mount", "--path", "nbd://127.0.0.1:1/x", filepath.Join(dir, "m5")}, "127.0.0.1:1"},
		{[]string{"mount", "--config", badYAML, filepath.Join(dir, "m6")}, "pathz"},
		{[]string{"mount", "--psp", "VMW_PSP_RR", "--psp-option", "iops=zero", "--path", st, filepath.Join(dir, "m7")}, "iops"},
		{[]string{"status", "--control", filepath.Join(dir, "none.sock")}, "no mpathfs control socket"},
		{[]string{"fault", "inject", "--control", filepath.Join(dir, "none.sock"), "p", "--error", "bogus"}, "bogus"},
		{[]string{"path", "set", "--state", "maybe", "p"}, "want on or off"},
		{[]string{"mount", "--max-requests", "-5", "--path", st, filepath.Join(dir, "m8")}, "max_requests -5"},
		{[]string{"mount", "--memory-limit", "5MiB", "--path", st, filepath.Join(dir, "m9")}, "below 16 MiB"},
		{[]string{"mount", "--memory-limit", "lots", "--path", st, filepath.Join(dir, "m9")}, "want auto, off or a size"},
		{[]string{"mount", "--lock-sector", "first", "--path", st, filepath.Join(dir, "m9")}, `lock_sector "first": want auto (the default`},
		{[]string{"mount", "--lock-sector", "last", "--path", st, filepath.Join(dir, "m9")}, "lock_sector: last locks array LUs through iSCSI paths"},
	}
	for _, c := range cases {
		cmd := exec.Command(binary, c.args...)
		var stderr strings.Builder
		cmd.Stderr = &stderr
		cmd.Env = append(os.Environ(), "MPATHFS_STATE_DIR="+dir)
		err := cmd.Run()
		if err == nil {
			t.Errorf("mpathfs %v succeeded, want an error", c.args)
			continue
		}
		msg := strings.TrimSpace(stderr.String())
		if strings.Count(msg, "\n") != 0 {
			t.Errorf("mpathfs %v: error is not one line:\n%s", c.args, msg)
		}
		if !strings.Contains(msg, c.want) {
			t.Errorf("mpathfs %v: stderr %q does not mention %q", c.args, msg, c.want)
		}
	}
	// Nothing was left mounted by the failed mounts.
	for i := 1; i <= 9; i++ {
		if isMounted(filepath.Join(dir, "m"+string(rune('0'+i)))) {
			t.Errorf("a failed mount left m%d mounted", i)
		}
	}
}

// TestStaleMountCleanup: after a crash (SIGKILL) the next start cleans the
// dead mount up and serves again.
func TestStaleMountCleanup(t *testing.T) {
	st := store(t, 16<<20)
	m := startMount(t, "--name", "d0", "--path", st)
	m.cmd.Process.Kill()
	<-m.exited
	if !isMounted(m.dir) {
		t.Skip("the kernel removed the mount with the process; nothing stale to clean")
	}
	m2 := startMountAt(t, m.dir, "--name", "d0", "--path", st)
	if _, err := os.Stat(m2.file("d0")); err != nil {
		t.Fatalf("after a crash the new mount does not serve: %v\n%s", err, m2.out.String())
	}
	m2.stopClean(t)
}

// TestConfigFile: a YAML file with two devices and every option.
func TestConfigFile(t *testing.T) {
	dir := t.TempDir()
	a, b := filepath.Join(dir, "a.img"), filepath.Join(dir, "b.img")
	cfg := filepath.Join(dir, "mpathfs.yaml")
	os.WriteFile(cfg, []byte(`devices:
  - name: alpha
    size: 32M
    wwid: naa.600a0000000000000000000000000001
    psp: VMW_PSP_RR
    psp_options: {iops: "2"}
    io_timeout: 2s
    apd_timeout: 10s
    check_interval: 500ms
    flap_threshold: 4
    hold_down: 3s
    paths:
      - uri: file://`+a+`
        name: alpha-1
      - uri: `+a+`
        name: alpha-2
        faults: ["--latency 1ms"]
  - name: beta
    size: 16M
    satp: VMW_SATP_LOCAL
    paths:
      - uri: file://`+b+`
        location: vmhba7:C0:T3:L9
`), 0o600)
	m := startMount(t, "--config", cfg)
	st := m.status()
	if len(st.Devices) != 2 {
		t.Fatalf("want 2 devices: %+v", st)
	}
	al, be := st.Devices[0], st.Devices[1]
	if al.Name != "alpha" || al.Size != 32<<20 || al.PSP != "VMW_PSP_RR" || al.WWID != "naa.600a0000000000000000000000000001" || al.Options.IOTimeout != "2s" || al.Options.FlapThreshold != 4 {
		t.Errorf("alpha: %+v", al)
	}
	if !strings.Contains(al.PSPConfig, "iops=2") {
		t.Errorf("alpha psp config %q", al.PSPConfig)
	}
	if al.Paths[0].Name != "alpha-1" || al.Paths[1].Name != "alpha-2" {
		t.Errorf("alpha path names: %s %s", al.Paths[0].Name, al.Paths[1].Name)
	}
	if be.Name != "beta" || be.SATP != "VMW_SATP_LOCAL" || be.PSP != "VMW_PSP_FIXED" || be.Paths[0].Name != "vmhba7:C0:T3:L9" {
		t.Errorf("beta: %+v", be)
	}
	if out := m.mustCtl("fault", "list"); !strings.Contains(out, "alpha-2") || !strings.Contains(out, "--latency 1ms") {
		t.Errorf("fault list lacks the configured fault:\n%s", out)
	}
	out := m.mustCtl("policy", "set", "alpha", "--psp", "VMW_PSP_MRU")
	if !strings.Contains(out, "VMW_PSP_MRU") {
		t.Errorf("policy set: %s", out)
	}
	m.stopClean(t)
}

// TestClaimRuleMasksPath: a user claim rule hands the paths at one location
// to MASK_PATH: they are not part of the device; explain names the rules;
// a rule in the reserved range is refused.
func TestClaimRuleMasksPath(t *testing.T) {
	dir := t.TempDir()
	img := filepath.Join(dir, "a.img")
	cfg := filepath.Join(dir, "c.yaml")
	os.WriteFile(cfg, []byte(`claim_rules:
  - "200 location MASK_PATH location=vmhba2:C0:*:*"
devices:
  - name: d0
    size: 16M
    paths:
      - uri: `+img+`
        location: vmhba1:C0:T0:L0
      - uri: `+img+`
        location: vmhba2:C0:T0:L0
      - uri: `+img+`
        location: vmhba3:C0:T0:L0
`), 0o600)
	m := startMount(t, "--config", cfg)
	paths := m.status().Devices[0].Paths
	if len(paths) != 2 {
		t.Fatalf("want 2 paths after masking vmhba2, got %d", len(paths))
	}
	for _, p := range paths {
		if strings.HasPrefix(p.Name, "vmhba2:") {
			t.Errorf("masked path %s is part of the device", p.Name)
		}
	}
	if !strings.Contains(m.out.String(), "claim rule 200 gives it to MASK_PATH") {
		t.Errorf("mount did not report the masked path:\n%s", m.out.String())
	}
	if out := m.mustCtl("claimrule", "list"); !strings.Contains(out, "200") || !strings.Contains(out, "MASK_PATH") {
		t.Errorf("claimrule list lacks rule 200:\n%s", out)
	}
	if out := m.mustCtl("explain", "d0"); !strings.Contains(out, "claim rule 65531") || !strings.Contains(out, "VMW_SATP_LOCAL") {
		t.Errorf("explain d0:\n%s", out)
	}
	m.stopClean(t)

	bad := filepath.Join(dir, "bad.yaml")
	os.WriteFile(bad, []byte("claim_rules: [\"50 location MASK_PATH location=vmhba2:C0:*:*\"]\ndevices: [{name: d0, size: 16M, paths: [{uri: "+img+"}]}]\n"), 0o600)
	out, err := exec.Command(binary, "mount", "--config", bad, filepath.Join(dir, "m")).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "reserved") {
		t.Errorf("a claim rule in the reserved range: %v %s", err, out)
	}
}

// TestPathFenceCLI: `path fence` answers on a running mount (healthy paths
// leave nothing to resolve), a path's quiesce time given in its URI shows
// in status and never reaches the backend, and an unknown path is an error.
func TestPathFenceCLI(t *testing.T) {
	st := store(t, 16<<20)
	m := startMount(t, "--name", "d0", "--path", "file://"+st+"?quiesce=2s", "--path", st)
	status := m.status()
	require.Len(t, status.Devices, 1)
	require.Len(t, status.Devices[0].Paths, 2)
	p := status.Devices[0].Paths[0]
	assert.Equal(t, "2s", p.Quiesce)
	assert.Equal(t, "file://"+st, p.URI)
	assert.Empty(t, status.Devices[0].Ambiguous)

	out := m.mustCtl("path", "fence", p.Name)
	assert.Contains(t, out, p.Name+": fenced; 0 ambiguous write range(s) resolved")
	var reply control.PathFenceReply
	require.NoError(t, json.Unmarshal([]byte(m.mustCtl("path", "fence", "--json", p.Name)), &reply))
	assert.Equal(t, control.PathFenceReply{Device: "d0", Path: p.Name, Resolved: 0, Ambiguous: []mpath.AmbiguousRange{}}, reply)
	out, err := m.ctl("path", "fence", "no-such-path")
	require.Error(t, err)
	assert.Contains(t, out, "no path \"no-such-path\"")
	m.stopClean(t)
}
