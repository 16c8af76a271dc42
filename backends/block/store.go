package block

import (
	"context"
	"fmt"
	"sync"

	"github.com/mpathfs/mpathfs/backends"
)

var _ backends.CacheSharer = (*Device)(nil)

// rmwStripes are the stripe locks that serialise the read-modify-write of
// partial blocks (bounceWrite). They belong to the store, not to a path:
// two paths to one LU that each read a block, patch their bytes in and
// write it back would otherwise lose one of the two writes.
type rmwStripes struct {
	refs int // paths holding them; guarded by stores
	mu   [64]sync.Mutex
}

// stores maps a store key (storeKey) to its stripes, shared by every open
// path to that store and dropped when the last one closes.
var stores struct {
	sync.Mutex
	m map[string]*rmwStripes
}

func acquireStripes(key string) *rmwStripes {
	stores.Lock()
	defer stores.Unlock()
	if stores.m == nil {
		stores.m = map[string]*rmwStripes{}
	}
	s := stores.m[key]
	if s == nil {
		s = &rmwStripes{}
		stores.m[key] = s
	}
	s.refs++
	return s
}

func releaseStripes(key string, s *rmwStripes) {
	stores.Lock()
	defer stores.Unlock()
	s.refs--
	if s.refs <= 0 && stores.m[key] == s {
		delete(stores.m, key)
	}
}

// storeKey names the store behind the device for every path to it:
// "store:" and the WWID the device reports (a loop device: its backing
// file's, which a file:// path to that file shares; a SCSI LU: its
// device identification), or the device number when it has no identity.
func (d *Device) storeKey() string {
	inq, err := d.Inquiry(context.Background())
	if err == nil && inq.WWID != "" {
		return "store:" + inq.WWID
	}
	return fmt.Sprintf("dev:%d:%d", d.major, d.minor)
}

// attachStore looks the store up and takes its read-modify-write stripes.
func (d *Device) attachStore() {
	d.store = d.storeKey()
	d.rmw = acquireStripes(d.store)
}

// detachStore gives the stripes back, once.
func (d *Device) detachStore() {
	d.detach.Do(func() {
		if d.rmw != nil {
			releaseStripes(d.store, d.rmw)
		}
	})
}

// CacheDomain: every path to one LU shares the LU's write cache, and a
// cache flush (SYNCHRONIZE CACHE, which fdatasync on the node sends) on
// any of them covers writes acknowledged on the others; for a loop device
// the cache is its backing file's inode, as for a file:// path to it. A
// buffered path (direct=false) keeps its writes in its own page cache
// first, which no other path's flush reaches: it names no domain, and
// neither does a device without an identity.
func (d *Device) CacheDomain() string {
	if d.opts.Buffered || len(d.store) < len("store:") || d.store[:len("store:")] != "store:" {
		return ""
	}
	return d.store
}
