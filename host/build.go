package host

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/mpathfs/mpathfs/backends"
	"github.com/mpathfs/mpathfs/backends/fault"
	"github.com/mpathfs/mpathfs/mpath"
	"github.com/mpathfs/mpathfs/nmp"
)

// Build makes every device of a configuration, in order. It stops at the
// first error, leaving the devices made so far in the host (Close takes
// them down): a mount closes the host and makes nothing half.
func (h *Host) Build(ctx context.Context, devices []DeviceConfig) error {
	h.mu.Lock()
	h.built = append(h.built, devices...)
	h.mu.Unlock()
	for _, dc := range devices {
		if err := h.AddDevice(ctx, dc); err != nil {
			return err
		}
	}
	return nil
}

// opened is one path of a device being made.
type opened struct {
	p   *mpath.Path
	raw backends.Backend // the path's own backend (under the injector)
	fb  *fault.Backend
	uri string
}

// AddDevice makes one device: it opens every path (creating missing file
// stores of dc.Size), puts each behind the device's simulated array if it
// has one, wraps it in a fault injector, reads its identity, runs the
// claim rules, checks that the claimed paths lead to one store, and hands
// them to the MPP the claim rule names. On an error everything it opened
// is closed again.
func (h *Host) AddDevice(ctx context.Context, dc DeviceConfig) (err error) {
	h.mu.RLock()
	di := len(h.members)
	h.mu.RUnlock()
	var open []opened
	var arr *labArray
	var share *shareLock
	defer func() {
		if err == nil {
			return
		}
		share.release() // first: the LU lock is cleared through the paths
		for _, o := range open {
			o.fb.Close()
		}
		if arr != nil {
			arr.Close()
		}
	}()
	if dc.Size != "" {
		size, _ := ParseSize(dc.Size)
		for _, pc := range dc.Paths {
			if err := ensureStore(pc.URI, size); err != nil {
				return fmt.Errorf("device %s: creating store for %s: %v", dc.Name, pc.URI, err)
			}
		}
	}
	if arr, err = newArrayFor(dc); err != nil {
		return fmt.Errorf("device %s: array: %v", dc.Name, err)
	}
	for pi, pc := range dc.Paths {
		o, err := h.openConfigured(ctx, dc, arr, di, pi, pc)
		if err != nil {
			return err
		}
		open = append(open, o)
	}

	// The claim rules decide which plugin gets each path; the device goes
	// to the plugin of its first claimed path.
	all := make([]*mpath.Path, len(open))
	for i, o := range open {
		all[i] = o.p
	}
	byPlugin, _ := h.claims.Claim(all)
	var mpp mpath.MPP
	for _, p := range all {
		for plugin, ps := range byPlugin {
			if mpp == nil && contains(ps, p) {
				if m, lerr := mpath.LookupMPP(plugin); lerr == nil {
					mpp = m
				}
			}
		}
	}
	var claimed []opened
	var masked []string
	for _, o := range open {
		if mpp != nil && contains(byPlugin[mpp.Name()], o.p) {
			claimed = append(claimed, o)
			continue
		}
		why := "no claim rule matched"
		rule, ok := h.claims.Match(mpath.AttrsOf(o.p))
		if ok {
			why = fmt.Sprintf("claim rule %d gives it to %s", rule.ID, rule.Plugin)
		}
		masked = append(masked, fmt.Sprintf("%s path %s (%s): %s", dc.Name, o.p.Location.RuntimeName(), o.uri, why))
		h.keepOffline(dc.Name, o.p, rule, why)
		o.fb.Close()
	}
	open = claimed
	h.mu.Lock()
	h.masked = append(h.masked, masked...)
	allMasked := append([]string(nil), h.masked...)
	h.mu.Unlock()
	if len(open) == 0 {
		return fmt.Errorf("device %s: every path is masked by the claim rules (%s)", dc.Name, strings.Join(allMasked, "; "))
	}

	// The stores are locked before anything reads or labels them: a host
	// that is refused has done nothing to them.
	if share, err = h.lockStores(dc, open); err != nil {
		return err
	}
	if dc.locksLU() {
		if err = h.lockLU(ctx, share, dc, open); err != nil {
			return err
		}
	}

	paths := make([]*mpath.Path, len(open))
	checks := make([]nmp.StorePath, len(open)) // the paths' own backends, for the identity check
	for i, o := range open {
		paths[i] = o.p
		checks[i] = nmp.StorePath{Name: o.uri, Backend: o.raw}
	}
	var notes []string
	if arr == nil {
		if notes, err = h.checkIdentity(ctx, dc, paths, checks); err != nil {
			return err
		}
	}
	user := dc.engineConfig()
	if share.ats != nil {
		user.HiddenTail = int64(share.ats.block)
	}
	e, err := nmp.Explain(h.claims, h.satpRules, dc.Name, mpath.AttrsOf(paths[0]), paths[0].Inquiry.TPGS, user)
	if err != nil {
		return fmt.Errorf("device %s: %v", dc.Name, err)
	}
	e.Path = paths[0].Location.RuntimeName()
	if paths[0].Name != "" {
		e.Path = paths[0].Name
	}
	user.SATP, user.SATPOptions, user.PSP, user.PSPOptions = e.Config.SATP, e.Config.SATPOptions, e.Config.PSP, e.Config.PSPOptions
	md, err := mpp.NewDevice(user, paths, h.events)
	if err != nil {
		return err
	}
	d, ok := md.(Device)
	if !ok {
		md.Close()
		return fmt.Errorf("device %s: plugin %s makes devices the host cannot administer (%T)", dc.Name, mpp.Name(), md)
	}
	faults := map[string]*fault.Backend{}
	for _, o := range open {
		faults[o.p.Name] = o.fb
	}
	open = nil // the device owns its paths now
	if err := h.adopt(&member{dev: d, cfg: dc, explain: &e, share: share}, faults); err != nil {
		d.Close()
		return err
	}
	share = nil // the member holds the locks now
	h.mu.Lock()
	h.notes = append(h.notes, notes...)
	if arr != nil {
		h.arrays[arr.cfg.Name] = arr
		h.closers = append(h.closers, arr.Close)
	}
	h.mu.Unlock()
	arr = nil
	return nil
}

func contains(ps []*mpath.Path, p *mpath.Path) bool {
	for _, q := range ps {
		if q == p {
			return true
		}
	}
	return false
}

// openConfigured opens path pi of device di as configured.
func (h *Host) openConfigured(ctx context.Context, dc DeviceConfig, arr *labArray, di, pi int, pc PathConfig) (opened, error) {
	// The quiesce time is the NMP's, not the backend's: the opener
	// never sees it.
	clean, quiesce, err := mpath.SplitQuiesce(WithInitiator(pc.URI, h.name))
	if err != nil {
		return opened{}, fmt.Errorf("device %s: %v", dc.Name, err)
	}
	if quiesce == 0 {
		quiesce = time.Duration(pc.Quiesce)
	}
	octx, cancel := context.WithTimeout(ctx, h.openTimeout)
	defer cancel()
	b, err := backends.Open(octx, clean)
	if err != nil {
		return opened{}, fmt.Errorf("device %s path %s: %v", dc.Name, clean, err)
	}
	u, _ := backends.ParseURI(clean)
	loc := mpath.Location{Adapter: pi + 1, LUN: di}
	if pc.Location != "" {
		loc, _ = mpath.ParseLocation(pc.Location)
	}
	if arr != nil {
		port, ploc, err := arr.port(pc, b, loc)
		if err != nil {
			b.Close()
			return opened{}, fmt.Errorf("device %s path %s: %v", dc.Name, clean, err)
		}
		b, loc = port, ploc
	}
	fb := fault.Wrap(b, uint64(di)<<32|uint64(pi)+1)
	o := opened{p: &mpath.Path{Name: pc.Name, URI: clean, Location: loc, Transport: transportOf(u.Scheme), Backend: fb, Quiesce: quiesce}, raw: b, fb: fb, uri: clean}
	fail := func(err error) (opened, error) {
		fb.Close()
		return opened{}, err
	}
	if inq, ok := backends.As[backends.Inquirer](b); ok && backends.Can(b, backends.CapInquiry) {
		o.p.Inquiry, err = inq.Inquiry(octx)
		if err != nil {
			return fail(fmt.Errorf("device %s path %s: inquiry: %v", dc.Name, clean, err))
		}
	}
	// File, loop and NBD paths carry no identity of their own (a file's
	// is synthetic, from its device and inode, and differs between two
	// mounts of one file): they adopt the configured identity, which
	// checkIdentity then checks.
	if arr == nil && assertable(o.p) {
		if dc.Vendor != "" {
			o.p.Inquiry.Vendor = dc.Vendor
		}
		if dc.Model != "" {
			o.p.Inquiry.Model = dc.Model
		}
		if dc.WWID != "" {
			o.p.Inquiry.WWID = dc.WWID
		}
	}
	o.p.Rank.Store(int32(pc.Rank))
	for _, f := range pc.Faults {
		spec, _ := fault.ParseArgs(strings.Fields(f))
		if _, err := fb.Inject(spec); err != nil {
			return fail(fmt.Errorf("device %s path %s: fault %q: %v", dc.Name, clean, f, err))
		}
	}
	return o, nil
}

// transportOf is a path's transport from its URI scheme (nbd+unix is nbd).
func transportOf(scheme string) string {
	if strings.HasPrefix(scheme, "nbd") {
		return "nbd"
	}
	return scheme
}
