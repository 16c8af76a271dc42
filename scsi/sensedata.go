package scsi

import "github.com/mpathfs/mpathfs/ioerr"

// Sense triples (key/ASC/ASCQ, SPC-4 annex D) a device server reports,
// beyond the ALUA ones ioerr names.
var (
	SenseInvalidOpcode            = ioerr.Sense{Key: ioerr.SenseIllegalRequest, ASC: 0x20, ASCQ: 0x00}
	SenseLBAOutOfRange            = ioerr.Sense{Key: ioerr.SenseIllegalRequest, ASC: 0x21, ASCQ: 0x00}
	SenseInvalidFieldInCDB        = ioerr.Sense{Key: ioerr.SenseIllegalRequest, ASC: 0x24, ASCQ: 0x00}
	SenseInvalidFieldInParamList  = ioerr.Sense{Key: ioerr.SenseIllegalRequest, ASC: 0x26, ASCQ: 0x00}
	SenseParamListLengthError     = ioerr.Sense{Key: ioerr.SenseIllegalRequest, ASC: 0x1a, ASCQ: 0x00}
	SenseInvalidFieldInCommandIU  = ioerr.Sense{Key: ioerr.SenseIllegalRequest, ASC: 0x0e, ASCQ: 0x03} // data-out shorter than the CDB asks for
	SenseSavingNotSupported       = ioerr.Sense{Key: ioerr.SenseIllegalRequest, ASC: 0x39, ASCQ: 0x00}
	SenseInsufficientRegResources = ioerr.Sense{Key: ioerr.SenseIllegalRequest, ASC: 0x55, ASCQ: 0x04}
	SenseMiscompareDuringVerify   = ioerr.Sense{Key: SenseKeyMiscompare, ASC: 0x1d, ASCQ: 0x00}
	SensePowerOnReset             = ioerr.Sense{Key: ioerr.SenseUnitAttention, ASC: 0x29, ASCQ: 0x00}
	SenseBusDeviceReset           = ioerr.Sense{Key: ioerr.SenseUnitAttention, ASC: 0x29, ASCQ: 0x03}
	SenseNexusLossOccurred        = ioerr.Sense{Key: ioerr.SenseUnitAttention, ASC: 0x29, ASCQ: 0x07}
	SenseModeParametersChanged    = ioerr.Sense{Key: ioerr.SenseUnitAttention, ASC: 0x2a, ASCQ: 0x01}
	SenseReservationsPreempted    = ioerr.Sense{Key: ioerr.SenseUnitAttention, ASC: 0x2a, ASCQ: 0x03}
	SenseReservationsReleased     = ioerr.Sense{Key: ioerr.SenseUnitAttention, ASC: 0x2a, ASCQ: 0x04}
	SenseRegistrationsPreempted   = ioerr.Sense{Key: ioerr.SenseUnitAttention, ASC: 0x2a, ASCQ: 0x05}
	SenseCapacityDataChanged      = ioerr.Sense{Key: ioerr.SenseUnitAttention, ASC: 0x2a, ASCQ: 0x09}
	SenseReportedLUNsChanged      = ioerr.Sense{Key: ioerr.SenseUnitAttention, ASC: 0x3f, ASCQ: 0x0e}
	SenseWriteError               = ioerr.Sense{Key: ioerr.SenseMediumError, ASC: 0x0c, ASCQ: 0x00}
	SenseInternalTargetFailure    = ioerr.Sense{Key: SenseKeyHardwareError, ASC: 0x44, ASCQ: 0x00}
)

// Fixed-format sense response codes (SPC-4 4.5.3).
const (
	SenseFixedCurrent  = 0x70
	SenseFixedDeferred = 0x71
)

// SenseData is the content of fixed-format sense data a device server
// builds: the triple, the INFORMATION field (e.g. the offset of the first
// miscompare of COMPARE AND WRITE) and the sense-key specific field pointer
// of ILLEGAL REQUEST (which byte, and bit, of the CDB or parameter list
// is wrong).
type SenseData struct {
	ioerr.Sense
	// Info is the INFORMATION field; InfoValid sets the VALID bit.
	Info      uint32
	InfoValid bool
	// FieldValid sets SKSV: Field is the byte (and, with BitValid, Bit the
	// bit) in error, in the CDB when InCDB, else in the parameter list.
	FieldValid bool
	InCDB      bool
	BitValid   bool
	Bit        uint8
	Field      uint16
}

// FixedSenseLen is the length of the fixed-format sense data built here.
const FixedSenseLen = 18

// Fixed encodes the sense data in fixed format (response code 0x70, 18
// bytes, ADDITIONAL SENSE LENGTH 10).
func (d SenseData) Fixed() []byte {
	b := make([]byte, FixedSenseLen)
	b[0] = SenseFixedCurrent
	if d.InfoValid {
		b[0] |= 0x80
		b[3], b[4], b[5], b[6] = byte(d.Info>>24), byte(d.Info>>16), byte(d.Info>>8), byte(d.Info)
	}
	b[2] = d.Key & 0x0f
	b[7] = FixedSenseLen - 8
	b[12], b[13] = d.ASC, d.ASCQ
	if d.FieldValid {
		b[15] = 0x80
		if d.InCDB {
			b[15] |= 0x40
		}
		if d.BitValid {
			b[15] |= 0x08 | d.Bit&7
		}
		b[16], b[17] = byte(d.Field>>8), byte(d.Field)
	}
	return b
}

// FixedSense encodes a bare sense triple in fixed format.
func FixedSense(s ioerr.Sense) []byte { return SenseData{Sense: s}.Fixed() }

// InvalidCDBField is ILLEGAL REQUEST, INVALID FIELD IN CDB pointing at byte
// field of the CDB (and bit, if bit is 0..7; -1 for none).
func InvalidCDBField(field uint16, bit int) SenseData {
	d := SenseData{Sense: SenseInvalidFieldInCDB, FieldValid: true, InCDB: true, Field: field}
	if bit >= 0 && bit < 8 {
		d.BitValid, d.Bit = true, uint8(bit)
	}
	return d
}

// InvalidParamField is ILLEGAL REQUEST, INVALID FIELD IN PARAMETER LIST
// pointing at byte field of the parameter list.
func InvalidParamField(field uint16) SenseData {
	return SenseData{Sense: SenseInvalidFieldInParamList, FieldValid: true, Field: field}
}
