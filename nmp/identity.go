package nmp

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sort"
	"sync"
	"time"
	"unsafe"

	"github.com/mpathfs/mpathfs/backends"
	"github.com/mpathfs/mpathfs/ioerr"
	"github.com/mpathfs/mpathfs/mpath"
)

// Identity checks: is a path really a way to this device's store?
//
// A SCSI LU names itself (VPD page 0x83); a file or a loop device has only
// the synthetic WWID mpathfs derives from the file's device and inode, and
// an NBD export has none. One file reached through two mounts (two NFS
// mounts, NFS and SMB, a local file and a FUSE view of it) therefore reports
// two identities: the user asserts the device's wwid, and the assertion is
// checked, never trusted, by VerifySameStore:
//
//  1. labels: where both paths' files carry LabelXattr they must agree, and
//     one path's file carrying a label while the other's file system keeps
//     extended attributes but shows none is a different file;
//  2. native identity: two paths reporting the same native WWID (one inode
//     on this host, one SCSI LU) are one store, nothing more to check;
//  3. sample blocks: otherwise the same deterministic sample of blocks is
//     read through both paths and compared; the first difference refuses the
//     path, naming both paths and the offset.
//
// Neither check can tell two files apart that hold the same bytes at every
// sampled block (two fresh sparse files, a copy that has not diverged yet).
// The checks run at mount (cmd/mpathfs), before a path joins a running
// device (hotplug) and, through the probe hook, before a dead path is
// reinstated: a path that comes back leading somewhere else (a remount to a
// different export, an NBD server now serving another file, a loop device
// re-pointed) is refused and stays dead, with the reason in its state.

// SampleBlocks is how many pseudo-random blocks the sample holds besides the
// first and the last block.
const SampleBlocks = 16

// sampleBlockSize is the size of one sample block; reads are aligned to it
// (the last block to 512 bytes), which O_DIRECT paths need.
const sampleBlockSize = 4096

// sampleRetries is how often a differing sample block is read again before
// the paths are declared different: on a live device a write may land
// between the two reads.
const sampleRetries = 4

// IdentityError says that two paths lead to different stores, and why.
type IdentityError struct {
	Path, Ref string // the path checked and the path it was checked against
	// Offset is the first differing byte of a sample comparison, -1 when
	// the paths differ in something other than their data.
	Offset int64
	Reason string
}

func (e *IdentityError) Error() string {
	if e.Offset >= 0 {
		return fmt.Sprintf("path %s and path %s lead to different stores: their data differ at byte offset %d (%s)", e.Path, e.Ref, e.Offset, e.Reason)
	}
	return fmt.Sprintf("path %s and path %s lead to different stores: %s", e.Path, e.Ref, e.Reason)
}

// StorePath is one path as the identity check sees it: a name for messages
// (the URI, or the path's name and URI) and its backend.
type StorePath struct {
	Name    string
	Backend backends.Backend
}

// Proof says what showed two paths lead to one store.
type Proof struct {
	// How: "same-object" (one native identity), or "sample" (sample blocks
	// agree; labels, where present, too).
	How string
	// Label is the label both files carry, if any.
	Label string
	// Blocks is how many sample blocks were compared; AllZero reports that
	// every one read as zeroes, which proves little.
	Blocks  int
	AllZero bool
}

func (p Proof) String() string {
	switch {
	case p.How == "same-object":
		return "one file or LU (same native identity)"
	case p.AllZero && p.Label == "":
		return fmt.Sprintf("%d sample blocks agree but all read as zeroes: the check cannot tell two empty stores apart; label the file (mpathfs label) to be sure", p.Blocks)
	case p.Label != "":
		return fmt.Sprintf("labels agree (%s) and %d sample blocks agree", p.Label, p.Blocks)
	}
	return fmt.Sprintf("%d sample blocks agree", p.Blocks)
}

// UncheckedError is a failure to read or inquire through one side of a
// check: it says nothing about identity.
type UncheckedError struct {
	Path string
	Ref  bool // the reference path failed, not the path checked
	Err  error
}

func (e *UncheckedError) Error() string {
	return fmt.Sprintf("cannot check the identity of path %s: %v", e.Path, e.Err)
}
func (e *UncheckedError) Unwrap() error { return e.Err }

// SampleOffsets is the deterministic sample of a store of the given size:
// the first block, the last block and SampleBlocks pseudo-random block
// offsets seeded from the size, sorted, without duplicates.
func SampleOffsets(size int64) []int64 {
	bs := sampleLen(size)
	if size <= 0 || bs <= 0 {
		return nil
	}
	last := (size - bs) &^ 511
	set := map[int64]bool{0: true, last: true}
	if blocks := size / sampleBlockSize; blocks > 2 {
		r := rand.New(rand.NewPCG(uint64(size), 0x6d70617468667321))
		for i := 0; i < SampleBlocks; i++ {
			set[r.Int64N(blocks)*sampleBlockSize] = true
		}
	}
	out := make([]int64, 0, len(set))
	for off := range set {
		if off+bs <= size {
			out = append(out, off)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out
}

func sampleLen(size int64) int64 {
	if size >= sampleBlockSize {
		return sampleBlockSize
	}
	if l := size &^ 511; l > 0 {
		return l
	}
	return size
}

// alignedBuf returns n bytes aligned to 4096, for O_DIRECT paths.
func alignedBuf(n int64) []byte {
	b := make([]byte, n+4096)
	skip := (4096 - int(uintptr(unsafe.Pointer(&b[0]))&4095)) & 4095
	return b[skip : skip+int(n)]
}

func nativeWWID(ctx context.Context, b backends.Backend) (string, error) {
	inq, ok := backends.As[backends.Inquirer](b)
	if !ok || !backends.Can(b, backends.CapInquiry) {
		return "", nil
	}
	i, err := inq.Inquiry(ctx)
	if err != nil {
		return "", err
	}
	return i.WWID, nil
}

// label reads a backend's label: the label, whether the store could carry
// one (false: no labels on this path, nothing to compare), or an error.
func label(ctx context.Context, b backends.Backend) (string, bool, error) {
	l, ok := backends.As[backends.Labeler](b)
	if !ok {
		return "", false, nil
	}
	s, err := l.Label(ctx)
	switch {
	case err == nil:
		return s, true, nil
	case errors.Is(err, backends.ErrNoLabel):
		return "", true, nil
	case errors.Is(err, backends.ErrLabelsUnsupported):
		return "", false, nil
	}
	return "", false, err
}

// VerifySameStore checks that path cand leads to the store ref leads to:
// labels, then native identities, then a sample of blocks (see the comment
// at the top of this file). An *IdentityError means they lead to different
// stores; any other error means the check could not be made (a read
// failed).
func VerifySameStore(ctx context.Context, ref, cand StorePath) (Proof, error) {
	if rs, cs := ref.Backend.Size(), cand.Backend.Size(); rs != cs {
		return Proof{}, &IdentityError{Path: cand.Name, Ref: ref.Name, Offset: -1, Reason: fmt.Sprintf("sizes differ (%d and %d bytes)", cs, rs)}
	}
	var pr Proof
	rl, rok, err := label(ctx, ref.Backend)
	if err != nil {
		return pr, &UncheckedError{Path: ref.Name, Ref: true, Err: err}
	}
	cl, cok, err := label(ctx, cand.Backend)
	if err != nil {
		return pr, &UncheckedError{Path: cand.Name, Err: err}
	}
	switch {
	case rok && cok && rl != "" && cl != "" && rl != cl:
		return pr, &IdentityError{Path: cand.Name, Ref: ref.Name, Offset: -1,
			Reason: fmt.Sprintf("their files carry different labels (%s %q and %q)", backends.LabelXattr, cl, rl)}
	case rok && cok && rl != "" && cl == "":
		return pr, &IdentityError{Path: cand.Name, Ref: ref.Name, Offset: -1,
			Reason: fmt.Sprintf("the file of %s carries no %s label while the file of %s is labelled %q", cand.Name, backends.LabelXattr, ref.Name, rl)}
	case rok && cok && cl != "" && rl == "":
		return pr, &IdentityError{Path: cand.Name, Ref: ref.Name, Offset: -1,
			Reason: fmt.Sprintf("the file of %s carries no %s label while the file of %s is labelled %q", ref.Name, backends.LabelXattr, cand.Name, cl)}
	case rok && rl != "":
		pr.Label = rl
	case cok && cl != "":
		pr.Label = cl
	}
	rw, err := nativeWWID(ctx, ref.Backend)
	if err != nil {
		return pr, &UncheckedError{Path: ref.Name, Ref: true, Err: err}
	}
	cw, err := nativeWWID(ctx, cand.Backend)
	if err != nil {
		return pr, &UncheckedError{Path: cand.Name, Err: err}
	}
	if rw != "" && rw == cw {
		pr.How = "same-object"
		return pr, nil
	}
	pr.How = "sample"
	size := ref.Backend.Size()
	bs := sampleLen(size)
	rb, cb := alignedBuf(bs), alignedBuf(bs)
	pr.AllZero = true
	offs := SampleOffsets(size)
	for i, off := range offs {
		for try := 0; ; try++ {
			if _, err := ref.Backend.ReadAt(ctx, rb, off); err != nil {
				return pr, &UncheckedError{Path: ref.Name, Ref: true, Err: fmt.Errorf("read at %d: %w", off, err)}
			}
			if _, err := cand.Backend.ReadAt(ctx, cb, off); err != nil {
				return pr, &UncheckedError{Path: cand.Name, Err: fmt.Errorf("read at %d: %w", off, err)}
			}
			if bytes.Equal(rb, cb) {
				break
			}
			if try == sampleRetries {
				at := off
				for j := range rb {
					if rb[j] != cb[j] {
						at += int64(j)
						break
					}
				}
				return pr, &IdentityError{Path: cand.Name, Ref: ref.Name, Offset: at,
					Reason: fmt.Sprintf("sample block %d of %d, at %d, read %d times", i+1, len(offs), off, try+1)}
			}
			// A write may have landed between the two reads: read again.
			t := time.NewTimer(time.Duration(10<<try) * time.Millisecond)
			select {
			case <-t.C:
			case <-ctx.Done():
				t.Stop()
				return pr, &UncheckedError{Path: cand.Name, Err: ctx.Err()}
			}
		}
		if pr.AllZero && !allZero(rb) {
			pr.AllZero = false
		}
		pr.Blocks++
	}
	return pr, nil
}

// ReadSample reads the sample of a store through one path, to choose a
// reference path that can be read.
func ReadSample(ctx context.Context, b backends.Backend) error {
	size := b.Size()
	buf := alignedBuf(sampleLen(size))
	for _, off := range SampleOffsets(size) {
		if _, err := b.ReadAt(ctx, buf, off); err != nil {
			return fmt.Errorf("read at %d: %w", off, err)
		}
	}
	return nil
}

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

// identities is what the device remembers of each path's identity, so that
// a path coming back reporting another native identity or label than it
// had is refused even when no other path is usable to compare with.
type identities struct {
	mu   sync.Mutex
	seen map[*mpath.Path]*pathIdentity
}

// pathIdentity is a path the device admitted into service: its native
// identity and label once filled in (at its first probe in service, or
// when a check proved it), and the last refusal published.
type pathIdentity struct {
	filled  bool
	native  string
	label   string
	refused string
}

// admitted records that a path joins the device in service (admit, under
// d.mu). A path that joins dead — its identity could not be checked at
// mount — is not recorded: it must prove its identity before it serves.
func (d *Device) admitted(p *mpath.Path) {
	if p.State() == mpath.StateDead {
		return
	}
	d.ids.mu.Lock()
	defer d.ids.mu.Unlock()
	if d.ids.seen == nil {
		d.ids.seen = map[*mpath.Path]*pathIdentity{}
	}
	if d.ids.seen[p] == nil {
		d.ids.seen[p] = &pathIdentity{}
	}
}

func (d *Device) idOf(p *mpath.Path) (pathIdentity, bool) {
	d.ids.mu.Lock()
	defer d.ids.mu.Unlock()
	id, ok := d.ids.seen[p]
	if !ok {
		return pathIdentity{}, false
	}
	return *id, true
}

// remember fills in a path's identity, once. It is never called under
// d.mu: it forgets paths the device no longer has, so removed paths are not
// kept alive.
func (d *Device) remember(p *mpath.Path, native, label string) {
	current := map[*mpath.Path]bool{p: true}
	for _, q := range d.Paths() {
		current[q] = true
	}
	d.ids.mu.Lock()
	defer d.ids.mu.Unlock()
	if d.ids.seen == nil {
		d.ids.seen = map[*mpath.Path]*pathIdentity{}
	}
	for q := range d.ids.seen {
		if !current[q] {
			delete(d.ids.seen, q)
		}
	}
	id := d.ids.seen[p]
	if id == nil {
		id = &pathIdentity{}
		d.ids.seen[p] = id
	}
	id.refused = ""
	if !id.filled {
		id.filled, id.native, id.label = true, native, label
	}
}

// identityAfterProbe is the probe hook: after a passing probe of a path
// that is not in service (dead, disabled, or being added), the path's
// identity is checked before the checker may reinstate it, and a path that
// leads to a different store fails its probe with the *IdentityError. An
// active path only has its identity filled in, once.
func (d *Device) identityAfterProbe(p *mpath.Path, err error) error {
	if err != nil {
		return err
	}
	id, known := d.idOf(p)
	switch p.State() {
	case mpath.StateDead, mpath.StateDisabled, mpath.StateUnknown:
	default:
		if !id.filled {
			ctx, cancel := context.WithTimeout(context.Background(), d.cfg.ProbeTimeout)
			native, nerr := nativeWWID(ctx, p.Backend)
			lb, _, lerr := label(ctx, p.Backend)
			cancel()
			if nerr == nil && lerr == nil {
				d.remember(p, native, lb)
			}
		}
		return nil
	}
	// Bounded by the probe timeout, so that a round of the checker stays
	// bounded as well.
	verr := d.verifyWithin(context.Background(), p, d.cfg.ProbeTimeout)
	var ie *IdentityError
	if errors.As(verr, &ie) || (verr != nil && !known) {
		return verr
	}
	// A path the device had in service fails closed only on proof: one
	// whose sample cannot be read (a gray failure, a hang) is judged by its
	// probes and its I/O, as before.
	return nil
}

// VerifyPath checks that a path leads to this device's store before it
// joins or returns: against what the device remembers of it (native
// identity, label) and against a usable path of the device
// (VerifySameStore). It gives up after the device's I/O timeout (a hung
// path) and returns an *IdentityError when the path leads elsewhere, an
// *UncheckedError (or the context's error) when it could not be checked.
func (d *Device) VerifyPath(ctx context.Context, p *mpath.Path) error {
	return d.verifyWithin(ctx, p, d.cfg.IOTimeout)
}

func (d *Device) verifyWithin(ctx context.Context, p *mpath.Path, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	done := make(chan error, 1)
	if !d.stopper.goCall(func() { done <- d.verifyPath(ctx, p) }) {
		return ioerr.ErrClosed
	}
	var err error
	select {
	case err = <-done:
	case <-ctx.Done():
		err = &UncheckedError{Path: describe(p), Err: fmt.Errorf("the check did not finish in %v: %w", timeout, ctx.Err())}
	case <-d.stopper.done():
		err = ioerr.ErrClosed
	}
	if err != nil {
		d.noteRefusal(p, err)
	}
	return err
}

func (d *Device) noteRefusal(p *mpath.Path, err error) {
	d.ids.mu.Lock()
	id := d.ids.seen[p]
	publish := id == nil || id.refused != err.Error()
	if id != nil {
		id.refused = err.Error()
	}
	d.ids.mu.Unlock()
	var ie *IdentityError
	if !errors.As(err, &ie) && id != nil {
		return // a path the device had in service is not refused for it
	}
	if publish {
		d.events.Publish(mpath.Event{Time: time.Now(), Kind: "identity-refused", Device: d.name, Path: p.Name, Reason: err.Error()})
	}
}

func describe(p *mpath.Path) string {
	if p.Name == "" {
		return p.URI
	}
	if p.URI == "" || p.URI == p.Name {
		return p.Name
	}
	return p.Name + " (" + p.URI + ")"
}

func (d *Device) verifyPath(ctx context.Context, p *mpath.Path) error {
	native, err := nativeWWID(ctx, p.Backend)
	if err != nil {
		return &UncheckedError{Path: describe(p), Err: err}
	}
	lb, _, err := label(ctx, p.Backend)
	if err != nil {
		return &UncheckedError{Path: describe(p), Err: err}
	}
	id, known := d.idOf(p)
	if id.filled {
		if id.native != "" && native != id.native {
			return &IdentityError{Path: describe(p), Ref: describe(p), Offset: -1,
				Reason: fmt.Sprintf("the path reports identity %s now but reported %s when it joined (a remount to another export, a re-pointed loop device)", native, id.native)}
		}
		if id.label != "" && lb != id.label {
			return &IdentityError{Path: describe(p), Ref: describe(p), Offset: -1,
				Reason: fmt.Sprintf("its file is labelled %q now but was labelled %q when it joined", lb, id.label)}
		}
	}
	for _, q := range d.view.Load().Usable {
		if q == p {
			continue
		}
		_, err := VerifySameStore(ctx, StorePath{describe(q), q.Backend}, StorePath{describe(p), p.Backend})
		var ue *UncheckedError
		if errors.As(err, &ue) && ue.Ref {
			continue // the reference failed: try another
		}
		if err != nil {
			return err
		}
		d.remember(p, native, lb)
		return nil
	}
	// No usable path to compare with (all paths down, or the first path).
	if !known {
		return &UncheckedError{Path: describe(p), Err: errors.New("no path in service to compare it with")}
	}
	// What the path reports of itself has not changed (checked above).
	d.remember(p, native, lb)
	return nil
}
