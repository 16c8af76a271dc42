package mpath

import (
	"strings"
	"testing"
)

func TestClaimRuleMatch(t *testing.T) {
	c := DefaultClaimRules()
	for _, s := range []string{
		"120 location MASK_PATH location=vmhba2:C0:*:*",
		"130 vendor NMP vendor=MPATHFS model=ALUA*",
		"140 driver MASK_PATH driver=mpathfs_block",
	} {
		r, err := ParseRule(s)
		if err != nil {
			t.Fatal(err)
		}
		if err := c.Add(r); err != nil {
			t.Fatal(err)
		}
	}
	loc := func(s string) Location {
		l, err := ParseLocation(s)
		if err != nil {
			t.Fatal(err)
		}
		return l
	}
	for _, tc := range []struct {
		name   string
		a      PathAttrs
		rule   int
		plugin string
	}{
		{"file transport: system rule 65531", PathAttrs{Vendor: "MPATHFS", Model: "FILE", Transport: "file", Location: loc("vmhba1:C0:T0:L0")}, 65531, "NMP"},
		{"location mask beats lower-priority rules", PathAttrs{Vendor: "X", Model: "Y", Transport: "nbd", Location: loc("vmhba2:C0:T3:L7")}, 120, "MASK_PATH"},
		{"other adapter not masked", PathAttrs{Vendor: "X", Model: "Y", Transport: "nbd", Location: loc("vmhba3:C0:T3:L7")}, 65533, "NMP"},
		{"vendor/model glob, case-insensitive, padded", PathAttrs{Vendor: "mpathfs ", Model: "ALUA ARRAY  ", Transport: "iscsi", Location: loc("vmhba3:C0:T0:L0")}, 130, "NMP"},
		{"Dell management LUN masked by 101", PathAttrs{Vendor: "DELL", Model: "Universal Xport", Transport: "fc", Location: loc("vmhba4:C0:T0:L31")}, 101, "MASK_PATH"},
		{"unknown transport: rule 65534", PathAttrs{Vendor: "A", Model: "B", Location: loc("vmhba5:C0:T0:L0")}, 65534, "NMP"},
		{"odd transport: catch-all", PathAttrs{Vendor: "A", Model: "B", Transport: "fc"}, 65535, "NMP"},
		{"nbd: rule 65533", PathAttrs{Transport: "nbd"}, 65533, "NMP"},
	} {
		r, ok := c.Match(tc.a)
		if !ok || r.ID != tc.rule || r.Plugin != tc.plugin {
			t.Errorf("%s: matched %v (%v); want rule %d %s", tc.name, r, ok, tc.rule, tc.plugin)
		}
	}
	// A block path on vmhba2 matches the location rule 120 first (lowest wins).
	if r, _ := c.Match(PathAttrs{Transport: "iscsi", Driver: "mpathfs_block", Location: loc("vmhba2:C0:T0:L0")}); r.ID != 120 {
		t.Errorf("lowest rule should win, got %d", r.ID)
	}
	if r, _ := c.Match(PathAttrs{Transport: "iscsi", Driver: "mpathfs_block", Location: loc("vmhba7:C0:T0:L0")}); r.ID != 140 {
		t.Errorf("driver rule: got %d", r.ID)
	}
}

func TestClaimRuleReservedAndErrors(t *testing.T) {
	c := DefaultClaimRules()
	for _, tc := range []struct {
		r    Rule
		want string
	}{
		{Rule{ID: 50, Type: "transport", Transport: "nbd", Plugin: "NMP"}, "reserved range"},
		{Rule{ID: 100, Type: "transport", Transport: "nbd", Plugin: "NMP"}, "reserved range"},
		{Rule{ID: 65436, Type: "transport", Transport: "nbd", Plugin: "NMP"}, "reserved range"},
		{Rule{ID: 65535, Type: "transport", Transport: "nbd", Plugin: "NMP"}, "reserved range"},
		{Rule{ID: 70000, Type: "transport", Transport: "nbd", Plugin: "NMP"}, "0 to 65535"},
		{Rule{ID: 101, Type: "transport", Transport: "nbd", Plugin: "NMP"}, "already exists"},
		{Rule{ID: 200, Type: "transport", Transport: "scsi", Plugin: "NMP"}, "want one of fc, iscsi"},
		{Rule{ID: 200, Type: "colour", Plugin: "NMP"}, "want vendor, location"},
		{Rule{ID: 200, Type: "transport", Transport: "nbd", Plugin: "NOPE"}, "unknown multipathing plugin"},
		{Rule{ID: 200, Type: "location", Location: "vmhba2:C0", Plugin: "NMP"}, "adapter:channel:target:lun"},
		{Rule{ID: 200, Type: "vendor", Plugin: "NMP"}, "needs vendor"},
	} {
		err := c.Add(tc.r)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Add(%v) = %v; want an error with %q", tc.r, err, tc.want)
		}
	}
	if err := c.Add(Rule{ID: 101 + 1, Type: "transport", Transport: "nbd", Plugin: "MASK_PATH"}); err != nil {
		t.Fatal(err)
	}
	if err := c.Remove(65535); err == nil || !strings.Contains(err.Error(), "system rule") {
		t.Error("removing a system rule succeeded")
	}
	if err := c.Remove(102); err != nil {
		t.Error(err)
	}
	if err := c.Remove(102); err == nil {
		t.Error("removing a missing rule succeeded")
	}
	if _, err := ParseRule("101 vendor NMP colour=red"); err == nil {
		t.Error("ParseRule accepted an unknown key")
	}
}

func TestClaimRuleListAndClaim(t *testing.T) {
	c := DefaultClaimRules()
	if err := c.Add(Rule{ID: 110, Type: "location", Location: "vmhba2:*:*:*", Plugin: "MASK_PATH"}); err != nil {
		t.Fatal(err)
	}
	var lines []string
	for _, r := range c.List() {
		lines = append(lines, r.String())
	}
	want := `101 file vendor MASK_PATH vendor=DELL model=Universal Xport
101 runtime vendor MASK_PATH vendor=DELL model=Universal Xport
110 file location MASK_PATH location=vmhba2:*:*:*
110 runtime location MASK_PATH location=vmhba2:*:*:*
65531 runtime transport NMP transport=file
65532 runtime transport NMP transport=block
65533 runtime transport NMP transport=nbd
65534 runtime transport NMP transport=unknown
65535 runtime vendor NMP vendor=* model=*`
	if got := strings.Join(lines, "\n"); got != want {
		t.Fatalf("List:\n%s\nwant:\n%s", got, want)
	}
	p1 := &Path{Name: "a", Location: Location{Adapter: 1}, Transport: "file"}
	p2 := &Path{Name: "b", Location: Location{Adapter: 2}, Transport: "file"}
	by, masked := c.Claim([]*Path{p1, p2})
	if len(by["NMP"]) != 1 || by["NMP"][0] != p1 || len(masked) != 1 || masked[0] != p2 {
		t.Fatalf("Claim: %v masked %v", by, masked)
	}
}

// TestClaimRuleFileAndRuntime: file rows change without the runtime; Load
// brings them over and says what changed; system rows stay; quoted values
// round-trip through Spec and ParseRule.
func TestClaimRuleFileAndRuntime(t *testing.T) {
	c := DefaultClaimRules()
	r, err := ParseRule(`300 vendor MASK_PATH vendor=ACME model="Big Box"`)
	if err != nil {
		t.Fatal(err)
	}
	if r.Model != "Big Box" {
		t.Fatalf("model %q", r.Model)
	}
	if back, err := ParseRule(r.Spec()); err != nil || back != r {
		t.Fatalf("Spec round trip: %v %+v", err, back)
	}
	if err := c.AddFile(r); err != nil {
		t.Fatal(err)
	}
	if got, ok := c.Match(PathAttrs{Vendor: "ACME", Model: "Big Box"}); !ok || got.ID == 300 {
		t.Fatalf("a file row matched: %v", got)
	}
	if err := c.AddFile(r); err == nil || !strings.Contains(err.Error(), "already exists") {
		t.Errorf("AddFile twice: %v", err)
	}
	res := c.Load()
	if len(res.Added) != 1 || res.Added[0].ID != 300 || len(res.Removed) != 0 {
		t.Fatalf("Load: %+v", res)
	}
	if got, _ := c.Match(PathAttrs{Vendor: "acme", Model: "BIG BOX"}); got.ID != 300 {
		t.Fatalf("loaded rule does not match: %v", got)
	}
	if _, err := c.MoveFile(300, 65500); err == nil || !strings.Contains(err.Error(), "reserved") {
		t.Errorf("move into a reserved range: %v", err)
	}
	if _, err := c.MoveFile(300, 101); err == nil {
		t.Error("move onto rule 101 succeeded")
	}
	if _, err := c.MoveFile(300, 310); err != nil {
		t.Fatal(err)
	}
	if got, _ := c.Match(PathAttrs{Vendor: "ACME", Model: "Big Box"}); got.ID != 300 {
		t.Fatalf("the runtime keeps 300 until load: %v", got)
	}
	res = c.Load()
	if len(res.Added) != 1 || res.Added[0].ID != 310 || len(res.Removed) != 1 || res.Removed[0].ID != 300 {
		t.Fatalf("Load after move: %+v", res)
	}
	if _, err := c.RemoveFile(101); err != nil {
		t.Fatalf("rule 101 is removable: %v", err)
	}
	if _, err := c.RemoveFile(65535); err == nil || !strings.Contains(err.Error(), "system rule") {
		t.Errorf("RemoveFile(65535): %v", err)
	}
	c.Load()
	if got, _ := c.Match(PathAttrs{Vendor: "DELL", Model: "Universal Xport", Transport: "fc"}); got.ID != 65535 {
		t.Errorf("after removing 101 and loading, Dell's LUN goes to %v", got)
	}
	if got := c.FileRules(); len(got) != 1 || got[0] != `310 vendor MASK_PATH vendor=ACME model="Big Box"` {
		t.Errorf("FileRules: %q", got)
	}
	if id, err := c.NextFree(); err != nil || id != 5000 {
		t.Errorf("NextFree: %d %v", id, err)
	}
	if _, err := ParseRule(`300 vendor NMP model="open`); err == nil {
		t.Error("an open quote parsed")
	}
}
