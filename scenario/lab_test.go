package scenario

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/mpathfs/mpathfs/backends"
	"github.com/mpathfs/mpathfs/backends/fault"
	"github.com/mpathfs/mpathfs/control"
	"github.com/mpathfs/mpathfs/host"
	"github.com/mpathfs/mpathfs/mpath"
	"github.com/mpathfs/mpathfs/nmp"
)

// lab is an in-process device: n paths, each a file backend over one
// store, wrapped twice by the fault decorator: base (the path's natural
// latency) and the outer injector the control runtime and scenarios use.
type lab struct {
	dev    *nmp.Device
	rt     *control.Runtime
	events *mpath.Events
	base   []*fault.Backend
	outer  []*fault.Backend
	paths  []*mpath.Path
}

type labOpts struct {
	paths   int
	psp     string
	pspOpts map[string]string
	latency time.Duration // each path's natural latency (0: none)
	cfg     func(*mpath.DeviceConfig)
}

const labSize = 64 << 20

// newLab builds the lab; call it inside the synctest bubble. The device is
// closed at the end of the test.
func newLab(t *testing.T, o labOpts) *lab {
	t.Helper()
	if o.paths == 0 {
		o.paths = 4
	}
	store := filepath.Join(t.TempDir(), "store.img")
	l := &lab{events: &mpath.Events{}}
	injectors := map[string]*fault.Backend{}
	if err := os.WriteFile(store, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(store, labSize); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < o.paths; i++ {
		fb, err := backends.OpenFile(store, backends.FileOptions{Inline: true}) // inline: sysio's workers would outlive a synctest bubble
		if err != nil {
			t.Fatal(err)
		}
		base := fault.Wrap(fb, uint64(100+i))
		if o.latency > 0 {
			if _, err := base.Inject(fault.Spec{Latency: o.latency, Ops: []string{"read", "write"}}); err != nil {
				t.Fatal(err)
			}
		}
		outer := fault.Wrap(base, uint64(i+1))
		loc := mpath.Location{Adapter: i + 1}
		p := &mpath.Path{Name: loc.RuntimeName(), URI: "file://" + store, Location: loc, Transport: "file", Backend: outer}
		l.base, l.outer, l.paths = append(l.base, base), append(l.outer, outer), append(l.paths, p)
		injectors[p.Name] = outer
	}
	cfg := mpath.DeviceConfig{Name: "lab", PSP: o.psp, PSPOptions: o.pspOpts}
	if o.cfg != nil {
		o.cfg(&cfg)
	}
	d, err := nmp.NewDevice(cfg, l.paths, l.events)
	if err != nil {
		t.Fatal(err)
	}
	l.dev = d
	t.Cleanup(func() { d.Close() })
	h := host.New(host.Options{Events: l.events})
	if err := h.Adopt(d, injectors); err != nil {
		t.Fatal(err)
	}
	l.rt = control.NewRuntime("/nonexistent", h)
	return l
}

// workload is a scripted single-goroutine workload: n I/Os of 4 KiB, a
// write then reads of what was written, at pseudo-random offsets from seed,
// one every gap, starting after first. It returns the I/Os that failed.
func workload(ctx context.Context, d *nmp.Device, n int, first, gap time.Duration, seed uint64) (errs []error) {
	rng := rand.New(rand.NewPCG(seed, 1))
	buf := make([]byte, 4096)
	time.Sleep(first)
	var written []int64
	for i := 0; i < n && ctx.Err() == nil; i++ {
		var err error
		if i%3 == 0 || len(written) == 0 {
			off := int64(rng.IntN(labSize/4096)) * 4096
			for j := range buf {
				buf[j] = byte(i + j)
			}
			_, err = d.WriteAt(ctx, buf, off)
			if err == nil {
				written = append(written, off)
			}
		} else {
			_, err = d.ReadAt(ctx, buf, written[rng.IntN(len(written))])
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("I/O %d: %w", i, err))
		}
		time.Sleep(gap)
	}
	return errs
}
