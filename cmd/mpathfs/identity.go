package main

import (
	"context"
	"fmt"

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
// and every path is compared with the first (nmp.VerifySameStore: labels,
// native identity, sample blocks). checks holds the paths' own backends
// (under any fault injected from the config). When the wwid is asserted
// and the paths are different files by name (two mounts of one file), the
// file is labelled with the wwid through the first path that can carry a
// label, so that later mounts check the label too. It returns notes on
// what was shown.
func checkIdentity(ctx context.Context, dc DeviceConfig, paths []*mpath.Path, checks []nmp.StorePath) ([]string, error) {
	ctx, cancel := context.WithTimeout(ctx, openTimeout)
	defer cancel()
	var notes []string
	labelled := false
	if dc.WWID != "" && !dc.wwidReported {
		for i, c := range checks {
			if !assertable(paths[i]) {
				continue
			}
			found, err := checkLabel(ctx, dc, c.Name, c.Backend)
			if err != nil {
				return nil, err
			}
			labelled = labelled || found
		}
	}
	sampled := false
	for i := 1; i < len(checks); i++ {
		// Paths reporting different identities of their own are refused
		// by the device (nmp admit) with the reason.
		if paths[i].Inquiry.WWID != paths[0].Inquiry.WWID {
			continue
		}
		proof, err := nmp.VerifySameStore(ctx, checks[0], checks[i])
		if err != nil {
			return nil, fmt.Errorf("device %s: %v", dc.Name, err)
		}
		if proof.How == "sample" {
			sampled = true
			notes = append(notes, fmt.Sprintf("%s: path %s leads to the store of path %s: %s", dc.Name, checks[i].Name, checks[0].Name, proof))
		}
	}
	if dc.WWID != "" && !dc.wwidReported && sampled && !labelled {
		for i, c := range checks {
			if !assertable(paths[i]) {
				continue
			}
			l, ok := backends.As[backends.Labeler](c.Backend)
			if !ok {
				continue
			}
			if err := l.SetLabel(ctx, dc.WWID); err == nil {
				notes = append(notes, fmt.Sprintf("%s: labelled the file of path %s with wwid %s (%s)", dc.Name, c.Name, dc.WWID, backends.LabelXattr))
				break
			}
		}
	}
	return notes, nil
}
