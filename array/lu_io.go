package array

import (
	"bytes"
	"context"
	"encoding/binary"

	"github.com/mpathfs/mpathfs/backends"
	"github.com/mpathfs/mpathfs/scsi"
)

// rw is a parsed READ/WRITE/VERIFY-style CDB.
type rw struct {
	lba    uint64
	blocks uint64
	fua    bool
	prot   byte // RDPROTECT / WRPROTECT / VRPROTECT
	bytchk byte
}

// parseRW decodes the LBA and transfer length of the 6-, 10-, 12- and
// 16-byte forms (READ(6): 0 blocks means 256).
func parseRW(cdb []byte) rw {
	var r rw
	switch cdb[0] {
	case scsi.OpRead6, scsi.OpWrite6:
		r.lba = uint64(cdb[1]&0x1f)<<16 | uint64(cdb[2])<<8 | uint64(cdb[3])
		r.blocks = uint64(cdb[4])
		if r.blocks == 0 {
			r.blocks = 256
		}
		return r
	case scsi.OpRead10, scsi.OpWrite10, scsi.OpVerify10, scsi.OpSynchronizeCache10, scsi.OpWriteSame10:
		r.lba = uint64(binary.BigEndian.Uint32(cdb[2:]))
		r.blocks = uint64(binary.BigEndian.Uint16(cdb[7:]))
	case scsi.OpRead12, scsi.OpWrite12, scsi.OpVerify12:
		r.lba = uint64(binary.BigEndian.Uint32(cdb[2:]))
		r.blocks = uint64(binary.BigEndian.Uint32(cdb[6:]))
	case scsi.OpRead16, scsi.OpWrite16, scsi.OpVerify16, scsi.OpSynchronizeCache16, scsi.OpWriteSame16:
		r.lba = binary.BigEndian.Uint64(cdb[2:])
		r.blocks = uint64(binary.BigEndian.Uint32(cdb[10:]))
	}
	r.fua = cdb[1]&0x08 != 0
	r.prot = cdb[1] >> 5
	r.bytchk = (cdb[1] >> 1) & 3
	return r
}

// inRange reports whether [lba, lba+blocks) lies within the LU.
func (l *lu) inRange(lba, blocks uint64) bool {
	n := l.nblocks()
	return lba <= n && blocks <= n-lba
}

var outOfRange = check(scsi.SenseLBAOutOfRange)

// shortDataOut: the initiator sent less data than VERIFY, WRITE SAME or
// COMPARE AND WRITE need (SAM-5: INVALID FIELD IN COMMAND INFORMATION
// UNIT; nothing is written). The transport reports the residual.
var shortDataOut = check(scsi.SenseInvalidFieldInCommandIU)

// live returns a context for a side effect that has begun: it must finish
// even if the command is aborted meanwhile (scsi.Handler's contract).
func live(ctx context.Context) context.Context { return context.WithoutCancel(ctx) }

func (l *lu) read(ctx context.Context, cmd *scsi.Command) scsi.Response {
	r := parseRW(cmd.CDB)
	if r.prot != 0 {
		return checkCDB(1, 7)
	}
	if !l.inRange(r.lba, r.blocks) {
		return outOfRange
	}
	n := r.blocks * uint64(l.bs)
	if n > maxTransferBytes {
		return checkCDB(lengthField(cmd.CDB[0]), -1)
	}
	if n == 0 {
		return good(nil)
	}
	buf := make([]byte, n)
	l.io.RLock()
	_, err := l.store.ReadAt(ctx, buf, int64(r.lba)*int64(l.bs))
	l.io.RUnlock()
	if err != nil {
		if ctx.Err() != nil {
			return aborted()
		}
		return storeErr("read", err)
	}
	return good(buf, cmd.DataInLen)
}

// lengthField is the CDB byte of the transfer length, for field pointers.
func lengthField(op byte) uint16 {
	switch op {
	case scsi.OpRead6, scsi.OpWrite6:
		return 4
	case scsi.OpRead12, scsi.OpWrite12, scsi.OpVerify12:
		return 6
	case scsi.OpRead16, scsi.OpWrite16, scsi.OpVerify16, scsi.OpWriteSame16, scsi.OpSynchronizeCache16:
		return 10
	}
	return 7
}

func (l *lu) write(ctx context.Context, cmd *scsi.Command) scsi.Response {
	r := parseRW(cmd.CDB)
	if cmd.CDB[0] == scsi.OpWrite6 {
		r.fua = false
	}
	if r.prot != 0 {
		return checkCDB(1, 7)
	}
	if !l.inRange(r.lba, r.blocks) {
		return outOfRange
	}
	n := r.blocks * uint64(l.bs)
	if n > maxTransferBytes {
		return checkCDB(lengthField(cmd.CDB[0]), -1)
	}
	if uint64(len(cmd.DataOut)) < n {
		// The initiator sent less than the CDB describes (iSCSI EDTL <
		// SCSI transfer length): write the whole blocks it sent, as FCP-4
		// and libiscsi's residual tests have it; the transport reports
		// the overflow residual.
		n = uint64(len(cmd.DataOut)) / uint64(l.bs) * uint64(l.bs)
	}
	if n == 0 {
		return good(nil)
	}
	return l.writeAt(ctx, cmd.DataOut[:n], r.lba, r.fua)
}

// writeAt writes b at lba: the last point where an abort stops it is
// here; once begun, the write (and its FUA flush) completes.
func (l *lu) writeAt(ctx context.Context, b []byte, lba uint64, fua bool) scsi.Response {
	l.io.RLock()
	defer l.io.RUnlock()
	if ctx.Err() != nil {
		return aborted()
	}
	ctx = live(ctx)
	if _, err := l.store.WriteAt(ctx, b, int64(lba)*int64(l.bs)); err != nil {
		return storeErr("write", err)
	}
	if fua {
		if err := l.store.Flush(ctx); err != nil {
			return storeErr("write", err)
		}
	}
	return good(nil)
}

func (l *lu) verify(ctx context.Context, cmd *scsi.Command) scsi.Response {
	r := parseRW(cmd.CDB)
	if r.prot != 0 {
		return checkCDB(1, 7)
	}
	if !l.inRange(r.lba, r.blocks) {
		return outOfRange
	}
	n := r.blocks * uint64(l.bs)
	switch r.bytchk {
	case 0:
		return good(nil) // medium verification: the store has no errors to find
	case 1:
	default:
		return checkCDB(1, 2) // BYTCHK 10b reserved, 11b (one block pattern) not supported
	}
	if n > maxTransferBytes {
		return checkCDB(lengthField(cmd.CDB[0]), -1)
	}
	if uint64(len(cmd.DataOut)) < n {
		return shortDataOut
	}
	buf := make([]byte, n)
	l.io.RLock()
	_, err := l.store.ReadAt(ctx, buf, int64(r.lba)*int64(l.bs))
	l.io.RUnlock()
	if err != nil {
		return storeErr("read", err)
	}
	if i := firstDiff(buf, cmd.DataOut[:n]); i >= 0 {
		return checkData(scsi.SenseData{Sense: scsi.SenseMiscompareDuringVerify, Info: uint32(i), InfoValid: true})
	}
	return good(nil)
}

func firstDiff(a, b []byte) int {
	if bytes.Equal(a, b) {
		return -1
	}
	for i := range a {
		if a[i] != b[i] {
			return i
		}
	}
	return -1
}

func (l *lu) syncCache(ctx context.Context, cmd *scsi.Command) scsi.Response {
	r := parseRW(cmd.CDB)
	if r.blocks != 0 && !l.inRange(r.lba, r.blocks) || r.lba > l.nblocks() {
		return outOfRange
	}
	if ctx.Err() != nil {
		return aborted()
	}
	if err := l.store.Flush(live(ctx)); err != nil {
		return storeErr("flush", err)
	}
	return good(nil)
}

func (l *lu) writeSame(ctx context.Context, cmd *scsi.Command) scsi.Response {
	cdb := cmd.CDB
	r := parseRW(cdb)
	unmap := cdb[1]&0x08 != 0
	anchor := cdb[1]&0x10 != 0
	ndob := cdb[0] == scsi.OpWriteSame16 && cdb[1]&0x01 != 0
	if r.prot != 0 {
		return checkCDB(1, 7)
	}
	if anchor {
		return checkCDB(1, 4) // ANC_SUP is 0
	}
	if r.blocks == 0 {
		return checkCDB(lengthField(cdb[0]), -1) // WSNZ: zero blocks is not allowed
	}
	if !l.inRange(r.lba, r.blocks) {
		return outOfRange
	}
	if r.blocks*uint64(l.bs) > maxWriteSameBytes {
		return checkCDB(lengthField(cdb[0]), -1)
	}
	pattern := make([]byte, l.bs)
	if !ndob {
		if len(cmd.DataOut) < int(l.bs) {
			return shortDataOut
		}
		copy(pattern, cmd.DataOut)
	}
	off, length := int64(r.lba)*int64(l.bs), int64(r.blocks)*int64(l.bs)
	l.io.RLock()
	defer l.io.RUnlock()
	if ctx.Err() != nil {
		return aborted()
	}
	ctx = live(ctx)
	if isZero(pattern) && (unmap || ndob) {
		if z, ok := l.store.(backends.ZeroWriter); ok && backends.Can(l.store, backends.CapWriteZeroes) {
			if err := z.WriteZeroes(ctx, off, length); err == nil {
				return good(nil)
			}
		}
	}
	chunk := bytes.Repeat(pattern, int(min(r.blocks, 256)))
	for length > 0 {
		b := chunk
		if int64(len(b)) > length {
			b = b[:length]
		}
		if _, err := l.store.WriteAt(ctx, b, off); err != nil {
			return storeErr("write", err)
		}
		off += int64(len(b))
		length -= int64(len(b))
	}
	return good(nil)
}

func isZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

func (l *lu) unmap(ctx context.Context, cmd *scsi.Command) scsi.Response {
	cdb := cmd.CDB
	if cdb[1]&0x01 != 0 {
		return checkCDB(1, 0) // ANCHOR: ANC_SUP is 0
	}
	plen := int(binary.BigEndian.Uint16(cdb[7:]))
	if plen == 0 {
		return good(nil)
	}
	if plen < 8 || len(cmd.DataOut) < plen {
		return check(scsi.SenseParamListLengthError)
	}
	p := cmd.DataOut[:plen]
	dlen := int(binary.BigEndian.Uint16(p[2:]))
	if int(binary.BigEndian.Uint16(p[0:])) < 6 || 8+dlen > plen || dlen%16 != 0 {
		return check(scsi.SenseParamListLengthError)
	}
	if dlen/16 > maxUnmapDescs {
		return checkParam(2)
	}
	type ext struct{ lba, n uint64 }
	var exts []ext
	var total uint64
	for i := 0; i < dlen/16; i++ {
		d := p[8+16*i:]
		e := ext{binary.BigEndian.Uint64(d), uint64(binary.BigEndian.Uint32(d[8:]))}
		if !l.inRange(e.lba, e.n) {
			return outOfRange
		}
		total += e.n
		if total > maxUnmapBlocks {
			return checkParam(uint16(8 + 16*i + 8))
		}
		exts = append(exts, e)
	}
	l.io.RLock()
	defer l.io.RUnlock()
	if ctx.Err() != nil {
		return aborted()
	}
	ctx = live(ctx)
	for _, e := range exts {
		if e.n == 0 {
			continue
		}
		if err := l.zero(ctx, int64(e.lba)*int64(l.bs), int64(e.n)*int64(l.bs)); err != nil {
			return storeErr("write", err)
		}
	}
	return good(nil)
}

// zero makes a range read as zeroes (LBPRZ=1): WriteZeroes if the store
// can, else written zeroes.
func (l *lu) zero(ctx context.Context, off, length int64) error {
	if z, ok := l.store.(backends.ZeroWriter); ok && backends.Can(l.store, backends.CapWriteZeroes) {
		if err := z.WriteZeroes(ctx, off, length); err == nil {
			return nil
		}
	}
	zeros := make([]byte, min(length, 1<<20))
	for length > 0 {
		b := zeros
		if int64(len(b)) > length {
			b = b[:length]
		}
		if _, err := l.store.WriteAt(ctx, b, off); err != nil {
			return err
		}
		off += int64(len(b))
		length -= int64(len(b))
	}
	return nil
}

// compareAndWrite is atomic against every other read and write of the
// LU: it holds the LU's io lock exclusively from the read to the write.
// A miscompare reports MISCOMPARE 0E/1D/00 with the offset of the first
// differing byte in INFORMATION.
func (l *lu) compareAndWrite(ctx context.Context, cmd *scsi.Command) scsi.Response {
	cdb := cmd.CDB
	if cdb[1]>>5 != 0 {
		return checkCDB(1, 7)
	}
	lba := binary.BigEndian.Uint64(cdb[2:])
	blocks := uint64(cdb[13])
	if blocks > maxCompareAndWrite {
		return checkCDB(13, -1)
	}
	if !l.inRange(lba, blocks) {
		return outOfRange
	}
	if blocks == 0 {
		if len(cmd.DataOut) != 0 {
			return checkCDB(13, -1) // the field says nothing, the initiator sent data
		}
		return good(nil)
	}
	n := blocks * uint64(l.bs)
	if uint64(len(cmd.DataOut)) != 2*n {
		return shortDataOut // the verify and write instances are exactly 2 × NUMBER OF LOGICAL BLOCKS
	}
	verify, data := cmd.DataOut[:n], cmd.DataOut[n:2*n]
	off := int64(lba) * int64(l.bs)
	buf := make([]byte, n)
	l.io.Lock()
	defer l.io.Unlock()
	if ctx.Err() != nil {
		return aborted()
	}
	if _, err := l.store.ReadAt(ctx, buf, off); err != nil {
		return storeErr("read", err)
	}
	if i := firstDiff(buf, verify); i >= 0 {
		return checkData(scsi.SenseData{Sense: scsi.SenseMiscompareDuringVerify, Info: uint32(i), InfoValid: true})
	}
	if ctx.Err() != nil {
		return aborted()
	}
	wctx := live(ctx)
	if _, err := l.store.WriteAt(wctx, data, off); err != nil {
		return storeErr("write", err)
	}
	if cdb[1]&0x08 != 0 {
		if err := l.store.Flush(wctx); err != nil {
			return storeErr("write", err)
		}
	}
	return good(nil)
}

func (l *lu) readCapacity10(cmd *scsi.Command) scsi.Response {
	if cmd.CDB[8]&1 == 0 && binary.BigEndian.Uint32(cmd.CDB[2:]) != 0 {
		return checkCDB(2, -1) // LBA without PMI
	}
	b := make([]byte, 8)
	last := l.nblocks() - 1
	if last > 0xffffffff {
		last = 0xffffffff
	}
	binary.BigEndian.PutUint32(b, uint32(last))
	binary.BigEndian.PutUint32(b[4:], l.bs)
	return good(b, cmd.DataInLen)
}

func (l *lu) readCapacity16(cmd *scsi.Command) scsi.Response {
	alloc := int(binary.BigEndian.Uint32(cmd.CDB[10:]))
	b := make([]byte, 32)
	binary.BigEndian.PutUint64(b, l.nblocks()-1)
	binary.BigEndian.PutUint32(b[8:], l.bs)
	b[14] = 0x80 | 0x40 // LBPME, LBPRZ
	return good(b, alloc, cmd.DataInLen)
}
