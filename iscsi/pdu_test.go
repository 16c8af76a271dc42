package iscsi

import (
	"bytes"
	"errors"
	"io"
	"testing"
	"testing/iotest"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// every message with every field set to a distinct non-zero value.
func sampleMessages() []Message {
	cdb := [16]byte{0x28, 0, 0, 0, 0, 8, 0, 0, 1, 0}
	return []Message{
		&NOPOut{Immediate: true, LUN: EncodeLUN(3), ITT: 1, TTT: 2, CmdSN: 3, ExpStatSN: 4},
		&NOPIn{LUN: EncodeLUN(1), ITT: 5, TTT: 6, StatSN: 7, ExpCmdSN: 8, MaxCmdSN: 9},
		&SCSICommand{Immediate: true, Final: true, Read: true, Write: true, Attr: 2, LUN: EncodeLUN(7), ITT: 10,
			ExpectedDataTransferLength: 4096, CmdSN: 11, ExpStatSN: 12, CDB: cdb},
		&SCSIResponse{BidiOverflow: true, BidiUnderflow: true, Overflow: true, Underflow: true, Response: 1, Status: 2,
			ITT: 13, SNACKTag: 14, StatSN: 15, ExpCmdSN: 16, MaxCmdSN: 17, ExpDataSN: 18, BidiResidual: 19, Residual: 20},
		&TMFRequest{Immediate: true, Function: TMFLogicalUnitReset, LUN: EncodeLUN(2), ITT: 21, ReferencedTag: 22,
			CmdSN: 23, ExpStatSN: 24, RefCmdSN: 25, ExpDataSN: 26},
		&TMFResponse{Response: TMFRespNoTask, ITT: 27, StatSN: 28, ExpCmdSN: 29, MaxCmdSN: 30},
		&LoginRequest{Transit: true, Continue: false, CSG: StageOperational, NSG: StageFullFeature, VersionMax: 0, VersionMin: 0,
			ISID: [6]byte{0x80, 1, 2, 3, 4, 5}, TSIH: 31, ITT: 32, CID: 33, CmdSN: 34, ExpStatSN: 35},
		&LoginResponse{Transit: false, Continue: true, CSG: StageSecurity, NSG: StageOperational, VersionMax: 0, VersionActive: 0,
			ISID: [6]byte{0x40, 9, 8, 7, 6, 5}, TSIH: 36, ITT: 37, StatSN: 38, ExpCmdSN: 39, MaxCmdSN: 40, Status: LoginAuthFailed},
		&TextRequest{Immediate: true, Final: true, Continue: true, LUN: EncodeLUN(0), ITT: 41, TTT: 42, CmdSN: 43, ExpStatSN: 44},
		&TextResponse{Final: true, Continue: true, LUN: EncodeLUN(1), ITT: 45, TTT: 46, StatSN: 47, ExpCmdSN: 48, MaxCmdSN: 49},
		&DataOut{Final: true, LUN: EncodeLUN(4), ITT: 50, TTT: 51, ExpStatSN: 52, DataSN: 53, Offset: 54},
		&DataIn{Final: true, Ack: true, Overflow: true, Underflow: true, HasStatus: true, Status: 2, LUN: EncodeLUN(5), ITT: 55,
			TTT: 56, StatSN: 57, ExpCmdSN: 58, MaxCmdSN: 59, DataSN: 60, Offset: 61, Residual: 62},
		&LogoutRequest{Immediate: true, Reason: LogoutCloseConnection, ITT: 63, CID: 64, CmdSN: 65, ExpStatSN: 66},
		&LogoutResponse{Response: 1, ITT: 67, StatSN: 68, ExpCmdSN: 69, MaxCmdSN: 70, Time2Wait: 71, Time2Retain: 72},
		&R2T{LUN: EncodeLUN(6), ITT: 73, TTT: 74, StatSN: 75, ExpCmdSN: 76, MaxCmdSN: 77, R2TSN: 78, Offset: 79, Length: 80},
		&AsyncMessage{LUN: EncodeLUN(1), StatSN: 81, ExpCmdSN: 82, MaxCmdSN: 83, Event: AsyncLogoutRequest, VendorCode: 84,
			Parameter1: 85, Parameter2: 86, Parameter3: 87},
		&Reject{Reason: RejectProtocolError, StatSN: 88, ExpCmdSN: 89, MaxCmdSN: 90, DataSN: 91},
		&SNACKRequest{Type: 1, LUN: EncodeLUN(1), ITT: 92, TTT: 93, ExpStatSN: 94, BegRun: 95, RunLength: 96},
	}
}

func TestMessagesRoundTrip(t *testing.T) {
	seen := map[Opcode]bool{}
	for _, m := range sampleMessages() {
		var b BHS
		m.Encode(&b)
		assert.Equal(t, m.Op(), b.Opcode(), "%T encodes its own opcode", m)
		got := NewMessage(b.Opcode())
		require.NotNil(t, got, "NewMessage(%v)", b.Opcode())
		got.Decode(&b)
		assert.Equal(t, m, got, "%T survives encode/decode", m)
		seen[m.Op()] = true
	}
	for op := range opNames {
		assert.True(t, seen[op], "no round-trip sample for %v", op)
	}
	assert.Nil(t, NewMessage(0x3e))
	assert.False(t, Opcode(0x3e).Known())
	assert.Equal(t, "opcode 0x3e", Opcode(0x3e).String())
}

// The wire layout of a SCSI Command, byte by byte, as RFC 7143 11.3 draws it.
func TestSCSICommandLayout(t *testing.T) {
	m := &SCSICommand{Immediate: true, Final: true, Read: true, Attr: 1, LUN: EncodeLUN(1), ITT: 0x01020304,
		ExpectedDataTransferLength: 0x1000, CmdSN: 0x0a0b0c0d, ExpStatSN: 0x11121314, CDB: [16]byte{0x28}}
	var b BHS
	m.Encode(&b)
	want := BHS{0x41, 0xc1, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4, 0, 0, 0x10, 0, 0xa, 0xb, 0xc, 0xd, 0x11, 0x12, 0x13, 0x14, 0x28}
	assert.Equal(t, want, b)
}

func TestLUNEncoding(t *testing.T) {
	for _, lun := range []uint64{0, 1, 255, 256, 1000, 16383} {
		got, ok := DecodeLUN(EncodeLUN(lun))
		assert.True(t, ok, "lun %d", lun)
		assert.Equal(t, lun, got)
	}
	assert.Equal(t, uint64(0x0001000000000000), EncodeLUN(1))
	assert.Equal(t, uint64(0x4100000000000000), EncodeLUN(256))
	_, ok := DecodeLUN(0x0001000000000001) // second level
	assert.False(t, ok)
	_, ok = DecodeLUN(0xc000000000000000) // extended addressing
	assert.False(t, ok)
}

// RFC 3720 B.4 (kept by RFC 7143): 32 bytes of zeros digest to aa 36 91 8a
// on the wire.
func TestCRC32CVector(t *testing.T) {
	assert.Equal(t, uint32(0x8a9136aa), CRC32C(make([]byte, 32)))
	ff := bytes.Repeat([]byte{0xff}, 32)
	assert.Equal(t, uint32(0x62a8ab43), CRC32C(ff))
	inc := make([]byte, 32)
	for i := range inc {
		inc[i] = byte(i)
	}
	assert.Equal(t, uint32(0x46dd794e), CRC32C(inc))
}

func framerPair(hd, dd bool) (*Framer, *bytes.Buffer) {
	var buf bytes.Buffer
	f := NewFramer(&buf, &buf, 0)
	f.HeaderDigest, f.DataDigest = hd, dd
	return f, &buf
}

func TestFramerRoundTrip(t *testing.T) {
	for _, dig := range []struct{ hd, dd bool }{{false, false}, {true, false}, {false, true}, {true, true}} {
		f, buf := framerPair(dig.hd, dig.dd)
		var out PDU
		for n := range 9 { // data lengths 0..8 exercise every padding
			data := bytes.Repeat([]byte{byte(n + 1)}, n)
			out.Encode(&DataOut{Final: true, ITT: uint32(n), Offset: uint32(n)}, data)
			if n == 5 {
				out.AHS = AppendAHS(out.AHS, AHSExtendedCDB, []byte{1, 2, 3, 4, 5})
			}
			require.NoError(t, f.WritePDU(&out))
		}
		wantLen := 0
		for n := range 9 {
			l := BHSLen + pad4(n)
			if n == 5 {
				l += 12
			}
			if dig.hd {
				l += 4
			}
			if dig.dd && n > 0 {
				l += 4
			}
			wantLen += l
		}
		assert.Equal(t, wantLen, buf.Len(), "bytes on the wire with digests %+v", dig)
		var in PDU
		for n := range 9 {
			require.NoError(t, f.ReadPDU(&in), "PDU %d", n)
			var m DataOut
			m.Decode(&in.BHS)
			assert.Equal(t, uint32(n), m.ITT)
			assert.Equal(t, string(bytes.Repeat([]byte{byte(n + 1)}, n)), string(in.Data))
			if n == 5 {
				var got []byte
				require.NoError(t, WalkAHS(in.AHS, func(typ uint8, s []byte) {
					assert.Equal(t, AHSExtendedCDB, typ)
					got = append(got, s...)
				}))
				assert.Equal(t, []byte{1, 2, 3, 4, 5}, got)
			} else {
				assert.Empty(t, in.AHS)
			}
		}
		assert.ErrorIs(t, f.ReadPDU(&in), io.EOF)
	}
}

// ReadPDU leaves a data segment that fits its read buffer in that buffer
// and copies a longer one; either way the data and its digest are right
// however the stream arrives (here a byte or half a buffer at a time, so
// that the buffer fills and slides between PDUs and within one).
func TestFramerReadSegmentsAcrossTheBuffer(t *testing.T) {
	sizes := []int{1, 4000, 4092, 4093, 4095, 4096, 5000, 9000, 3, 4090, 12000, 0, 4091}
	for _, dd := range []bool{false, true} {
		var wire bytes.Buffer
		w := NewFramer(nil, &wire, 0)
		w.DataDigest = dd
		var out PDU
		for i, n := range sizes {
			data := make([]byte, n)
			for j := range data {
				data[j] = byte(i*31 + j*7)
			}
			out.Encode(&DataOut{Final: true, ITT: uint32(i)}, data)
			require.NoError(t, w.WritePDU(&out))
		}
		for name, r := range map[string]func([]byte) io.Reader{
			"whole":    func(b []byte) io.Reader { return bytes.NewReader(b) },
			"one byte": func(b []byte) io.Reader { return iotest.OneByteReader(bytes.NewReader(b)) },
			"halves":   func(b []byte) io.Reader { return iotest.HalfReader(bytes.NewReader(b)) },
		} {
			f := NewFramer(r(wire.Bytes()), nil, 4096)
			f.DataDigest = dd
			var in PDU
			for i, n := range sizes {
				require.NoError(t, f.ReadPDU(&in), "%s, digest %v: PDU %d", name, dd, i)
				var m DataOut
				m.Decode(&in.BHS)
				require.Equal(t, uint32(i), m.ITT)
				require.Len(t, in.Data, n)
				for j, c := range in.Data {
					if c != byte(i*31+j*7) {
						t.Fatalf("%s, digest %v: PDU %d byte %d is %d, want %d", name, dd, i, j, c, byte(i*31+j*7))
					}
				}
			}
			assert.ErrorIs(t, f.ReadPDU(&in), io.EOF)
		}
	}
}

func TestFramerDigestErrors(t *testing.T) {
	f, buf := framerPair(true, true)
	var p PDU
	p.Encode(&NOPOut{ITT: 1}, []byte("ping"))
	require.NoError(t, f.WritePDU(&p))
	raw := append([]byte(nil), buf.Bytes()...)

	reader := func(b []byte) *Framer {
		r := NewFramer(bytes.NewReader(b), nil, 0)
		r.HeaderDigest, r.DataDigest = true, true
		return r
	}
	bad := append([]byte(nil), raw...)
	bad[20] ^= 1 // header
	assert.ErrorIs(t, reader(bad).ReadPDU(&p), ErrHeaderDigest)

	bad = append([]byte(nil), raw...)
	bad[BHSLen+4] ^= 1 // data
	require.ErrorIs(t, reader(bad).ReadPDU(&p), ErrDataDigest)
	assert.Equal(t, OpNOPOut, p.BHS.Opcode(), "the PDU is whole after a data digest error")

	assert.ErrorIs(t, reader(raw[:30]).ReadPDU(&p), io.ErrUnexpectedEOF)
	assert.ErrorIs(t, reader(raw[:len(raw)-2]).ReadPDU(&p), io.ErrUnexpectedEOF)
	require.NoError(t, reader(raw).ReadPDU(&p))
	assert.Equal(t, "ping", string(p.Data))
}

func TestFramerDataLimit(t *testing.T) {
	f, _ := framerPair(false, false)
	var p PDU
	p.Encode(&DataOut{}, make([]byte, 9000))
	require.NoError(t, f.WritePDU(&p))
	f.MaxRecvDataSegmentLength = 8192
	err := f.ReadPDU(&p)
	var tl *TooLongError
	require.ErrorAs(t, err, &tl)
	assert.Equal(t, 9000, tl.Length)
	assert.Contains(t, err.Error(), "MaxRecvDataSegmentLength")
}

func TestFramerRejectsBadAHS(t *testing.T) {
	f, _ := framerPair(false, false)
	p := PDU{AHS: []byte{1, 2, 3}}
	assert.ErrorContains(t, f.WritePDU(&p), "multiple of 4")
	assert.Error(t, WalkAHS([]byte{0, 9, 1, 0, 1, 2, 3, 4}, func(uint8, []byte) {}))
	assert.Error(t, WalkAHS([]byte{0, 1}, func(uint8, []byte) {}))
}

// Reading and writing PDUs allocates nothing once the buffers have grown.
func TestFramerAllocations(t *testing.T) {
	var buf bytes.Buffer
	buf.Grow(1 << 16)
	f := NewFramer(&buf, &buf, 1<<16)
	f.HeaderDigest, f.DataDigest = true, true
	data := make([]byte, 4096)
	var out, in PDU
	msg := &DataIn{Final: true, ITT: 1}
	step := func() {
		out.Encode(msg, data)
		if err := f.WritePDU(&out); err != nil {
			t.Fatal(err)
		}
		if err := f.ReadPDU(&in); err != nil {
			t.Fatal(err)
		}
	}
	step()
	allocs := testing.AllocsPerRun(100, step)
	assert.Zero(t, allocs, "allocations per PDU written and read")
}

func TestParseText(t *testing.T) {
	tx, err := ParseText([]byte("InitiatorName=iqn.2026-01.org.x:y\x00SessionType=Normal\x00AuthMethod=CHAP,None\x00\x00\x00"))
	require.NoError(t, err)
	assert.Equal(t, Text{{"InitiatorName", "iqn.2026-01.org.x:y"}, {"SessionType", "Normal"}, {"AuthMethod", "CHAP,None"}}, tx)
	v, ok := tx.Get("SessionType")
	assert.True(t, ok)
	assert.Equal(t, "Normal", v)
	again, err := ParseText(tx.Marshal())
	require.NoError(t, err)
	assert.Equal(t, tx, again)
	assert.Equal(t, "InitiatorName=iqn.2026-01.org.x:y SessionType=Normal AuthMethod=CHAP,None", tx.String())

	// The last pair without its NUL, an empty value.
	tx, err = ParseText([]byte("A=\x00B=2"))
	require.NoError(t, err)
	assert.Equal(t, Text{{"A", ""}, {"B", "2"}}, tx)

	for _, bad := range []string{
		"NoEquals\x00", "=v\x00", "A=1\x00A=2\x00", "Bad Key=1\x00", "A=1\x00\x00B=2\x00",
		string(bytes.Repeat([]byte("K"), 64)) + "=1\x00", "K=" + string(bytes.Repeat([]byte("v"), MaxValueLen+1)),
	} {
		_, err := ParseText([]byte(bad))
		var te *TextError
		assert.ErrorAs(t, err, &te, "%.40q", bad)
	}
}

func TestParseNumberBool(t *testing.T) {
	for s, want := range map[string]uint32{"0": 0, "8192": 8192, "0x2000": 8192, "0XfF": 255, "4294967295": 1<<32 - 1} {
		v, err := ParseNumber(s)
		require.NoError(t, err, s)
		assert.Equal(t, want, v, s)
	}
	for _, s := range []string{"", "-1", "+1", "0x", "12a", "4294967296", "1.5"} {
		_, err := ParseNumber(s)
		assert.Error(t, err, s)
	}
	b, err := ParseBool("Yes")
	assert.NoError(t, err)
	assert.True(t, b)
	_, err = ParseBool("yes")
	assert.Error(t, err)
	assert.Equal(t, "No", FormatBool(false))
}

// FuzzReadPDU feeds arbitrary bytes to the PDU reader (with and without
// digests) and to every message decoder: no panic, no endless loop, and a
// PDU that was read re-encodes to the same header.
func FuzzReadPDU(f *testing.F) {
	for _, m := range sampleMessages() {
		var w bytes.Buffer
		fr := NewFramer(nil, &w, 0)
		var p PDU
		p.Encode(m, []byte("Key=Value\x00"))
		if err := fr.WritePDU(&p); err != nil {
			f.Fatal(err)
		}
		f.Add(w.Bytes(), false)
	}
	f.Add(make([]byte, 52), true)
	f.Fuzz(func(t *testing.T, data []byte, digests bool) {
		fr := NewFramer(bytes.NewReader(data), io.Discard, 0)
		fr.HeaderDigest, fr.DataDigest = digests, digests
		fr.MaxRecvDataSegmentLength = 1 << 16
		var p PDU
		for range 8 {
			err := fr.ReadPDU(&p)
			if err != nil && !errors.Is(err, ErrDataDigest) {
				return
			}
			_ = WalkAHS(p.AHS, func(uint8, []byte) {})
			m := NewMessage(p.BHS.Opcode())
			if m == nil {
				continue
			}
			m.Decode(&p.BHS)
			var again BHS
			m.Encode(&again)
			again2 := NewMessage(p.BHS.Opcode())
			again2.Decode(&again)
			if !assert.Equal(t, m, again2, "decode(encode(decode(x))) == decode(x)") {
				return
			}
			if p.BHS.Opcode() == OpLoginReq || p.BHS.Opcode() == OpTextReq {
				_, _ = ParseText(p.Data)
			}
		}
	})
}

// FuzzParseText checks the key=value parser: no panic, and what it accepts
// marshals back to text it parses the same way.
func FuzzParseText(f *testing.F) {
	f.Add([]byte("InitiatorName=iqn.x\x00SessionType=Normal\x00"))
	f.Add([]byte("CHAP_A=5\x00CHAP_N=user\x00CHAP_R=0x0102\x00"))
	f.Add([]byte("A=\x00\x00"))
	f.Fuzz(func(t *testing.T, data []byte) {
		tx, err := ParseText(data)
		if err != nil {
			return
		}
		again, err := ParseText(tx.Marshal())
		require.NoError(t, err)
		if len(tx) == 0 {
			assert.Empty(t, again)
			return
		}
		assert.Equal(t, tx, again)
	})
}
