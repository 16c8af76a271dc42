package nmp

import (
	"fmt"

	"github.com/mpathfs/mpathfs/mpath"
)

// NamedPath is a path with the name of the device the configuration put
// it under ("" if none).
type NamedPath struct {
	Device string
	Path   *mpath.Path
}

// Candidate is a device that paths form: its name (the first
// configuration name among its paths, else its WWID), WWID and paths.
type Candidate struct {
	Name  string
	WWID  string
	Paths []*mpath.Path
}

// GroupByWWID groups paths into candidate devices by the WWID they report;
// paths without a WWID are grouped by their configuration name. Each
// candidate passes the same admission checks NewDevice makes (sizes
// agree, path names unique, WWIDs agree). Paths configured under one
// device name that report different WWIDs are refused: they lead to
// different stores.
func GroupByWWID(paths []NamedPath) ([]Candidate, error) {
	type group struct {
		c    *Candidate
		d    *Device
		seen map[string]bool
	}
	var order []*group
	byKey := map[string]*group{}
	wwidOfName := map[string]string{}
	for _, np := range paths {
		p := np.Path
		if p == nil || p.Backend == nil {
			return nil, fmt.Errorf("device %q: a path has no backend", np.Device)
		}
		w := p.Inquiry.WWID
		key := "wwid:" + w
		if w == "" {
			if np.Device == "" {
				return nil, fmt.Errorf("path %s (%s) reports no WWID and is under no device name: name its device in the configuration", p.Name, p.URI)
			}
			key = "name:" + np.Device
		}
		if np.Device != "" && w != "" {
			if o, ok := wwidOfName[np.Device]; ok && o != w {
				return nil, fmt.Errorf("device %s: path %s (%s) reports WWID %s but another path of the device reports %s: the paths lead to different stores (mixing them destroys data); fix the path list", np.Device, p.Name, p.URI, w, o)
			}
			wwidOfName[np.Device] = w
		}
		g := byKey[key]
		if g == nil {
			name := np.Device
			if name == "" {
				name = w
			}
			g = &group{c: &Candidate{Name: name, WWID: w}, seen: map[string]bool{}}
			g.d = &Device{name: name, size: p.Backend.Size()}
			byKey[key] = g
			order = append(order, g)
		}
		if g.c.Name == w && np.Device != "" {
			g.c.Name, g.d.name = np.Device, np.Device
		}
		if err := g.d.admit(p, g.seen); err != nil {
			return nil, err
		}
		g.c.Paths = append(g.c.Paths, p)
	}
	out := make([]Candidate, 0, len(order))
	for _, g := range order {
		out = append(out, *g.c)
	}
	return out, nil
}
