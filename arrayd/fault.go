package arrayd

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/mpathfs/mpathfs/backends/fault"
	"github.com/mpathfs/mpathfs/ioerr"
)

// Fault is a fault injected at the array, in the fault language of paths
// (`mpathfs fault inject`, docs/faults.md) narrowed to what an array can
// do, plus where it applies: a port, an initiator, logical units. It
// travels as JSON on the control socket and as flags on the command line
// (ParseFault, Args).
type Fault struct {
	ID int `json:"id,omitempty"`

	// Where: a zero field matches everything.
	Port      uint16   `json:"port,omitempty"`
	Initiator string   `json:"initiator,omitempty"`
	LUNs      []uint64 `json:"luns,omitempty"`
	// Ops: read, write, flush, discard, probe, other, any (default: read,
	// write, flush and discard). LBA limits ranged commands to those
	// overlapping FROM-TO (inclusive, in logical blocks).
	Ops []string `json:"ops,omitempty"`
	LBA string   `json:"lba,omitempty"`
	// Count removes the fault after it fired this many times.
	Count int `json:"count,omitempty"`

	// What: Delay first, then one of the others.
	//
	// Error is an error class as paths know it: retryable, not-ready,
	// device-error, permanent-loss (CHECK CONDITION with that class's
	// sense) or path-failure (the connection drops: a transport failure).
	Error string `json:"error,omitempty"`
	// Sense is the sense KEY/ASC/ASCQ in hex (02/04/0a); with or without
	// Error.
	Sense string `json:"sense,omitempty"`
	// Status is busy, task-set-full or reservation-conflict.
	Status         string        `json:"status,omitempty"`
	Delay          time.Duration `json:"delay,omitempty"`
	Hang           bool          `json:"hang,omitempty"`
	LandLate       time.Duration `json:"land_late,omitempty"`
	DropConnection bool          `json:"drop_connection,omitempty"`
}

// classSense is the sense an --error class carries at the array: the same
// codes as a path's fault (docs/faults.md).
var classSense = map[ioerr.Class]ioerr.Sense{
	ioerr.ClassRetryable:     {Key: ioerr.SenseAbortedCommand},
	ioerr.ClassNotReady:      {Key: ioerr.SenseNotReady, ASC: 0x04},
	ioerr.ClassDeviceError:   ioerr.SenseUnrecoveredRead,
	ioerr.ClassPermanentLoss: ioerr.SenseLUNotSupported,
}

// statuses are the SCSI statuses --status takes.
var statuses = map[string]uint8{"busy": 0x08, "task-set-full": 0x28, "reservation-conflict": 0x18}

// sense resolves Error and Sense to the sense data the fault answers
// with; nil when it answers none.
func (f Fault) sense() (*ioerr.Sense, error) {
	var s *ioerr.Sense
	if f.Error != "" {
		c, err := ioerr.ParseClass(f.Error)
		if err != nil {
			return nil, fmt.Errorf("array fault: --error %q: want path-failure, retryable, not-ready, device-error or permanent-loss", f.Error)
		}
		if c != ioerr.ClassPathFailure {
			cs, ok := classSense[c]
			if !ok {
				return nil, fmt.Errorf("array fault: --error %q carries no sense at the array", f.Error)
			}
			s = &cs
		}
	}
	if f.Sense != "" {
		v, err := fault.ParseSense(f.Sense)
		if err != nil {
			return nil, fmt.Errorf("array fault: %w", err)
		}
		s = &v
	}
	return s, nil
}

// drops reports whether the fault drops the connection.
func (f Fault) drops() bool { return f.DropConnection || strings.EqualFold(f.Error, "path-failure") }

// lbaRange parses LBA ("A-B", or one block "A").
func (f Fault) lbaRange() (from, to uint64, err error) {
	if f.LBA == "" {
		return 0, 0, nil
	}
	a, b, ok := strings.Cut(f.LBA, "-")
	if !ok {
		b = a
	}
	from, err1 := strconv.ParseUint(strings.TrimSpace(a), 0, 64)
	to, err2 := strconv.ParseUint(strings.TrimSpace(b), 0, 64)
	if err1 != nil || err2 != nil || to < from {
		return 0, 0, fmt.Errorf("array fault: --lba %q: want FROM-TO in logical blocks with FROM <= TO, e.g. --lba 0-2047", f.LBA)
	}
	return from, to, nil
}

var faultOps = []string{"read", "write", "flush", "discard", "probe", "other", "any"}

// Validate names the first thing wrong with the fault.
func (f Fault) Validate() error {
	s, err := f.sense()
	if err != nil {
		return err
	}
	if _, _, err := f.lbaRange(); err != nil {
		return err
	}
	for _, o := range f.Ops {
		ok := false
		for _, k := range faultOps {
			ok = ok || o == k
		}
		if !ok {
			return fmt.Errorf("array fault: --op %q: want a comma-separated list of %s", o, strings.Join(faultOps, ", "))
		}
	}
	if f.Status != "" {
		if _, ok := statuses[f.Status]; !ok {
			return fmt.Errorf("array fault: --status %q: want busy, task-set-full or reservation-conflict", f.Status)
		}
	}
	effects := []string{}
	for name, on := range map[string]bool{
		"--error/--sense": s != nil, "--status": f.Status != "", "--hang": f.Hang,
		"--land-late": f.LandLate > 0, "--drop-connection": f.drops(),
	} {
		if on {
			effects = append(effects, name)
		}
	}
	switch {
	case f.Delay < 0 || f.LandLate < 0 || f.Count < 0:
		return fmt.Errorf("array fault: --delay, --land-late and --count must not be negative")
	case len(effects) > 1:
		return fmt.Errorf("array fault: give one of --error/--sense, --status, --hang, --land-late and --drop-connection (with --delay before it if you like), not %s", strings.Join(effects, " and "))
	case len(effects) == 0 && f.Delay == 0:
		return fmt.Errorf("array fault: does nothing: give --error, --sense, --status, --delay, --hang, --land-late or --drop-connection")
	}
	return nil
}

// ParseFault reads a fault from flags, the way `mpathfs fault inject`
// reads a path's: --flag value or --flag=value.
//
//	where:  --port N  --initiator IQN  --lu LUN (repeatable)  --op LIST  --lba A-B  --count N
//	what:   --error CLASS | --sense KK/AA/QQ | --status busy|task-set-full|reservation-conflict
//	        | --hang | --land-late D | --drop-connection;  --delay D (alone or before one of them)
func ParseFault(args []string) (Fault, error) {
	var f Fault
	for i := 0; i < len(args); i++ {
		a := args[i]
		if !strings.HasPrefix(a, "-") {
			return Fault{}, fmt.Errorf("array fault: unexpected argument %q: a fault is given by flags such as --error not-ready --port 1", a)
		}
		name, val, hasVal := strings.Cut(strings.TrimLeft(a, "-"), "=")
		boolean := name == "hang" || name == "drop-connection"
		if !hasVal {
			if boolean {
				val = "true"
			} else {
				if i+1 >= len(args) {
					return Fault{}, fmt.Errorf("array fault: --%s needs a value", name)
				}
				i++
				val = args[i]
			}
		}
		var err error
		switch name {
		case "port":
			var n uint64
			n, err = strconv.ParseUint(val, 10, 16)
			f.Port = uint16(n)
		case "initiator":
			f.Initiator = val
		case "lu", "lun":
			var n uint64
			n, err = strconv.ParseUint(val, 10, 64)
			f.LUNs = append(f.LUNs, n)
		case "op", "ops":
			f.Ops = append(f.Ops, strings.Split(val, ",")...)
		case "lba":
			f.LBA = val
		case "count":
			f.Count, err = strconv.Atoi(val)
		case "error":
			f.Error = val
		case "sense":
			f.Sense = val
		case "status":
			f.Status = val
		case "delay", "latency":
			f.Delay, err = time.ParseDuration(val)
		case "hang":
			f.Hang, err = strconv.ParseBool(val)
		case "land-late":
			f.LandLate, err = time.ParseDuration(val)
		case "drop-connection":
			f.DropConnection, err = strconv.ParseBool(val)
		default:
			return Fault{}, fmt.Errorf("array fault: unknown flag --%s (known: --port, --initiator, --lu, --op, --lba, --count, --error, --sense, --status, --delay, --hang, --land-late, --drop-connection)", name)
		}
		if err != nil {
			return Fault{}, fmt.Errorf("array fault: --%s %q: %v", name, val, err)
		}
	}
	return f, f.Validate()
}

// Args prints the fault as the flags ParseFault reads back.
func (f Fault) Args() []string {
	var a []string
	add := func(k, v string) { a = append(a, "--"+k, v) }
	if f.Port != 0 {
		add("port", strconv.Itoa(int(f.Port)))
	}
	if f.Initiator != "" {
		add("initiator", f.Initiator)
	}
	for _, l := range f.LUNs {
		add("lu", strconv.FormatUint(l, 10))
	}
	if len(f.Ops) > 0 {
		add("op", strings.Join(f.Ops, ","))
	}
	if f.LBA != "" {
		add("lba", f.LBA)
	}
	if f.Count != 0 {
		add("count", strconv.Itoa(f.Count))
	}
	if f.Delay != 0 {
		add("delay", f.Delay.String())
	}
	if f.Error != "" {
		add("error", f.Error)
	}
	if f.Sense != "" {
		add("sense", f.Sense)
	}
	if f.Status != "" {
		add("status", f.Status)
	}
	if f.Hang {
		a = append(a, "--hang")
	}
	if f.LandLate != 0 {
		add("land-late", f.LandLate.String())
	}
	if f.DropConnection {
		a = append(a, "--drop-connection")
	}
	return a
}

// String is the fault in its flag form.
func (f Fault) String() string { return strings.Join(f.Args(), " ") }

// MarshalJSON writes durations as "2s".
func (f Fault) MarshalJSON() ([]byte, error) {
	type plain Fault
	return json.Marshal(struct {
		plain
		Delay    string `json:"delay,omitempty"`
		LandLate string `json:"land_late,omitempty"`
	}{plain(f), durStr(f.Delay), durStr(f.LandLate)})
}

// UnmarshalJSON reads durations as "2s" (or nanoseconds).
func (f *Fault) UnmarshalJSON(b []byte) error {
	type plain Fault
	var v struct {
		plain
		Delay    json.RawMessage `json:"delay,omitempty"`
		LandLate json.RawMessage `json:"land_late,omitempty"`
	}
	if err := json.Unmarshal(b, &v); err != nil {
		return err
	}
	*f = Fault(v.plain)
	var err error
	if f.Delay, err = durOf(v.Delay); err != nil {
		return fmt.Errorf("delay: %w", err)
	}
	if f.LandLate, err = durOf(v.LandLate); err != nil {
		return fmt.Errorf("land_late: %w", err)
	}
	return nil
}

func durStr(d time.Duration) string {
	if d == 0 {
		return ""
	}
	return d.String()
}

func durOf(raw json.RawMessage) (time.Duration, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return 0, nil
	}
	var s string
	if json.Unmarshal(raw, &s) == nil {
		if s == "" {
			return 0, nil
		}
		return time.ParseDuration(s)
	}
	var n int64
	if err := json.Unmarshal(raw, &n); err != nil {
		return 0, fmt.Errorf("want a duration such as \"2s\"")
	}
	return time.Duration(n), nil
}
