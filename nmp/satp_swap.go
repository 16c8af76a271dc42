package nmp

import (
	"fmt"
	"maps"
	"time"

	"github.com/mpathfs/mpathfs/ioerr"
	"github.com/mpathfs/mpathfs/mpath"
)

type satpBox struct {
	satp SATP
	// noHedge: the SATP is ActivePassive, so reads are not hedged.
	noHedge bool
}

func boxSATP(s SATP) *satpBox {
	_, ap := s.(ActivePassive)
	return &satpBox{satp: s, noHedge: ap}
}

// SetSATP replaces the device's SATP live (`claiming reclaim` when the
// SATP rules now give the device another one): the I/O in flight finishes
// judged by the old one, the next error is judged by the new one; the
// routing view is rebuilt with the new SATP's grouping and a checker
// round runs at once, so the path states become what the new SATP makes
// of them (an ALUA SATP asks the target port groups). The PSP stays:
// SetPolicy changes it.
func (d *Device) SetSATP(name string, opts map[string]string) error {
	satp, err := NewSATP(name, opts)
	if err != nil {
		return fmt.Errorf("device %s: %w", d.name, err)
	}
	if d.closing.Load() {
		return fmt.Errorf("device %s: %w", d.name, ioerr.ErrClosed)
	}
	d.mu.Lock()
	old := d.SATP()
	// The decider reads its SATP only while it steps, under d.mu.
	d.mu.dec.satp = satp
	d.satp.Store(boxSATP(satp))
	d.cfg.SATP, d.cfg.SATPOptions = satp.Name(), maps.Clone(opts)
	d.mu.Unlock()
	d.events.Publish(mpath.Event{Time: time.Now(), Kind: "satp", Device: d.name, From: old.Name() + " " + old.Config(),
		To: satp.Name() + " " + satp.Config(), Reason: "SATP set"})
	if res := d.tell(event{kind: evRegroup}); res.err != nil {
		return res.err
	}
	d.CheckNow()
	return nil
}
