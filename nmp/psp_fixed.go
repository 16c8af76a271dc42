package nmp

import (
	"fmt"
	"slices"
	"sync/atomic"

	"github.com/mpathfs/mpathfs/mpath"
)

// PSPFixed is VMW_PSP_FIXED: always the preferred path when it is usable,
// another path while it is not, and back to it when it returns. The default
// preferred path is the first path claimed; if it dies, a new default is
// chosen. A preferred path the user set stays preferred even while dead.
const PSPFixed = "VMW_PSP_FIXED"

func init() {
	RegisterPSP(PSPFixed, "Fixed: the preferred path when available; fails back to it", newFixed)
}

type fixed struct {
	user    bool // the preferred path was set by the user
	pref    atomic.Pointer[mpath.Path]
	current atomic.Pointer[mpath.Path]
	opts    map[string]string
}

var _ PSP = (*fixed)(nil)

func newFixed(opts map[string]string, paths []*mpath.Path) (PSP, error) {
	o := NewOptions(PSPFixed, opts)
	name := o.String("preferred", "")
	if err := o.Done(); err != nil {
		return nil, err
	}
	f := &fixed{opts: map[string]string{}}
	if name != "" {
		p := findPath(paths, name)
		if p == nil {
			return nil, fmt.Errorf("%s: preferred path %q is not a path of this device", PSPFixed, name)
		}
		f.user = true
		f.pref.Store(p)
		f.opts["preferred"] = name
	} else if len(paths) > 0 {
		f.pref.Store(paths[0])
	}
	return f, nil
}

func findPath(paths []*mpath.Path, name string) *mpath.Path {
	for _, p := range paths {
		if p.Name == name || p.URI == name {
			return p
		}
	}
	return nil
}

func (f *fixed) Name() string { return PSPFixed }

func (f *fixed) Select(v *View, _ mpath.OpKind, _ int) (*mpath.Path, Reason) {
	best := v.Best()
	if len(best) == 0 {
		return nil, ReasonNone
	}
	pref := f.pref.Load()
	prefHeld := false
	for _, p := range best {
		if p == pref {
			if v.IsHeld(p) {
				// It returned but failback (policy.go) holds it: the path
				// in use carries on.
				prefHeld = true
				break
			}
			f.setCurrent(p)
			return p, ReasonPreferred
		}
	}
	if cur := f.current.Load(); prefHeld || (cur != nil && v.IsHeld(pref)) {
		for _, p := range best {
			if p == cur {
				return p, ReasonFailover
			}
		}
	}
	// The preferred path is not in the best group: the first usable path of
	// the best group, in claim order, carries I/O until it returns.
	p := best[0]
	for _, q := range best {
		if !v.IsHeld(q) {
			p = q
			break
		}
	}
	f.setCurrent(p)
	return p, ReasonFailover
}

func (f *fixed) setCurrent(p *mpath.Path) {
	if f.current.Load() != p {
		f.current.Store(p)
	}
}

func (f *fixed) ViewChanged(v *View) {
	if f.user {
		return
	}
	pref := f.pref.Load()
	// A dead default preferred path is replaced, and so is one that left
	// the device (RemovePath).
	if pref == nil || pref.State() == mpath.StateDead || v.Index(pref) < 0 {
		if best := v.Best(); len(best) > 0 {
			f.pref.Store(best[0])
		}
	}
}

func (f *fixed) Config() string {
	name, cur := "none", "none"
	if p := f.pref.Load(); p != nil {
		name = p.Name
	}
	if p := f.current.Load(); p != nil {
		cur = p.Name
	}
	kind := "default"
	if f.user {
		kind = "user"
	}
	return fmt.Sprintf("{preferred=%s (%s); current=%s}", name, kind, cur)
}

func (f *fixed) Options() map[string]string { return f.opts }

// Preferred returns the preferred path and whether the user chose it.
func (f *fixed) Preferred() (*mpath.Path, bool) { return f.pref.Load(), f.user }

// Switch is the administrator's path switch: p carries I/O from now on. A
// path other than a usable preferred one would be left at the next I/O:
// that is an error naming what to do instead.
func (f *fixed) Switch(v *View, p *mpath.Path) error {
	best := v.Best()
	if !slices.Contains(best, p) {
		return fmt.Errorf("%s: path %s is usable but not in the best group: FIXED uses the best group only", PSPFixed, p.Name)
	}
	if pref := f.pref.Load(); pref != p && slices.Contains(best, pref) && !v.IsHeld(pref) {
		return fmt.Errorf("%s: the preferred path %s is usable, FIXED returns to it at the next I/O: make %s preferred with `mpathfs policy set DEVICE --psp %s --preferred %s`", PSPFixed, pref.Name, p.Name, PSPFixed, p.Name)
	}
	f.current.Store(p)
	return nil
}
