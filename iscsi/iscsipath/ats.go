package iscsipath

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/mpathfs/mpathfs/ioerr"
	"github.com/mpathfs/mpathfs/scsi"
)

// ErrMiscompare: COMPARE AND WRITE found other data than the compare
// buffer, and wrote nothing.
var ErrMiscompare = errors.New("COMPARE AND WRITE: miscompare")

const opCompareAndWrite = 0x89

// CompareAndWrite sends COMPARE AND WRITE (SBC-3, VMware's ATS) for the
// blocks at lba: atomically, the target compares them with compare and,
// if they agree, writes write over them. compare and write are one or more
// whole blocks of the same length. A miscompare is ErrMiscompare (wrapped
// with the target's sense).
func (b *Backend) CompareAndWrite(ctx context.Context, lba uint64, compare, write []byte) error {
	if len(compare) != len(write) || len(compare) == 0 || len(compare)%b.block != 0 || len(compare)/b.block > 255 {
		return fmt.Errorf("%s: compare and write: want compare and write buffers of the same number of whole %d-byte blocks (got %d and %d bytes)", b.opts.Name, b.block, len(compare), len(write))
	}
	n := len(compare) / b.block
	if err := b.checkRange("compare and write", int64(lba)*int64(b.block), int64(len(compare))); err != nil {
		return err
	}
	cdb := make([]byte, 16)
	cdb[0] = opCompareAndWrite
	binary.BigEndian.PutUint64(cdb[2:10], lba)
	cdb[13] = byte(n)
	data := make([]byte, 0, 2*len(compare))
	data = append(append(data, compare...), write...)
	_, err := b.exec(ctx, "compare and write", cdb, data, nil, true)
	if s, ok := ioerr.SenseOf(err); ok && s.Key == scsi.SenseKeyMiscompare {
		return fmt.Errorf("%w (%v)", ErrMiscompare, err)
	}
	return err
}
