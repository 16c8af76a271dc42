package scsi

import (
	"bytes"
	"encoding/binary"
	"testing"
)

// designator builds one designation descriptor.
func designator(proto, codeSet byte, piv bool, assoc, typ byte, value []byte) []byte {
	b1 := assoc<<4 | typ
	if piv {
		b1 |= 0x80
	}
	return append([]byte{proto<<4 | codeSet, b1, 0, byte(len(value))}, value...)
}

func vpd83(ds ...[]byte) []byte {
	b := []byte{0x00, 0x83, 0, 0}
	for _, d := range ds {
		b = append(b, d...)
	}
	binary.BigEndian.PutUint16(b[2:], uint16(len(b)-4))
	return b
}

var (
	naa16   = []byte{0x60, 0x01, 0x40, 0x5a, 0xbc, 0xde, 0xf0, 0x12, 0x34, 0x56, 0x78, 0x9a, 0xbc, 0xde, 0xf0, 0x12}
	naa8    = []byte{0x50, 0x01, 0x40, 0x5a, 0xbc, 0xde, 0xf0, 0x12}
	eui64   = []byte{0x00, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77}
	desNAA  = designator(0, CodeSetBinary, false, AssocLU, DesigNAA, naa16)
	desNAA8 = designator(0, CodeSetBinary, false, AssocLU, DesigNAA, naa8)
	desEUI  = designator(0, CodeSetBinary, false, AssocLU, DesigEUI64, eui64)
	desT10  = designator(0, CodeSetASCII, false, AssocLU, DesigT10, []byte("LIO-ORG disk0   "))
	desPort = designator(6, CodeSetBinary, true, AssocTargetPort, DesigRelativePort, []byte{0, 0, 0x00, 0x02})
	desTPG  = designator(0, CodeSetBinary, false, AssocTargetPort, DesigTPG, []byte{0, 0, 0x01, 0x02})
	// An NAA naming the target port, not the LU: never the WWID.
	desPortNAA = designator(6, CodeSetBinary, true, AssocTargetPort, DesigNAA, naa8)

	vpd83Full = vpd83(desPortNAA, desT10, desEUI, desNAA8, desNAA, desPort, desTPG)
)

func TestParseVPD83(t *testing.T) {
	ds, err := ParseVPD83(vpd83Full)
	if err != nil {
		t.Fatal(err)
	}
	if len(ds) != 7 {
		t.Fatalf("%d designators, want 7", len(ds))
	}
	if d := ds[0]; d.ProtocolID != 6 || d.CodeSet != CodeSetBinary || !d.PIV || d.Association != AssocTargetPort || d.Type != DesigNAA || !bytes.Equal(d.Value, naa8) {
		t.Errorf("designator 0 = %+v", d)
	}
	if d := ds[1]; d.CodeSet != CodeSetASCII || d.PIV || d.Association != AssocLU || d.Type != DesigT10 || string(d.Value) != "LIO-ORG disk0   " {
		t.Errorf("designator 1 = %+v", d)
	}
	pi, ok := PortFromDesignators(ds)
	if !ok || pi != (PortInfo{TPG: 0x102, RelativePort: 2}) {
		t.Errorf("PortFromDesignators = %+v, %v", pi, ok)
	}

	for _, c := range []struct {
		name string
		page []byte
		want string
	}{
		{"NAA 16 bytes beats everything", vpd83Full, "naa.6001405abcdef0123456789abcdef012"},
		{"the longer NAA wins", vpd83(desNAA8, desNAA), "naa.6001405abcdef0123456789abcdef012"},
		{"NAA 8 bytes", vpd83(desT10, desNAA8, desEUI), "naa.5001405abcdef012"},
		{"EUI-64 before T10", vpd83(desT10, desEUI), "eui.0011223344556677"},
		{"T10, trailing blanks trimmed", vpd83(desT10, desPortNAA), "t10.LIO-ORG disk0"},
		{"port NAA only", vpd83(desPortNAA, desPort, desTPG), ""},
		{"SCSI name string", vpd83(designator(0, CodeSetUTF8, false, AssocLU, DesigSCSIName, []byte("iqn.2003-01.org.example:lu0\x00\x00"))), "iqn.2003-01.org.example:lu0"},
		{"empty page", vpd83(), ""},
	} {
		ds, err := ParseVPD83(c.page)
		if err != nil {
			t.Errorf("%s: %v", c.name, err)
			continue
		}
		if got := WWIDFromDesignators(ds); got != c.want {
			t.Errorf("%s: WWID %q, want %q", c.name, got, c.want)
		}
	}

	if _, ok := PortFromDesignators(mustVPD83(t, vpd83(desNAA, desPort))); ok {
		t.Error("PortFromDesignators without a TPG designator: ok")
	}

	overrun := vpd83(desNAA)
	overrun[7] = 40 // designator length beyond the page
	long := vpd83(desNAA)
	long[3] += 4 // page length beyond the buffer
	for _, c := range []struct {
		name string
		page []byte
	}{
		{"designator overruns", overrun},
		{"page length beyond the data", long},
		{"trailing bytes, too few for a header", vpd83(desNAA, []byte{1, 2})},
		{"wrong page", []byte{0, 0x80, 0, 0}},
		{"too short", []byte{0, 0x83}},
	} {
		if _, err := ParseVPD83(c.page); err == nil {
			t.Errorf("%s: no error", c.name)
		}
	}
}

func mustVPD83(t *testing.T, b []byte) []Designator {
	t.Helper()
	ds, err := ParseVPD83(b)
	if err != nil {
		t.Fatal(err)
	}
	return ds
}

func TestParseVPD80(t *testing.T) {
	page := append([]byte{0, 0x80, 0, 12}, []byte("  SN-0001234")...)
	if s, err := ParseVPD80(page); err != nil || s != "SN-0001234" {
		t.Errorf("ParseVPD80 = %q, %v", s, err)
	}
	if _, err := ParseVPD80(page[:10]); err == nil {
		t.Error("a truncated VPD 0x80 page parsed")
	}
	if _, err := ParseVPD80([]byte{0, 0x83, 0, 0}); err == nil {
		t.Error("VPD 0x83 parsed as 0x80")
	}
}

func FuzzVPD83(f *testing.F) {
	for _, s := range vpd83Seeds() {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		ds, err := ParseVPD83(b)
		total := 4
		for _, d := range ds {
			total += 4 + len(d.Value)
			if d.Association > 3 || d.Type > 15 || d.CodeSet > 15 || d.ProtocolID > 15 {
				t.Fatalf("field out of range: %+v", d)
			}
		}
		if total > len(b) && len(ds) > 0 {
			t.Fatalf("designators cover %d bytes of %d", total, len(b))
		}
		if err == nil {
			_ = WWIDFromDesignators(ds)
			_, _ = PortFromDesignators(ds)
		}
	})
}
