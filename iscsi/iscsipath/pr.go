package iscsipath

import (
	"context"
	"encoding/binary"
	"fmt"

	"github.com/mpathfs/mpathfs/backends"
	"github.com/mpathfs/mpathfs/ioerr"
	"github.com/mpathfs/mpathfs/scsi"
)

// Persistent reservations (SPC-4 PERSISTENT RESERVE IN/OUT) passed through
// to the LU on this path's I_T nexus. A key registered here is registered
// for this path only: registering every path of a device is the host's job.

// PRType is a persistent reservation type (SPC-4 6.15.2).
type PRType = scsi.PRType

// Reservation types, with mpathpersist's short names.
const (
	PRWriteExclusive         = scsi.PRWriteExclusive         // WE
	PRExclusiveAccess        = scsi.PRExclusiveAccess        // EA
	PRWriteExclusiveRegOnly  = scsi.PRWriteExclusiveRegOnly  // WERO
	PRExclusiveAccessRegOnly = scsi.PRExclusiveAccessRegOnly // EARO
	PRWriteExclusiveAllReg   = scsi.PRWriteExclusiveAllReg   // WEAR
	PRExclusiveAccessAllReg  = scsi.PRExclusiveAccessAllReg  // EAAR
)

var _ backends.Reserver = (*Backend)(nil)

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
type Reservation = backends.PRReservation

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

// PRReadFullStatus returns every registration: key, holder flag, the
// target port it was made through and the initiator's TransportID.
func (b *Backend) PRReadFullStatus(ctx context.Context) (backends.PRFullStatus, error) {
	d, err := b.prIn(ctx, "pr read full status", scsi.PRInReadFullStatus)
	if err != nil {
		return backends.PRFullStatus{}, err
	}
	return ParseFullStatus(d)
}

// ParseFullStatus parses READ FULL STATUS parameter data (SPC-4 6.14.5).
func ParseFullStatus(d []byte) (backends.PRFullStatus, error) {
	if len(d) < 8 {
		return backends.PRFullStatus{}, fmt.Errorf("READ FULL STATUS: %d bytes, less than its 8-byte header", len(d))
	}
	fs := backends.PRFullStatus{Generation: binary.BigEndian.Uint32(d[0:4])}
	end := min(8+int(binary.BigEndian.Uint32(d[4:8])), len(d))
	for off := 8; off+24 <= end; {
		r := backends.PRRegistration{
			Key:                binary.BigEndian.Uint64(d[off:]),
			Holder:             d[off+12]&0x01 != 0,
			AllTargetPorts:     d[off+12]&0x02 != 0,
			RelativeTargetPort: binary.BigEndian.Uint16(d[off+18:]),
		}
		if r.Holder {
			r.Type = scsi.PRType(d[off+13] & 0x0f)
		}
		n := int(binary.BigEndian.Uint32(d[off+20:]))
		if n > end-off-24 {
			return fs, fmt.Errorf("READ FULL STATUS: descriptor at byte %d claims %d bytes of TransportID, only %d left", off, n, end-off-24)
		}
		if n > 0 {
			if t, _, err := scsi.ParseTransportID(d[off+24 : off+24+n]); err == nil {
				r.Initiator = t.Name
				if t.ISID != "" {
					r.Initiator += ",i,0x" + t.ISID
				}
			}
		}
		fs.Registrations = append(fs.Registrations, r)
		off += 24 + n
	}
	return fs, nil
}

// PRCapabilities is REPORT CAPABILITIES.
func (b *Backend) PRCapabilities(ctx context.Context) (backends.PRCapabilities, error) {
	d, err := b.prIn(ctx, "pr report capabilities", scsi.PRInReportCapabilities)
	if err != nil {
		return backends.PRCapabilities{}, err
	}
	return ParseCapabilities(d), nil
}

// ParseCapabilities parses REPORT CAPABILITIES parameter data (SPC-4
// 6.14.4); d holds at least 8 bytes.
func ParseCapabilities(d []byte) backends.PRCapabilities {
	c := backends.PRCapabilities{
		CRH: d[2]&0x10 != 0, SIPC: d[2]&0x08 != 0, ATPC: d[2]&0x04 != 0, PTPLC: d[2]&0x01 != 0,
		PTPLA: d[3]&0x01 != 0,
	}
	if d[3]&0x80 != 0 { // TMV: the type mask is valid
		mask := binary.BigEndian.Uint16(d[4:6])
		bits := []struct {
			bit uint16
			t   scsi.PRType
		}{ // SPC-4 table 229: byte 4 bits 7,6,5,3,1 and byte 5 bit 0
			{0x8000, scsi.PRWriteExclusiveAllReg}, {0x4000, scsi.PRExclusiveAccessRegOnly}, {0x2000, scsi.PRWriteExclusiveRegOnly},
			{0x0800, scsi.PRExclusiveAccess}, {0x0200, scsi.PRWriteExclusive}, {0x0001, scsi.PRExclusiveAccessAllReg}}
		for _, b := range bits {
			if mask&b.bit != 0 {
				c.Types = append(c.Types, b.t)
			}
		}
	}
	return c
}

// Reserve6 sends the SCSI-2 RESERVE(6): the whole LU for this nexus.
func (b *Backend) Reserve6(ctx context.Context) error {
	_, err := b.exec(ctx, "reserve6", []byte{scsi.OpReserve6, 0, 0, 0, 0, 0}, nil, nil, true)
	return err
}

// Release6 sends the SCSI-2 RELEASE(6).
func (b *Backend) Release6(ctx context.Context) error {
	_, err := b.exec(ctx, "release6", []byte{scsi.OpRelease6, 0, 0, 0, 0, 0}, nil, nil, true)
	return err
}
