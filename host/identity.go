package host

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/mpathfs/mpathfs/backends"
	"github.com/mpathfs/mpathfs/backends/block"
	"github.com/mpathfs/mpathfs/mpath"
	"github.com/mpathfs/mpathfs/nmp"
)

// assertable reports whether a path's identity is one the user may assert
// with the device's wwid: it has none of its own (NBD) or only a synthetic
// one (a file's or loop device's device and inode numbers).
func assertable(p *mpath.Path) bool {
	return p.Transport == "file" || p.Transport == "nbd" || block.SyntheticIdentity(p.Inquiry)
}

// checkIdentity checks, before the device goes live, that its paths lead to
// one store: a label that contradicts the asserted wwid refuses the path,
// and every path is compared with a reference path (the first whose sample
// can be read) by nmp.VerifySameStore: labels, native identity, sample
// blocks. checks holds the paths' own backends (under any fault injected
// from the config). A path shown to lead elsewhere refuses the mount; a
// path that cannot be read now joins dead, and serves only once the
// checker's identity check passed. When the wwid is asserted and the paths
// are different files by name (two mounts of one file), the file is
// labelled with the wwid through the first path that can carry a label, so
// that later mounts check the label too. It returns notes on what was
// shown.
func (h *Host) checkIdentity(ctx context.Context, dc DeviceConfig, paths []*mpath.Path, checks []nmp.StorePath) ([]string, error) {
	timeout := 2 * time.Duration(dc.IOTimeout)
	if timeout <= 0 {
		timeout = 2 * nmp.DefaultIOTimeout
	}
	var notes []string
	labelled := false
	if dc.WWID != "" && !dc.WWIDReported {
		lctx, cancel := context.WithTimeout(ctx, h.openTimeout)
		defer cancel()
		for i, c := range checks {
			if !assertable(paths[i]) {
				continue
			}
			found, err := checkLabel(lctx, dc, c.Name, c.Backend)
			if err != nil {
				return nil, err
			}
			labelled = labelled || found
		}
	}
	if len(checks) < 2 {
		return notes, nil
	}
	unchecked := func(i int, err error) {
		paths[i].SetState(mpath.StateDead, "identity not checked yet: "+err.Error(), time.Now())
		notes = append(notes, fmt.Sprintf("%s: path %s joins dead: %v; it serves once the path checker's identity check passes", dc.Name, checks[i].Name, err))
	}
	ref := -1
	for i, c := range checks {
		rctx, cancel := context.WithTimeout(ctx, timeout)
		err := nmp.ReadSample(rctx, c.Backend)
		cancel()
		if err == nil {
			ref = i
			break
		}
		unchecked(i, &nmp.UncheckedError{Path: c.Name, Err: err})
	}
	if ref < 0 {
		return nil, fmt.Errorf("device %s: no path can read the store (%s), so none can be checked to lead to it", dc.Name, strings.Join(notes, "; "))
	}
	sampled := false
	for i := ref + 1; i < len(checks); i++ {
		// Paths reporting different identities of their own are refused
		// by the device (nmp admit) with the reason.
		if paths[i].Inquiry.WWID != paths[ref].Inquiry.WWID {
			continue
		}
		vctx, cancel := context.WithTimeout(ctx, timeout)
		proof, err := nmp.VerifySameStore(vctx, checks[ref], checks[i])
		cancel()
		var ie *nmp.IdentityError
		switch {
		case errors.As(err, &ie):
			return nil, fmt.Errorf("device %s: %v", dc.Name, err)
		case err != nil:
			unchecked(i, err)
		case proof.How == "sample":
			sampled = true
			notes = append(notes, fmt.Sprintf("%s: path %s leads to the store of path %s: %s", dc.Name, checks[i].Name, checks[ref].Name, proof))
		}
	}
	if dc.WWID != "" && !dc.WWIDReported && sampled && !labelled {
		lctx, cancel := context.WithTimeout(ctx, h.openTimeout)
		defer cancel()
		for i, c := range checks {
			if !assertable(paths[i]) {
				continue
			}
			l, ok := backends.As[backends.Labeler](c.Backend)
			if !ok {
				continue
			}
			if err := l.SetLabel(lctx, dc.WWID); err == nil {
				notes = append(notes, fmt.Sprintf("%s: labelled the file of path %s with wwid %s (%s)", dc.Name, c.Name, dc.WWID, backends.LabelXattr))
				break
			}
		}
	}
	return notes, nil
}

// checkLabel refuses a path whose file is labelled with another WWID than
// the device asserts; it reports whether the file carries the label.
func checkLabel(ctx context.Context, dc DeviceConfig, name string, b backends.Backend) (bool, error) {
	l, ok := backends.As[backends.Labeler](b)
	if !ok {
		return false, nil
	}
	got, err := l.Label(ctx)
	switch {
	case errors.Is(err, backends.ErrNoLabel), errors.Is(err, backends.ErrLabelsUnsupported):
		return false, nil
	case err != nil:
		return false, fmt.Errorf("device %s path %s: reading its label: %v", dc.Name, name, err)
	}
	if got != dc.WWID {
		return false, fmt.Errorf("device %s path %s: its file is labelled %q (%s) but the device's wwid is %q: the path leads to a different store; fix the path list, or relabel the file with `mpathfs label --force --wwid %s FILE` if the label is wrong",
			dc.Name, name, got, backends.LabelXattr, dc.WWID, dc.WWID)
	}
	return true, nil
}
