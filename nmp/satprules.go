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
	SATP         string            `json:"satp" yaml:"satp"`
	Vendor       string            `json:"vendor,omitempty" yaml:"vendor"`
	Model        string            `json:"model,omitempty" yaml:"model"`
	Transport    string            `json:"transport,omitempty" yaml:"transport"`
	ClaimOptions string            `json:"claim_options,omitempty" yaml:"claim_options"`
	Options      map[string]string `json:"options,omitempty" yaml:"options"`
	PSP          string            `json:"psp,omitempty" yaml:"psp"`
	PSPOptions   map[string]string `json:"psp_options,omitempty" yaml:"psp_options"`
	Description  string            `json:"description,omitempty" yaml:"description"`
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
	add("claim", r.ClaimOptions)
	add("psp", r.PSP)
	return r.SATP + " " + strings.Join(f, " ") + " (" + r.Group + ")"
}

// tier is the rule's place in the search order.
func (r SATPRule) tier() int {
	switch {
	case r.Vendor != "" || r.Model != "":
		return 0
	case r.ClaimOptions != "":
		return 1
	}
	return 2
}

func (r SATPRule) specificity() int {
	n := 0
	for _, s := range []string{r.Vendor, r.Model, r.Transport, r.ClaimOptions} {
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
	TPGS      int    `json:"tpgs"`
}

// Match reports whether the rule matches a device.
func (r SATPRule) Match(a DeviceAttrs) bool {
	if !mpath.Glob(r.Vendor, a.Vendor) || !mpath.Glob(r.Model, a.Model) {
		return false
	}
	if r.Transport != "" && !strings.EqualFold(r.Transport, a.Transport) {
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
	if r.Vendor == "" && r.Model == "" && r.Transport == "" && r.ClaimOptions == "" {
		return fmt.Errorf("SATP rule for %s matches nothing: give vendor, model, transport or claim option", r.SATP)
	}
	switch r.ClaimOptions {
	case "", ClaimTPGSOn, ClaimTPGSOff:
	default:
		return fmt.Errorf("SATP rule for %s: claim option %q: want tpgs_on or tpgs_off", r.SATP, r.ClaimOptions)
	}
	for what, p := range map[string]string{"vendor": r.Vendor, "model": r.Model} {
		if err := mpath.CheckGlob(p); err != nil {
			return fmt.Errorf("SATP rule for %s: %s pattern %q: %v", r.SATP, what, p, err)
		}
	}
	return nil
}

// SATPRules is an SATP rule list, safe for concurrent use.
type SATPRules struct {
	mu    sync.Mutex
	rules []SATPRule
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
		if q.Group == "user" && q.SATP == r.SATP && q.Vendor == r.Vendor && q.Model == r.Model && q.Transport == r.Transport && q.ClaimOptions == r.ClaimOptions {
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
		if q.Group == "user" && q.SATP == r.SATP && q.Vendor == r.Vendor && q.Model == r.Model && q.Transport == r.Transport && q.ClaimOptions == r.ClaimOptions {
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
	defPSP, err := satpDefaultPSP(satpName)
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
