// Command mpathfs serves multipath block devices as files in a FUSE mount
// and drives a running mount through its control socket.
//
//	mpathfs mount [flags] MOUNTPOINT        serve devices (foreground)
//	mpathfs status [--json]                 topology, like multipath -ll
//	mpathfs path list [--json]              paths, like esxcli storage core path list
//	mpathfs path set --state on|off PATH    administrative state
//	mpathfs path fence PATH                 confirm a path dead: release writes held for it
//	mpathfs path add DEVICE URI             a path joins a running device, after the identity check
//	mpathfs fault inject PATH FAULT-FLAGS   inject a fault (see `fault inject -h`)
//	mpathfs fault clear PATH [--id N]       clear faults
//	mpathfs fault list [--json]
//	mpathfs policy set DEVICE --psp P [--iops N] [--option k=v]...
//	mpathfs events [--json]                 follow path state changes
//	mpathfs trace DEVICE                    per-I/O trace as JSON lines
//	mpathfs plugins [--json]                MPPs, SATPs and PSPs
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
)

// usageError is wrong input: one line on stderr, exit status 2.
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

func usagef(format string, a ...any) error { return usageError{fmt.Sprintf(format, a...)} }

type command struct {
	name    string
	summary string
	run     func(args []string, stdout io.Writer) error
}

// allCommands lists the built-in commands, then those other files of the
// command added to extraCommands (from init functions or variable
// initialisers, in any file order: the list is made when it is needed).
func allCommands() []command {
	commands := []command{
		{"mount", "serve devices as files in a FUSE mount (foreground)", cmdMount},
		{"status", "show devices and paths like multipath -ll", cmdStatus},
		{"path", "path list | path set --state on|off [--rank N] PATH | path fence PATH | path add DEVICE URI", cmdPath},
		{"fault", "fault inject PATH FLAGS | fault clear PATH [--id N] | fault list", cmdFault},
		{"policy", "policy set DEVICE --psp PSP [options]", cmdPolicy},
		{"events", "follow path state changes and other events", cmdEvents},
		{"trace", "stream the per-I/O trace of a device as JSON lines", cmdTrace},
		{"plugins", "list multipathing plugins, SATPs and PSPs", cmdPlugins},
	}
	return append(commands, extraCommands...)
}

// extraCommands are added by other files of the command (arrays, scenarios).
var extraCommands []command

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		printUsage(stderr)
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	if args[0] == "version" || args[0] == "--version" {
		fmt.Fprintln(stdout, "mpathfs", version)
		return 0
	}
	for _, c := range allCommands() {
		if c.name == args[0] {
			err := c.run(args[1:], stdout)
			if err == nil {
				return 0
			}
			if errors.Is(err, flag.ErrHelp) {
				return 0
			}
			fmt.Fprintf(stderr, "mpathfs %s: %s\n", c.name, oneLine(err.Error()))
			var ue usageError
			if errors.As(err, &ue) {
				return 2
			}
			return 1
		}
	}
	fmt.Fprintf(stderr, "mpathfs: unknown command %q (run `mpathfs help` for the list)\n", args[0])
	return 2
}

var version = "0.1.0"

func printUsage(w io.Writer) {
	fmt.Fprintln(w, "usage: mpathfs COMMAND [flags] [args]")
	fmt.Fprintln(w, "\ncommands:")
	for _, c := range allCommands() {
		fmt.Fprintf(w, "  %-9s %s\n", c.name, c.summary)
	}
	fmt.Fprintln(w, "\nEvery command but mount talks to a running mount through its control socket:")
	fmt.Fprintln(w, "--control PATH, or MPATHFS_CONTROL, default /run/mpathfs/control.sock.")
	fmt.Fprintln(w, "Run `mpathfs COMMAND -h` for a command's flags.")
}

func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}

// newFlags makes a flag set that reports errors instead of exiting.
func newFlags(name, usage string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {
		fs.SetOutput(os.Stderr)
		fmt.Fprintf(os.Stderr, "usage: mpathfs %s\n", usage)
		fs.PrintDefaults()
		fs.SetOutput(io.Discard)
	}
	return fs
}

// parseFlags parses flags and positionals in any order.
func parseFlags(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return nil, err
			}
			return nil, usageError{err.Error()}
		}
		args = fs.Args()
		if len(args) == 0 {
			return pos, nil
		}
		if args[0] == "--" {
			return append(pos, args[1:]...), nil
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
}

// multiFlag collects a repeatable flag.
type multiFlag []string

func (m *multiFlag) String() string     { return strings.Join(*m, ",") }
func (m *multiFlag) Set(v string) error { *m = append(*m, v); return nil }
