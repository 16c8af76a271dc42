package host

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/mpathfs/mpathfs/backends"
	"github.com/mpathfs/mpathfs/backends/fault"
	"github.com/mpathfs/mpathfs/mpath"
	"github.com/mpathfs/mpathfs/nmp"
)

// DeviceConfig describes one device: its paths and what the host makes of
// them. It is the `devices:` entry of a mount's YAML config.
type DeviceConfig struct {
	Name string `yaml:"name"`
	// Size creates missing file stores sparse with this size ("1G").
	Size string `yaml:"size"`
	// Identity; paths without one of their own adopt it, checked by label
	// and sample blocks (identity.go).
	WWID   string `yaml:"wwid"`
	Vendor string `yaml:"vendor"`
	Model  string `yaml:"model"`
	// WWIDReported says WWID is what the paths reported (GroupByWWID), not
	// an assertion, so it is not held against the files' labels.
	WWIDReported bool `yaml:"-"`

	SATP        string            `yaml:"satp"`
	SATPOptions map[string]string `yaml:"satp_options"`
	PSP         string            `yaml:"psp"`
	PSPOptions  map[string]string `yaml:"psp_options"`

	IOTimeout Duration `yaml:"io_timeout"`
	// APDTimeout is how long I/O waits for a path while none is usable
	// (nil: the default 140 s; zero or negative is an error).
	APDTimeout    *Duration `yaml:"apd_timeout"`
	CheckInterval Duration  `yaml:"check_interval"`
	ProbeTimeout  Duration  `yaml:"probe_timeout"`
	FlapThreshold int       `yaml:"flap_threshold"`
	FlapWindow    Duration  `yaml:"flap_window"`
	HoldDown      Duration  `yaml:"hold_down"`
	MaxRetries    int       `yaml:"max_retries"`
	// Failback: immediate, manual, followover or N (seconds);
	// NoPathRetry: queue, fail or N (checker intervals). dm-multipath's.
	Failback    string `yaml:"failback"`
	NoPathRetry string `yaml:"no_path_retry"`
	// MarginalErrors retryable errors within MarginalWindow (default 60s)
	// demote a path to the marginal group (0: off).
	MarginalErrors int      `yaml:"marginal_errors"`
	MarginalWindow Duration `yaml:"marginal_window"`
	// Hedged reads (on by default): a read outstanding longer than
	// hedge_multiplier × its path's recent p99 read latency, within
	// [hedge_floor, hedge_ceiling], is sent again on another path.
	HedgeReads      string   `yaml:"hedge_reads"`
	HedgeMultiplier float64  `yaml:"hedge_multiplier"`
	HedgeFloor      Duration `yaml:"hedge_floor"`
	HedgeCeiling    Duration `yaml:"hedge_ceiling"`
	HedgeSlowLosses int      `yaml:"hedge_slow_losses"`

	// MultiWriter lets up to 8 hosts share the device's store (`mount
	// --multi-writer`); by default one host at a time opens it
	// (share.go).
	MultiWriter bool `yaml:"multi_writer"`
	// LockSector keeps the device's lock on an array LU (iSCSI paths)
	// in the LU's last block, hidden from the device, taken and kept
	// alive by COMPARE AND WRITE (shareats.go): "auto" (the default, also
	// "") when that block is empty or a lock record already, else the LU
	// is served unlocked at full size with a warning; "last" always,
	// refusing an LU whose last block holds data; "none": no lock on
	// array LUs.
	LockSector string `yaml:"lock_sector"`

	// Array puts a simulated ALUA array in front of the store.
	Array *yaml.Node `yaml:"array"`

	Paths []PathConfig `yaml:"paths"`
}

// PathConfig describes one path.
type PathConfig struct {
	URI      string `yaml:"uri"`
	Name     string `yaml:"name"`
	Location string `yaml:"location"`
	// Port is the simulated array's target port this path reaches.
	Port int `yaml:"port"`
	Rank int `yaml:"rank"`
	// Faults are injected when the device is made, in `fault inject` syntax.
	Faults []string `yaml:"faults"`
	// Quiesce is the path's quiesce time: its server is known to drop or
	// finish a request within this long after the client gave up on it, so
	// a write that timed out on the path stops blocking overlapping writes
	// then. Also as the URI query parameter quiesce=D. Default off.
	Quiesce Duration `yaml:"quiesce"`
}

// Duration is a time.Duration written as "5s" in YAML.
type Duration time.Duration

// UnmarshalYAML reads "500ms", "5s", "2m"; a negative duration is an error.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	v, err := time.ParseDuration(n.Value)
	if err != nil {
		return fmt.Errorf("line %d: %q is not a duration (e.g. 500ms, 5s, 2m)", n.Line, n.Value)
	}
	if v < 0 {
		return fmt.Errorf("line %d: duration %q is negative", n.Line, n.Value)
	}
	*d = Duration(v)
	return nil
}

// Validate checks what can be checked of a device before anything is
// opened; where names the device in errors ("devices[0]").
func (d DeviceConfig) Validate(where string) error {
	if d.Name == "" {
		return fmt.Errorf("%s has no name", where)
	}
	if strings.ContainsAny(d.Name, "/\x00") || d.Name == "." || d.Name == ".." {
		return fmt.Errorf("%s: device name %q cannot be a file name", where, d.Name)
	}
	where = "device " + d.Name
	if d.Size != "" {
		if _, err := ParseSize(d.Size); err != nil {
			return fmt.Errorf("%s: size: %v", where, err)
		}
	}
	if len(d.Paths) == 0 {
		return fmt.Errorf("%s has no paths: add paths: with at least one uri", where)
	}
	switch d.LockSector {
	case "", LockSectorAuto, LockSectorNone:
	case LockSectorLast:
		for j, p := range d.Paths {
			if u, err := backends.ParseURI(p.URI); err == nil && u.Scheme != "iscsi" {
				return fmt.Errorf("%s paths[%d]: lock_sector: last locks array LUs through iSCSI paths (COMPARE AND WRITE); %s is a %s path: give only iscsi:// paths, or drop lock_sector", where, j, p.URI, u.Scheme)
			}
		}
	default:
		return fmt.Errorf("%s: lock_sector %q: want auto (the default: lock array LUs in their last block when it is free), last (always; refuse an LU whose last block holds data) or none (no lock on array LUs)", where, d.LockSector)
	}
	if _, err := nmp.ParseHedgeMode(d.HedgeReads); err != nil {
		return fmt.Errorf("%s: %v", where, err)
	}
	if d.APDTimeout != nil {
		if err := nmp.CheckAPDTimeout(time.Duration(*d.APDTimeout)); err != nil {
			return fmt.Errorf("%s: %v", where, err)
		}
	}
	if _, err := nmp.ParseFailback(d.Failback); err != nil {
		return fmt.Errorf("%s: %v", where, err)
	}
	if _, err := nmp.ParseNoPathRetry(d.NoPathRetry); err != nil {
		return fmt.Errorf("%s: %v", where, err)
	}
	if d.MarginalErrors < 0 {
		return fmt.Errorf("%s: marginal_errors %d: want a positive number of retryable errors (or 0: off)", where, d.MarginalErrors)
	}
	if _, err := decodeArray(d); err != nil {
		return fmt.Errorf("%s: array: %v", where, err)
	}
	for j, p := range d.Paths {
		pw := fmt.Sprintf("%s paths[%d]", where, j)
		if p.URI == "" {
			return fmt.Errorf("%s has no uri", pw)
		}
		clean, q, err := mpath.SplitQuiesce(p.URI)
		if err != nil {
			return fmt.Errorf("%s: %v", pw, err)
		}
		if q > 0 && p.Quiesce > 0 {
			return fmt.Errorf("%s: quiesce given both in the uri and as quiesce: keep one", pw)
		}
		if _, err := backends.ParseURI(clean); err != nil {
			return fmt.Errorf("%s: %v", pw, err)
		}
		if p.Location != "" {
			if _, err := mpath.ParseLocation(p.Location); err != nil {
				return fmt.Errorf("%s: %v", pw, err)
			}
		}
		for _, f := range p.Faults {
			if _, err := fault.ParseArgs(strings.Fields(f)); err != nil {
				return fmt.Errorf("%s: fault %q: %v", pw, f, err)
			}
		}
	}
	return nil
}

// Rules makes the claim and SATP rules a host runs: the defaults plus
// the given ones (claim rules in the form "101 location MASK_PATH
// location=vmhba2:C0:*:*").
func Rules(claimRules []string, satpRules []nmp.SATPRule) (*mpath.ClaimRules, *nmp.SATPRules, error) {
	claims := mpath.DefaultClaimRules()
	for _, r := range claimRules {
		rule, err := mpath.ParseRule(r)
		if err != nil {
			return nil, nil, err
		}
		if err := claims.Add(rule); err != nil {
			return nil, nil, fmt.Errorf("claim_rules: %v", err)
		}
	}
	satp := nmp.DefaultSATPRules()
	for i, r := range satpRules {
		if err := satp.Add(r); err != nil {
			return nil, nil, fmt.Errorf("satp_rules[%d]: %v", i, err)
		}
	}
	return claims, satp, nil
}

// ParseSize parses a store size (512, 4k, 64M, 1G, 2T; KiB, MiB, … alike:
// powers of 1024), which must be positive.
func ParseSize(s string) (int64, error) { return backends.ParsePositiveSize("size", s) }

// ensureStore creates a missing file store, sparse, with the given size.
func ensureStore(uri string, size int64) error {
	u, err := backends.ParseURI(uri)
	if err != nil || u.Scheme != "file" || size <= 0 {
		return err
	}
	p := u.Path
	if _, err := os.Stat(p); err == nil {
		return nil
	}
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return err
	}
	f, err := os.OpenFile(p, os.O_CREATE|os.O_EXCL|os.O_WRONLY|syscall.O_NOFOLLOW, 0o600)
	if err != nil {
		return err
	}
	defer f.Close()
	return f.Truncate(size)
}

// engineConfig turns the YAML into the MPP's device config.
func (d DeviceConfig) engineConfig() mpath.DeviceConfig {
	var apd time.Duration
	if d.APDTimeout != nil {
		apd = time.Duration(*d.APDTimeout)
	}
	return mpath.DeviceConfig{
		Name:           d.Name,
		Identity:       mpath.Identity{WWID: d.WWID, Vendor: d.Vendor, Model: d.Model},
		SATP:           d.SATP,
		SATPOptions:    d.SATPOptions,
		PSP:            d.PSP,
		PSPOptions:     d.PSPOptions,
		IOTimeout:      time.Duration(d.IOTimeout),
		APDTimeout:     apd,
		CheckInterval:  time.Duration(d.CheckInterval),
		ProbeTimeout:   time.Duration(d.ProbeTimeout),
		FlapThreshold:  d.FlapThreshold,
		FlapWindow:     time.Duration(d.FlapWindow),
		HoldDown:       time.Duration(d.HoldDown),
		MaxRetries:     d.MaxRetries,
		Failback:       d.Failback,
		NoPathRetry:    d.NoPathRetry,
		MarginalErrors: d.MarginalErrors,
		MarginalWindow: time.Duration(d.MarginalWindow),

		HedgeReads:      d.HedgeReads,
		HedgeMultiplier: d.HedgeMultiplier,
		HedgeFloor:      time.Duration(d.HedgeFloor),
		HedgeCeiling:    time.Duration(d.HedgeCeiling),
		HedgeSlowLosses: d.HedgeSlowLosses,
	}
}
