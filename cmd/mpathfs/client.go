package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os/signal"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/dustin/go-humanize"

	"github.com/mpathfs/mpathfs/backends/fault"
	"github.com/mpathfs/mpathfs/control"
	"github.com/mpathfs/mpathfs/host"
	"github.com/mpathfs/mpathfs/mpath"
)

func dial(flag string) (*control.Client, error) {
	return control.Dial(control.SocketPath(flag))
}

func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func cmdStatus(args []string, stdout io.Writer) error {
	fs := newFlags(stdout, "status", "status [--json] [--control S] [DEVICE]")
	ctl := fs.String("control", "", "control socket")
	asJSON := fs.Bool("json", false, "print JSON (the shape is documented in the README)")
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	c, err := dial(*ctl)
	if err != nil {
		return err
	}
	st, err := c.Status(context.Background())
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		var keep []mpath.DeviceStatus
		for _, d := range st.Devices {
			for _, n := range pos {
				if d.Name == n {
					keep = append(keep, d)
				}
			}
		}
		if len(keep) == 0 {
			return fmt.Errorf("no device %s", strings.Join(pos, ", "))
		}
		st.Devices = keep
	}
	if *asJSON {
		return printJSON(stdout, st)
	}
	printTopology(stdout, st)
	return nil
}

// printTopology prints devices the way `multipath -ll` does.
func printTopology(w io.Writer, st control.Status) {
	for _, d := range st.Devices {
		ident := d.WWID
		if ident == "" {
			ident = "no wwid"
		}
		vm := strings.TrimSpace(d.Vendor + "," + d.Model)
		if vm == "," {
			vm = ""
		}
		fmt.Fprintf(w, "%s (%s) %s\n", d.Name, ident, vm)
		if d.State != "" && d.State != "on" {
			fmt.Fprintf(w, "state=%s (%s) since %s: I/O fails with EIO, open with ENXIO; `mpathfs device set --state on %s` attaches it\n",
				d.State, d.StateReason, d.StateSince.Format(time.RFC3339), d.Name)
		}
		fmt.Fprintf(w, "size=%s features='apd_timeout=%s io_timeout=%s' hwhandler='%s' mpp=%s\n", humanize.IBytes(uint64(d.Size)), d.Options.APDTimeout, d.Options.IOTimeout, d.HWHandler, d.MPP)
		fmt.Fprintf(w, "satp=%s %s\n", d.SATP, d.SATPConfig)
		fmt.Fprintf(w, "psp=%s %s NumIOsPending=%d,numBytesPending=%d\n", d.PSP, d.PSPConfig, d.IOsPending, d.BytesPending)
		apd := "no"
		if d.APD {
			apd = "yes, since " + d.APDSince.Format(time.RFC3339)
		}
		fmt.Fprintf(w, "all-paths-down=%s failovers=%d queue=%d\n", apd, d.Failovers, d.QueueDepth)
		fmt.Fprintln(w, queueLine(d.Options)) // policy.go
		if d.Options.HedgeReads != "" {
			fmt.Fprintf(w, "hedge_reads=%s hedged=%d hedge_wins=%d\n", d.Options.HedgeReads, d.HedgedReads, d.HedgeWins)
		}
		printAmbiguous(w, d.Ambiguous)
		printSharing(w, d.Sharing)
		printGroups(w, d)
	}
}

// printGroups prints a device's path groups the way multipath -ll does:
// policy, prio and status per group; per path its runtime name, state,
// dm state, checker state and device state, then mpathfs's own fields.
func printGroups(w io.Writer, d mpath.DeviceStatus) {
	byName := map[string]mpath.PathStatus{}
	for _, p := range d.Paths {
		byName[p.Name] = p
	}
	groups := d.Groups
	if groups == nil { // an older daemon: group by the paths' group numbers
		groups = legacyGroups(d.Paths)
	}
	for gi, g := range groups {
		last := gi == len(groups)-1
		branch, pad := "|-", "| "
		if last {
			branch, pad = "`-", "  "
		}
		label := fmt.Sprintf("group=%d policy='%s' prio=%d status=%s", g.Group, g.Policy, g.Prio, g.Status)
		if g.Group < 0 {
			label = fmt.Sprintf("group=none policy='%s' prio=%d status=%s (not usable now)", g.Policy, g.Prio, g.Status)
		}
		fmt.Fprintf(w, "%s+- %s\n", branch, label)
		for pi, name := range g.Paths {
			p := byName[name]
			pb := "|-"
			if pi == len(g.Paths)-1 {
				pb = "`-"
			}
			extra := ""
			if p.TPG != nil {
				extra += fmt.Sprintf(" tpg=%d alua=%s", *p.TPG, p.ALUAState)
			}
			if p.Preferred {
				extra += " preferred"
			}
			if p.Current {
				extra += " current"
			}
			if p.PDL {
				extra += " pdl"
			}
			if p.HeldDown {
				extra += " held-down"
			}
			if p.FailbackHeld {
				extra += " failback-held"
			}
			if p.Marginal {
				extra += " marginal" // hedged reads lost, or a run of retryable errors (docs/policies.md)
			}
			if p.HedgeLost > 0 {
				extra += fmt.Sprintf(" hedge-lost=%d", p.HedgeLost)
			}
			if p.Admin == "off" {
				extra += " admin=off"
			}
			if p.Quiesce != "" {
				extra += " quiesce=" + p.Quiesce
			}
			dm := ""
			if p.DMState != "" {
				dm = fmt.Sprintf(" %s %s %s", p.DMState, p.Checker, p.DevState)
			}
			fmt.Fprintf(w, "%s %s %s %-8s%s reads=%d writes=%d errors=%d%s %s\n", pad, pb, p.Name, p.State, dm, p.Reads, p.Writes, p.Errors, extra, p.URI)
		}
	}
}

// legacyGroups groups paths by their group number (-1 last), for a
// status without groups.
func legacyGroups(paths []mpath.PathStatus) []mpath.PathGroup {
	idx := map[int]int{}
	var out []mpath.PathGroup
	for _, p := range paths {
		i, ok := idx[p.Group]
		if !ok {
			i = len(out)
			idx[p.Group] = i
			st := "active"
			if p.Group < 0 {
				st = "enabled"
			}
			out = append(out, mpath.PathGroup{Group: p.Group, Status: st})
		}
		out[i].Paths = append(out[i].Paths, p.Name)
	}
	sort.SliceStable(out, func(a, b int) bool {
		ga, gb := out[a].Group, out[b].Group
		if ga < 0 || gb < 0 {
			return gb < 0 && ga >= 0
		}
		return ga < gb
	})
	return out
}

// printAmbiguous lists a device's ambiguous write ranges (fencing): no
// write overlapping one is issued until it is resolved.
func printAmbiguous(w io.Writer, amb []mpath.AmbiguousRange) {
	if len(amb) == 0 {
		return
	}
	fmt.Fprintf(w, "ambiguous writes=%d (overlapping writes wait; `mpathfs path fence PATH` confirms a path dead)\n", len(amb))
	for _, a := range amb {
		extra := ""
		if a.Expired {
			extra = " EXPIRED: overlapping writes fail with EIO"
		}
		fmt.Fprintf(w, "  ! %s %s bytes %d+%d for %s, waiting for %s%s\n", a.Path, a.Op, a.Offset, a.Length, a.Age, a.WaitingFor, extra)
	}
}

func cmdPath(args []string, stdout io.Writer) error {
	if len(args) == 0 {
		return usagef("want `path list`, `path set --state on|off PATH` or `path fence PATH`")
	}
	switch args[0] {
	case "list":
		return cmdPathList(args[1:], stdout)
	case "set":
		return cmdPathSet(args[1:], stdout)
	case "fence":
		return cmdPathFence(args[1:], stdout)
	case "add":
		return cmdPathAdd(args[1:], stdout)
	case "remove":
		return cmdPathRemove(args[1:], stdout)
	case "switch":
		return cmdPathSwitch(args[1:], stdout) // policy.go
	}
	return usagef("unknown path subcommand %q (want list, set, fence, add, remove or switch)", args[0])
}

// cmdPathFence is the operator's confirmation that nothing sent on a path
// can land any more: its ambiguous write ranges are resolved and the writes
// waiting on them go on.
func cmdPathFence(args []string, stdout io.Writer) error {
	fs := newFlags(stdout, "path fence", "path fence [--json] [--control S] PATH")
	ctl := fs.String("control", "", "control socket")
	asJSON := fs.Bool("json", false, "print JSON")
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return usagef("give exactly one PATH (a runtime name from `mpathfs path list`) whose server is confirmed dead, fenced or reset")
	}
	c, err := dial(*ctl)
	if err != nil {
		return err
	}
	reply, err := c.PathFence(context.Background(), pos[0])
	if err != nil {
		return err
	}
	if *asJSON {
		return printJSON(stdout, reply)
	}
	fmt.Fprintf(stdout, "%s: fenced; %d ambiguous write range(s) resolved; device %s has %d left\n", reply.Path, reply.Resolved, reply.Device, len(reply.Ambiguous))
	return nil
}

// PathListEntry is one path of `path list --json`.
type PathListEntry struct {
	Device string `json:"device"`
	mpath.PathStatus
}

func cmdPathList(args []string, stdout io.Writer) error {
	fs := newFlags(stdout, "path list", "path list [--json] [--control S]")
	ctl := fs.String("control", "", "control socket")
	asJSON := fs.Bool("json", false, "print JSON")
	if _, err := parseFlags(fs, args); err != nil {
		return err
	}
	c, err := dial(*ctl)
	if err != nil {
		return err
	}
	st, err := c.Status(context.Background())
	if err != nil {
		return err
	}
	var list []PathListEntry
	for _, d := range st.Devices {
		for _, p := range d.Paths {
			list = append(list, PathListEntry{Device: d.Name, PathStatus: p})
		}
	}
	// Masked and unclaimed paths stay visible, as esxcli lists them.
	list = append(list, offlineEntries(c)...)
	if *asJSON {
		return printJSON(stdout, map[string]any{"paths": list})
	}
	// In the spirit of `esxcli storage core path list`.
	for _, e := range list {
		loc, _ := mpath.ParseLocation(e.Location)
		fmt.Fprintf(stdout, "%s\n", e.Name)
		fmt.Fprintf(stdout, "   UID: %s.%s-%s\n", e.Transport, e.Device, e.Location)
		fmt.Fprintf(stdout, "   Runtime Name: %s\n", e.Location)
		fmt.Fprintf(stdout, "   Device: %s\n", e.Device)
		fmt.Fprintf(stdout, "   Adapter: vmhba%d\n   Channel: %d\n   Target: %d\n   LUN: %d\n", loc.Adapter, loc.Channel, loc.Target, loc.LUN)
		plugin := "NMP"
		switch e.State {
		case host.OfflineMasked:
			plugin = mpath.PluginMaskPath
		case host.OfflineUnclaimed:
			plugin = "none (unclaimed)"
		}
		fmt.Fprintf(stdout, "   Plugin: %s\n", plugin)
		fmt.Fprintf(stdout, "   State: %s\n", e.State)
		fmt.Fprintf(stdout, "   Admin: %s\n", e.Admin)
		fmt.Fprintf(stdout, "   Transport: %s\n", e.Transport)
		fmt.Fprintf(stdout, "   URI: %s\n", e.URI)
		if e.TPG != nil {
			fmt.Fprintf(stdout, "   Target Port Group: %d\n   ALUA State: %s\n", *e.TPG, e.ALUAState)
		}
		if e.GroupState != "" {
			fmt.Fprintf(stdout, "   Group State: %s\n", e.GroupState)
			fmt.Fprintf(stdout, "   Storage Array Type Path Config: %s\n", e.SATPPathConfig)
			fmt.Fprintf(stdout, "   Path Selection Policy Path Config: %s\n", e.PSPPathConfig)
			fmt.Fprintf(stdout, "   Checker: %s %s %s (dm state, checker, device state, as multipath -ll)\n", e.DMState, e.Checker, e.DevState)
		}
		fmt.Fprintf(stdout, "   I/O: reads=%d writes=%d errors=%d avg_latency=%.0fus max_latency=%.0fus\n", e.Reads, e.Writes, e.Errors, e.AvgLatencyU, e.MaxLatencyU)
		if e.Reason != "" {
			fmt.Fprintf(stdout, "   Last Change: %s (%s)\n", e.Reason, e.Since.Format(time.RFC3339))
		}
		fmt.Fprintln(stdout)
	}
	return nil
}

func cmdPathSet(args []string, stdout io.Writer) error {
	fs := newFlags(stdout, "path set", "path set --state on|off [--rank N] [--control S] PATH")
	ctl := fs.String("control", "", "control socket")
	state := fs.String("state", "", "on (probe, then active) or off (disabled)")
	rank := fs.Int("rank", -1, "the path's MRU rank (higher is preferred)")
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return usagef("give exactly one PATH (a runtime name from `mpathfs path list`)")
	}
	if *state != "" && *state != "on" && *state != "off" {
		return usagef("--state %q: want on or off", *state)
	}
	if *state == "" && *rank < 0 {
		return usagef("give --state on|off or --rank N")
	}
	req := control.PathAdminRequest{Path: pos[0], State: *state}
	if *rank >= 0 {
		req.Rank = rank
	}
	c, err := dial(*ctl)
	if err != nil {
		return err
	}
	ps, err := c.PathAdmin(context.Background(), req)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "%s: state %s, admin %s\n", ps.Name, ps.State, ps.Admin)
	return nil
}

func cmdFault(args []string, stdout io.Writer) error {
	if len(args) == 0 {
		return usagef("want `fault inject PATH FLAGS`, `fault clear PATH [--id N]` or `fault list`")
	}
	switch args[0] {
	case "inject":
		return cmdFaultInject(args[1:], stdout)
	case "clear":
		return cmdFaultClear(args[1:], stdout)
	case "list":
		return cmdFaultList(args[1:], stdout)
	}
	return usagef("unknown fault subcommand %q (want inject, clear or list)", args[0])
}

const faultHelp = `usage: mpathfs fault inject [--control S] PATH FAULT-FLAGS
  --error CLASS        path-failure | retryable | not-ready | device-error | permanent-loss | reservation-conflict
  --hang               hold the I/O until the fault is cleared or the I/O deadline passes
  --land-late D        writes, discards, write-zeroes time out for their caller and land D
                       after they were issued (a stale write); the caller's error proves
                       when it landed; add --silent for no proof. Reads are held as by --hang
  --corrupt KIND       acknowledged, wrong data: bitflip (reads: the data returned; writes:
                       the data stored; --bits N, default 1), misdirect (the write lands
                       --misdirect-by SIZE away, e.g. 8k or -8k; default a seeded block 1-8
                       blocks away), drop (never stored), torn (only the first --torn-at SIZE
                       bytes are stored; default a seeded sector boundary). Default --op:
                       read,write for bitflip, write for the others
  --op LIST            read,write,flush,discard,probe (default all; read,write = gray failure:
                       the probe passes while data I/O fails)
  --offset N --length N  only I/O overlapping this range (4k, 1M, 1G suffixes)
  --probability P      fire with chance P (0.1 or 10%), seeded
  --every N / --after N / --count N / --for DURATION
  --latency D --jitter D  added delay;  --slow N  take N times as long
  --bandwidth RATE     cap bytes per second (e.g. 10M)
  --sense KK/AA/QQ     sense data for the error;  --late  run the I/O, then fail it
  --seed N             seed of the fault's random generator`

func cmdFaultInject(args []string, stdout io.Writer) error {
	var ctl, path string
	var rest []string
	for i := 0; i < len(args); i++ {
		a := args[i]
		switch {
		case a == "-h" || a == "--help":
			fmt.Fprintln(stdout, faultHelp)
			return nil
		case a == "--control" || a == "-control":
			if i+1 >= len(args) {
				return usagef("--control needs a value")
			}
			ctl = args[i+1]
			i++
		case strings.HasPrefix(a, "--control="):
			ctl = strings.TrimPrefix(a, "--control=")
		case path == "" && !strings.HasPrefix(a, "-"):
			path = a
		default:
			rest = append(rest, a)
		}
	}
	if path == "" {
		return usagef("give the PATH to inject into (a runtime name from `mpathfs path list`)")
	}
	spec, err := fault.ParseArgs(rest)
	if err != nil {
		return usageError{err.Error()}
	}
	c, err := dial(ctl)
	if err != nil {
		return err
	}
	reply, err := c.InjectFault(context.Background(), control.FaultInjectRequest{Path: path, Spec: spec})
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "%s: fault #%d injected: %s\n", reply.Path, reply.ID, spec.String())
	return nil
}

func cmdFaultClear(args []string, stdout io.Writer) error {
	fs := newFlags(stdout, "fault clear", "fault clear [--id N] [--control S] PATH")
	ctl := fs.String("control", "", "control socket")
	id := fs.Int("id", 0, "clear only this fault (default: every fault of the path)")
	all := fs.Bool("all", false, "clear every fault of every path")
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if *all {
		if len(pos) != 0 {
			return usagef("--all takes no PATH")
		}
	} else if len(pos) != 1 {
		return usagef("give exactly one PATH (or --all)")
	}
	c, err := dial(*ctl)
	if err != nil {
		return err
	}
	targets := pos
	if *all {
		st, err := c.Status(context.Background())
		if err != nil {
			return err
		}
		for _, d := range st.Devices {
			for _, p := range d.Paths {
				targets = append(targets, p.Name)
			}
		}
	}
	for _, t := range targets {
		out, err := c.ClearFault(context.Background(), control.FaultClearRequest{Path: t, ID: *id})
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "%v: cleared %v\n", out.Path, out.Cleared)
	}
	return nil
}

func cmdFaultList(args []string, stdout io.Writer) error {
	fs := newFlags(stdout, "fault list", "fault list [--json] [--control S]")
	ctl := fs.String("control", "", "control socket")
	asJSON := fs.Bool("json", false, "print JSON")
	if _, err := parseFlags(fs, args); err != nil {
		return err
	}
	c, err := dial(*ctl)
	if err != nil {
		return err
	}
	out, err := c.FaultList(context.Background())
	if err != nil {
		return err
	}
	if *asJSON {
		return printJSON(stdout, out)
	}
	if len(out.Faults) == 0 {
		fmt.Fprintln(stdout, "no active faults")
		return nil
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "PATH\tID\tMATCHED\tINJECTED\tSPEC")
	for _, f := range out.Faults {
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%s\n", f.Path, f.ID, f.Matched, f.Injected, f.Spec.String())
	}
	return tw.Flush()
}

func cmdPolicy(args []string, stdout io.Writer) error {
	if len(args) == 0 || args[0] != "set" {
		return usagef("want `policy set DEVICE --psp PSP [options]`")
	}
	fs := newFlags(stdout, "policy set", "policy set DEVICE [--psp PSP] [--iops N | --bytes N | --type latency [--sampling-cycles N] [--latency-eval-time T]] [--useANO 0|1] [--preferred PATH] [--option k=v]... [--failback MODE] [--no-path-retry V] [--apd-timeout D]")
	ctl := fs.String("control", "", "control socket")
	psp := fs.String("psp", "", "VMW_PSP_FIXED, VMW_PSP_MRU, VMW_PSP_RR, queue-length or service-time (default: keep)")
	iops := fs.String("iops", "", "RR: switch path every N I/Os")
	bytes := fs.String("bytes", "", "RR: switch path every N bytes (sets type=bytes)")
	typ := fs.String("type", "", "RR: iops, bytes or latency (ESXi's latency-based round robin)")
	cycles := fs.String("sampling-cycles", "", "RR type=latency: I/Os sampled on each path per evaluation (default 16)")
	evalTime := fs.String("latency-eval-time", "", "RR type=latency: how often the paths' latencies are sampled again (default 3m)")
	useANO := fs.String("useANO", "", "RR/queue-length/service-time: 1 also uses active/non-optimized paths")
	preferred := fs.String("preferred", "", "Fixed: the preferred path")
	failback := fs.String("failback", "", "immediate, manual, followover or N seconds: when a returning path (group) is used again")
	noPathRetry := fs.String("no-path-retry", "", "queue, fail or N checker intervals: how long I/O waits while no path is usable")
	apdTimeout := fs.String("apd-timeout", "", "All-Paths-Down timeout, a positive duration (used while no_path_retry is unset)")
	var opts multiFlag
	fs.Var(&opts, "option", "any PSP option name=value (repeatable)")
	pos, err := parseFlags(fs, args[1:])
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return usagef("give exactly one DEVICE")
	}
	m, err := parseKV(opts, "--option")
	if err != nil {
		return err
	}
	if *iops != "" {
		m["type"], m["iops"] = "iops", *iops
	}
	if *bytes != "" {
		m["type"], m["bytes"] = "bytes", *bytes
	}
	if *typ != "" {
		m["type"] = *typ
	}
	if *cycles != "" {
		m["samplingCycles"] = *cycles
	}
	if *evalTime != "" {
		m["latencyEvalTime"] = *evalTime
	}
	if *useANO != "" {
		m["useANO"] = *useANO
	}
	if *preferred != "" {
		m["preferred"] = *preferred
	}
	if flagGiven(fs, "apd-timeout") && *apdTimeout == "" {
		return usagef("--apd-timeout: give a positive duration such as 140s")
	}
	c, err := dial(*ctl)
	if err != nil {
		return err
	}
	st, err := c.Policy(context.Background(), control.PolicyRequest{Device: pos[0], PSP: *psp, Options: m,
		Failback: *failback, NoPathRetry: *noPathRetry, APDTimeout: *apdTimeout})
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "%s: psp=%s %s\n", st.Name, st.PSP, st.PSPConfig)
	fmt.Fprintf(stdout, "%s: %s\n", st.Name, queueLine(st.Options)) // policy.go
	return nil
}

func interruptible() (context.Context, context.CancelFunc) {
	return signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM, syscall.SIGPIPE)
}

func cmdEvents(args []string, stdout io.Writer) error {
	fs := newFlags(stdout, "events", "events [--last N] [--follow] [--json] [--count N] [--control S]")
	ctl := fs.String("control", "", "control socket")
	asJSON := fs.Bool("json", false, "print one JSON object per line")
	last := fs.Int("last", 100, "show the last N events the daemon kept first (it keeps "+strconv.Itoa(mpath.EventHistory)+"; 0: none)")
	var follow bool
	fs.BoolVar(&follow, "follow", false, "after the history, keep printing new events until interrupted")
	fs.BoolVar(&follow, "f", false, "short for --follow")
	count := fs.Int("count", 0, "stop after N events (history included)")
	if _, err := parseFlags(fs, args); err != nil {
		return err
	}
	if *last < 0 {
		return usagef("--last %d: want 0 or more", *last)
	}
	c, err := dial(*ctl)
	if err != nil {
		return err
	}
	ctx, cancel := interruptible()
	defer cancel()
	n := 0
	return c.Events(ctx, *last, follow, func(line []byte) bool {
		if *asJSON {
			fmt.Fprintf(stdout, "%s\n", line)
		} else {
			var ev mpath.Event
			if json.Unmarshal(line, &ev) == nil {
				where := ev.Device
				if ev.Adapter != "" {
					where = strings.TrimPrefix(where+" "+ev.Adapter, " ")
				}
				if ev.Path != "" {
					where = strings.TrimPrefix(where+" "+ev.Path, " ")
				}
				change := ev.To
				if ev.From != "" {
					change = ev.From + " -> " + ev.To
				}
				fmt.Fprintf(stdout, "%s %-14s %s %s %s\n", ev.Time.Format("15:04:05.000"), ev.Kind, where, change, ev.Reason)
			}
		}
		n++
		return *count == 0 || n < *count
	})
}

func cmdTrace(args []string, stdout io.Writer) error {
	fs := newFlags(stdout, "trace", "trace [--count N] [--control S] DEVICE")
	ctl := fs.String("control", "", "control socket")
	count := fs.Int("count", 0, "stop after N records")
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
	ctx, cancel := interruptible()
	defer cancel()
	n := 0
	return c.Trace(ctx, pos[0], func(line []byte) bool {
		fmt.Fprintf(stdout, "%s\n", line)
		n++
		return *count == 0 || n < *count
	})
}

func cmdPlugins(args []string, stdout io.Writer) error {
	fs := newFlags(stdout, "plugins", "plugins [--json] [--control S]")
	ctl := fs.String("control", "", "control socket (optional: without a mount the built-in list is shown)")
	asJSON := fs.Bool("json", false, "print JSON")
	if _, err := parseFlags(fs, args); err != nil {
		return err
	}
	var pl control.Plugins
	if c, err := dial(*ctl); err == nil && *ctl != "" {
		if pl, err = c.Plugins(context.Background()); err != nil {
			return err
		}
	} else {
		pl = control.LocalPlugins()
	}
	if *asJSON {
		return printJSON(stdout, pl)
	}
	fmt.Fprintln(stdout, "MPPs:", strings.Join(pl.MPPs, ", "))
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "\nSATP\tDefault PSP\tDescription")
	for _, s := range pl.SATPs {
		fmt.Fprintf(tw, "%s\t%s\t%s\n", s.Name, s.DefaultPSP, s.Description)
	}
	fmt.Fprintln(tw, "\nPSP\t\tDescription")
	for _, p := range pl.PSPs {
		fmt.Fprintf(tw, "%s\t\t%s\n", p.Name, p.Description)
	}
	return tw.Flush()
}

// printSharing prints a device's sharing mode and the holders of its
// stores.
func printSharing(w io.Writer, s *mpath.Sharing) {
	if s == nil {
		return
	}
	var who []string
	for _, h := range s.Holders {
		me := ""
		if h.Self {
			me = " (this mount)"
		}
		if h.Unknown {
			who = append(who, fmt.Sprintf("slot %d: unrecorded", h.Slot))
			continue
		}
		who = append(who, fmt.Sprintf("slot %d: %s pid %d %s%s", h.Slot, h.Host, h.PID, h.Mountpoint, me))
	}
	lu := ""
	if s.LULock != "" {
		lu = " lu_lock=" + s.LULock
	}
	fmt.Fprintf(w, "sharing=%s%s holders=[%s]\n", s.Mode, lu, strings.Join(who, "; "))
	if s.LockLost != nil {
		fmt.Fprintf(w, "lock lost: %s\n", s.LockLost.Reason)
	}
	for _, u := range s.Unlocked {
		fmt.Fprintf(w, "unlocked: %s\n", u)
	}
}
