// Package iscsitest holds a small in-memory scsi.Handler for tests of the
// iSCSI target and of what runs over it: RAM disks answering TEST UNIT
// READY, INQUIRY (standard, VPD 0x00, 0x80, 0x83, 0xB0, 0xB1), READ CAPACITY
// 10/16, READ and WRITE 6/10/12/16, WRITE AND VERIFY 10/12/16, SYNCHRONIZE
// CACHE 10/16, MODE SENSE 6/10 (no pages beyond the header), REPORT LUNS
// and REQUEST SENSE, with hooks that let a test hold or watch commands.
package iscsitest

import (
	"context"
	"encoding/binary"
	"fmt"
	"sync"

	"github.com/mpathfs/mpathfs/iscsi"
	"github.com/mpathfs/mpathfs/scsi"
)

// RAM is a scsi.Handler with one RAM disk per LUN.
type RAM struct {
	BlockSize int
	// Hook, when set, runs first for every command; a non-nil response
	// answers the command instead of the disk. It sees ctx (a test can
	// block on it to hold a command until it is aborted).
	Hook func(ctx context.Context, cmd *scsi.Command) *scsi.Response

	mu     sync.Mutex
	disks  map[uint64][]byte
	events []string
}

// NewRAM returns a handler with LUNs 0..luns-1, each blocks blocks of
// blockSize bytes.
func NewRAM(luns int, blocks int, blockSize int) *RAM {
	r := &RAM{BlockSize: blockSize, disks: map[uint64][]byte{}}
	for i := range luns {
		r.disks[uint64(i)] = make([]byte, blocks*blockSize)
	}
	return r
}

// Events returns what Reset and NexusLost were told, in order
// ("reset F lun N by I", "lost I,i,0xISID").
func (r *RAM) Events() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.events...)
}

func (r *RAM) record(format string, args ...any) {
	r.mu.Lock()
	r.events = append(r.events, fmt.Sprintf(format, args...))
	r.mu.Unlock()
}

// Record adds an event to the log (a test's hook marks its own steps).
func (r *RAM) Record(format string, args ...any) { r.record(format, args...) }

// Disk returns a copy of a LUN's contents.
func (r *RAM) Disk(lun uint64) []byte {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]byte(nil), r.disks[lun]...)
}

// LUNs implements scsi.Handler.
func (r *RAM) LUNs(scsi.Nexus) []uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]uint64, 0, len(r.disks))
	for i := range uint64(len(r.disks)) {
		out = append(out, i)
	}
	return out
}

// Reset implements scsi.Handler.
func (r *RAM) Reset(n scsi.Nexus, f scsi.TMF, lun uint64) {
	r.record("reset %d lun %d by %s", f, lun, n.InitiatorPort())
}

// NexusLost implements scsi.Handler.
func (r *RAM) NexusLost(n scsi.Nexus) { r.record("lost %s", n.InitiatorPort()) }

func sense(key, asc, ascq byte) scsi.Response {
	b := make([]byte, 18)
	b[0], b[2], b[7], b[12], b[13] = 0x70, key, 10, asc, ascq
	return scsi.Response{Status: scsi.StatusCheckCondition, Sense: b}
}

var (
	invalidOpcode = func() scsi.Response { return sense(0x05, 0x20, 0x00) }
	invalidField  = func() scsi.Response { return sense(0x05, 0x24, 0x00) }
	lbaOutOfRange = func() scsi.Response { return sense(0x05, 0x21, 0x00) }
)

// rw decodes the LBA and block count of READ/WRITE 6/10/12/16 and WRITE
// AND VERIFY 10/12/16.
func rw(cdb []byte) (lba uint64, n uint32, write, ok bool) {
	if len(cdb) < 6 {
		return 0, 0, false, false
	}
	switch cdb[0] {
	case 0x08, 0x0a:
		lba = uint64(cdb[1]&0x1f)<<16 | uint64(cdb[2])<<8 | uint64(cdb[3])
		n = uint32(cdb[4])
		if n == 0 {
			n = 256
		}
		return lba, n, cdb[0] == 0x0a, true
	case 0x28, 0x2a, 0x2e:
		if len(cdb) < 10 {
			return 0, 0, false, false
		}
		return uint64(binary.BigEndian.Uint32(cdb[2:])), uint32(binary.BigEndian.Uint16(cdb[7:])), cdb[0] != 0x28, true
	case 0xa8, 0xaa, 0xae:
		if len(cdb) < 12 {
			return 0, 0, false, false
		}
		return uint64(binary.BigEndian.Uint32(cdb[2:])), binary.BigEndian.Uint32(cdb[6:]), cdb[0] != 0xa8, true
	case 0x88, 0x8a, 0x8e:
		if len(cdb) < 16 {
			return 0, 0, false, false
		}
		return binary.BigEndian.Uint64(cdb[2:]), binary.BigEndian.Uint32(cdb[10:]), cdb[0] != 0x88, true
	}
	return 0, 0, false, false
}

// TransferLength implements the iSCSI target's TransferLengther: the
// bytes a READ or WRITE moves by its CDB.
func (r *RAM) TransferLength(_ scsi.Nexus, _ uint64, cdb []byte) (int, bool) {
	return iscsi.SBCTransferLength(cdb, r.BlockSize)
}

// Execute implements scsi.Handler.
func (r *RAM) Execute(ctx context.Context, cmd *scsi.Command) scsi.Response {
	if r.Hook != nil {
		if resp := r.Hook(ctx, cmd); resp != nil {
			return *resp
		}
	}
	if ctx.Err() != nil {
		return scsi.Response{Status: scsi.StatusTaskAborted}
	}
	resp := r.exec(cmd)
	if len(resp.DataIn) > cmd.DataInLen {
		resp.DataIn = resp.DataIn[:cmd.DataInLen]
	}
	return resp
}

func (r *RAM) exec(cmd *scsi.Command) scsi.Response {
	cdb := cmd.CDB
	if len(cdb) == 0 {
		return invalidOpcode()
	}
	r.mu.Lock()
	disk, ok := r.disks[cmd.LUN]
	r.mu.Unlock()
	if !ok && cdb[0] != 0x12 && cdb[0] != 0xa0 && cdb[0] != 0x03 {
		return sense(0x05, 0x25, 0x00)
	}
	bs := r.BlockSize
	blocks := uint64(len(disk) / bs)
	if lba, n, write, ok := rw(cdb); ok {
		if lba+uint64(n) > blocks {
			return lbaOutOfRange()
		}
		off, l := int(lba)*bs, int(n)*bs
		if write {
			// A transport that received less than the CDB asks for
			// (residual overflow) hands over what it has: the whole
			// blocks of it are written (FCP-4's rule, which libiscsi's
			// residual tests check).
			l = min(l, len(cmd.DataOut)/bs*bs)
			r.mu.Lock()
			copy(disk[off:off+l], cmd.DataOut[:l])
			r.mu.Unlock()
			return scsi.Response{}
		}
		out := make([]byte, l)
		r.mu.Lock()
		copy(out, disk[off:off+l])
		r.mu.Unlock()
		return scsi.Response{DataIn: out}
	}
	switch cdb[0] {
	case 0x00, 0x35, 0x91: // TEST UNIT READY, SYNCHRONIZE CACHE 10/16
		return scsi.Response{}
	case 0x03: // REQUEST SENSE: no sense
		return scsi.Response{DataIn: make([]byte, 18)}
	case 0x12:
		return r.inquiry(cmd, ok)
	case 0x25: // READ CAPACITY 10
		b := make([]byte, 8)
		binary.BigEndian.PutUint32(b, uint32(min(blocks-1, 0xffffffff)))
		binary.BigEndian.PutUint32(b[4:], uint32(bs))
		return scsi.Response{DataIn: b}
	case 0x9e: // READ CAPACITY 16
		if len(cdb) < 16 || cdb[1]&0x1f != 0x10 {
			return invalidField()
		}
		b := make([]byte, 32)
		binary.BigEndian.PutUint64(b, blocks-1)
		binary.BigEndian.PutUint32(b[8:], uint32(bs))
		return scsi.Response{DataIn: alloc(b, int(binary.BigEndian.Uint32(cdb[10:])))}
	case 0x1a: // MODE SENSE 6: header only
		return scsi.Response{DataIn: alloc([]byte{3, 0, 0, 0}, int(cdb[4]))}
	case 0x5a: // MODE SENSE 10
		return scsi.Response{DataIn: alloc([]byte{0, 6, 0, 0, 0, 0, 0, 0}, int(binary.BigEndian.Uint16(cdb[7:])))}
	case 0xa0: // REPORT LUNS
		luns := r.LUNs(cmd.Nexus)
		b := make([]byte, 8+8*len(luns))
		binary.BigEndian.PutUint32(b, uint32(8*len(luns)))
		for i, l := range luns {
			binary.BigEndian.PutUint16(b[8+8*i:], uint16(l))
		}
		return scsi.Response{DataIn: alloc(b, int(binary.BigEndian.Uint32(cdb[6:])))}
	}
	return invalidOpcode()
}

func alloc(b []byte, n int) []byte {
	if n < len(b) {
		return b[:n]
	}
	return b
}

func (r *RAM) inquiry(cmd *scsi.Command, present bool) scsi.Response {
	cdb := cmd.CDB
	al := int(binary.BigEndian.Uint16(cdb[3:]))
	pq := byte(0x00)
	if !present {
		pq = 0x7f // no logical unit
	}
	if cdb[1]&1 == 0 {
		if cdb[2] != 0 {
			return invalidField()
		}
		b := make([]byte, 96)
		b[0], b[2], b[3], b[4] = pq, 0x06, 0x02, 91
		b[7] = 0x02 // CMDQUE
		copy(b[8:], "MPATHFS ")
		copy(b[16:], fmt.Sprintf("%-16s", "RAMDISK"))
		copy(b[32:], "0001")
		return scsi.Response{DataIn: alloc(b, al)}
	}
	var page []byte
	switch cdb[2] {
	case 0x00:
		page = []byte{0x00, 0x80, 0x83, 0xb0, 0xb1}
	case 0x80:
		page = fmt.Appendf(nil, "RAM%05d", cmd.LUN)
	case 0x83:
		// NAA IEEE registered designator and the relative target port.
		naa := []byte{0x01, 0x03, 0x00, 0x08, 0x60, 0x01, 0x40, 0x50, 0, 0, 0, byte(cmd.LUN)}
		rtp := []byte{0x61, 0x94, 0x00, 0x04, 0, 0, byte(cmd.Nexus.TargetPort >> 8), byte(cmd.Nexus.TargetPort)}
		page = append(naa, rtp...)
	case 0xb0:
		page = make([]byte, 0x3c)
		binary.BigEndian.PutUint32(page[4:], 2048) // maximum transfer length
	case 0xb1:
		page = make([]byte, 0x3c)
		page[1] = 1 // non-rotating medium
	default:
		return invalidField()
	}
	b := append([]byte{pq, cdb[2], byte(len(page) >> 8), byte(len(page))}, page...)
	return scsi.Response{DataIn: alloc(b, al)}
}
