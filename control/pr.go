package control

import (
	"context"
	"fmt"
	"strconv"
	"strings"

	"github.com/mpathfs/mpathfs/backends"
	"github.com/mpathfs/mpathfs/host"
	"github.com/mpathfs/mpathfs/scsi"
)

// The actions of PRRequest, named as mpathpersist's options.
var prActions = []string{"register", "register-ignore", "reserve", "release", "clear", "preempt", "preempt-abort",
	"read-keys", "read-reservation", "read-full-status", "report-capabilities", "reserve6", "release6"}

// PRActions lists the actions a PRRequest may name.
func PRActions() []string { return append([]string(nil), prActions...) }

// Reservations is a device that carries SCSI reservations (nmp.Device).
type Reservations interface {
	PRRegister(ctx context.Context, oldKey, newKey uint64, ignore bool) error
	PRReserve(ctx context.Context, key uint64, typ scsi.PRType) error
	PRRelease(ctx context.Context, key uint64, typ scsi.PRType) error
	PRClear(ctx context.Context, key uint64) error
	PRPreempt(ctx context.Context, key, victim uint64, typ scsi.PRType, abort bool) error
	PRReadKeys(ctx context.Context) (uint32, []uint64, error)
	PRReadReservation(ctx context.Context) (backends.PRReservation, error)
	PRReadFullStatus(ctx context.Context) (backends.PRFullStatus, error)
	PRCapabilities(ctx context.Context) (backends.PRCapabilities, error)
	Reserve6(ctx context.Context) error
	Release6(ctx context.Context) error
}

// ParsePRType reads a reservation type by name (WE, EA, WERO, EARO, WEAR,
// EAAR, any case) or by number (1, 3, 5, 6, 7, 8).
func ParsePRType(s string) (scsi.PRType, error) {
	if n, err := strconv.ParseUint(s, 0, 8); err == nil {
		if t := scsi.PRType(n); t.Valid() {
			return t, nil
		}
		return 0, fmt.Errorf("reservation type %s: want 1 (WE), 3 (EA), 5 (WERO), 6 (EARO), 7 (WEAR) or 8 (EAAR)", s)
	}
	return scsi.ParsePRType(s)
}

// ParsePRKey reads a reservation key: hex with 0x (as mpathpersist prints
// them), or decimal.
func ParsePRKey(s string) (uint64, error) {
	k, err := strconv.ParseUint(s, 0, 64)
	if err != nil {
		return 0, fmt.Errorf("reservation key %q: want a 64-bit number, e.g. 0x123abc", s)
	}
	return k, nil
}

// PR runs one reservation command (RoutePR).
func (r *Runtime) PR(ctx context.Context, req PRRequest) (PRReply, error) {
	rep := PRReply{Device: req.Device, Action: req.Action}
	d, err := r.Device(req.Device)
	if err != nil {
		return rep, err
	}
	res, ok := reservationsOf(d)
	if !ok {
		return rep, fmt.Errorf("%w: device %s does not carry reservations", ErrUnsupported, req.Device)
	}
	needType := func() (scsi.PRType, error) {
		if req.Type == "" {
			return 0, fmt.Errorf("%w: %s needs a reservation type (--prout-type WE|EA|WERO|EARO|WEAR|EAAR or 1..8)", ErrInvalid, req.Action)
		}
		t, err := ParsePRType(req.Type)
		if err != nil {
			return 0, host.Kinded(ErrInvalid, err)
		}
		return t, nil
	}
	switch req.Action {
	case "register":
		err = res.PRRegister(ctx, req.Key, req.SAKey, false)
	case "register-ignore":
		err = res.PRRegister(ctx, 0, req.SAKey, true)
	case "reserve", "release":
		t, terr := needType()
		if terr != nil {
			return rep, terr
		}
		if req.Action == "reserve" {
			err = res.PRReserve(ctx, req.Key, t)
		} else {
			err = res.PRRelease(ctx, req.Key, t)
		}
	case "clear":
		err = res.PRClear(ctx, req.Key)
	case "preempt", "preempt-abort":
		t, terr := needType()
		if terr != nil {
			return rep, terr
		}
		err = res.PRPreempt(ctx, req.Key, req.SAKey, t, req.Action == "preempt-abort")
	case "read-keys":
		rep.Generation, rep.Keys, err = res.PRReadKeys(ctx)
	case "read-reservation":
		var rr backends.PRReservation
		rr, err = res.PRReadReservation(ctx)
		rep.Reservation, rep.Generation = &rr, rr.Generation
	case "read-full-status":
		var fs backends.PRFullStatus
		fs, err = res.PRReadFullStatus(ctx)
		rep.FullStatus, rep.Generation = &fs, fs.Generation
	case "report-capabilities":
		var c backends.PRCapabilities
		c, err = res.PRCapabilities(ctx)
		rep.Capabilities = &c
	case "reserve6":
		err = res.Reserve6(ctx)
	case "release6":
		err = res.Release6(ctx)
	default:
		return rep, fmt.Errorf("%w: unknown reservation action %q (want %s)", ErrInvalid, req.Action, strings.Join(prActions, ", "))
	}
	return rep, err
}

// reservationsOf finds the device's reservations, through decorators.
func reservationsOf(d any) (Reservations, bool) {
	for d != nil {
		if r, ok := d.(Reservations); ok {
			return r, true
		}
		u, ok := d.(interface{ Unwrap() any })
		if !ok {
			return nil, false
		}
		d = u.Unwrap()
	}
	return nil, false
}

// PR runs one reservation command on a device.
func (c *Client) PR(ctx context.Context, r PRRequest) (PRReply, error) {
	var rep PRReply
	err := c.call(ctx, RoutePR, r, &rep)
	return rep, err
}
