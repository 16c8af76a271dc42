package scsi

import (
	"errors"
	"fmt"

	"github.com/mpathfs/mpathfs/ioerr"
)

// Sense response codes.
const (
	senseFixedCurrent       = 0x70
	senseFixedDeferred      = 0x71
	senseDescriptorCurrent  = 0x72
	senseDescriptorDeferred = 0x73
)

// ParseSense extracts the sense key, ASC and ASCQ from fixed-format
// (0x70/0x71) or descriptor-format (0x72/0x73) sense data. deferred
// reports a deferred error (one about an earlier command).
func ParseSense(b []byte) (s ioerr.Sense, deferred bool, err error) {
	if len(b) < 1 {
		return s, false, errors.New("no sense data")
	}
	switch code := b[0] & 0x7f; code {
	case senseFixedCurrent, senseFixedDeferred:
		if len(b) < 3 {
			return s, false, fmt.Errorf("fixed-format sense data too short: %d bytes", len(b))
		}
		s.Key = b[2] & 0x0f
		// ASC and ASCQ are at 12 and 13, present if the additional length
		// (byte 7) covers them.
		if len(b) >= 14 && int(b[7]) >= 6 {
			s.ASC, s.ASCQ = b[12], b[13]
		}
		return s, code == senseFixedDeferred, nil
	case senseDescriptorCurrent, senseDescriptorDeferred:
		if len(b) < 4 {
			return s, false, fmt.Errorf("descriptor-format sense data too short: %d bytes", len(b))
		}
		s.Key, s.ASC, s.ASCQ = b[1]&0x0f, b[2], b[3]
		return s, code == senseDescriptorDeferred, nil
	default:
		return s, false, fmt.Errorf("unknown sense response code 0x%02x", code)
	}
}

// The one sense table of the project: ClassifySense maps sense data to the
// error taxonomy, for every transport and SATP (docs/design.md, "SCSI
// vocabulary", gives the reasons per code):
//   - NO SENSE, RECOVERED ERROR: none (the command succeeded; a caller
//     holding an error with such sense judges the error by other means);
//   - the ESXi permanent device loss codes 05/25/00 (LU not supported),
//     04/4C/00 (LU failed self-configuration), 02/3E/01 and 02/3E/03 (LU
//     failure, failed self-test): permanent loss;
//   - NOT READY 04/0A (ALUA transitioning) and the "in progress" causes
//     Linux retries after a delay (04/01 becoming ready, 04/04 format,
//     04/05 rebuild, 04/06 recalculation, 04/07 operation, 04/08 long
//     write, 04/09 self-test, 04/11 notify required, 04/14 space
//     allocation, 04/1A start stop unit, 04/1B sanitize, 04/1D configuration,
//     04/24 depopulation, 04/25 depopulation restoration): retryable;
//   - NOT READY 04/0B and 04/0C (ALUA standby, unavailable), 04/03 (manual
//     intervention required: the passive controller of an active/passive
//     array), 3A (medium not present) and any other NOT READY: not ready;
//   - UNIT ATTENTION (access states changed, reset, capacity changed …)
//     and ABORTED COMMAND: retryable;
//   - MEDIUM ERROR, ILLEGAL REQUEST, DATA PROTECT, BLANK CHECK, COPY
//     ABORTED, VOLUME OVERFLOW, MISCOMPARE: device error;
//   - HARDWARE ERROR, vendor specific and reserved keys: path failure
//     (another path, another controller, may get through).
func ClassifySense(s ioerr.Sense) ioerr.Class {
	switch s {
	case ioerr.SenseLUNotSupported,
		ioerr.Sense{Key: SenseKeyHardwareError, ASC: 0x4c, ASCQ: 0x00},
		ioerr.Sense{Key: ioerr.SenseNotReady, ASC: 0x3e, ASCQ: 0x01},
		ioerr.Sense{Key: ioerr.SenseNotReady, ASC: 0x3e, ASCQ: 0x03}:
		return ioerr.ClassPermanentLoss
	}
	switch s.Key {
	case SenseKeyNoSense, SenseKeyRecoveredError:
		return ioerr.ClassNone
	case ioerr.SenseNotReady:
		if s.ASC == 0x04 {
			switch s.ASCQ {
			case 0x01, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0a, 0x11, 0x14, 0x1a, 0x1b, 0x1d, 0x24, 0x25:
				return ioerr.ClassRetryable
			}
		}
		return ioerr.ClassNotReady
	case ioerr.SenseUnitAttention, ioerr.SenseAbortedCommand:
		return ioerr.ClassRetryable
	case ioerr.SenseMediumError, ioerr.SenseIllegalRequest, SenseKeyDataProtect, SenseKeyBlankCheck,
		SenseKeyCopyAborted, SenseKeyVolumeOverflow, SenseKeyMiscompare:
		return ioerr.ClassDeviceError
	}
	return ioerr.ClassPathFailure
}

// Sense keys (SPC-4 table 48) beyond the ones ioerr names.
const (
	SenseKeyNoSense        = 0x00
	SenseKeyRecoveredError = 0x01
	SenseKeyHardwareError  = 0x04
	SenseKeyDataProtect    = 0x07
	SenseKeyBlankCheck     = 0x08
	SenseKeyCopyAborted    = 0x0a
	SenseKeyVolumeOverflow = 0x0d
	SenseKeyMiscompare     = 0x0e
)

// Status values SAM-5 made obsolete that a target may still return; they
// mean the command completed.
const (
	statusIntermediate        Status = 0x10
	statusIntermediateCondMet Status = 0x14
)

// StatusError turns a command's status byte and sense data into nil or a
// classified error for op: GOOD and CONDITION MET are success; CHECK
// CONDITION is judged by ClassifySense (no usable sense data is a path
// failure); BUSY, TASK SET FULL, ACA ACTIVE and TASK ABORTED are
// retryable; RESERVATION CONFLICT is of ioerr.ClassConflict, wrapping
// ioerr.ErrReservationConflict (another path of the same host meets the
// same reservation: no failover); anything else is a path failure.
func StatusError(op string, st Status, sense []byte) error {
	switch st {
	case StatusGood, StatusConditionMet, statusIntermediate, statusIntermediateCondMet:
		return nil
	case StatusCheckCondition:
		s, _, err := ParseSense(sense)
		if err != nil {
			return ioerr.NewError(ioerr.ClassPathFailure, op, fmt.Errorf("CHECK CONDITION without usable sense data: %v", err))
		}
		c := ClassifySense(s)
		if c == ioerr.ClassNone {
			return nil
		}
		return &ioerr.Error{Class: c, Op: op, Sense: &s, Err: errors.New("CHECK CONDITION")}
	case StatusBusy, StatusTaskSetFull, StatusACAActive, StatusTaskAborted:
		return ioerr.NewError(ioerr.ClassRetryable, op, fmt.Errorf("SCSI status 0x%02x", uint8(st)))
	case StatusReservationConflict:
		return ioerr.NewError(ioerr.ClassConflict, op, ioerr.ErrReservationConflict)
	}
	return ioerr.NewError(ioerr.ClassPathFailure, op, fmt.Errorf("SCSI status 0x%02x", uint8(st)))
}
