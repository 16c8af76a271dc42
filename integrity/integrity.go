// Package integrity is mpathfs's built-in integrity checker: a decorator
// around a device that remembers a checksum of every 4 KiB block it
// acknowledged a write for, verifies every full-block read against it, and
// on demand (Check) re-reads everything it tracks through the device and
// through each path's backend directly, so that a write that was lost, a
// path that serves stale data, a torn block, a write that landed at the
// wrong offset (misdirected) or a block rolled back by an older write that
// landed late is caught with its offset.
//
// Every acknowledged write gets a generation, a number from one counter of
// the oracle, so later writes have higher generations. Per block the oracle
// keeps the checksums of the last acknowledged write and of a few versions
// before it, and the newest generation a read returned intact (the block
// was seen holding it). A finding names the generation it expected and the
// one it found, where the content is a version the oracle knows.
//
// The oracle only observes: it never changes data or errors. Blocks whose
// state it cannot know (a failed write, a partial-block write, a write
// racing a read) are dropped from tracking rather than guessed.
//
// Checksums are 32 bits of a seeded hash (hash/maphash) per 512-byte
// sector, eight per block, so a block whose sectors come from two versions
// is told from a block that is simply old. Not CRC-32C: a CRC is linear,
// and a sector that carries its own CRC-32C (fio's verify header does:
// offset, time and write number, then their CRC-32C) has the same CRC-32C
// whatever those fields hold, so two versions of a block with the same
// payload, or two blocks, looked alike.
package integrity

import (
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mpathfs/mpathfs/ioerr"
	"github.com/mpathfs/mpathfs/mpath"
)

// BlockSize is the unit the oracle tracks.
const BlockSize = 4096

const sectors = BlockSize / 512

// Device is what the oracle decorates (fusedev.Device's shape).
type Device interface {
	Name() string
	Size() int64
	ReadAt(ctx context.Context, p []byte, off int64) (int, error)
	WriteAt(ctx context.Context, p []byte, off int64) (int, error)
	Flush(ctx context.Context) error
	Discard(ctx context.Context, off, length int64) error
	WriteZeroes(ctx context.Context, off, length int64) error
}

// Reader is one way to read the store back: a path's backend.
type Reader struct {
	Name   string
	ReadAt func(ctx context.Context, p []byte, off int64) (int, error)
}

// PathReaders returns a function listing a multipath device's paths as
// readers, for Options.Paths.
func PathReaders(paths func() []*mpath.Path) func() []Reader {
	return func() []Reader {
		var out []Reader
		for _, p := range paths() {
			out = append(out, Reader{Name: p.Name, ReadAt: retryingRead(p.Backend.ReadAt)})
		}
		return out
	}
}

// pathReadTries bounds the tries of a direct path read that fails with a
// retryable error; unit attentions count against pathReadUATries only.
const (
	pathReadTries   = 5
	pathReadUATries = 64
)

// retryingRead reads a path directly as an initiator would: a retryable
// error (a unit attention after an ALUA state change, transitioning, busy)
// is reported once and then cleared, so it is tried again, a few times,
// before the block counts as unreadable. A unit attention reports a change
// and is cleared by being reported: on an array whose LU moves between
// controllers at every I/O (an auto-trespass array that the reads through
// the other paths move) each try may meet a new one, so they are tried
// again up to pathReadUATries times.
func retryingRead(read func(context.Context, []byte, int64) (int, error)) func(context.Context, []byte, int64) (int, error) {
	return func(ctx context.Context, p []byte, off int64) (int, error) {
		tries := 0
		for all := 1; ; all++ {
			n, err := read(ctx, p, off)
			if err == nil || ioerr.ClassOf(err) != ioerr.ClassRetryable {
				return n, err
			}
			if s, ok := ioerr.SenseOf(err); !ok || s.Key != ioerr.SenseUnitAttention {
				tries++
			}
			if tries == pathReadTries || all == pathReadUATries {
				return n, err
			}
			select {
			case <-ctx.Done():
				return n, err
			case <-time.After(10 * time.Millisecond):
			}
		}
	}
}

// Options configure an oracle.
type Options struct {
	// Paths lists the readers Check also reads through (nil: the device only).
	Paths func() []Reader
	// Neighbors is how many blocks on each side of a block that lost its
	// write Check reads to find where the write went (default 8).
	Neighbors int
}

type sums [sectors]uint32

// history is how many versions before the last acknowledged write a block
// remembers (a block written once costs none of them).
const history = 8

// version is one acknowledged content of a block.
type version struct {
	gen uint64
	s   sums
}

type block struct {
	cur sums
	gen uint64
	// old are the versions before cur, newest first (at most history).
	// Empty: the content before cur is unknown, or zeroes (gen 0).
	old []version
	// seen is the newest generation a read (an application read or Check)
	// returned intact: that version was on the store once.
	seen    uint64
	writing int
	// overlapped: two writes to the block were in flight at once. Their
	// order on the store is then undefined (as for overlapping SCSI
	// writes), and the order of their acknowledgements says nothing about
	// it: the content is unknown once the last of them is done.
	overlapped bool
}

// Oracle is the decorator. It is safe for concurrent use.
type Oracle struct {
	dev  Device
	opts Options

	verified, mismatches atomic.Uint64

	mu struct {
		sync.Mutex
		blocks   map[int64]*block // by block number
		problems []Problem
		// reported: the problems application reads found, so the same
		// finding (kind, offset, generations) is reported once.
		reported map[Problem]bool
		gen      uint64 // the last generation given out
	}
}

// sumSeed seeds the sector hash; sums never leave the process.
var sumSeed = maphash.MakeSeed()

// New decorates dev.
func New(dev Device, opts Options) *Oracle {
	if opts.Neighbors == 0 {
		opts.Neighbors = 8
	}
	o := &Oracle{dev: dev, opts: opts}
	o.mu.blocks = map[int64]*block{}
	o.mu.reported = map[Problem]bool{}
	return o
}

func sumOf(b []byte) sums {
	var s sums
	for i := range s {
		s[i] = uint32(maphash.Bytes(sumSeed, b[i*512:(i+1)*512]))
	}
	return s
}

var zeroSums = sumOf(make([]byte, BlockSize))

func (o *Oracle) Name() string                    { return o.dev.Name() }
func (o *Oracle) Size() int64                     { return o.dev.Size() }
func (o *Oracle) Flush(ctx context.Context) error { return o.dev.Flush(ctx) }

// Unwrap returns the decorated device.
func (o *Oracle) Unwrap() Device { return o.dev }

// full returns the range of whole blocks inside [off, off+n) and whether
// the range has partial blocks at its edges.
func full(off, n int64) (first, last int64, partial bool) {
	first = (off + BlockSize - 1) / BlockSize
	last = (off + n) / BlockSize // exclusive
	partial = off%BlockSize != 0 || (off+n)%BlockSize != 0
	return
}

// unknown is the generation of a block whose content is not known.
const unknown = ^uint64(0)

// begin marks the blocks a write touches as being written.
func (o *Oracle) begin(off, n int64) {
	o.mu.Lock()
	defer o.mu.Unlock()
	for b := off / BlockSize; b*BlockSize < off+n; b++ {
		bl := o.mu.blocks[b]
		if bl == nil {
			bl = &block{gen: unknown}
			o.mu.blocks[b] = bl
		}
		if bl.writing > 0 {
			bl.overlapped = true
		}
		bl.writing++
	}
}

// done records the outcome of a write (data nil: zeroes).
func (o *Oracle) done(off, n int64, data []byte, ok bool) {
	first, last, _ := full(off, n)
	o.mu.Lock()
	defer o.mu.Unlock()
	var gen uint64
	if ok {
		o.mu.gen++
		gen = o.mu.gen
	}
	for b := off / BlockSize; b*BlockSize < off+n; b++ {
		bl := o.mu.blocks[b]
		if bl == nil {
			continue
		}
		bl.writing--
		if bl.overlapped {
			if bl.writing == 0 {
				bl.overlapped = false
				bl.gen, bl.old, bl.seen = unknown, nil, 0
			}
			continue
		}
		if !ok || b < first || b >= last {
			// Unknown content: stop tracking it.
			if bl.writing == 0 {
				delete(o.mu.blocks, b)
			} else {
				bl.gen, bl.old, bl.seen = unknown, nil, 0
			}
			continue
		}
		s := zeroSums
		if data != nil {
			i := b*BlockSize - off
			s = sumOf(data[i : i+BlockSize])
		}
		if bl.gen != unknown {
			if len(bl.old) < history {
				bl.old = append(bl.old, version{})
			}
			copy(bl.old[1:], bl.old)
			bl.old[0] = version{bl.gen, bl.cur}
		}
		bl.gen, bl.cur = gen, s
	}
}

// WriteAt writes through and, once acknowledged, records the new blocks.
func (o *Oracle) WriteAt(ctx context.Context, p []byte, off int64) (int, error) {
	o.begin(off, int64(len(p)))
	n, err := o.dev.WriteAt(ctx, p, off)
	o.done(off, int64(len(p)), p, err == nil && n == len(p))
	return n, err
}

// Discard deallocates; the blocks then read as zeroes.
func (o *Oracle) Discard(ctx context.Context, off, length int64) error {
	o.begin(off, length)
	err := o.dev.Discard(ctx, off, length)
	o.done(off, length, nil, err == nil)
	return err
}

// WriteZeroes zeroes a range.
func (o *Oracle) WriteZeroes(ctx context.Context, off, length int64) error {
	o.begin(off, length)
	err := o.dev.WriteZeroes(ctx, off, length)
	o.done(off, length, nil, err == nil)
	return err
}

// snapshot is a block's state at the start of a read.
type snapshot struct {
	b   int64
	gen uint64
}

// ReadAt reads through and verifies every whole block it returns against
// the last acknowledged write, unless a write to it ran meanwhile.
func (o *Oracle) ReadAt(ctx context.Context, p []byte, off int64) (int, error) {
	first, last, _ := full(off, int64(len(p)))
	var snaps []snapshot
	o.mu.Lock()
	for b := first; b < last; b++ {
		if bl := o.mu.blocks[b]; bl != nil && bl.writing == 0 && bl.gen != unknown {
			snaps = append(snaps, snapshot{b, bl.gen})
		}
	}
	o.mu.Unlock()
	n, err := o.dev.ReadAt(ctx, p, off)
	if len(snaps) == 0 {
		return n, err
	}
	var found []Problem
	o.mu.Lock()
	for _, s := range snaps {
		i := s.b*BlockSize - off
		if i+BlockSize > int64(n) {
			continue
		}
		bl := o.mu.blocks[s.b]
		if bl == nil || bl.gen != s.gen || bl.writing != 0 {
			continue
		}
		o.verified.Add(1)
		got := sumOf(p[i : i+BlockSize])
		if got == bl.cur {
			bl.seen = bl.gen
			continue
		}
		o.mismatches.Add(1)
		pr := o.classifyLocked(s.b, bl, got, "read")
		found = append(found, pr)
	}
	for _, pr := range found {
		if !o.mu.reported[pr] {
			o.mu.reported[pr] = true
			o.mu.problems = append(o.mu.problems, pr)
		}
	}
	o.mu.Unlock()
	return n, err
}

// classifyLocked names what a wrong block is.
func (o *Oracle) classifyLocked(b int64, bl *block, got sums, via string) Problem {
	pr := Problem{Offset: b * BlockSize, Length: BlockSize, Via: via, Generation: bl.gen}
	before := bl.old
	if len(before) == 0 {
		before = []version{{0, zeroSums}} // never written before: zeroes
	}
	// Which known version does the whole block hold, and how many sectors
	// hold the last write or some version before it?
	var found *version
	for i := range before {
		if got == before[i].s {
			found = &before[i]
			break
		}
	}
	match, matchOld := 0, 0
	prefix := true // the sectors holding the last write are a prefix
	var alien []string
	for i := range got {
		if got[i] == bl.cur[i] {
			if match < i {
				prefix = false
			}
			match++
			continue
		}
		old := false
		for _, v := range before {
			if got[i] == v.s[i] {
				old = true
				break
			}
		}
		if old {
			matchOld++
		} else {
			alien = append(alien, fmt.Sprint(b*BlockSize+int64(i)*512))
		}
	}
	switch {
	case found != nil: // a whole older version (versions may share sectors)
		pr.Kind, pr.FoundGeneration = KindStale, found.gen
		pr.Detail = "returned an older version than the last acknowledged write"
		if found == &before[0] {
			pr.Detail = "returned the version before the last acknowledged write"
		}
	case match > 0 && match+matchOld == sectors:
		pr.Kind = KindTorn
		pr.Detail = fmt.Sprintf("%d of %d sectors hold the last write, the rest older versions", match, sectors)
		if prefix {
			pr.Detail = fmt.Sprintf("the first %d bytes (%d of %d sectors) hold the last write, the rest older versions", match*512, match, sectors)
		}
	default:
		if a, ok := o.ownerLocked(got, b); ok {
			pr.Kind = KindMisdirected
			pr.Offset, pr.FoundAt = a*BlockSize, b*BlockSize
			pr.Generation = o.mu.blocks[a].gen
			pr.Detail = fmt.Sprintf("holds the data of the write to offset %d", a*BlockSize)
		} else {
			pr.Kind = KindCorrupt
			pr.Detail = fmt.Sprintf("%d of %d sectors match none of the %d last versions the oracle remembers (flipped bits or foreign data): the 512-byte sectors at offset %s", sectors-match-matchOld, sectors, len(bl.old)+1, strings.Join(alien, ", "))
		}
	}
	return pr
}

// ownerLocked finds the tracked block (other than b) whose last write has
// exactly this content.
func (o *Oracle) ownerLocked(got sums, b int64) (int64, bool) {
	if got == zeroSums {
		return 0, false
	}
	for a, bl := range o.mu.blocks {
		if a != b && bl.gen != unknown && bl.cur == got {
			return a, true
		}
	}
	return 0, false
}

// Problem kinds.
const (
	// KindLost: the last acknowledged write is nowhere: every reader
	// returns the version before it.
	KindLost = "lost"
	// KindStale: a reader (a read, or one path) returned an older version
	// than the last acknowledged write while the store has the new one.
	KindStale = "stale"
	// KindRolledBack: every reader returns an older acknowledged version
	// although a newer one had been on the store: a read had returned a
	// newer version intact, or what is back is older than the version
	// before the last write. An acknowledged write was overwritten by an
	// older one — the stale write of multipath, an attempt that timed out
	// on one path and landed after its retry elsewhere and newer writes.
	KindRolledBack = "rolled back"
	// KindTorn: some sectors of the block hold the last write, others the
	// version before.
	KindTorn = "torn"
	// KindMisdirected: the write meant for Offset landed at FoundAt.
	KindMisdirected = "misdirected"
	// KindCorrupt: content the oracle never wrote, or a version older than
	// those it remembers of the block (history).
	KindCorrupt = "corrupt"
	// KindUnreadable: a reader failed to read the block.
	KindUnreadable = "unreadable"
)

// Problem is one wrong block.
type Problem struct {
	Kind   string `json:"kind"`
	Offset int64  `json:"offset"`
	Length int64  `json:"length"`
	// Via is "read" (an application read), "device" or a path's name (Check).
	Via string `json:"via"`
	// FoundAt is where a misdirected write landed.
	FoundAt int64 `json:"found_at,omitempty"`
	// Generation is the generation of the last acknowledged write to the
	// block (what a reader should have returned); FoundGeneration that of
	// the older version a stale, lost or rolled-back block holds (0: its
	// content before the first write the oracle tracked, zeroes).
	Generation      uint64 `json:"generation,omitempty"`
	FoundGeneration uint64 `json:"found_generation,omitempty"`
	Detail          string `json:"detail,omitempty"`
}

func (p Problem) String() string {
	s := fmt.Sprintf("%s at offset %d (+%d) via %s", p.Kind, p.Offset, p.Length, p.Via)
	if p.Kind == KindMisdirected {
		s += fmt.Sprintf(": landed at offset %d", p.FoundAt)
	}
	switch p.Kind {
	case KindStale, KindLost, KindRolledBack:
		s += fmt.Sprintf(": expected generation %d, found generation %d", p.Generation, p.FoundGeneration)
	case KindTorn, KindCorrupt:
		if p.Generation != 0 {
			s += fmt.Sprintf(": expected generation %d", p.Generation)
		}
	}
	if p.Detail != "" {
		s += ": " + p.Detail
	}
	return s
}

// Report is what the oracle found, as `mpathfs verify --json` prints it.
type Report struct {
	Device string `json:"device"`
	// Tracked is how many blocks have a known last write.
	Tracked int `json:"blocks_tracked"`
	// Readers are what Check read through: "device" and each path.
	Readers []string `json:"readers,omitempty"`
	// ReadsVerified counts blocks of application reads checked on the fly,
	// ReadMismatches those that were wrong.
	ReadsVerified  uint64    `json:"reads_verified"`
	ReadMismatches uint64    `json:"read_mismatches"`
	Problems       []Problem `json:"problems"`
}

// OK reports whether nothing was found.
func (r Report) OK() bool { return len(r.Problems) == 0 }

// Problems returns what application reads found so far.
func (o *Oracle) Problems() []Problem {
	o.mu.Lock()
	defer o.mu.Unlock()
	return append([]Problem(nil), o.mu.problems...)
}

// Check re-reads every tracked block through the device and each path and
// reports every wrong block, together with what application reads found
// so far. Blocks written while Check runs are skipped.
func (o *Oracle) Check(ctx context.Context) (Report, error) {
	readers := []Reader{{Name: "device", ReadAt: o.dev.ReadAt}}
	if o.opts.Paths != nil {
		readers = append(readers, o.opts.Paths()...)
	}
	rep := Report{Device: o.dev.Name(), ReadsVerified: o.verified.Load(), ReadMismatches: o.mismatches.Load(), Problems: []Problem{}}
	for _, r := range readers {
		rep.Readers = append(rep.Readers, r.Name)
	}
	o.mu.Lock()
	rep.Problems = append(rep.Problems, o.mu.problems...)
	var list []snapshot
	for b, bl := range o.mu.blocks {
		if bl.writing == 0 && bl.gen != unknown {
			list = append(list, snapshot{b, bl.gen})
		}
	}
	o.mu.Unlock()
	rep.Tracked = len(list)
	sort.Slice(list, func(i, j int) bool { return list[i].b < list[j].b })
	var amu sync.Mutex // guards rep.Problems and seen
	read := func(r Reader, b int64) (sums, error) {
		buf := make([]byte, BlockSize)
		n, err := r.ReadAt(ctx, buf, b*BlockSize)
		if err == nil && n != BlockSize {
			err = errors.New("short read")
		}
		return sumOf(buf), err
	}
	seen := map[string]bool{}
	add := func(p Problem) {
		amu.Lock()
		defer amu.Unlock()
		k := fmt.Sprintf("%s/%d/%s/%d", p.Kind, p.Offset, p.Via, p.FoundAt)
		if !seen[k] {
			seen[k] = true
			rep.Problems = append(rep.Problems, p)
		}
	}
	// Blocks are checked by a pool of workers: a path may be slow (an
	// ALUA non-optimized port) and there may be many blocks.
	work := make(chan snapshot)
	var wg sync.WaitGroup
	for w := 0; w < checkWorkers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for s := range work {
				o.checkBlock(ctx, s, readers, read, add)
			}
		}()
	}
	for _, s := range list {
		if ctx.Err() != nil {
			break
		}
		work <- s
	}
	close(work)
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return rep, err
	}
	sort.SliceStable(rep.Problems, func(i, j int) bool { return rep.Problems[i].Offset < rep.Problems[j].Offset })
	return rep, nil
}

// checkWorkers is how many blocks Check reads at once.
const checkWorkers = 32

func (o *Oracle) checkBlock(ctx context.Context, s snapshot, readers []Reader, read func(Reader, int64) (sums, error), add func(Problem)) {
	type obs struct {
		r   Reader
		got sums
	}
	var bad []obs
	good := 0
	for _, r := range readers {
		got, err := read(r, s.b)
		o.mu.Lock()
		bl := o.mu.blocks[s.b]
		valid := bl != nil && bl.gen == s.gen && bl.writing == 0
		var want sums
		if valid {
			want = bl.cur
		}
		o.mu.Unlock()
		if !valid {
			bad = nil
			break
		}
		if err != nil {
			add(Problem{Kind: KindUnreadable, Offset: s.b * BlockSize, Length: BlockSize, Via: r.Name, Detail: err.Error()})
			continue
		}
		if got == want {
			good++
			o.mu.Lock()
			if bl := o.mu.blocks[s.b]; bl != nil && bl.gen == s.gen {
				bl.seen = bl.gen
			}
			o.mu.Unlock()
			continue
		}
		bad = append(bad, obs{r, got})
	}
	for _, x := range bad {
		o.mu.Lock()
		bl := o.mu.blocks[s.b]
		if bl == nil {
			o.mu.Unlock()
			break
		}
		p := o.classifyLocked(s.b, bl, x.got, x.r.Name)
		seen := bl.seen
		var pred uint64 // the version just before the last write
		if len(bl.old) > 0 {
			pred = bl.old[0].gen
		}
		o.mu.Unlock()
		if p.Kind == KindStale && good == 0 {
			// Nobody has the last write. If a newer version than the one
			// found had been on the store, or what is back is older than
			// the version before the last write, an older write landed
			// over acknowledged data: rolled back. Otherwise the last
			// write was lost, or it went elsewhere: look next door.
			switch {
			case seen > p.FoundGeneration:
				p.Kind = KindRolledBack
				p.Detail = fmt.Sprintf("generation %d had been read back from the store; an older write landed over it", seen)
			case p.FoundGeneration < pred:
				p.Kind = KindRolledBack
				p.Detail = fmt.Sprintf("an older version than the one before the last write (generation %d) is back", pred)
			default:
				p.Kind, p.Detail = KindLost, "no reader returns the last acknowledged write"
				if at, ok := o.search(ctx, x.r, s.b, read); ok {
					p.Kind, p.FoundAt, p.FoundGeneration = KindMisdirected, at*BlockSize, 0
					p.Detail = "the write landed at another offset"
				}
			}
		}
		add(p)
	}
}

// search reads the neighbours of block b through r for the content of b's
// last write.
func (o *Oracle) search(ctx context.Context, r Reader, b int64, read func(Reader, int64) (sums, error)) (int64, bool) {
	o.mu.Lock()
	bl := o.mu.blocks[b]
	if bl == nil {
		o.mu.Unlock()
		return 0, false
	}
	want := bl.cur
	o.mu.Unlock()
	if want == zeroSums {
		// Zeroes (a discard, write-zeroes or a zero write) are no
		// fingerprint: any zeroed neighbour would match.
		return 0, false
	}
	max := o.dev.Size() / BlockSize
	for d := int64(1); d <= int64(o.opts.Neighbors); d++ {
		for _, c := range []int64{b + d, b - d} {
			if c < 0 || c >= max {
				continue
			}
			got, err := read(r, c)
			if err == nil && got == want {
				return c, true
			}
		}
	}
	return 0, false
}
