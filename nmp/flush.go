package nmp

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"syscall"
	"time"

	"github.com/mpathfs/mpathfs/backends"
	"github.com/mpathfs/mpathfs/ioerr"
	"github.com/mpathfs/mpathfs/mpath"
)

// Flush bookkeeping.
//
// A path's writes are marked on the path (mpath.Path's dirty flag, set by
// every acknowledged write-class operation). Flushes on a path are numbered
// runs: a run's number is taken when it starts, and a successful run
// numbered n makes durable every write acknowledged on the path before any
// run numbered n or higher started. When a Flush call takes a path's dirty
// flag it records that the path needs a successful run numbered at least
// seq+1 (the next run to start); a path is clean when no such need is
// outstanding.
//
// So concurrent Flush calls share runs (group commit) but never trust a run
// that started before their writes were taken: a second fsync that finds
// the flag already taken waits for the run the first one started (or a
// later one), and a failed run leaves the need in place for the next Flush.
//
// A path that cannot be flushed (dead, standby, switched off, removed) is
// covered by a run on a usable path in the same cache domain
// (backends.CacheSharer) that started after the Flush call took its
// requirement. With no such path the Flush waits for the path to return
// (bounded by the APD timeout from when it left service) and then fails
// with EIO naming the path, which stays dirty until it returns and its own
// flush succeeds. A path
// removed while dirty is flushed on the way out when it still works;
// otherwise its writes are handed to the next Flush call as an orphan
// (covered through its cache domain, or reported as failed once).

// flushState is a device's flush bookkeeping; Device.flush.
type flushState struct {
	mu      sync.Mutex
	paths   map[*mpath.Path]*pathFlush
	orphans []*orphan
}

// pathFlush is one path's flush runs and outstanding need.
type pathFlush struct {
	seq  uint64    // runs started on the path so far (the last run's number)
	ok   uint64    // the highest number of a run that succeeded
	need uint64    // 0: clean; else a run numbered ≥ need must succeed
	run  *flushRun // the run in progress, if any
	// leaving is closed when a path RemovePath took out of the device has
	// been flushed on its way out or turned into an orphan.
	leaving chan struct{}
}

func (st *pathFlush) pending() bool { return st.need != 0 && st.ok < st.need }

// flushRun is one flush on one path; waiters share its outcome.
type flushRun struct {
	n       uint64
	done    chan struct{}
	err     error
	verdict *Verdict // the SATP's judgement of err; nil if the run was cancelled
}

// orphan is the outstanding need of a path that left the device dirty.
type orphan struct {
	name   string
	domain string
	cause  error
}

func (fs *flushState) get(p *mpath.Path) *pathFlush {
	if fs.paths == nil {
		fs.paths = map[*mpath.Path]*pathFlush{}
	}
	st := fs.paths[p]
	if st == nil {
		st = &pathFlush{}
		fs.paths[p] = st
	}
	return st
}

// take moves the path's dirty flag into its need. Called with fs.mu held.
func (fs *flushState) take(p *mpath.Path) *pathFlush {
	st := fs.get(p)
	if p.TakeDirty() {
		st.need = st.seq + 1
	}
	return st
}

// cacheDomain is the path's cache domain ("" when it names none).
func cacheDomain(p *mpath.Path) string {
	if c, ok := backends.As[backends.CacheSharer](p.Backend); ok {
		return c.CacheDomain()
	}
	return ""
}

// Flush returns when every write acknowledged before it was called is
// durable on every path that carried it: each dirty path gets a successful
// flush that started after the call (or shares one with a concurrent
// call), or, when it cannot be flushed, a flush on a usable path that
// shares its cache. It fails, and the paths stay dirty, when that is not
// possible.
func (d *Device) Flush(ctx context.Context) error {
	fs := &d.flush
	type want struct {
		p    *mpath.Path
		need uint64
	}
	var wants []want
	paths := d.Paths()
	fs.mu.Lock()
	for p, st := range fs.paths {
		if st.leaving != nil && !slices.Contains(paths, p) { // RemovePath took it out; still ours
			paths = append(paths, p)
		}
	}
	for _, p := range paths {
		if fs.paths[p] == nil && !p.Dirty() {
			continue
		}
		st := fs.take(p)
		if st.pending() {
			wants = append(wants, want{p, st.need})
		}
	}
	orphans := append([]*orphan(nil), fs.orphans...)
	fs.mu.Unlock()
	if len(wants) == 0 && len(orphans) == 0 {
		return nil
	}
	if len(wants) == 1 && len(orphans) == 0 { // the common case: no goroutine
		err := d.settle(ctx, wants[0].p, wants[0].need)
		if err != nil {
			wants[0].p.MarkDirty()
		}
		return err
	}
	errs := make([]error, len(wants)+len(orphans))
	var wg sync.WaitGroup
	for i, w := range wants {
		wg.Go(func() {
			if errs[i] = d.settle(ctx, w.p, w.need); errs[i] != nil {
				w.p.MarkDirty() // not known durable: Dirty says so
			}
		})
	}
	for i, o := range orphans {
		wg.Go(func() { errs[len(wants)+i] = d.settleOrphan(ctx, o) })
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

// usable reports whether I/O may be routed to p now.
func (d *Device) usable(p *mpath.Path) bool {
	_, ok := d.view.Load().GroupOf[p]
	return ok
}

// settle makes the writes a path needs flushed (a run numbered ≥ need)
// durable: on the path itself while it is usable, else through a usable
// path of its cache domain.
func (d *Device) settle(ctx context.Context, p *mpath.Path, need uint64) error {
	fs := &d.flush
	attempts := 0
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		fs.mu.Lock()
		st := fs.paths[p]
		if st == nil {
			// RemovePath settled it meanwhile: clean, or an orphan.
			o := fs.orphanNamed(p.Name)
			fs.mu.Unlock()
			if o == nil {
				return nil
			}
			return d.settleOrphan(ctx, o)
		}
		if st.ok >= need || st.need == 0 {
			fs.mu.Unlock()
			return nil // flushed by a run that started late enough, or covered
		}
		leaving := st.leaving
		fs.mu.Unlock()
		if leaving != nil {
			// RemovePath is flushing it on its way out.
			select {
			case <-leaving:
			case <-ctx.Done():
				return ctx.Err()
			}
			continue
		}
		var target *mpath.Path
		var targetNeed uint64
		if d.usable(p) {
			target, targetNeed = p, need
		} else {
			dom := cacheDomain(p)
			target = d.coverFor(p, dom)
			if target == nil {
				if err := d.waitForReturn(ctx, p, dom); err != nil {
					return err
				}
				continue
			}
			fs.mu.Lock()
			targetNeed = fs.get(target).seq + 1 // a run that starts from now on
			fs.mu.Unlock()
		}
		v, err := d.runFlush(ctx, target, targetNeed, true)
		if err == nil {
			if target != p {
				fs.mu.Lock()
				if st := fs.paths[p]; st != nil && st.need == need {
					st.need = 0 // covered; a later take sets a new need
				}
				fs.mu.Unlock()
			}
			return nil
		}
		if cerr := ctx.Err(); cerr != nil {
			return cerr
		}
		attempts++
		if v != nil && !v.Retry {
			return d.finalError(mpath.OpFlush, target, v.Class, err)
		}
		if attempts > d.cfg.MaxRetries {
			return &ioerr.Error{Class: ClassifyError(err), Op: "flush", Path: target.Name,
				Err: fmt.Errorf("gave up after %d attempts: %w", attempts, err)}
		}
		if v != nil && v.Backoff > 0 {
			t := time.NewTimer(v.Backoff)
			select {
			case <-t.C:
			case <-ctx.Done():
				t.Stop()
				return ctx.Err()
			}
		}
	}
}

// orphanNamed finds the orphan a removed path left. Called with fs.mu held.
func (fs *flushState) orphanNamed(name string) *orphan {
	for _, o := range fs.orphans {
		if o.name == name {
			return o
		}
	}
	return nil
}

// coverFor returns a usable path of cache domain dom other than p (p may
// be nil), or nil.
func (d *Device) coverFor(p *mpath.Path, dom string) *mpath.Path {
	if dom == "" {
		return nil
	}
	for _, q := range d.view.Load().Usable {
		if q != p && cacheDomain(q) == dom {
			return q
		}
	}
	return nil
}

// waitForReturn waits, when no usable path shares p's cache, for the
// paths to change (p may come back: the checker probes it; or a path of
// its domain may), as long as I/O waits out All-Paths-Down (the APD
// timeout or no_path_retry, counted from when p left service; not at all
// after `queue off`). A path that cannot come back
// by itself (permanent device loss, switched off) or that is past the
// timeout gets notDurable at once.
func (d *Device) waitForReturn(ctx context.Context, p *mpath.Path, dom string) error {
	v := d.view.Load()
	if d.usable(p) || d.coverFor(p, dom) != nil {
		return nil
	}
	if p.PDL() || p.AdminOff() {
		return notDurable(p, dom)
	}
	since, _ := p.StateSince()
	d.mu.Lock()
	limit, forever, _ := d.mu.dec.waitLimit() // policy.go: no_path_retry, queue on|off
	d.mu.Unlock()
	var expired <-chan time.Time
	if !forever {
		remaining := time.Until(since.Add(limit))
		if remaining <= 0 {
			return notDurable(p, dom)
		}
		t := time.NewTimer(remaining)
		defer t.Stop()
		expired = t.C
	}
	select {
	case <-v.Changed():
		return nil
	case <-expired:
		return notDurable(p, dom)
	case <-ctx.Done():
		return ctx.Err()
	case <-d.stopper.done():
		return ioerr.ErrClosed
	}
}

// notDurable is the error of a Flush that cannot make a path's writes
// durable: EIO, naming the path.
func notDurable(p *mpath.Path, dom string) error {
	why := "no usable path shares its cache"
	if dom == "" {
		why = "its transport names no cache another path could flush"
	}
	return &ioerr.Error{Class: ioerr.ClassPathFailure, Op: "flush", Path: p.Name,
		Err: fmt.Errorf("writes acknowledged on this path are not known durable: the path is %s and %s: %w", p.State(), why, syscall.EIO)}
}

// runFlush waits for a successful flush run numbered ≥ need on p, starting
// one when none in progress qualifies. It returns the error of the run
// that was meant to qualify and the SATP's verdict on it (judged once, by
// the caller that ran it, when judge is set).
func (d *Device) runFlush(ctx context.Context, p *mpath.Path, need uint64, judge bool) (*Verdict, error) {
	fs := &d.flush
	for {
		fs.mu.Lock()
		st := fs.get(p)
		if st.ok >= need {
			fs.mu.Unlock()
			return nil, nil
		}
		if r := st.run; r != nil {
			fs.mu.Unlock()
			select {
			case <-r.done:
			case <-ctx.Done():
				return nil, ctx.Err()
			}
			if r.err != nil && r.n >= need && r.verdict != nil {
				return r.verdict, r.err
			}
			continue // it succeeded (ok moved), did not qualify, or was cancelled
		}
		st.seq++
		r := &flushRun{n: st.seq, done: make(chan struct{})}
		st.run = r
		fs.mu.Unlock()

		_, err := d.exec(ctx, p, mpath.OpFlush, nil, 0, 0)
		if err != nil && ctx.Err() == nil {
			v := Verdict{Class: ClassifyError(err), Retry: true}
			if judge {
				v = d.judge(ctx, p, mpath.OpFlush, err)
			}
			r.verdict = &v
		}
		fs.mu.Lock()
		st.run = nil
		r.err = err
		if err == nil && r.n > st.ok {
			st.ok = r.n
		}
		close(r.done)
		fs.mu.Unlock()
		if err != nil {
			return r.verdict, err
		}
	}
}

// pathLeaving is RemovePath's first hook, called with d.mu held as the
// path leaves the device's list: Flush calls keep seeing the path until
// pathRemoved settled it.
func (d *Device) pathLeaving(p *mpath.Path) {
	fs := &d.flush
	fs.mu.Lock()
	defer fs.mu.Unlock()
	st := fs.get(p)
	if st.leaving == nil {
		st.leaving = make(chan struct{})
	}
}

// pathRemoved is RemovePath's second hook, called once I/O in flight on
// the path finished and before its backend is closed: a dirty path that
// still works is flushed; otherwise its writes become an orphan for the
// next Flush call.
func (d *Device) pathRemoved(p *mpath.Path) {
	fs := &d.flush
	fs.mu.Lock()
	st := fs.take(p)
	pending, need := st.pending(), st.need
	fs.mu.Unlock()
	var cause error
	if pending {
		if p.State() == mpath.StateActive && !p.AdminOff() {
			ctx, cancel := context.WithTimeout(context.Background(), d.cfg.IOTimeout)
			_, cause = d.runFlush(ctx, p, need, false)
			cancel()
		} else {
			cause = fmt.Errorf("removed while %s", p.State())
		}
	}
	dom := ""
	if cause != nil {
		dom = cacheDomain(p)
	}
	fs.mu.Lock()
	defer fs.mu.Unlock()
	if cause != nil {
		fs.orphans = append(fs.orphans, &orphan{name: p.Name, domain: dom, cause: cause})
	}
	if st.leaving != nil {
		close(st.leaving)
	}
	delete(fs.paths, p)
}

// settleOrphan covers the writes of a path removed while dirty through a
// usable path in its cache domain, or reports them as not durable. Either
// way the orphan is done with (a failure is reported once, as a file
// system reports a lost write-back once).
func (d *Device) settleOrphan(ctx context.Context, o *orphan) error {
	var err error
	for attempts := 0; ; attempts++ {
		q := d.coverFor(nil, o.domain)
		if q == nil {
			v := d.view.Load()
			if len(v.Usable) == 0 && o.domain != "" {
				if werr := d.waitForPath(ctx, v); werr != nil {
					return werr
				}
				continue
			}
			why := "no usable path shares its cache"
			if o.domain == "" {
				why = "its transport names no cache another path could flush"
			}
			err = &ioerr.Error{Class: ioerr.ClassPathFailure, Op: "flush", Path: o.name,
				Err: fmt.Errorf("writes acknowledged on this path before it was removed are not known durable (%v) and %s: %w", o.cause, why, syscall.EIO)}
			break
		}
		d.flush.mu.Lock()
		need := d.flush.get(q).seq + 1
		d.flush.mu.Unlock()
		v, ferr := d.runFlush(ctx, q, need, true)
		if ferr == nil {
			err = nil
			break
		}
		if cerr := ctx.Err(); cerr != nil {
			return cerr
		}
		if (v != nil && !v.Retry) || attempts >= d.cfg.MaxRetries {
			err = ferr
			break
		}
	}
	d.flush.mu.Lock()
	for i, x := range d.flush.orphans {
		if x == o {
			d.flush.orphans = append(d.flush.orphans[:i:i], d.flush.orphans[i+1:]...)
			break
		}
	}
	d.flush.mu.Unlock()
	return err
}
