package scsi

import (
	"testing"

	"github.com/stretchr/testify/assert"

	"github.com/mpathfs/mpathfs/ioerr"
)

// fixedSense builds 18 bytes of fixed-format sense data.
func fixedSense(code, key, asc, ascq byte) []byte {
	b := make([]byte, 18)
	b[0], b[2], b[7], b[12], b[13] = code, key, 10, asc, ascq
	return b
}

func descSense(code, key, asc, ascq byte) []byte {
	return []byte{code, key, asc, ascq, 0, 0, 0, 0}
}

func TestParseSense(t *testing.T) {
	for _, c := range []struct {
		name     string
		in       []byte
		want     ioerr.Sense
		deferred bool
		err      bool
	}{
		{"fixed current", fixedSense(0x70, 0x02, 0x04, 0x0a), ioerr.SenseALUATransitioning, false, false},
		{"fixed, VALID bit set", fixedSense(0xf0, 0x03, 0x11, 0x00), ioerr.SenseUnrecoveredRead, false, false},
		{"fixed deferred", fixedSense(0x71, 0x06, 0x2a, 0x06), ioerr.SenseAccessChanged, true, false},
		{"fixed, key bits only", append([]byte{0x70, 0, 0x26}, make([]byte, 5)...), ioerr.Sense{Key: 0x06}, false, false},
		{"fixed, additional length too short for ASC", func() []byte { b := fixedSense(0x70, 2, 4, 0xb); b[7] = 5; return b }(), ioerr.Sense{Key: 2}, false, false},
		{"descriptor current", descSense(0x72, 0x02, 0x04, 0x0b), ioerr.SenseALUAStandby, false, false},
		{"descriptor deferred", descSense(0x73, 0x05, 0x25, 0x00), ioerr.SenseLUNotSupported, true, false},
		{"descriptor, header only", []byte{0x72, 0x02, 0x04, 0x0c}, ioerr.SenseALUAUnavailable, false, false},
		{"descriptor too short", []byte{0x72, 0x02}, ioerr.Sense{}, false, true},
		{"fixed too short", []byte{0x70, 0}, ioerr.Sense{}, false, true},
		{"unknown response code", fixedSense(0x7f, 2, 4, 0xa), ioerr.Sense{}, false, true},
		{"empty", nil, ioerr.Sense{}, false, true},
	} {
		s, deferred, err := ParseSense(c.in)
		if (err != nil) != c.err {
			t.Errorf("%s: error %v", c.name, err)
			continue
		}
		if err == nil && (s != c.want || deferred != c.deferred) {
			t.Errorf("%s: %v deferred=%v, want %v deferred=%v", c.name, s, deferred, c.want, c.deferred)
		}
	}
}

// TestClassifySense is the one sense table, code by code; the cases where
// the two tables it replaces disagreed are marked "was".
func TestClassifySense(t *testing.T) {
	sn := func(k, asc, ascq uint8) ioerr.Sense { return ioerr.Sense{Key: k, ASC: asc, ASCQ: ascq} }
	for _, c := range []struct {
		s    ioerr.Sense
		want ioerr.Class
	}{
		{ioerr.Sense{}, ioerr.ClassNone},        // no sense (was a path failure in nmp)
		{sn(0x01, 0x17, 0x01), ioerr.ClassNone}, // recovered error
		{ioerr.SenseALUATransitioning, ioerr.ClassRetryable},
		{sn(0x02, 0x04, 0x01), ioerr.ClassRetryable}, // becoming ready
		{sn(0x02, 0x04, 0x07), ioerr.ClassRetryable}, // operation in progress (was not ready in nmp)
		{sn(0x02, 0x04, 0x09), ioerr.ClassRetryable}, // self-test in progress (was not ready in nmp)
		{sn(0x02, 0x04, 0x04), ioerr.ClassRetryable}, // format in progress (was not ready)
		{sn(0x02, 0x04, 0x1b), ioerr.ClassRetryable}, // sanitize in progress (was not ready)
		{ioerr.SenseALUAStandby, ioerr.ClassNotReady},
		{ioerr.SenseALUAUnavailable, ioerr.ClassNotReady},
		{sn(0x02, 0x04, 0x03), ioerr.ClassNotReady}, // manual intervention: passive SP
		{sn(0x02, 0x04, 0x02), ioerr.ClassNotReady}, // initializing command required
		{sn(0x02, 0x04, 0x00), ioerr.ClassNotReady}, // cause not reportable
		{sn(0x02, 0x00, 0x00), ioerr.ClassNotReady},
		{sn(0x02, 0x3a, 0x00), ioerr.ClassNotReady},      // medium not present (was permanent loss in nmp)
		{sn(0x02, 0x3e, 0x01), ioerr.ClassPermanentLoss}, // LU failure (was not ready in nmp)
		{sn(0x02, 0x3e, 0x03), ioerr.ClassPermanentLoss}, // LU failed self-test (was not ready in nmp)
		{ioerr.SenseUnrecoveredRead, ioerr.ClassDeviceError},
		{sn(0x03, 0x0c, 0x00), ioerr.ClassDeviceError},   // write error
		{sn(0x04, 0x44, 0x00), ioerr.ClassPathFailure},   // hardware error: internal target failure
		{sn(0x04, 0x4c, 0x00), ioerr.ClassPermanentLoss}, // LU failed self-configuration (was a path failure in nmp)
		{ioerr.SenseLUNotSupported, ioerr.ClassPermanentLoss},
		{sn(0x05, 0x25, 0x01), ioerr.ClassDeviceError}, // not the PDL triple
		{sn(0x05, 0x21, 0x00), ioerr.ClassDeviceError}, // LBA out of range
		{sn(0x05, 0x20, 0x00), ioerr.ClassDeviceError}, // invalid opcode
		{sn(0x05, 0x24, 0x00), ioerr.ClassDeviceError}, // invalid field in CDB
		{ioerr.SenseAccessChanged, ioerr.ClassRetryable},
		{sn(0x06, 0x29, 0x00), ioerr.ClassRetryable},   // power on / reset
		{sn(0x06, 0x3f, 0x0e), ioerr.ClassRetryable},   // reported LUNs changed
		{sn(0x07, 0x27, 0x00), ioerr.ClassDeviceError}, // write protected (was a path failure in nmp)
		{sn(0x08, 0x00, 0x05), ioerr.ClassDeviceError}, // blank check
		{sn(0x0a, 0x00, 0x00), ioerr.ClassDeviceError}, // copy aborted
		{sn(0x0b, 0x00, 0x00), ioerr.ClassRetryable},   // aborted command
		{sn(0x0b, 0x47, 0x00), ioerr.ClassRetryable},   // aborted: parity error
		{sn(0x0d, 0x00, 0x00), ioerr.ClassDeviceError}, // volume overflow
		{sn(0x0e, 0x1d, 0x00), ioerr.ClassDeviceError}, // miscompare
		{sn(0x09, 0x00, 0x00), ioerr.ClassPathFailure}, // vendor specific
		{sn(0x0f, 0x00, 0x00), ioerr.ClassPathFailure}, // reserved
	} {
		assert.Equal(t, c.want, ClassifySense(c.s), "ClassifySense(%v)", c.s)
	}
}

func TestStatusError(t *testing.T) {
	for _, c := range []struct {
		name   string
		status Status
		sense  []byte
		want   ioerr.Class
		wsense *ioerr.Sense
	}{
		{"good", StatusGood, nil, ioerr.ClassNone, nil},
		{"condition met", StatusConditionMet, nil, ioerr.ClassNone, nil},
		{"intermediate", statusIntermediate, nil, ioerr.ClassNone, nil},
		{"busy", StatusBusy, nil, ioerr.ClassRetryable, nil},
		{"task set full", StatusTaskSetFull, nil, ioerr.ClassRetryable, nil},
		{"ACA active", StatusACAActive, nil, ioerr.ClassRetryable, nil},
		{"task aborted", StatusTaskAborted, nil, ioerr.ClassRetryable, nil},
		{"reservation conflict", StatusReservationConflict, nil, ioerr.ClassConflict, nil},
		{"transitioning", StatusCheckCondition, fixedSense(0x70, 2, 4, 0x0a), ioerr.ClassRetryable, &ioerr.SenseALUATransitioning},
		{"standby", StatusCheckCondition, descSense(0x72, 2, 4, 0x0b), ioerr.ClassNotReady, &ioerr.SenseALUAStandby},
		{"PDL", StatusCheckCondition, descSense(0x72, 5, 0x25, 0), ioerr.ClassPermanentLoss, &ioerr.SenseLUNotSupported},
		{"recovered", StatusCheckCondition, fixedSense(0x70, 1, 0x17, 0), ioerr.ClassNone, nil},
		{"check condition without sense", StatusCheckCondition, nil, ioerr.ClassPathFailure, nil},
		{"unknown status", Status(0x22), nil, ioerr.ClassPathFailure, nil},
	} {
		err := StatusError("read", c.status, c.sense)
		assert.Equal(t, c.want, ioerr.ClassOf(err), "%s: %v", c.name, err)
		assert.Equal(t, c.want == ioerr.ClassNone, err == nil, "%s: %v", c.name, err)
		s, ok := ioerr.SenseOf(err)
		if c.wsense == nil {
			assert.False(t, ok, "%s: sense %v", c.name, s)
		} else if assert.True(t, ok, "%s: no sense", c.name) {
			assert.Equal(t, *c.wsense, s, c.name)
		}
	}
}

func FuzzSense(f *testing.F) {
	for _, s := range senseSeeds() {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		s, _, err := ParseSense(b)
		if err != nil {
			return
		}
		if s.Key > 0x0f {
			t.Fatalf("sense key %x", s.Key)
		}
		c := ClassifySense(s)
		if c > ioerr.ClassPermanentLoss {
			t.Fatalf("class %v", c)
		}
		err = StatusError("fuzz", StatusCheckCondition, b)
		if got := ioerr.ClassOf(err); got != c {
			t.Fatalf("StatusError class %v, ClassifySense %v", got, c)
		}
	})
}
