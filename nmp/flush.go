package nmp

import (
	"context"

	"github.com/mpathfs/mpathfs/mpath"
)

// Flush makes every acknowledged write durable: it flushes every path that
// carried writes since the last flush. A dirty path that cannot be flushed
// any more (it died) is covered by a flush routed to a usable path, which
// reaches the same store.
func (d *Device) Flush(ctx context.Context) error {
	var orphaned bool
	for _, p := range d.Paths() {
		if !p.TakeDirty() {
			continue
		}
		if p.State() != mpath.StateActive || p.AdminOff() {
			orphaned = true
			continue
		}
		_, err := d.exec(ctx, p, mpath.OpFlush, nil, 0, 0)
		if err == nil {
			continue
		}
		if ctx.Err() != nil {
			p.MarkDirty()
			return ctx.Err()
		}
		v := d.judge(ctx, p, mpath.OpFlush, err)
		if !v.Retry {
			p.MarkDirty()
			return d.finalError(mpath.OpFlush, p, v.Class, err)
		}
		orphaned = true
	}
	if !orphaned {
		return nil
	}
	_, err := d.do(ctx, mpath.OpFlush, nil, 0, 0)
	return err
}
