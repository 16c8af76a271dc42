package lint

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/mpathfs/mpathfs/internal/needs"
)

// pkg is the part of `go list -json` the checks read.
type pkg struct {
	ImportPath string
	Name       string
	Dir        string
	Doc        string
	Imports    []string
	GoFiles    []string
	Error      *struct{ Err string }
}

// module is the module under test: its path and root directory.
type module struct {
	Path string
	Dir  string
}

var (
	listOnce sync.Once
	listMod  module
	listPkgs []pkg
	listErr  error
)

// goCmd runs the go command in dir and returns its standard output.
func goCmd(dir string, args ...string) ([]byte, error) {
	cmd := exec.Command("go", args...)
	cmd.Dir = dir
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("go %s: %v\n%s", strings.Join(args, " "), err, stderr.String())
	}
	return out, nil
}

// packages runs `go list -json ./...` from the module root, once.
func packages(t *testing.T) (module, []pkg) {
	t.Helper()
	listOnce.Do(func() {
		out, err := goCmd(".", "list", "-m", "-json")
		if err != nil {
			listErr = err
			return
		}
		if err := json.Unmarshal(out, &listMod); err != nil {
			listErr = fmt.Errorf("go list -m -json: %w", err)
			return
		}
		out, err = goCmd(listMod.Dir, "list", "-json", "./...")
		if err != nil {
			listErr = err
			return
		}
		dec := json.NewDecoder(bytes.NewReader(out))
		for {
			var p pkg
			err := dec.Decode(&p)
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				listErr = fmt.Errorf("go list -json: %w", err)
				return
			}
			listPkgs = append(listPkgs, p)
		}
	})
	require.NoError(t, listErr)
	require.NotEmpty(t, listPkgs, "go list ./... found no packages")
	return listMod, listPkgs
}

// rel is a package's path relative to the module ("" for the root package,
// and the full path for a package outside the module).
func rel(mod module, importPath string) (string, bool) {
	if importPath == mod.Path {
		return "", true
	}
	if r, ok := strings.CutPrefix(importPath, mod.Path+"/"); ok {
		return r, true
	}
	return importPath, false
}

func TestPackageDocs(t *testing.T) {
	mod, pkgs := packages(t)
	for _, p := range pkgs {
		if p.Error != nil {
			t.Errorf("%s: %s", p.ImportPath, p.Error.Err)
			continue
		}
		if strings.TrimSpace(p.Doc) == "" {
			r, _ := rel(mod, p.ImportPath)
			t.Errorf("package %s (%s) has no package doc comment: add one, in %s/doc.go if the package has no obvious file for it",
				p.ImportPath, p.Name, r)
		}
	}
}

// A layerRule forbids the packages matching From (less those matching
// Except) to import packages matching Forbid. Patterns inside this module
// are written relative to it ("nmp", "backends/block"); patterns outside it
// are full import paths. A pattern "x/..." matches x and every package below
// it; "..." matches every package of the module.
type layerRule struct {
	From   string
	Except []string
	Forbid []string
	Why    string
}

// higher layers, named once for the rules below
var (
	transports = []string{"backends/block", "backends/fault", "backends/nbd", "backends/backendtest"}
	tools      = []string{"control", "hotplug", "metrics", "integrity", "scenario", "host", "arrayd"}
	thirdParty = []string{"github.com/hanwen/go-fuse/v2/...", "github.com/prometheus/...", "github.com/pilebones/go-udev/..."}
)

func list(groups ...[]string) []string {
	var out []string
	for _, g := range groups {
		out = append(out, g...)
	}
	return out
}

// layerRules are the import rules that hold today, from docs/design.md
// ("Layers and packages"): the error taxonomy (ioerr) and the SCSI
// vocabulary (scsi) at the bottom, backends (the Backend contract) on them,
// mpath (paths) and the transports in backends/*, the simulated array
// (array) beside mpath, then the routing engine nmp and its ALUA SATPs
// (alua); fusedev beside the engine and unaware of it; the tools (control, hotplug, metrics, oracle,
// scenario) above; cmd/mpathfs wires everything and nothing imports it.
var layerRules = []layerRule{
	{
		From:   "ioerr",
		Forbid: []string{"..."},
		Why:    "ioerr is the error taxonomy every layer shares: a leaf that imports nothing of this module",
	},
	{
		From:   "plugin",
		Forbid: []string{"..."},
		Why:    "plugin is the one registry pattern every layer's plugins use: a leaf that imports nothing of this module",
	},
	{
		From:   "scsi",
		Forbid: list([]string{"backends/...", "mpath", "nmp", "alua", "array/...", "iscsi/...", "host", "fusedev", "integrity", "cmd/...", "bench/...", "tests/...", "internal/..."}, tools),
		Why:    "scsi is the SCSI vocabulary below the transports: it imports only ioerr",
	},
	{
		From:   "iscsi/...",
		Except: []string{"iscsi/iscsipath"},
		Forbid: list([]string{"backends/...", "mpath", "nmp", "alua", "array/...", "host", "fusedev", "integrity", "cmd/...", "bench/...", "tests/..."}, tools, thirdParty),
		Why:    "the iSCSI target and initiator speak the protocol over scsi.Handler and the SCSI vocabulary: the array and the host build on them, never the reverse",
	},
	{
		From:   "iscsi",
		Forbid: []string{"iscsi/iscsipath"},
		Why:    "the iscsi:// path transport builds on the initiator, never the reverse",
	},
	{
		From:   "iscsi/iscsipath",
		Forbid: list(transports, []string{"mpath", "nmp", "alua", "array/...", "host", "fusedev", "integrity", "cmd/...", "bench/...", "tests/..."}, tools, thirdParty),
		Why:    "the iscsi:// path transport is a Backend over the initiator: it sits on the iSCSI floor (transports below may not import the protocol package) and imports backends, scsi, ioerr and iscsi only",
	},
	{
		From:   "backends",
		Forbid: list(transports, []string{"mpath", "nmp", "alua", "fusedev", "cmd/...", "bench/...", "tests/...", "internal/..."}, tools),
		Why:    "backends owns the Backend contract and is the bottom layer: it imports nothing of this module but its own internal helpers (backends/internal/...)",
	},
	{
		From:   "mpath",
		Forbid: list(transports, []string{"nmp", "alua", "array", "fusedev"}, tools),
		Why:    "mpath (error taxonomy, paths) sits right above backends; the transports import mpath, never the reverse",
	},
	{
		From:   "backends/...",
		Forbid: list([]string{"nmp", "alua", "array", "fusedev"}, tools),
		Why:    "transports are below the routing engine and FUSE: they carry I/O and report errors, the engine judges them",
	},
	{
		From:   "nmp",
		Forbid: list(transports, []string{"alua", "array", "fusedev"}, tools),
		Why:    "the routing engine knows nothing of FUSE; SATPs and PSPs register by name; cmd/mpathfs picks the transports",
	},
	{
		From:   "alua",
		Forbid: list(transports, []string{"array", "fusedev"}, tools),
		Why:    "the ALUA SATPs are plugins of the routing engine: they talk to arrays through the capabilities scsi defines (Reporter, Setter, Trespasser), never to the simulated array itself",
	},
	{
		From:   "array",
		Forbid: list([]string{"nmp", "alua", "fusedev", "iscsi/...", "host", "integrity"}, tools),
		Why:    "the simulated array sits on the transports' floor: it builds on scsi, backends and mpath and knows nothing of the host side (SATPs, the engine, FUSE)",
	},
	{
		From:   "fusedev",
		Forbid: list(transports, []string{"nmp", "alua"}, tools),
		Why:    "FUSE knows nothing of paths: fusedev defines the Device it serves and does not import the engine",
	},
	{
		From:   "hotplug",
		Forbid: []string{"nmp", "alua", "fusedev", "control", "metrics", "integrity", "scenario", "host"},
		Why:    "hotplug is a source of facts about the host and decides nothing about paths; the host package wires it to the engine",
	},
	{
		From:   "integrity",
		Forbid: []string{"fusedev", "control", "hotplug", "metrics", "scenario", "host"},
		Why:    "the integrity checker checks a device from outside, through the interfaces a user has",
	},
	{
		From:   "metrics",
		Forbid: []string{"fusedev", "control", "hotplug", "integrity", "scenario", "host"},
		Why:    "metrics observe the engine through its observer hook; they drive nothing",
	},
	{
		From:   "arrayd",
		Forbid: []string{"nmp", "alua", "fusedev", "hotplug", "metrics", "integrity", "scenario", "host"},
		Why:    "the array server serves the array (array, iscsi) and reuses the control socket; it knows nothing of the host side",
	},
	{
		From:   "host",
		Forbid: []string{"control", "metrics", "scenario", "fusedev"},
		Why:    "the PSA host makes and keeps devices; the control API, metrics and scenarios drive it from above, and FUSE serves what it returns (host.IO) without the host knowing FUSE",
	},
	{
		From:   "host",
		Forbid: thirdParty,
		Why:    "the host reaches uevents through package hotplug and exposes devices through interfaces; it needs no FUSE, metrics or uevent library of its own",
	},
	{
		From:   "control",
		Forbid: []string{"scenario", "metrics", "fusedev"},
		Why:    "the control API drives the host; scenarios drive the control API, and neither FUSE nor metrics are reached through it",
	},
	{
		From:   "...",
		Forbid: []string{"cmd/...", "bench/...", "tests/...", "internal/..."},
		Why:    "programs, benchmarks, tests and these checks are leaves: nothing imports them",
	},
	{
		From:   "...",
		Except: []string{"fusedev", "bench/...", "internal/hangfs"},
		Forbid: []string{"github.com/hanwen/go-fuse/v2/..."},
		Why:    "only the FUSE layer (and its benchmarks, and the hanging test file system internal/hangfs) knows FUSE",
	},
	{
		From:   "backends/...",
		Forbid: thirdParty,
		Why:    "transports need no FUSE, metrics or uevent library",
	},
	{
		From:   "mpath",
		Forbid: thirdParty,
		Why:    "the error taxonomy needs no FUSE, metrics or uevent library",
	},
	{
		From:   "nmp",
		Forbid: thirdParty,
		Why:    "the engine exposes an observer hook; metrics and uevents are wired in from outside",
	},
	{
		From:   "array",
		Forbid: thirdParty,
		Why:    "the simulated array needs no FUSE, metrics or uevent library",
	},
	{
		From:   "alua",
		Forbid: thirdParty,
		Why:    "the ALUA SATP needs no FUSE, metrics or uevent library",
	},
}

// An importException is a known import that breaks a rule today. Each one
// is debt: remove it (and the import) when its reason is dealt with. The
// test fails when an exception is no longer needed, so the list only shrinks.
type importException struct {
	From, To string // module-relative package paths
	Reason   string
}

var importExceptions = []importException{}

// match reports whether the package path p (module-relative when inside the
// module, full otherwise) matches pattern.
func match(pattern, p string) bool {
	if pattern == "..." {
		return true
	}
	if prefix, ok := strings.CutSuffix(pattern, "/..."); ok {
		return p == prefix || strings.HasPrefix(p, prefix+"/")
	}
	return p == pattern
}

// external reports whether an import path or pattern is outside this module
// (its first element has a dot, as a domain name does).
func external(p string) bool {
	first, _, _ := strings.Cut(p, "/")
	return first != "..." && strings.Contains(first, ".")
}

func matchAny(patterns []string, p string) bool {
	for _, pat := range patterns {
		if match(pat, p) {
			return true
		}
	}
	return false
}

// importViolation is one import that a rule forbids.
type importViolation struct {
	From, To string
	Rule     layerRule
}

// checkImports applies rules to the packages; an import of a package outside
// the module is checked only against patterns outside it ("..." means the
// module's own packages).
func checkImports(mod module, pkgs []pkg, rules []layerRule) []importViolation {
	var out []importViolation
	for _, p := range pkgs {
		from, inside := rel(mod, p.ImportPath)
		if !inside {
			continue
		}
		for _, imp := range p.Imports {
			to, toInside := rel(mod, imp)
			if !toInside && !external(imp) {
				continue // standard library
			}
			for _, r := range rules {
				if !match(r.From, from) || matchAny(r.Except, from) {
					continue
				}
				for _, f := range r.Forbid {
					if external(f) != toInside && match(f, to) {
						out = append(out, importViolation{From: from, To: to, Rule: r})
						break
					}
				}
			}
		}
	}
	return out
}

func TestImportLayers(t *testing.T) {
	mod, pkgs := packages(t)
	used := map[importException]bool{}
	for _, v := range checkImports(mod, pkgs, layerRules) {
		excused := false
		for _, e := range importExceptions {
			if e.From == v.From && e.To == v.To {
				used[e], excused = true, true
			}
		}
		if !excused {
			t.Errorf("%s imports %s: rule %q forbids %v: %s", v.From, v.To, v.Rule.From, v.Rule.Forbid, v.Rule.Why)
		}
	}
	for _, e := range importExceptions {
		if !used[e] {
			t.Errorf("the exception %s -> %s is not needed any more (no rule is broken by it): delete it from importExceptions", e.From, e.To)
		}
	}
}

func TestImportRulesCatchViolations(t *testing.T) {
	// The rules on made-up packages: a violation is found, an allowed
	// import and the standard library are not, and a third-party rule
	// does not match a module package of the same name.
	mod := module{Path: "example.com/m"}
	pkgs := []pkg{
		{ImportPath: "example.com/m/backends/nbd", Imports: []string{"context", "example.com/m/backends", "example.com/m/mpath", "example.com/m/nmp"}},
		{ImportPath: "example.com/m/fusedev", Imports: []string{"example.com/m/mpath", "github.com/hanwen/go-fuse/v2/fs"}},
		{ImportPath: "example.com/m/nmp", Imports: []string{"github.com/hanwen/go-fuse/v2/fuse"}},
		{ImportPath: "example.com/m/backends", Imports: []string{"example.com/m/mpath"}},
	}
	got := map[string]bool{}
	for _, v := range checkImports(mod, pkgs, layerRules) {
		got[v.From+" -> "+v.To] = true
	}
	require.Equal(t, map[string]bool{
		"backends/nbd -> nmp":                      true,
		"nmp -> github.com/hanwen/go-fuse/v2/fuse": true,
		"backends -> mpath":                        true,
	}, got)
}

// Text that points outside the repository. The patterns are spelled so
// that this file does not match them itself.
var outsideRefs = []struct {
	Name string
	Re   *regexp.Regexp
}{
	{"a sibling directory of the checkout", regexp.MustCompile(`\.\./shared\b`)},
	// a machine path: the directory at the root, not a folder of that name
	// inside the repository (tests/vm/.. is fine)
	{"a machine path", regexp.MustCompile(`(?:^|[^\w.\-/)}\]$~])/wor[k]/`)},
	// issue references in prose; fault ids ("injected fault #1"), colours
	// ("#1f77b4") and markdown anchors are not issue references
	{"an issue reference", regexp.MustCompile(`(?i)\bissues? ?(?:no\.? ?)?#?\d+\b`)},
	{"an issue reference", regexp.MustCompile(`(?i)\b(?:fix(?:es|ed)?|close[sd]?|resolve[sd]?)\s+#\d+\b`)},
}

// An outsideException is a known reference in a file this change could not
// edit; remove it together with the text.
type outsideException struct {
	File, Text string // the file and a piece of the offending line
	Reason     string
}

var outsideExceptions = []outsideException{}

// outsideFinding is one line that refers outside the repository.
type outsideFinding struct {
	File string
	Line int
	What string
	Text string
}

// scanOutside returns the lines of data that refer outside the repository.
func scanOutside(name string, data []byte) []outsideFinding {
	var out []outsideFinding
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 0, 64*1024), len(data)+1)
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		for _, ref := range outsideRefs {
			if ref.Re.MatchString(line) {
				out = append(out, outsideFinding{File: name, Line: n, What: ref.Name, Text: line})
				break
			}
		}
	}
	return out
}

func TestNoReferencesOutsideRepository(t *testing.T) {
	mod, _ := packages(t)
	needs.Tools(t, "git")
	out, err := exec.Command("git", "-C", mod.Dir, "ls-files", "-z").Output()
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("git ls-files: %v", err)
		}
		t.Skipf("git ls-files in %s failed (%v): not a git checkout; runs in CI", mod.Dir, err)
	}
	files := strings.Split(strings.TrimRight(string(out), "\x00"), "\x00")
	require.NotEmpty(t, files)
	sort.Strings(files)
	used := map[outsideException]bool{}
	for _, f := range files {
		data, err := os.ReadFile(filepath.Join(mod.Dir, f))
		if errors.Is(err, os.ErrNotExist) {
			continue // deleted in the work tree, not yet committed
		}
		require.NoError(t, err)
		if bytes.IndexByte(data[:min(len(data), 8000)], 0) >= 0 {
			continue // binary
		}
	findings:
		for _, fd := range scanOutside(f, data) {
			for _, e := range outsideExceptions {
				if e.File == fd.File && strings.Contains(fd.Text, e.Text) {
					used[e] = true
					continue findings
				}
			}
			t.Errorf("%s:%d refers to %s; the repository must stand alone: %s", fd.File, fd.Line, fd.What, strings.TrimSpace(fd.Text))
		}
	}
	for _, e := range outsideExceptions {
		if !used[e] {
			t.Errorf("the exception for %q in %s is not needed any more: delete it from outsideExceptions", e.Text, e.File)
		}
	}
}

func TestOutsidePatterns(t *testing.T) {
	// Strings are put together at run time so that this file does not
	// contain what it looks for.
	sib := ".." + "/shared"
	mach := "/" + "work" + "/"
	iss := "iss" + "ue"
	bad := []string{
		"The brief is `" + sib + "/DESIGN.md`",
		"runs " + mach + "shared/bench/fio-suite.sh on it",
		mach + "x",
		"see " + iss + " 12",
		"(" + iss + " #4 point 7)",
		"Fixes #" + "12",
		strings.ToUpper(iss) + " 3",
	}
	good := []string{
		"write: path-failure: injected fault #1",
		`fill="#1f77b4"`,
		"build tests/vm" + mach + "mpathfs first",
		"VM_WORK ?= $(VM_DIR)" + mach + "x",
		"$here" + mach + "x",
		"an " + iss + " with the tracker",
		"t" + iss + " 3", // a word that merely ends in the letters
		"## Heading #2",
	}
	for _, s := range bad {
		require.NotEmpty(t, scanOutside("x", []byte(s)), "should be found: %q", s)
	}
	for _, s := range good {
		require.Empty(t, scanOutside("x", []byte(s)), "should not be found: %q", s)
	}
}
