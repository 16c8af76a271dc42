package scsi

import "testing"

var stdInq = func() []byte {
	b := make([]byte, 36)
	b[0] = 0x00 // direct access block device
	b[2] = 0x06 // SPC-4
	b[4] = 31
	b[5] = 0x30 // TPGS = 3
	copy(b[8:], "LIO-ORG ")
	copy(b[16:], "TCMU device     ")
	copy(b[32:], "0002")
	return b
}()

func TestParseStdInquiry(t *testing.T) {
	got, err := ParseStdInquiry(stdInq)
	if err != nil {
		t.Fatal(err)
	}
	if want := (StdInquiry{Vendor: "LIO-ORG", Model: "TCMU device", Revision: "0002", TPGS: 3}); got != want {
		t.Errorf("ParseStdInquiry = %+v, want %+v", got, want)
	}
	for tpgs := 0; tpgs < 4; tpgs++ {
		b := append([]byte(nil), stdInq[:8]...)
		b[5] = byte(tpgs<<4) | 0x08 // with an unrelated bit set
		got, err := ParseStdInquiry(b)
		if err != nil || got.TPGS != tpgs || got.Vendor != "" {
			t.Errorf("TPGS %d: %+v, %v", tpgs, got, err)
		}
	}
	if _, err := ParseStdInquiry(stdInq[:5]); err == nil {
		t.Error("5 bytes of INQUIRY data parsed")
	}
}
