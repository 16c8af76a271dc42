package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"sync"
	"time"

	"github.com/mpathfs/mpathfs/control"
	"github.com/mpathfs/mpathfs/fusedev"
	"github.com/mpathfs/mpathfs/integrity"
	"github.com/mpathfs/mpathfs/nmp"
)

// `mpathfs mount --verify` puts the integrity oracle between FUSE and each
// device; GET /v1/verify?device=D runs its check; `mpathfs verify DEVICE`
// prints the report and fails on any problem.

func init() {
	extraCommands = append(extraCommands, command{"verify", "verify [--json] DEVICE: integrity check of a mount --verify device", cmdVerify})
	runtimeHooks = append(runtimeHooks, verifyRuntimeHook)
}

// verifyWrites is set by `mount --verify`.
var verifyWrites bool

var oracles struct {
	sync.Mutex
	m map[string]*integrity.Oracle
}

// fuseDevice is what FUSE serves for a device: the device itself, or with
// --verify the oracle around it.
func fuseDevice(d *nmp.Device) fusedev.Device {
	if !verifyWrites {
		return d
	}
	o := integrity.New(d, integrity.Options{Paths: integrity.PathReaders(d.Paths)})
	oracles.Lock()
	if oracles.m == nil {
		oracles.m = map[string]*integrity.Oracle{}
	}
	oracles.m[d.Name()] = o
	oracles.Unlock()
	return o
}

func verifyRuntimeHook(rt *control.Runtime, b *built, cfg *Config) error {
	rt.Handle("GET /v1/verify", func(w http.ResponseWriter, req *http.Request) {
		name := req.URL.Query().Get("device")
		oracles.Lock()
		o := oracles.m[name]
		oracles.Unlock()
		if o == nil {
			if _, err := rt.Device(name); err != nil {
				control.ReplyError(w, err)
				return
			}
			control.ReplyError(w, fmt.Errorf("device %s has no integrity oracle: mount with --verify", name))
			return
		}
		rep, err := o.Check(req.Context())
		if err != nil {
			control.ReplyError(w, err)
			return
		}
		control.Reply(w, rep)
	})
	return nil
}

func cmdVerify(args []string, stdout io.Writer) error {
	fs := newFlags("verify", "verify [--json] [--control S] DEVICE")
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
	var rep integrity.Report
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute) // a big device takes a while
	defer cancel()
	if err := c.Get(ctx, "/v1/verify?device="+url.QueryEscape(pos[0]), &rep); err != nil {
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
