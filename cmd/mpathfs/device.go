package main

import (
	"context"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/mpathfs/mpathfs/control"
	"github.com/mpathfs/mpathfs/host"
)

// `mpathfs device list|set` (esxcli storage core device list / set
// --state) and `mpathfs reset KIND PATH` (LUN, target and bus resets and
// ABORT TASK SET as events on a path).

func cmdDevice(args []string, stdout io.Writer) error {
	if len(args) == 0 {
		return usagef("want `device list` or `device set --state on|off DEVICE`")
	}
	switch args[0] {
	case "list":
		return cmdDeviceList(args[1:], stdout)
	case "set":
		return cmdDeviceSet(args[1:], stdout)
	}
	return usagef("unknown device subcommand %q (want list or set)", args[0])
}

func cmdDeviceList(args []string, stdout io.Writer) error {
	fs := newFlags(stdout, "device list", "device list [--json] [--control S]\n  the devices with their state (on, off: detached by hand, dead: every path in PDL), like esxcli storage core device list")
	ctl := fs.String("control", "", "control socket")
	asJSON := fs.Bool("json", false, "print JSON")
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 0 {
		return usagef("device list takes no arguments (got %q)", pos)
	}
	c, err := dial(*ctl)
	if err != nil {
		return err
	}
	rep, err := c.Devices(context.Background())
	if err != nil {
		return err
	}
	if *asJSON {
		return printJSON(stdout, rep)
	}
	for _, d := range rep.Devices {
		fmt.Fprintf(stdout, "%s\n", d.Name)
		if d.WWID != "" {
			fmt.Fprintf(stdout, "   WWID: %s\n", d.WWID)
		}
		fmt.Fprintf(stdout, "   Size: %d\n", d.Size)
		fmt.Fprintf(stdout, "   Status: %s\n", d.State)
		if d.Reason != "" {
			fmt.Fprintf(stdout, "   Status Reason: %s (since %s)\n", d.Reason, d.Since.Format(time.RFC3339))
		}
		fmt.Fprintf(stdout, "   Multipath Plugin: NMP\n   Storage Array Type: %s\n   Path Selection Policy: %s\n", d.SATP, d.PSP)
		fmt.Fprintf(stdout, "   Paths: %d (%d usable)\n\n", d.Paths, d.Usable)
	}
	return nil
}

func cmdDeviceSet(args []string, stdout io.Writer) error {
	fs := newFlags(stdout, "device set", "device set --state on|off [--reason TEXT] [--json] [--control S] DEVICE\n"+
		"  off detaches the device (esxcli storage core device set --state=off): its I/O fails at once with EIO, opening its file with ENXIO;\n"+
		"  on attaches it again: every path's permanent device loss is forgotten and every path probed")
	ctl := fs.String("control", "", "control socket")
	state := fs.String("state", "", "on or off")
	reason := fs.String("reason", "", "why (shown by status, device list and the events)")
	asJSON := fs.Bool("json", false, "print JSON")
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if *state != host.DeviceStateOn && *state != host.DeviceStateOff {
		return usagef("give --state on or --state off (got %q)", *state)
	}
	if len(pos) != 1 {
		return usagef("give exactly one DEVICE (a name from `mpathfs device list`)")
	}
	c, err := dial(*ctl)
	if err != nil {
		return err
	}
	st, err := c.DeviceState(context.Background(), control.DeviceStateRequest{Device: pos[0], State: *state, Reason: *reason})
	if err != nil {
		return err
	}
	if *asJSON {
		return printJSON(stdout, st)
	}
	if st.State == host.DeviceStateOn {
		fmt.Fprintf(stdout, "%s: on; %d path(s)\n", st.Name, len(st.Paths))
	} else {
		fmt.Fprintf(stdout, "%s: %s (%s): I/O fails with EIO, open with ENXIO\n", st.Name, st.State, st.StateReason)
	}
	return nil
}

func cmdReset(args []string, stdout io.Writer) error {
	kinds := strings.Join(host.ResetKinds, "|")
	fs := newFlags(stdout, "reset", "reset "+kinds+" [--json] [--control S] PATH\n"+
		"  a reset or ABORT TASK SET issued on PATH: the tasks the fault layer holds or delays on the paths it reaches end\n"+
		"  (retried by the NMP) and each of those paths answers its next I/O with the reset's unit attention, once:\n"+
		"    lun             every path to PATH's LU                    06/29/03\n"+
		"    target          every path through PATH's target (vmhbaA:Cc:Tt)  06/29/03\n"+
		"    bus             every path of PATH's adapter               06/29/02\n"+
		"    abort-task-set  every path to PATH's LU; the others than PATH get 06/2f/00 (commands cleared by another initiator)\n"+
		"  an iscsi:// path gets the real task management function sent to its target instead, and the target's own\n"+
		"  unit attention: lun → LOGICAL UNIT RESET (once per LU), target and bus → TARGET WARM RESET (once per target),\n"+
		"  abort-task-set → ABORT TASK SET (on each path: it ends its own nexus's tasks, and no unit attention follows)")
	ctl := fs.String("control", "", "control socket")
	asJSON := fs.Bool("json", false, "print JSON")
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 2 {
		return usagef("want `reset %s PATH`", kinds)
	}
	c, err := dial(*ctl)
	if err != nil {
		return err
	}
	rep, err := c.Reset(context.Background(), control.ResetRequest{Kind: pos[0], Path: pos[1]})
	if err != nil {
		return err
	}
	if *asJSON {
		return printJSON(stdout, rep)
	}
	ua := 0
	for _, p := range rep.Paths {
		if p.UnitAttention != "" {
			ua++
		}
	}
	fmt.Fprintf(stdout, "%s reset on %s (%s): %d path(s) get unit attention %s on their next I/O; %d task(s) aborted\n",
		rep.Kind, rep.Path, rep.Scope, ua, rep.Sense, rep.Aborted)
	failed := 0
	for _, p := range rep.Paths {
		note := p.UnitAttention
		switch {
		case p.Skipped != "":
			note = "skipped: " + p.Skipped
		case p.TMFError != "":
			note = p.TMF + " failed: " + p.TMFError
			failed++
		case p.TMF != "" && p.TMF != host.TMFInjected:
			note = p.TMF + " sent to the target"
			if p.TMFSentOn != "" {
				note = p.TMF + " sent on " + p.TMFSentOn
			}
			note += fmt.Sprintf(" (%d task(s) ended", p.Aborted)
			if p.TMF != "ABORT TASK SET" {
				note += "; the target's unit attention follows"
			}
			note += ")"
		case note == "":
			note = "no unit attention (the issuing path)"
		}
		fmt.Fprintf(stdout, "   %s  %s  %s\n", p.Name, p.Device, note)
	}
	if failed > 0 {
		return fmt.Errorf("reset %s: the task management function failed on %d path(s) (above): nothing was done at the target for them", rep.Kind, failed)
	}
	return nil
}
