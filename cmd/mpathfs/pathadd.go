package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/mpathfs/mpathfs/backends"
	"github.com/mpathfs/mpathfs/backends/fault"
	"github.com/mpathfs/mpathfs/control"
	"github.com/mpathfs/mpathfs/mpath"
)

// `mpathfs path add DEVICE URI`: a path joins a running device, after the
// same checks as at mount — the claim rules, size and identity (label,
// native identity, sample blocks against a usable path of the device).

func init() {
	startHooks = append(startHooks, registerPathAdd)
}

// PathAddRequest is the body of POST /v1/path/add.
type PathAddRequest struct {
	Device string `json:"device"`
	URI    string `json:"uri"`
	Name   string `json:"name,omitempty"`
}

func registerPathAdd(ctx context.Context, rt *control.Runtime, cfg *Config, _ io.Writer) {
	rt.Handle("POST /v1/path/add", func(w http.ResponseWriter, req *http.Request) {
		var r PathAddRequest
		if err := control.Decode(req, &r); err != nil {
			control.ReplyError(w, err)
			return
		}
		st, err := addPath(ctx, rt, cfg, r)
		if err != nil {
			control.ReplyError(w, err)
			return
		}
		control.Reply(w, st)
	})
}

func addPath(ctx context.Context, rt *control.Runtime, cfg *Config, r PathAddRequest) (mpath.PathStatus, error) {
	d, err := rt.Device(r.Device)
	if err != nil {
		return mpath.PathStatus{}, err
	}
	var dc DeviceConfig
	for _, c := range cfg.Devices {
		if c.Name == d.Name() {
			dc = c
		}
	}
	if dc.Array != nil {
		return mpath.PathStatus{}, fmt.Errorf("device %s is served by a simulated array: its paths are its ports", d.Name())
	}
	clean, quiesce, err := mpath.SplitQuiesce(r.URI)
	if err != nil {
		return mpath.PathStatus{}, err
	}
	u, err := backends.ParseURI(clean)
	if err != nil {
		return mpath.PathStatus{}, err
	}
	for _, p := range d.Paths() {
		if p.URI == clean {
			return mpath.PathStatus{}, fmt.Errorf("device %s already has path %s (%s)", d.Name(), p.Name, clean)
		}
	}
	octx, cancel := context.WithTimeout(ctx, openTimeout)
	defer cancel()
	b, err := backends.Open(octx, clean)
	if err != nil {
		return mpath.PathStatus{}, fmt.Errorf("path %s: %v", clean, err)
	}
	lun, adapter := 0, 1
	for i, dd := range rt.Devices() {
		if dd == d {
			lun = i
		}
	}
	for _, p := range d.Paths() {
		adapter = max(adapter, p.Location.Adapter+1)
	}
	fb := fault.Wrap(b, uint64(lun)<<32|uint64(adapter))
	p := &mpath.Path{Name: r.Name, URI: clean, Location: mpath.Location{Adapter: adapter, LUN: lun}, Transport: u.Scheme, Backend: fb, Quiesce: quiesce}
	if strings.HasPrefix(u.Scheme, "nbd") {
		p.Transport = "nbd"
	}
	refuse := func(err error) (mpath.PathStatus, error) {
		fb.Close()
		return mpath.PathStatus{}, err
	}
	if inq, ok := backends.As[backends.Inquirer](b); ok && backends.Can(b, backends.CapInquiry) {
		if p.Inquiry, err = inq.Inquiry(octx); err != nil {
			return refuse(fmt.Errorf("path %s: inquiry: %v", clean, err))
		}
	}
	if assertable(p) {
		if dc.Vendor != "" {
			p.Inquiry.Vendor = dc.Vendor
		}
		if dc.Model != "" {
			p.Inquiry.Model = dc.Model
		}
		// Only an asserted wwid is adopted: a device formed by
		// --group-by-wwid took its WWID from its paths.
		if dc.WWID != "" && !dc.wwidReported {
			p.Inquiry.WWID = dc.WWID
			if _, err := checkLabel(octx, dc, clean, b); err != nil {
				return refuse(err)
			}
		}
		// An identity that is not the path's own is proven against a
		// path in service, or not at all.
		if len(d.View().Usable) == 0 {
			return refuse(fmt.Errorf("device %s has no usable path to check the identity of %s against: add it when a path is up", d.Name(), clean))
		}
	}
	if ok, rule := claimedByNMP(p); !ok {
		return refuse(fmt.Errorf("path %s is not claimed by NMP (%s)", clean, rule))
	}
	if err := d.VerifyPath(octx, p); err != nil {
		return refuse(fmt.Errorf("device %s: refusing %s: %v", d.Name(), clean, err))
	}
	if err := d.AddPath(p); err != nil {
		return refuse(err)
	}
	rt.AddFault(p.Name, fb)
	if rt.Events != nil {
		rt.Events.Publish(mpath.Event{Time: time.Now(), Kind: "path-add", Device: d.Name(), Path: p.Name, To: p.State().String(), Reason: "path add " + clean})
	}
	return p.Status(), nil
}

// cmdPathAdd is `mpathfs path add DEVICE URI`.
func cmdPathAdd(args []string, stdout io.Writer) error {
	fs := newFlags("path add", "path add [--name N] [--json] [--control S] DEVICE URI")
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
	var st mpath.PathStatus
	if err := c.Post(context.Background(), "/v1/path/add", PathAddRequest{Device: pos[0], URI: pos[1], Name: *name}, &st); err != nil {
		return err
	}
	if *asJSON {
		return printJSON(stdout, st)
	}
	fmt.Fprintf(stdout, "%s: path %s added (%s), state %s\n", pos[0], st.Name, st.URI, st.State)
	return nil
}

// checkLabel refuses a path whose file is labelled with another WWID than
// the device asserts; it reports whether the file carries the label.
func checkLabel(ctx context.Context, dc DeviceConfig, name string, b backends.Backend) (bool, error) {
	l, ok := backends.As[backends.Labeler](b)
	if !ok {
		return false, nil
	}
	got, err := l.Label(ctx)
	switch {
	case errors.Is(err, backends.ErrNoLabel), errors.Is(err, backends.ErrLabelsUnsupported):
		return false, nil
	case err != nil:
		return false, fmt.Errorf("device %s path %s: reading its label: %v", dc.Name, name, err)
	}
	if got != dc.WWID {
		return false, fmt.Errorf("device %s path %s: its file is labelled %q (%s) but the device's wwid is %q: the path leads to a different store; fix the path list, or relabel the file with `mpathfs label --force --wwid %s FILE` if the label is wrong",
			dc.Name, name, got, backends.LabelXattr, dc.WWID, dc.WWID)
	}
	return true, nil
}
