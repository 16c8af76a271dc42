package fault

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/mpathfs/mpathfs/backends"
	"github.com/mpathfs/mpathfs/ioerr"
)

// Spec describes one fault. The zero value of every field means "not set".
// A Spec travels as JSON (the control socket) and as CLI-style flags
// (ParseArgs, Args); both forms say the same thing.
type Spec struct {
	// Error is the class of the error to inject, as ioerr.ParseClass
	// accepts it: path-failure, retryable, not-ready, device-error or
	// permanent-loss. Empty for a fault that only delays or hangs.
	Error string `json:"error,omitempty"`
	// Sense overrides the sense data the injected error carries, as
	// "KEY/ASC/ASCQ" in hex ("02/04/0a"). Needs Error.
	Sense string `json:"sense,omitempty"`
	// Late runs the operation on the backend underneath first and then
	// reports the error: the write landed, its acknowledgement was lost.
	// Needs Error.
	Late bool `json:"late,omitempty"`
	// Hang holds the operation until the fault is cleared or expires (then
	// it proceeds to the backend underneath), the caller's context ends or
	// Abort is called (then it fails as a path failure).
	Hang bool `json:"hang,omitempty"`
	// LandLate makes a write-class operation (write, discard,
	// write-zeroes) land late: the caller sees a hang until its context
	// ends, Abort is called or the backend closes, and the operation
	// executes on the backend underneath LandLate after it was issued —
	// the classic stale write of multipath, a request a hung server
	// executes after the initiator gave up on it. The caller's error is a
	// path failure and a backends.Pending whose Settled closes once the
	// late execution has finished (a server that drains, then closes the
	// connection), unless Silent. Reads, flushes and probes it matches
	// are held as by Hang.
	LandLate time.Duration `json:"land_late,omitempty"`
	// Silent makes a LandLate fault give no proof: the caller's error is
	// a plain path failure wrapping the deadline, not a backends.Pending
	// (a server that lands the write late and says nothing; only the
	// path's quiesce time, a fence or APD end the ambiguity), and Abort
	// does not cut the caller's wait short: it ends at the caller's own
	// deadline. Needs LandLate.
	Silent bool `json:"silent,omitempty"`

	// Ops limits the fault to some operations: read, write, flush,
	// discard (also covers write-zeroes) and probe. Empty means all of
	// them. "read,write" is the gray failure: the path checker's probe
	// passes while data I/O fails.
	Ops []string `json:"ops,omitempty"`
	// Offset and Length limit the fault to operations overlapping
	// [Offset, Offset+Length). Length 0 means no range filter. A range
	// filter only ever matches operations with a range (read, write,
	// discard, write-zeroes), never flush or probe.
	Offset int64 `json:"offset,omitempty"`
	Length int64 `json:"length,omitempty"`

	// Triggers; with none set the fault fires on every matching operation.
	//
	// Probability fires on a matching operation with this chance
	// (0 < p ≤ 1), drawn from the fault's seeded generator.
	Probability float64 `json:"probability,omitempty"`
	// Every fires on every Nth matching operation (counted after After).
	Every int `json:"every,omitempty"`
	// After lets the first N matching operations pass.
	After int `json:"after,omitempty"`
	// Count fires at most N times; then the fault expires.
	Count int `json:"count,omitempty"`
	// Duration expires the fault this long after it was injected.
	Duration time.Duration `json:"duration,omitempty"`

	// Effects besides Error and Hang.
	//
	// Latency delays each operation the fault fires on; Jitter adds a
	// uniform random [0, Jitter) on top.
	Latency time.Duration `json:"latency,omitempty"`
	Jitter  time.Duration `json:"jitter,omitempty"`
	// SlowFactor makes an operation take N times its natural time (it
	// runs, then the decorator waits (N-1) × its elapsed time). N ≥ 1.
	SlowFactor float64 `json:"slow_factor,omitempty"`
	// Bandwidth caps the bytes per second that reads and writes matching
	// this fault transfer, together (one token bucket per fault).
	Bandwidth int64 `json:"bandwidth,omitempty"`

	// Corrupt makes the operations the fault fires on succeed with wrong
	// data (see the Corrupt* constants): bitflip (reads and writes),
	// misdirect, drop and torn (writes). The caller is acknowledged as if
	// all went well. Excludes Error, Hang and LandLate.
	Corrupt string `json:"corrupt,omitempty"`
	// Bits is how many bits a bitflip flips per operation (default 1),
	// inside the part of the operation that overlaps the fault's range.
	Bits int `json:"bits,omitempty"`
	// MisdirectBy is how far (bytes, either sign) a misdirected write
	// lands from its own offset; 0 picks a seeded nearby block (1 to 8
	// blocks of 4 KiB away).
	MisdirectBy int64 `json:"misdirect_by,omitempty"`
	// TornAt is how many bytes of a torn write are stored (the rest is
	// not); 0 picks a seeded sector (512-byte) boundary inside the write.
	TornAt int64 `json:"torn_at,omitempty"`

	// Seed seeds the fault's random generator. 0 derives it from the seed
	// given to Wrap and the fault's ID.
	Seed uint64 `json:"seed,omitempty"`
}

// Corruption kinds a Spec's Corrupt accepts.
const (
	CorruptBitflip   = "bitflip"
	CorruptMisdirect = "misdirect"
	CorruptDrop      = "drop"
	CorruptTorn      = "torn"
)

// corruptOps is, per corruption kind, the operations it can apply to.
var corruptOps = map[string]opMask{
	CorruptBitflip:   maskRead | maskWrite,
	CorruptMisdirect: maskWrite,
	CorruptDrop:      maskWrite,
	CorruptTorn:      maskWrite,
}

// Operation names a Spec's Ops accepts.
const (
	OpRead    = "read"
	OpWrite   = "write"
	OpFlush   = "flush"
	OpDiscard = "discard"
	OpProbe   = "probe"
)

type opMask uint8

const (
	maskRead opMask = 1 << iota
	maskWrite
	maskFlush
	maskDiscard
	maskProbe

	maskAll    = maskRead | maskWrite | maskFlush | maskDiscard | maskProbe
	maskRanged = maskRead | maskWrite | maskDiscard
	// maskLandable: the write-class operations a land-late fault lands late.
	maskLandable = maskWrite | maskDiscard
)

var opNames = []struct {
	name string
	mask opMask
}{{OpRead, maskRead}, {OpWrite, maskWrite}, {OpFlush, maskFlush}, {OpDiscard, maskDiscard}, {OpProbe, maskProbe}}

func parseOps(ops []string) (opMask, error) {
	if len(ops) == 0 {
		return maskAll, nil
	}
	var m opMask
next:
	for _, o := range ops {
		for _, n := range opNames {
			if o == n.name {
				m |= n.mask
				continue next
			}
		}
		if o == "write-zeroes" || o == "zero" {
			m |= maskDiscard
			continue
		}
		return 0, fmt.Errorf("fault spec: unknown operation %q in --op (want a comma-separated list of read, write, flush, discard, probe)", o)
	}
	return m, nil
}

// ParseSense parses sense data written as "KEY/ASC/ASCQ" in hex, e.g.
// "02/04/0a" (also "2/4/a" and "0x02/0x04/0x0a").
func ParseSense(s string) (ioerr.Sense, error) {
	parts := strings.Split(s, "/")
	if len(parts) != 3 {
		return ioerr.Sense{}, fmt.Errorf("fault spec: --sense %q: want KEY/ASC/ASCQ in hex, e.g. --sense 02/04/0a", s)
	}
	var b [3]uint8
	for i, p := range parts {
		v, err := strconv.ParseUint(strings.TrimPrefix(strings.ToLower(p), "0x"), 16, 8)
		if err != nil {
			return ioerr.Sense{}, fmt.Errorf("fault spec: --sense %q: want KEY/ASC/ASCQ in hex, e.g. --sense 02/04/0a", s)
		}
		b[i] = uint8(v)
	}
	return ioerr.Sense{Key: b[0], ASC: b[1], ASCQ: b[2]}, nil
}

// Validate reports the first thing wrong with the spec: an unknown error
// class or operation, a value out of range, a contradiction, or a spec that
// does nothing.
func (s Spec) Validate() error {
	_, err := s.compile()
	return err
}

// compiled is what the hot path needs of a valid Spec.
type compiled struct {
	ops   opMask
	class ioerr.Class
	sense *ioerr.Sense
}

func (s Spec) compile() (compiled, error) {
	var c compiled
	var err error
	fail := func(format string, a ...any) (compiled, error) {
		return compiled{}, fmt.Errorf("fault spec: "+format, a...)
	}
	if s.Error != "" {
		if c.class, err = ioerr.ParseClass(s.Error); err != nil {
			return fail("--error %q: want path-failure, retryable, not-ready, device-error, permanent-loss or reservation-conflict", s.Error)
		}
	}
	if s.Sense != "" {
		if s.Error == "" {
			return fail("--sense needs --error: sense data travels with an error")
		}
		sn, err := ParseSense(s.Sense)
		if err != nil {
			return compiled{}, err
		}
		c.sense = &sn
	} else if c.class != ioerr.ClassNone {
		c.sense = defaultSense(c.class)
	}
	if s.Late && s.Error == "" {
		return fail("--late needs --error: it reports an error after the operation ran")
	}
	if s.Hang && s.Error != "" {
		return fail("--hang and --error exclude each other: a held operation returns no error of its own (give --duration or clear it)")
	}
	if c.ops, err = parseOps(s.Ops); err != nil {
		return compiled{}, err
	}
	switch {
	case s.LandLate < 0:
		return fail("--land-late %v is negative", s.LandLate)
	case s.Silent && s.LandLate == 0:
		return fail("--silent needs --land-late D: it says the late landing leaves no proof")
	case s.LandLate > 0 && s.Error != "":
		return fail("--land-late and --error exclude each other: the caller of a late-landing operation sees a hang until its deadline, not an error")
	case s.LandLate > 0 && s.Hang:
		return fail("--land-late and --hang exclude each other: --land-late already holds the caller until its deadline")
	case s.LandLate > 0 && (s.Latency != 0 || s.Jitter != 0 || s.SlowFactor != 0 || s.Bandwidth != 0):
		return fail("--land-late excludes --latency, --jitter, --slow and --bandwidth: the caller waits until its deadline anyway and the operation lands exactly D after it was issued")
	case s.LandLate > 0 && c.ops&maskLandable == 0:
		return fail("--land-late never lands anything with --op %s: add write or discard to --op (or use --hang)", strings.Join(s.Ops, ","))
	}
	if err := s.compileCorrupt(&c); err != nil {
		return compiled{}, err
	}
	switch {
	case s.Offset < 0:
		return fail("--offset %d is negative", s.Offset)
	case s.Length < 0:
		return fail("--length %d is negative", s.Length)
	case s.Offset > 0 && s.Length == 0:
		return fail("--offset needs --length (or give --range OFF:LEN)")
	case s.Length > 0 && s.Offset > math.MaxInt64-s.Length:
		return fail("--range %d:%d overflows", s.Offset, s.Length)
	case s.Length > 0 && c.ops&maskRanged == 0:
		return fail("--range never matches: flush and probe have no range; add read, write or discard to --op")
	case math.IsNaN(s.Probability) || s.Probability < 0 || s.Probability > 1:
		return fail("--probability %v: want 0 < P ≤ 1 or a percentage, e.g. --probability 0.1 or 10%%", s.Probability)
	case s.Every < 0:
		return fail("--every %d is negative", s.Every)
	case s.After < 0:
		return fail("--after %d is negative", s.After)
	case s.Count < 0:
		return fail("--count %d is negative", s.Count)
	case s.Duration < 0:
		return fail("--for %v is negative", s.Duration)
	case s.Latency < 0:
		return fail("--latency %v is negative", s.Latency)
	case s.Jitter < 0:
		return fail("--jitter %v is negative", s.Jitter)
	case math.IsNaN(s.SlowFactor) || math.IsInf(s.SlowFactor, 0) || s.SlowFactor != 0 && s.SlowFactor < 1:
		return fail("--slow %v: want a factor N ≥ 1, e.g. --slow 3", s.SlowFactor)
	case s.Bandwidth < 0:
		return fail("--bandwidth %d is negative", s.Bandwidth)
	case s.Error == "" && !s.Hang && s.LandLate == 0 && s.Corrupt == "" && s.Latency == 0 && s.Jitter == 0 && s.SlowFactor <= 1 && s.Bandwidth == 0:
		return fail("does nothing: give --error, --hang, --land-late, --corrupt, --latency, --jitter, --slow or --bandwidth")
	}
	return c, nil
}

// compileCorrupt validates the corruption fields; with no --op, a
// corruption applies to every operation it can (c.ops narrows to them).
func (s Spec) compileCorrupt(c *compiled) error {
	fail := func(format string, a ...any) error {
		return fmt.Errorf("fault spec: "+format, a...)
	}
	switch {
	case s.Corrupt == "" && s.Bits != 0:
		return fail("--bits needs --corrupt bitflip")
	case s.Corrupt == "" && s.MisdirectBy != 0:
		return fail("--misdirect-by needs --corrupt misdirect")
	case s.Corrupt == "" && s.TornAt != 0:
		return fail("--torn-at needs --corrupt torn")
	case s.Corrupt == "":
		return nil
	}
	allowed, ok := corruptOps[s.Corrupt]
	if !ok {
		return fail("--corrupt %q: want bitflip, misdirect, drop or torn", s.Corrupt)
	}
	switch {
	case s.Error != "":
		return fail("--corrupt and --error exclude each other: a corrupted operation is acknowledged as a success")
	case s.Hang:
		return fail("--corrupt and --hang exclude each other: a corrupted operation is acknowledged")
	case s.LandLate > 0:
		return fail("--corrupt and --land-late exclude each other: a corrupted operation is acknowledged on time")
	case s.Bits != 0 && s.Corrupt != CorruptBitflip:
		return fail("--bits needs --corrupt bitflip, not --corrupt %s", s.Corrupt)
	case s.Bits < 0:
		return fail("--bits %d is negative", s.Bits)
	case s.MisdirectBy != 0 && s.Corrupt != CorruptMisdirect:
		return fail("--misdirect-by needs --corrupt misdirect, not --corrupt %s", s.Corrupt)
	case s.TornAt != 0 && s.Corrupt != CorruptTorn:
		return fail("--torn-at needs --corrupt torn, not --corrupt %s", s.Corrupt)
	case s.TornAt < 0:
		return fail("--torn-at %d is negative", s.TornAt)
	}
	if len(s.Ops) == 0 {
		c.ops = allowed
		return nil
	}
	if bad := c.ops &^ allowed; bad != 0 {
		var names []string
		for _, n := range opNames {
			if bad&n.mask != 0 {
				names = append(names, n.name)
			}
		}
		want := "--op write"
		if allowed&maskRead != 0 {
			want = "--op read or --op write"
		}
		return fail("--corrupt %s with --op %s: %s carries no data it could corrupt that way (want %s)", s.Corrupt, strings.Join(names, ","), strings.Join(names, " and "), want)
	}
	return nil
}

// defaultSense is the sense data an injected error carries unless the spec
// names one:
//
//	retryable       0b/00/00 ABORTED COMMAND (retry it)
//	not-ready       02/04/00 LOGICAL UNIT NOT READY, CAUSE NOT REPORTABLE
//	device-error    03/11/00 MEDIUM ERROR, UNRECOVERED READ ERROR
//	permanent-loss  05/25/00 LOGICAL UNIT NOT SUPPORTED (what ESXi reads as PDL)
//
// A path failure is a transport error and carries none. Generic codes on
// purpose: ALUA states (02/04/0a, 02/04/0b) are the alua array's to report,
// or a spec's --sense.
func defaultSense(c ioerr.Class) *ioerr.Sense {
	var s ioerr.Sense
	switch c {
	case ioerr.ClassRetryable:
		s = ioerr.Sense{Key: ioerr.SenseAbortedCommand}
	case ioerr.ClassNotReady:
		s = ioerr.Sense{Key: ioerr.SenseNotReady, ASC: 0x04}
	case ioerr.ClassDeviceError:
		s = ioerr.SenseUnrecoveredRead
	case ioerr.ClassPermanentLoss:
		s = ioerr.SenseLUNotSupported
	default:
		return nil
	}
	return &s
}

// String is the spec in its CLI form, Args joined by spaces.
func (s Spec) String() string { return strings.Join(s.Args(), " ") }

// Args prints the spec as the flags ParseArgs reads back, in a fixed order.
func (s Spec) Args() []string {
	var a []string
	add := func(flag, v string) { a = append(a, flag, v) }
	if s.Error != "" {
		add("--error", s.Error)
	}
	if s.Sense != "" {
		add("--sense", s.Sense)
	}
	if s.Late {
		a = append(a, "--late")
	}
	if s.Hang {
		a = append(a, "--hang")
	}
	if s.LandLate != 0 {
		add("--land-late", s.LandLate.String())
	}
	if s.Silent {
		a = append(a, "--silent")
	}
	if s.Corrupt != "" {
		add("--corrupt", s.Corrupt)
	}
	if s.Bits != 0 {
		add("--bits", strconv.Itoa(s.Bits))
	}
	if s.MisdirectBy != 0 {
		add("--misdirect-by", formatSigned(s.MisdirectBy))
	}
	if s.TornAt != 0 {
		add("--torn-at", backends.FormatSize(s.TornAt))
	}
	if len(s.Ops) > 0 {
		add("--op", strings.Join(s.Ops, ","))
	}
	if s.Offset != 0 || s.Length != 0 {
		add("--range", backends.FormatSize(s.Offset)+":"+backends.FormatSize(s.Length))
	}
	if s.Probability != 0 {
		add("--probability", strconv.FormatFloat(s.Probability, 'g', -1, 64))
	}
	if s.Every != 0 {
		add("--every", strconv.Itoa(s.Every))
	}
	if s.After != 0 {
		add("--after", strconv.Itoa(s.After))
	}
	if s.Count != 0 {
		add("--count", strconv.Itoa(s.Count))
	}
	if s.Duration != 0 {
		add("--for", s.Duration.String())
	}
	if s.Latency != 0 {
		add("--latency", s.Latency.String())
	}
	if s.Jitter != 0 {
		add("--jitter", s.Jitter.String())
	}
	if s.SlowFactor != 0 {
		add("--slow", strconv.FormatFloat(s.SlowFactor, 'g', -1, 64))
	}
	if s.Bandwidth != 0 {
		add("--bandwidth", backends.FormatSize(s.Bandwidth))
	}
	if s.Seed != 0 {
		add("--seed", strconv.FormatUint(s.Seed, 10))
	}
	return a
}

type flagDef struct {
	names  []string
	form   string // the accepted form, for error messages
	isBool bool
	set    func(s *Spec, v string) error
}

var errForm = errors.New("bad form")

var flags = []flagDef{
	{[]string{"error"}, "--error CLASS (path-failure, retryable, not-ready, device-error, permanent-loss)", false, func(s *Spec, v string) error {
		c, err := ioerr.ParseClass(v)
		if err != nil {
			return errForm
		}
		s.Error = c.String()
		return nil
	}},
	{[]string{"sense"}, "--sense KEY/ASC/ASCQ in hex, e.g. --sense 02/04/0a", false, func(s *Spec, v string) error {
		if _, err := ParseSense(v); err != nil {
			return errForm
		}
		s.Sense = v
		return nil
	}},
	{[]string{"late"}, "--late or --late=true|false", true, func(s *Spec, v string) (err error) {
		s.Late, err = strconv.ParseBool(v)
		return err
	}},
	{[]string{"hang"}, "--hang or --hang=true|false", true, func(s *Spec, v string) (err error) {
		s.Hang, err = strconv.ParseBool(v)
		return err
	}},
	{[]string{"land-late"}, "--land-late DURATION, e.g. --land-late 2s (a write-class operation lands this long after it was issued)", false, func(s *Spec, v string) (err error) {
		s.LandLate, err = parseDuration(v)
		if err == nil && s.LandLate == 0 {
			err = errForm
		}
		return err
	}},
	{[]string{"silent"}, "--silent or --silent=true|false (with --land-late: no proof of the late landing)", true, func(s *Spec, v string) (err error) {
		s.Silent, err = strconv.ParseBool(v)
		return err
	}},
	{[]string{"op", "ops"}, "--op LIST, comma-separated read, write, flush, discard, probe", false, func(s *Spec, v string) error {
		ops := strings.Split(v, ",")
		if _, err := parseOps(ops); err != nil || v == "" {
			return errForm
		}
		s.Ops = append(s.Ops, ops...)
		return nil
	}},
	{[]string{"offset"}, "--offset SIZE, e.g. --offset 1M", false, func(s *Spec, v string) (err error) {
		s.Offset, err = backends.ParseSize(v)
		return err
	}},
	{[]string{"length"}, "--length SIZE, e.g. --length 64k", false, func(s *Spec, v string) (err error) {
		s.Length, err = backends.ParseSize(v)
		return err
	}},
	{[]string{"range"}, "--range OFFSET:LENGTH, e.g. --range 1M:64k", false, func(s *Spec, v string) error {
		off, n, ok := strings.Cut(v, ":")
		if !ok {
			return errForm
		}
		o, err := backends.ParseSize(off)
		if err != nil {
			return err
		}
		l, err := backends.ParseSize(n)
		if err != nil {
			return err
		}
		s.Offset, s.Length = o, l
		return nil
	}},
	{[]string{"probability", "p"}, "--probability P with 0 < P ≤ 1, or a percentage: --probability 0.1, --probability 10%", false, func(s *Spec, v string) error {
		num, pct := strings.CutSuffix(v, "%")
		p, err := strconv.ParseFloat(num, 64)
		if err != nil {
			return err
		}
		if pct {
			p /= 100
		}
		if !(p > 0 && p <= 1) {
			return errForm
		}
		s.Probability = p
		return nil
	}},
	{[]string{"every"}, "--every N with N ≥ 1, e.g. --every 10", false, func(s *Spec, v string) (err error) {
		s.Every, err = parseCount(v, 1)
		return err
	}},
	{[]string{"after"}, "--after N with N ≥ 0, e.g. --after 100", false, func(s *Spec, v string) (err error) {
		s.After, err = parseCount(v, 0)
		return err
	}},
	{[]string{"count"}, "--count N with N ≥ 1, e.g. --count 3", false, func(s *Spec, v string) (err error) {
		s.Count, err = parseCount(v, 1)
		return err
	}},
	{[]string{"for", "duration"}, "--for DURATION, e.g. --for 30s", false, func(s *Spec, v string) (err error) {
		s.Duration, err = parseDuration(v)
		return err
	}},
	{[]string{"latency"}, "--latency DURATION, e.g. --latency 20ms", false, func(s *Spec, v string) (err error) {
		s.Latency, err = parseDuration(v)
		return err
	}},
	{[]string{"jitter"}, "--jitter DURATION, e.g. --jitter 5ms", false, func(s *Spec, v string) (err error) {
		s.Jitter, err = parseDuration(v)
		return err
	}},
	{[]string{"slow"}, "--slow N with N ≥ 1 (times the natural duration), e.g. --slow 3 or --slow 2.5x", false, func(s *Spec, v string) error {
		f, err := strconv.ParseFloat(strings.TrimSuffix(v, "x"), 64)
		if err != nil {
			return err
		}
		if !(f >= 1) || math.IsInf(f, 0) {
			return errForm
		}
		s.SlowFactor = f
		return nil
	}},
	{[]string{"bandwidth"}, "--bandwidth RATE in bytes per second, binary suffixes: --bandwidth 10M (10 MiB/s) or 512k/s", false, func(s *Spec, v string) error {
		n, err := backends.ParseSize(strings.TrimSuffix(v, "/s"))
		if err != nil {
			return err
		}
		if n == 0 {
			return errForm
		}
		s.Bandwidth = n
		return nil
	}},
	{[]string{"corrupt"}, "--corrupt KIND: bitflip (reads or writes), misdirect, drop or torn (writes)", false, func(s *Spec, v string) error {
		if _, ok := corruptOps[v]; !ok {
			return errForm
		}
		s.Corrupt = v
		return nil
	}},
	{[]string{"bits"}, "--bits N with N ≥ 1 (bits a bitflip flips per operation), e.g. --bits 3", false, func(s *Spec, v string) (err error) {
		s.Bits, err = parseCount(v, 1)
		return err
	}},
	{[]string{"misdirect-by"}, "--misdirect-by SIZE, a non-zero byte distance, either sign, e.g. --misdirect-by 8k or --misdirect-by -4k", false, func(s *Spec, v string) error {
		neg := strings.HasPrefix(v, "-")
		n, err := backends.ParseSize(strings.TrimPrefix(strings.TrimPrefix(v, "-"), "+"))
		if err != nil || n == 0 {
			return errForm
		}
		if neg {
			n = -n
		}
		s.MisdirectBy = n
		return nil
	}},
	{[]string{"torn-at"}, "--torn-at SIZE ≥ 1, the bytes of the write that are stored, e.g. --torn-at 2k", false, func(s *Spec, v string) (err error) {
		s.TornAt, err = backends.ParseSize(v)
		if err == nil && s.TornAt == 0 {
			err = errForm
		}
		return err
	}},
	{[]string{"seed"}, "--seed N, an unsigned 64-bit integer (0x… for hex)", false, func(s *Spec, v string) (err error) {
		s.Seed, err = strconv.ParseUint(v, 0, 64)
		return err
	}},
}

func flagNames() string {
	var n []string
	for _, f := range flags {
		n = append(n, "--"+f.names[0])
	}
	return strings.Join(n, ", ")
}

// ParseArgs parses a spec from CLI-style flags, "--flag value" or
// "--flag=value" (one dash works too), and validates it. Later flags
// override earlier ones, except --op, whose lists add up. See the package
// documentation for the flags.
func ParseArgs(args []string) (Spec, error) {
	var s Spec
	for i := 0; i < len(args); i++ {
		arg := args[i]
		if !strings.HasPrefix(arg, "-") || arg == "-" || arg == "--" {
			return Spec{}, fmt.Errorf("fault spec: unexpected argument %q: a fault is given by flags such as --error path-failure --op read", arg)
		}
		name, val, hasVal := strings.Cut(strings.TrimPrefix(strings.TrimPrefix(arg, "-"), "-"), "=")
		var def *flagDef
		for j := range flags {
			for _, n := range flags[j].names {
				if n == name {
					def = &flags[j]
				}
			}
		}
		if def == nil {
			return Spec{}, fmt.Errorf("fault spec: unknown flag --%s (known: %s)", name, flagNames())
		}
		if !hasVal {
			if def.isBool {
				val = "true"
			} else {
				if i+1 >= len(args) {
					return Spec{}, fmt.Errorf("fault spec: --%s needs a value: %s", name, def.form)
				}
				i++
				val = args[i]
			}
		}
		if err := def.set(&s, val); err != nil {
			return Spec{}, fmt.Errorf("fault spec: --%s %q: want %s", name, val, def.form)
		}
	}
	if err := s.Validate(); err != nil {
		return Spec{}, err
	}
	return s, nil
}

func parseCount(v string, min int) (int, error) {
	n, err := strconv.Atoi(v)
	if err != nil {
		return 0, err
	}
	if n < min {
		return 0, errForm
	}
	return n, nil
}

func parseDuration(v string) (time.Duration, error) {
	d, err := time.ParseDuration(v)
	if err != nil {
		return 0, err
	}
	if d < 0 {
		return 0, errForm
	}
	return d, nil
}

// formatSigned is FormatSize with a sign.
func formatSigned(n int64) string {
	if n < 0 {
		return "-" + backends.FormatSize(-n)
	}
	return backends.FormatSize(n)
}

// jsonDuration is a time.Duration that travels in JSON as a Go duration
// string ("3s"); a number is read as nanoseconds.
type jsonDuration time.Duration

func (d jsonDuration) MarshalJSON() ([]byte, error) {
	return json.Marshal(time.Duration(d).String())
}

func (d *jsonDuration) UnmarshalJSON(b []byte) error {
	if len(b) > 0 && b[0] == '"' {
		var s string
		if err := json.Unmarshal(b, &s); err != nil {
			return err
		}
		v, err := time.ParseDuration(s)
		if err != nil {
			return fmt.Errorf("duration %q: want a Go duration such as 250ms, 3s or 1m30s", s)
		}
		*d = jsonDuration(v)
		return nil
	}
	var n int64
	if err := json.Unmarshal(b, &n); err != nil {
		return fmt.Errorf("duration %s: want a Go duration string such as \"3s\"", b)
	}
	*d = jsonDuration(n)
	return nil
}

type specFields Spec // Spec without its methods

// specJSON shadows the duration fields of Spec with string-encoded ones.
type specJSON struct {
	specFields
	Duration jsonDuration `json:"duration,omitzero"`
	Latency  jsonDuration `json:"latency,omitzero"`
	Jitter   jsonDuration `json:"jitter,omitzero"`
	LandLate jsonDuration `json:"land_late,omitzero"`
}

// MarshalJSON encodes the spec with durations as Go duration strings.
func (s Spec) MarshalJSON() ([]byte, error) {
	return json.Marshal(specJSON{specFields(s), jsonDuration(s.Duration), jsonDuration(s.Latency), jsonDuration(s.Jitter), jsonDuration(s.LandLate)})
}

// UnmarshalJSON decodes a spec; durations are Go duration strings ("3s").
// It does not validate: call Validate (Inject does).
func (s *Spec) UnmarshalJSON(b []byte) error {
	var j specJSON
	if err := json.Unmarshal(b, &j); err != nil {
		return err
	}
	*s = Spec(j.specFields)
	s.Duration, s.Latency, s.Jitter = time.Duration(j.Duration), time.Duration(j.Latency), time.Duration(j.Jitter)
	s.LandLate = time.Duration(j.LandLate)
	return nil
}
