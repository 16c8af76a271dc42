package main

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/mpathfs/mpathfs/backends"
	"github.com/mpathfs/mpathfs/backends/fault"
	"github.com/mpathfs/mpathfs/control"
	"github.com/mpathfs/mpathfs/mpath"
	"github.com/mpathfs/mpathfs/nmp"
)

// openTimeout bounds opening one path (an unreachable NBD server).
const openTimeout = 15 * time.Second

// built is what a config turned into: devices, their fault injectors, and
// the closers of whatever was opened.
type built struct {
	devices   []*nmp.Device
	faults    []map[string]*fault.Backend
	extra     []func() error // closed after the devices
	arrays    map[string]*labArray
	explain   map[string]nmp.Explanation
	claims    *mpath.ClaimRules
	satpRules *nmp.SATPRules
	masked    []string
	// notes say how each device's paths were shown to lead to one store
	// (identity.go's checks), for the mount's output.
	notes []string
}

var claimsInUse struct {
	sync.Mutex
	c *mpath.ClaimRules
}

// currentClaims are the claim rules of the running mount (the defaults
// before one is built).
func currentClaims() *mpath.ClaimRules {
	claimsInUse.Lock()
	defer claimsInUse.Unlock()
	if claimsInUse.c == nil {
		return mpath.DefaultClaimRules()
	}
	return claimsInUse.c
}

// rules makes the claim and SATP rules: the defaults plus the config's.
func rules(cfg *Config) (*mpath.ClaimRules, *nmp.SATPRules, error) {
	claims := mpath.DefaultClaimRules()
	for _, r := range cfg.ClaimRules {
		rule, err := mpath.ParseRule(r)
		if err != nil {
			return nil, nil, err
		}
		if err := claims.Add(rule); err != nil {
			return nil, nil, fmt.Errorf("claim_rules: %v", err)
		}
	}
	satpRules := nmp.DefaultSATPRules()
	for i, r := range cfg.SATPRules {
		if err := satpRules.Add(r); err != nil {
			return nil, nil, fmt.Errorf("satp_rules[%d]: %v", i, err)
		}
	}
	return claims, satpRules, nil
}

func (b *built) Close() {
	for _, d := range b.devices {
		d.Close()
	}
	for _, c := range b.extra {
		c()
	}
}

// build opens every path of every device and makes the devices. On any
// error everything opened so far is closed again: nothing half-applied.
func build(ctx context.Context, cfg *Config, events *mpath.Events) (_ *built, err error) {
	out := &built{arrays: map[string]*labArray{}, explain: map[string]nmp.Explanation{}}
	var opened []backends.Backend
	var err0 error
	if out.claims, out.satpRules, err0 = rules(cfg); err0 != nil {
		return nil, err0
	}
	claimsInUse.Lock()
	claimsInUse.c = out.claims
	claimsInUse.Unlock()
	defer func() {
		if err != nil {
			out.Close()
			for _, b := range opened {
				b.Close()
			}
		}
	}()
	for di, dc := range cfg.Devices {
		if dc.Size != "" {
			size, _ := ParseSize(dc.Size)
			for _, pc := range dc.Paths {
				if err := ensureStore(pc.URI, size); err != nil {
					return nil, fmt.Errorf("device %s: creating store for %s: %v", dc.Name, pc.URI, err)
				}
			}
		}
		arr, err := newArrayFor(dc)
		if err != nil {
			return nil, fmt.Errorf("device %s: array: %v", dc.Name, err)
		}
		if arr != nil {
			out.extra = append(out.extra, arr.Close)
			out.arrays[arr.cfg.Name] = arr
		}
		var paths []*mpath.Path
		var checks []nmp.StorePath // the paths' own backends, for the identity check
		injectors := map[string]*fault.Backend{}
		for pi, pc := range dc.Paths {
			// The quiesce time is the NMP's, not the backend's: the
			// opener never sees it.
			clean, quiesce, err := mpath.SplitQuiesce(pc.URI)
			if err != nil {
				return nil, fmt.Errorf("device %s: %v", dc.Name, err)
			}
			if quiesce == 0 {
				quiesce = time.Duration(pc.Quiesce)
			}
			pc.URI = clean
			octx, cancel := context.WithTimeout(ctx, openTimeout)
			b, err := backends.Open(octx, pc.URI)
			cancel()
			if err != nil {
				return nil, fmt.Errorf("device %s path %s: %v", dc.Name, pc.URI, err)
			}
			opened = append(opened, b)
			u, _ := backends.ParseURI(pc.URI)
			loc := mpath.Location{Adapter: pi + 1, LUN: di}
			if pc.Location != "" {
				loc, _ = mpath.ParseLocation(pc.Location)
			}
			if arr != nil {
				b, loc, err = arr.port(pc, b, loc)
				if err != nil {
					return nil, fmt.Errorf("device %s path %s: %v", dc.Name, pc.URI, err)
				}
			}
			fb := fault.Wrap(b, uint64(di)<<32|uint64(pi)+1)
			p := &mpath.Path{Name: pc.Name, URI: pc.URI, Location: loc, Transport: u.Scheme, Backend: fb, Quiesce: quiesce}
			if strings.HasPrefix(u.Scheme, "nbd") {
				p.Transport = "nbd"
			}
			if inq, ok := backends.As[backends.Inquirer](b); ok && backends.Can(b, backends.CapInquiry) {
				ictx, cancel := context.WithTimeout(ctx, openTimeout)
				p.Inquiry, err = inq.Inquiry(ictx)
				cancel()
				if err != nil {
					return nil, fmt.Errorf("device %s path %s: inquiry: %v", dc.Name, pc.URI, err)
				}
			}
			// File, loop and NBD paths carry no identity of their own (a
			// file's is synthetic, from its device and inode, and differs
			// between two mounts of one file): they adopt the configured
			// identity, which checkIdentity below then checks.
			if arr == nil && assertable(p) {
				if dc.Vendor != "" {
					p.Inquiry.Vendor = dc.Vendor
				}
				if dc.Model != "" {
					p.Inquiry.Model = dc.Model
				}
				if dc.WWID != "" {
					p.Inquiry.WWID = dc.WWID
				}
			}
			p.Rank.Store(int32(pc.Rank))
			for _, f := range pc.Faults {
				spec, _ := fault.ParseArgs(strings.Fields(f))
				if _, err := fb.Inject(spec); err != nil {
					return nil, fmt.Errorf("device %s path %s: fault %q: %v", dc.Name, pc.URI, f, err)
				}
			}
			// The claim rules decide which plugin gets the path.
			if rule, ok := out.claims.Match(mpath.AttrsOf(p)); !ok || rule.Plugin != nmp.MPPName {
				why := "no claim rule matched"
				if ok {
					why = fmt.Sprintf("claim rule %d gives it to %s", rule.ID, rule.Plugin)
				}
				out.masked = append(out.masked, fmt.Sprintf("%s path %s (%s): %s", dc.Name, p.Location.RuntimeName(), pc.URI, why))
				fb.Close()
				opened = opened[:len(opened)-1]
				continue
			}
			paths = append(paths, p)
			checks = append(checks, nmp.StorePath{Name: pc.URI, Backend: b})
		}
		if len(paths) == 0 {
			return nil, fmt.Errorf("device %s: every path is masked by the claim rules (%s)", dc.Name, strings.Join(out.masked, "; "))
		}
		if arr == nil {
			notes, err := checkIdentity(ctx, dc, paths, checks)
			if err != nil {
				return nil, err
			}
			out.notes = append(out.notes, notes...)
		}
		user := dc.toDeviceConfig()
		e, err := nmp.Explain(out.claims, out.satpRules, dc.Name, mpath.AttrsOf(paths[0]), paths[0].Inquiry.TPGS, user)
		if err != nil {
			return nil, fmt.Errorf("device %s: %v", dc.Name, err)
		}
		e.Path = paths[0].Location.RuntimeName()
		if paths[0].Name != "" {
			e.Path = paths[0].Name
		}
		user.SATP, user.SATPOptions, user.PSP, user.PSPOptions = e.Config.SATP, e.Config.SATPOptions, e.Config.PSP, e.Config.PSPOptions
		out.explain[dc.Name] = e
		d, err := nmp.NewDevice(user, paths, events)
		if err != nil {
			return nil, err
		}
		opened = opened[:0] // the device owns its paths now
		for _, p := range paths {
			injectors[p.Name] = p.Backend.(*fault.Backend)
		}
		out.devices = append(out.devices, d)
		out.faults = append(out.faults, injectors)
	}
	return out, nil
}

// register hands the built devices to the control runtime.
func (b *built) register(rt *control.Runtime) {
	for i, d := range b.devices {
		rt.AddDevice(d, b.faults[i])
	}
}
