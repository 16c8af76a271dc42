package main

import (
	"context"
	"fmt"
	"io"
	"time"
)

// `mpathfs mount --verify` puts the integrity oracle between FUSE and each
// device; GET /v1/verify?device=D runs its check; `mpathfs verify DEVICE`
// prints the report and fails on any problem.

func cmdVerify(args []string, stdout io.Writer) error {
	fs := newFlags(stdout, "verify", "verify [--json] [--control S] DEVICE")
	ctl := fs.String("control", "", "control socket")
	asJSON := fs.Bool("json", false, "print the report as JSON")
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return usagef("give exactly one DEVICE")
	}
	c, err := dial(*ctl)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute) // a big device takes a while
	defer cancel()
	rep, err := c.Verify(ctx, pos[0])
	if err != nil {
		return err
	}
	if *asJSON {
		if err := printJSON(stdout, rep); err != nil {
			return err
		}
	} else {
		fmt.Fprintf(stdout, "%s: %d blocks tracked, read through %v; %d block reads verified on the fly, %d wrong\n",
			rep.Device, rep.Tracked, rep.Readers, rep.ReadsVerified, rep.ReadMismatches)
		for _, p := range rep.Problems {
			fmt.Fprintln(stdout, "  "+p.String())
		}
		if rep.OK() {
			fmt.Fprintln(stdout, "no lost, stale, torn or misdirected writes")
		}
	}
	if !rep.OK() {
		return fmt.Errorf("%d problems on %s", len(rep.Problems), rep.Device)
	}
	return nil
}
