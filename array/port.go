package array

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/mpathfs/mpathfs/backends"
	"github.com/mpathfs/mpathfs/ioerr"
	"github.com/mpathfs/mpathfs/scsi"
)

// Sense data the simulated array reports besides the ALUA triples of ioerr.
var (
	// SensePassive is what an active/passive array's passive controller
	// answers: LU not ready, manual intervention required (02/04/03).
	SensePassive = ioerr.Sense{Key: ioerr.SenseNotReady, ASC: 0x04, ASCQ: 0x03}
)

// Errors under the port's classified errors.
var (
	// ErrPortOffline: the port's controller failed; the path's transport
	// is gone.
	ErrPortOffline = errors.New("target port offline: its controller is down")
	// ErrNotAccessible: the LU is not accessible through the port now.
	ErrNotAccessible = errors.New("logical unit not accessible through this target port")
	// ErrUnitAttention: a unit attention condition was reported instead
	// of running the command.
	ErrUnitAttention = errors.New("unit attention")
)

// Port is one path through a target port of an Array to the LU's store.
// Data commands run on the store only when the port's group is AO or ANO
// (ANO after the interconnect penalty). Otherwise:
//
//	S   not ready 02/04/0B (active/passive array: 02/04/03, SensePassive)
//	U   not ready 02/04/0C
//	T   not ready 02/04/0A, classified retryable
//	O   path failure (the controller is down: a transport error)
//
// After every change of its group's state, and once after power-on
// (06/29/00), the next data command through the port fails with a unit
// attention (06/2A/06) instead of running; later ones run normally.
// Probe (TUR), Inquiry, PortInfo and RTPG never report unit attention.
type Port struct {
	a     *Array
	id    uint16
	inner backends.Backend
	bad   error // an unknown port
	// seen is the group generation the port last reported a unit attention for.
	seen atomic.Uint64
}

var (
	_ backends.Backend    = (*Port)(nil)
	_ backends.Discarder  = (*Port)(nil)
	_ backends.ZeroWriter = (*Port)(nil)
	_ backends.Prober     = (*Port)(nil)
	_ backends.Inquirer   = (*Port)(nil)
	_ backends.Aborter    = (*Port)(nil)
	_ backends.Capable    = (*Port)(nil)
	_ backends.Unwrapper  = (*Port)(nil)
	_ scsi.Reporter       = (*Port)(nil)
	_ scsi.Setter         = (*Port)(nil)
	_ scsi.Trespasser     = (*Port)(nil)
)

// ID is the port's relative port id.
func (p *Port) ID() uint16 { return p.id }

// Array is the array the port belongs to.
func (p *Port) Array() *Array { return p.a }

func (p *Port) portErr(op string, c ioerr.Class, s *ioerr.Sense, err error) error {
	return &ioerr.Error{Class: c, Op: op, Sense: s, Err: fmt.Errorf("array %s port %d: %w", p.a.cfg.Name, p.id, err)}
}

// reach checks that the port's controller is up and returns its access.
func (p *Port) reach(op string) (PortAccess, error) {
	if p.bad != nil {
		return PortAccess{}, &ioerr.Error{Class: ioerr.ClassPathFailure, Op: op, Err: p.bad}
	}
	acc, _ := p.a.access(p.id)
	if !acc.Up || acc.State == scsi.Offline {
		return acc, p.portErr(op, ioerr.ClassPathFailure, nil, fmt.Errorf("%w (controller %s)", ErrPortOffline, acc.Controller))
	}
	return acc, nil
}

// notAccessible is the error for a group state that refuses commands.
func (p *Port) notAccessible(op string, st scsi.State) error {
	var s ioerr.Sense
	c := ioerr.ClassNotReady
	switch st {
	case scsi.Standby:
		s = ioerr.SenseALUAStandby
		if p.a.cfg.Mode == ModeAP {
			s = SensePassive
		}
	case scsi.Unavailable:
		s = ioerr.SenseALUAUnavailable
	case scsi.Transitioning:
		s, c = ioerr.SenseALUATransitioning, ioerr.ClassRetryable
	default:
		return nil
	}
	return p.portErr(op, c, &s, fmt.Errorf("%w: group %s", ErrNotAccessible, st))
}

// admit decides whether a data command of n bytes may run, waiting out the
// non-optimized penalty.
func (p *Port) admit(ctx context.Context, op string, n int) error {
	acc, err := p.reach(op)
	if err != nil {
		return err
	}
	for {
		seen := p.seen.Load()
		if seen == acc.Gen {
			break
		}
		if p.seen.CompareAndSwap(seen, acc.Gen) {
			s := ioerr.SenseAccessChanged
			why := "asymmetric access state changed"
			if seen == 0 {
				s, why = scsi.SensePowerOnReset, "power on or reset occurred"
			}
			return p.portErr(op, ioerr.ClassRetryable, &s, fmt.Errorf("%w: %s", ErrUnitAttention, why))
		}
	}
	switch acc.State {
	case scsi.ActiveOptimized:
		return ctx.Err()
	case scsi.ActiveNonOptimized:
		return backends.Sleep(ctx, p.a.penalty(n))
	}
	return p.notAccessible(op, acc.State)
}

func (p *Port) ReadAt(ctx context.Context, b []byte, off int64) (int, error) {
	if err := p.admit(ctx, "read", len(b)); err != nil {
		return 0, err
	}
	return p.inner.ReadAt(ctx, b, off)
}

func (p *Port) WriteAt(ctx context.Context, b []byte, off int64) (int, error) {
	if err := p.admit(ctx, "write", len(b)); err != nil {
		return 0, err
	}
	return p.inner.WriteAt(ctx, b, off)
}

func (p *Port) Flush(ctx context.Context) error {
	if err := p.admit(ctx, "flush", 0); err != nil {
		return err
	}
	return p.inner.Flush(ctx)
}

// Discard forwards to the store if it can discard.
func (p *Port) Discard(ctx context.Context, off, length int64) error {
	d, ok := p.inner.(backends.Discarder)
	if !ok || !backends.Can(p.inner, backends.CapDiscard) {
		return ioerr.NewError(ioerr.ClassDeviceError, "discard", backends.ErrNotSupported)
	}
	if err := p.admit(ctx, "discard", 0); err != nil {
		return err
	}
	return d.Discard(ctx, off, length)
}

// WriteZeroes forwards to the store if it can write zeroes.
func (p *Port) WriteZeroes(ctx context.Context, off, length int64) error {
	z, ok := p.inner.(backends.ZeroWriter)
	if !ok || !backends.Can(p.inner, backends.CapWriteZeroes) {
		return ioerr.NewError(ioerr.ClassDeviceError, "write-zeroes", backends.ErrNotSupported)
	}
	if err := p.admit(ctx, "write-zeroes", 0); err != nil {
		return err
	}
	return z.WriteZeroes(ctx, off, length)
}

// Probe is a TEST UNIT READY: it passes through AO, ANO and (ALUA) S
// ports — standby ports answer TUR — and fails with not-ready sense on U
// and T ports and on an active/passive array's passive ports, and with a
// path failure when the controller is down. A passing TUR then probes
// the store underneath, if it can be probed.
func (p *Port) Probe(ctx context.Context) error {
	acc, err := p.reach("probe")
	if err != nil {
		return err
	}
	switch acc.State {
	case scsi.Unavailable, scsi.Transitioning:
		return p.notAccessible("probe", acc.State)
	case scsi.Standby:
		if p.a.cfg.Mode == ModeAP {
			return p.notAccessible("probe", acc.State)
		}
	}
	if pr, ok := p.inner.(backends.Prober); ok && backends.Can(p.inner, backends.CapProbe) {
		return pr.Probe(ctx)
	}
	return ctx.Err()
}

// Inquiry reports the LU's identity from the array config, the TPGS bits,
// and the transport of the store underneath.
func (p *Port) Inquiry(ctx context.Context) (backends.Inquiry, error) {
	if _, err := p.reach("inquiry"); err != nil {
		return backends.Inquiry{}, err
	}
	q := backends.Inquiry{Vendor: p.a.cfg.Vendor, Model: p.a.cfg.Model, Serial: p.a.cfg.Serial, WWID: p.a.cfg.WWID, TPGS: p.a.cfg.TPGS()}
	if in, ok := p.inner.(backends.Inquirer); ok && backends.Can(p.inner, backends.CapInquiry) {
		if iq, err := in.Inquiry(ctx); err == nil {
			q.Transport = iq.Transport
		}
	}
	return q, nil
}

// PortInfo reports the port's relative id, its group and the TPGS bits
// (the device identification VPD page and standard INQUIRY).
func (p *Port) PortInfo(ctx context.Context) (scsi.PortInfo, error) {
	acc, err := p.reach("inquiry")
	if err != nil {
		return scsi.PortInfo{}, err
	}
	return scsi.PortInfo{TPG: acc.TPG, RelativePort: p.id, TPGS: p.a.cfg.TPGS()}, ctx.Err()
}

// ReportTPGs is Report Target Port Groups. An array that reports TPGS=0
// refuses it with illegal request 05/20/00.
func (p *Port) ReportTPGs(ctx context.Context) ([]scsi.TPG, error) {
	if _, err := p.reach("rtpg"); err != nil {
		return nil, err
	}
	if p.a.cfg.TPGS() == 0 {
		s := scsi.SenseInvalidOpcode
		return nil, p.portErr("rtpg", ioerr.ClassDeviceError, &s, errors.New("REPORT TARGET PORT GROUPS not supported (TPGS=0)"))
	}
	var out []scsi.TPG
	p.a.locked(func(c *Core, _ time.Time) error { out = c.Report(); return nil })
	return out, ctx.Err()
}

// SetTPGs is Set Target Port Groups (explicit ALUA). An array without
// explicit support, or a request it cannot honour, is refused with
// illegal request 05/24/00, a device error.
func (p *Port) SetTPGs(ctx context.Context, states map[uint16]scsi.State) error {
	if _, err := p.reach("stpg"); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	err := p.a.locked(func(c *Core, now time.Time) error { return c.SetTPGs(states, now) })
	return p.commandErr("stpg", err)
}

// Trespass moves an active/passive array's LU to this port's controller.
// An ALUA array refuses it with illegal request 05/20/00.
func (p *Port) Trespass(ctx context.Context) error {
	if _, err := p.reach("trespass"); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	err := p.a.locked(func(c *Core, now time.Time) error { return c.Trespass(p.id, now) })
	return p.commandErr("trespass", err)
}

func (p *Port) commandErr(op string, err error) error {
	if err == nil {
		return nil
	}
	var r *refusal
	if errors.As(err, &r) {
		s := scsi.SenseInvalidFieldInCDB
		if op == "trespass" {
			s = scsi.SenseInvalidOpcode
		}
		return p.portErr(op, ioerr.ClassDeviceError, &s, err)
	}
	return p.portErr(op, ioerr.ClassPathFailure, nil, err)
}

// Abort forwards to the store underneath if it can abort.
func (p *Port) Abort(reason error) {
	if a, ok := p.inner.(backends.Aborter); ok && backends.Can(p.inner, backends.CapAbort) {
		a.Abort(reason)
	}
}

// Can: probe and inquiry always (the array answers them); discard,
// write-zeroes and abort as the store underneath.
func (p *Port) Can(c backends.Capability) bool {
	switch c {
	case backends.CapProbe, backends.CapInquiry:
		return true
	}
	return backends.Can(p.inner, c)
}

// Unwrap returns the store underneath.
func (p *Port) Unwrap() backends.Backend { return p.inner }

func (p *Port) Size() int64 { return p.inner.Size() }

// Close closes the store underneath.
func (p *Port) Close() error { return p.inner.Close() }
