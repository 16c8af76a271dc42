package scsi

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestPRTypes(t *testing.T) {
	valid := 0
	for i := 0; i < 16; i++ {
		pt := PRType(i)
		if !pt.Valid() {
			continue
		}
		valid++
		back, err := ParsePRType(pt.String())
		require.NoError(t, err)
		assert.Equal(t, pt, back)
	}
	assert.Equal(t, 6, valid)
	assert.True(t, PRExclusiveAccessAllReg.AllRegistrants())
	assert.True(t, PRWriteExclusiveRegOnly.RegistrantsOnly())
	assert.False(t, PRWriteExclusive.ExclusiveAccess())
	_, err := ParsePRType("XX")
	require.ErrorContains(t, err, "want WE, EA")
}

func TestPROutParamsRoundTrip(t *testing.T) {
	p := PROutParams{Key: 0x1122, SAKey: 0x3344, AllTgPt: true, APTPL: true}
	got, err := ParsePROutParams(p.Encode())
	require.NoError(t, err)
	assert.Equal(t, p, got)
	_, err = ParsePROutParams(make([]byte, 23))
	require.ErrorContains(t, err, "want at least 24")
}

func TestTransportID(t *testing.T) {
	for _, tid := range []TransportID{{Name: "iqn.2026-01.test:a"}, {Name: "iqn.2026-01.test:b", ISID: "400001370000"}} {
		b := tid.Encode()
		assert.Zero(t, len(b)%4, "padded to 4")
		got, n, err := ParseTransportID(b)
		require.NoError(t, err)
		assert.Equal(t, len(b), n)
		assert.Equal(t, tid, got)
	}
	_, _, err := ParseTransportID([]byte{0x01, 0, 0, 4, 'a', 0, 0, 0})
	require.ErrorContains(t, err, "only iSCSI")
	_, _, err = ParseTransportID([]byte{0x45, 0, 0, 8, 'a', ',', 'i', ',', '0', 'x', 'z', 0})
	require.Error(t, err)

	m := RegisterAndMoveParams{Key: 1, SAKey: 2, Unreg: true, RelativeTargetPort: 3, TransportID: TransportID{Name: "iqn.x", ISID: "0123456789ab"}}
	got, err := ParseRegisterAndMove(m.Encode())
	require.NoError(t, err)
	assert.Equal(t, m, got)
}

func TestFixedSense(t *testing.T) {
	b := SenseData{Sense: SenseMiscompareDuringVerify, Info: 0x01020304, InfoValid: true}.Fixed()
	require.Len(t, b, FixedSenseLen)
	assert.Equal(t, byte(0xf0), b[0])
	assert.Equal(t, []byte{1, 2, 3, 4}, b[3:7])
	assert.Equal(t, byte(0x0e), b[2])
	assert.Equal(t, byte(10), b[7])
	assert.Equal(t, []byte{0x1d, 0x00}, b[12:14])

	f := InvalidCDBField(2, 5).Fixed()
	assert.Equal(t, byte(0x80|0x40|0x08|5), f[15])
	assert.Equal(t, []byte{0, 2}, f[16:18])
	p := InvalidParamField(20).Fixed()
	assert.Equal(t, byte(0x80), p[15])
	assert.Equal(t, []byte{0x05, 0x26}, []byte{p[2], p[12]})
}

func TestCDBLength(t *testing.T) {
	assert.Equal(t, 6, CDBLength(OpInquiry))
	assert.Equal(t, 10, CDBLength(OpRead10))
	assert.Equal(t, 10, CDBLength(OpPersistentReserveOut))
	assert.Equal(t, 16, CDBLength(OpRead16))
	assert.Equal(t, 12, CDBLength(OpReportLUNs))
	assert.Equal(t, 0, CDBLength(0xc0))
}

func TestVPDAndModePages(t *testing.T) {
	bl := BuildVPDBlockLimits(BlockLimits{MaxCompareAndWrite: 1, MaxTransfer: 2048, MaxWriteSame: 1 << 20})
	require.Len(t, bl, 64)
	assert.Equal(t, []byte{0, 0xb0, 0, 0x3c}, bl[:4])
	assert.Equal(t, byte(1), bl[5])
	lbp := BuildVPDProvisioning(Provisioning{LBPU: true, LBPWS: true, LBPWS10: true, LBPRZ: true, Type: 2})
	assert.Equal(t, []byte{0, 0xb2, 0, 4, 0, 0xe4, 2, 0}, lbp)
	d := AppendDesignator(nil, ProtocolISCSI, 1, true, 1, 4, []byte{0, 0, 0, 7})
	assert.Equal(t, []byte{0x51, 0x94, 0, 4, 0, 0, 0, 7}, d)

	ms6 := BuildModeSense6(ModeDeviceDPOFUA, BuildShortBlockDescriptor(1<<40, 512), BuildCachingPage(true, false))
	assert.Equal(t, byte(len(ms6)-1), ms6[0])
	assert.Equal(t, byte(8), ms6[3])
	assert.Equal(t, []byte{0xff, 0xff, 0xff, 0xff}, ms6[4:8], "saturated block count")
	assert.Equal(t, byte(0x04), ms6[12+2], "WCE")
	ms10 := BuildModeSense10(0, BuildLongBlockDescriptor(100, 4096), BuildControlPage(false, false))
	assert.Equal(t, byte(1), ms10[4], "LONGLBA")
	assert.Equal(t, len(ms10)-2, int(ms10[0])<<8|int(ms10[1]))
}

// FuzzPRParams: the PERSISTENT RESERVE OUT parameter list parsers never
// panic, and what they accept encodes back to something they accept alike.
func FuzzPRParams(f *testing.F) {
	f.Add(PROutParams{Key: 1, SAKey: 2, APTPL: true}.Encode())
	f.Add(RegisterAndMoveParams{Key: 1, SAKey: 2, RelativeTargetPort: 3, TransportID: TransportID{Name: "iqn.x", ISID: "0123456789ab"}}.Encode())
	f.Add(TransportID{Name: "iqn.2026-01.test:a"}.Encode())
	f.Fuzz(func(t *testing.T, b []byte) {
		if p, err := ParsePROutParams(b); err == nil && !p.SpecIPT {
			q, err := ParsePROutParams(p.Encode())
			if err != nil || q.Key != p.Key || q.SAKey != p.SAKey || q.AllTgPt != p.AllTgPt || q.APTPL != p.APTPL {
				t.Fatalf("round trip: %+v -> %+v (%v)", p, q, err)
			}
		}
		if m, err := ParseRegisterAndMove(b); err == nil {
			back, err := ParseRegisterAndMove(m.Encode())
			if err != nil || back != m {
				t.Fatalf("round trip: %+v -> %+v (%v)", m, back, err)
			}
		}
		if tid, n, err := ParseTransportID(b); err == nil && (n < 4 || n > len(b) || tid.Name == "") {
			t.Fatalf("TransportID %+v of length %d from %d bytes", tid, n, len(b))
		}
	})
}
