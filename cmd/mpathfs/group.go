package main

import (
	"context"
	"fmt"

	"github.com/mpathfs/mpathfs/backends"
	"github.com/mpathfs/mpathfs/mpath"
)

type wwidGroup struct {
	wwid string
	uris []string
}

// groupByWWID opens each path once to read its identity and groups the
// URIs by WWID, in the order they were given. A path without an identity
// cannot be grouped: the user must name its device.
func groupByWWID(uris []string) ([]wwidGroup, error) {
	var out []wwidGroup
	idx := map[string]int{}
	for _, uri := range uris {
		ctx, cancel := context.WithTimeout(context.Background(), openTimeout)
		clean, _, err := mpath.SplitQuiesce(uri)
		if err != nil {
			cancel()
			return nil, fmt.Errorf("path %s: %v", uri, err)
		}
		b, err := backends.Open(ctx, clean)
		if err != nil {
			cancel()
			return nil, fmt.Errorf("path %s: %v", uri, err)
		}
		var wwid string
		if q, ok := backends.As[backends.Inquirer](b); ok && backends.Can(b, backends.CapInquiry) {
			inq, err := q.Inquiry(ctx)
			if err != nil {
				b.Close()
				cancel()
				return nil, fmt.Errorf("path %s: inquiry: %v", uri, err)
			}
			wwid = inq.WWID
		}
		b.Close()
		cancel()
		if wwid == "" {
			return nil, usagef("path %s reports no WWID, so it cannot be grouped: give its device with --name (without --group-by-wwid) or a config file", uri)
		}
		i, ok := idx[wwid]
		if !ok {
			i = len(out)
			idx[wwid] = i
			out = append(out, wwidGroup{wwid: wwid})
		}
		out[i].uris = append(out[i].uris, uri)
	}
	return out, nil
}

// friendlyName is dm-multipath's user_friendly_names: mpatha … mpathz,
// mpathaa ….
func friendlyName(i int) string {
	s := ""
	for i++; i > 0; i = (i - 1) / 26 {
		s = string(rune('a'+(i-1)%26)) + s
	}
	return "mpath" + s
}
