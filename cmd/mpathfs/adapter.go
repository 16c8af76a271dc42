package main

import (
	"context"
	"fmt"
	"io"

	"github.com/mpathfs/mpathfs/control"
	"github.com/mpathfs/mpathfs/host"
)

// `mpathfs adapter list|fail|restore|reset` and `mpathfs path remove`:
// adapters (vmhbaN) are derived from the paths' runtime names; failing one
// fails every path through it together, as a lost HBA or fabric link does.

func cmdAdapter(args []string, stdout io.Writer) error {
	if len(args) == 0 {
		return usagef("want `adapter list`, `adapter fail|restore|reset ADAPTER` or `adapter rescan [ADAPTER]`")
	}
	switch args[0] {
	case "list":
		return cmdAdapterList(args[1:], stdout)
	case "fail", "restore", "reset":
		return cmdAdapterAction(args[0], args[1:], stdout)
	case "rescan":
		return cmdAdapterRescan(args[1:], stdout)
	}
	return usagef("unknown adapter subcommand %q (want list, fail, restore, reset or rescan)", args[0])
}

func cmdAdapterList(args []string, stdout io.Writer) error {
	fs := newFlags(stdout, "adapter list", "adapter list [--json] [--control S]")
	ctl := fs.String("control", "", "control socket")
	asJSON := fs.Bool("json", false, "print JSON")
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 0 {
		return usagef("adapter list takes no arguments (got %q)", pos)
	}
	c, err := dial(*ctl)
	if err != nil {
		return err
	}
	rep, err := c.Adapters(context.Background())
	if err != nil {
		return err
	}
	if *asJSON {
		return printJSON(stdout, rep)
	}
	for _, a := range rep.Adapters {
		printAdapter(stdout, a)
	}
	return nil
}

// printAdapter prints an adapter in the spirit of `esxcli storage core
// adapter list`, with its targets and paths under it.
func printAdapter(w io.Writer, a host.AdapterStatus) {
	fmt.Fprintf(w, "%s\n", a.Name)
	state := a.State
	if a.Reason != "" {
		state += " (" + a.Reason + ", since " + a.Since + ")"
	}
	if a.Host != "" {
		fmt.Fprintf(w, "   Host: %s\n", a.Host)
	}
	fmt.Fprintf(w, "   State: %s\n", state)
	fmt.Fprintf(w, "   Paths: %d (%d dead)\n", a.Paths, a.Dead)
	fmt.Fprintf(w, "   Devices: %v\n", a.Devices)
	for _, t := range a.Targets {
		fmt.Fprintf(w, "   Target %s\n", t.Name)
		for _, p := range t.Paths {
			fmt.Fprintf(w, "      %s  %-8s %s  %s\n", p.Location, p.State, p.Device, p.URI)
		}
	}
	fmt.Fprintln(w)
}

func cmdAdapterAction(action string, args []string, stdout io.Writer) error {
	what := map[string]string{
		"fail":    "every path through the adapter fails together (a path-failure fault on each)",
		"restore": "clear the faults `adapter fail` injected and check the paths now",
		"reset":   "every path through the adapter answers its next I/O with unit attention 06/29/00",
	}[action]
	usage := "adapter " + action + " [--json] [--control S] ADAPTER"
	if action == "fail" {
		usage = "adapter fail [--reason TEXT] [--json] [--control S] ADAPTER"
	}
	fs := newFlags(stdout, "adapter "+action, usage+"\n  "+what)
	ctl := fs.String("control", "", "control socket")
	asJSON := fs.Bool("json", false, "print JSON")
	var reason *string
	if action == "fail" {
		reason = fs.String("reason", "", "why (shown by adapter list and in the events)")
	}
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return usagef("give exactly one ADAPTER (vmhbaN, from `mpathfs adapter list`)")
	}
	req := control.AdapterRequest{Adapter: pos[0], Action: action}
	if reason != nil {
		req.Reason = *reason
	}
	c, err := dial(*ctl)
	if err != nil {
		return err
	}
	st, err := c.Adapter(context.Background(), req)
	if err != nil {
		return err
	}
	if *asJSON {
		return printJSON(stdout, st)
	}
	switch action {
	case "fail":
		fmt.Fprintf(stdout, "%s: failed; %d of %d path(s) dead\n", st.Name, st.Dead, st.Paths)
	case "restore":
		fmt.Fprintf(stdout, "%s: restored, state %s; %d of %d path(s) dead\n", st.Name, st.State, st.Dead, st.Paths)
	case "reset":
		fmt.Fprintf(stdout, "%s: reset; %d path(s) get unit attention %s on their next I/O\n", st.Name, st.Paths, host.SenseResetUA)
	}
	return nil
}

// cmdPathRemove is `mpathfs path remove [--force] PATH`.
func cmdPathRemove(args []string, stdout io.Writer) error {
	fs := newFlags(stdout, "path remove", "path remove [--force] [--json] [--control S] PATH\n  take a path out of its running device (its unflushed writes are flushed on it first)")
	ctl := fs.String("control", "", "control socket")
	force := fs.Bool("force", false, "remove the device's last usable path too")
	asJSON := fs.Bool("json", false, "print JSON")
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return usagef("give exactly one PATH (a name or URI from `mpathfs path list`)")
	}
	c, err := dial(*ctl)
	if err != nil {
		return err
	}
	r, err := c.PathRemove(context.Background(), control.PathRemoveRequest{Path: pos[0], Force: *force})
	if err != nil {
		return err
	}
	if *asJSON {
		return printJSON(stdout, r)
	}
	flush := "clean"
	switch {
	case r.Flushed:
		flush = "its writes flushed"
	case r.Dirty:
		flush = "NOT flushed (" + r.FlushError + "): the device's next fsync reports or covers its writes"
	}
	forced := ""
	if r.Forced {
		forced = " (forced: it was the last usable path)"
	}
	fmt.Fprintf(stdout, "%s: path %s removed%s, %s; %d path(s) left, %d usable\n", r.Device, r.Path, forced, flush, r.Left, r.Usable)
	return nil
}
