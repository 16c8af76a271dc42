package host

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/mpathfs/mpathfs/backends/fault"
	"github.com/mpathfs/mpathfs/iscsi"
	"github.com/mpathfs/mpathfs/mpath"
)

// Adapters (ESXi's vmhbaN) are not configured: they are derived from the
// paths' runtime names (vmhbaA:C0:Tt:Ll), so an adapter exists while a
// path runs through it. Failing one injects a path-failure fault on each
// of its paths through the fault layer — as a lost HBA or fabric link
// fails every path through it at once — and remembers the faults as the
// adapter's, so restoring it clears exactly those and no fault the
// operator injected by hand. Resetting one gives each of its paths a unit
// attention 06/29/00 (power on, reset) on its next I/O: a reset's UA storm.

// Adapter states.
const (
	AdapterOnline = "online" // at least one path through it is not dead
	AdapterFailed = "failed" // failed by the operator (`adapter fail`)
	AdapterDead   = "dead"   // every path through it is dead
)

// SenseResetUA is the sense of the unit attention an adapter reset leaves
// on each of its paths: 06/29/00, power on, reset or bus device reset
// occurred.
const SenseResetUA = "06/29/00"

// AdapterStatus is one adapter as `mpathfs adapter list` shows it.
type AdapterStatus struct {
	Name string `json:"name"` // vmhbaN
	// Host is the host the adapter belongs to (`mount --host`).
	Host  string `json:"host,omitempty"`
	State string `json:"state"`
	// Reason says why a failed adapter is failed.
	Reason string `json:"reason,omitempty"`
	Since  string `json:"since,omitempty"`
	// Paths counts the paths through the adapter, Dead those of them dead.
	Paths   int             `json:"paths"`
	Dead    int             `json:"dead"`
	Targets []AdapterTarget `json:"targets"`
	// Devices are the devices the adapter reaches, in name order.
	Devices []string `json:"devices"`
}

// AdapterTarget is one target (vmhbaA:Cc:Tt) of an adapter and its paths.
type AdapterTarget struct {
	Name  string        `json:"name"`
	Paths []AdapterPath `json:"paths"`
}

// AdapterPath is one path through an adapter.
type AdapterPath struct {
	Name     string `json:"name"`
	Device   string `json:"device"`
	Location string `json:"location"`
	State    string `json:"state"`
	URI      string `json:"uri"`
}

// adapterFault is a fault an adapter's failure injected on one path.
type adapterFault struct {
	fb           *fault.Backend
	id           int
	device, path string
}

// adapterFailure is a failed adapter: why, since when, and its faults.
type adapterFailure struct {
	reason string
	since  time.Time
	faults []adapterFault
}

// adapterPath is a path through an adapter with its device.
type adapterPath struct {
	dev Device
	p   *mpath.Path
}

// AdapterName is the adapter of a location: vmhbaN.
func AdapterName(l mpath.Location) string { return fmt.Sprintf("vmhba%d", l.Adapter) }

// adapterPaths groups every path of every device by adapter.
func (h *Host) adapterPaths() map[string][]adapterPath {
	out := map[string][]adapterPath{}
	for _, d := range h.Devices() {
		for _, p := range d.Paths() {
			a := AdapterName(p.Location)
			out[a] = append(out[a], adapterPath{dev: d, p: p})
		}
	}
	return out
}

// adapterNames sorts adapter names by their number.
func adapterNames[V any](m map[string]V) []string {
	names := make([]string, 0, len(m))
	for n := range m {
		names = append(names, n)
	}
	slices.SortFunc(names, func(a, b string) int {
		if len(a) != len(b) {
			return len(a) - len(b)
		}
		return strings.Compare(a, b)
	})
	return names
}

// Adapters lists the adapters the paths run through, by number.
func (h *Host) Adapters() []AdapterStatus {
	all := h.adapterPaths()
	h.mu.RLock()
	failed := map[string]adapterFailure{}
	for n, f := range h.adapters {
		failed[n] = *f
	}
	h.mu.RUnlock()
	// A failed adapter whose paths all left is still shown: it is failed.
	for n := range failed {
		if _, ok := all[n]; !ok {
			all[n] = nil
		}
	}
	out := []AdapterStatus{}
	for _, n := range adapterNames(all) {
		f, isFailed := failed[n]
		st := adapterStatus(n, all[n], f, isFailed)
		st.Host = h.name
		out = append(out, st)
	}
	return out
}

func adapterStatus(name string, paths []adapterPath, f adapterFailure, failed bool) AdapterStatus {
	st := AdapterStatus{Name: name, Targets: []AdapterTarget{}, Devices: []string{}}
	targets := map[string]int{}
	for _, ap := range paths {
		loc := ap.p.Location
		tn := fmt.Sprintf("%s:C%d:T%d", name, loc.Channel, loc.Target)
		i, ok := targets[tn]
		if !ok {
			i = len(st.Targets)
			targets[tn] = i
			st.Targets = append(st.Targets, AdapterTarget{Name: tn})
		}
		state := ap.p.State()
		st.Targets[i].Paths = append(st.Targets[i].Paths, AdapterPath{Name: ap.p.Name, Device: ap.dev.Name(),
			Location: loc.RuntimeName(), State: state.String(), URI: ap.p.URI})
		st.Paths++
		if state == mpath.StateDead {
			st.Dead++
		}
		if !slices.Contains(st.Devices, ap.dev.Name()) {
			st.Devices = append(st.Devices, ap.dev.Name())
		}
	}
	slices.SortFunc(st.Targets, func(a, b AdapterTarget) int { return strings.Compare(a.Name, b.Name) })
	slices.Sort(st.Devices)
	switch {
	case failed:
		st.State, st.Reason, st.Since = AdapterFailed, f.reason, f.since.Format(time.RFC3339)
	case st.Paths > 0 && st.Dead == st.Paths:
		st.State = AdapterDead
	default:
		st.State = AdapterOnline
	}
	return st
}

// Adapter returns one adapter's status; an unknown adapter is ErrNotFound
// and the error lists the known ones.
func (h *Host) Adapter(name string) (AdapterStatus, error) {
	for _, a := range h.Adapters() {
		if a.Name == name {
			return a, nil
		}
	}
	return AdapterStatus{}, h.unknownAdapter(name)
}

func (h *Host) unknownAdapter(name string) error {
	known := []string{}
	for _, a := range h.Adapters() {
		known = append(known, a.Name)
	}
	if len(known) == 0 {
		return errorf(ErrNotFound, "no adapter %q: the mount has no paths, so no adapters", name)
	}
	return errorf(ErrNotFound, "no adapter %q (adapters: %s): `mpathfs adapter list` shows them", name, strings.Join(known, ", "))
}

// lookupAdapter returns the paths through a known adapter.
func (h *Host) lookupAdapter(name string) ([]adapterPath, error) {
	paths, ok := h.adapterPaths()[name]
	if !ok {
		return nil, h.unknownAdapter(name)
	}
	return paths, nil
}

// FailAdapter fails every path through an adapter together: a
// path-failure fault on each (so its I/O and its checker's probes fail
// until the adapter is restored), and the path is failed at once, as an
// HBA driver reports a lost link. Failing a failed adapter is ErrExists.
func (h *Host) FailAdapter(name, reason string) (AdapterStatus, error) {
	paths, err := h.lookupAdapter(name)
	if err != nil {
		return AdapterStatus{}, err
	}
	if reason == "" {
		reason = "adapter " + name + " failed"
	}
	h.mu.Lock()
	if h.adapters == nil {
		h.adapters = map[string]*adapterFailure{}
	}
	if _, ok := h.adapters[name]; ok {
		h.mu.Unlock()
		return AdapterStatus{}, errorf(ErrExists, "adapter %s is failed already: `mpathfs adapter restore %s` brings it back", name, name)
	}
	var missing []string
	for _, ap := range paths {
		if h.faults[ap.p.Name] == nil {
			missing = append(missing, ap.p.Name)
		}
	}
	if len(missing) > 0 {
		h.mu.Unlock()
		return AdapterStatus{}, errorf(ErrUnsupported, "adapter %s: paths %s have no fault injector to fail them with", name, strings.Join(missing, ", "))
	}
	f := &adapterFailure{reason: reason, since: time.Now()}
	for _, ap := range paths {
		fb := h.faults[ap.p.Name]
		id, err := fb.Inject(fault.Spec{Error: "path-failure"})
		if err != nil {
			for _, af := range f.faults {
				af.fb.Clear(af.id)
			}
			h.mu.Unlock()
			return AdapterStatus{}, fmt.Errorf("adapter %s: path %s: %v", name, ap.p.Name, err)
		}
		f.faults = append(f.faults, adapterFault{fb: fb, id: id, device: ap.dev.Name(), path: ap.p.Name})
	}
	h.adapters[name] = f
	h.mu.Unlock()
	for _, ap := range paths {
		ap.dev.FailPath(ap.p.Name, reason)
	}
	for _, dev := range devicesOf(paths) {
		h.publish(mpath.Event{Time: f.since, Kind: "adapter-failed", Device: dev, Adapter: name, To: AdapterFailed, Reason: reason})
	}
	return h.Adapter(name)
}

// checker is a device whose path checker can run a round now (nmp's).
type checker interface{ CheckNow() }

// RestoreAdapter clears the faults FailAdapter injected (and no other) and
// runs the path checker of each device the adapter reaches, so the paths
// that work return to service now rather than at the checker's next round
// (a path that flapped stays held down as the checker decides).
func (h *Host) RestoreAdapter(ctx context.Context, name string) (AdapterStatus, error) {
	h.mu.Lock()
	f, ok := h.adapters[name]
	delete(h.adapters, name)
	h.mu.Unlock()
	if !ok {
		if _, err := h.lookupAdapter(name); err != nil {
			return AdapterStatus{}, err
		}
		return AdapterStatus{}, errorf(ErrInvalid, "adapter %s is not failed: only a failed adapter (`mpathfs adapter fail %s`) can be restored", name, name)
	}
	for _, af := range f.faults {
		af.fb.Clear(af.id) // a path removed since: its injector is gone, nothing to clear
	}
	paths, _ := h.lookupAdapter(name)
	for _, d := range uniqueDevices(paths) {
		if ctx.Err() != nil {
			break
		}
		if c, ok := d.(checker); ok {
			c.CheckNow()
		}
	}
	now := time.Now()
	devs := devicesOf(paths)
	for _, af := range f.faults {
		if !slices.Contains(devs, af.device) {
			devs = append(devs, af.device)
		}
	}
	for _, dev := range devs {
		h.publish(mpath.Event{Time: now, Kind: "adapter-restored", Device: dev, Adapter: name, From: AdapterFailed, To: AdapterOnline, Reason: "adapter " + name + " restored"})
	}
	if st, err := h.Adapter(name); err == nil {
		return st, nil
	}
	// Every path through it left while it was failed.
	return AdapterStatus{Name: name, State: AdapterOnline, Targets: []AdapterTarget{}, Devices: []string{}}, nil
}

// ResetAdapter resets an adapter (a bus reset from the HBA, with the
// power-on/reset sense): the tasks the fault layer holds or delays on its
// paths end with a retryable error, and every path through it answers its
// next data I/O with unit attention 06/29/00 (power on, reset), once — a
// one-shot sense fault per path, the UA storm a reset causes (reset.go).
// Its iSCSI paths instead get a real TARGET WARM RESET, once per target,
// and the target's own unit attention. It returns the adapter's status.
func (h *Host) ResetAdapter(name string) (AdapterStatus, error) {
	paths, err := h.lookupAdapter(name)
	if err != nil {
		return AdapterStatus{}, err
	}
	rep, err := h.resetPaths(paths, SenseResetUA, "adapter "+name+" reset", iscsi.TMFTargetWarmReset, nil, nil)
	if err != nil {
		return AdapterStatus{}, err
	}
	rep.Kind = "adapter"
	h.publishReset(rep, "adapter-reset", name, "adapter "+name+" reset")
	return h.Adapter(name)
}

func devicesOf(paths []adapterPath) []string {
	var out []string
	for _, ap := range paths {
		if !slices.Contains(out, ap.dev.Name()) {
			out = append(out, ap.dev.Name())
		}
	}
	return out
}

func uniqueDevices(paths []adapterPath) []Device {
	var out []Device
	for _, ap := range paths {
		if !slices.Contains(out, ap.dev) {
			out = append(out, ap.dev)
		}
	}
	return out
}
