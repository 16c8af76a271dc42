package array

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"runtime"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/mpathfs/mpathfs/ioerr"
	"github.com/mpathfs/mpathfs/scsi"
)

func TestNewHandlerErrors(t *testing.T) {
	st := luStore(t, 1<<20)
	for _, tc := range []struct {
		cfg  HandlerConfig
		n    int
		want string
	}{
		{HandlerConfig{}, 0, "no stores"},
		{HandlerConfig{LUs: []LUConfig{{LUN: 0}, {LUN: 1}}}, 1, "2 logical units configured but 1 stores"},
		{HandlerConfig{LUs: []LUConfig{{WWID: "naa.12"}}}, 1, "16 or 32 hex digits"},
		{HandlerConfig{LUs: []LUConfig{{BlockSize: 1000}}}, 1, "want 512 or 4096"},
		{HandlerConfig{LUs: []LUConfig{{Vendor: "TOO LONG VENDOR"}}}, 1, "too long"},
		{HandlerConfig{LUs: []LUConfig{{LUN: 20000}}}, 1, "above 16383"},
	} {
		var err error
		if tc.n == 0 {
			_, err = NewHandler(tc.cfg)
		} else {
			_, err = NewHandler(tc.cfg, st)
		}
		require.ErrorContains(t, err, tc.want)
	}
	_, err := NewHandler(HandlerConfig{LUs: []LUConfig{{LUN: 1}, {LUN: 1}}}, st, st)
	require.ErrorContains(t, err, "two logical units numbered 1")
}

// TestCommandTable is CDB in, status and sense out, for the commands'
// argument checks.
func TestCommandTable(t *testing.T) {
	e := newEnv(t)
	e.ready(nxA)
	inval := func(field uint16, bit int) ioerr.Sense { return scsi.SenseInvalidFieldInCDB }
	for _, tc := range []struct {
		name string
		cdb  []byte
		out  []byte
		want ioerr.Sense // zero: GOOD
	}{
		{"tur", make([]byte, 6), nil, ioerr.Sense{}},
		{"unknown opcode", []byte{0x02, 0, 0, 0, 0, 0}, nil, scsi.SenseInvalidOpcode},
		{"vendor opcode", []byte{0xc0, 0, 0, 0, 0, 0}, nil, scsi.SenseInvalidOpcode},
		{"short read10", []byte{scsi.OpRead10, 0, 0, 0}, nil, inval(4, -1)},
		{"short read16", cdbRW16(scsi.OpRead16, 0, 1, 0)[:12], nil, scsi.SenseInvalidFieldInCDB},
		{"read10 past end", cdbRW10(scsi.OpRead10, luBlocks-1, 2, 0), nil, scsi.SenseLBAOutOfRange},
		{"read10 at end, 0 blocks", cdbRW10(scsi.OpRead10, luBlocks, 0, 0), nil, ioerr.Sense{}},
		{"read10 beyond end, 0 blocks", cdbRW10(scsi.OpRead10, luBlocks+1, 0, 0), nil, scsi.SenseLBAOutOfRange},
		{"read16 lba overflow", cdbRW16(scsi.OpRead16, ^uint64(0), 2, 0), nil, scsi.SenseLBAOutOfRange},
		{"read16 rdprotect", cdbRW16(scsi.OpRead16, 0, 1, 0x20), nil, scsi.SenseInvalidFieldInCDB},
		{"read16 too long", cdbRW16(scsi.OpRead16, 0, 1<<20, 0), nil, scsi.SenseLBAOutOfRange},
		{"write16 past end", cdbRW16(scsi.OpWrite16, luBlocks, 1, 0), block(1), scsi.SenseLBAOutOfRange},
		{"write10 data short: the blocks sent are written", cdbRW10(scsi.OpWrite10, 0, 2, 0), block(1), ioerr.Sense{}},
		{"caw data long", cdbCAW(0, 1), make([]byte, 4*512), scsi.SenseInvalidFieldInCommandIU},
		{"write10 wrprotect", cdbRW10(scsi.OpWrite10, 0, 1, 0x40), block(1), scsi.SenseInvalidFieldInCDB},
		{"sync cache 10", cdbRW10(scsi.OpSynchronizeCache10, 0, 0, 0), nil, ioerr.Sense{}},
		{"sync cache 16 past end", cdbRW16(scsi.OpSynchronizeCache16, luBlocks, 2, 0), nil, scsi.SenseLBAOutOfRange},
		{"inquiry cmddt", []byte{scsi.OpInquiry, 2, 0, 0, 36, 0}, nil, scsi.SenseInvalidFieldInCDB},
		{"inquiry page without evpd", []byte{scsi.OpInquiry, 0, 0x80, 0, 36, 0}, nil, scsi.SenseInvalidFieldInCDB},
		{"inquiry unknown vpd", []byte{scsi.OpInquiry, 1, 0x99, 0, 255, 0}, nil, scsi.SenseInvalidFieldInCDB},
		{"report luns alloc 15", []byte{scsi.OpReportLUNs, 0, 0, 0, 0, 0, 0, 0, 0, 15, 0, 0}, nil, scsi.SenseInvalidFieldInCDB},
		{"report luns bad select", []byte{scsi.OpReportLUNs, 0, 9, 0, 0, 0, 0, 0, 1, 0, 0, 0}, nil, scsi.SenseInvalidFieldInCDB},
		{"mode sense saved", []byte{scsi.OpModeSense6, 0, 0xc8, 0, 255, 0}, nil, scsi.SenseSavingNotSupported},
		{"mode sense unknown page", []byte{scsi.OpModeSense6, 0, 0x19, 0, 255, 0}, nil, scsi.SenseInvalidFieldInCDB},
		{"mode sense subpage", []byte{scsi.OpModeSense6, 0, 0x08, 1, 255, 0}, nil, scsi.SenseInvalidFieldInCDB},
		{"mode select change", []byte{scsi.OpModeSelect6, 0x10, 0, 0, 24, 0}, append([]byte{0, 0, 0, 0}, scsi.BuildCachingPage(false, true)...), scsi.SenseInvalidFieldInParamList},
		{"mode select same", []byte{scsi.OpModeSelect6, 0x10, 0, 0, 24, 0}, append([]byte{0, 0, 0, 0}, scsi.BuildCachingPage(true, false)...), ioerr.Sense{}},
		{"write same 0 blocks", cdbRW16(scsi.OpWriteSame16, 0, 0, 0), block(1), scsi.SenseInvalidFieldInCDB},
		{"write same past end", cdbRW16(scsi.OpWriteSame16, luBlocks-1, 2, 0), block(1), scsi.SenseLBAOutOfRange},
		{"write same anchor", cdbRW16(scsi.OpWriteSame16, 0, 1, 0x18), block(0), scsi.SenseInvalidFieldInCDB},
		{"caw too long", cdbCAW(0, 255), nil, scsi.SenseInvalidFieldInCDB},
		{"caw past end", cdbCAW(luBlocks, 1), make([]byte, 1024), scsi.SenseLBAOutOfRange},
		{"service action in unknown", []byte{scsi.OpServiceActionIn16, 0x1f, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 32, 0, 0}, nil, scsi.SenseInvalidFieldInCDB},
		{"pr in bad action", scsi.CDBPersistentReserveIn(0x1f, 100), nil, scsi.SenseInvalidFieldInCDB},
		{"pr out bad type", scsi.CDBPersistentReserveOut(scsi.PROutReserve, 2, 24), make([]byte, 24), scsi.SenseInvalidFieldInCDB},
		{"pr out bad length", scsi.CDBPersistentReserveOut(scsi.PROutRegister, 0, 20), make([]byte, 20), scsi.SenseParamListLengthError},
		{"pr out spec_i_pt", scsi.CDBPersistentReserveOut(scsi.PROutRegister, 0, 24), scsi.PROutParams{SAKey: 1, SpecIPT: true}.Encode(), scsi.SenseInvalidFieldInParamList},
		{"rsoc option 1 with SA opcode", []byte{scsi.OpMaintenanceIn, 0x0c, 1, scsi.OpPersistentReserveIn, 0, 0, 0, 0, 1, 0, 0, 0}, nil, scsi.SenseInvalidFieldInCDB},
		{"rsoc bad option", []byte{scsi.OpMaintenanceIn, 0x0c, 7, 0, 0, 0, 0, 0, 1, 0, 0, 0}, nil, scsi.SenseInvalidFieldInCDB},
		{"unmap anchor", []byte{scsi.OpUnmap, 1, 0, 0, 0, 0, 0, 0, 24, 0}, nil, scsi.SenseInvalidFieldInCDB},
		{"unmap bad header", []byte{scsi.OpUnmap, 0, 0, 0, 0, 0, 0, 0, 24, 0}, make([]byte, 24), scsi.SenseParamListLengthError},
		{"request sense desc", []byte{scsi.OpRequestSense, 1, 0, 0, 18, 0}, nil, scsi.SenseInvalidFieldInCDB},
		{"empty cdb", nil, nil, scsi.SenseInvalidFieldInCDB},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := e.do(nxA, tc.cdb, tc.out)
			if tc.want == (ioerr.Sense{}) {
				requireGood(t, r, tc.name)
				return
			}
			requireSense(t, r, tc.want, tc.name)
		})
	}
	// A LUN that does not exist.
	r := e.h.Execute(context.Background(), &scsi.Command{Nexus: nxA, LUN: 7, CDB: cdbRW10(scsi.OpRead10, 0, 1, 0), DataInLen: 512})
	requireSense(t, r, ioerr.SenseLUNotSupported, "read of LUN 7")
	r = e.h.Execute(context.Background(), &scsi.Command{Nexus: nxA, LUN: 7, CDB: scsi.CDBInquiry(false, 0, 96), DataInLen: 96})
	requireGood(t, r, "inquiry of LUN 7")
	assert.Equal(t, byte(0x7f), r.DataIn[0], "peripheral qualifier 3, type 1f")
}

func TestInquiryAndVPD(t *testing.T) {
	e := newEnv(t)
	r := e.do(nxB, scsi.CDBInquiry(false, 0, 255), nil)
	requireGood(t, r, "inquiry")
	inq, err := scsi.ParseStdInquiry(r.DataIn)
	require.NoError(t, err)
	assert.Equal(t, "MPATHFS", inq.Vendor)
	assert.Equal(t, "ALUA ARRAY", inq.Model)
	assert.Equal(t, 3, inq.TPGS, "implicit and explicit")
	// INQUIRY did not consume the power-on unit attention.
	requireSense(t, e.do(nxB, make([]byte, 6), nil), scsi.SensePowerOnReset, "first TUR")

	r = e.do(nxB, scsi.CDBInquiry(false, 0, 5), nil)
	assert.Len(t, r.DataIn, 5, "allocation length truncates")

	r = e.do(nxB, scsi.CDBInquiry(true, 0x00, 255), nil)
	requireGood(t, r, "vpd 00")
	assert.Equal(t, []byte{0x00, 0x80, 0x83, 0xb0, 0xb1, 0xb2}, r.DataIn[4:])

	r = e.do(nxB, scsi.CDBInquiry(true, 0x80, 255), nil)
	serial, err := scsi.ParseVPD80(r.DataIn)
	require.NoError(t, err)
	assert.Equal(t, e.arr.Config().Serial, serial)

	r = e.do(nxB, scsi.CDBInquiry(true, 0x83, 1024), nil)
	ds, err := scsi.ParseVPD83(r.DataIn)
	require.NoError(t, err)
	assert.Equal(t, e.arr.Config().WWID, scsi.WWIDFromDesignators(ds))
	pi, ok := scsi.PortFromDesignators(ds)
	require.True(t, ok)
	assert.Equal(t, uint16(3), pi.RelativePort)
	assert.Equal(t, uint16(2), pi.TPG)
	var name string
	for _, d := range ds {
		if d.Type == scsi.DesigSCSIName {
			name = string(bytes.TrimRight(d.Value, "\x00"))
		}
	}
	assert.Equal(t, "iqn.2026-01.test:array", name)

	r = e.do(nxB, scsi.CDBInquiry(true, 0xb0, 255), nil)
	requireGood(t, r, "vpd b0")
	assert.Equal(t, byte(maxCompareAndWrite), r.DataIn[5])
	assert.Equal(t, uint32(maxTransferBytes/512), binary.BigEndian.Uint32(r.DataIn[8:]))
	assert.Equal(t, uint32(maxUnmapBlocks), binary.BigEndian.Uint32(r.DataIn[20:]))
	r = e.do(nxB, scsi.CDBInquiry(true, 0xb2, 255), nil)
	assert.Equal(t, byte(0xe4), r.DataIn[5], "LBPU LBPWS LBPWS10 LBPRZ")

	r = e.do(nxB, []byte{scsi.OpReadCapacity10, 0, 0, 0, 0, 0, 0, 0, 0, 0}, nil)
	requireGood(t, r, "read capacity 10")
	assert.Equal(t, uint32(luBlocks-1), binary.BigEndian.Uint32(r.DataIn))
	assert.Equal(t, uint32(512), binary.BigEndian.Uint32(r.DataIn[4:]))
	r = e.do(nxB, []byte{scsi.OpServiceActionIn16, 0x10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 32, 0, 0}, nil)
	requireGood(t, r, "read capacity 16")
	assert.Equal(t, uint64(luBlocks-1), binary.BigEndian.Uint64(r.DataIn))
	assert.Equal(t, byte(0xc0), r.DataIn[14], "LBPME LBPRZ")

	r = e.do(nxB, []byte{scsi.OpReportLUNs, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0}, nil)
	requireGood(t, r, "report luns")
	assert.Equal(t, []byte{0, 0, 0, 8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}, r.DataIn)

	r = e.do(nxB, []byte{scsi.OpModeSense10, 0x10, 0x3f, 0, 0, 0, 0, 1, 0, 0}, nil)
	requireGood(t, r, "mode sense 10 all pages, long LBA")
	assert.Equal(t, byte(1), r.DataIn[4], "LONGLBA")
	assert.Equal(t, uint16(16), binary.BigEndian.Uint16(r.DataIn[6:]))
	pages := r.DataIn[8+16:]
	assert.NotNil(t, findPage(pages, scsi.ModePageCaching))
	assert.NotNil(t, findPage(pages, scsi.ModePageControl))
	r = e.do(nxB, []byte{scsi.OpModeSense6, 0x08, 0x08, 0, 255, 0}, nil)
	requireGood(t, r, "mode sense 6 caching, DBD")
	assert.Equal(t, byte(0), r.DataIn[3], "no block descriptor")
	assert.Equal(t, byte(0x04), r.DataIn[4+2]&0x04, "WCE")
	r = e.do(nxB, []byte{scsi.OpModeSense6, 0, 0x48, 0, 255, 0}, nil)
	assert.Equal(t, byte(0), r.DataIn[12+2], "changeable: nothing")
}

func TestReportSupportedOpcodes(t *testing.T) {
	e := newEnv(t)
	e.ready(nxA)
	r := e.do(nxA, []byte{scsi.OpMaintenanceIn, 0x0c, 0, 0, 0, 0, 0, 0, 0x10, 0, 0, 0}, nil)
	requireGood(t, r, "all")
	n := int(binary.BigEndian.Uint32(r.DataIn))
	assert.Equal(t, 8*len(supportedOps), n)
	r = e.do(nxA, []byte{scsi.OpMaintenanceIn, 0x0c, 0x80, 0, 0, 0, 0, 0, 0x10, 0, 0, 0}, nil)
	assert.Equal(t, 20*len(supportedOps), int(binary.BigEndian.Uint32(r.DataIn)), "with timeouts")
	r = e.do(nxA, []byte{scsi.OpMaintenanceIn, 0x0c, 1, scsi.OpRead16, 0, 0, 0, 0, 1, 0, 0, 0}, nil)
	requireGood(t, r, "one")
	assert.Equal(t, byte(3), r.DataIn[1]&7, "supported")
	assert.Equal(t, uint16(16), binary.BigEndian.Uint16(r.DataIn[2:]))
	assert.Equal(t, byte(scsi.OpRead16), r.DataIn[4])
	r = e.do(nxA, []byte{scsi.OpMaintenanceIn, 0x0c, 2, scsi.OpPersistentReserveOut, 0, 7, 0, 0, 1, 0, 0, 0}, nil)
	requireGood(t, r, "one with SA")
	assert.Equal(t, byte(3), r.DataIn[1]&7)
	r = e.do(nxA, []byte{scsi.OpMaintenanceIn, 0x0c, 1, 0x02, 0, 0, 0, 0, 1, 0, 0, 0}, nil)
	assert.Equal(t, byte(1), r.DataIn[1]&7, "not supported")
	r = e.do(nxA, []byte{scsi.OpMaintenanceIn, 0x0d, 0, 0, 0, 0, 0, 0, 0, 16, 0, 0}, nil)
	requireGood(t, r, "report supported TMFs")
	assert.Equal(t, []byte{0xda, 0x01, 0, 0}, r.DataIn)
	r = e.do(nxA, []byte{scsi.OpMaintenanceIn, 0x0d, 0x80, 0, 0, 0, 0, 0, 0, 16, 0, 0}, nil)
	assert.Len(t, r.DataIn, 16, "REPD")
}

func TestReadWrite(t *testing.T) {
	e := newEnv(t)
	e.ready(nxA)
	data := append(block(0xaa), block(0xbb)...)
	requireGood(t, e.do(nxA, cdbRW16(scsi.OpWrite16, 100, 2, 0x08), data), "write16 fua")
	r := e.do(nxA, cdbRW16(scsi.OpRead16, 100, 2, 0), nil)
	requireGood(t, r, "read16")
	assert.Equal(t, data, r.DataIn)
	r = e.do(nxA, cdbRW10(scsi.OpRead10, 101, 1, 0), nil)
	assert.Equal(t, block(0xbb), r.DataIn)
	c12 := make([]byte, 12)
	c12[0] = scsi.OpRead12
	binary.BigEndian.PutUint32(c12[2:], 100)
	binary.BigEndian.PutUint32(c12[6:], 1)
	assert.Equal(t, block(0xaa), e.do(nxA, c12, nil).DataIn)
	requireGood(t, e.do(nxA, []byte{scsi.OpWrite6, 0, 0, 5, 1, 0}, block(0x66)), "write6")
	assert.Equal(t, block(0x66), e.do(nxA, []byte{scsi.OpRead6, 0, 0, 5, 1, 0}, nil).DataIn)
	// Less data than the CDB describes: the whole blocks sent are written.
	requireGood(t, e.do(nxA, cdbRW10(scsi.OpWrite10, 200, 3, 0), append(block(0x31), block(0x32)[:100]...)), "short data-out")
	r = e.do(nxA, cdbRW10(scsi.OpRead10, 200, 2, 0), nil)
	assert.Equal(t, append(block(0x31), block(0)...), r.DataIn)
	// The data-in buffer limits what comes back.
	r = e.h.Execute(context.Background(), &scsi.Command{Nexus: nxA, CDB: cdbRW16(scsi.OpRead16, 100, 2, 0), DataInLen: 512})
	assert.Len(t, r.DataIn, 512)

	// VERIFY with BYTCHK: equal, then a miscompare at byte 700.
	requireGood(t, e.do(nxA, cdbRW16(scsi.OpVerify16, 100, 2, 0x02), data), "verify equal")
	bad := bytes.Clone(data)
	bad[700] ^= 1
	r = e.do(nxA, cdbRW16(scsi.OpVerify16, 100, 2, 0x02), bad)
	requireSense(t, r, scsi.SenseMiscompareDuringVerify, "verify miscompare")
	assert.Equal(t, uint32(700), binary.BigEndian.Uint32(r.Sense[3:]))
}

func TestWriteSameAndUnmap(t *testing.T) {
	e := newEnv(t)
	e.ready(nxA)
	requireGood(t, e.do(nxA, cdbRW16(scsi.OpWriteSame16, 10, 300, 0), block(0x5a)), "write same 16")
	r := e.do(nxA, cdbRW16(scsi.OpRead16, 10, 300, 0), nil)
	assert.Equal(t, bytes.Repeat(block(0x5a), 300), r.DataIn)
	requireGood(t, e.do(nxA, cdbRW10(scsi.OpWriteSame10, 20, 5, 0x08), block(0)), "write same 10 unmap")
	r = e.do(nxA, cdbRW16(scsi.OpRead16, 20, 5, 0), nil)
	assert.True(t, isZero(r.DataIn), "unmapped blocks read zero")
	requireGood(t, e.do(nxA, cdbRW16(scsi.OpWriteSame16, 30, 2, 0x09), nil), "write same 16 NDOB")
	assert.True(t, isZero(e.do(nxA, cdbRW16(scsi.OpRead16, 30, 2, 0), nil).DataIn))

	// UNMAP two extents.
	p := make([]byte, 8+32)
	binary.BigEndian.PutUint16(p, 6+32)
	binary.BigEndian.PutUint16(p[2:], 32)
	binary.BigEndian.PutUint64(p[8:], 40)
	binary.BigEndian.PutUint32(p[16:], 10)
	binary.BigEndian.PutUint64(p[24:], 200)
	binary.BigEndian.PutUint32(p[32:], 10)
	cdb := []byte{scsi.OpUnmap, 0, 0, 0, 0, 0, 0, 0, byte(len(p)), 0}
	requireGood(t, e.do(nxA, cdb, p), "unmap")
	assert.True(t, isZero(e.do(nxA, cdbRW16(scsi.OpRead16, 40, 10, 0), nil).DataIn))
	assert.Equal(t, block(0x5a), e.do(nxA, cdbRW16(scsi.OpRead16, 50, 1, 0), nil).DataIn, "between the extents")
	binary.BigEndian.PutUint64(p[24:], luBlocks-1)
	requireSense(t, e.do(nxA, cdb, p), scsi.SenseLBAOutOfRange, "unmap past end")
}

func TestCompareAndWrite(t *testing.T) {
	e := newEnv(t)
	e.ready(nxA)
	requireGood(t, e.do(nxA, cdbCAW(7, 1), append(block(0), block(1)...)), "caw match")
	assert.Equal(t, block(1), e.do(nxA, cdbRW16(scsi.OpRead16, 7, 1, 0), nil).DataIn)
	verify := block(1)
	verify[300] = 9
	r := e.do(nxA, cdbCAW(7, 1), append(verify, block(2)...))
	requireSense(t, r, scsi.SenseMiscompareDuringVerify, "caw miscompare")
	assert.Equal(t, byte(0xf0), r.Sense[0], "VALID")
	assert.Equal(t, uint32(300), binary.BigEndian.Uint32(r.Sense[3:]), "offset of the first miscompare")
	assert.Equal(t, block(1), e.do(nxA, cdbRW16(scsi.OpRead16, 7, 1, 0), nil).DataIn, "miscompare writes nothing")
	requireSense(t, e.do(nxA, cdbCAW(7, 1), block(1)), scsi.SenseInvalidFieldInCommandIU, "caw data short")
}

// TestCompareAndWriteAtomic: hosts increment a counter in one block with
// COMPARE AND WRITE (VMFS's lock pattern); plain writes to the same block
// race in between. No increment may be lost: each CAW's compare and write
// happen with nothing in between.
func TestCompareAndWriteAtomic(t *testing.T) {
	e := newEnv(t)
	hosts := []scsi.Nexus{nxA, nxB, nxC}
	e.ready(hosts...)
	const per = 40
	var wg sync.WaitGroup
	for _, n := range hosts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for done := 0; done < per; {
				cur := e.do(n, cdbRW16(scsi.OpRead16, 0, 1, 0), nil).DataIn
				next := bytes.Clone(cur)
				binary.BigEndian.PutUint64(next, binary.BigEndian.Uint64(cur)+1)
				r := e.do(n, cdbCAW(0, 1), append(bytes.Clone(cur), next...))
				if r.Status == scsi.StatusGood {
					done++
					continue
				}
				if s, _, _ := scsi.ParseSense(r.Sense); s != scsi.SenseMiscompareDuringVerify {
					t.Errorf("caw: status 0x%02x sense %s", uint8(r.Status), s)
					return
				}
			}
		}()
	}
	wg.Add(1)
	go func() { // a writer of other blocks and readers in between
		defer wg.Done()
		for i := 0; i < 100; i++ {
			e.do(nxA, cdbRW16(scsi.OpWrite16, 1, 1, 0), block(byte(i)))
		}
	}()
	wg.Wait()
	got := binary.BigEndian.Uint64(e.do(nxA, cdbRW16(scsi.OpRead16, 0, 1, 0), nil).DataIn)
	assert.Equal(t, uint64(per*len(hosts)), got, "increments lost")
}

func TestUnitAttentionLifecycle(t *testing.T) {
	e := newEnv(t)
	// First contact: power on; INQUIRY and REPORT LUNS neither report nor
	// clear it; REQUEST SENSE reports it as data and clears it.
	requireGood(t, e.do(nxA, scsi.CDBInquiry(false, 0, 36), nil), "inquiry")
	requireGood(t, e.do(nxA, []byte{scsi.OpReportLUNs, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0}, nil), "report luns")
	r := e.do(nxA, []byte{scsi.OpRequestSense, 0, 0, 0, 18, 0}, nil)
	requireGood(t, r, "request sense")
	s, _, err := scsi.ParseSense(r.DataIn)
	require.NoError(t, err)
	assert.Equal(t, scsi.SensePowerOnReset, s)
	requireGood(t, e.do(nxA, make([]byte, 6), nil), "TUR after request sense")
	r = e.do(nxA, []byte{scsi.OpRequestSense, 0, 0, 0, 18, 0}, nil)
	s, _, _ = scsi.ParseSense(r.DataIn)
	assert.Equal(t, ioerr.Sense{}, s, "no sense")

	// A TUR reports the unit attention and clears it.
	requireSense(t, e.do(nxB, make([]byte, 6), nil), scsi.SensePowerOnReset, "B first")
	requireGood(t, e.do(nxB, make([]byte, 6), nil), "B second")

	// An ALUA change: each nexus once.
	require.NoError(t, e.arr.TransferOwnership("B"))
	for _, n := range []scsi.Nexus{nxA, nxB} {
		requireSense(t, e.do(n, cdbRW16(scsi.OpRead16, 0, 1, 0), nil), ioerr.SenseAccessChanged, "after transfer")
		requireGood(t, e.do(n, cdbRW16(scsi.OpRead16, 0, 1, 0), nil), "then reads")
	}

	// LUN reset: everybody, the issuer too, gets 29/03.
	e.h.Reset(nxA, scsi.TMFLUNReset, 0)
	requireSense(t, e.do(nxA, make([]byte, 6), nil), scsi.SenseBusDeviceReset, "issuer after LUN reset")
	requireSense(t, e.do(nxB, make([]byte, 6), nil), scsi.SenseBusDeviceReset, "other after LUN reset")
	// I_T nexus reset: 29/07 for that nexus.
	e.h.Reset(nxB, scsi.TMFITNexusReset, 0)
	requireSense(t, e.do(nxB, make([]byte, 6), nil), scsi.SenseNexusLossOccurred, "after I_T nexus reset")
	// A lost nexus starts over.
	e.h.NexusLost(nxA)
	requireSense(t, e.do(nxA, make([]byte, 6), nil), scsi.SensePowerOnReset, "after nexus loss")
	// Target reset: 29/00 to the others.
	e.h.Reset(nxA, scsi.TMFTargetWarmReset, 0)
	requireSense(t, e.do(nxB, make([]byte, 6), nil), scsi.SensePowerOnReset, "after target reset")
}

func TestALUAGating(t *testing.T) {
	e := newEnv(t)
	e.ready(nxA, nxB)
	read := cdbRW16(scsi.OpRead16, 0, 1, 0)
	requireGood(t, e.do(nxB, read, nil), "ANO port reads")

	require.NoError(t, e.arr.ForceTPGState(2, scsi.Standby))
	requireSense(t, e.do(nxB, read, nil), ioerr.SenseAccessChanged, "UA first")
	requireSense(t, e.do(nxB, read, nil), ioerr.SenseALUAStandby, "standby read")
	requireSense(t, e.do(nxB, make([]byte, 6), nil), ioerr.SenseALUAStandby, "standby TUR")
	requireGood(t, e.do(nxB, scsi.CDBInquiry(false, 0, 36), nil), "standby inquiry")
	requireGood(t, e.do(nxB, scsi.CDBReportTPGs(1024), nil), "standby RTPG")
	requireGood(t, e.do(nxB, []byte{scsi.OpModeSense6, 0, 0x3f, 0, 255, 0}, nil), "standby mode sense")
	requireGood(t, e.do(nxB, scsi.CDBPersistentReserveIn(scsi.PRInReadKeys, 100), nil), "standby PR IN")
	r := e.do(nxB, []byte{scsi.OpRequestSense, 0, 0, 0, 18, 0}, nil)
	s, _, _ := scsi.ParseSense(r.DataIn)
	assert.Equal(t, ioerr.SenseALUAStandby, s, "request sense tells why")

	require.NoError(t, e.arr.ForceTPGState(2, scsi.Unavailable))
	e.ready(nxB)
	requireSense(t, e.do(nxB, read, nil), ioerr.SenseALUAUnavailable, "unavailable")
	requireSense(t, e.do(nxB, []byte{scsi.OpModeSense6, 0, 0x3f, 0, 255, 0}, nil), ioerr.SenseALUAUnavailable, "unavailable mode sense")

	require.NoError(t, e.arr.FailController("B"))
	e.ready(nxB)
	requireSense(t, e.do(nxB, read, nil), senseALUAOffline, "offline")

	// RTPG from A: group 1 AO (preferred), group 2 offline.
	e.ready(nxA)
	r = e.do(nxA, scsi.CDBReportTPGs(1024), nil)
	requireGood(t, r, "rtpg")
	rt, err := scsi.ParseRTPG(r.DataIn)
	require.NoError(t, err)
	require.Len(t, rt.Groups, 2)
	assert.Equal(t, scsi.ActiveOptimized, rt.Groups[0].State)
	assert.True(t, rt.Groups[0].Pref)
	assert.Equal(t, []uint16{1, 2}, rt.Groups[0].Ports)
	assert.Equal(t, scsi.Offline, rt.Groups[1].State)
	r = e.do(nxA, append([]byte{scsi.OpMaintenanceIn, 0x2a}, scsi.CDBReportTPGs(1024)[2:]...), nil)
	rt, err = scsi.ParseRTPG(r.DataIn)
	require.NoError(t, err)
	assert.True(t, rt.Extended)
}

func TestSTPG(t *testing.T) {
	e := newEnv(t)
	e.ready(nxA, nxB)
	p := scsi.STPGParams(map[uint16]scsi.State{2: scsi.ActiveOptimized})
	requireGood(t, e.do(nxB, scsi.CDBSetTPGs(uint32(len(p))), p), "stpg")
	assert.Equal(t, "B", e.arr.Status().Owner)
	requireGood(t, e.do(nxB, cdbRW16(scsi.OpRead16, 0, 1, 0), nil), "sender: no UA for its own change")
	requireSense(t, e.do(nxA, cdbRW16(scsi.OpRead16, 0, 1, 0), nil), ioerr.SenseAccessChanged, "others: UA")
	bad := scsi.STPGParams(map[uint16]scsi.State{9: scsi.ActiveOptimized})
	requireSense(t, e.do(nxA, scsi.CDBSetTPGs(uint32(len(bad))), bad), scsi.SenseInvalidFieldInParamList, "unknown group")

	// Implicit-only and active/passive arrays refuse STPG and RTPG as SPC-4 says.
	ap := newEnv(t, func(c *ArrayConfig, _ *LUConfig) { c.Mode, c.Explicit = ModeAP, false })
	ap.ready(nxA, nxB)
	requireSense(t, ap.do(nxA, scsi.CDBReportTPGs(100), nil), scsi.SenseInvalidOpcode, "ap rtpg")
	requireSense(t, ap.do(nxA, scsi.CDBSetTPGs(uint32(len(p))), p), scsi.SenseInvalidOpcode, "ap stpg")
	requireSense(t, ap.do(nxB, cdbRW16(scsi.OpRead16, 0, 1, 0), nil), SensePassive, "passive controller")
	inq := ap.do(nxA, scsi.CDBInquiry(false, 0, 36), nil)
	assert.Equal(t, byte(0), inq.DataIn[5]&0x30, "TPGS 0")
}

func TestHandlerWithoutArray(t *testing.T) {
	h, err := NewHandler(HandlerConfig{}, luStore(t, 1<<20), luStore(t, 1<<20))
	require.NoError(t, err)
	assert.Equal(t, []uint64{0, 1}, h.LUNs(nxA))
	do := func(lun uint64, cdb []byte) scsi.Response {
		return h.Execute(context.Background(), &scsi.Command{Nexus: nxA, LUN: lun, CDB: cdb, DataInLen: 4096})
	}
	requireSense(t, do(1, make([]byte, 6)), scsi.SensePowerOnReset, "UA per LU")
	requireGood(t, do(1, make([]byte, 6)), "then ready")
	r := do(1, scsi.CDBInquiry(true, 0x83, 1024))
	ds, err := scsi.ParseVPD83(r.DataIn)
	require.NoError(t, err)
	w1 := scsi.WWIDFromDesignators(ds)
	r = do(0, scsi.CDBInquiry(true, 0x83, 1024))
	ds, _ = scsi.ParseVPD83(r.DataIn)
	assert.NotEqual(t, w1, scsi.WWIDFromDesignators(ds), "each LU its own WWID")
	do(0, make([]byte, 6))
	requireSense(t, do(0, scsi.CDBReportTPGs(100)), scsi.SenseInvalidOpcode, "no ALUA")
}

func TestUnitsAddRemoveResize(t *testing.T) {
	e := newEnv(t)
	e.ready(nxA)
	u := e.h.Units()
	require.Len(t, u, 1)
	assert.Equal(t, uint64(luBlocks), u[0].Blocks)
	assert.Equal(t, e.arr.Config().WWID, u[0].WWID)

	require.NoError(t, e.h.AddLU(LUConfig{LUN: 5}, luStore(t, 1<<20)))
	require.ErrorContains(t, e.h.AddLU(LUConfig{LUN: 5}, luStore(t, 1<<20)), "exists already")
	assert.Equal(t, []uint64{0, 5}, e.h.LUNs(nxA))
	requireSense(t, e.do(nxA, make([]byte, 6), nil), scsi.SenseReportedLUNsChanged, "LU 0 tells")
	r := e.do(nxA, []byte{scsi.OpReportLUNs, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0}, nil)
	assert.Equal(t, byte(16), r.DataIn[3])
	assert.Equal(t, byte(5), r.DataIn[17])

	require.NoError(t, e.h.RemoveLU(5))
	require.ErrorContains(t, e.h.RemoveLU(5), "no logical unit 5")
	// REPORT LUNS clears the condition without reporting it.
	requireGood(t, e.do(nxA, []byte{scsi.OpReportLUNs, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0}, nil), "report luns")
	requireGood(t, e.do(nxA, make([]byte, 6), nil), "cleared by REPORT LUNS")

	require.NoError(t, e.h.Resize(0), "same size: nothing")
	requireGood(t, e.do(nxA, make([]byte, 6), nil), "no UA")
	l := e.h.lu(0)
	l.nblk.Store(10)
	require.NoError(t, e.h.Resize(0))
	requireSense(t, e.do(nxA, make([]byte, 6), nil), scsi.SenseCapacityDataChanged, "capacity changed")
}

func TestTransferLength(t *testing.T) {
	e := newEnv(t)
	for _, tc := range []struct {
		cdb  []byte
		want int
		ok   bool
	}{
		{cdbRW10(scsi.OpRead10, 0, 8, 0), 4096, true},
		{cdbRW16(scsi.OpWrite16, 0, 2, 0), 1024, true},
		{[]byte{scsi.OpWrite6, 0, 0, 0, 0, 0}, 256 * 512, true},
		{cdbRW16(scsi.OpVerify16, 0, 2, 0), 0, true},
		{cdbRW16(scsi.OpVerify16, 0, 2, 0x02), 1024, true},
		{cdbRW16(scsi.OpWriteSame16, 0, 100, 0x01), 0, true},
		{cdbRW10(scsi.OpWriteSame10, 0, 100, 0), 512, true},
		{cdbCAW(0, 2), 2048, true},
		{cdbCAW(0, 0), 0, false},
		{scsi.CDBPersistentReserveOut(scsi.PROutRegister, 0, 24), 24, true},
		{scsi.CDBSetTPGs(8), 8, true},
		{[]byte{scsi.OpUnmap, 0, 0, 0, 0, 0, 0, 0, 24, 0}, 24, true},
		{make([]byte, 6), 0, true},
		{scsi.CDBInquiry(false, 0, 96), 0, false},
		{cdbRW16(scsi.OpRead16, 0, 1, 0)[:8], 0, false},
	} {
		n, ok := e.h.TransferLength(nxA, 0, tc.cdb)
		assert.Equal(t, tc.ok, ok, "% x", tc.cdb)
		assert.Equal(t, tc.want, n, "% x", tc.cdb)
	}
	_, ok := e.h.TransferLength(nxA, 9, cdbRW10(scsi.OpRead10, 0, 1, 0))
	assert.False(t, ok, "unknown LUN")
}

// TestALUATransition: an explicit STPG moves through transitioning for the
// configured period: commands through the moving groups get 02/04/0A, then
// run, after one unit attention per state change.
func TestALUATransition(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newEnv(t, func(c *ArrayConfig, _ *LUConfig) { c.Transition = 2 * time.Second })
		e.ready(nxA, nxB)
		p := scsi.STPGParams(map[uint16]scsi.State{2: scsi.ActiveOptimized})
		requireGood(t, e.do(nxB, scsi.CDBSetTPGs(uint32(len(p))), p), "stpg")
		read := cdbRW16(scsi.OpRead16, 0, 1, 0)
		requireSense(t, e.do(nxA, read, nil), ioerr.SenseAccessChanged, "A: UA")
		requireSense(t, e.do(nxA, read, nil), ioerr.SenseALUATransitioning, "A: transitioning")
		requireGood(t, e.do(nxA, scsi.CDBReportTPGs(1024), nil), "RTPG while transitioning")
		time.Sleep(3 * time.Second)
		requireSense(t, e.do(nxA, read, nil), ioerr.SenseAccessChanged, "A: UA for the end of the transition")
		requireGood(t, e.do(nxA, read, nil), "A reads (ANO now)")
		r := e.do(nxA, scsi.CDBReportTPGs(1024), nil)
		rt, err := scsi.ParseRTPG(r.DataIn)
		require.NoError(t, err)
		assert.Equal(t, scsi.ActiveNonOptimized, rt.Groups[0].State)
		assert.Equal(t, scsi.ActiveOptimized, rt.Groups[1].State)
	})
}

// TestTrespassOnIO: an active/passive array with trespass_on_io moves the
// LU to the controller of the port a read or write came through and runs
// it; TEST UNIT READY passes on the passive port; the sender gets no unit
// attention for its own trespass, the other nexuses get 2A/06; two
// initiators alternating between the controllers move the LU every time
// (path thrashing), and the array counts the trespasses.
func TestTrespassOnIO(t *testing.T) {
	e := newEnv(t, func(c *ArrayConfig, _ *LUConfig) { c.Mode, c.Explicit, c.TrespassOnIO = ModeAP, false, true })
	e.ready(nxA, nxB)
	requireGood(t, e.do(nxB, make([]byte, 6), nil), "TUR through the passive port")
	assert.Equal(t, "A", e.arr.Status().Owner)
	requireGood(t, e.do(nxB, cdbRW16(scsi.OpRead16, 0, 1, 0), nil), "a read through B's port trespasses")
	assert.Equal(t, "B", e.arr.Status().Owner)
	requireGood(t, e.do(nxB, cdbRW16(scsi.OpRead16, 0, 1, 0), nil), "the trespasser: no UA for its own trespass")
	requireSense(t, e.do(nxA, cdbRW16(scsi.OpRead16, 0, 1, 0), nil), ioerr.SenseAccessChanged, "the others: UA")
	before := e.arr.Status().Trespasses
	for i := range 4 {
		n := nxA
		if i%2 == 1 {
			n = nxB
		}
		r := e.do(n, cdbRW16(scsi.OpRead16, 0, 1, 0), nil)
		if r.Status == scsi.StatusCheckCondition {
			requireSense(t, r, ioerr.SenseAccessChanged, "ping-pong")
			r = e.do(n, cdbRW16(scsi.OpRead16, 0, 1, 0), nil)
		}
		requireGood(t, r, "ping-pong read")
	}
	assert.Equal(t, before+4, e.arr.Status().Trespasses, "every read through the other controller trespassed")

	_, err := New(func() ArrayConfig { c := DefaultLabArray(); c.TrespassOnIO = true; return c }())
	require.ErrorContains(t, err, "trespass_on_io needs mode ap")
}

// TestTrespassOnIORace: two initiators hammer reads through the two
// controllers at once. Every read either runs or reports the unit
// attention of the other's trespass; none meets its own port passive
// (02/04/03) because the other host moved the LU back between this
// command's trespass and its admission.
func TestTrespassOnIORace(t *testing.T) {
	e := newEnv(t, func(c *ArrayConfig, _ *LUConfig) { c.Mode, c.Explicit, c.TrespassOnIO = ModeAP, false, true })
	e.ready(nxA, nxB)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var bad []string
	oneProc := runtime.GOMAXPROCS(0) == 1
	for _, n := range []scsi.Nexus{nxA, nxB} {
		wg.Go(func() {
			for range 2000 {
				if oneProc {
					runtime.Gosched() // else one runs its 2000 reads before the other starts
				}
				r := e.h.Execute(context.Background(), &scsi.Command{Nexus: n, CDB: cdbRW16(scsi.OpRead16, 0, 1, 0), DataInLen: 512})
				if r.Status == scsi.StatusGood {
					continue
				}
				s, _, err := scsi.ParseSense(r.Sense)
				if err == nil && s.Key == ioerr.SenseUnitAttention {
					continue
				}
				mu.Lock()
				bad = append(bad, fmt.Sprintf("status %#x sense %x", r.Status, r.Sense))
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	assert.Empty(t, bad, "reads that met their own port passive after trespassing")
	assert.Greater(t, e.arr.Status().Trespasses, uint64(2))
}
