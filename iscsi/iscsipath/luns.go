package iscsipath

import (
	"context"
	"encoding/binary"
	"fmt"

	"github.com/mpathfs/mpathfs/scsi"
)

// ReportLUNs sends REPORT LUNS (SPC-4 6.33, select report 00h: the
// logical units the target addresses) on the path's session and returns
// the LUN numbers, peripheral and flat-space addressing decoded. `adapter
// rescan` asks each iSCSI session for its LUNs this way.
func (b *Backend) ReportLUNs(ctx context.Context) ([]uint64, error) {
	alloc := uint32(8 + 8*256)
	for range 2 {
		cdb := make([]byte, 12)
		cdb[0] = scsi.OpReportLUNs
		binary.BigEndian.PutUint32(cdb[6:10], alloc)
		in := make([]byte, alloc)
		n, err := b.exec(ctx, "report luns", cdb, nil, in, false)
		if err != nil {
			return nil, err
		}
		if n < 8 {
			return nil, fmt.Errorf("report luns: %d bytes of data, want at least 8", n)
		}
		listLen := binary.BigEndian.Uint32(in[0:4])
		if 8+listLen > alloc && alloc < 1<<20 {
			alloc = 8 + listLen
			continue
		}
		var out []uint64
		for off := 8; off+8 <= n && off < 8+int(listLen); off += 8 {
			e := in[off : off+8]
			switch e[0] >> 6 {
			case 0: // peripheral device addressing
				out = append(out, uint64(e[1]))
			case 1: // flat space addressing
				out = append(out, uint64(e[0]&0x3f)<<8|uint64(e[1]))
			}
		}
		return out, nil
	}
	return nil, fmt.Errorf("report luns: the list kept growing")
}
