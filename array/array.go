package array

import (
	"fmt"
	"sync"
	"time"

	"github.com/mpathfs/mpathfs/backends"
	"github.com/mpathfs/mpathfs/scsi"
)

// Array is a simulated storage array with one LU: controllers with target
// ports in target port groups, an owner, ALUA or active/passive access
// states, transitions and the interconnect penalty of non-optimized
// ports. It is the thin time-driven wrapper around Core: every command
// and every I/O first advances the core to time.Now(), so transitions end
// on time without a goroutine of its own (and tests run it under
// testing/synctest).
//
// Hosts see the array only through its ports (Port): I/O, sense data,
// Report/Set Target Port Groups, trespass. The administrator's commands
// (FailController, …) and Status are the lab's side door.
type Array struct {
	mu struct {
		sync.Mutex
		core *Core
		// linkFree is when the interconnect finishes the transfers queued on it.
		linkFree time.Time
	}
	cfg ArrayConfig
}

// New builds an array from a config.
func New(cfg ArrayConfig) (*Array, error) {
	core, err := NewCore(cfg, time.Now())
	if err != nil {
		return nil, err
	}
	a := &Array{cfg: core.Config()}
	a.mu.core = core
	return a, nil
}

// Config returns the array's config with defaults filled in.
func (a *Array) Config() ArrayConfig { return a.cfg }

// Ports lists the relative port ids in controller order.
func (a *Array) Ports() []uint16 {
	var out []uint16
	for _, c := range a.cfg.Controllers {
		out = append(out, c.Ports...)
	}
	return out
}

func (a *Array) locked(f func(c *Core, now time.Time) error) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	now := time.Now()
	a.mu.core.Advance(now)
	return f(a.mu.core, now)
}

// FailController fails a controller (see Core.FailController).
func (a *Array) FailController(name string) error {
	return a.locked(func(c *Core, now time.Time) error { return c.FailController(name, now) })
}

// RestoreController restores a failed controller.
func (a *Array) RestoreController(name string) error {
	return a.locked(func(c *Core, now time.Time) error { return c.RestoreController(name, now) })
}

// TransferOwnership moves the LU to a controller on the array's own
// initiative (implicit ALUA; on an active/passive array, an
// administrator's trespass).
func (a *Array) TransferOwnership(to string) error {
	return a.locked(func(c *Core, now time.Time) error { return c.TransferOwnership(to, now) })
}

// SetTPGState sets one group's state as an explicit STPG from a host
// would; it fails unless the array supports explicit ALUA.
func (a *Array) SetTPGState(id uint16, st scsi.State) error {
	return a.locked(func(c *Core, now time.Time) error { return c.SetTPGs(map[uint16]scsi.State{id: st}, now) })
}

// ForceTPGState sets a group's state as the array's administrator
// (standby, unavailable, …), whatever the transitions supported.
func (a *Array) ForceTPGState(id uint16, st scsi.State) error {
	return a.locked(func(c *Core, now time.Time) error { return c.ForceTPGState(id, st, now) })
}

// Status snapshots the array.
func (a *Array) Status() Status {
	var s Status
	a.locked(func(c *Core, _ time.Time) error { s = c.Snapshot(); return nil })
	return s
}

// Close releases the array. It owns no goroutine; ports close their own
// stores.
func (a *Array) Close() error { return nil }

func (a *Array) access(port uint16) (PortAccess, bool) {
	var acc PortAccess
	var ok bool
	a.locked(func(c *Core, _ time.Time) error { acc, ok = c.Port(port); return nil })
	return acc, ok
}

// penalty is the delay of an n-byte I/O through a non-optimized port: the
// interconnect latency plus its share of the interconnect's bandwidth,
// which every such I/O queues for.
func (a *Array) penalty(n int) time.Duration {
	d := a.cfg.ANOLatency
	if bw := a.cfg.ANOBandwidth; bw > 0 && n > 0 {
		xfer := time.Duration(int64(n) * int64(time.Second) / bw)
		a.mu.Lock()
		now := time.Now()
		start := a.mu.linkFree
		if start.Before(now) {
			start = now
		}
		end := start.Add(xfer)
		a.mu.linkFree = end
		a.mu.Unlock()
		d += end.Sub(now)
	}
	return d
}

// Port returns the path through a target port to the LU stored in store:
// a decorator of store that obeys the port's access state. An unknown
// port id gives a backend whose every command fails with a path failure.
func (a *Array) Port(portID uint16, store backends.Backend) backends.Backend {
	p, err := a.NewPort(portID, store)
	if err != nil {
		return &Port{a: a, id: portID, inner: store, bad: err}
	}
	return p
}

// NewPort is Port with an error for an unknown port id.
func (a *Array) NewPort(portID uint16, store backends.Backend) (*Port, error) {
	if _, ok := a.access(portID); !ok {
		return nil, fmt.Errorf("array %s has no port %d (ports: %v)", a.cfg.Name, portID, a.Ports())
	}
	if store == nil {
		return nil, fmt.Errorf("array %s port %d: no store", a.cfg.Name, portID)
	}
	return &Port{a: a, id: portID, inner: store}, nil
}
