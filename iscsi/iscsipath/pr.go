package iscsipath

import (
	"context"
	"encoding/binary"
	"fmt"

	"github.com/mpathfs/mpathfs/ioerr"
)

// Persistent reservations (SPC-4 PERSISTENT RESERVE IN/OUT) passed through
// to the LU on this path's I_T nexus. A key registered here is registered
// for this path only: registering every path of a device is the host's job.

// PRType is a persistent reservation type (SPC-4 6.15.2).
type PRType uint8

// Reservation types, with mpathpersist's short names.
const (
	PRWriteExclusive         PRType = 1 // WE
	PRExclusiveAccess        PRType = 3 // EA
	PRWriteExclusiveRegOnly  PRType = 5 // WERO
	PRExclusiveAccessRegOnly PRType = 6 // EARO
	PRWriteExclusiveAllReg   PRType = 7 // WEAR
	PRExclusiveAccessAllReg  PRType = 8 // EAAR
)

// PERSISTENT RESERVE OUT service actions.
const (
	prRegister       = 0
	prReserve        = 1
	prRelease        = 2
	prClear          = 3
	prPreempt        = 4
	prPreemptAbort   = 5
	prRegisterIgnore = 6
)

// prOut sends PERSISTENT RESERVE OUT with the basic 24-byte parameter list.
func (b *Backend) prOut(ctx context.Context, op string, sa byte, typ PRType, key, saKey uint64) error {
	cdb := make([]byte, 10)
	cdb[0], cdb[1], cdb[2] = opPROut, sa, byte(typ)&0x0f
	binary.BigEndian.PutUint32(cdb[5:9], 24)
	p := make([]byte, 24)
	binary.BigEndian.PutUint64(p[0:8], key)
	binary.BigEndian.PutUint64(p[8:16], saKey)
	_, err := b.exec(ctx, op, cdb, p, nil, true)
	return err
}

// PRRegister registers newKey for this I_T nexus (oldKey is the key
// registered now, 0 if none); newKey 0 unregisters. With ignoreExisting
// the current key is not checked (REGISTER AND IGNORE EXISTING KEY).
func (b *Backend) PRRegister(ctx context.Context, oldKey, newKey uint64, ignoreExisting bool) error {
	if ignoreExisting {
		return b.prOut(ctx, "pr register", prRegisterIgnore, 0, 0, newKey)
	}
	return b.prOut(ctx, "pr register", prRegister, 0, oldKey, newKey)
}

// PRReserve takes a reservation of type typ with the registered key.
func (b *Backend) PRReserve(ctx context.Context, key uint64, typ PRType) error {
	return b.prOut(ctx, "pr reserve", prReserve, typ, key, 0)
}

// PRRelease releases the reservation held with key.
func (b *Backend) PRRelease(ctx context.Context, key uint64, typ PRType) error {
	return b.prOut(ctx, "pr release", prRelease, typ, key, 0)
}

// PRClear removes every registration and the reservation.
func (b *Backend) PRClear(ctx context.Context, key uint64) error {
	return b.prOut(ctx, "pr clear", prClear, 0, key, 0)
}

// PRPreempt removes victim's registrations (and its reservation, taking
// one of type typ); with abort the victim's tasks are aborted too (PREEMPT
// AND ABORT), which is how a cluster fences a host.
func (b *Backend) PRPreempt(ctx context.Context, key, victim uint64, typ PRType, abort bool) error {
	sa := byte(prPreempt)
	if abort {
		sa = prPreemptAbort
	}
	return b.prOut(ctx, "pr preempt", sa, typ, key, victim)
}

func (b *Backend) prIn(ctx context.Context, op string, sa byte) ([]byte, error) {
	buf := make([]byte, 8192)
	cdb := make([]byte, 10)
	cdb[0], cdb[1] = opPRIn, sa
	binary.BigEndian.PutUint16(cdb[7:9], uint16(len(buf)))
	n, err := b.exec(ctx, op, cdb, nil, buf, false)
	if err != nil {
		return nil, err
	}
	if n < 8 {
		return nil, ioerr.NewError(ioerr.ClassDeviceError, op, fmt.Errorf("%s: PERSISTENT RESERVE IN returned %d bytes, less than its 8-byte header", b.opts.Name, n))
	}
	return buf[:n], nil
}

// PRReadKeys returns the PR generation and the registered keys.
func (b *Backend) PRReadKeys(ctx context.Context) (uint32, []uint64, error) {
	d, err := b.prIn(ctx, "pr read keys", 0)
	if err != nil {
		return 0, nil, err
	}
	gen := binary.BigEndian.Uint32(d[0:4])
	n := min(int(binary.BigEndian.Uint32(d[4:8])), len(d)-8)
	var keys []uint64
	for off := 8; off+8 <= 8+n; off += 8 {
		keys = append(keys, binary.BigEndian.Uint64(d[off:]))
	}
	return gen, keys, nil
}

// Reservation is what READ RESERVATION reports.
type Reservation struct {
	Generation uint32
	Held       bool
	Key        uint64
	Type       PRType
}

// PRReadReservation returns the current reservation, if any.
func (b *Backend) PRReadReservation(ctx context.Context) (Reservation, error) {
	d, err := b.prIn(ctx, "pr read reservation", 1)
	if err != nil {
		return Reservation{}, err
	}
	r := Reservation{Generation: binary.BigEndian.Uint32(d[0:4])}
	if binary.BigEndian.Uint32(d[4:8]) >= 16 && len(d) >= 24 {
		r.Held, r.Key, r.Type = true, binary.BigEndian.Uint64(d[8:16]), PRType(d[21]&0x0f)
	}
	return r, nil
}
