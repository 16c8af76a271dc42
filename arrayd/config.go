package arrayd

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/mpathfs/mpathfs/array"
	"github.com/mpathfs/mpathfs/backends"
)

// Config describes one array server (the YAML of `mpathfs array serve
// --config`). docs/array.md is its reference.
type Config struct {
	// Name names the array in status and in `mpathfs array fail NAME …`
	// (default "array").
	Name string `yaml:"name"`
	// Target is the iSCSI target name (iqn.… or eui.…).
	Target string `yaml:"target"`
	// StateDir keeps what persists across restarts: each LU's reservation
	// state (when a host asked for APTPL) and, with alua.persist, the ALUA
	// state. Default: $MPATHFS_STATE_DIR/array-NAME, else
	// /var/lib/mpathfs/array-NAME.
	StateDir string `yaml:"state_dir"`
	ALUA     ALUA   `yaml:"alua"`
	// LUs are the logical units, each on a file-backed store.
	LUs []LU `yaml:"lus"`
	// Controllers are the storage controllers: each one target port group
	// whose ports are iSCSI portals.
	Controllers []Controller `yaml:"controllers"`
	// CHAP lists initiators that must log in with CHAP.
	CHAP []CHAPUser `yaml:"chap"`
	// RequireCHAP refuses initiators not listed in CHAP.
	RequireCHAP bool `yaml:"require_chap"`
}

// ALUA is how the array presents its LUs on its controllers.
type ALUA struct {
	// Access is active-active (asymmetric: the owner's group AO, the
	// others ANO; the default) or active-passive (only the owner serves;
	// a command on a passive port is refused until a trespass).
	Access string `yaml:"access"`
	// Transitions are implicit (the array moves ownership off a failed
	// controller; in active-passive: auto-trespass), explicit (hosts send
	// SET TARGET PORT GROUPS) or both (the default; active-passive:
	// implicit).
	Transitions string `yaml:"transitions"`
	// Owner is the controller owning the LUs at start (default the
	// first); Preferred carries the PREF bit (default Owner).
	Owner     string `yaml:"owner"`
	Preferred string `yaml:"preferred"`
	// Failback returns ownership to the preferred controller when it is
	// restored (implicit transitions only).
	Failback bool `yaml:"failback"`
	// Transition is how long a group reports transitioning (default 0).
	Transition Duration `yaml:"transition"`
	// ANOLatency is added to every command through a non-owning port.
	ANOLatency Duration `yaml:"ano_latency"`
	// Persist keeps the ALUA state (owner, failed controllers) in
	// state_dir and restores it at start.
	Persist bool `yaml:"persist"`
	// TrespassOnIO (active-passive only): a read or write through the
	// passive controller's port moves the LU there (auto-trespass);
	// TEST UNIT READY passes on every port.
	TrespassOnIO bool `yaml:"trespass_on_io"`
}

// LU is one logical unit.
type LU struct {
	Name string `yaml:"name"`
	LUN  uint64 `yaml:"lun"`
	// File is the store; Size its size (1G, 512M; needed when Create
	// makes it). Create makes a missing file (sparse) of Size.
	File   string `yaml:"file"`
	Size   string `yaml:"size"`
	Create *bool  `yaml:"create"`
	// WWID is the NAA identifier (naa. + 16 or 32 hex digits); default
	// derived from the target name and LUN.
	WWID      string `yaml:"wwid"`
	Vendor    string `yaml:"vendor"`
	Model     string `yaml:"model"`
	Serial    string `yaml:"serial"`
	BlockSize uint32 `yaml:"block_size"`
}

// Controller is one storage controller.
type Controller struct {
	Name  string `yaml:"name"`
	TPG   uint16 `yaml:"tpg"`
	Ports []Port `yaml:"ports"`
}

// Port is one target port: its relative port identifier and the portal
// that serves it.
type Port struct {
	ID uint16 `yaml:"id"`
	// Portal is HOST:PORT; port 0 picks a free port (printed at start).
	Portal string `yaml:"portal"`
	// Netns, when set, is a network namespace (a name under /run/netns or
	// a path such as /proc/PID/ns/net) the portal listens in.
	Netns string `yaml:"netns"`
}

// CHAPUser is one initiator's CHAP credentials.
type CHAPUser struct {
	// Initiator is the initiator name (IQN) the secret belongs to.
	Initiator string `yaml:"initiator"`
	// User is the CHAP name (CHAP_N) the initiator presents; default the
	// initiator name.
	User   string `yaml:"user"`
	Secret string `yaml:"secret"`
	// TargetUser and TargetSecret enable mutual CHAP.
	TargetUser   string `yaml:"target_user"`
	TargetSecret string `yaml:"target_secret"`
}

// Duration is a time.Duration written as "500ms" in YAML.
type Duration time.Duration

// UnmarshalYAML reads "500ms", "2s".
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	v, err := time.ParseDuration(n.Value)
	if err != nil {
		return fmt.Errorf("line %d: %q is not a duration (write 500ms, 2s)", n.Line, n.Value)
	}
	*d = Duration(v)
	return nil
}

// MarshalYAML writes the duration as a string.
func (d Duration) MarshalYAML() (any, error) { return time.Duration(d).String(), nil }

// DefaultTarget is the built-in array's iSCSI target name.
const DefaultTarget = "iqn.2026-12.io.mpathfs:array"

// Default is the built-in array: two controllers (A owns the LU; TPG 1,
// ports 1 and 2 on 127.0.0.1:3260 and :3261; B, TPG 2, ports 3 and 4 on
// :3262 and :3263), one 1 GiB LU at LUN 0 stored sparse in
// stateDir/array.img, implicit and explicit transitions.
func Default(stateDir string) Config {
	return Config{
		Name:     "array",
		Target:   DefaultTarget,
		StateDir: filepath.Join(stateDir, "array"),
		ALUA:     ALUA{Access: "active-active", Transitions: "both", Owner: "A", Persist: true},
		LUs: []LU{{
			Name: "lu0", LUN: 0, File: filepath.Join(stateDir, "array.img"), Size: "1G",
			WWID: "naa.600d0230000000000000000000a77a01", Vendor: "MPATHFS", Model: "ISCSI-ARRAY", Serial: "MPA0000001",
		}},
		Controllers: []Controller{
			{Name: "A", TPG: 1, Ports: []Port{{ID: 1, Portal: "127.0.0.1:3260"}, {ID: 2, Portal: "127.0.0.1:3261"}}},
			{Name: "B", TPG: 2, Ports: []Port{{ID: 3, Portal: "127.0.0.1:3262"}, {ID: 4, Portal: "127.0.0.1:3263"}}},
		},
	}
}

// DefaultStateDir is $MPATHFS_STATE_DIR, else /var/lib/mpathfs.
func DefaultStateDir() string {
	if d := os.Getenv("MPATHFS_STATE_DIR"); d != "" {
		return d
	}
	return "/var/lib/mpathfs"
}

// Load reads a config file strictly (an unknown key is an error naming it
// and its line), fills in defaults and validates it.
func Load(path string) (Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return Config{}, err
	}
	c, err := Parse(b)
	if err != nil {
		return Config{}, fmt.Errorf("%s: %w", path, err)
	}
	return c, nil
}

var unknownField = regexp.MustCompile(`line (\d+): field (\S+) not found in type arrayd\.(\w+)`)

// Parse is Load on the file's contents.
func Parse(b []byte) (Config, error) {
	var c Config
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(&c); err != nil {
		if errors.Is(err, io.EOF) {
			return Config{}, errors.New("the config is empty: give at least target, lus and controllers (docs/array.md has an example)")
		}
		msg := unknownField.ReplaceAllStringFunc(err.Error(), func(m string) string {
			s := unknownField.FindStringSubmatch(m)
			return fmt.Sprintf("line %s: unknown key %q in %s (docs/array.md lists the keys)", s[1], s[2], sectionOf[s[3]])
		})
		return Config{}, errors.New(msg)
	}
	return c.withDefaults()
}

var sectionOf = map[string]string{
	"Config": "the top level", "ALUA": "alua", "LU": "an entry of lus", "Controller": "a controller",
	"Port": "a port", "CHAPUser": "an entry of chap",
}

var nameRE = regexp.MustCompile(`^(iqn\.[0-9]{4}-[0-9]{2}\.[^ ]+|eui\.[0-9A-Fa-f]{16})$`)

// withDefaults fills in defaults and checks everything a server needs,
// naming what is wrong and how to fix it.
func (c Config) withDefaults() (Config, error) {
	if c.Name == "" {
		c.Name = "array"
	}
	if c.Target == "" {
		return c, errors.New("no target: give the iSCSI target name, e.g. target: iqn.2026-12.com.example:array1")
	}
	if !nameRE.MatchString(c.Target) {
		return c, fmt.Errorf("target %q is not an iSCSI name: write iqn.YYYY-MM.reversed.domain[:suffix] or eui. and 16 hex digits", c.Target)
	}
	if c.StateDir == "" {
		c.StateDir = filepath.Join(DefaultStateDir(), "array-"+c.Name)
	}
	switch c.ALUA.Access {
	case "", "active-active", "aa", "alua":
		c.ALUA.Access = "active-active"
	case "active-passive", "ap":
		c.ALUA.Access = "active-passive"
	default:
		return c, fmt.Errorf("alua.access %q: want active-active or active-passive", c.ALUA.Access)
	}
	switch c.ALUA.Transitions {
	case "":
		c.ALUA.Transitions = "both"
		if c.ALUA.Access == "active-passive" {
			c.ALUA.Transitions = "implicit"
		}
	case "implicit", "explicit", "both":
	default:
		return c, fmt.Errorf("alua.transitions %q: want implicit, explicit or both", c.ALUA.Transitions)
	}
	if c.ALUA.TrespassOnIO && c.ALUA.Access != "active-passive" {
		return c, fmt.Errorf("alua.trespass_on_io: only an active-passive array trespasses on I/O: write access: active-passive or drop trespass_on_io")
	}
	if c.ALUA.Access == "active-passive" && c.ALUA.Transitions != "implicit" {
		return c, fmt.Errorf("alua.transitions %s: an active-passive array changes owner by trespass only: write transitions: implicit", c.ALUA.Transitions)
	}
	if len(c.LUs) == 0 {
		return c, errors.New("no lus: give at least one logical unit with a file and a size")
	}
	luns, names := map[uint64]bool{}, map[string]bool{}
	for i := range c.LUs {
		lu := &c.LUs[i]
		if lu.Name == "" {
			lu.Name = fmt.Sprintf("lu%d", lu.LUN)
		}
		where := fmt.Sprintf("lus[%d] (%s)", i, lu.Name)
		if luns[lu.LUN] {
			return c, fmt.Errorf("%s: LUN %d is used twice: give each LU its own lun", where, lu.LUN)
		}
		if names[lu.Name] {
			return c, fmt.Errorf("%s: two LUs named %s", where, lu.Name)
		}
		luns[lu.LUN], names[lu.Name] = true, true
		if lu.File == "" {
			return c, fmt.Errorf("%s: no file: give the path of its store", where)
		}
		if lu.Create == nil {
			t := true
			lu.Create = &t
		}
		if lu.Size != "" {
			if _, err := lu.Bytes(); err != nil {
				return c, fmt.Errorf("%s: %w", where, err)
			}
		}
		if lu.BlockSize != 0 && lu.BlockSize != 512 && lu.BlockSize != 4096 {
			return c, fmt.Errorf("%s: block_size %d: want 512 or 4096", where, lu.BlockSize)
		}
	}
	if len(c.Controllers) == 0 {
		return c, errors.New("no controllers: give at least one (usually A and B) with ports, each port a portal such as 127.0.0.1:3260")
	}
	ids := map[uint16]string{}
	for i := range c.Controllers {
		ct := &c.Controllers[i]
		if ct.Name == "" {
			return c, fmt.Errorf("controllers[%d] has no name", i)
		}
		if ct.TPG == 0 {
			ct.TPG = uint16(i + 1)
		}
		if len(ct.Ports) == 0 {
			return c, fmt.Errorf("controller %s has no ports: give at least one with an id and a portal", ct.Name)
		}
		for j := range ct.Ports {
			p := &ct.Ports[j]
			if p.ID == 0 {
				return c, fmt.Errorf("controller %s, ports[%d]: no id: number ports from 1 (the relative target port identifier)", ct.Name, j)
			}
			if o, dup := ids[p.ID]; dup {
				return c, fmt.Errorf("port %d is on controllers %s and %s: give each port its own id", p.ID, o, ct.Name)
			}
			ids[p.ID] = ct.Name
			host, port, err := net.SplitHostPort(p.Portal)
			if err != nil || net.ParseIP(host) == nil {
				return c, fmt.Errorf("controller %s, port %d: portal %q: want IP:PORT, e.g. 127.0.0.1:3260 (port 0 picks a free port)", ct.Name, p.ID, p.Portal)
			}
			if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
				return c, fmt.Errorf("controller %s, port %d: portal %q: the port must be 0 to 65535", ct.Name, p.ID, p.Portal)
			}
		}
	}
	seen := map[string]bool{}
	for i, u := range c.CHAP {
		if u.Initiator == "" || u.Secret == "" {
			return c, fmt.Errorf("chap[%d]: give initiator and secret", i)
		}
		if len(u.Secret) < 12 || len(u.Secret) > 16 {
			return c, fmt.Errorf("chap[%d] (%s): the secret has %d characters: RFC 7143 wants 12 to 16 (96 to 128 bits)", i, u.Initiator, len(u.Secret))
		}
		if (u.TargetUser == "") != (u.TargetSecret == "") {
			return c, fmt.Errorf("chap[%d] (%s): mutual CHAP needs both target_user and target_secret", i, u.Initiator)
		}
		if seen[u.Initiator] {
			return c, fmt.Errorf("chap[%d]: initiator %s is listed twice", i, u.Initiator)
		}
		seen[u.Initiator] = true
	}
	if _, err := c.ArrayConfig(); err != nil {
		return c, err
	}
	return c, nil
}

// Bytes is the LU's size in bytes (1G = 1 GiB, as fio and the rest of
// mpathfs read sizes).
func (lu LU) Bytes() (int64, error) {
	n, err := backends.ParseSize(lu.Size)
	if err != nil {
		return 0, err
	}
	if n < 4096 {
		return 0, fmt.Errorf("size %q is under 4k: give a size such as 1G or 512M", lu.Size)
	}
	return n, nil
}

// ArrayConfig is the ALUA core's configuration (package array).
func (c Config) ArrayConfig() (array.ArrayConfig, error) {
	ac := array.ArrayConfig{
		Name:       c.Name,
		Mode:       array.ModeALUA,
		Owner:      c.ALUA.Owner,
		Preferred:  c.ALUA.Preferred,
		Failback:   c.ALUA.Failback,
		Transition: time.Duration(c.ALUA.Transition),
		ANOLatency: time.Duration(c.ALUA.ANOLatency),
		Implicit:   c.ALUA.Transitions == "implicit" || c.ALUA.Transitions == "both",
		Explicit:   c.ALUA.Transitions == "explicit" || c.ALUA.Transitions == "both",

		TrespassOnIO: c.ALUA.TrespassOnIO,
	}
	if c.ALUA.Access == "active-passive" {
		ac.Mode = array.ModeAP
	}
	if len(c.LUs) > 0 {
		lu := c.LUs[0]
		ac.Vendor, ac.Model, ac.Serial, ac.WWID = lu.Vendor, lu.Model, lu.Serial, lu.WWID
	}
	for _, ct := range c.Controllers {
		cc := array.ControllerConfig{Name: ct.Name, TPG: ct.TPG}
		for _, p := range ct.Ports {
			cc.Ports = append(cc.Ports, p.ID)
		}
		ac.Controllers = append(ac.Controllers, cc)
	}
	if err := ac.Validate(); err != nil {
		return ac, err
	}
	return ac, nil
}

// Validated fills in defaults and checks the config (what Load does after
// reading the file).
func (c Config) Validated() (Config, error) { return c.withDefaults() }
