package nmp_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	_ "github.com/mpathfs/mpathfs/alua" // registers VMW_SATP_ALUA and VMW_SATP_DEFAULT_AP
	"github.com/mpathfs/mpathfs/backends"
	"github.com/mpathfs/mpathfs/mpath"
	"github.com/mpathfs/mpathfs/nmp"
)

func TestSATPRuleMatch(t *testing.T) {
	rules := nmp.DefaultSATPRules()
	if err := rules.Add(nmp.SATPRule{SATP: nmp.SATPDefaultAA, Vendor: "MPATHFS", Model: "ALUA TEST*", PSP: nmp.PSPRR, PSPOptions: map[string]string{"iops": "1"}}); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		a    nmp.DeviceAttrs
		want string // SATP, or "" for no match
	}{
		{"simulated ALUA array", nmp.DeviceAttrs{Vendor: "MPATHFS", Model: "ALUA ARRAY", Transport: "file", TPGS: 3}, "VMW_SATP_ALUA (system) mpathfs simulated ALUA array"},
		{"simulated AP array", nmp.DeviceAttrs{Vendor: "MPATHFS", Model: "AP ARRAY", Transport: "file"}, "VMW_SATP_DEFAULT_AP (system) mpathfs simulated active/passive array"},
		{"ALUA model without TPGS falls to transport", nmp.DeviceAttrs{Vendor: "MPATHFS", Model: "ALUA ARRAY", Transport: "file"}, "VMW_SATP_LOCAL (system) local file stores"},
		{"user rule before system at the same tier", nmp.DeviceAttrs{Vendor: "MPATHFS", Model: "ALUA TEST 2", Transport: "nbd", TPGS: 1}, "VMW_SATP_DEFAULT_AA (user) "},
		{"any TPGS device over nbd", nmp.DeviceAttrs{Vendor: "ACME", Model: "X", Transport: "nbd", TPGS: 2}, "VMW_SATP_ALUA (system) any array with ALUA support"},
		{"tpgs claim option beats transport", nmp.DeviceAttrs{Vendor: "ACME", Model: "X", Transport: "block", TPGS: 1}, "VMW_SATP_ALUA (system) any array with ALUA support"},
		{"local block device", nmp.DeviceAttrs{Vendor: "ATA", Model: "disk", Transport: "block"}, "VMW_SATP_LOCAL (system) local block devices"},
		{"plain file", nmp.DeviceAttrs{Vendor: "MPATHFS", Model: "FILE", Transport: "file"}, "VMW_SATP_LOCAL (system) local file stores"},
		{"nbd without TPGS: no rule", nmp.DeviceAttrs{Vendor: "nbdkit", Model: "memory", Transport: "nbd"}, ""},
		{"vendor glob case-insensitive", nmp.DeviceAttrs{Vendor: "netapp  ", Model: "LUN", Transport: "nbd", TPGS: 1}, "VMW_SATP_ALUA (system) NetApp arrays with ALUA support"},
	} {
		r, ok := rules.Match(tc.a)
		got := ""
		if ok {
			got = r.SATP + " (" + r.Group + ") " + r.Description
		}
		if got != tc.want {
			t.Errorf("%s: got %q, want %q", tc.name, got, tc.want)
		}
	}
	if err := rules.Add(nmp.SATPRule{SATP: nmp.SATPDefaultAA}); err == nil {
		t.Error("a rule matching nothing was added")
	}
	if err := rules.Add(nmp.SATPRule{SATP: nmp.SATPDefaultAA, ClaimOptions: "tpgs_maybe"}); err == nil {
		t.Error("a bad claim option was accepted")
	}
	if err := rules.Add(nmp.SATPRule{SATP: nmp.SATPDefaultAA, Vendor: "MPATHFS", Model: "ALUA TEST*"}); err == nil {
		t.Error("a duplicate user rule was accepted")
	}
}

func TestExplain(t *testing.T) {
	claims := mpath.DefaultClaimRules()
	if err := claims.Add(mpath.Rule{ID: 200, Type: "location", Location: "vmhba9:*:*:*", Plugin: mpath.PluginMaskPath}); err != nil {
		t.Fatal(err)
	}
	rules := nmp.DefaultSATPRules()
	if err := rules.Add(nmp.SATPRule{SATP: "VMW_SATP_ALUA", Vendor: "ACME", ClaimOptions: nmp.ClaimTPGSOn, PSP: nmp.PSPRR,
		PSPOptions: map[string]string{"iops": "10"}, Options: map[string]string{"explicit_allow": "off"}}); err != nil {
		t.Fatal(err)
	}
	pa := mpath.PathAttrs{Vendor: "ACME", Model: "BOX", Transport: "nbd", Location: mpath.Location{Adapter: 1}}
	e, err := nmp.Explain(claims, rules, "d0", pa, 3, mpath.DeviceConfig{PSPOptions: map[string]string{"useANO": "1"}})
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	b.WriteString("claim " + e.ClaimRule.String() + "\n")
	b.WriteString("satp " + e.SATP.Value + " from " + e.SATP.Source + "\n")
	b.WriteString("psp " + e.PSP.Value + " from " + e.PSP.Source + "\n")
	for _, s := range e.SATPOptions {
		b.WriteString("satp option " + s.Name + "=" + s.Value + " from " + s.Source + "\n")
	}
	for _, s := range e.PSPOptions {
		b.WriteString("psp option " + s.Name + "=" + s.Value + " from " + s.Source + "\n")
	}
	want := `claim 65533 runtime transport NMP transport=nbd
satp VMW_SATP_ALUA from satp rule
psp VMW_PSP_RR from satp rule
satp option explicit_allow=off from satp rule
psp option iops=10 from satp rule
psp option type=iops from plugin default
psp option useANO=1 from user config
`
	if got := b.String(); got != want {
		t.Fatalf("explain:\n%s\nwant:\n%s", got, want)
	}

	// The user's SATP wins; the rule's PSP no longer applies.
	e, err = nmp.Explain(claims, rules, "d0", pa, 3, mpath.DeviceConfig{SATP: nmp.SATPDefaultAA})
	if err != nil {
		t.Fatal(err)
	}
	if e.SATP.Source != nmp.SourceUser || e.PSP.Value != nmp.PSPFixed || e.PSP.Source != nmp.SourceDefault {
		t.Fatalf("user SATP: %+v %+v", e.SATP, e.PSP)
	}
	// No rule: DEFAULT_AA and its default PSP.
	e, _ = nmp.Explain(claims, rules, "d1", mpath.PathAttrs{Transport: "nbd"}, 0, mpath.DeviceConfig{})
	if e.SATP.Value != nmp.SATPDefaultAA || e.SATP.Source != nmp.SourceFallback || e.PSP.Value != nmp.PSPFixed {
		t.Fatalf("fallback: %+v %+v", e.SATP, e.PSP)
	}
	// A masked path.
	pa.Location.Adapter = 9
	if e, _ = nmp.Explain(claims, rules, "d2", pa, 3, mpath.DeviceConfig{}); !e.Masked || e.ClaimRule.ID != 200 {
		t.Fatalf("masked: %+v", e.ClaimRule)
	}
	// Bad options are reported.
	if _, err := nmp.Explain(nil, rules, "d3", pa, 3, mpath.DeviceConfig{PSPOptions: map[string]string{"bogus": "1"}}); err == nil {
		t.Fatal("bad PSP option accepted")
	}
	cfg, _, err := nmp.Resolve(rules, mpath.DeviceConfig{Name: "d4"}, nmp.DeviceAttrs{Vendor: "MPATHFS", Model: "ALUA ARRAY", TPGS: 1})
	if err != nil || cfg.SATP != "VMW_SATP_ALUA" || cfg.PSP != nmp.PSPMRU {
		t.Fatalf("Resolve: %+v %v", cfg, err)
	}
}

func filePath(t *testing.T, name string, size int, wwid bool) *mpath.Path {
	t.Helper()
	if _, err := os.Stat(name); err != nil {
		if err := os.WriteFile(name, make([]byte, size), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	b, err := backends.OpenFile(name, backends.FileOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	p := &mpath.Path{URI: "file://" + name, Backend: b, Transport: "file"}
	if wwid {
		p.Inquiry, _ = b.Inquiry(t.Context())
	}
	return p
}

func TestGroupByWWID(t *testing.T) {
	dir := t.TempDir()
	f1, f2, f3 := filepath.Join(dir, "1"), filepath.Join(dir, "2"), filepath.Join(dir, "3")
	named := func(dev, name string, p *mpath.Path) nmp.NamedPath {
		p.Name = name
		return nmp.NamedPath{Device: dev, Path: p}
	}
	c, err := nmp.GroupByWWID([]nmp.NamedPath{
		named("", "a1", filePath(t, f1, 1<<20, true)),
		named("", "b1", filePath(t, f2, 1<<20, true)),
		named("data", "a2", filePath(t, f1, 1<<20, true)),
		named("plain", "c1", filePath(t, f3, 2<<20, false)),
		named("plain", "c2", filePath(t, f3, 2<<20, false)),
	})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, d := range c {
		s := d.Name + ":"
		for _, p := range d.Paths {
			s += " " + p.Name
		}
		got = append(got, s)
	}
	if g := strings.Join(got, "; "); g != "data: a1 a2; "+c[1].WWID+": b1; plain: c1 c2" {
		t.Fatalf("groups: %s", g)
	}
	// Mixed sizes under one name.
	_, err = nmp.GroupByWWID([]nmp.NamedPath{named("plain", "c1", filePath(t, f3, 2<<20, false)), named("plain", "x", filePath(t, f1, 1<<20, false))})
	if err == nil || !strings.Contains(err.Error(), "different stores") {
		t.Fatalf("mixed sizes: %v", err)
	}
	// One name, two WWIDs.
	_, err = nmp.GroupByWWID([]nmp.NamedPath{named("d", "a", filePath(t, f1, 1<<20, true)), named("d", "b", filePath(t, f2, 1<<20, true))})
	if err == nil || !strings.Contains(err.Error(), "reports WWID") {
		t.Fatalf("two WWIDs under one name: %v", err)
	}
	// Duplicate names within a device.
	_, err = nmp.GroupByWWID([]nmp.NamedPath{named("d", "a", filePath(t, f1, 1<<20, true)), named("d", "a", filePath(t, f1, 1<<20, true))})
	if err == nil || !strings.Contains(err.Error(), "two paths named") {
		t.Fatalf("duplicate names: %v", err)
	}
}
