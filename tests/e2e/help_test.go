package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/mpathfs/mpathfs/mpath"
)

// helpCommands is every command and subcommand of mpathfs, as typed,
// read from the binary's own help: the commands `mpathfs help` lists, and
// the subcommands each group's `-h` lists (under "subcommands:"). A new
// command or subcommand is covered as soon as help shows it.
func helpCommands(t *testing.T, run func(args ...string) (string, string, error)) []string {
	t.Helper()
	out, errOut, err := run("help")
	require.NoError(t, err, "mpathfs help: %s", errOut)
	var cmds []string
	section := ""
	for _, line := range strings.Split(out, "\n") {
		if strings.HasSuffix(line, ":") && !strings.HasPrefix(line, " ") {
			section = line
			continue
		}
		if section == "commands:" && strings.HasPrefix(line, "  ") {
			if f := strings.Fields(line); len(f) > 0 {
				cmds = append(cmds, f[0])
			}
		}
	}
	require.GreaterOrEqual(t, len(cmds), 10, "mpathfs help lists the commands:\n%s", out)
	var all []string
	for _, c := range cmds {
		all = append(all, c)
		if c == "mount" {
			continue
		}
		out, _, err := run(c, "-h")
		require.NoError(t, err, "mpathfs %s -h", c)
		i := strings.Index(out, "\nsubcommands:\n")
		if i < 0 {
			continue
		}
		for _, line := range strings.Split(out[i+len("\nsubcommands:\n"):], "\n") {
			if !strings.HasPrefix(line, "  ") {
				break
			}
			name, _, _ := strings.Cut(strings.TrimSpace(line), "  ")
			all = append(all, c+" "+strings.TrimSpace(name))
		}
	}
	return all
}

// TestHelpEverywhere: every command and subcommand answers -h and --help
// with its usage on stdout and exit status 0, without a mount (the
// control socket named does not exist: -h never dials it).
func TestHelpEverywhere(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "none.sock")
	runHelp := func(args ...string) (string, string, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		cmd := exec.CommandContext(ctx, binary, args...)
		cmd.Env = append(cmd.Environ(), "MPATHFS_CONTROL="+sock)
		var stdout, stderr strings.Builder
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		err := cmd.Run()
		return stdout.String(), stderr.String(), err
	}
	commands := helpCommands(t, runHelp)
	for _, want := range []string{"path list", "adapter reset", "device set", "reset", "array serve", "satp rule list"} {
		assert.Contains(t, commands, want, "help lists %s", want)
	}
	for _, h := range []string{"-h", "--help", "help"} {
		out, errOut, err := runHelp(h)
		require.NoError(t, err, "mpathfs %s: %s", h, errOut)
		assert.Contains(t, out, "usage: mpathfs COMMAND", "mpathfs %s", h)
		for _, c := range commands {
			if !strings.Contains(c, " ") {
				assert.Contains(t, out, "\n  "+c+" ", "mpathfs %s lists %s", h, c)
			}
		}
	}
	for _, c := range commands {
		words := strings.Fields(c)
		for _, h := range []string{"-h", "--help"} {
			out, errOut, err := runHelp(append(append([]string(nil), words...), h)...)
			require.NoError(t, err, "mpathfs %s %s: %s", c, h, errOut)
			assert.Contains(t, out, "usage: mpathfs "+words[0], "mpathfs %s %s", c, h)
			assert.Contains(t, out, words[len(words)-1], "mpathfs %s %s names it", c, h)
		}
	}
	// A group lists its subcommands, one line each.
	for _, c := range commands {
		words := strings.Fields(c)
		if len(words) != 2 {
			continue
		}
		out, _, err := runHelp(words[0], "-h")
		require.NoError(t, err)
		assert.Contains(t, out, "\n  "+words[1]+" ", "mpathfs %s -h lists %s", words[0], words[1])
	}
	// `help COMMAND SUBCOMMAND` is `COMMAND SUBCOMMAND -h`.
	out, _, err := runHelp("help", "path", "fence")
	require.NoError(t, err)
	assert.Contains(t, out, "usage: mpathfs path fence")
	// Unknown subcommands keep their clear error, exit status 2.
	for _, args := range [][]string{{"path", "bogus"}, {"fault", "bogus", "-h"}, {"scenario", "bogus"}, {"bogus", "-h"}} {
		_, errOut, err := runHelp(args...)
		var ee *exec.ExitError
		require.ErrorAs(t, err, &ee, "mpathfs %v", args)
		assert.Equal(t, 2, ee.ExitCode(), "mpathfs %v", args)
		assert.Contains(t, errOut, "unknown", "mpathfs %v", args)
	}
}

// TestEventsHistory: `mpathfs events` prints the events the daemon kept
// (a path that died) and exits; `--follow` prints them, then new ones.
func TestEventsHistory(t *testing.T) {
	m := startMount(t, "--check-interval", "300ms")
	st := m.status()
	require.NotEmpty(t, st.Devices)
	dev := st.Devices[0].Name
	require.NotEmpty(t, st.Devices[0].Paths)
	victim := st.Devices[0].Paths[len(st.Devices[0].Paths)-1].Name
	m.mustCtl("fault", "inject", victim, "--error", "path-failure")
	waitFor(t, 30*time.Second, victim+" to die", func() bool { return pathState(m.status(), dev, victim) == "dead" })

	isDeath := func(ev mpath.Event) bool { return ev.Kind == "path-state" && ev.Path == victim && ev.To == "dead" }
	parse := func(out string) []mpath.Event {
		var evs []mpath.Event
		for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
			var ev mpath.Event
			require.NoError(t, json.Unmarshal([]byte(line), &ev), "line %q", line)
			evs = append(evs, ev)
		}
		return evs
	}
	// From history, then the command returns (mustCtl waits for it).
	evs := parse(m.mustCtl("events", "--json"))
	found := false
	for _, ev := range evs {
		found = found || isDeath(ev)
	}
	assert.True(t, found, "events --json lacks %s going dead: %+v", victim, evs)
	human := m.mustCtl("events")
	assert.Contains(t, human, victim)
	assert.Contains(t, human, "path-state")
	// --last bounds the history.
	assert.Len(t, parse(m.mustCtl("events", "--json", "--last", "1")), 1)

	// --follow: the history, then what happens next.
	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, binary, "events", "--follow", "--json", "--control", m.socket)
	out, err := cmd.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	var mu sync.Mutex
	var followed []mpath.Event
	done := make(chan struct{})
	go func() {
		defer close(done)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			var ev mpath.Event
			if json.Unmarshal(sc.Bytes(), &ev) == nil {
				mu.Lock()
				followed = append(followed, ev)
				mu.Unlock()
			}
		}
	}()
	t.Cleanup(func() { cancel(); <-done; cmd.Wait() })
	history := func() bool {
		mu.Lock()
		defer mu.Unlock()
		for _, ev := range followed {
			if isDeath(ev) {
				return true
			}
		}
		return false
	}
	waitFor(t, 30*time.Second, "events --follow to print the history", history)
	m.mustCtl("fault", "clear", victim)
	cleared := func() bool {
		mu.Lock()
		defer mu.Unlock()
		for _, ev := range followed {
			if ev.Kind == "fault" && ev.Path == victim && strings.HasPrefix(ev.To, "cleared") {
				return true
			}
		}
		return false
	}
	waitFor(t, 30*time.Second, "events --follow to print the new fault-cleared event", cleared)
	select {
	case <-done:
		t.Fatal("events --follow returned on its own")
	default:
	}
	cancel()
	<-done
	m.stopClean(t)
}
