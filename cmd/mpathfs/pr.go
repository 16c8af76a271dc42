package main

import (
	"context"
	"fmt"
	"io"
	"strings"

	"github.com/mpathfs/mpathfs/control"
)

// `mpathfs pr`: SCSI persistent reservations on a device, with the verbs of
// dm-multipath's mpathpersist (--register, --reserve, --read-keys, …), and
// `mpathfs pr reserve6|release6` for the SCSI-2 reservation. The device
// registers a key on every path and routes the rest through one path (see
// docs/clusters.md).

// prVerb is one of mpathpersist's service actions, as a flag, with the
// action it names in control.PRRequest.
type prVerb struct{ flag, action, help string }

// prVerbs lists the verbs.
func prVerbs() []prVerb {
	return []prVerb{
		{"register", "register", "PR OUT REGISTER: register --param-sark on every path (replacing --param-rk; 0 unregisters)"},
		{"register-ignore", "register-ignore", "PR OUT REGISTER AND IGNORE EXISTING KEY: register --param-sark whatever key is registered"},
		{"reserve", "reserve", "PR OUT RESERVE with --param-rk and --prout-type"},
		{"release", "release", "PR OUT RELEASE with --param-rk and --prout-type (through the path that reserved)"},
		{"preempt", "preempt", "PR OUT PREEMPT: remove --param-sark's registrations (and its reservation: --prout-type)"},
		{"preempt-abort", "preempt-abort", "PR OUT PREEMPT AND ABORT: preempt and abort the victim's commands (fencing)"},
		{"clear", "clear", "PR OUT CLEAR: remove every registration and the reservation"},
		{"read-keys", "read-keys", "PR IN READ KEYS: the registered keys"},
		{"read-reservation", "read-reservation", "PR IN READ RESERVATION: the reservation"},
		{"read-full-status", "read-full-status", "PR IN READ FULL STATUS: every registration with its initiator and holder flag"},
		{"report-capabilities", "report-capabilities", "PR IN REPORT CAPABILITIES"},
	}
}

const prUsage = "pr [--control S] [--json] VERB [--param-rk K] [--param-sark K] [--prout-type T] DEVICE | pr reserve6|release6 DEVICE | pr lock-loop [flags] DEVICE"

func cmdPR(args []string, stdout io.Writer) error {
	for i, a := range args { // the subcommand may follow --control S
		if a == "reserve6" || a == "release6" {
			return cmdPRSCSI2(a, append(args[:i:i], args[i+1:]...), stdout)
		}
		if a == "lock-loop" {
			return cmdPRLockLoop(append(args[:i:i], args[i+1:]...), stdout)
		}
	}
	fs := newFlags(stdout, "pr", prUsage+"\n\nVERB is one of --register, --register-ignore, --reserve, --release, --preempt, --preempt-abort,\n--clear, --read-keys, --read-reservation, --read-full-status, --report-capabilities (mpathpersist's).\nTypes: WE (1), EA (3), WERO (5), EARO (6), WEAR (7), EAAR (8); for multipath devices prefer WERO,\nEARO, WEAR or EAAR (every path of the host is a registrant). Keys: 0x123abc or decimal.\n\nsubcommands:\n"+prSubUsage()+"\nflags:")
	ctl := fs.String("control", "", "control socket")
	asJSON := fs.Bool("json", false, "print JSON")
	rk := fs.String("param-rk", "", "the reservation key of this host (PR OUT parameter list RESERVATION KEY)")
	sark := fs.String("param-sark", "", "the service action key: the new key of a register, the victim's of a preempt")
	typ := fs.String("prout-type", "", "reservation type: WE, EA, WERO, EARO, WEAR, EAAR or 1, 3, 5, 6, 7, 8")
	fs.Bool("out", false, "accepted for mpathpersist compatibility (PR OUT verbs imply it)")
	fs.Bool("in", false, "accepted for mpathpersist compatibility (PR IN verbs imply it)")
	table := prVerbs()
	verbs := make([]*bool, len(table))
	for i, v := range table {
		verbs[i] = fs.Bool(v.flag, false, v.help)
	}
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	var action []string
	for i, v := range table {
		if *verbs[i] {
			action = append(action, v.action)
		}
	}
	if len(action) != 1 {
		return usagef("give exactly one verb (got %d: %v): --register, --reserve, --read-keys, … (mpathfs pr -h)", len(action), action)
	}
	if len(pos) != 1 {
		return usagef("give exactly one DEVICE (got %q): a name from `mpathfs status`", pos)
	}
	req := control.PRRequest{Device: pos[0], Action: action[0], Type: *typ}
	if *rk != "" {
		if req.Key, err = control.ParsePRKey(*rk); err != nil {
			return usagef("--param-rk: %v", err)
		}
	}
	if *sark != "" {
		if req.SAKey, err = control.ParsePRKey(*sark); err != nil {
			return usagef("--param-sark: %v", err)
		}
	}
	if *typ != "" {
		if _, err := control.ParsePRType(*typ); err != nil {
			return usagef("--prout-type: %v", err)
		}
	}
	switch req.Action {
	case "reserve", "release", "preempt", "preempt-abort":
		if *typ == "" {
			return usagef("--%s needs --prout-type (WE, EA, WERO, EARO, WEAR, EAAR or 1..8)", req.Action)
		}
	}
	switch req.Action {
	case "register", "register-ignore":
		if *sark == "" {
			return usagef("--%s needs --param-sark KEY (the key to register; 0 unregisters)", req.Action)
		}
	case "preempt", "preempt-abort":
		if *sark == "" || *rk == "" {
			return usagef("--%s needs --param-rk (this host's key) and --param-sark (the victim's key)", req.Action)
		}
	case "reserve", "release", "clear":
		if *rk == "" {
			return usagef("--%s needs --param-rk KEY (this host's registered key)", req.Action)
		}
	}
	c, err := dial(*ctl)
	if err != nil {
		return err
	}
	rep, err := c.PR(context.Background(), req)
	if err != nil {
		return err
	}
	if *asJSON {
		return printJSON(stdout, rep)
	}
	printPR(stdout, rep)
	return nil
}

// printPR prints a reply in mpathpersist's manner.
func printPR(w io.Writer, r control.PRReply) {
	switch r.Action {
	case "read-keys":
		if len(r.Keys) == 0 {
			fmt.Fprintf(w, "  PR generation=0x%x, \tthere are NO registered reservation keys\n", r.Generation)
			return
		}
		fmt.Fprintf(w, "  PR generation=0x%x, \t%d registered reservation key(s) follow:\n", r.Generation, len(r.Keys))
		for _, k := range r.Keys {
			fmt.Fprintf(w, "    0x%x\n", k)
		}
	case "read-reservation":
		res := r.Reservation
		if res == nil || !res.Held {
			fmt.Fprintf(w, "  PR generation=0x%x, there is NO reservation held\n", r.Generation)
			return
		}
		fmt.Fprintf(w, "  PR generation=0x%x, Reservation follows:\n", r.Generation)
		fmt.Fprintf(w, "   Key = 0x%x\n", res.Key)
		fmt.Fprintf(w, "  scope = LU_SCOPE, type = %s\n", prTypeLong(res.Type.String()))
	case "read-full-status":
		fs := r.FullStatus
		if fs == nil || len(fs.Registrations) == 0 {
			fmt.Fprintf(w, "  PR generation=0x%x, there are NO registrations\n", r.Generation)
			return
		}
		fmt.Fprintf(w, "  PR generation=0x%x\n", r.Generation)
		for _, g := range fs.Registrations {
			fmt.Fprintf(w, "    Key = 0x%x\n", g.Key)
			if g.Holder {
				fmt.Fprintf(w, "      Reservation holder, scope = LU_SCOPE, type = %s\n", prTypeLong(g.Type.String()))
			} else {
				fmt.Fprintf(w, "      not reservation holder\n")
			}
			fmt.Fprintf(w, "      Relative port address: 0x%x\n", g.RelativeTargetPort)
			if g.Initiator != "" {
				fmt.Fprintf(w, "      Transport ID: %s\n", g.Initiator)
			}
		}
	case "report-capabilities":
		c := r.Capabilities
		if c == nil {
			return
		}
		fmt.Fprintf(w, "Report capabilities response:\n  Compatible Reservation Handling(CRH): %d\n  Specify Initiator Ports Capable(SIP_C): %d\n  All Target Ports Capable(ATP_C): %d\n  Persist Through Power Loss Capable(PTPL_C): %d\n  Persist Through Power Loss Active(PTPL_A): %d\n",
			b2i(c.CRH), b2i(c.SIPC), b2i(c.ATPC), b2i(c.PTPLC), b2i(c.PTPLA))
		var ts []string
		for _, t := range c.Types {
			ts = append(ts, t.String())
		}
		fmt.Fprintf(w, "  Supported types: %s\n", strings.Join(ts, " "))
	default:
		fmt.Fprintf(w, "%s %s: ok\n", r.Device, r.Action)
	}
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

// prTypeLong spells a type out as sg_persist and mpathpersist do.
func prTypeLong(abbrev string) string {
	long := map[string]string{
		"WE": "Write Exclusive", "EA": "Exclusive Access",
		"WERO": "Write Exclusive, registrants only", "EARO": "Exclusive Access, registrants only",
		"WEAR": "Write Exclusive, all registrants", "EAAR": "Exclusive Access, all registrants",
	}
	if l, ok := long[abbrev]; ok {
		return l + " (" + abbrev + ")"
	}
	return abbrev
}

// cmdPRSCSI2 is `mpathfs pr reserve6|release6 DEVICE`: the SCSI-2
// reservation, held by one path (I/O is pinned to it while held).
func cmdPRSCSI2(verb string, args []string, stdout io.Writer) error {
	fs := newFlags(stdout, "pr "+verb, "pr "+verb+" [--control S] DEVICE: SCSI-2 "+map[string]string{"reserve6": "RESERVE(6)", "release6": "RELEASE(6)"}[verb]+" through one path; the device pins its I/O to that path while it holds the reservation")
	ctl := fs.String("control", "", "control socket")
	asJSON := fs.Bool("json", false, "print JSON")
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return usagef("give exactly one DEVICE (got %q)", pos)
	}
	c, err := dial(*ctl)
	if err != nil {
		return err
	}
	rep, err := c.PR(context.Background(), control.PRRequest{Device: pos[0], Action: verb})
	if err != nil {
		return err
	}
	if *asJSON {
		return printJSON(stdout, rep)
	}
	printPR(stdout, rep)
	return nil
}

// prSubUsage lists pr's subcommands for `pr -h`.
func prSubUsage() string {
	var b strings.Builder
	for _, s := range subcommands["pr"] {
		fmt.Fprintf(&b, "  %-8s  %s\n", s.name, s.usage)
	}
	return b.String()
}
