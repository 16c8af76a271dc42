package main

import (
	"context"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/mpathfs/mpathfs/control"
	"github.com/mpathfs/mpathfs/host"
	"github.com/mpathfs/mpathfs/mpath"
	"github.com/mpathfs/mpathfs/nmp"
)

// The claim-rule lifecycle and claiming, as esxcli's `storage core
// claimrule` and `storage core claiming`, SATP rules at runtime as
// `storage nmp satp rule` and `satp set`, and `adapter rescan`. The
// long flags are esxcli's; its one-letter flags work too (-r, -t, -P, …).

func cmdClaimRule(args []string, stdout io.Writer) error {
	if len(args) == 0 {
		return cmdClaimRuleList(args, stdout)
	}
	switch args[0] {
	case "list":
		return cmdClaimRuleList(args[1:], stdout)
	case "add":
		return cmdClaimRuleAdd(args[1:], stdout)
	case "remove":
		return cmdClaimRuleRemove(args[1:], stdout)
	case "move":
		return cmdClaimRuleMove(args[1:], stdout)
	case "load", "run":
		return cmdClaimRuleLoadRun(args[0], args[1:], stdout)
	}
	if strings.HasPrefix(args[0], "-") {
		return cmdClaimRuleList(args, stdout)
	}
	return usagef("unknown claimrule subcommand %q (want list, add, remove, move, load or run)", args[0])
}

func cmdClaimRuleList(args []string, stdout io.Writer) error {
	fs := newFlags(stdout, "claimrule list", "claimrule list [--json] [--control S]\n  the claim rules: file rows are the configuration, runtime rows what is loaded and claims paths")
	ctl := fs.String("control", "", "control socket (without a mount: the default rules)")
	asJSON := fs.Bool("json", false, "print JSON")
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return usagef("claimrule list takes no arguments (got %q)", pos)
	}
	out := fromMount(*ctl, func(c *control.Client) (control.ClaimRulesReply, error) {
		return c.ClaimRules(context.Background())
	}, func() control.ClaimRulesReply {
		return control.ClaimRulesReply{Claimrules: mpath.DefaultClaimRules().List()}
	})
	if *asJSON {
		return printJSON(stdout, out)
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "Rule Class\tRule\tClass\tType\tPlugin\tMatches")
	for _, r := range out.Claimrules {
		fmt.Fprintf(tw, "MP\t%d\t%s\t%s\t%s\t%s\n", r.ID, r.Class, r.Type, r.Plugin, r.Matches())
	}
	return tw.Flush()
}

// strFlag defines a string flag under a long and a short (esxcli) name.
func strFlag(fs interface {
	StringVar(*string, string, string, string)
}, long, short, usage string) *string {
	v := new(string)
	fs.StringVar(v, long, "", usage)
	if short != "" {
		fs.StringVar(v, short, "", "same as --"+long)
	}
	return v
}

func cmdClaimRuleAdd(args []string, stdout io.Writer) error {
	fs := newFlags(stdout, "claimrule add", "claimrule add (--rule N | --autoassign) --type T --plugin P [match flags] [--control S]\n"+
		"  add a claim rule to the configuration (the mount's config file, else memory); `claimrule load` makes it claim.\n"+
		"  --type vendor: --vendor and/or --model (globs); location: --adapter --channel --target --lun (missing = any);\n"+
		"  transport: --transport ("+strings.Join(mpath.Transports, ", ")+"); driver: --driver (mpathfs_<transport>)")
	ctl := fs.String("control", "", "control socket")
	rule := fs.Int("rule", 0, "rule number, "+strconv.Itoa(mpath.RuleUserMin)+"–"+strconv.Itoa(mpath.RuleUserMax))
	fs.IntVar(rule, "r", 0, "same as --rule")
	auto := fs.Bool("autoassign", false, "take the lowest free rule number from 5000")
	fs.BoolVar(auto, "u", false, "same as --autoassign")
	typ := strFlag(fs, "type", "t", "vendor, location, transport or driver")
	plugin := strFlag(fs, "plugin", "P", "NMP or MASK_PATH")
	vendor := strFlag(fs, "vendor", "V", "vendor (glob)")
	model := strFlag(fs, "model", "M", "model (glob)")
	adapter := strFlag(fs, "adapter", "A", "adapter, vmhbaN")
	channel := strFlag(fs, "channel", "C", "channel number")
	target := strFlag(fs, "target", "T", "target number")
	lun := strFlag(fs, "lun", "L", "LUN number")
	transport := strFlag(fs, "transport", "R", "transport")
	driver := strFlag(fs, "driver", "D", "driver (glob), e.g. mpathfs_nbd")
	asJSON := fs.Bool("json", false, "print JSON")
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return usagef("claimrule add takes flags only (got %q)", pos)
	}
	if (*rule == 0) == !*auto {
		return usagef("give --rule N (%d–%d) or --autoassign", mpath.RuleUserMin, mpath.RuleUserMax)
	}
	if *rule != 0 && (*rule < mpath.RuleUserMin || *rule > mpath.RuleUserMax) {
		return usagef("--rule %d: rules %d–%d are yours (0–%d and %d–%d are the system's)", *rule, mpath.RuleUserMin, mpath.RuleUserMax, mpath.RuleSystemLowMax, mpath.RuleSystemHighMin, mpath.RuleMax)
	}
	if *typ == "" || *plugin == "" {
		return usagef("give --type (vendor, location, transport or driver) and --plugin (NMP or MASK_PATH)")
	}
	r := mpath.Rule{ID: *rule, Type: *typ, Plugin: *plugin, Vendor: *vendor, Model: *model, Transport: *transport, Driver: *driver}
	if *typ == "location" {
		part := func(prefix, v string) string {
			if v == "" {
				return "*"
			}
			if strings.HasPrefix(v, prefix) {
				return v
			}
			return prefix + v
		}
		r.Location = part("vmhba", *adapter) + ":" + part("C", *channel) + ":" + part("T", *target) + ":" + part("L", *lun)
	} else if *adapter != "" || *channel != "" || *target != "" || *lun != "" {
		return usagef("--adapter, --channel, --target and --lun go with --type location")
	}
	if r.ID != 0 {
		if err := r.Validate(); err != nil {
			return usageError{err.Error()}
		}
	}
	c, err := dial(*ctl)
	if err != nil {
		return err
	}
	rep, err := c.ClaimRule(context.Background(), control.ClaimRuleRequest{Action: "add", Rule: &r})
	if err != nil {
		return err
	}
	if *asJSON {
		return printJSON(stdout, rep)
	}
	added := rep.Change.Rule
	fmt.Fprintf(stdout, "claim rule %d (%s %s %s) added to the %s; `mpathfs claimrule load` makes it claim\n", added.ID, added.Type, added.Plugin, added.Matches(), rep.Change.Where)
	return nil
}

func cmdClaimRuleRemove(args []string, stdout io.Writer) error {
	fs := newFlags(stdout, "claimrule remove", "claimrule remove --rule N [--control S]\n  remove a claim rule from the configuration; the runtime keeps it until `claimrule load`")
	ctl := fs.String("control", "", "control socket")
	rule := fs.Int("rule", 0, "rule number")
	fs.IntVar(rule, "r", 0, "same as --rule")
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if len(pos) == 1 && *rule == 0 {
		if *rule, err = strconv.Atoi(pos[0]); err != nil {
			return usagef("%q is not a rule number", pos[0])
		}
		pos = nil
	}
	if *rule == 0 || len(pos) > 0 {
		return usagef("give --rule N")
	}
	c, err := dial(*ctl)
	if err != nil {
		return err
	}
	rep, err := c.ClaimRule(context.Background(), control.ClaimRuleRequest{Action: "remove", ID: *rule})
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "claim rule %d removed from the %s; `mpathfs claimrule load` takes it out of the runtime\n", *rule, rep.Change.Where)
	return nil
}

func cmdClaimRuleMove(args []string, stdout io.Writer) error {
	fs := newFlags(stdout, "claimrule move", "claimrule move --rule N --new-rule M [--control S]\n  renumber a claim rule of the configuration; `claimrule load` applies it")
	ctl := fs.String("control", "", "control socket")
	rule := fs.Int("rule", 0, "rule number")
	fs.IntVar(rule, "r", 0, "same as --rule")
	to := fs.Int("new-rule", 0, "the new rule number")
	fs.IntVar(to, "n", 0, "same as --new-rule")
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if *rule == 0 || *to == 0 || len(pos) > 0 {
		return usagef("give --rule N and --new-rule M")
	}
	c, err := dial(*ctl)
	if err != nil {
		return err
	}
	rep, err := c.ClaimRule(context.Background(), control.ClaimRuleRequest{Action: "move", ID: *rule, To: *to})
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "claim rule %d is now %d in the %s; `mpathfs claimrule load` applies it\n", *rule, *to, rep.Change.Where)
	return nil
}

func cmdClaimRuleLoadRun(action string, args []string, stdout io.Writer) error {
	what := map[string]string{
		"load": "make the runtime claim rules what the configuration says (paths keep their plugin until run or reclaim)",
		"run":  "run the runtime claim rules: unclaimed paths are claimed; claimed paths a MASK_PATH rule now matches are masked live",
	}[action]
	fs := newFlags(stdout, "claimrule "+action, "claimrule "+action+" [--json] [--control S]\n  "+what)
	ctl := fs.String("control", "", "control socket")
	asJSON := fs.Bool("json", false, "print JSON")
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return usagef("claimrule %s takes no arguments", action)
	}
	c, err := dial(*ctl)
	if err != nil {
		return err
	}
	rep, err := c.ClaimRule(context.Background(), control.ClaimRuleRequest{Action: action})
	if err != nil {
		return err
	}
	if *asJSON {
		return printJSON(stdout, rep)
	}
	if action == "load" {
		ld := rep.Change.Load
		fmt.Fprintf(stdout, "claim rules loaded from the %s: %d runtime rule(s) added, %d removed\n", rep.Change.Where, len(ld.Added), len(ld.Removed))
		for _, r := range ld.Added {
			fmt.Fprintf(stdout, "  + %d %s %s %s\n", r.ID, r.Type, r.Plugin, r.Matches())
		}
		for _, r := range ld.Removed {
			fmt.Fprintf(stdout, "  - %d %s %s %s\n", r.ID, r.Type, r.Plugin, r.Matches())
		}
		return nil
	}
	printOutcomes(stdout, rep.Outcomes, "no path changed")
	return nil
}

func printOutcomes(w io.Writer, out []host.ClaimOutcome, none string) {
	if len(out) == 0 {
		fmt.Fprintln(w, none)
		return
	}
	for _, o := range out {
		rule := ""
		if o.Rule != 0 {
			rule = fmt.Sprintf(" (claim rule %d)", o.Rule)
		}
		if o.Plugins {
			if o.Error != "" {
				fmt.Fprintf(w, "%s: SATP and PSP stay %s: %s\n", o.Device, o.From, o.Error)
			} else {
				fmt.Fprintf(w, "%s: SATP and PSP %s -> %s: %s\n", o.Device, o.From, o.To, o.Why)
			}
			continue
		}
		if o.Error != "" {
			fmt.Fprintf(w, "%s: path %s stays %s: %s\n", o.Device, o.Path, o.From, o.Error)
			continue
		}
		fmt.Fprintf(w, "%s: path %s %s -> %s%s\n", o.Device, o.Path, o.From, o.To, rule)
	}
}

func cmdClaiming(args []string, stdout io.Writer) error {
	if len(args) == 0 {
		return usagef("want `claiming unclaim`, `claiming reclaim` or `claiming list`")
	}
	switch args[0] {
	case "unclaim", "reclaim":
		return cmdClaimingAction(args[0], args[1:], stdout)
	case "list":
		return cmdClaimingList(args[1:], stdout)
	}
	return usagef("unknown claiming subcommand %q (want unclaim, reclaim or list)", args[0])
}

func cmdClaimingAction(action string, args []string, stdout io.Writer) error {
	usage := "claiming unclaim (--path P | --device D | --adapter vmhbaN) [--json] [--control S]\n" +
		"  take paths away from their devices live (flushed first); the last usable path of a device is refused (the device is in use)"
	if action == "reclaim" {
		usage = "claiming reclaim --device D [--json] [--control S]\n" +
			"  claim a device's paths again with the runtime rules: paths a MASK_PATH rule matches are masked, masked and unclaimed paths the rules give back return;\n" +
			"  the device gets the SATP and PSP the SATP rules and default PSPs give it now, replaced live (the device stays in use)"
	}
	fs := newFlags(stdout, "claiming "+action, usage)
	ctl := fs.String("control", "", "control socket")
	asJSON := fs.Bool("json", false, "print JSON")
	device := strFlag(fs, "device", "d", "device name")
	var path, adapter *string
	if action == "unclaim" {
		path = strFlag(fs, "path", "p", "path name, runtime name or URI")
		adapter = strFlag(fs, "adapter", "A", "adapter, vmhbaN")
	}
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return usagef("claiming %s takes flags only (got %q)", action, pos)
	}
	req := control.ClaimingRequest{Action: action, Device: *device}
	if action == "unclaim" {
		req.Path, req.Adapter = *path, *adapter
		n := 0
		for _, s := range []string{req.Path, req.Device, req.Adapter} {
			if s != "" {
				n++
			}
		}
		if n != 1 {
			return usagef("give exactly one of --path, --device or --adapter")
		}
	} else if req.Device == "" {
		return usagef("give --device D")
	}
	c, err := dial(*ctl)
	if err != nil {
		return err
	}
	rep, err := c.Claiming(context.Background(), req)
	if err != nil {
		return err
	}
	if *asJSON {
		return printJSON(stdout, rep)
	}
	printOutcomes(stdout, rep.Outcomes, "no path changed")
	return nil
}

func cmdClaimingList(args []string, stdout io.Writer) error {
	fs := newFlags(stdout, "claiming list", "claiming list [--json] [--control S]\n  the paths that serve no device: masked (a MASK_PATH rule) or unclaimed")
	ctl := fs.String("control", "", "control socket")
	asJSON := fs.Bool("json", false, "print JSON")
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return usagef("claiming list takes no arguments")
	}
	c, err := dial(*ctl)
	if err != nil {
		return err
	}
	rep, err := c.Offline(context.Background())
	if err != nil {
		return err
	}
	if *asJSON {
		return printJSON(stdout, rep)
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "Device\tPath\tState\tRule\tURI\tReason")
	for _, p := range rep.Paths {
		rule := "-"
		if p.Rule != 0 {
			rule = strconv.Itoa(p.Rule)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", p.Device, p.Name, p.State, rule, p.URI, p.Reason)
	}
	return tw.Flush()
}

// offlineEntries are the masked and unclaimed paths as `path list` rows
// (nil when the mount cannot say).
func offlineEntries(c *control.Client) []PathListEntry {
	rep, err := c.Offline(context.Background())
	if err != nil {
		return nil
	}
	var out []PathListEntry
	for _, p := range rep.Paths {
		out = append(out, PathListEntry{Device: p.Device, PathStatus: mpath.PathStatus{Name: p.Name, URI: p.URI, State: p.State,
			Admin: "on", Reason: p.Reason, Since: p.Since, Transport: p.Transport, Location: p.Location, Group: -1, Vendor: p.Vendor, Model: p.Model}})
	}
	return out
}

func cmdSATP(args []string, stdout io.Writer) error {
	if len(args) == 0 {
		return cmdSATPList(args, stdout)
	}
	switch args[0] {
	case "list":
		return cmdSATPList(args[1:], stdout)
	case "set":
		return cmdSATPSet(args[1:], stdout)
	case "rule":
		if len(args) == 1 {
			return cmdSATPRuleList(nil, stdout)
		}
		switch args[1] {
		case "list":
			return cmdSATPRuleList(args[2:], stdout)
		case "add", "remove":
			return cmdSATPRuleChange(args[1], args[2:], stdout)
		}
		if strings.HasPrefix(args[1], "-") {
			return cmdSATPRuleList(args[1:], stdout)
		}
		return usagef("unknown satp rule subcommand %q (want list, add or remove)", args[1])
	}
	if strings.HasPrefix(args[0], "-") {
		return cmdSATPList(args, stdout)
	}
	return usagef("unknown satp subcommand %q (want list, set or rule)", args[0])
}

func cmdSATPList(args []string, stdout io.Writer) error {
	fs := newFlags(stdout, "satp list", "satp list [--json] [--control S]\n  SATPs with their default PSPs (a mount's, when one answers)")
	ctl := fs.String("control", "", "control socket (without a mount: the built-in defaults)")
	asJSON := fs.Bool("json", false, "print JSON")
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return usagef("satp list takes no arguments")
	}
	list := fromMount(*ctl, func(c *control.Client) ([]host.SATPInfo, error) {
		rep, err := c.SATPs(context.Background())
		return rep.SATPs, err
	}, func() []host.SATPInfo {
		var out []host.SATPInfo
		for _, p := range nmp.SATPs() {
			out = append(out, host.SATPInfo{PluginInfo: p, DefaultPSPSource: "plugin"})
		}
		return out
	})
	if *asJSON {
		return printJSON(stdout, map[string]any{"satps": list})
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "Name\tDefault PSP\tDefault PSP From\tDescription")
	for _, s := range list {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", s.Name, s.DefaultPSP, s.DefaultPSPSource, s.Description)
	}
	return tw.Flush()
}

func cmdSATPRuleList(args []string, stdout io.Writer) error {
	fs := newFlags(stdout, "satp rule list", "satp rule list [--json] [--control S]\n  the SATP rules in search order: driver, vendor/model, claim option, transport; user before system")
	ctl := fs.String("control", "", "control socket (without a mount: the default rules)")
	asJSON := fs.Bool("json", false, "print JSON")
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return usagef("satp rule list takes no arguments")
	}
	out := fromMount(*ctl, func(c *control.Client) (control.SATPRulesReply, error) {
		return c.SATPRules(context.Background())
	}, func() control.SATPRulesReply {
		return control.SATPRulesReply{Satprules: nmp.DefaultSATPRules().List()}
	})
	if *asJSON {
		return printJSON(stdout, out)
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "Name\tDevice\tVendor\tModel\tDriver\tTransport\tOptions\tRule Group\tClaim Options\tDefault PSP\tPSP Options\tDescription")
	for _, r := range out.Satprules {
		fmt.Fprintf(tw, "%s\t\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", r.SATP, r.Vendor, r.Model, r.Driver, r.Transport, kvString(r.Options), r.Group, r.ClaimOptions, r.PSP, kvString(r.PSPOptions), r.Description)
	}
	return tw.Flush()
}

func kvString(m map[string]string) string {
	if len(m) == 0 {
		return ""
	}
	var f []string
	for k, v := range m {
		f = append(f, k+"="+v)
	}
	sort.Strings(f)
	return strings.Join(f, ";")
}

// parseOptions reads "k=v;k=v" (esxcli's option strings) or repeated
// k=v flags.
func parseOptions(list []string, flag string) (map[string]string, error) {
	var kv []string
	for _, s := range list {
		kv = append(kv, strings.FieldsFunc(s, func(r rune) bool { return r == ';' || r == ',' || r == ' ' })...)
	}
	if len(kv) == 0 {
		return nil, nil
	}
	return parseKV(kv, flag)
}

func cmdSATPRuleChange(action string, args []string, stdout io.Writer) error {
	fs := newFlags(stdout, "satp rule "+action, "satp rule "+action+" --satp S [--vendor V] [--model M] [--transport T] [--driver D] [--claim-option tpgs_on|tpgs_off]"+
		map[string]string{"add": " [--psp P] [--psp-option k=v] [--option k=v] [--description TEXT]", "remove": ""}[action]+" [--control S]\n"+
		map[string]string{
			"add":    "  add an SATP rule: effective at once for devices made from now on (adapter rescan); written to the config file if the mount has one",
			"remove": "  remove the user SATP rules of the SATP that match exactly these attributes",
		}[action]+"\n  transports: "+strings.Join(mpath.Transports, ", "))
	ctl := fs.String("control", "", "control socket")
	satp := strFlag(fs, "satp", "s", "the SATP the rule names, e.g. VMW_SATP_ALUA")
	vendor := strFlag(fs, "vendor", "V", "vendor (glob)")
	model := strFlag(fs, "model", "M", "model (glob)")
	transport := strFlag(fs, "transport", "R", "transport")
	driver := strFlag(fs, "driver", "D", "driver (glob), mpathfs_<transport>")
	claim := strFlag(fs, "claim-option", "c", "tpgs_on or tpgs_off")
	var psp, desc *string
	var pspOpts, opts multiFlag
	if action == "add" {
		psp = strFlag(fs, "psp", "P", "the PSP devices it matches get")
		fs.Var(&pspOpts, "psp-option", "PSP option k=v (repeatable, or k=v;k=v)")
		fs.Var(&pspOpts, "O", "same as --psp-option")
		fs.Var(&opts, "option", "SATP option k=v (repeatable, or k=v;k=v)")
		fs.Var(&opts, "o", "same as --option")
		desc = strFlag(fs, "description", "e", "description")
	}
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return usagef("satp rule %s takes flags only (got %q)", action, pos)
	}
	if *satp == "" {
		return usagef("give --satp (see `mpathfs satp list`)")
	}
	r := nmp.SATPRule{SATP: *satp, Vendor: *vendor, Model: *model, Transport: *transport, Driver: *driver, ClaimOptions: *claim}
	if action == "add" {
		r.PSP, r.Description = *psp, *desc
		if r.PSPOptions, err = parseOptions(pspOpts, "--psp-option"); err != nil {
			return err
		}
		if r.Options, err = parseOptions(opts, "--option"); err != nil {
			return err
		}
	}
	c, err := dial(*ctl)
	if err != nil {
		return err
	}
	ch, err := c.SATPRule(context.Background(), control.SATPRuleRequest{Action: action, Rule: r})
	if err != nil {
		return err
	}
	verb := map[string]string{"add": "added to", "remove": "removed from"}[action]
	fmt.Fprintf(stdout, "SATP rule %s %s the %s\n", r.String(), verb, ch.Where)
	return nil
}

func cmdSATPSet(args []string, stdout io.Writer) error {
	fs := newFlags(stdout, "satp set", "satp set --satp S --default-psp P [--control S]\n"+
		"  the SATP's default PSP for the devices claimed from now on (--default-psp \"\" : the plugin's own); written to the\n"+
		"  config file's satp_default_psp when the mount has one, so it lasts across mounts; `claiming reclaim` applies it to a device")
	ctl := fs.String("control", "", "control socket")
	satp := strFlag(fs, "satp", "s", "the SATP")
	psp := strFlag(fs, "default-psp", "P", "the new default PSP")
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if *satp == "" || len(pos) > 0 {
		return usagef("give --satp S and --default-psp P")
	}
	c, err := dial(*ctl)
	if err != nil {
		return err
	}
	info, err := c.SATPSet(context.Background(), control.SATPSetRequest{SATP: *satp, DefaultPSP: *psp})
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "%s: default PSP %s for the devices claimed from now on (from: %s)\n", info.Name, info.DefaultPSP, info.DefaultPSPSource)
	return nil
}

func cmdAdapterRescan(args []string, stdout io.Writer) error {
	fs := newFlags(stdout, "adapter rescan", "adapter rescan [--all] [--json] [--control S] [vmhbaN]\n"+
		"  read the configured sources again (the config file, else the mount's devices) and claim what is new:\n"+
		"  new paths join their devices, a new device becomes a new device file; with vmhbaN only paths configured on it")
	ctl := fs.String("control", "", "control socket")
	all := fs.Bool("all", false, "every adapter (the default)")
	adapter := strFlag(fs, "adapter", "A", "the adapter to rescan")
	asJSON := fs.Bool("json", false, "print JSON")
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if len(pos) == 1 && *adapter == "" {
		*adapter, pos = pos[0], nil
	}
	if len(pos) > 0 || (*all && *adapter != "") {
		return usagef("give at most one adapter (vmhbaN), or --all")
	}
	c, err := dial(*ctl)
	if err != nil {
		return err
	}
	res, err := c.Rescan(context.Background(), *adapter)
	if err != nil {
		return err
	}
	if *asJSON {
		return printJSON(stdout, res)
	}
	what := "every adapter"
	if res.Adapter != "" {
		what = res.Adapter
	}
	fmt.Fprintf(stdout, "rescan of %s (%s): %d configured path(s) scanned, %d new path(s), %d new device(s)\n", what, res.Source, res.Scanned, len(res.NewPaths), len(res.NewDevices))
	for _, d := range res.NewDevices {
		fmt.Fprintf(stdout, "  new device %s\n", d)
	}
	for _, o := range res.NewPaths {
		if o.Error != "" {
			fmt.Fprintf(stdout, "  %s: %s not claimed: %s\n", o.Device, o.URI, o.Error)
			continue
		}
		fmt.Fprintf(stdout, "  %s: path %s (%s) claimed\n", o.Device, o.Path, o.URI)
	}
	for _, e := range res.Errors {
		fmt.Fprintf(stdout, "  error: %s\n", e)
	}
	return nil
}
