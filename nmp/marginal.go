package nmp

import (
	"fmt"
	"time"

	"github.com/mpathfs/mpathfs/ioerr"
	"github.com/mpathfs/mpathfs/mpath"
)

// Marginal paths by retryable errors: dm-multipath's marginal_pathgroups
// and ESXi's action_OnRetryErrors, for every SATP. A path whose I/O keeps
// getting retryable errors (busy, queue full, aborted commands: each I/O
// succeeds on a retry, so neither the SATP nor the checker fails the
// path) is marginal once it got MarginalErrors of them within
// MarginalWindow — a run, not one error. It is demoted to the marginal
// group the hedging code keeps for slow paths (hedge_slow.go): I/O goes
// there only while no other path is usable. It returns after the device's
// hold-down period (doubling when it is demoted again soon after), and is
// demoted again if its errors go on. Off unless marginal_errors is set.

// DefaultMarginalWindow is the window marginal_errors count in.
const DefaultMarginalWindow = 60 * time.Second

// noteRetryable counts a retryable error of path (judge) and demotes the
// path when the run is long enough.
func (d *Device) noteRetryable(path *mpath.Path, v Verdict) {
	n := d.cfg.MarginalErrors
	if n <= 0 || v.Class != ioerr.ClassRetryable {
		return
	}
	window := d.cfg.MarginalWindow
	if window <= 0 {
		window = DefaultMarginalWindow
	}
	now := time.Now()
	pl := d.lat.get(path)
	pl.mu.Lock()
	if pl.slow.Load() {
		pl.mu.Unlock()
		return
	}
	cut := now.Add(-window)
	keep := pl.errs[:0]
	for _, t := range pl.errs {
		if t.After(cut) {
			keep = append(keep, t)
		}
	}
	pl.errs = append(keep, now)
	if len(pl.errs) < n {
		pl.mu.Unlock()
		return
	}
	d.markMarginalLocked(path, pl, now, window, "path-marginal",
		fmt.Sprintf("%d retryable errors within %v", n, window))
}

// checkMarginal rejects a bad marginal configuration (NewDevice).
func checkMarginal(cfg *mpath.DeviceConfig) error {
	if cfg.MarginalErrors < 0 {
		return fmt.Errorf("marginal_errors %d: want a positive number of retryable errors (or 0: off)", cfg.MarginalErrors)
	}
	if cfg.MarginalWindow < 0 {
		return fmt.Errorf("marginal_window %v: want a positive duration", cfg.MarginalWindow)
	}
	return nil
}
