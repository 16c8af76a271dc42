package nmp

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mpathfs/mpathfs/backends"
	"github.com/mpathfs/mpathfs/ioerr"
	"github.com/mpathfs/mpathfs/mpath"
	"github.com/mpathfs/mpathfs/scsi"
)

// Reservations from the host side. A SCSI reservation belongs to an I_T
// nexus — one initiator port talking to one target port — and every path
// of a device is one nexus. So the device, not the path, is where a host's
// reservation key lives:
//
//   - a key is registered on every path (every nexus); a path that joins
//     later (path add, hotplug) or comes back (reinstated by the checker,
//     switched on) is registered before it carries I/O — its probe does it
//     (prAfterProbe) — so adding a path to a reserved device does not
//     produce conflicts;
//   - a path comes back registered only while this host's key is still
//     registered on the LU: a host whose key another host preempted stays
//     fenced, whatever paths it brings back (multipathd checks the same
//     way with READ KEYS before it registers a new path);
//   - RESERVE, RELEASE, PREEMPT and CLEAR go through one usable path;
//     RELEASE goes through the path the reservation was taken on first,
//     because for WE and EA the holder is that one nexus (a RELEASE from
//     another registered nexus completes with GOOD and releases nothing);
//   - a WE or EA persistent reservation, and a SCSI-2 reservation
//     (RESERVE(6)), is held by one nexus, and every other nexus — this
//     host's other paths included — meets RESERVATION CONFLICT: while one
//     is held, I/O is pinned to the path that took it (when that path
//     fails, I/O goes elsewhere and meets the conflict: use WERO, EARO,
//     WEAR or EAAR on multipath devices, which every registrant holds).
//
// RESERVATION CONFLICT on an I/O is ioerr.ClassConflict: the path stays
// active, nothing fails over or retries; the device counts it and publishes
// a reservation-conflict event at most once per conflictEventEvery.

// conflictEventEvery bounds the reservation-conflict events of a device: a
// fenced host writing in a loop meets a conflict per I/O.
const conflictEventEvery = time.Second

// prState is a device's reservation bookkeeping.
type prState struct {
	mu     sync.Mutex
	key    uint64               // this host's registered key, 0 for none
	on     map[*mpath.Path]bool // paths whose nexus carries key
	holder *mpath.Path          // the path the last RESERVE went through
	lost   bool                 // key was found preempted on the LU

	pin atomic.Pointer[mpath.Path] // the SCSI-2 reservation's path

	conflicts atomic.Uint64
	quiet     atomic.Uint64 // conflicts not yet reported by an event
	lastEvent atomic.Int64  // unix nanoseconds of the last event
}

// ErrNoReserve is wrapped by the error of a reservation command on a device
// with a path that cannot carry reservations.
var ErrNoReserve = errors.New("cannot carry persistent reservations")

// noteConflict counts a RESERVATION CONFLICT an I/O met and publishes a
// rate-limited event.
func (d *Device) noteConflict(path *mpath.Path, op mpath.OpKind, err error) {
	d.pr.conflicts.Add(1)
	n := d.pr.quiet.Add(1)
	now := time.Now()
	last := d.pr.lastEvent.Load()
	if now.UnixNano()-last < int64(conflictEventEvery) || !d.pr.lastEvent.CompareAndSwap(last, now.UnixNano()) {
		return
	}
	d.pr.quiet.Add(-n)
	d.events.Publish(mpath.Event{Time: now, Kind: "reservation-conflict", Device: d.name, Path: path.Name,
		Reason: fmt.Sprintf("%d I/O(s) met RESERVATION CONFLICT since the last event (this one: %s): another host holds a reservation; the path stays active", n, op)})
}

// ReservationConflicts is how many I/Os met RESERVATION CONFLICT.
func (d *Device) ReservationConflicts() uint64 { return d.pr.conflicts.Load() }

// PRKey returns the key this host registered through the device (0 none)
// and whether it was found preempted.
func (d *Device) PRKey() (uint64, bool) {
	d.pr.mu.Lock()
	defer d.pr.mu.Unlock()
	return d.pr.key, d.pr.lost
}

func transportOf(p *mpath.Path) string {
	if u, err := backends.ParseURI(p.URI); err == nil && u.Scheme != "" {
		return u.Scheme
	}
	if p.Inquiry.Transport != "" {
		return p.Inquiry.Transport
	}
	return "unknown"
}

// reserverOf returns the path's Reserver or the error naming it.
func reserverOf(p *mpath.Path) (backends.Reserver, error) {
	r, ok := backends.As[backends.Reserver](p.Backend)
	if !ok || !backends.Can(p.Backend, backends.CapReserve) {
		return nil, fmt.Errorf("path %s (%s) %w: use iscsi:// paths for reservations", p.Name, transportOf(p), ErrNoReserve)
	}
	return r, nil
}

// checkReservers fails unless every path of the device carries
// reservations: a path that does not would write past any reservation.
func (d *Device) checkReservers() error {
	for _, p := range d.Paths() {
		if _, err := reserverOf(p); err != nil {
			return &ioerr.Error{Class: ioerr.ClassDeviceError, Op: "pr", Err: fmt.Errorf("device %s: %w", d.name, errors.Join(err, backends.ErrNotSupported))}
		}
	}
	return nil
}

func (d *Device) prCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, d.cfg.IOTimeout)
}

// prRetries bounds the re-issues of a reservation command that met a
// retryable error: above all a unit attention (06/2A/03 RESERVATIONS
// PREEMPTED, 06/2A/04 RELEASED, 06/2A/05 REGISTRATIONS PREEMPTED), which
// the nexus's next command reports once, whatever that command is.
const prRetries = 4

// prRetry runs f, again while it fails with a retryable error.
func prRetry(f func() error) error {
	var err error
	for range prRetries + 1 {
		if err = f(); err == nil || ClassifyError(err) != ioerr.ClassRetryable {
			return err
		}
	}
	return err
}

// throughOne runs f on one usable path, first on prefer when it is usable,
// then on the others in routing order while f fails with a path failure.
// It returns the path that answered.
func (d *Device) throughOne(ctx context.Context, op string, prefer *mpath.Path, f func(context.Context, backends.Reserver) error) (*mpath.Path, error) {
	if err := d.checkReservers(); err != nil {
		return nil, err
	}
	v := d.view.Load()
	order := make([]*mpath.Path, 0, len(v.Usable)+1)
	if prefer != nil && slices.Contains(v.Usable, prefer) {
		order = append(order, prefer)
	}
	for _, p := range v.Usable {
		if p != prefer {
			order = append(order, p)
		}
	}
	if len(order) == 0 {
		return nil, &ioerr.Error{Class: ioerr.ClassPathFailure, Op: op, Err: fmt.Errorf("device %s: %w: no path to send it through", d.name, ioerr.ErrNoPaths)}
	}
	var last error
	for _, p := range order {
		r, _ := reserverOf(p)
		err := prRetry(func() error {
			c, cancel := d.prCtx(ctx)
			defer cancel()
			return f(c, r)
		})
		if err == nil {
			return p, nil
		}
		last = fmt.Errorf("path %s: %w", p.Name, err)
		if ClassifyError(err) != ioerr.ClassPathFailure || ctx.Err() != nil {
			return p, last
		}
	}
	return nil, last
}

// PRRegister registers newKey for this host on every reachable path
// (REGISTER with oldKey on the first, REGISTER AND IGNORE EXISTING KEY on
// the others, whose nexus may carry no key yet; with ignore, that on all).
// newKey 0 unregisters. A path that is down now is registered when it
// comes back; a path that fails to register is failed, so that it does
// not carry I/O unregistered: its probe registers it on the way back.
func (d *Device) PRRegister(ctx context.Context, oldKey, newKey uint64, ignore bool) error {
	if err := d.checkReservers(); err != nil {
		return err
	}
	d.pr.mu.Lock()
	defer d.pr.mu.Unlock()
	var targets []*mpath.Path
	for _, p := range d.Paths() {
		if st := p.State(); (st == mpath.StateActive || st == mpath.StateStandby) && !p.AdminOff() {
			targets = append(targets, p)
		}
	}
	if len(targets) == 0 {
		return &ioerr.Error{Class: ioerr.ClassPathFailure, Op: "pr register", Err: fmt.Errorf("device %s: %w: no reachable path to register on", d.name, ioerr.ErrNoPaths)}
	}
	on := map[*mpath.Path]bool{}
	first := true
	var failed []string
	for _, p := range targets {
		r, _ := reserverOf(p)
		isFirst := first
		err := prRetry(func() error {
			c, cancel := d.prCtx(ctx)
			defer cancel()
			if isFirst {
				return r.PRRegister(c, oldKey, newKey, ignore)
			}
			return r.PRRegister(c, 0, newKey, true)
		})
		if err != nil && first {
			if ClassifyError(err) == ioerr.ClassPathFailure && len(targets) > 1 {
				// try the user's REGISTER on the next path
				failed = append(failed, p.Name)
				d.FailPath(p.Name, "could not register the reservation key: "+err.Error())
				continue
			}
			return fmt.Errorf("device %s: register on path %s: %w", d.name, p.Name, err)
		}
		first = false
		if err != nil {
			failed = append(failed, p.Name)
			d.FailPath(p.Name, "could not register the reservation key: "+err.Error())
			continue
		}
		on[p] = true
	}
	if first {
		return fmt.Errorf("device %s: register failed on every path (%v)", d.name, failed)
	}
	d.pr.key, d.pr.on, d.pr.lost = newKey, on, false
	if newKey == 0 {
		d.pr.on, d.pr.holder = nil, nil
	}
	d.events.Publish(mpath.Event{Time: time.Now(), Kind: "pr-register", Device: d.name,
		Reason: fmt.Sprintf("key 0x%x on %d path(s)%s", newKey, len(on), failedNote(failed))})
	return nil
}

func failedNote(failed []string) string {
	if len(failed) == 0 {
		return ""
	}
	return fmt.Sprintf("; failed %v: they register when the checker brings them back", failed)
}

// prAfterProbe registers this host's key on a path whose probe passed and
// that is joining or coming back, before it carries I/O — if the key is
// still registered on the LU (READ KEYS through the path itself). A path
// that cannot be registered fails its probe and stays out of service.
func (d *Device) prAfterProbe(ctx context.Context, p *mpath.Path, perr error) error {
	if perr != nil {
		d.pr.mu.Lock()
		delete(d.pr.on, p) // a dead nexus may come back as a new one
		d.pr.mu.Unlock()
		return perr
	}
	d.pr.mu.Lock()
	defer d.pr.mu.Unlock()
	if d.pr.key == 0 || d.pr.lost || d.pr.on[p] {
		return nil
	}
	r, err := reserverOf(p)
	if err != nil {
		return &ioerr.Error{Class: ioerr.ClassDeviceError, Op: "probe", Path: p.Name,
			Err: fmt.Errorf("device %s holds reservation key 0x%x: %w", d.name, d.pr.key, err)}
	}
	c, cancel := context.WithTimeout(ctx, d.cfg.ProbeTimeout)
	defer cancel()
	var keys []uint64
	err = prRetry(func() error {
		var e error
		_, keys, e = r.PRReadKeys(c)
		return e
	})
	if err != nil {
		return fmt.Errorf("reading the registered keys before registering the path: %w", err)
	}
	if !slices.Contains(keys, d.pr.key) {
		// Preempted: this host was fenced. Its paths come back as they
		// are; their I/O meets the reservation as the other paths' does.
		d.pr.lost = true
		d.events.Publish(mpath.Event{Time: time.Now(), Kind: "pr-key-lost", Device: d.name, Path: p.Name,
			Reason: fmt.Sprintf("key 0x%x is no longer registered on the LU (preempted by another host): paths are not registered again", d.pr.key)})
		return nil
	}
	if err := prRetry(func() error { return r.PRRegister(c, 0, d.pr.key, true) }); err != nil {
		return fmt.Errorf("registering reservation key 0x%x on the path before it carries I/O: %w", d.pr.key, err)
	}
	if d.pr.on == nil {
		d.pr.on = map[*mpath.Path]bool{}
	}
	d.pr.on[p] = true
	d.events.Publish(mpath.Event{Time: time.Now(), Kind: "pr-register", Device: d.name, Path: p.Name,
		Reason: fmt.Sprintf("key 0x%x registered on the path before it carries I/O", d.pr.key)})
	return nil
}

// PRReserve takes a persistent reservation of type typ through one path.
func (d *Device) PRReserve(ctx context.Context, key uint64, typ scsi.PRType) error {
	if !typ.Valid() {
		return fmt.Errorf("reservation type %d: want 1 (WE), 3 (EA), 5 (WERO), 6 (EARO), 7 (WEAR) or 8 (EAAR)", typ)
	}
	p, err := d.throughOne(ctx, "pr reserve", nil, func(c context.Context, r backends.Reserver) error { return r.PRReserve(c, key, typ) })
	if err != nil {
		return fmt.Errorf("device %s: reserve: %w", d.name, err)
	}
	d.holds(p, typ)
	return nil
}

// holds records that this host holds a reservation of type typ through p.
// WE and EA are held by that one nexus: the device's writes are pinned to
// it (its other paths would meet RESERVATION CONFLICT); the other types
// are held by every registrant, so every path stays in use.
func (d *Device) holds(p *mpath.Path, typ scsi.PRType) {
	d.pr.mu.Lock()
	d.pr.holder = p
	d.pr.mu.Unlock()
	if typ == scsi.PRWriteExclusive || typ == scsi.PRExclusiveAccess {
		d.pr.pin.Store(p)
	} else {
		d.pr.pin.Store(nil)
	}
}

// PRRelease releases the reservation, through the path that took it first.
func (d *Device) PRRelease(ctx context.Context, key uint64, typ scsi.PRType) error {
	d.pr.mu.Lock()
	h := d.pr.holder
	d.pr.mu.Unlock()
	if _, err := d.throughOne(ctx, "pr release", h, func(c context.Context, r backends.Reserver) error { return r.PRRelease(c, key, typ) }); err != nil {
		return fmt.Errorf("device %s: release: %w", d.name, err)
	}
	d.pr.mu.Lock()
	d.pr.holder = nil
	d.pr.mu.Unlock()
	d.pr.pin.Store(nil)
	return nil
}

// PRClear removes every registration and the reservation.
func (d *Device) PRClear(ctx context.Context, key uint64) error {
	if _, err := d.throughOne(ctx, "pr clear", nil, func(c context.Context, r backends.Reserver) error { return r.PRClear(c, key) }); err != nil {
		return fmt.Errorf("device %s: clear: %w", d.name, err)
	}
	d.pr.mu.Lock()
	d.pr.key, d.pr.on, d.pr.holder = 0, nil, nil
	d.pr.mu.Unlock()
	d.pr.pin.Store(nil)
	return nil
}

// PRPreempt removes victim's registrations (PREEMPT, or PREEMPT AND ABORT
// to fence a host: its commands in flight are aborted too).
func (d *Device) PRPreempt(ctx context.Context, key, victim uint64, typ scsi.PRType, abort bool) error {
	p, err := d.throughOne(ctx, "pr preempt", nil, func(c context.Context, r backends.Reserver) error { return r.PRPreempt(c, key, victim, typ, abort) })
	if err != nil {
		return fmt.Errorf("device %s: preempt: %w", d.name, err)
	}
	d.holds(p, typ)
	return nil
}

// PRReadKeys returns the PR generation and the registered keys.
func (d *Device) PRReadKeys(ctx context.Context) (gen uint32, keys []uint64, err error) {
	_, err = d.throughOne(ctx, "pr read keys", nil, func(c context.Context, r backends.Reserver) error {
		var e error
		gen, keys, e = r.PRReadKeys(c)
		return e
	})
	return gen, keys, err
}

// PRReadReservation returns the reservation held on the LU, if any.
func (d *Device) PRReadReservation(ctx context.Context) (res backends.PRReservation, err error) {
	_, err = d.throughOne(ctx, "pr read reservation", nil, func(c context.Context, r backends.Reserver) error {
		var e error
		res, e = r.PRReadReservation(c)
		return e
	})
	return res, err
}

// PRReadFullStatus returns every registration with its holder flag.
func (d *Device) PRReadFullStatus(ctx context.Context) (fs backends.PRFullStatus, err error) {
	_, err = d.throughOne(ctx, "pr read full status", nil, func(c context.Context, r backends.Reserver) error {
		var e error
		fs, e = r.PRReadFullStatus(c)
		return e
	})
	return fs, err
}

// PRCapabilities is REPORT CAPABILITIES through one path.
func (d *Device) PRCapabilities(ctx context.Context) (caps backends.PRCapabilities, err error) {
	_, err = d.throughOne(ctx, "pr report capabilities", nil, func(c context.Context, r backends.Reserver) error {
		var e error
		caps, e = r.PRCapabilities(c)
		return e
	})
	return caps, err
}

// Reserve6 takes the SCSI-2 reservation through one path and pins the
// device's I/O to that path until Release6: every other nexus, this host's
// other paths included, would meet RESERVATION CONFLICT.
func (d *Device) Reserve6(ctx context.Context) error {
	p, err := d.throughOne(ctx, "reserve6", d.pr.pin.Load(), func(c context.Context, r backends.Reserver) error { return r.Reserve6(c) })
	if err != nil {
		return fmt.Errorf("device %s: reserve(6): %w", d.name, err)
	}
	d.pr.pin.Store(p)
	return nil
}

// Release6 releases the SCSI-2 reservation through the path that holds it
// and unpins I/O.
func (d *Device) Release6(ctx context.Context) error {
	_, err := d.throughOne(ctx, "release6", d.pr.pin.Load(), func(c context.Context, r backends.Reserver) error { return r.Release6(c) })
	if err != nil {
		return fmt.Errorf("device %s: release(6): %w", d.name, err)
	}
	d.pr.pin.Store(nil)
	return nil
}

// pinned returns the path a SCSI-2 reservation pins I/O to, when it is
// usable in v.
func (d *Device) pinned(v *View) *mpath.Path {
	p := d.pr.pin.Load()
	if p == nil {
		return nil
	}
	if _, ok := v.GroupOf[p]; ok {
		return p
	}
	return nil
}
