package iscsipath

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/mpathfs/mpathfs/backends"
	"github.com/mpathfs/mpathfs/ioerr"
	"github.com/mpathfs/mpathfs/iscsi"
	"github.com/mpathfs/mpathfs/scsi"
)

// Backend is one iscsi:// path: one initiator session to one LU.
type Backend struct {
	opts    Options
	sess    *iscsi.Session
	size    int64
	block   int  // logical block size in bytes
	maxXfer int  // bytes per READ/WRITE command
	unmap   bool // the LU offers UNMAP (VPD 0xB2 LBPU, or LBPME)
	tpgs    int  // INQUIRY TPGS
	wwid    string
	probeMu sync.Mutex
}

// ALUABackend is a Backend whose LU reports target port groups (INQUIRY
// TPGS != 0): it adds scsi.Reporter and scsi.Setter, so the ALUA SATPs
// claim it.
type ALUABackend struct{ *Backend }

// Open logs in to the target and reads the LU's capacity and limits. A
// LU that reports target port groups is returned as an *ALUABackend.
func Open(ctx context.Context, o Options) (backends.Backend, error) {
	s, err := iscsi.Dial(ctx, o.Session)
	if err != nil {
		return nil, err
	}
	b := &Backend{opts: o, sess: s, maxXfer: o.MaxTransfer}
	if err := b.discover(ctx); err != nil {
		s.Close()
		return nil, err
	}
	if b.tpgs != 0 {
		return &ALUABackend{b}, nil
	}
	return b, nil
}

// discover reads READ CAPACITY(16), the standard INQUIRY and the block
// limits and provisioning VPD pages. The first command may meet a unit
// attention (power on, reset): it is retried a few times.
func (b *Backend) discover(ctx context.Context) error {
	buf := make([]byte, 32)
	// a NOP-Out ping tells a dead transport from a LU that is not ready
	if err := b.sess.Ping(ctx); err != nil {
		return wrapOp("probe", err)
	}
	var err error
	for range 4 {
		_, err = b.exec(ctx, "read capacity", cdbReadCapacity16(32), nil, buf, false)
		if s, ok := ioerr.SenseOf(err); !ok || s.Key != ioerr.SenseUnitAttention {
			break
		}
	}
	if err != nil {
		return err
	}
	last := binary.BigEndian.Uint64(buf[0:8])
	bs := binary.BigEndian.Uint32(buf[8:12])
	if bs < 512 || bs > 64<<10 || bs&(bs-1) != 0 {
		return ioerr.NewError(ioerr.ClassDeviceError, "open", fmt.Errorf("%s: the LU reports a logical block size of %d bytes (want a power of two from 512 to 65536)", b.opts.Name, bs))
	}
	b.block = int(bs)
	b.size = int64(last+1) * int64(bs)
	b.unmap = buf[14]&0x80 != 0 // LBPME
	std, err := b.stdInquiry(ctx)
	if err != nil {
		return err
	}
	b.tpgs = std.TPGS
	if vpd, err := b.inquiryPage(ctx, 0xb0); err == nil && len(vpd) >= 16 {
		if mtl := binary.BigEndian.Uint32(vpd[8:12]); mtl != 0 && int64(mtl)*int64(bs) < int64(b.maxXfer) {
			b.maxXfer = int(mtl) * int(bs)
		}
	}
	if vpd, err := b.inquiryPage(ctx, 0xb2); err == nil && len(vpd) >= 6 {
		b.unmap = b.unmap || vpd[5]&0x80 != 0
	}
	if inq, _, err := b.identity(ctx); err == nil {
		b.wwid = inq.WWID
	}
	b.maxXfer -= b.maxXfer % b.block
	if b.maxXfer < b.block {
		b.maxXfer = b.block
	}
	return nil
}

// Session returns the path's initiator session (status, tests).
func (b *Backend) Session() *iscsi.Session { return b.sess }

// BlockSize is the LU's logical block size.
func (b *Backend) BlockSize() int { return b.block }

// Size is the LU's capacity in bytes.
func (b *Backend) Size() int64 { return b.size }

// deadline gives ctx the path's command timeout when it has no earlier one.
func (b *Backend) deadline(ctx context.Context) (context.Context, context.CancelFunc) {
	if d, ok := ctx.Deadline(); ok && time.Until(d) <= b.opts.Timeout {
		return ctx, func() {}
	}
	return context.WithTimeout(ctx, b.opts.Timeout)
}

// exec runs one command and turns its status into an error: nil for GOOD,
// a classified error with the sense for CHECK CONDITION, a device error
// wrapping ioerr.ErrReservationConflict for RESERVATION CONFLICT. It
// returns the data-in byte count.
func (b *Backend) exec(ctx context.Context, op string, cdb, out, in []byte, mutating bool) (int, error) {
	ctx, cancel := b.deadline(ctx)
	defer cancel()
	r, err := b.sess.Do(ctx, &iscsi.Task{LUN: b.opts.LUN, CDB: cdb, DataOut: out, DataIn: in, Mutating: mutating})
	if err != nil {
		err = wrapOp(op, err)
		if _, pending := err.(backends.Pending); mutating && !pending {
			// the session returns a PendingError for every mutating
			// command the target may still hold: this one never left
			err = &backends.PendingError{Err: err, Done: backends.Settled, Waiting: "nothing: the command never reached the target"}
		}
		return 0, err
	}
	return r.InLen, scsi.StatusError(op, r.Status, r.Sense)
}

// wrapOp names the operation in a session error, keeping its class and a
// Pending intact.
func wrapOp(op string, err error) error {
	var e *ioerr.Error
	if errors.As(err, &e) && e.Op == "" {
		c := *e
		c.Op = op
		if p, ok := err.(backends.Pending); ok {
			return &backends.PendingError{Err: &c, Done: p.Settled(), Waiting: p.WaitingFor()}
		}
		return &c
	}
	return err
}

func (b *Backend) checkRange(op string, off int64, n int64) error {
	if off < 0 || n < 0 || off+n > b.size {
		return &ioerr.Error{Class: ioerr.ClassDeviceError, Op: op, Err: fmt.Errorf("%s: range %d+%d beyond the LU's %d bytes", b.opts.Name, off, n, b.size)}
	}
	return nil
}

func (b *Backend) aligned(off, n int64) bool {
	return off%int64(b.block) == 0 && n%int64(b.block) == 0
}

// ReadAt reads with READ(16), in commands of at most the path's maximum
// transfer. An unaligned read reads the blocks around it.
func (b *Backend) ReadAt(ctx context.Context, p []byte, off int64) (int, error) {
	n := int64(len(p))
	if err := b.checkRange("read", off, n); err != nil {
		return 0, err
	}
	if !b.aligned(off, n) {
		start := off - off%int64(b.block)
		end := (off + n + int64(b.block) - 1) / int64(b.block) * int64(b.block)
		buf := make([]byte, end-start)
		if _, err := b.ReadAt(ctx, buf, start); err != nil {
			return 0, err
		}
		return copy(p, buf[off-start:]), nil
	}
	done := 0
	for done < len(p) {
		c := min(len(p)-done, b.maxXfer)
		lba := uint64(off+int64(done)) / uint64(b.block)
		got, err := b.exec(ctx, "read", cdbRW16(opRead16, lba, uint32(c/b.block)), nil, p[done:done+c], false)
		if err != nil {
			return done, err
		}
		if got < c {
			return done + got, ioerr.NewError(ioerr.ClassPathFailure, "read", fmt.Errorf("%s: the target returned %d of %d bytes", b.opts.Name, got, c))
		}
		done += c
	}
	return done, nil
}

// WriteAt writes with WRITE(16). Writes must be aligned to the LU's
// logical block size (a read-modify-write would not be atomic).
func (b *Backend) WriteAt(ctx context.Context, p []byte, off int64) (int, error) {
	n := int64(len(p))
	if err := b.checkRange("write", off, n); err != nil {
		return 0, err
	}
	if !b.aligned(off, n) {
		return 0, ioerr.NewError(ioerr.ClassDeviceError, "write", fmt.Errorf("%s: write %d+%d is not aligned to the LU's %d-byte blocks", b.opts.Name, off, n, b.block))
	}
	done := 0
	for done < len(p) {
		c := min(len(p)-done, b.maxXfer)
		lba := uint64(off+int64(done)) / uint64(b.block)
		if _, err := b.exec(ctx, "write", cdbRW16(opWrite16, lba, uint32(c/b.block)), p[done:done+c], nil, true); err != nil {
			return done, err
		}
		done += c
	}
	return done, nil
}

// Flush sends SYNCHRONIZE CACHE(10) for the whole LU.
func (b *Backend) Flush(ctx context.Context) error {
	_, err := b.exec(ctx, "flush", []byte{opSyncCache10, 0, 0, 0, 0, 0, 0, 0, 0, 0}, nil, nil, false)
	return err
}

// Can reports the optional operations this LU offers.
func (b *Backend) Can(c backends.Capability) bool {
	switch c {
	case backends.CapDiscard:
		return b.unmap
	case backends.CapWriteZeroes, backends.CapProbe, backends.CapInquiry, backends.CapAbort, backends.CapReserve:
		return true
	}
	return false
}

// Discard sends UNMAP for the whole blocks inside the range.
func (b *Backend) Discard(ctx context.Context, off, length int64) error {
	if err := b.checkRange("discard", off, length); err != nil {
		return err
	}
	if !b.unmap {
		return backends.ErrNotSupported
	}
	bs := int64(b.block)
	start := (off + bs - 1) / bs
	end := (off + length) / bs
	for start < end {
		n := min(end-start, 1<<22)
		param := make([]byte, 24)
		binary.BigEndian.PutUint16(param[0:2], 22)
		binary.BigEndian.PutUint16(param[2:4], 16)
		binary.BigEndian.PutUint64(param[8:16], uint64(start))
		binary.BigEndian.PutUint32(param[16:20], uint32(n))
		cdb := []byte{opUnmap, 0, 0, 0, 0, 0, 0, 0, 24, 0}
		if _, err := b.exec(ctx, "discard", cdb, param, nil, true); err != nil {
			return err
		}
		start += n
	}
	return nil
}

// WriteZeroes writes zeroes with WRITE SAME(16) (one zero block sent per
// command); aligned ranges only.
func (b *Backend) WriteZeroes(ctx context.Context, off, length int64) error {
	if err := b.checkRange("write-zeroes", off, length); err != nil {
		return err
	}
	if !b.aligned(off, length) {
		return ioerr.NewError(ioerr.ClassDeviceError, "write-zeroes", fmt.Errorf("%s: range %d+%d is not aligned to the LU's %d-byte blocks", b.opts.Name, off, length, b.block))
	}
	zero := make([]byte, b.block)
	bs := int64(b.block)
	lba, end := off/bs, (off+length)/bs
	for lba < end {
		n := min(end-lba, 1<<16)
		if _, err := b.exec(ctx, "write-zeroes", cdbRW16(opWriteSame16, uint64(lba), uint32(n)), zero, nil, true); err != nil {
			return err
		}
		lba += n
	}
	return nil
}

// CacheDomain names the LU's cache: SYNCHRONIZE CACHE through any I_T
// nexus flushes the logical unit's whole cache (SBC-3), so every path to
// one WWID shares it. "" when the LU reports no WWID.
func (b *Backend) CacheDomain() string {
	if b.wwid == "" {
		return ""
	}
	return "scsi-lu:" + b.wwid
}

// Probe is the path checker's test: a session that is down is reinstated
// first (a new login with the same ISID), which also settles the writes its
// connection left ambiguous; then a NOP-Out ping checks the transport and
// TEST UNIT READY the LU.
func (b *Backend) Probe(ctx context.Context) error {
	b.probeMu.Lock()
	defer b.probeMu.Unlock()
	if !b.sess.Alive() {
		if err := b.sess.Reinstate(ctx); err != nil {
			return wrapOp("probe", err)
		}
	}
	// a NOP-Out ping tells a dead transport from a LU that is not ready
	if err := b.sess.Ping(ctx); err != nil {
		return wrapOp("probe", err)
	}
	var err error
	for range 4 {
		// a new nexus first reports the unit attentions it owes (power
		// on, reset, access state changed): they are news, not failures
		_, err = b.exec(ctx, "probe", make([]byte, 6), nil, nil, false)
		if s, ok := ioerr.SenseOf(err); !ok || s.Key != ioerr.SenseUnitAttention {
			break
		}
	}
	return err
}

// Abort drops the session's connection: every command in flight fails at
// once with a path failure, writes among them with a backends.Pending that
// settles when the session is reinstated.
func (b *Backend) Abort(reason error) {
	if reason == nil {
		reason = errors.New("aborted")
	}
	b.sess.Drop(reason)
}

// Close logs out and closes the session.
func (b *Backend) Close() error { return b.sess.Close() }

func (b *Backend) inquiryPage(ctx context.Context, page byte) ([]byte, error) {
	buf := make([]byte, 255)
	n, err := b.exec(ctx, "inquiry", scsi.CDBInquiry(true, page, uint16(len(buf))), nil, buf, false)
	if err != nil {
		return nil, err
	}
	return buf[:n], nil
}

func (b *Backend) stdInquiry(ctx context.Context) (scsi.StdInquiry, error) {
	buf := make([]byte, 96)
	n, err := b.exec(ctx, "inquiry", scsi.CDBInquiry(false, 0, uint16(len(buf))), nil, buf, false)
	if err != nil {
		return scsi.StdInquiry{}, err
	}
	return scsi.ParseStdInquiry(buf[:n])
}

// identity reads the standard INQUIRY, VPD 0x80 and VPD 0x83.
func (b *Backend) identity(ctx context.Context) (backends.Inquiry, []scsi.Designator, error) {
	std, err := b.stdInquiry(ctx)
	if err != nil {
		return backends.Inquiry{}, nil, err
	}
	inq := backends.Inquiry{Vendor: std.Vendor, Model: std.Model, TPGS: std.TPGS, Transport: "iscsi"}
	if v, err := b.inquiryPage(ctx, 0x80); err == nil {
		inq.Serial, _ = scsi.ParseVPD80(v)
	}
	v, err := b.inquiryPage(ctx, 0x83)
	if err != nil {
		return inq, nil, err
	}
	ds, err := scsi.ParseVPD83(v)
	if err != nil {
		return inq, nil, ioerr.NewError(ioerr.ClassDeviceError, "inquiry", fmt.Errorf("%s: VPD 0x83: %w", b.opts.Name, err))
	}
	inq.WWID = scsi.WWIDFromDesignators(ds)
	return inq, ds, nil
}

// Inquiry reports the LU's identity: vendor, model, the serial of VPD 0x80
// and the WWID of VPD 0x83 (NAA first, as Linux names it).
func (b *Backend) Inquiry(ctx context.Context) (backends.Inquiry, error) {
	inq, _, err := b.identity(ctx)
	return inq, err
}

// PortInfo reads the relative target port and target port group the path
// reaches from VPD page 0x83.
func (a *ALUABackend) PortInfo(ctx context.Context) (scsi.PortInfo, error) {
	_, ds, err := a.identity(ctx)
	if err != nil {
		return scsi.PortInfo{}, err
	}
	pi, ok := scsi.PortFromDesignators(ds)
	if !ok {
		return scsi.PortInfo{}, fmt.Errorf("%s: VPD 0x83 lacks the relative target port or target port group designator", a.opts.Name)
	}
	pi.TPGS = a.tpgs
	return pi, nil
}

// ReportTPGs sends REPORT TARGET PORT GROUPS, growing the allocation
// length until the response fits.
func (a *ALUABackend) ReportTPGs(ctx context.Context) ([]scsi.TPG, error) {
	n := 1024
	for {
		buf := make([]byte, n)
		got, err := a.exec(ctx, "report target port groups", scsi.CDBReportTPGs(uint32(n)), nil, buf, false)
		if err != nil {
			return nil, err
		}
		r, err := scsi.ParseRTPG(buf[:got])
		if errors.Is(err, scsi.ErrRTPGTruncated) && r.Length > n && n < 1<<20 {
			n = min(r.Length, 1<<20)
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("%s: %w", a.opts.Name, err)
		}
		out := make([]scsi.TPG, len(r.Groups))
		for i, g := range r.Groups {
			out[i] = g.TPG()
		}
		return out, nil
	}
}

// SetTPGs sends SET TARGET PORT GROUPS for the groups named.
func (a *ALUABackend) SetTPGs(ctx context.Context, states map[uint16]scsi.State) error {
	if len(states) == 0 {
		return nil
	}
	p := scsi.STPGParams(states)
	_, err := a.exec(ctx, "set target port groups", scsi.CDBSetTPGs(uint32(len(p))), p, nil, true)
	return err
}

// SCSI operation codes used here.
const (
	opSyncCache10 = 0x35
	opUnmap       = 0x42
	opRead16      = 0x88
	opWrite16     = 0x8a
	opWriteSame16 = 0x93
	opServiceIn16 = 0x9e
	opPRIn        = 0x5e
	opPROut       = 0x5f
)

func cdbRW16(op byte, lba uint64, blocks uint32) []byte {
	c := make([]byte, 16)
	c[0] = op
	binary.BigEndian.PutUint64(c[2:10], lba)
	binary.BigEndian.PutUint32(c[10:14], blocks)
	return c
}

func cdbReadCapacity16(alloc uint32) []byte {
	c := make([]byte, 16)
	c[0], c[1] = opServiceIn16, 0x10
	binary.BigEndian.PutUint32(c[10:14], alloc)
	return c
}
