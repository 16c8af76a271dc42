package scsi

// Operation codes (SPC-4, SBC-3) and service actions of the commands the
// simulated array's logical units execute.
const (
	OpTestUnitReady         = 0x00
	OpRequestSense          = 0x03
	OpRead6                 = 0x08
	OpWrite6                = 0x0a
	OpInquiry               = 0x12
	OpModeSelect6           = 0x15
	OpReserve6              = 0x16
	OpRelease6              = 0x17
	OpModeSense6            = 0x1a
	OpStartStopUnit         = 0x1b
	OpReadCapacity10        = 0x25
	OpRead10                = 0x28
	OpWrite10               = 0x2a
	OpVerify10              = 0x2f
	OpSynchronizeCache10    = 0x35
	OpWriteSame10           = 0x41
	OpUnmap                 = 0x42
	OpModeSelect10          = 0x55
	OpReserve10             = 0x56
	OpRelease10             = 0x57
	OpModeSense10           = 0x5a
	OpPersistentReserveIn   = 0x5e
	OpPersistentReserveOut  = 0x5f
	OpRead16                = 0x88
	OpCompareAndWrite       = 0x89
	OpWrite16               = 0x8a
	OpVerify16              = 0x8f
	OpSynchronizeCache16    = 0x91
	OpWriteSame16           = 0x93
	OpServiceActionIn16     = 0x9e
	OpReportLUNs            = 0xa0
	OpMaintenanceIn         = 0xa3
	OpMaintenanceOut        = 0xa4
	OpRead12                = 0xa8
	OpWrite12               = 0xaa
	OpVerify12              = 0xaf
	OpReadBuffer10          = 0x3c
	OpWriteBuffer10         = 0x3b
	OpReportSupportedOpsSA  = 0x0c // MAINTENANCE IN: REPORT SUPPORTED OPERATION CODES
	OpReportSupportedTMFsSA = 0x0d // MAINTENANCE IN: REPORT SUPPORTED TASK MANAGEMENT FUNCTIONS
	OpTargetPortGroupsSA    = 0x0a // MAINTENANCE IN/OUT: REPORT/SET TARGET PORT GROUPS
	OpReadCapacity16SA      = 0x10 // SERVICE ACTION IN(16): READ CAPACITY(16)
	OpGetLBAStatusSA        = 0x12 // SERVICE ACTION IN(16): GET LBA STATUS
)

// CDBLength is the length of a CDB by its operation code's group (SPC-4
// 4.2.5.1): 6, 10, 12 or 16 bytes; 0 for the reserved and vendor-specific
// groups, whose lengths the opcode does not tell.
func CDBLength(op byte) int {
	switch op >> 5 {
	case 0:
		return 6
	case 1, 2:
		return 10
	case 4:
		return 16
	case 5:
		return 12
	}
	return 0
}
