package mpath

import (
	"fmt"
	"sort"
	"strconv"
	"strings"
	"sync"
)

// Claim rules decide which multipathing plugin gets a path, as ESXi's
// `esxcli storage core claimrule` does. Rules are numbered; the PSA runs
// through them from the lowest number and gives the path to the plugin
// of the first rule that matches. Rules 0–100 and 65436–65535 are
// reserved for the system; user rules take 101–65435.
//
// The default list is modelled on ESXi's:
//
//	Rule  Class    Type       Plugin     Matches
//	101   runtime  vendor     MASK_PATH  vendor=DELL model=Universal Xport
//	101   file     vendor     MASK_PATH  vendor=DELL model=Universal Xport
//	65531 runtime  transport  NMP        transport=file
//	65532 runtime  transport  NMP        transport=block
//	65533 runtime  transport  NMP        transport=nbd
//	65534 runtime  transport  NMP        transport=unknown
//	65535 runtime  vendor     NMP        vendor=* model=*
//
// Rule 101 hides Dell's array management LUN, as ESXi ships it. ESXi
// claims local transports (usb, sata, ide, block) with rules 0–4, before
// any user rule; our transports (file, block, nbd) all lead to stores a
// user may want to mask or hand to another plugin, so their rules sit
// just before the catch-all 65535 instead. "file" rows are the
// configuration, "runtime" rows what is loaded; only runtime rows match.
// Rules added here are both.

// Claim rule plugins besides the registered MPPs.
const (
	// PluginMaskPath hides a path: it is offered to no device.
	PluginMaskPath = "MASK_PATH"
	// PluginNMP is the native multipathing plugin's name.
	PluginNMP = "NMP"
)

// Claim rule number ranges.
const (
	RuleSystemLowMax   = 100
	RuleUserMin        = 101
	RuleUserMax        = 65435
	RuleSystemHighMin  = 65436
	RuleMax            = 65535
	ruleClassRuntime   = "runtime"
	ruleClassFile      = "file"
	transportUnknown   = "unknown"
	ruleTypeVendor     = "vendor"
	ruleTypeLocation   = "location"
	ruleTypeTransport  = "transport"
	ruleTypeDriver     = "driver"
	locationAnyPattern = "*"
)

// Transports is ESXi's transport vocabulary with mpathfs's own (file,
// nbd): what claim rules and SATP rules may name. A path's transport is
// its URI scheme's (file, nbd, block, iscsi).
var Transports = []string{"fc", "iscsi", "sas", "sata", "parallel", "usb", "ide", "fcoe", "block", "file", "nbd", transportUnknown}

// KnownTransport reports whether t is in Transports.
func KnownTransport(t string) bool {
	for _, k := range Transports {
		if strings.EqualFold(k, t) {
			return true
		}
	}
	return false
}

// Rule is one claim rule. Type says which attributes it matches:
// vendor (Vendor and Model, glob patterns), location (Location, e.g.
// "vmhba2:C0:*:*"), transport (one of Transports) or driver.
type Rule struct {
	ID        int    `json:"rule"`
	Class     string `json:"class"` // runtime or file
	Type      string `json:"type"`  // vendor, location, transport, driver
	Plugin    string `json:"plugin"`
	Vendor    string `json:"vendor,omitempty"`
	Model     string `json:"model,omitempty"`
	Transport string `json:"transport,omitempty"`
	Location  string `json:"location,omitempty"`
	Driver    string `json:"driver,omitempty"`
	System    bool   `json:"system,omitempty"` // a default rule
}

// Matches prints what the rule matches, the way ESXi lists it.
func (r Rule) Matches() string {
	switch r.Type {
	case ruleTypeVendor:
		return fmt.Sprintf("vendor=%s model=%s", orStar(r.Vendor), orStar(r.Model))
	case ruleTypeLocation:
		return "location=" + orStar(r.Location)
	case ruleTypeTransport:
		return "transport=" + r.Transport
	case ruleTypeDriver:
		return "driver=" + r.Driver
	}
	return ""
}

func (r Rule) String() string {
	return fmt.Sprintf("%d %s %s %s %s", r.ID, r.Class, r.Type, r.Plugin, r.Matches())
}

func orStar(s string) string {
	if s == "" {
		return "*"
	}
	return s
}

// PathAttrs are the attributes claim rules match.
type PathAttrs struct {
	Vendor    string
	Model     string
	Transport string
	Location  Location
	Driver    string
}

// AttrsOf returns a path's attributes: identity from its inquiry, the
// transport (inquiry's or the path's), its location, and the driver
// (mpathfs_<transport>).
func AttrsOf(p *Path) PathAttrs {
	tr := p.Transport
	if tr == "" {
		tr = p.Inquiry.Transport
	}
	a := PathAttrs{Vendor: p.Inquiry.Vendor, Model: p.Inquiry.Model, Transport: tr, Location: p.Location}
	if tr != "" {
		a.Driver = "mpathfs_" + tr
	}
	return a
}

// matchLocation matches "vmhbaA:CC:TT:LL" with "*" for any part (a part
// may also be a glob such as vmhba* or T1*).
func matchLocation(pattern string, l Location) bool {
	if pattern == "" || pattern == locationAnyPattern {
		return true
	}
	parts := strings.Split(pattern, ":")
	if len(parts) != 4 {
		return false
	}
	have := strings.Split(l.RuntimeName(), ":")
	prefixes := [...]string{"vmhba", "C", "T", "L"}
	for i, p := range parts {
		if p == "*" {
			continue
		}
		want := p
		if !strings.HasPrefix(strings.ToUpper(p), strings.ToUpper(prefixes[i])) {
			want = prefixes[i] + p
		}
		if !Glob(want, have[i]) {
			return false
		}
	}
	return true
}

// Match reports whether the rule matches a path's attributes.
func (r Rule) Match(a PathAttrs) bool {
	switch r.Type {
	case ruleTypeVendor:
		return Glob(r.Vendor, a.Vendor) && Glob(r.Model, a.Model)
	case ruleTypeLocation:
		return matchLocation(r.Location, a.Location)
	case ruleTypeTransport:
		tr := a.Transport
		if tr == "" {
			tr = transportUnknown
		}
		return strings.EqualFold(r.Transport, tr)
	case ruleTypeDriver:
		return Glob(r.Driver, a.Driver)
	}
	return false
}

// ClaimRules is a claim rule list, safe for concurrent use.
type ClaimRules struct {
	mu    sync.Mutex
	rules []Rule // sorted by ID, then class (file before runtime)
}

// DefaultClaimRules returns the default list (see the package comment).
func DefaultClaimRules() *ClaimRules {
	c := &ClaimRules{}
	sys := []Rule{
		{ID: 101, Type: ruleTypeVendor, Plugin: PluginMaskPath, Vendor: "DELL", Model: "Universal Xport"},
		{ID: 65531, Type: ruleTypeTransport, Plugin: PluginNMP, Transport: "file"},
		{ID: 65532, Type: ruleTypeTransport, Plugin: PluginNMP, Transport: "block"},
		{ID: 65533, Type: ruleTypeTransport, Plugin: PluginNMP, Transport: "nbd"},
		{ID: 65534, Type: ruleTypeTransport, Plugin: PluginNMP, Transport: transportUnknown},
		{ID: 65535, Type: ruleTypeVendor, Plugin: PluginNMP, Vendor: "*", Model: "*"},
	}
	for _, r := range sys {
		r.System = true
		r.Class = ruleClassRuntime
		c.rules = append(c.rules, r)
		if r.ID >= RuleUserMin && r.ID <= RuleUserMax {
			r.Class = ruleClassFile
			c.rules = append(c.rules, r)
		}
	}
	c.sortLocked()
	return c
}

func (c *ClaimRules) sortLocked() {
	sort.SliceStable(c.rules, func(i, j int) bool {
		if c.rules[i].ID != c.rules[j].ID {
			return c.rules[i].ID < c.rules[j].ID
		}
		return c.rules[i].Class < c.rules[j].Class
	})
}

// Validate checks a user rule: its number in 101–65435, a known type
// with what that type matches, a plugin name, valid patterns.
func (r Rule) Validate() error {
	if r.ID < 0 || r.ID > RuleMax {
		return fmt.Errorf("claim rule %d: rule numbers run from 0 to %d", r.ID, RuleMax)
	}
	if r.ID <= RuleSystemLowMax || r.ID >= RuleSystemHighMin {
		return fmt.Errorf("claim rule %d is in a reserved range (0–%d and %d–%d are for the system): use a number from %d to %d",
			r.ID, RuleSystemLowMax, RuleSystemHighMin, RuleMax, RuleUserMin, RuleUserMax)
	}
	if r.Plugin == "" || strings.ContainsAny(r.Plugin, " \t") {
		return fmt.Errorf("claim rule %d: plugin %q: name a plugin such as NMP or MASK_PATH", r.ID, r.Plugin)
	}
	if r.Plugin != PluginMaskPath && r.Plugin != PluginNMP {
		if _, err := LookupMPP(r.Plugin); err != nil {
			return fmt.Errorf("claim rule %d: %v (or MASK_PATH)", r.ID, err)
		}
	}
	check := func(what, p string) error {
		if err := CheckGlob(p); err != nil {
			return fmt.Errorf("claim rule %d: %s pattern %q: %v", r.ID, what, p, err)
		}
		return nil
	}
	switch r.Type {
	case ruleTypeVendor:
		if r.Vendor == "" && r.Model == "" {
			return fmt.Errorf("claim rule %d: a vendor rule needs vendor= or model= (use * for any)", r.ID)
		}
		if err := check("vendor", r.Vendor); err != nil {
			return err
		}
		return check("model", r.Model)
	case ruleTypeLocation:
		if strings.Count(r.Location, ":") != 3 {
			return fmt.Errorf("claim rule %d: location %q: want adapter:channel:target:lun, e.g. vmhba2:C0:*:*", r.ID, r.Location)
		}
		return check("location", strings.ReplaceAll(r.Location, ":", ""))
	case ruleTypeTransport:
		if !KnownTransport(r.Transport) {
			return fmt.Errorf("claim rule %d: transport %q: want one of %s", r.ID, r.Transport, strings.Join(Transports, ", "))
		}
		return nil
	case ruleTypeDriver:
		if r.Driver == "" {
			return fmt.Errorf("claim rule %d: a driver rule needs driver=", r.ID)
		}
		return check("driver", r.Driver)
	}
	return fmt.Errorf("claim rule %d: type %q: want vendor, location, transport or driver", r.ID, r.Type)
}

// Add adds a user rule (as both a file and a runtime row).
func (c *ClaimRules) Add(r Rule) error {
	if err := r.Validate(); err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, q := range c.rules {
		if q.ID == r.ID {
			return fmt.Errorf("claim rule %d already exists (%s): remove it first or pick another number", r.ID, q.Matches())
		}
	}
	r.System = false
	for _, cl := range []string{ruleClassFile, ruleClassRuntime} {
		r.Class = cl
		c.rules = append(c.rules, r)
	}
	c.sortLocked()
	return nil
}

// Remove removes a user rule.
func (c *ClaimRules) Remove(id int) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	keep := c.rules[:0]
	found := false
	for _, r := range c.rules {
		if r.ID == id {
			if r.System {
				return fmt.Errorf("claim rule %d is a system rule and cannot be removed", id)
			}
			found = true
			continue
		}
		keep = append(keep, r)
	}
	c.rules = keep
	if !found {
		return fmt.Errorf("no claim rule %d", id)
	}
	return nil
}

// List returns every rule row, by number (file before runtime).
func (c *ClaimRules) List() []Rule {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]Rule(nil), c.rules...)
}

// Match returns the lowest-numbered runtime rule that matches.
func (c *ClaimRules) Match(a PathAttrs) (Rule, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, r := range c.rules {
		if r.Class == ruleClassRuntime && r.Match(a) {
			return r, true
		}
	}
	return Rule{}, false
}

// Claim runs the rules over paths: each goes to the plugin of its
// matching rule; MASK_PATH and unmatched paths are hidden (masked).
func (c *ClaimRules) Claim(paths []*Path) (byPlugin map[string][]*Path, masked []*Path) {
	byPlugin = map[string][]*Path{}
	for _, p := range paths {
		r, ok := c.Match(AttrsOf(p))
		if !ok || r.Plugin == PluginMaskPath {
			masked = append(masked, p)
			continue
		}
		byPlugin[r.Plugin] = append(byPlugin[r.Plugin], p)
	}
	return byPlugin, masked
}

// ParseRule parses a user rule written the way ESXi's CLI takes it:
// "101 vendor NMP vendor=MPATHFS model=ALUA*", "102 location MASK_PATH
// location=vmhba2:C0:*:*", "103 transport NMP transport=nbd",
// "104 driver NMP driver=mpathfs_nbd". A value with spaces is quoted:
// model="Universal Xport".
func ParseRule(s string) (Rule, error) {
	f, err := fields(s)
	if err != nil {
		return Rule{}, err
	}
	if len(f) < 4 {
		return Rule{}, fmt.Errorf("claim rule %q: want NUMBER TYPE PLUGIN key=value…, e.g. 101 location MASK_PATH location=vmhba2:C0:*:*", s)
	}
	id, err := strconv.Atoi(f[0])
	if err != nil {
		return Rule{}, fmt.Errorf("claim rule %q: %q is not a rule number", s, f[0])
	}
	r := Rule{ID: id, Type: f[1], Plugin: f[2], Class: ruleClassRuntime}
	for _, kv := range f[3:] {
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			return Rule{}, fmt.Errorf("claim rule %q: %q: want key=value", s, kv)
		}
		switch k {
		case "vendor":
			r.Vendor = v
		case "model":
			r.Model = v
		case "transport":
			r.Transport = v
		case "location":
			r.Location = v
		case "driver":
			r.Driver = v
		default:
			return Rule{}, fmt.Errorf("claim rule %q: unknown key %q (vendor, model, transport, location, driver)", s, k)
		}
	}
	return r, r.Validate()
}

// The claim-rule lifecycle, as ESXi's: `claimrule add`, `remove` and
// `move` change the configuration (the "file" rows); `load` makes the
// runtime rows what the file says; only runtime rows claim paths. The
// system rows outside the user range (0–100, 65436–65535) are runtime
// only and cannot be changed.

// reserved reports whether a rule number is in a system range.
func reserved(id int) bool { return id <= RuleSystemLowMax || id >= RuleSystemHighMin }

func (c *ClaimRules) findLocked(id int, class string) int {
	for i, r := range c.rules {
		if r.ID == id && r.Class == class {
			return i
		}
	}
	return -1
}

// AddFile adds a rule to the configuration only: it claims nothing until
// Load.
func (c *ClaimRules) AddFile(r Rule) error {
	if err := r.Validate(); err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if i := c.findLocked(r.ID, ruleClassFile); i >= 0 {
		return fmt.Errorf("claim rule %d already exists in the configuration (%s %s %s): remove it first or pick another number", r.ID, c.rules[i].Type, c.rules[i].Plugin, c.rules[i].Matches())
	}
	r.Class, r.System = ruleClassFile, false
	c.rules = append(c.rules, r)
	c.sortLocked()
	return nil
}

// RemoveFile removes a rule from the configuration; the runtime keeps it
// until Load. Rules in the reserved ranges cannot be removed.
func (c *ClaimRules) RemoveFile(id int) (Rule, error) {
	if id < 0 || id > RuleMax {
		return Rule{}, fmt.Errorf("claim rule %d: rule numbers run from 0 to %d", id, RuleMax)
	}
	if reserved(id) {
		return Rule{}, fmt.Errorf("claim rule %d is a system rule and cannot be removed (rules %d–%d are yours)", id, RuleUserMin, RuleUserMax)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	i := c.findLocked(id, ruleClassFile)
	if i < 0 {
		return Rule{}, fmt.Errorf("no claim rule %d in the configuration (`mpathfs claimrule list` shows the file rows)", id)
	}
	r := c.rules[i]
	c.rules = append(c.rules[:i], c.rules[i+1:]...)
	return r, nil
}

// MoveFile renumbers a rule of the configuration (ESXi's `claimrule
// move`); the runtime keeps the old number until Load.
func (c *ClaimRules) MoveFile(from, to int) (Rule, error) {
	c.mu.Lock()
	i := c.findLocked(from, ruleClassFile)
	if i < 0 {
		c.mu.Unlock()
		if reserved(from) {
			return Rule{}, fmt.Errorf("claim rule %d is a system rule and cannot be moved", from)
		}
		return Rule{}, fmt.Errorf("no claim rule %d in the configuration (`mpathfs claimrule list` shows the file rows)", from)
	}
	r := c.rules[i]
	c.mu.Unlock()
	moved := r
	moved.ID = to
	if err := moved.Validate(); err != nil {
		return Rule{}, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if j := c.findLocked(to, ruleClassFile); j >= 0 {
		return Rule{}, fmt.Errorf("claim rule %d already exists in the configuration: pick a free number", to)
	}
	if i = c.findLocked(from, ruleClassFile); i < 0 {
		return Rule{}, fmt.Errorf("no claim rule %d in the configuration", from)
	}
	c.rules[i].ID = to
	c.sortLocked()
	return c.rules[c.findLocked(to, ruleClassFile)], nil
}

// NextFree is the lowest free rule number from 5000 up (ESXi's
// --autoassign), looking at both classes.
func (c *ClaimRules) NextFree() (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	used := map[int]bool{}
	for _, r := range c.rules {
		used[r.ID] = true
	}
	for id := 5000; id <= RuleUserMax; id++ {
		if !used[id] {
			return id, nil
		}
	}
	return 0, fmt.Errorf("no free claim rule number from 5000 to %d: give --rule", RuleUserMax)
}

// LoadResult says what Load changed in the runtime rows.
type LoadResult struct {
	Added   []Rule `json:"added"`
	Removed []Rule `json:"removed"`
}

// Load replaces the runtime rows in the user range with the file rows
// (ESXi's `claimrule load`). Paths already claimed keep their plugin
// until `claimrule run` or `claiming reclaim`.
func (c *ClaimRules) Load() LoadResult {
	c.mu.Lock()
	defer c.mu.Unlock()
	old := map[int]Rule{}
	keep := make([]Rule, 0, len(c.rules))
	var files []Rule
	for _, r := range c.rules {
		switch {
		case r.Class == ruleClassFile:
			files = append(files, r)
			keep = append(keep, r)
		case reserved(r.ID):
			keep = append(keep, r)
		default:
			old[r.ID] = r
		}
	}
	res := LoadResult{Added: []Rule{}, Removed: []Rule{}}
	for _, f := range files {
		rt := f
		rt.Class = ruleClassRuntime
		keep = append(keep, rt)
		if o, ok := old[f.ID]; ok && sameRule(o, rt) {
			delete(old, f.ID)
			continue
		}
		res.Added = append(res.Added, rt)
	}
	for _, o := range old {
		res.Removed = append(res.Removed, o)
	}
	sort.Slice(res.Removed, func(i, j int) bool { return res.Removed[i].ID < res.Removed[j].ID })
	c.rules = keep
	c.sortLocked()
	return res
}

func sameRule(a, b Rule) bool {
	a.System, b.System = false, false
	return a == b
}

// FileRules returns the configuration's user rules (not the defaults), in
// the form ParseRule reads, for writing back to a config file.
func (c *ClaimRules) FileRules() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []string
	for _, r := range c.rules {
		if r.Class == ruleClassFile && !r.System {
			out = append(out, r.Spec())
		}
	}
	return out
}

// Spec writes a rule the way ParseRule reads it; values with spaces are
// quoted.
func (r Rule) Spec() string {
	f := []string{strconv.Itoa(r.ID), r.Type, r.Plugin}
	add := func(k, v string) {
		if v == "" {
			return
		}
		if strings.ContainsAny(v, " \t\"") {
			v = strconv.Quote(v)
		}
		f = append(f, k+"="+v)
	}
	add("vendor", r.Vendor)
	add("model", r.Model)
	add("transport", r.Transport)
	add("location", r.Location)
	add("driver", r.Driver)
	return strings.Join(f, " ")
}

// fields splits a rule on blanks, keeping a double-quoted value ("model=
// \"Universal Xport\"") in one field, unquoted.
func fields(s string) ([]string, error) {
	var out []string
	var cur strings.Builder
	in, started := false, false
	for i := 0; i < len(s); i++ {
		ch := s[i]
		switch {
		case ch == '"' && !in:
			in, started = true, true
		case ch == '"' && in:
			in = false
		case ch == '\\' && in && i+1 < len(s):
			i++
			cur.WriteByte(s[i])
		case (ch == ' ' || ch == '\t') && !in:
			if started {
				out = append(out, cur.String())
				cur.Reset()
				started = false
			}
		default:
			cur.WriteByte(ch)
			started = true
		}
	}
	if in {
		return nil, fmt.Errorf("claim rule %q: a quote is not closed", s)
	}
	if started {
		out = append(out, cur.String())
	}
	return out, nil
}
