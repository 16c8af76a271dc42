package iscsipath

import (
	"errors"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/mpathfs/mpathfs/ioerr"
	"github.com/mpathfs/mpathfs/scsi"
)

func fixedSense(key, asc, ascq byte) []byte {
	s := make([]byte, 18)
	s[0], s[2], s[7], s[12], s[13] = 0x70, key, 10, asc, ascq
	return s
}

// TestStatusError: what an iscsi:// path's SCSI status and sense become.
func TestStatusError(t *testing.T) {
	for _, c := range []struct {
		name   string
		st     scsi.Status
		sense  []byte
		class  ioerr.Class
		isConf bool
	}{
		{"good", scsi.StatusGood, nil, ioerr.ClassNone, false},
		{"ALUA standby", scsi.StatusCheckCondition, fixedSense(2, 4, 0x0b), ioerr.ClassNotReady, false},
		{"ALUA transitioning", scsi.StatusCheckCondition, fixedSense(2, 4, 0x0a), ioerr.ClassRetryable, false},
		{"unit attention", scsi.StatusCheckCondition, fixedSense(6, 0x29, 0), ioerr.ClassRetryable, false},
		{"medium error", scsi.StatusCheckCondition, fixedSense(3, 0x11, 0), ioerr.ClassDeviceError, false},
		{"LBA out of range", scsi.StatusCheckCondition, fixedSense(5, 0x21, 0), ioerr.ClassDeviceError, false},
		{"LU not supported", scsi.StatusCheckCondition, fixedSense(5, 0x25, 0), ioerr.ClassPermanentLoss, false},
		{"recovered", scsi.StatusCheckCondition, fixedSense(1, 0x17, 0), ioerr.ClassNone, false},
		{"unreadable sense", scsi.StatusCheckCondition, []byte{1, 2}, ioerr.ClassPathFailure, false},
		{"reservation conflict", scsi.StatusReservationConflict, nil, ioerr.ClassConflict, true},
		{"busy", scsi.StatusBusy, nil, ioerr.ClassRetryable, false},
		{"task set full", scsi.StatusTaskSetFull, nil, ioerr.ClassRetryable, false},
		{"task aborted", scsi.StatusTaskAborted, nil, ioerr.ClassRetryable, false},
		{"unknown status", scsi.Status(0x77), nil, ioerr.ClassPathFailure, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			err := scsi.StatusError("write", c.st, c.sense)
			require.Equal(t, c.class, ioerr.ClassOf(err), "%v", err)
			require.Equal(t, c.isConf, errors.Is(err, ioerr.ErrReservationConflict))
			if c.class != ioerr.ClassNone && c.st == scsi.StatusCheckCondition && len(c.sense) == 18 {
				s, ok := ioerr.SenseOf(err)
				require.True(t, ok)
				require.Equal(t, ioerr.Sense{Key: c.sense[2], ASC: c.sense[12], ASCQ: c.sense[13]}, s)
			}
		})
	}
}
