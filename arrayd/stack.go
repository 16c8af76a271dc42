package arrayd

import (
	"context"
	"fmt"
	"log"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/mpathfs/mpathfs/array"
	"github.com/mpathfs/mpathfs/backends"
	"github.com/mpathfs/mpathfs/iscsi"
	"github.com/mpathfs/mpathfs/scsi"
)

// ISCSI is the Stack of `mpathfs array serve`: the logical units of
// package array (ALUA gate, reservations, unit attentions, faults) served
// by the iSCSI target of package iscsi. Each LU's reservation state lives
// in state_dir/NAME.pr (used when a host asks for APTPL).
func ISCSI(cfg Config, arr *array.Array, stores []backends.Backend) (Transport, Units, error) {
	hc := array.HandlerConfig{Array: arr, TargetName: cfg.Target}
	for _, lu := range cfg.LUs {
		hc.LUs = append(hc.LUs, array.LUConfig{
			LUN: lu.LUN, Name: lu.Name, Vendor: lu.Vendor, Model: lu.Model, Serial: lu.Serial,
			WWID: lu.WWID, BlockSize: lu.BlockSize, PRFile: filepath.Join(cfg.StateDir, lu.Name+".pr"),
		})
	}
	h, err := array.NewHandler(hc, stores...)
	if err != nil {
		return nil, nil, err
	}
	tc := iscsi.TargetConfig{Name: cfg.Target, RequireCHAP: cfg.RequireCHAP, Logf: log.New(os.Stderr, "iscsi: ", log.LstdFlags).Printf}
	if len(cfg.CHAP) > 0 {
		tc.CHAP = map[string]iscsi.CHAPSecret{}
		for _, u := range cfg.CHAP {
			tc.CHAP[u.Initiator] = iscsi.CHAPSecret{User: u.User, Secret: u.Secret, TargetUser: u.TargetUser, TargetSecret: u.TargetSecret}
		}
	}
	t, err := iscsi.NewTarget(tc, h)
	if err != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		h.Close(ctx)
		return nil, nil, err
	}
	// PREEMPT AND ABORT: the preempted nexuses' tasks are aborted at the
	// transport (and waited for) before the command completes.
	h.OnPreemptAbort = t.AbortTasks
	return &iscsiTransport{t}, &arrayUnits{h}, nil
}

// iscsiTransport adapts *iscsi.Target to Transport.
type iscsiTransport struct{ t *iscsi.Target }

func (x *iscsiTransport) Serve(l net.Listener, p Portal) error {
	return x.t.Serve(l, iscsi.Portal{Addr: p.Addr, TPGT: p.TPGT, RelativePort: p.RelativePort, TPG: p.TPG})
}
func (x *iscsiTransport) SetPortOffline(port uint16, off bool) { x.t.SetPortOffline(port, off) }
func (x *iscsiTransport) DropInitiator(name string) int        { return x.t.DropInitiator(name) }
func (x *iscsiTransport) Close() error                         { return x.t.Close() }

// TaskManagementCounts are the target's task management requests, for
// Status.
func (x *iscsiTransport) TaskManagementCounts() []iscsi.TMFCount { return x.t.TaskManagementCounts() }

func (x *iscsiTransport) Sessions() []Session {
	var out []Session
	for _, s := range x.t.Sessions() {
		out = append(out, Session{
			Initiator: s.Initiator, ISID: s.ISID, TSIH: s.TSIH, Portal: s.Portal, Remote: s.Remote,
			TargetPort: s.Nexus.TargetPort, TPG: s.Nexus.TPG, Tasks: s.Tasks, Discovery: s.Discovery,
		})
	}
	return out
}

func (x *iscsiTransport) SetDrop(drop func(scsi.Nexus, *scsi.Command) bool) {
	// A drop hook, not an interception hook: it never delays a command,
	// so quick reads and writes keep their fast path (iscsi.QuickHandler).
	x.t.SetDropHook(drop)
}

// arrayUnits adapts *array.Handler to Units.
type arrayUnits struct{ h *array.Handler }

func (u *arrayUnits) AddFault(f Fault) (int, error) {
	r := array.FaultRule{
		LUNs: f.LUNs, Initiator: f.Initiator, Port: f.Port, Ops: f.Ops, Count: f.Count,
		Delay: f.Delay, Hang: f.Hang, LandLate: f.LandLate,
	}
	var err error
	if r.LBAFrom, r.LBATo, err = f.lbaRange(); err != nil {
		return 0, err
	}
	if r.Sense, err = f.sense(); err != nil {
		return 0, err
	}
	if f.Status != "" {
		st, ok := statuses[f.Status]
		if !ok {
			return 0, fmt.Errorf("array fault: --status %q: want busy, task-set-full or reservation-conflict", f.Status)
		}
		r.Status = scsi.Status(st)
	}
	return u.h.AddFault(r)
}

func (u *arrayUnits) RemoveFault(id int) bool { return u.h.RemoveFault(id) }

func (u *arrayUnits) LiveFaults() []int {
	var ids []int
	for _, r := range u.h.Faults() {
		ids = append(ids, r.ID)
	}
	return ids
}

func (u *arrayUnits) Reservations() any               { return u.h.Reservations() }
func (u *arrayUnits) Close(ctx context.Context) error { return u.h.Close(ctx) }
