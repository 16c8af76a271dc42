package host

import (
	"context"
	"fmt"
	"time"

	"github.com/mpathfs/mpathfs/backends"
	"github.com/mpathfs/mpathfs/mpath"
	"github.com/mpathfs/mpathfs/nmp"
)

// ErrNoWWID: a path reports no WWID, so it cannot be grouped by one.
var ErrNoWWID = errorf(ErrInvalid, "the path reports no WWID")

// Group is the URIs of one WWID, in the order they were given.
type Group struct {
	WWID string
	URIs []string
}

// GroupByWWID opens each path once to read its identity and groups the
// URIs by WWID (nmp.GroupByWWID, with its admission checks: sizes agree),
// in the order they were given. A path without an identity cannot be
// grouped (ErrNoWWID): its device must be named.
func GroupByWWID(ctx context.Context, uris []string, openTimeout time.Duration) ([]Group, error) {
	if openTimeout <= 0 {
		openTimeout = DefaultOpenTimeout
	}
	var named []nmp.NamedPath
	defer func() {
		for _, np := range named {
			np.Path.Backend.Close()
		}
	}()
	for _, uri := range uris {
		clean, _, err := mpath.SplitQuiesce(uri)
		if err != nil {
			return nil, fmt.Errorf("path %s: %v", uri, err)
		}
		octx, cancel := context.WithTimeout(ctx, openTimeout)
		b, err := backends.Open(octx, clean)
		if err != nil {
			cancel()
			return nil, fmt.Errorf("path %s: %v", uri, err)
		}
		// The URI as given names the path: the groups hand it back.
		p := &mpath.Path{Name: uri, URI: clean, Backend: b}
		named = append(named, nmp.NamedPath{Path: p})
		if q, ok := backends.As[backends.Inquirer](b); ok && backends.Can(b, backends.CapInquiry) {
			p.Inquiry, err = q.Inquiry(octx)
			if err != nil {
				cancel()
				return nil, fmt.Errorf("path %s: inquiry: %v", uri, err)
			}
		}
		cancel()
		if p.Inquiry.WWID == "" {
			return nil, errorf(ErrNoWWID, "path %s reports no WWID, so it cannot be grouped: give its device with --name (without --group-by-wwid) or a config file", uri)
		}
	}
	cands, err := nmp.GroupByWWID(named)
	if err != nil {
		return nil, err
	}
	out := make([]Group, len(cands))
	for i, c := range cands {
		out[i].WWID = c.WWID
		for _, p := range c.Paths {
			out[i].URIs = append(out[i].URIs, p.Name)
		}
	}
	return out, nil
}

// FriendlyName is dm-multipath's user_friendly_names: mpatha … mpathz,
// mpathaa ….
func FriendlyName(i int) string {
	s := ""
	for i++; i > 0; i = (i - 1) / 26 {
		s = string(rune('a'+(i-1)%26)) + s
	}
	return "mpath" + s
}
