package iscsiconf

import (
	"bufio"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/mpathfs/mpathfs/internal/needs"
)

// families are the iscsi-test-cu families the array server must pass (the
// list of the conformance requirement), in the order they run.
var families = []string{
	"Inquiry", "Mandatory", "TestUnitReady", "ReadCapacity10", "ReadCapacity16",
	"Read10", "Read12", "Read16", "Write10", "Write12", "Write16",
	"WriteSame10", "WriteSame16", "Unmap", "CompareAndWrite", "ModeSense6",
	"ReportSupportedOpcodes", "PrinReadKeys", "PrinReportCapabilities",
	"PrinServiceactionRange", "ProutRegister", "ProutReserve", "ProutClear",
	"ProutPreempt", "Reserve6", "MultipathIO", "iSCSIcmdsn", "iSCSIdatasn",
	"iSCSIResiduals", "iSCSITMF",
}

var updateDocs = flag.Bool("update-docs", false, "rewrite the conformance table of docs/array.md from this run")

// allowList reads allow-list.txt: FAMILY.TEST → reason ("not
// applicable: …" or "bug: …").
func allowList(t *testing.T) map[string]string {
	t.Helper()
	f, err := os.Open("allow-list.txt")
	require.NoError(t, err)
	defer f.Close()
	out := map[string]string{}
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		name, reason, _ := strings.Cut(line, " ")
		reason = strings.TrimSpace(reason)
		fam, test, ok := strings.Cut(name, ".")
		require.True(t, ok && test != "", "allow-list.txt:%d: %q is not FAMILY.TEST", n, name)
		require.Contains(t, families, fam, "allow-list.txt:%d: %s is not a family the conformance run runs", n, fam)
		require.True(t, strings.HasPrefix(reason, "not applicable: ") || strings.HasPrefix(reason, "bug: "),
			"allow-list.txt:%d: %s: the reason must start with \"not applicable: \" or \"bug: \"", n, name)
		out[name] = reason
	}
	require.NoError(t, sc.Err())
	return out
}

// run is one target's results, family by family.
type run struct {
	target  string
	results map[string][]Result // by family
	errs    map[string]string   // a family that did not run through
}

func runAll(t *testing.T, tg target) run {
	r := run{target: tg.name, results: map[string][]Result{}, errs: map[string]string{}}
	for _, fam := range families {
		res, out, err := runFamily(t, tg, fam)
		r.results[fam] = res
		if err != nil {
			r.errs[fam] = err.Error()
			t.Logf("%s %s: %v\n%s", tg.name, fam, err, tail(out, 40))
		}
	}
	return r
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = append([]string{"…"}, lines[len(lines)-n:]...)
	}
	return strings.Join(lines, "\n")
}

func (r run) count(fam string) (pass, skip, fail int) {
	for _, x := range r.results[fam] {
		switch x.Outcome {
		case Passed:
			pass++
		case Skipped:
			skip++
		default:
			fail++
		}
	}
	return
}

func (r run) totals() (pass, skip, fail int) {
	for _, fam := range families {
		p, s, f := r.count(fam)
		pass, skip, fail = pass+p, skip+s, fail+f
	}
	return
}

func (r run) cell(fam string) string {
	if len(r.results[fam]) == 0 {
		return "did not run"
	}
	p, s, f := r.count(fam)
	c := fmt.Sprintf("%d/%d", p+s, p+s+f)
	if s > 0 {
		c += fmt.Sprintf(" (%d skipped)", s)
	}
	if e := r.errs[fam]; e != "" {
		c += " (incomplete)"
	}
	return c
}

// table is the markdown table of both runs and the list of what did not
// pass, with the reason from allow-list.txt for ours.
func table(ours, peer run, na map[string]string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "| Family | %s | %s |\n|---|---|---|\n", ours.target, peer.target)
	for _, fam := range families {
		fmt.Fprintf(&b, "| %s | %s | %s |\n", fam, ours.cell(fam), peer.cell(fam))
	}
	op, os_, of := ours.totals()
	pp, ps, pf := peer.totals()
	fmt.Fprintf(&b, "| **all** | **%d/%d** (%d skipped) | **%d/%d** (%d skipped) |\n", op+os_, op+os_+of, os_, pp+ps, pp+ps+pf, ps)
	b.WriteString("\nPassed counts tests libiscsi skipped (it prints `[SKIPPED]` and passes a test whose feature the logical unit does not advertise).\n")
	for _, r := range []run{ours, peer} {
		var lines []string
		for _, fam := range families {
			for _, x := range r.results[fam] {
				if x.Outcome != Failed {
					continue
				}
				why := strings.Join(x.Detail, " ")
				if reason, ok := na[x.Name()]; ok && r.target == ours.target {
					why = reason
				}
				lines = append(lines, fmt.Sprintf("- `%s`: %s", x.Name(), strings.ReplaceAll(why, "|", "\\|")))
			}
			if e := r.errs[fam]; e != "" {
				lines = append(lines, fmt.Sprintf("- `%s`: %s", fam, e))
			}
		}
		if len(lines) == 0 {
			fmt.Fprintf(&b, "\nAgainst %s every test passed.\n", r.target)
			continue
		}
		fmt.Fprintf(&b, "\nAgainst %s these did not pass:\n\n%s\n", r.target, strings.Join(lines, "\n"))
	}
	return b.String()
}

const beginMark, endMark = "<!-- conformance table: begin (go test ./tests/iscsi -run Conformance -args -update-docs) -->", "<!-- conformance table: end -->"

// writeDocs replaces the text between the markers of docs/array.md.
func writeDocs(t *testing.T, tbl string) {
	p := filepath.Join("..", "..", "docs", "array.md")
	b, err := os.ReadFile(p)
	require.NoError(t, err)
	s := string(b)
	i, j := strings.Index(s, beginMark), strings.Index(s, endMark)
	require.True(t, i >= 0 && j > i, "%s has no conformance markers %q … %q", p, beginMark, endMark)
	s = s[:i+len(beginMark)] + "\n" + tbl + s[j:]
	require.NoError(t, os.WriteFile(p, []byte(s), 0o644))
	t.Logf("wrote the conformance table into %s", p)
}

// TestConformance runs the families against Debian's tgt (the peer, one
// portal) and against `mpathfs array serve` (two portals), prints both
// tables, and fails on any failure of ours that allow-list.txt does
// not list, and on a listed one that passes (the list only shrinks).
func TestConformance(t *testing.T) {
	needs.Tools(t, "root", "iscsi-test-cu", "tgtd", "tgtadm")
	na := allowList(t)
	dir := t.TempDir()

	peer := runAll(t, startTGT(t))

	cfg := filepath.Join(dir, "array.yaml")
	require.NoError(t, os.WriteFile(cfg, []byte(conformanceConfig(filepath.Join(dir, "array.img"), filepath.Join(dir, "array-state"))), 0o600))
	ours := runAll(t, startArray(t, cfg))

	tbl := table(ours, peer, na)
	t.Logf("iscsi-test-cu, ours beside tgt:\n%s", tbl)
	if *updateDocs {
		writeDocs(t, tbl)
	}

	for _, fam := range families {
		assert.Empty(t, ours.errs[fam], "family %s against array serve", fam)
		for _, x := range ours.results[fam] {
			_, listed := na[x.Name()]
			switch {
			case x.Outcome == Failed && !listed:
				t.Errorf("%s failed against array serve: %s", x.Name(), strings.Join(x.Detail, " / "))
			case x.Outcome != Failed && listed:
				t.Errorf("%s passes now: remove it from allow-list.txt", x.Name())
			}
		}
	}
	var names []string
	for n := range na {
		names = append(names, n)
	}
	sort.Strings(names)
	t.Logf("allowed to fail (%d): %v", len(names), names)
}

// conformanceConfig is the array the suite runs on: one 64 MiB LU at LUN
// 0, two controllers of two ports each on free ports of 127.0.0.1.
func conformanceConfig(store, state string) string {
	return fmt.Sprintf(`target: iqn.2026-12.io.mpathfs.test:array
state_dir: %s
alua:
  access: active-active
  transitions: both
lus:
  - name: conf
    lun: 0
    file: %s
    size: 64M
    create: true
controllers:
  - name: A
    tpg: 1
    ports:
      - {id: 1, portal: "127.0.0.1:0"}
      - {id: 2, portal: "127.0.0.1:0"}
  - name: B
    tpg: 2
    ports:
      - {id: 3, portal: "127.0.0.1:0"}
      - {id: 4, portal: "127.0.0.1:0"}
`, state, store)
}
