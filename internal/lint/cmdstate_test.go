package lint

import (
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// Programs (cmd/...) parse flags, format output and wire library packages
// together; the state of a running mount lives in those packages (host,
// control), not in package variables of a program. A package-level var in
// a program is allowed only for a read-only table named here.
var commandTables = map[string][]string{
	"cmd/mpathfs": {"subcommands", "prVerbs", "errClusterInMount"}, // help lines of the group commands, mpathpersist's verbs, a sentinel error
}

// packageVars lists the package-level variables a Go source file declares
// (the blank identifier, used for compile-time checks, is not one).
func packageVars(name string, src []byte) ([]string, error) {
	f, err := parser.ParseFile(token.NewFileSet(), name, src, parser.SkipObjectResolution)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, d := range f.Decls {
		g, ok := d.(*ast.GenDecl)
		if !ok || g.Tok != token.VAR {
			continue
		}
		for _, spec := range g.Specs {
			for _, n := range spec.(*ast.ValueSpec).Names {
				if n.Name != "_" {
					out = append(out, n.Name)
				}
			}
		}
	}
	return out, nil
}

func TestNoPackageStateInCommands(t *testing.T) {
	mod, pkgs := packages(t)
	for _, p := range pkgs {
		r, inside := rel(mod, p.ImportPath)
		if !inside || !match("cmd/...", r) {
			continue
		}
		allowed := map[string]bool{}
		for _, n := range commandTables[r] {
			allowed[n] = true
		}
		for _, f := range p.GoFiles {
			src, err := os.ReadFile(filepath.Join(p.Dir, f))
			require.NoError(t, err)
			vars, err := packageVars(f, src)
			require.NoError(t, err)
			for _, v := range vars {
				if !allowed[v] {
					t.Errorf("%s/%s declares the package variable %s: a program keeps no state of its own; put it in a library type (host, control) or a local variable, or, for a read-only table, name it in commandTables", r, f, v)
				}
			}
		}
	}
}

func TestPackageVarsFindsState(t *testing.T) {
	src := strings.Join([]string{
		"package main",
		"const limit = 3",
		"var verify bool",
		"var (",
		"	a, b int",
		"	_ = 1",
		")",
		"func f() { var local int; _ = local }",
	}, "\n")
	got, err := packageVars("x.go", []byte(src))
	require.NoError(t, err)
	require.Equal(t, []string{"verify", "a", "b"}, got)
}
