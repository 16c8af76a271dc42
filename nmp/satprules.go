package nmp

import (
	"errors"
	"fmt"
	"maps"
	"sort"
	"strings"
	"sync"

	"github.com/mpathfs/mpathfs/mpath"
)

// SATP rules pick a device's SATP (and optionally its PSP and their
// options) from what its paths report, as ESXi's `esxcli storage nmp satp
// rule` list does. A rule matches when every attribute it names matches:
// vendor and model (case-insensitive globs), transport, and the claim
// option tpgs_on (the device reports TPGS, i.e. ALUA) or tpgs_off.
//
// Order: vendor/model rules first, then rules on the claim option alone,
// then transport rules (ESXi: driver, vendor/model, transport); within a
// tier user rules before system rules, the more specific first, then in
// list order. No match: VMW_SATP_DEFAULT_AA with its default PSP.

// Claim options of SATP rules.
const (
	ClaimTPGSOn  = "tpgs_on"
	ClaimTPGSOff = "tpgs_off"
)

// SATP names the rules refer to but nmp does not define (package alua
// registers them).
const (
	SATPNameALUA      = "VMW_SATP_ALUA"
	SATPNameDefaultAP = "VMW_SATP_DEFAULT_AP"
)

// SATPRule is one SATP rule.
type SATPRule struct {
	SATP      string `json:"satp" yaml:"satp"`
	Vendor    string `json:"vendor,omitempty" yaml:"vendor,omitempty"`
	Model     string `json:"model,omitempty" yaml:"model,omitempty"`
	Transport string `json:"transport,omitempty" yaml:"transport,omitempty"`
	// Driver matches the paths' driver, mpathfs_<transport> (a glob).
	Driver       string            `json:"driver,omitempty" yaml:"driver,omitempty"`
	ClaimOptions string            `json:"claim_options,omitempty" yaml:"claim_options,omitempty"`
	Options      map[string]string `json:"options,omitempty" yaml:"options,omitempty"`
	PSP          string            `json:"psp,omitempty" yaml:"psp,omitempty"`
	PSPOptions   map[string]string `json:"psp_options,omitempty" yaml:"psp_options,omitempty"`
	Description  string            `json:"description,omitempty" yaml:"description,omitempty"`
	// Group is "system" for the defaults, "user" for rules added.
	Group string `json:"rule_group" yaml:"-"`
}

func (r SATPRule) String() string {
	var f []string
	add := func(k, v string) {
		if v != "" {
			f = append(f, k+"="+v)
		}
	}
	add("vendor", r.Vendor)
	add("model", r.Model)
	add("transport", r.Transport)
	add("driver", r.Driver)
	add("claim", r.ClaimOptions)
	add("psp", r.PSP)
	return r.SATP + " " + strings.Join(f, " ") + " (" + r.Group + ")"
}

// tier is the rule's place in the search order.
func (r SATPRule) tier() int {
	switch {
	case r.Driver != "":
		return 0
	case r.Vendor != "" || r.Model != "":
		return 1
	case r.ClaimOptions != "":
		return 2
	}
	return 3
}

func (r SATPRule) specificity() int {
	n := 0
	for _, s := range []string{r.Vendor, r.Model, r.Transport, r.Driver, r.ClaimOptions} {
		if s != "" {
			n++
		}
	}
	return n
}

// DeviceAttrs are what SATP rules match.
type DeviceAttrs struct {
	Vendor    string `json:"vendor"`
	Model     string `json:"model"`
	Transport string `json:"transport"`
	// Driver is the paths' driver (mpathfs_<transport>; "" : derived from
	// Transport).
	Driver string `json:"driver,omitempty"`
	TPGS   int    `json:"tpgs"`
}

func (a DeviceAttrs) driver() string {
	if a.Driver == "" && a.Transport != "" {
		return "mpathfs_" + a.Transport
	}
	return a.Driver
}

// Match reports whether the rule matches a device.
func (r SATPRule) Match(a DeviceAttrs) bool {
	if !mpath.Glob(r.Vendor, a.Vendor) || !mpath.Glob(r.Model, a.Model) {
		return false
	}
	if r.Transport != "" && !strings.EqualFold(r.Transport, a.Transport) {
		return false
	}
	if r.Driver != "" && !mpath.Glob(r.Driver, a.driver()) {
		return false
	}
	switch r.ClaimOptions {
	case ClaimTPGSOn:
		return a.TPGS != 0
	case ClaimTPGSOff:
		return a.TPGS == 0
	}
	return true
}

// Validate checks a rule before it is added.
func (r SATPRule) Validate() error {
	if r.SATP == "" {
		return errors.New("SATP rule names no SATP (e.g. VMW_SATP_ALUA)")
	}
	if r.Vendor == "" && r.Model == "" && r.Transport == "" && r.Driver == "" && r.ClaimOptions == "" {
		return fmt.Errorf("SATP rule for %s matches nothing: give vendor, model, transport, driver or claim option", r.SATP)
	}
	if r.Transport != "" && !mpath.KnownTransport(r.Transport) {
		return fmt.Errorf("SATP rule for %s: transport %q: want one of %s", r.SATP, r.Transport, strings.Join(mpath.Transports, ", "))
	}
	if _, err := satps.Lookup(r.SATP); err != nil {
		return fmt.Errorf("SATP rule: %w", err)
	}
	if r.PSP != "" {
		if _, err := NewPSP(r.PSP, r.PSPOptions, nil); err != nil {
			return fmt.Errorf("SATP rule for %s: %w", r.SATP, err)
		}
	}
	switch r.ClaimOptions {
	case "", ClaimTPGSOn, ClaimTPGSOff:
	default:
		return fmt.Errorf("SATP rule for %s: claim option %q: want tpgs_on or tpgs_off", r.SATP, r.ClaimOptions)
	}
	for what, p := range map[string]string{"vendor": r.Vendor, "model": r.Model, "driver": r.Driver} {
		if err := mpath.CheckGlob(p); err != nil {
			return fmt.Errorf("SATP rule for %s: %s pattern %q: %v", r.SATP, what, p, err)
		}
	}
	return nil
}

// sameMatch: two rules name the same SATP and match the same attributes.
func sameMatch(a, b SATPRule) bool {
	return a.SATP == b.SATP && a.Vendor == b.Vendor && a.Model == b.Model && strings.EqualFold(a.Transport, b.Transport) && a.Driver == b.Driver && a.ClaimOptions == b.ClaimOptions
}

// SATPRules is an SATP rule list, safe for concurrent use. It also keeps
// the default PSP of each SATP an operator changed (`satp set
// --default-psp`).
type SATPRules struct {
	mu         sync.Mutex
	rules      []SATPRule
	defaultPSP map[string]string // by SATP name
}

// SetDefaultPSP changes the default PSP of an SATP for the devices
// claimed from now on (ESXi's `esxcli storage nmp satp set
// --default-psp`); "" restores the plugin's own default.
func (s *SATPRules) SetDefaultPSP(satp, psp string) (PluginInfo, error) {
	p, err := satps.Lookup(satp)
	if err != nil {
		return PluginInfo{}, err
	}
	if psp != "" {
		if _, err := NewPSP(psp, nil, nil); err != nil {
			return PluginInfo{}, fmt.Errorf("satp %s: default PSP: %w", satp, err)
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.defaultPSP == nil {
		s.defaultPSP = map[string]string{}
	}
	if psp == "" {
		delete(s.defaultPSP, p.info.Name)
	} else {
		s.defaultPSP[p.info.Name] = psp
	}
	info := p.info
	if psp != "" {
		info.DefaultPSP = psp
	}
	return info, nil
}

// DefaultPSP is an SATP's default PSP: the operator's, else the plugin's.
func (s *SATPRules) DefaultPSP(satp string) (string, error) {
	if s != nil {
		s.mu.Lock()
		psp, ok := s.defaultPSP[satp]
		s.mu.Unlock()
		if ok {
			return psp, nil
		}
	}
	return satpDefaultPSP(satp)
}

// SATPs lists the registered SATPs with their default PSPs as this rule
// list has them.
func (s *SATPRules) SATPs() []PluginInfo {
	out := SATPs()
	for i := range out {
		if psp, err := s.DefaultPSP(out[i].Name); err == nil {
			out[i].DefaultPSP = psp
		}
	}
	return out
}

// DefaultSATPRules returns the system rules:
//
//	VMW_SATP_ALUA        vendor=MPATHFS model=ALUA* claim=tpgs_on  the simulated ALUA array
//	VMW_SATP_DEFAULT_AP  vendor=MPATHFS model=AP*                  the simulated active/passive array
//	VMW_SATP_ALUA        vendor=NETAPP claim=tpgs_on               (as ESXi)
//	VMW_SATP_DEFAULT_AP  vendor=DEC model=HSG80                    (as ESXi)
//	VMW_SATP_ALUA        claim=tpgs_on                             any array that reports TPGS
//	VMW_SATP_LOCAL       transport=file                            local file stores
//	VMW_SATP_LOCAL       transport=block                           local block devices
func DefaultSATPRules() *SATPRules {
	sys := []SATPRule{
		{SATP: SATPNameALUA, Vendor: "MPATHFS", Model: "ALUA*", ClaimOptions: ClaimTPGSOn, Description: "mpathfs simulated ALUA array"},
		{SATP: SATPNameDefaultAP, Vendor: "MPATHFS", Model: "AP*", Description: "mpathfs simulated active/passive array"},
		{SATP: SATPNameALUA, Vendor: "NETAPP", ClaimOptions: ClaimTPGSOn, Description: "NetApp arrays with ALUA support"},
		{SATP: SATPNameDefaultAP, Vendor: "DEC", Model: "HSG80", Description: "DEC HSG80 active/passive"},
		{SATP: SATPNameALUA, ClaimOptions: ClaimTPGSOn, Description: "any array with ALUA support"},
		{SATP: SATPLocal, Transport: "file", Description: "local file stores"},
		{SATP: SATPLocal, Transport: "block", Description: "local block devices"},
	}
	for i := range sys {
		sys[i].Group = "system"
	}
	return &SATPRules{rules: sys}
}

// Add adds a user rule.
func (s *SATPRules) Add(r SATPRule) error {
	if err := r.Validate(); err != nil {
		return err
	}
	r.Group = "user"
	r.Options, r.PSPOptions = maps.Clone(r.Options), maps.Clone(r.PSPOptions)
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, q := range s.rules {
		if q.Group == "user" && sameMatch(q, r) {
			return fmt.Errorf("a user SATP rule %s already exists: remove it first", q)
		}
	}
	s.rules = append(s.rules, r)
	return nil
}

// Remove removes the user rules for an SATP that match exactly these
// attributes; it reports how many it removed.
func (s *SATPRules) Remove(r SATPRule) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	keep, n := s.rules[:0], 0
	for _, q := range s.rules {
		if q.Group == "user" && sameMatch(q, r) {
			n++
			continue
		}
		keep = append(keep, q)
	}
	s.rules = keep
	if n == 0 {
		return 0, fmt.Errorf("no user SATP rule %s", r)
	}
	return n, nil
}

// List returns the rules in search order.
func (s *SATPRules) List() []SATPRule {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := append([]SATPRule(nil), s.rules...)
	sort.SliceStable(out, func(i, j int) bool {
		a, b := out[i], out[j]
		if a.tier() != b.tier() {
			return a.tier() < b.tier()
		}
		if (a.Group == "user") != (b.Group == "user") {
			return a.Group == "user"
		}
		return a.specificity() > b.specificity()
	})
	return out
}

// Match returns the first rule in search order that matches.
func (s *SATPRules) Match(a DeviceAttrs) (SATPRule, bool) {
	for _, r := range s.List() {
		if r.Match(a) {
			return r, true
		}
	}
	return SATPRule{}, false
}

// Sources of an effective setting, for Explain.
const (
	SourceUser     = "user config"
	SourceSATPRule = "satp rule"
	SourceDefault  = "plugin default"
	SourceFallback = "no satp rule matched"
)

// Setting is one effective setting and where it came from.
type Setting struct {
	Name   string `json:"name"`
	Value  string `json:"value"`
	Source string `json:"source"`
	Detail string `json:"detail,omitempty"`
}

// Explanation says how a device got its plugins and options, for
// `mpathfs explain DEVICE`.
type Explanation struct {
	Device      string       `json:"device"`
	Path        string       `json:"path,omitempty"` // the path the rules were run on
	Attrs       DeviceAttrs  `json:"attrs"`
	ClaimRule   *mpath.Rule  `json:"claim_rule,omitempty"`
	MPP         string       `json:"mpp"`
	Masked      bool         `json:"masked,omitempty"`
	SATPRule    *SATPRule    `json:"satp_rule,omitempty"`
	SATP        Setting      `json:"satp"`
	PSP         Setting      `json:"psp"`
	SATPOptions []Setting    `json:"satp_options,omitempty"`
	PSPOptions  []Setting    `json:"psp_options,omitempty"`
	Config      ResolvedConf `json:"-"`
}

// ResolvedConf is the effective plugin choice.
type ResolvedConf struct {
	SATP        string
	SATPOptions map[string]string
	PSP         string
	PSPOptions  map[string]string
}

func satpDefaultPSP(name string) (string, error) {
	p, err := satps.Lookup(name)
	if err != nil {
		return "", err
	}
	return p.info.DefaultPSP, nil
}

func settings(opts map[string]string, src map[string]Setting) []Setting {
	keys := make([]string, 0, len(opts))
	for k := range opts {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	out := make([]Setting, 0, len(keys))
	for _, k := range keys {
		s := src[k]
		s.Name, s.Value = k, opts[k]
		out = append(out, s)
	}
	return out
}

// Explain runs the claim rules on a device's first path and the SATP
// rules on the device's attributes, and merges the user's config: the
// user's SATP and PSP win over a rule's, a rule's over the plugin's
// default; options likewise, key by key. It fails when the SATP or PSP
// is unknown or the options are invalid.
func Explain(claims *mpath.ClaimRules, rules *SATPRules, device string, pa mpath.PathAttrs, tpgs int, user mpath.DeviceConfig) (Explanation, error) {
	e := Explanation{Device: device, Attrs: DeviceAttrs{Vendor: pa.Vendor, Model: pa.Model, Transport: pa.Transport, TPGS: tpgs}, MPP: MPPName}
	if claims != nil {
		if r, ok := claims.Match(pa); ok {
			e.ClaimRule = &r
			e.MPP = r.Plugin
			e.Masked = r.Plugin == mpath.PluginMaskPath
		} else {
			e.Masked = true
		}
	}
	var rule *SATPRule
	if rules != nil {
		if r, ok := rules.Match(e.Attrs); ok {
			rule = &r
			e.SATPRule = rule
		}
	}
	// SATP.
	switch {
	case user.SATP != "":
		e.SATP = Setting{Name: "satp", Value: user.SATP, Source: SourceUser}
	case rule != nil:
		e.SATP = Setting{Name: "satp", Value: rule.SATP, Source: SourceSATPRule, Detail: rule.String()}
	default:
		e.SATP = Setting{Name: "satp", Value: SATPDefaultAA, Source: SourceFallback}
	}
	satpName := e.SATP.Value
	ruleApplies := rule != nil && rule.SATP == satpName
	satpOpts, satpSrc := map[string]string{}, map[string]Setting{}
	if ruleApplies {
		for k, v := range rule.Options {
			satpOpts[k], satpSrc[k] = v, Setting{Source: SourceSATPRule, Detail: rule.String()}
		}
	}
	for k, v := range user.SATPOptions {
		satpOpts[k], satpSrc[k] = v, Setting{Source: SourceUser}
	}
	defPSP, err := rules.DefaultPSP(satpName)
	if err != nil {
		return e, fmt.Errorf("device %s: %w", device, err)
	}
	if _, err := NewSATP(satpName, satpOpts); err != nil {
		return e, fmt.Errorf("device %s: %w", device, err)
	}
	// PSP.
	switch {
	case user.PSP != "":
		e.PSP = Setting{Name: "psp", Value: user.PSP, Source: SourceUser}
	case ruleApplies && rule.PSP != "":
		e.PSP = Setting{Name: "psp", Value: rule.PSP, Source: SourceSATPRule, Detail: rule.String()}
	default:
		e.PSP = Setting{Name: "psp", Value: defPSP, Source: SourceDefault, Detail: "default PSP of " + satpName}
	}
	pspOpts, pspSrc := map[string]string{}, map[string]Setting{}
	if ruleApplies && (rule.PSP == "" || rule.PSP == e.PSP.Value) {
		for k, v := range rule.PSPOptions {
			pspOpts[k], pspSrc[k] = v, Setting{Source: SourceSATPRule, Detail: rule.String()}
		}
	}
	for k, v := range user.PSPOptions {
		pspOpts[k], pspSrc[k] = v, Setting{Source: SourceUser}
	}
	psp, err := NewPSP(e.PSP.Value, pspOpts, nil)
	if err != nil {
		return e, fmt.Errorf("device %s: %w", device, err)
	}
	effective := maps.Clone(pspOpts)
	for k, v := range psp.Options() {
		if _, set := effective[k]; !set {
			effective[k] = v
			pspSrc[k] = Setting{Source: SourceDefault, Detail: "default of " + e.PSP.Value}
		}
	}
	e.SATPOptions = settings(satpOpts, satpSrc)
	e.PSPOptions = settings(effective, pspSrc)
	e.Config = ResolvedConf{SATP: satpName, SATPOptions: satpOpts, PSP: e.PSP.Value, PSPOptions: pspOpts}
	return e, nil
}

// Resolve fills a device config's SATP, PSP and their options from the
// rules (see Explain); what the user set wins.
func Resolve(rules *SATPRules, cfg mpath.DeviceConfig, a DeviceAttrs) (mpath.DeviceConfig, Explanation, error) {
	e, err := Explain(nil, rules, cfg.Name, mpath.PathAttrs{Vendor: a.Vendor, Model: a.Model, Transport: a.Transport}, a.TPGS, cfg)
	if err != nil {
		return cfg, e, err
	}
	cfg.SATP, cfg.SATPOptions = e.Config.SATP, e.Config.SATPOptions
	cfg.PSP, cfg.PSPOptions = e.Config.PSP, e.Config.PSPOptions
	return cfg, e, nil
}
