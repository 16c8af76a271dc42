package iscsi

import "encoding/binary"

// SBCTransferLength returns the bytes an SBC-3 command transfers by its
// CDB (the SCSI transfer length the residuals are computed from), for a
// logical unit of blockSize-byte blocks: READ and WRITE 6/10/12/16, WRITE
// AND VERIFY and VERIFY (with BYTCHK) 10/12/16, COMPARE AND WRITE (twice
// the blocks), WRITE SAME 10/16 (one block, none with NDOB). ok is false
// for any other command. A handler implements TransferLengther with it:
//
//	func (h *H) TransferLength(_ scsi.Nexus, lun uint64, cdb []byte) (int, bool) {
//		return iscsi.SBCTransferLength(cdb, h.blockSize(lun))
//	}
func SBCTransferLength(cdb []byte, blockSize int) (n int, ok bool) {
	if len(cdb) < 6 || blockSize <= 0 {
		return 0, false
	}
	blocks := func(off, size int) (int, bool) {
		if len(cdb) < off+size {
			return 0, false
		}
		var v uint64
		switch size {
		case 1:
			v = uint64(cdb[off])
		case 2:
			v = uint64(binary.BigEndian.Uint16(cdb[off:]))
		case 4:
			v = uint64(binary.BigEndian.Uint32(cdb[off:]))
		}
		if v > 1<<31/uint64(blockSize) {
			return 0, false
		}
		return int(v) * blockSize, true
	}
	switch cdb[0] {
	case 0x08, 0x0a: // READ(6), WRITE(6): 0 means 256 blocks
		if cdb[4] == 0 {
			return 256 * blockSize, true
		}
		return blocks(4, 1)
	case 0x28, 0x2a, 0x2e: // READ, WRITE, WRITE AND VERIFY (10)
		return blocks(7, 2)
	case 0xa8, 0xaa, 0xae: // (12)
		return blocks(6, 4)
	case 0x88, 0x8a, 0x8e: // (16)
		return blocks(10, 4)
	case 0x2f, 0xaf, 0x8f: // VERIFY 10/12/16: data-out only with BYTCHK
		switch cdb[1] >> 1 & 3 {
		case 0:
			return 0, true
		case 3:
			return blockSize, true
		}
		switch cdb[0] {
		case 0x2f:
			return blocks(7, 2)
		case 0xaf:
			return blocks(6, 4)
		}
		return blocks(10, 4)
	case 0x89: // COMPARE AND WRITE: the compare and the write data
		if len(cdb) < 16 {
			return 0, false
		}
		return 2 * int(cdb[13]) * blockSize, true
	case 0x41: // WRITE SAME(10)
		return blockSize, true
	case 0x93: // WRITE SAME(16)
		if cdb[1]&1 != 0 { // NDOB
			return 0, true
		}
		return blockSize, true
	}
	return 0, false
}
