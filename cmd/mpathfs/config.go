package main

import (
	"bytes"
	"errors"
	"fmt"
	"os"

	"gopkg.in/yaml.v3"

	"github.com/mpathfs/mpathfs/fusedev"
	"github.com/mpathfs/mpathfs/host"
	"github.com/mpathfs/mpathfs/nmp"
)

// Config is the YAML file `mpathfs mount --config FILE` reads.
type Config struct {
	// StateDir holds the default lab's store (default /var/lib/mpathfs).
	StateDir string `yaml:"state_dir"`
	// Host is the host's name (default: the machine's hostname): the
	// initiator name of iscsi:// paths that name none.
	Host string `yaml:"host"`
	// Control is the control socket (default /run/mpathfs/control.sock).
	Control string `yaml:"control"`
	// Metrics is an address for the Prometheus endpoint (off when empty).
	Metrics string `yaml:"metrics"`
	// Trace records every I/O as a JSON line to this file.
	Trace string `yaml:"trace"`
	// Scenario runs this scenario file once the mount is up.
	Scenario string `yaml:"scenario"`
	// ClaimRules are added to the default claim rules, in the form
	// "101 location MASK_PATH location=vmhba2:C0:*:*".
	ClaimRules []string `yaml:"claim_rules"`
	// SATPRules are added to the default SATP rules.
	SATPRules []nmp.SATPRule `yaml:"satp_rules"`
	// SATPDefaultPSP sets SATPs' default PSPs (SATP name → PSP name), as
	// `satp set --default-psp` writes it.
	SATPDefaultPSP map[string]string `yaml:"satp_default_psp"`
	// Scan are block-device globs: `adapter rescan` and hotplug claim the
	// block devices they match that no path leads to yet.
	Scan []string `yaml:"scan"`
	// MaxRequests bounds the FUSE requests held at once (0: the default,
	// -1: no bound); see fusedev.Options.MaxRequests.
	MaxRequests int `yaml:"max_requests"`
	// MemoryLimit is the daemon's soft memory limit: "auto" (the default,
	// sized from MaxRequests), "off", or a size such as 256MiB.
	MemoryLimit string `yaml:"memory_limit"`
	// MultiWriter lets up to 8 hosts share every device's store (as
	// `mount --multi-writer`; a device's own multi_writer does it for
	// that device alone).
	MultiWriter bool                `yaml:"multi_writer"`
	Devices     []host.DeviceConfig `yaml:"devices"`
}

// LoadConfig reads and validates a YAML config file.
func LoadConfig(name string) (*Config, error) {
	b, err := os.ReadFile(name)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	return ParseConfig(name, b)
}

// ParseConfig parses and validates a config; unknown keys are errors.
func ParseConfig(name string, b []byte) (*Config, error) {
	var c Config
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(&c); err != nil {
		return nil, fmt.Errorf("config %s: %v", name, err)
	}
	if err := c.Validate(); err != nil {
		return nil, fmt.Errorf("config %s: %v", name, err)
	}
	return &c, nil
}

// Validate checks everything that can be checked before anything is opened.
func (c *Config) Validate() error {
	if len(c.Devices) == 0 {
		return errors.New("no devices: add a devices: list with at least one device and its paths")
	}
	if c.MaxRequests < -1 {
		return fmt.Errorf("max_requests %d: want a positive number of requests, 0 for the default (%d) or -1 for no bound", c.MaxRequests, fusedev.DefaultMaxRequests)
	}
	if _, _, err := parseMemoryLimit(c.MemoryLimit); err != nil {
		return err
	}
	_, satp, err := host.Rules(c.ClaimRules, c.SATPRules)
	if err != nil {
		return err
	}
	if err := host.SetDefaultPSPs(satp, c.SATPDefaultPSP); err != nil {
		return err
	}
	if err := host.CheckScan(c.Scan); err != nil {
		return err
	}
	names := map[string]bool{}
	pathNames := map[string]string{}
	for i, d := range c.Devices {
		if d.Name != "" && names[d.Name] {
			return fmt.Errorf("devices[%d]: two devices named %q", i, d.Name)
		}
		names[d.Name] = true
		if err := d.Validate(fmt.Sprintf("devices[%d]", i)); err != nil {
			return err
		}
		for j, p := range d.Paths {
			pw := fmt.Sprintf("device %s paths[%d]", d.Name, j)
			if p.Name != "" {
				if other, dup := pathNames[p.Name]; dup {
					return fmt.Errorf("%s: path name %q is already used by %s", pw, p.Name, other)
				}
				pathNames[p.Name] = pw
			}
		}
	}
	return nil
}
