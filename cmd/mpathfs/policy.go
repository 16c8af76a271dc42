package main

import (
	"context"
	"flag"
	"fmt"
	"io"

	"github.com/mpathfs/mpathfs/mpath"
)

// flagGiven reports whether the flag was set on the command line (so that
// an explicit 0 is told from the default).
func flagGiven(fs *flag.FlagSet, name string) bool {
	given := false
	fs.Visit(func(f *flag.Flag) { given = given || f.Name == name })
	return given
}

// cmdQueue is `queue on|off DEVICE`: dm-multipath's restorequeueing and
// disablequeueing.
func cmdQueue(args []string, stdout io.Writer) error {
	fs := newFlags(stdout, "queue", "queue on|off [--control S] DEVICE")
	ctl := fs.String("control", "", "control socket")
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 2 || (pos[0] != "on" && pos[0] != "off") {
		return usagef("want `queue on DEVICE` (restore the device's no_path_retry) or `queue off DEVICE` (fail I/O at once while no path is usable)")
	}
	c, err := dial(*ctl)
	if err != nil {
		return err
	}
	st, err := c.Queue(context.Background(), pos[1], pos[0] == "on")
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "%s: %s\n", st.Name, queueLine(st.Options))
	return nil
}

// queueLine describes a device's queueing policy.
func queueLine(o mpath.DeviceOpts) string {
	npr := o.NoPathRetry
	if npr == "" {
		npr = "unset (wait apd_timeout)"
	}
	return fmt.Sprintf("queueing=%s no_path_retry=%s apd_timeout=%s failback=%s", o.Queueing, npr, o.APDTimeout, o.Failback)
}

// cmdPathSwitch is `path switch PATH`: the path becomes the one in use
// (MRU, FIXED) and its group is failed back to (every PSP).
func cmdPathSwitch(args []string, stdout io.Writer) error {
	fs := newFlags(stdout, "path switch", "path switch [--control S] PATH")
	ctl := fs.String("control", "", "control socket")
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return usagef("give exactly one PATH (a runtime name from `mpathfs path list`) to switch to")
	}
	c, err := dial(*ctl)
	if err != nil {
		return err
	}
	st, err := c.PathSwitch(context.Background(), pos[0])
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "%s: switched to %s; psp=%s %s\n", st.Name, pos[0], st.PSP, st.PSPConfig)
	return nil
}
