package host

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/mpathfs/mpathfs/mpath"
	"github.com/mpathfs/mpathfs/nmp"
)

// Claiming at runtime, as ESXi's `esxcli storage core claiming` and
// `claimrule run`: a path the host knows either serves a device (claimed
// by the NMP) or is offline — masked (a MASK_PATH rule claimed it) or
// unclaimed (the operator took it away). Offline paths keep their device,
// URI and runtime name, so that `claimrule run` and `claiming reclaim`
// can give them back to their device with the same name.
//
// Taking a claimed path away is `path remove` (its unflushed writes are
// flushed on it, then it is failed and taken out), never the device's
// last usable path: the device is served by the mount, so it is in use,
// and its I/O would have nowhere to go. That is why masking a path of a
// device in use costs the application nothing.

// Offline path states.
const (
	OfflineMasked    = "masked"
	OfflineUnclaimed = "unclaimed"
)

// OfflinePath is a path the host knows that serves no device.
type OfflinePath struct {
	Device    string `json:"device"`
	Name      string `json:"name"`
	URI       string `json:"uri"`
	Location  string `json:"location"`
	Transport string `json:"transport"`
	// State is masked or unclaimed.
	State string `json:"state"`
	// Plugin and Rule: the claim rule that claimed it (MASK_PATH), if any.
	Plugin string    `json:"plugin,omitempty"`
	Rule   int       `json:"rule,omitempty"`
	Reason string    `json:"reason"`
	Since  time.Time `json:"since"`
	Vendor string    `json:"vendor,omitempty"`
	Model  string    `json:"model,omitempty"`

	attrs mpath.PathAttrs
	loc   mpath.Location
}

// ClaimOutcome is what a claiming operation did to one path.
type ClaimOutcome struct {
	Device string `json:"device"`
	Path   string `json:"path"`
	URI    string `json:"uri,omitempty"`
	// From and To are claimed, masked, unclaimed or new.
	From string `json:"from"`
	To   string `json:"to"`
	Rule int    `json:"rule,omitempty"`
	// Error says why the path stayed as it was.
	Error string `json:"error,omitempty"`
	// Plugins marks the outcome of a reclaim for the device itself (no
	// path): From and To are its "SATP PSP" before and after, Why where
	// the new ones come from (the SATP rule, the SATP's default PSP).
	Plugins bool   `json:"plugins,omitempty"`
	Why     string `json:"why,omitempty"`
}

// Claiming states of a path in outcomes.
const (
	ClaimedState = "claimed"
	newState     = "new"
)

// keepOffline records a path the claim rules kept from its device when
// it was made.
func (h *Host) keepOffline(device string, p *mpath.Path, rule mpath.Rule, why string) {
	op := offlineOf(device, p, OfflineUnclaimed, why)
	if rule.Plugin == mpath.PluginMaskPath {
		op.State, op.Plugin, op.Rule = OfflineMasked, rule.Plugin, rule.ID
	}
	h.mu.Lock()
	h.offline = append(h.offline, op)
	h.mu.Unlock()
}

func offlineOf(device string, p *mpath.Path, state, reason string) *OfflinePath {
	name := p.Name
	if name == "" {
		name = p.Location.RuntimeName()
	}
	return &OfflinePath{Device: device, Name: name, URI: p.URI, Location: p.Location.RuntimeName(), Transport: p.Transport,
		State: state, Reason: reason, Since: time.Now(), Vendor: p.Inquiry.Vendor, Model: p.Inquiry.Model,
		attrs: mpath.AttrsOf(p), loc: p.Location}
}

// Offline lists the masked and unclaimed paths, by device and name.
func (h *Host) Offline() []OfflinePath {
	h.mu.RLock()
	out := make([]OfflinePath, 0, len(h.offline))
	for _, op := range h.offline {
		out = append(out, *op)
	}
	h.mu.RUnlock()
	slices.SortFunc(out, func(a, b OfflinePath) int {
		if c := strings.Compare(a.Device, b.Device); c != 0 {
			return c
		}
		return strings.Compare(a.Name, b.Name)
	})
	return out
}

func (h *Host) dropOffline(op *OfflinePath) {
	h.mu.Lock()
	h.offline = slices.DeleteFunc(h.offline, func(q *OfflinePath) bool { return q == op })
	h.mu.Unlock()
}

// findOffline finds an offline path by name, URI or runtime name.
func (h *Host) findOffline(name string) *OfflinePath {
	h.mu.RLock()
	defer h.mu.RUnlock()
	for _, op := range h.offline {
		if op.Name == name || op.URI == name || op.Location == name {
			return op
		}
	}
	return nil
}

// takeOffline takes a claimed path out of its device live (flushed,
// failed, removed) and keeps it as offline in state. The device's last
// usable path is refused.
func (h *Host) takeOffline(ctx context.Context, d Device, p *mpath.Path, state string, rule mpath.Rule, reason string) error {
	usable := p.State() == mpath.StateActive && !p.AdminOff()
	if len(d.Paths()) == 1 || (usable && d.UsablePaths() <= 1) {
		what := "last path"
		if len(d.Paths()) > 1 {
			what = "last usable path"
		}
		return errorf(ErrRefused, "path %s is the %s of device %s, which the mount serves (the device is in use): taking it away would leave the device's I/O nowhere to go; bring another path of %s up first", p.Name, what, d.Name(), d.Name())
	}
	op := offlineOf(d.Name(), p, state, reason)
	if state == OfflineMasked {
		op.Plugin, op.Rule = rule.Plugin, rule.ID
	}
	if _, err := h.RemovePathLive(ctx, p.Name, false); err != nil {
		return err
	}
	h.mu.Lock()
	h.offline = append(h.offline, op)
	h.mu.Unlock()
	kind := "path-unclaimed"
	if state == OfflineMasked {
		kind = "path-masked"
	}
	h.publish(mpath.Event{Time: time.Now(), Kind: kind, Device: d.Name(), Path: op.Name, From: ClaimedState, To: state, Reason: reason})
	return nil
}

// bringBack runs the runtime claim rules on an offline path: MASK_PATH
// masks it (it stays offline), the device's plugin gets it back under its
// old name and runtime name. unmask: a masked path may return (reclaim),
// else only an unclaimed one (run).
func (h *Host) bringBack(ctx context.Context, op *OfflinePath, unmask bool) ClaimOutcome {
	out := ClaimOutcome{Device: op.Device, Path: op.Name, URI: op.URI, From: op.State, To: op.State}
	rule, ok := h.claims.Match(op.attrs)
	if ok {
		out.Rule = rule.ID
	}
	switch {
	case ok && rule.Plugin == mpath.PluginMaskPath:
		if op.State != OfflineMasked {
			h.mu.Lock()
			op.State, op.Plugin, op.Rule, op.Reason, op.Since = OfflineMasked, rule.Plugin, rule.ID, fmt.Sprintf("claim rule %d gives it to %s", rule.ID, rule.Plugin), time.Now()
			h.mu.Unlock()
			out.To = OfflineMasked
			h.publish(mpath.Event{Time: time.Now(), Kind: "path-masked", Device: op.Device, Path: op.Name, From: out.From, To: OfflineMasked, Reason: op.Reason})
		}
		return out
	case op.State == OfflineMasked && !unmask:
		return out // `claimrule run` claims unclaimed paths only
	case !ok:
		out.Error = "no claim rule matches it"
		return out
	}
	m, err := h.member(op.Device)
	if err != nil {
		out.Error = err.Error()
		return out
	}
	loc := op.loc
	p, err := h.join(ctx, m, joinRequest{uri: op.URI, name: op.Name, loc: &loc})
	if err != nil {
		out.Error = err.Error()
		return out
	}
	h.dropOffline(op)
	out.To = ClaimedState
	h.publish(mpath.Event{Time: time.Now(), Kind: "path-claimed", Device: op.Device, Path: p.Name, From: out.From, To: p.State().String(),
		Reason: fmt.Sprintf("claim rule %d gives it to %s", rule.ID, rule.Plugin)})
	return out
}

// maskIfRuled masks a claimed path whose runtime rule is now MASK_PATH;
// ok reports whether the rules wanted it masked.
func (h *Host) maskIfRuled(ctx context.Context, d Device, p *mpath.Path) (ClaimOutcome, bool) {
	rule, ok := h.claims.Match(mpath.AttrsOf(p))
	if !ok || rule.Plugin != mpath.PluginMaskPath {
		return ClaimOutcome{}, false
	}
	out := ClaimOutcome{Device: d.Name(), Path: p.Name, URI: p.URI, From: ClaimedState, To: OfflineMasked, Rule: rule.ID}
	if err := h.takeOffline(ctx, d, p, OfflineMasked, rule, fmt.Sprintf("claim rule %d gives it to %s", rule.ID, rule.Plugin)); err != nil {
		out.To, out.Error = ClaimedState, err.Error()
	}
	return out, true
}

// UnclaimRequest selects the paths to unclaim: one path (by name, URI or
// runtime name), every path of a device, or every path through an
// adapter. Exactly one is given.
type UnclaimRequest struct {
	Path    string `json:"path,omitempty"`
	Device  string `json:"device,omitempty"`
	Adapter string `json:"adapter,omitempty"`
}

// Unclaim takes paths away from their devices (ESXi's `claiming
// unclaim`): each is flushed, failed and taken out live and stays known
// as unclaimed until `claimrule run` or `claiming reclaim` claims it
// again. A device's last usable path is refused (the device is in use);
// the outcome of each path says what happened.
func (h *Host) Unclaim(ctx context.Context, r UnclaimRequest) ([]ClaimOutcome, error) {
	n := 0
	for _, s := range []string{r.Path, r.Device, r.Adapter} {
		if s != "" {
			n++
		}
	}
	if n != 1 {
		return nil, errorf(ErrInvalid, "unclaim: give exactly one of --path, --device or --adapter")
	}
	h.claimMu.Lock()
	defer h.claimMu.Unlock()
	type target struct {
		d Device
		p *mpath.Path
	}
	var targets []target
	switch {
	case r.Path != "":
		d, p, err := h.FindPath(r.Path)
		if err != nil {
			if op := h.findOffline(r.Path); op != nil {
				return nil, errorf(ErrInvalid, "path %s of device %s is %s already", op.Name, op.Device, op.State)
			}
			return nil, err
		}
		targets = append(targets, target{d, p})
	case r.Device != "":
		d, err := h.Device(r.Device)
		if err != nil {
			return nil, err
		}
		for _, p := range d.Paths() {
			targets = append(targets, target{d, p})
		}
	default:
		paths, err := h.lookupAdapter(r.Adapter)
		if err != nil {
			return nil, err
		}
		for _, ap := range paths {
			targets = append(targets, target{ap.dev, ap.p})
		}
	}
	out := []ClaimOutcome{}
	for _, t := range targets {
		o := ClaimOutcome{Device: t.d.Name(), Path: t.p.Name, URI: t.p.URI, From: ClaimedState, To: OfflineUnclaimed}
		if err := h.takeOffline(ctx, t.d, t.p, OfflineUnclaimed, mpath.Rule{}, "unclaimed by the operator"); err != nil {
			o.To, o.Error = ClaimedState, err.Error()
		}
		out = append(out, o)
	}
	if len(out) == 1 && out[0].Error != "" {
		return out, errorf(ErrRefused, "%s", out[0].Error)
	}
	return out, nil
}

// RunClaimRules runs the runtime claim rules (ESXi's `claimrule run`):
// every unclaimed path goes to the plugin its rule names (its device, or
// MASK_PATH), and — so that `claimrule add … MASK_PATH; load; run` masks
// a path in use, as the mpathfs docs promise — a claimed path whose rule
// is now MASK_PATH is masked live (never a device's last usable path).
// Masked paths stay masked: `claiming reclaim` unmasks.
func (h *Host) RunClaimRules(ctx context.Context) []ClaimOutcome {
	h.claimMu.Lock()
	defer h.claimMu.Unlock()
	out := []ClaimOutcome{}
	for _, d := range h.Devices() {
		for _, p := range d.Paths() {
			if o, ok := h.maskIfRuled(ctx, d, p); ok {
				out = append(out, o)
			}
		}
	}
	h.mu.RLock()
	offline := slices.Clone(h.offline)
	h.mu.RUnlock()
	for _, op := range offline {
		if op.State != OfflineUnclaimed {
			continue
		}
		out = append(out, h.bringBack(ctx, op, false))
	}
	return out
}

// Reclaim unclaims and claims again every path of a device with the
// runtime rules (ESXi's `claiming reclaim --device`): paths a MASK_PATH
// rule now matches are masked live, masked and unclaimed paths of the
// device the rules give to its plugin return, and the device gets the
// SATP and PSP the SATP rules and default PSPs give it now (replaced
// live: the SATP first, then the PSP). Only what changes is touched, so
// the device keeps serving throughout (ESXi refuses a device in use
// instead).
func (h *Host) Reclaim(ctx context.Context, device string) ([]ClaimOutcome, error) {
	h.claimMu.Lock()
	defer h.claimMu.Unlock()
	d, err := h.Device(device)
	if err != nil {
		return nil, err
	}
	out := []ClaimOutcome{}
	for _, p := range d.Paths() {
		if o, ok := h.maskIfRuled(ctx, d, p); ok {
			out = append(out, o)
		}
	}
	h.mu.RLock()
	var mine []*OfflinePath
	for _, op := range h.offline {
		if op.Device == device {
			mine = append(mine, op)
		}
	}
	h.mu.RUnlock()
	for _, op := range mine {
		out = append(out, h.bringBack(ctx, op, true))
	}
	if o, ok := h.repick(device); ok {
		out = append(out, o)
	}
	return out, nil
}

// pluginDevice is a device whose SATP and PSP can be replaced live
// (nmp's).
type pluginDevice interface {
	Config() mpath.DeviceConfig
	SetSATP(name string, opts map[string]string) error
}

// repick runs the SATP rules again for a device, as a claim would, and
// replaces its SATP and PSP live with what they give now; ok is false
// when nothing changed (or the device was made outside the rules).
func (h *Host) repick(device string) (ClaimOutcome, bool) {
	m, err := h.member(device)
	if err != nil {
		return ClaimOutcome{}, false
	}
	h.mu.RLock()
	made := m.explain != nil
	h.mu.RUnlock()
	pd, ok := m.dev.(pluginDevice)
	paths := m.dev.Paths()
	if !made || !ok || len(paths) == 0 {
		return ClaimOutcome{}, false
	}
	user := m.cfg.engineConfig()
	cur := pd.Config()
	user.HiddenTail = cur.HiddenTail
	e, err := nmp.Explain(h.claims, h.satpRules, device, mpath.AttrsOf(paths[0]), paths[0].Inquiry.TPGS, user)
	out := ClaimOutcome{Device: device, Plugins: true, From: cur.SATP + " " + cur.PSP, To: cur.SATP + " " + cur.PSP}
	if err != nil {
		out.Error = err.Error()
		return out, true
	}
	e.Path = paths[0].Name
	want := e.Config
	satpChanged := want.SATP != cur.SATP || !maps.Equal(want.SATPOptions, cur.SATPOptions)
	pspChanged := want.PSP != cur.PSP || !maps.Equal(want.PSPOptions, cur.PSPOptions)
	if !satpChanged && !pspChanged {
		return ClaimOutcome{}, false
	}
	src := func(s nmp.Setting) string {
		if s.Detail != "" {
			return s.Value + " (" + s.Source + ": " + s.Detail + ")"
		}
		return s.Value + " (" + s.Source + ")"
	}
	out.Why = "SATP " + src(e.SATP) + ", PSP " + src(e.PSP)
	if satpChanged {
		if err := pd.SetSATP(want.SATP, want.SATPOptions); err != nil {
			out.Error = err.Error()
			return out, true
		}
		out.To = want.SATP + " " + cur.PSP
	}
	if pspChanged {
		if err := m.dev.SetPolicy(want.PSP, want.PSPOptions); err != nil {
			out.Error = err.Error()
			return out, true
		}
	}
	out.To = want.SATP + " " + want.PSP
	h.mu.Lock()
	m.explain = &e
	h.mu.Unlock()
	h.publish(mpath.Event{Time: time.Now(), Kind: "device-reclaimed", Device: device, From: out.From, To: out.To, Reason: out.Why})
	return out, true
}

// RuleChange says what a claim-rule or SATP-rule change did and where it
// went.
type RuleChange struct {
	Rule *mpath.Rule `json:"rule,omitempty"`
	// Where: "config file F" or "memory (the mount has no config file)".
	Where string            `json:"where"`
	Load  *mpath.LoadResult `json:"load,omitempty"`
}

// RuleStore says where claim-rule and SATP-rule changes go.
func (h *Host) RuleStore() string {
	if h.configFile == "" {
		return "memory (the mount has no config file; the changes last until it stops)"
	}
	return "config file " + h.configFile
}

// ClaimRuleAdd adds a rule to the configuration (the file class); rule
// number 0 takes the lowest free number from 5000 (--autoassign). It
// claims nothing until `claimrule load`.
func (h *Host) ClaimRuleAdd(r mpath.Rule) (RuleChange, error) {
	h.claimMu.Lock()
	defer h.claimMu.Unlock()
	if r.ID == 0 {
		id, err := h.claims.NextFree()
		if err != nil {
			return RuleChange{}, Kinded(ErrInvalid, err)
		}
		r.ID = id
	}
	if err := h.claims.AddFile(r); err != nil {
		if strings.Contains(err.Error(), "already exists") {
			return RuleChange{}, Kinded(ErrExists, err)
		}
		return RuleChange{}, Kinded(ErrInvalid, err)
	}
	if err := h.saveRules(); err != nil {
		h.claims.RemoveFile(r.ID)
		return RuleChange{}, err
	}
	r.Class = "file"
	return RuleChange{Rule: &r, Where: h.RuleStore()}, nil
}

// ClaimRuleRemove removes a rule from the configuration; the runtime
// keeps it until `claimrule load`.
func (h *Host) ClaimRuleRemove(id int) (RuleChange, error) {
	h.claimMu.Lock()
	defer h.claimMu.Unlock()
	r, err := h.claims.RemoveFile(id)
	if err != nil {
		if strings.Contains(err.Error(), "no claim rule") {
			return RuleChange{}, Kinded(ErrNotFound, err)
		}
		return RuleChange{}, Kinded(ErrInvalid, err)
	}
	if err := h.saveRules(); err != nil {
		h.claims.AddFile(r)
		return RuleChange{}, err
	}
	return RuleChange{Rule: &r, Where: h.RuleStore()}, nil
}

// ClaimRuleMove renumbers a rule of the configuration.
func (h *Host) ClaimRuleMove(from, to int) (RuleChange, error) {
	h.claimMu.Lock()
	defer h.claimMu.Unlock()
	r, err := h.claims.MoveFile(from, to)
	if err != nil {
		if strings.Contains(err.Error(), "no claim rule") {
			return RuleChange{}, Kinded(ErrNotFound, err)
		}
		return RuleChange{}, Kinded(ErrInvalid, err)
	}
	if err := h.saveRules(); err != nil {
		h.claims.MoveFile(to, from)
		return RuleChange{}, err
	}
	return RuleChange{Rule: &r, Where: h.RuleStore()}, nil
}

// ClaimRuleLoad makes the runtime rules what the configuration says.
// Paths keep their plugin until `claimrule run` or `claiming reclaim`.
func (h *Host) ClaimRuleLoad() RuleChange {
	h.claimMu.Lock()
	defer h.claimMu.Unlock()
	res := h.claims.Load()
	h.publish(mpath.Event{Time: time.Now(), Kind: "claimrule-load", Reason: fmt.Sprintf("%d runtime rule(s) added, %d removed", len(res.Added), len(res.Removed))})
	return RuleChange{Where: h.RuleStore(), Load: &res}
}

// errNoConfig is wrapped when a rule change cannot be written.
var errNoConfig = errors.New("the config file cannot be written")
