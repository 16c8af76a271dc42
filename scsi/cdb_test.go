package scsi

import (
	"bytes"
	"testing"
)

func TestCDBs(t *testing.T) {
	for _, c := range []struct {
		name      string
		got, want []byte
	}{
		{"TUR", CDBTestUnitReady(), []byte{0, 0, 0, 0, 0, 0}},
		{"standard INQUIRY", CDBInquiry(false, 0x83, 96), []byte{0x12, 0, 0, 0, 96, 0}},
		{"VPD 0x83", CDBInquiry(true, 0x83, 0x1234), []byte{0x12, 1, 0x83, 0x12, 0x34, 0}},
		{"RTPG", CDBReportTPGs(0x01020304), []byte{0xa3, 0x0a, 0, 0, 0, 0, 1, 2, 3, 4, 0, 0}},
		{"STPG", CDBSetTPGs(12), []byte{0xa4, 0x0a, 0, 0, 0, 0, 0, 0, 0, 12, 0, 0}},
		{"STPG params", STPGParams(map[uint16]State{0x102: Standby, 1: ActiveOptimized}),
			[]byte{0, 0, 0, 0, 0x00, 0, 0x00, 0x01, 0x02, 0, 0x01, 0x02}},
		{"STPG no groups", STPGParams(nil), []byte{0, 0, 0, 0}},
	} {
		if !bytes.Equal(c.got, c.want) {
			t.Errorf("%s = % x, want % x", c.name, c.got, c.want)
		}
	}
}
