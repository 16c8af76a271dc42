package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"

	"github.com/mpathfs/mpathfs/arrayd"
	"github.com/mpathfs/mpathfs/control"
)

// The array as its own server: `mpathfs array serve` and the `mpathfs
// array …` commands that talk to it (docs/array.md). cmdArray hands every
// subcommand to arrayServerCommand first; what it does not take (a mount's
// simulated arrays) goes on as before.

// DefaultArraySocket is an array server's control socket unless --control
// or MPATHFS_CONTROL say otherwise.
const DefaultArraySocket = "/run/mpathfs/array.sock"

func init() {
	subcommands["array"] = append(subcommands["array"],
		subcommand{"serve", "array serve [--config ARRAY.yaml] [--control S]: serve an array over iSCSI (default: two controllers, two ports each, one 1 GiB LU)"},
		subcommand{"port", "array port offline|online PORT: take a target port off the network or back (array server)"},
		subcommand{"session", "array session drop INITIATOR: drop every connection of an initiator (array server)"},
		subcommand{"fault", "array fault inject FLAGS | fault clear --id N|--all | fault list [--json]: faults at the array (array server)"},
	)
}

// arraySocket resolves an array command's socket: --control, then
// MPATHFS_CONTROL, then the array server's default socket when it exists,
// then a mount's.
func arraySocket(flag string) string {
	if flag != "" || os.Getenv("MPATHFS_CONTROL") != "" {
		return control.SocketPath(flag)
	}
	if _, err := os.Stat(DefaultArraySocket); err == nil {
		return DefaultArraySocket
	}
	return control.DefaultSocket
}

// arrayServerCommand runs the subcommands only an array server has, and
// status/fail/restore/transfer/set-tpg when the socket is an array
// server's; handled is false for the rest.
func arrayServerCommand(args []string, stdout io.Writer) (handled bool, err error) {
	if len(args) == 0 {
		return false, nil
	}
	switch args[0] {
	case "serve":
		return true, cmdArrayServe(args[1:], stdout)
	case "port":
		return true, cmdArrayPort(args[1:], stdout)
	case "session":
		return true, cmdArraySession(args[1:], stdout)
	case "fault":
		return true, cmdArrayFault(args[1:], stdout)
	case "status", "fail", "restore", "transfer", "set-tpg":
		for _, a := range args[1:] {
			if isHelp(a) {
				return false, nil
			}
		}
		fs := newFlags(stdout, "array "+args[0], "array "+args[0])
		ctl := fs.String("control", "", "control socket")
		asJSON := fs.Bool("json", false, "print JSON")
		pos, err := parseFlags(fs, args[1:])
		if err != nil {
			return false, nil // cmdArray reports it
		}
		c, err := control.Dial(arraySocket(*ctl))
		if err != nil {
			return false, nil
		}
		var st arrayd.Status
		if c.Get(context.Background(), arrayd.EndpointServer, &st) != nil {
			return false, nil // a mount: cmdArray's business
		}
		if args[0] == "status" {
			if *asJSON {
				return true, printJSON(stdout, st)
			}
			return true, printArrayServer(stdout, st)
		}
		return true, arrayServerAction(c, st, args[0], pos, *asJSON, stdout)
	}
	return false, nil
}

// arrayServerAction is fail/restore/transfer [ARRAY] CONTROLLER and
// set-tpg [ARRAY] TPG STATE against an array server (the array's name
// may be left out: a server has one).
func arrayServerAction(c *control.Client, st arrayd.Status, verb string, pos []string, asJSON bool, stdout io.Writer) error {
	if len(pos) > 0 && pos[0] == st.Name && (verb != "set-tpg" && len(pos) == 2 || verb == "set-tpg" && len(pos) == 3) {
		pos = pos[1:]
	}
	r := arrayd.ArrayRequest{Array: st.Name}
	switch verb {
	case "fail", "restore", "transfer":
		if len(pos) != 1 {
			return usagef("array %s [ARRAY] CONTROLLER", verb)
		}
		r.Controller = pos[0]
		r.Action = map[string]string{"fail": "controller-fail", "restore": "controller-restore", "transfer": "transfer-ownership"}[verb]
	case "set-tpg":
		if len(pos) != 2 {
			return usagef("array set-tpg [ARRAY] TPG STATE (AO, ANO, S, U, O or T)")
		}
		id, err := strconv.Atoi(pos[0])
		if err != nil {
			return usagef("TPG %q is not a number", pos[0])
		}
		r.Action, r.TPG, r.State = "tpg-state", &id, pos[1]
	}
	var out any
	if err := c.Post(context.Background(), "/v1/array", r, &out); err != nil {
		return err
	}
	if asJSON {
		return printJSON(stdout, out)
	}
	var now arrayd.Status
	if err := c.Get(context.Background(), arrayd.EndpointServer, &now); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "%s: %s\n", now.Name, now.Array.String())
	return nil
}

func cmdArrayServe(args []string, stdout io.Writer) error {
	fs := newFlags(stdout, "array serve", "array serve [--config ARRAY.yaml] [--control SOCKET]\n\n"+
		"Serves an array over iSCSI until SIGINT or SIGTERM. Without --config: the built-in\n"+
		"array (two controllers, two ports each on 127.0.0.1:3260-3263, one 1 GiB LU stored\n"+
		"in $MPATHFS_STATE_DIR or /var/lib/mpathfs). The config is documented in docs/array.md.")
	cfgPath := fs.String("config", "", "the array's YAML description")
	ctl := fs.String("control", "", "control socket (default $MPATHFS_CONTROL, else "+DefaultArraySocket+")")
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return usagef("array serve takes no arguments (got %q): give the array with --config FILE", pos[0])
	}
	var cfg arrayd.Config
	if *cfgPath == "" {
		cfg, err = arrayd.Default(arrayd.DefaultStateDir()).Validated()
	} else {
		cfg, err = arrayd.Load(*cfgPath)
	}
	if err != nil {
		return usageError{err.Error()}
	}
	srv, err := arrayd.New(cfg, arrayd.ISCSI)
	if err != nil {
		return err
	}
	defer srv.Close()
	if err := srv.Start(); err != nil {
		return err
	}
	sock := *ctl
	if sock == "" {
		sock = os.Getenv("MPATHFS_CONTROL")
	}
	if sock == "" {
		sock = DefaultArraySocket
	}
	cs, err := srv.ListenControl(sock)
	if err != nil {
		return err
	}
	defer cs.Close()
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	fmt.Fprintf(stdout, "target %s\n", cfg.Target)
	for _, lu := range srv.Status().LUs {
		fmt.Fprintf(stdout, "lu %d %s %s (%d bytes) %s\n", lu.LUN, lu.Name, lu.File, lu.Size, lu.WWID)
	}
	for _, p := range srv.Portals() {
		ns := ""
		if p.Netns != "" {
			ns = " netns " + p.Netns
		}
		fmt.Fprintf(stdout, "portal %s port %d controller %s tpg %d%s\n", p.Addr, p.Port, p.Controller, p.TPG, ns)
	}
	fmt.Fprintf(stdout, "control %s\nready: stop with Ctrl-C or SIGTERM\n", sock)
	<-ctx.Done()
	fmt.Fprintln(stdout, "stopping")
	return nil
}

func cmdArrayPort(args []string, stdout io.Writer) error {
	fs := newFlags(stdout, "array port", "array port offline|online PORT [--control S]")
	ctl := fs.String("control", "", "the array server's control socket")
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 2 || (pos[0] != "offline" && pos[0] != "online") {
		return usagef("want array port offline PORT or array port online PORT")
	}
	n, err := strconv.ParseUint(pos[1], 10, 16)
	if err != nil || n == 0 {
		return usagef("PORT %q: want a relative port number (`mpathfs array status` lists them)", pos[1])
	}
	c, err := control.Dial(arraySocket(*ctl))
	if err != nil {
		return err
	}
	var out []arrayd.BoundPortal
	if err := c.Post(context.Background(), arrayd.EndpointPort, arrayd.PortRequest{Port: uint16(n), Online: pos[0] == "online"}, &out); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "port %d %s\n", n, pos[0])
	return nil
}

func cmdArraySession(args []string, stdout io.Writer) error {
	fs := newFlags(stdout, "array session", "array session drop INITIATOR [--control S]")
	ctl := fs.String("control", "", "the array server's control socket")
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 2 || pos[0] != "drop" {
		return usagef("want array session drop INITIATOR")
	}
	c, err := control.Dial(arraySocket(*ctl))
	if err != nil {
		return err
	}
	var out arrayd.SessionReply
	if err := c.Post(context.Background(), arrayd.EndpointSession, arrayd.SessionRequest{Initiator: pos[1]}, &out); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "dropped %d connection(s) of %s\n", out.Dropped, pos[1])
	return nil
}

func cmdArrayFault(args []string, stdout io.Writer) error {
	if len(args) == 0 {
		return usagef("want array fault inject, clear or list")
	}
	verb, rest := args[0], args[1:]
	if isHelp(verb) {
		verb, rest = "inject", args
	}
	ctlFlag := ""
	// --control may sit among the fault's flags.
	var own []string
	for i := 0; i < len(rest); i++ {
		switch a := rest[i]; {
		case a == "--control" || a == "-control":
			if i+1 >= len(rest) {
				return usagef("--control needs a socket path")
			}
			ctlFlag = rest[i+1]
			i++
		case strings.HasPrefix(a, "--control=") || strings.HasPrefix(a, "-control="):
			ctlFlag = a[strings.Index(a, "=")+1:]
		default:
			own = append(own, a)
		}
	}
	for _, a := range own {
		if isHelp(a) {
			fmt.Fprintln(stdout, "usage: mpathfs array fault inject FLAGS | array fault clear --id N | --all | array fault list [--json]  [--control S]")
			fmt.Fprintln(stdout, "\nwhere:  --port N  --initiator IQN  --lu LUN (repeatable)  --op read,write,flush,discard,probe,other,any  --lba FROM-TO  --count N")
			fmt.Fprintln(stdout, "what:   --error CLASS | --sense KK/AA/QQ | --status busy|task-set-full|reservation-conflict")
			fmt.Fprintln(stdout, "        | --hang | --land-late D | --drop-connection;  --delay D (alone or before one of them)")
			return nil
		}
	}
	c, err := control.Dial(arraySocket(ctlFlag))
	switch verb {
	case "inject":
		f, perr := arrayd.ParseFault(own)
		if perr != nil {
			return usageError{perr.Error()}
		}
		if err != nil {
			return err
		}
		var out arrayd.Fault
		if err := c.Post(context.Background(), arrayd.EndpointInject, f, &out); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "array fault %d: %s\n", out.ID, out.String())
		return nil
	case "clear":
		fs := newFlags(stdout, "array fault clear", "array fault clear --id N | --all")
		id := fs.Int("id", 0, "the fault to clear")
		all := fs.Bool("all", false, "clear every fault")
		if _, perr := parseFlags(fs, own); perr != nil {
			return perr
		}
		if (*id == 0) == !*all {
			return usagef("give --id N or --all")
		}
		if err != nil {
			return err
		}
		var out arrayd.ClearReply
		if err := c.Post(context.Background(), arrayd.EndpointClear, arrayd.ClearRequest{ID: *id, All: *all}, &out); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "cleared %d array fault(s)\n", out.Cleared)
		return nil
	case "list":
		fs := newFlags(stdout, "array fault list", "array fault list [--json]")
		asJSON := fs.Bool("json", false, "print JSON")
		if _, perr := parseFlags(fs, own); perr != nil {
			return perr
		}
		if err != nil {
			return err
		}
		var out struct {
			Faults []arrayd.Fault `json:"faults"`
		}
		if err := c.Get(context.Background(), arrayd.EndpointFaults, &out); err != nil {
			return err
		}
		if *asJSON {
			return printJSON(stdout, out)
		}
		if len(out.Faults) == 0 {
			fmt.Fprintln(stdout, "no array faults")
		}
		for _, f := range out.Faults {
			fmt.Fprintf(stdout, "%d\t%s\n", f.ID, f.String())
		}
		return nil
	}
	return usagef("unknown array fault subcommand %q (want inject, clear or list)", verb)
}

// printArrayServer prints an array server's status: controllers and TPG
// states, ports, sessions per initiator, reservations per LU, faults.
func printArrayServer(w io.Writer, st arrayd.Status) error {
	fmt.Fprintf(w, "array %s, target %s: %s\n", st.Name, st.Target, st.Array.String())
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "\nController\tUp\tOwner\tTPG\tState\tPorts")
	for _, c := range st.Array.Controllers {
		state := ""
		for _, t := range st.Array.TPGs {
			if t.ID == c.TPG {
				state = t.State
				if t.Target != "" {
					state += "->" + t.Target
				}
			}
		}
		fmt.Fprintf(tw, "%s\t%v\t%v\t%d\t%s\t%v\n", c.Name, c.Up, c.Owner, c.TPG, state, c.Ports)
	}
	fmt.Fprintln(tw, "\nPort\tController\tTPG\tPortal\tOnline")
	for _, p := range st.Portals {
		fmt.Fprintf(tw, "%d\t%s\t%d\t%s\t%v\n", p.Port, p.Controller, p.TPG, p.Addr, p.Online)
	}
	fmt.Fprintln(tw, "\nInitiator\tISID\tPort\tTPG\tPortal\tRemote\tTasks")
	if len(st.Sessions) == 0 {
		fmt.Fprintln(tw, "(no sessions)")
	}
	for _, s := range st.Sessions {
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%s\t%s\t%d\n", s.Initiator, s.ISID, s.TargetPort, s.TPG, s.Portal, s.Remote, s.Tasks)
	}
	fmt.Fprintln(tw, "\nLUN\tName\tSize\tWWID\tFile")
	for _, l := range st.LUs {
		fmt.Fprintf(tw, "%d\t%s\t%d\t%s\t%s\n", l.LUN, l.Name, l.Size, l.WWID, l.File)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintln(w, "\nreservations:")
	if err := printJSON(w, st.Reservations); err != nil {
		return err
	}
	if len(st.Faults) > 0 {
		fmt.Fprintln(w, "faults:")
		for _, f := range st.Faults {
			fmt.Fprintf(w, "  %d  %s\n", f.ID, f.String())
		}
	}
	return nil
}
