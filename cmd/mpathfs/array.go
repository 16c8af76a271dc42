package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/mpathfs/mpathfs/array"
	"github.com/mpathfs/mpathfs/backends"
	"github.com/mpathfs/mpathfs/control"
	"github.com/mpathfs/mpathfs/mpath"
	"github.com/mpathfs/mpathfs/nmp"
	"github.com/mpathfs/mpathfs/scsi"
)

// labArray is a simulated array in front of a device's store.
type labArray struct {
	arr  *array.Array
	cfg  array.ArrayConfig
	ctrl map[uint16]int // port -> controller index
}

// decodeArray reads a device's `array:` section strictly.
func decodeArray(dc DeviceConfig) (*array.ArrayConfig, error) {
	if dc.Array == nil {
		return nil, nil
	}
	b, err := yaml.Marshal(dc.Array)
	if err != nil {
		return nil, err
	}
	var ac array.ArrayConfig
	dec := yaml.NewDecoder(strings.NewReader(string(b)))
	dec.KnownFields(true)
	if err := dec.Decode(&ac); err != nil {
		return nil, err
	}
	if ac.Name == "" {
		ac.Name = dc.Name
	}
	if ac.Vendor == "" {
		ac.Vendor = "MPATHFS"
	}
	if ac.Model == "" {
		if ac.Mode == array.ModeAP {
			ac.Model = "AP-ARRAY"
		} else {
			ac.Model = "ALUA-ARRAY"
		}
	}
	if ac.WWID == "" {
		ac.WWID = dc.WWID
	}
	if err := ac.Validate(); err != nil {
		return nil, err
	}
	return &ac, nil
}

func newArrayFor(dc DeviceConfig) (*labArray, error) {
	ac, err := decodeArray(dc)
	if err != nil || ac == nil {
		return nil, err
	}
	arr, err := array.New(*ac)
	if err != nil {
		return nil, err
	}
	la := &labArray{arr: arr, cfg: arr.Config(), ctrl: map[uint16]int{}}
	for i, c := range la.cfg.Controllers {
		for _, p := range c.Ports {
			la.ctrl[p] = i
		}
	}
	return la, nil
}

// port puts the path behind the array's target port it names.
func (a *labArray) port(pc PathConfig, b backends.Backend, loc mpath.Location) (backends.Backend, mpath.Location, error) {
	if pc.Port == 0 {
		return nil, loc, fmt.Errorf("the device has an array: give the path a port: (one of %v)", a.arr.Ports())
	}
	p, err := a.arr.NewPort(uint16(pc.Port), b)
	if err != nil {
		return nil, loc, err
	}
	if pc.Location == "" {
		loc.Target = a.ctrl[uint16(pc.Port)]
	}
	return p, loc, nil
}

func (a *labArray) Close() error { return a.arr.Close() }

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
	dc := DeviceConfig{Name: "lab", Size: "1G", WWID: "naa.600d0230000000000000000000001ab1", Array: &node}
	// vmhba1 -> ports 1 (A) and 3 (B); vmhba2 -> ports 2 (A) and 4 (B).
	for _, p := range []struct {
		hba, port int
	}{{1, 1}, {1, 3}, {2, 2}, {2, 4}} {
		target := 0
		if p.port > 2 {
			target = 1
		}
		dc.Paths = append(dc.Paths, PathConfig{URI: store, Port: p.port, Location: fmt.Sprintf("vmhba%d:C0:T%d:L0", p.hba, target)})
	}
	return &Config{StateDir: stateDir, Devices: []DeviceConfig{dc}}
}

// claimedByNMP runs the default claim rules for a path that arrives later
// (hotplug): false when a rule gives it to another plugin.
func claimedByNMP(p *mpath.Path) (bool, string) {
	claims := currentClaims()
	r, ok := claims.Match(mpath.AttrsOf(p))
	if !ok {
		return false, "no claim rule matched"
	}
	return r.Plugin == nmp.MPPName, fmt.Sprintf("claim rule %d: %s", r.ID, r.Plugin)
}

// ArrayRequest is the body of POST /v1/array (the shape scenario files send).
type ArrayRequest struct {
	Array      string `json:"array"`
	Action     string `json:"action"` // controller-fail, controller-restore, transfer-ownership, tpg-state
	Controller string `json:"controller,omitempty"`
	TPG        *int   `json:"tpg,omitempty"`
	State      string `json:"state,omitempty"`
}

// parseALUAState accepts AO/ANO/S/U/O/T, the full names, and the
// hyphenated forms (active-optimized).
func parseALUAState(s string) (scsi.State, error) {
	if st, err := scsi.ParseState(s); err == nil {
		return st, nil
	}
	return scsi.ParseState(strings.ReplaceAll(strings.ToLower(s), "-", "/"))
}

func init() {
	runtimeHooks = append(runtimeHooks, registerArrayEndpoints)
	extraCommands = append(extraCommands,
		command{"array", "array status | fail|restore ARRAY CONTROLLER | transfer ARRAY CONTROLLER | set-tpg ARRAY TPG STATE", cmdArray},
		command{"claimrule", "claimrule list [--json]: the claim rules", cmdClaimRules},
		command{"satp", "satp list | satp rule list [--json]: SATPs with default PSPs, SATP rules", cmdSATP},
		command{"psp", "psp list [--json]: path selection plugins", cmdPSP},
		command{"explain", "explain DEVICE [--json]: which claim rule and SATP rule matched, and where each option came from", cmdExplain},
	)
}

func registerArrayEndpoints(rt *control.Runtime, b *built, cfg *Config) error {
	rt.Handle("GET /v1/arrays", func(w http.ResponseWriter, req *http.Request) {
		out := map[string]array.Status{}
		for name, a := range b.arrays {
			out[name] = a.arr.Status()
		}
		control.Reply(w, map[string]any{"arrays": out})
	})
	rt.Handle("POST /v1/array", func(w http.ResponseWriter, req *http.Request) {
		var r ArrayRequest
		if err := control.Decode(req, &r); err != nil {
			control.ReplyError(w, err)
			return
		}
		a, ok := b.arrays[r.Array]
		if !ok {
			names := make([]string, 0, len(b.arrays))
			for n := range b.arrays {
				names = append(names, n)
			}
			sort.Strings(names)
			control.ReplyError(w, fmt.Errorf("no array %q (arrays: %v)", r.Array, names))
			return
		}
		var err error
		switch r.Action {
		case "controller-fail", "fail":
			err = a.arr.FailController(r.Controller)
		case "controller-restore", "restore":
			err = a.arr.RestoreController(r.Controller)
		case "transfer-ownership", "transfer":
			err = a.arr.TransferOwnership(r.Controller)
		case "tpg-state", "set-tpg":
			if r.TPG == nil {
				err = fmt.Errorf("tpg-state needs a tpg")
				break
			}
			var st scsi.State
			if st, err = parseALUAState(r.State); err == nil {
				err = a.arr.ForceTPGState(uint16(*r.TPG), st)
			}
		default:
			err = fmt.Errorf("unknown array action %q (want controller-fail, controller-restore, transfer-ownership or tpg-state)", r.Action)
		}
		if err != nil {
			control.ReplyError(w, err)
			return
		}
		if rt.Events != nil {
			rt.Events.Publish(mpath.Event{Time: time.Now(), Kind: "array", Device: r.Array, To: r.Action + " " + r.Controller, Reason: a.arr.Status().String()})
		}
		control.Reply(w, a.arr.Status())
	})
	rt.Handle("GET /v1/explain", func(w http.ResponseWriter, req *http.Request) {
		name := req.URL.Query().Get("device")
		e, ok := b.explain[name]
		if !ok {
			control.ReplyError(w, fmt.Errorf("no device %q", name))
			return
		}
		control.Reply(w, e)
	})
	rt.Handle("GET /v1/claimrules", func(w http.ResponseWriter, req *http.Request) {
		control.Reply(w, map[string]any{"claimrules": b.claims.List()})
	})
	rt.Handle("GET /v1/satprules", func(w http.ResponseWriter, req *http.Request) {
		control.Reply(w, map[string]any{"satprules": b.satpRules.List()})
	})
	return nil
}

func cmdArray(args []string, stdout io.Writer) error {
	fs := newFlags("array", "array status [--json] | array fail|restore|transfer ARRAY CONTROLLER | array set-tpg ARRAY TPG STATE")
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
		var out struct {
			Arrays map[string]array.Status `json:"arrays"`
		}
		if err := c.Get(ctx, "/v1/arrays", &out); err != nil {
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
	r := ArrayRequest{}
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
		if _, err := parseALUAState(pos[3]); err != nil {
			return usageError{err.Error()}
		}
		r.Array, r.Action, r.TPG, r.State = pos[1], "tpg-state", &id, pos[3]
	default:
		return usagef("unknown array subcommand %q (want status, fail, restore, transfer or set-tpg)", pos[0])
	}
	var st array.Status
	if err := c.Post(ctx, "/v1/array", r, &st); err != nil {
		return err
	}
	if *asJSON {
		return printJSON(stdout, st)
	}
	fmt.Fprintf(stdout, "%s: %s\n", r.Array, st.String())
	return nil
}

// rules: from the mount when one answers, else the built-in defaults.
func fetchOr[T any](ctl, path string, local func() T) (T, error) {
	var out T
	sock := control.SocketPath(ctl)
	if _, err := os.Stat(sock); err == nil {
		c, err := control.Dial(sock)
		if err == nil {
			if err := c.Get(context.Background(), path, &out); err == nil {
				return out, nil
			}
		}
	}
	return local(), nil
}

func cmdClaimRules(args []string, stdout io.Writer) error {
	fs := newFlags("claimrule list", "claimrule list [--json] [--control S]")
	ctl := fs.String("control", "", "control socket (without a mount: the default rules)")
	asJSON := fs.Bool("json", false, "print JSON")
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if len(pos) > 0 && pos[0] != "list" {
		return usagef("want claimrule list")
	}
	out, _ := fetchOr(*ctl, "/v1/claimrules", func() struct {
		Claimrules []mpath.Rule `json:"claimrules"`
	} {
		return struct {
			Claimrules []mpath.Rule `json:"claimrules"`
		}{currentClaims().List()}
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

func cmdSATP(args []string, stdout io.Writer) error {
	fs := newFlags("satp", "satp list | satp rule list [--json] [--control S]")
	ctl := fs.String("control", "", "control socket")
	asJSON := fs.Bool("json", false, "print JSON")
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if len(pos) >= 1 && pos[0] == "rule" {
		out, _ := fetchOr(*ctl, "/v1/satprules", func() struct {
			Satprules []nmp.SATPRule `json:"satprules"`
		} {
			return struct {
				Satprules []nmp.SATPRule `json:"satprules"`
			}{nmp.DefaultSATPRules().List()}
		})
		if *asJSON {
			return printJSON(stdout, out)
		}
		tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "Name\tVendor\tModel\tTransport\tClaim Options\tDefault PSP\tRule Group\tDescription")
		for _, r := range out.Satprules {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", r.SATP, r.Vendor, r.Model, r.Transport, r.ClaimOptions, r.PSP, r.Group, r.Description)
		}
		return tw.Flush()
	}
	if len(pos) > 0 && pos[0] != "list" {
		return usagef("want satp list or satp rule list")
	}
	list := nmp.SATPs()
	if *asJSON {
		return printJSON(stdout, map[string]any{"satps": list})
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "Name\tDefault PSP\tDescription")
	for _, s := range list {
		fmt.Fprintf(tw, "%s\t%s\t%s\n", s.Name, s.DefaultPSP, s.Description)
	}
	return tw.Flush()
}

func cmdPSP(args []string, stdout io.Writer) error {
	fs := newFlags("psp", "psp list [--json]")
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
	fs := newFlags("explain", "explain [--json] [--control S] DEVICE")
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
	var e nmp.Explanation
	if err := c.Get(context.Background(), control.Endpoint("/v1/explain", "device", pos[0]), &e); err != nil {
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
