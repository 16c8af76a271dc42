package scsi

import (
	"fmt"
	"strings"
)

// StdInquiry is what the standard INQUIRY data tells.
type StdInquiry struct {
	DeviceType byte
	Vendor     string
	Model      string
	Revision   string
	TPGS       int
}

// ParseStdInquiry parses standard INQUIRY data (at least 36 bytes for the
// vendor, product and revision; 6 for the TPGS field).
func ParseStdInquiry(b []byte) (StdInquiry, error) {
	if len(b) < 6 {
		return StdInquiry{}, fmt.Errorf("standard INQUIRY data too short: %d bytes", len(b))
	}
	inq := StdInquiry{DeviceType: b[0] & 0x1f, TPGS: int(b[5]>>4) & 3}
	field := func(from, to int) string {
		if len(b) < to {
			to = len(b)
		}
		if from >= to {
			return ""
		}
		return strings.TrimSpace(printable(b[from:to]))
	}
	inq.Vendor, inq.Model, inq.Revision = field(8, 16), field(16, 32), field(32, 36)
	return inq, nil
}

func printable(b []byte) string {
	var s strings.Builder
	for _, c := range b {
		if c == 0 {
			break
		}
		if c < 0x20 || c > 0x7e {
			c = '?'
		}
		s.WriteByte(c)
	}
	return s.String()
}
