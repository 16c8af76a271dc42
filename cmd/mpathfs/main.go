// Command mpathfs serves multipath block devices as files in a FUSE mount
// and drives a running mount through its control socket.
//
//	mpathfs mount [flags] MOUNTPOINT        serve devices (foreground)
//	mpathfs status [--json]                 topology, like multipath -ll
//	mpathfs path list [--json]              paths, like esxcli storage core path list
//	mpathfs path set --state on|off PATH    administrative state
//	mpathfs path fence PATH                 confirm a path dead: release writes held for it
//	mpathfs path add DEVICE URI             a path joins a running device, after the identity check
//	mpathfs path remove [--force] PATH      a path leaves its running device (flushed first)
//	mpathfs adapter list [--json]           adapters (vmhbaN), their targets, paths and devices
//	mpathfs adapter fail|restore|reset A    every path through an adapter fails, returns, gets a reset's UA
//	mpathfs adapter rescan [A]              new paths and devices from the configured sources
//	mpathfs claimrule list|add|remove|move|load|run   the claim-rule lifecycle
//	mpathfs claiming unclaim|reclaim|list   take paths away, claim them again
//	mpathfs satp list|set|rule list|add|remove        SATPs, default PSPs, SATP rules
//	mpathfs device list|set --state on|off  device states; detach and attach by hand
//	mpathfs reset lun|target|bus|abort-task-set PATH  a reset's aborted tasks and unit attentions
//	mpathfs fault inject PATH FAULT-FLAGS   inject a fault (see `fault inject -h`)
//	mpathfs fault clear PATH [--id N]       clear faults
//	mpathfs fault list [--json]
//	mpathfs policy set DEVICE --psp P [--iops N] [--option k=v]...
//	mpathfs events [--last N] [--follow] [--json]  recent events, then optionally new ones
//	mpathfs trace DEVICE                    per-I/O trace as JSON lines
//	mpathfs plugins [--json]                MPPs, SATPs and PSPs
//
// Every command and subcommand answers -h and --help with its usage on
// stdout (exit status 0); `mpathfs help [COMMAND [SUBCOMMAND]]` too.
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

// allCommands lists the commands, in the order help shows them.
func allCommands() []command {
	return []command{
		{"mount", "serve devices as files in a FUSE mount (foreground)", cmdMount},
		{"status", "show devices and paths like multipath -ll", cmdStatus},
		{"path", "path list | path set --state on|off [--rank N] PATH | path fence PATH | path add DEVICE URI | path remove PATH", cmdPath},
		{"adapter", "adapter list | adapter fail|restore|reset vmhbaN | adapter rescan [vmhbaN]: adapters and every path through them", cmdAdapter},
		{"device", "device list | device set --state on|off DEVICE: device states; detach and attach by hand", cmdDevice},
		{"reset", "reset lun|target|bus|abort-task-set PATH: a reset's aborted tasks and unit attentions", cmdReset},
		{"fault", "fault inject PATH FLAGS | fault clear PATH [--id N] | fault list", cmdFault},
		{"policy", "policy set DEVICE [--psp PSP] [options] [--failback M] [--no-path-retry V] [--apd-timeout D]", cmdPolicy},
		{"queue", "queue on|off DEVICE: restore or disable queueing while no path is usable (dm's restorequeueing/disablequeueing)", cmdQueue},
		{"events", "recent path state changes and other events; --follow for new ones", cmdEvents},
		{"trace", "stream the per-I/O trace of a device as JSON lines", cmdTrace},
		{"plugins", "list multipathing plugins, SATPs and PSPs", cmdPlugins},
		{"array", "array status | fail|restore|transfer ARRAY CONTROLLER | set-tpg ARRAY TPG STATE | serve | port offline|online PORT | session drop INITIATOR | fault inject|clear|list", cmdArray},
		{"claimrule", "claimrule list | add | remove | move | load | run: the claim-rule lifecycle (file and runtime rules)", cmdClaimRule},
		{"claiming", "claiming unclaim | reclaim | list: take paths from their devices, claim them again, list masked and unclaimed paths", cmdClaiming},
		{"satp", "satp list | satp set | satp rule list|add|remove: SATPs, default PSPs, SATP rules", cmdSATP},
		{"psp", "psp list [--json]: path selection plugins", cmdPSP},
		{"explain", "explain DEVICE [--json]: which claim rule and SATP rule matched, and where each option came from", cmdExplain},
		{"label", "label [--wwid W [--force] | --remove] FILE...: the wwid label of a file store", cmdLabel},
		{"scenario", "scenario check FILE | scenario run [--report F.md] [--svg F.svg] FILE", cmdScenario},
		{"verify", "verify [--json] DEVICE: integrity check of a mount --verify device", cmdVerify},
		{"pr", "pr --register|--reserve|--release|--preempt|--preempt-abort|--clear|--read-keys|--read-reservation|--read-full-status … DEVICE: persistent reservations (mpathpersist's verbs); pr reserve6|release6 DEVICE", cmdPR},
	}
}

// subcommand is one line of a group command's help.
type subcommand struct {
	name  string // as typed after the command: "list", "rule list"
	usage string // its usage and what it does
}

// subcommands are the subcommands of the group commands, for
// `mpathfs GROUP -h` (the dispatch itself is each command's switch; a
// unit test keeps the two in step).
var subcommands = map[string][]subcommand{
	"path": {
		{"list", "path list [--json]: paths, like esxcli storage core path list"},
		{"set", "path set --state on|off [--rank N] PATH: administrative state, MRU rank"},
		{"fence", "path fence PATH: confirm a path dead, release writes held for it"},
		{"add", "path add [--name N] DEVICE URI: a path joins a running device, after the identity check"},
		{"remove", "path remove [--force] PATH: a path leaves its running device, its writes flushed first"},
		{"switch", "path switch PATH: make a usable path the one in use (MRU, FIXED: fail back by hand; dm's switchgroup)"},
	},
	"adapter": {
		{"list", "adapter list [--json]: adapters (vmhbaN) with state, targets, paths and devices"},
		{"fail", "adapter fail [--reason T] ADAPTER: every path through it fails together (a lost HBA)"},
		{"restore", "adapter restore ADAPTER: clear what adapter fail injected; the paths return"},
		{"reset", "adapter reset ADAPTER: unit attention 06/29/00 on each path's next I/O"},
		{"rescan", "adapter rescan [vmhbaN]: read the configured sources again; new paths join, new WWIDs become devices"},
	},
	"device": {
		{"list", "device list [--json]: devices with their state (on, off, dead), like esxcli storage core device list"},
		{"set", "device set --state on|off [--reason T] DEVICE: detach (I/O fails, open ENXIO) or attach by hand"},
	},
	"fault": {
		{"inject", "fault inject PATH FAULT-FLAGS: inject a fault (`fault inject -h` lists the flags)"},
		{"clear", "fault clear PATH [--id N] | fault clear --all: clear faults"},
		{"list", "fault list [--json]: active faults"},
	},
	"policy": {
		{"set", "policy set DEVICE [--psp PSP] [--iops N | --bytes N | --type latency] [--option k=v]... [--failback M] [--no-path-retry V] [--apd-timeout D]: change the path selection, failback and queueing"},
	},
	"array": {
		{"status", "array status [--json]: simulated arrays, controllers and target port groups"},
		{"fail", "array fail ARRAY CONTROLLER: a controller fails"},
		{"restore", "array restore ARRAY CONTROLLER: a failed controller comes back"},
		{"transfer", "array transfer ARRAY CONTROLLER: move LUN ownership to a controller"},
		{"set-tpg", "array set-tpg ARRAY TPG STATE: force an ALUA state (AO, ANO, S, U, O or T)"},
		{"serve", "array serve [--config ARRAY.yaml]: serve an array over iSCSI (its own control socket)"},
		{"port", "array port offline|online PORT: a port of an array server goes away or comes back"},
		{"session", "array session drop INITIATOR: an array server drops an initiator's sessions"},
		{"fault", "array fault inject|clear|list: faults at an array server (per port, initiator, LU)"},
	},
	"pr": {
		{"reserve6", "pr reserve6 DEVICE: SCSI-2 RESERVE(6) through one path; I/O pinned to it while held"},
		{"release6", "pr release6 DEVICE: SCSI-2 RELEASE(6) through the path that holds it"},
	},
	"scenario": {
		{"check", "scenario check FILE: parse a scenario and print its timeline"},
		{"run", "scenario run [--report F.md] [--svg F.svg] FILE: run it against a mount"},
	},
	"satp": {
		{"list", "satp list [--json]: SATPs with their default PSPs"},
		{"set", "satp set --satp S --default-psp P: an SATP's default PSP for devices claimed from now on"},
		{"rule list", "satp rule list [--json]: the SATP rules"},
		{"rule add", "satp rule add --satp S [--vendor V --model M --transport T --driver D --claim-option C --psp P --psp-option k=v --option k=v]: add an SATP rule"},
		{"rule remove", "satp rule remove --satp S [match flags]: remove a user SATP rule"},
	},
	"claimrule": {
		{"list", "claimrule list [--json]: the claim rules, file (configuration) and runtime (loaded) rows"},
		{"add", "claimrule add --rule N --type T --plugin P [match flags]: add a rule to the configuration"},
		{"remove", "claimrule remove --rule N: remove a rule from the configuration"},
		{"move", "claimrule move --rule N --new-rule M: renumber a rule of the configuration"},
		{"load", "claimrule load: the runtime rules become what the configuration says"},
		{"run", "claimrule run: claim unclaimed paths; mask live the claimed paths a MASK_PATH rule now matches"},
	},
	"claiming": {
		{"unclaim", "claiming unclaim --path P | --device D | --adapter A: take paths from their devices live"},
		{"reclaim", "claiming reclaim --device D: claim a device's paths again with the runtime rules (masks, unmasks)"},
		{"list", "claiming list [--json]: the masked and unclaimed paths"},
	},
	"psp": {
		{"list", "psp list [--json]: path selection plugins"},
	},
}

func isHelp(a string) bool { return a == "-h" || a == "--help" || a == "-help" || a == "help" }

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		printUsage(stderr)
		return 2
	}
	if isHelp(args[0]) {
		if len(args) > 1 && args[0] == "help" {
			// `mpathfs help CMD [SUB]` is `mpathfs CMD [SUB] -h`.
			return run(append(append([]string(nil), args[1:]...), "-h"), stdout, stderr)
		}
		printUsage(stdout)
		return 0
	}
	if args[0] == "version" || args[0] == "--version" {
		fmt.Fprintln(stdout, "mpathfs", version)
		return 0
	}
	for _, c := range allCommands() {
		if c.name == args[0] {
			// pr's own -h lists its verbs (flags) and its subcommands.
			if subs := subcommands[c.name]; subs != nil && c.name != "pr" && len(args) > 1 && isHelp(args[1]) {
				printGroupUsage(stdout, c, subs)
				return 0
			}
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

func printGroupUsage(w io.Writer, c command, subs []subcommand) {
	fmt.Fprintf(w, "usage: mpathfs %s SUBCOMMAND [flags] [args]\n", c.name)
	fmt.Fprintln(w, "\nsubcommands:")
	width := 0
	for _, s := range subs {
		width = max(width, len(s.name))
	}
	for _, s := range subs {
		fmt.Fprintf(w, "  %-*s  %s\n", width, s.name, s.usage)
	}
	fmt.Fprintf(w, "\nRun `mpathfs %s SUBCOMMAND -h` for a subcommand's flags.\n", c.name)
}

const version = "0.1.0"

func printUsage(w io.Writer) {
	fmt.Fprintln(w, "usage: mpathfs COMMAND [flags] [args]")
	fmt.Fprintln(w, "\ncommands:")
	for _, c := range allCommands() {
		fmt.Fprintf(w, "  %-9s %s\n", c.name, c.summary)
	}
	fmt.Fprintln(w, "\nEvery command but mount talks to a running mount through its control socket:")
	fmt.Fprintln(w, "--control PATH, or MPATHFS_CONTROL, default /run/mpathfs/control.sock.")
	fmt.Fprintln(w, "Every command and subcommand answers -h and --help: `mpathfs COMMAND -h`,")
	fmt.Fprintln(w, "`mpathfs COMMAND SUBCOMMAND -h`, or `mpathfs help COMMAND [SUBCOMMAND]`.")
}

func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}

// newFlags makes a flag set that reports errors instead of exiting; -h
// and --help print the usage on help (the command's stdout).
func newFlags(help io.Writer, name, usage string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {
		fs.SetOutput(help)
		fmt.Fprintf(help, "usage: mpathfs %s\n", usage)
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
