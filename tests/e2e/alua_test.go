package e2e

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/mpathfs/mpathfs/internal/needs"
)

func aluaStates(m *mount, dev string) map[string]string {
	out := map[string]string{}
	for _, d := range m.status().Devices {
		if d.Name != dev {
			continue
		}
		for _, p := range d.Paths {
			out[p.Name] = p.ALUAState + "/" + p.State
		}
	}
	return out
}

// TestALUAControllerFailure: the default lab is an ALUA array. fio with
// crc32c verification runs through the failure of the owning controller
// (implicit transfer to the other) and its recovery: zero errors, and the
// status shows the target port groups change state.
func TestALUAControllerFailure(t *testing.T) {
	needs.Tools(t, "fio")
	m := startMount(t, "--check-interval", "300ms", "--io-timeout", "2s")
	st := m.status()
	d := st.Devices[0]
	if d.SATP != "VMW_SATP_ALUA" || d.PSP != "VMW_PSP_MRU" {
		t.Fatalf("the default lab should be claimed by VMW_SATP_ALUA with VMW_PSP_MRU, got %s %s", d.SATP, d.PSP)
	}
	before := aluaStates(m, "lab")
	if before["vmhba1:C0:T0:L0"] != "AO/active" || before["vmhba1:C0:T1:L0"] != "ANO/active" {
		t.Fatalf("initial ALUA states: %v", before)
	}
	// The JSON carries tpg and alua_state on each path.
	raw := m.mustCtl("status", "--json")
	var shape struct {
		Devices []struct {
			Paths []map[string]any `json:"paths"`
		} `json:"devices"`
	}
	json.Unmarshal([]byte(raw), &shape)
	for _, p := range shape.Devices[0].Paths {
		if _, ok := p["tpg"]; !ok {
			t.Errorf("path %v has no tpg", p["name"])
		}
		if s, _ := p["alua_state"].(string); s != "AO" && s != "ANO" {
			t.Errorf("path %v alua_state %q", p["name"], s)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	run := startFio(ctx, verifyJob(m.file("lab"), 12, "--size=128M")...)
	time.Sleep(2 * time.Second)
	m.mustCtl("array", "fail", "lab", "A")
	waitFor(t, 10*time.Second, "controller B's group to become AO and A's paths dead", func() bool {
		s := aluaStates(m, "lab")
		return s["vmhba1:C0:T1:L0"] == "AO/active" && strings.HasSuffix(s["vmhba1:C0:T0:L0"], "/dead")
	})
	during := aluaStates(m, "lab")
	time.Sleep(2 * time.Second)
	m.mustCtl("array", "restore", "lab", "A")
	waitFor(t, 10*time.Second, "controller A's paths to return as ANO", func() bool {
		s := aluaStates(m, "lab")
		return s["vmhba1:C0:T0:L0"] == "ANO/active" && s["vmhba1:C0:T1:L0"] == "AO/active"
	})
	after := aluaStates(m, "lab")
	r, out, err := run.wait()
	if err != nil || r.Jobs[0].TotalErr != 0 || r.Jobs[0].Error != 0 {
		t.Fatalf("fio through a controller failure: %v\n%s\n%s", err, out, m.out.String())
	}
	t.Logf("before %v\nduring %v\nafter %v\nfio max clat %.1f ms", before, during, after, r.Jobs[0].Write.ClatNs.Max/1e6)
	if out := m.mustCtl("explain", "lab"); !strings.Contains(out, "satp rule: VMW_SATP_ALUA") || !strings.Contains(out, "claim rule") {
		t.Errorf("explain lab:\n%s", out)
	}
	m.stopClean(t)
}
