package main

import (
	"bytes"
	"regexp"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// helpArgs lists every command and subcommand as typed (from the command
// table and the subcommand table).
func helpArgs() [][]string {
	var out [][]string
	for _, c := range allCommands() {
		out = append(out, []string{c.name})
		for _, s := range subcommands[c.name] {
			out = append(out, append([]string{c.name}, strings.Fields(s.name)...))
		}
	}
	return out
}

// Every command and subcommand answers -h and --help on stdout with exit
// status 0, without dialling a socket (the socket named here does not
// exist).
func TestEveryCommandAnswersHelp(t *testing.T) {
	t.Setenv("MPATHFS_CONTROL", "/nonexistent/mpathfs-help-test.sock")
	for _, args := range helpArgs() {
		for _, h := range []string{"-h", "--help"} {
			var stdout, stderr bytes.Buffer
			code := run(append(append([]string(nil), args...), h), &stdout, &stderr)
			name := strings.Join(args, " ")
			require.Equal(t, 0, code, "mpathfs %s %s: stderr %q", name, h, stderr.String())
			assert.Contains(t, stdout.String(), "usage: mpathfs "+args[0], "mpathfs %s %s", name, h)
			if len(args) > 1 {
				assert.Contains(t, stdout.String(), args[len(args)-1], "mpathfs %s %s names the subcommand", name, h)
			}
			assert.Empty(t, stderr.String(), "mpathfs %s %s", name, h)
		}
	}
}

func TestHelpListsEverything(t *testing.T) {
	var stdout, stderr bytes.Buffer
	require.Equal(t, 0, run([]string{"help"}, &stdout, &stderr))
	for _, c := range allCommands() {
		assert.Contains(t, stdout.String(), "\n  "+c.name+" ", "mpathfs help lists %s", c.name)
	}
	for group, subs := range subcommands {
		stdout.Reset()
		require.Equal(t, 0, run([]string{group, "-h"}, &stdout, &stderr), group)
		for _, s := range subs {
			assert.Contains(t, stdout.String(), "\n  "+s.name+" ", "mpathfs %s -h lists %s", group, s.name)
		}
	}
	stdout.Reset()
	require.Equal(t, 0, run([]string{"help", "path", "list"}, &stdout, &stderr))
	assert.Contains(t, stdout.String(), "usage: mpathfs path list")
}

// A group's dispatch and its help table stay in step: the subcommands an
// unknown one's error offers are all in the table, for every command of
// the command table (but mount, which would mount on its argument): a
// command that dispatches subcommands without a table entry fails here.
func TestSubcommandTableMatchesDispatch(t *testing.T) {
	t.Setenv("MPATHFS_CONTROL", "/nonexistent/mpathfs-help-test.sock")
	want := regexp.MustCompile(`\(want ([^)]*)\)`)
	for _, c := range allCommands() {
		if c.name == "mount" {
			continue
		}
		var stdout, stderr bytes.Buffer
		code := run([]string{c.name, "no-such-subcommand"}, &stdout, &stderr)
		m := want.FindStringSubmatch(stderr.String())
		if m == nil || !strings.Contains(stderr.String(), "subcommand") {
			continue
		}
		require.NotNil(t, subcommands[c.name], "%s dispatches subcommands (%s) but has no entry in subcommands: its -h cannot list them", c.name, m[1])
		require.Equal(t, 2, code, "%s: an unknown subcommand is a usage error", c.name)
		names := map[string]bool{}
		for _, s := range subcommands[c.name] {
			names[strings.Fields(s.name)[0]] = true
		}
		for _, w := range strings.FieldsFunc(m[1], func(r rune) bool { return r == ',' || r == ' ' }) {
			if w == "or" {
				continue
			}
			assert.True(t, names[w], "%s %s is dispatched but missing from subcommands (help)", c.name, w)
		}
	}
}

func TestUnknownSubcommandStillFails(t *testing.T) {
	for _, args := range [][]string{{"path", "bogus"}, {"fault", "bogus", "-h"}, {"scenario", "bogus"}, {"nosuchcommand", "-h"}} {
		var stdout, stderr bytes.Buffer
		assert.Equal(t, 2, run(args, &stdout, &stderr), "%v", args)
		assert.Contains(t, stderr.String(), "unknown", "%v", args)
	}
}
