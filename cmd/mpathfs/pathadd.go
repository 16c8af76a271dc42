package main

import (
	"context"
	"fmt"
	"io"

	"github.com/mpathfs/mpathfs/backends"
	"github.com/mpathfs/mpathfs/control"
)

// `mpathfs path add DEVICE URI`: a path joins a running device, after the
// same checks as at mount — the claim rules, size and identity (label,
// native identity, sample blocks against a usable path of the device).

// cmdPathAdd is `mpathfs path add DEVICE URI`.
func cmdPathAdd(args []string, stdout io.Writer) error {
	fs := newFlags(stdout, "path add", "path add [--name N] [--json] [--control S] DEVICE URI")
	ctl := fs.String("control", "", "control socket")
	name := fs.String("name", "", "the path's name (default its runtime name)")
	asJSON := fs.Bool("json", false, "print JSON")
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 2 {
		return usagef("give DEVICE and a path URI")
	}
	if _, err := backends.ParseURI(pos[1]); err != nil {
		return usageError{err.Error()}
	}
	c, err := dial(*ctl)
	if err != nil {
		return err
	}
	st, err := c.PathAdd(context.Background(), control.PathAddRequest{Device: pos[0], URI: pos[1], Name: *name})
	if err != nil {
		return err
	}
	if *asJSON {
		return printJSON(stdout, st)
	}
	fmt.Fprintf(stdout, "%s: path %s added (%s), state %s\n", pos[0], st.Name, st.URI, st.State)
	return nil
}
