package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"sort"
	"strconv"
	"text/tabwriter"

	"gopkg.in/yaml.v3"

	"github.com/mpathfs/mpathfs/array"
	"github.com/mpathfs/mpathfs/control"
	"github.com/mpathfs/mpathfs/host"
	"github.com/mpathfs/mpathfs/nmp"
)

// defaultLab is the built-in lab: a sparse 1 GiB store behind a simulated
// ALUA array with two controllers of two ports each; two HBAs each see
// both controllers, so the four paths are vmhba1/vmhba2 × T0 (controller
// A, the owner: AO) / T1 (controller B: ANO).
func defaultLab(stateDir string) *Config {
	store := "file://" + stateDir + "/lab.img"
	ac := array.DefaultLabArray()
	ac.Vendor, ac.Model = "MPATHFS", "ALUA-LAB"
	var node yaml.Node
	if err := node.Encode(ac); err != nil {
		panic(err)
	}
	dc := host.DeviceConfig{Name: "lab", Size: "1G", WWID: "naa.600d0230000000000000000000001ab1", Array: &node}
	// vmhba1 -> ports 1 (A) and 3 (B); vmhba2 -> ports 2 (A) and 4 (B).
	for _, p := range []struct {
		hba, port int
	}{{1, 1}, {1, 3}, {2, 2}, {2, 4}} {
		target := 0
		if p.port > 2 {
			target = 1
		}
		dc.Paths = append(dc.Paths, host.PathConfig{URI: store, Port: p.port, Location: fmt.Sprintf("vmhba%d:C0:T%d:L0", p.hba, target)})
	}
	return &Config{StateDir: stateDir, Devices: []host.DeviceConfig{dc}}
}

func cmdArray(args []string, stdout io.Writer) error {
	if handled, err := arrayServerCommand(args, stdout); handled {
		return err
	}
	fs := newFlags(stdout, "array", "array status [--json] | array fail|restore|transfer ARRAY CONTROLLER | array set-tpg ARRAY TPG STATE")
	ctl := fs.String("control", "", "control socket")
	asJSON := fs.Bool("json", false, "print JSON")
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if len(pos) == 0 {
		return usagef("want array status, fail, restore, transfer or set-tpg")
	}
	c, err := dial(*ctl)
	if err != nil {
		return err
	}
	ctx := context.Background()
	if pos[0] == "status" {
		out, err := c.Arrays(ctx)
		if err != nil {
			return err
		}
		if *asJSON {
			return printJSON(stdout, out)
		}
		if len(out.Arrays) == 0 {
			fmt.Fprintln(stdout, "no simulated arrays")
		}
		names := make([]string, 0, len(out.Arrays))
		for n := range out.Arrays {
			names = append(names, n)
		}
		sort.Strings(names)
		for _, n := range names {
			fmt.Fprintf(stdout, "%s: %s\n", n, out.Arrays[n].String())
		}
		return nil
	}
	r := control.ArrayRequest{}
	switch pos[0] {
	case "fail", "restore", "transfer":
		if len(pos) != 3 {
			return usagef("array %s ARRAY CONTROLLER", pos[0])
		}
		r.Array, r.Controller = pos[1], pos[2]
		r.Action = map[string]string{"fail": "controller-fail", "restore": "controller-restore", "transfer": "transfer-ownership"}[pos[0]]
	case "set-tpg":
		if len(pos) != 4 {
			return usagef("array set-tpg ARRAY TPG STATE (AO, ANO, S, U, O or T)")
		}
		id, err := strconv.Atoi(pos[2])
		if err != nil {
			return usagef("TPG %q is not a number", pos[2])
		}
		if _, err := host.ParseALUAState(pos[3]); err != nil {
			return usageError{err.Error()}
		}
		r.Array, r.Action, r.TPG, r.State = pos[1], "tpg-state", &id, pos[3]
	default:
		return usagef("unknown array subcommand %q (want status, fail, restore, transfer, set-tpg, serve, port, session or fault)", pos[0])
	}
	st, err := c.Array(ctx, r)
	if err != nil {
		return err
	}
	if *asJSON {
		return printJSON(stdout, st)
	}
	fmt.Fprintf(stdout, "%s: %s\n", r.Array, st.String())
	return nil
}

// fromMount asks a running mount when its socket answers, else returns
// local() (the built-in defaults).
func fromMount[T any](ctl string, ask func(*control.Client) (T, error), local func() T) T {
	sock := control.SocketPath(ctl)
	if _, err := os.Stat(sock); err == nil {
		if c, err := control.Dial(sock); err == nil {
			if out, err := ask(c); err == nil {
				return out
			}
		}
	}
	return local()
}

func cmdPSP(args []string, stdout io.Writer) error {
	fs := newFlags(stdout, "psp", "psp list [--json]")
	asJSON := fs.Bool("json", false, "print JSON")
	if _, err := parseFlags(fs, args); err != nil {
		return err
	}
	list := nmp.PSPs()
	if *asJSON {
		return printJSON(stdout, map[string]any{"psps": list})
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "Name\tDescription")
	for _, p := range list {
		fmt.Fprintf(tw, "%s\t%s\n", p.Name, p.Description)
	}
	return tw.Flush()
}

func cmdExplain(args []string, stdout io.Writer) error {
	fs := newFlags(stdout, "explain", "explain [--json] [--control S] DEVICE")
	ctl := fs.String("control", "", "control socket")
	asJSON := fs.Bool("json", false, "print JSON")
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
	e, err := c.Explain(context.Background(), pos[0])
	if err != nil {
		return err
	}
	if *asJSON {
		return printJSON(stdout, e)
	}
	fmt.Fprintf(stdout, "device %s (first path %s: vendor=%s model=%s transport=%s tpgs=%d)\n", e.Device, e.Path, e.Attrs.Vendor, e.Attrs.Model, e.Attrs.Transport, e.Attrs.TPGS)
	if e.ClaimRule != nil {
		fmt.Fprintf(stdout, "claim rule %d (%s %s): plugin %s, matches %s\n", e.ClaimRule.ID, e.ClaimRule.Class, e.ClaimRule.Type, e.ClaimRule.Plugin, e.ClaimRule.Matches())
	}
	if e.SATPRule != nil {
		fmt.Fprintf(stdout, "satp rule: %s\n", e.SATPRule.String())
	} else {
		fmt.Fprintln(stdout, "satp rule: none matched")
	}
	show := func(s nmp.Setting) {
		d := ""
		if s.Detail != "" {
			d = " (" + s.Detail + ")"
		}
		fmt.Fprintf(stdout, "  %-22s %-22s from %s%s\n", s.Name, s.Value, s.Source, d)
	}
	fmt.Fprintln(stdout, "effective settings:")
	show(e.SATP)
	for _, s := range e.SATPOptions {
		show(s)
	}
	show(e.PSP)
	for _, s := range e.PSPOptions {
		show(s)
	}
	return nil
}
