package scsi

import "encoding/binary"

// Mode page codes (SPC-4 7.5, SBC-3 6.5).
const (
	ModePageRWErrorRecovery = 0x01
	ModePageCaching         = 0x08
	ModePageControl         = 0x0a
	ModePageAll             = 0x3f
)

// Page control values of MODE SENSE (the PC field).
const (
	PageControlCurrent    = 0
	PageControlChangeable = 1
	PageControlDefault    = 2
	PageControlSaved      = 3
)

// BuildRWErrorRecoveryPage builds the read-write error recovery page
// (0x01, 12 bytes). changeable gives the changeable-values mask: all zero.
func BuildRWErrorRecoveryPage(changeable bool) []byte {
	b := make([]byte, 12)
	b[0], b[1] = ModePageRWErrorRecovery, 10
	if !changeable {
		b[2] = 0x80 // AWRE: automatic write reallocation enabled
	}
	return b
}

// BuildCachingPage builds the caching page (0x08, 20 bytes) with the
// write cache enabled bit; changeable gives the mask: nothing changeable.
func BuildCachingPage(wce, changeable bool) []byte {
	b := make([]byte, 20)
	b[0], b[1] = ModePageCaching, 18
	if wce && !changeable {
		b[2] |= 0x04
	}
	return b
}

// BuildControlPage builds the control page (0x0A, 12 bytes): queue
// algorithm modifier 1 (unrestricted reordering), TAS as given, D_SENSE 0
// (fixed-format sense); changeable gives the mask: nothing changeable.
func BuildControlPage(tas, changeable bool) []byte {
	b := make([]byte, 12)
	b[0], b[1] = ModePageControl, 10
	if changeable {
		return b
	}
	b[3] = 0x10
	if tas {
		b[5] |= 0x40
	}
	binary.BigEndian.PutUint16(b[8:], 0xffff) // busy timeout period: unlimited
	return b
}

// BuildShortBlockDescriptor is the 8-byte mode parameter block descriptor
// (blocks saturate at 0xFFFFFFFF).
func BuildShortBlockDescriptor(blocks uint64, blockLen uint32) []byte {
	b := make([]byte, 8)
	if blocks > 0xffffffff {
		blocks = 0xffffffff
	}
	binary.BigEndian.PutUint32(b[0:], uint32(blocks))
	b[5], b[6], b[7] = byte(blockLen>>16), byte(blockLen>>8), byte(blockLen)
	return b
}

// BuildLongBlockDescriptor is the 16-byte descriptor of MODE SENSE(10)
// with LLBAA.
func BuildLongBlockDescriptor(blocks uint64, blockLen uint32) []byte {
	b := make([]byte, 16)
	binary.BigEndian.PutUint64(b[0:], blocks)
	binary.BigEndian.PutUint32(b[12:], blockLen)
	return b
}

// Device-specific parameter bits of the mode parameter header (SBC-3).
const (
	ModeDeviceWP     = 0x80
	ModeDeviceDPOFUA = 0x10
)

// BuildModeSense6 assembles MODE SENSE(6) data: the 4-byte header, the
// block descriptor (may be empty) and the pages.
func BuildModeSense6(deviceSpecific byte, blockDesc, pages []byte) []byte {
	b := make([]byte, 4, 4+len(blockDesc)+len(pages))
	b[2] = deviceSpecific
	b[3] = byte(len(blockDesc))
	b = append(b, blockDesc...)
	b = append(b, pages...)
	n := len(b) - 1
	if n > 0xff {
		n = 0xff
	}
	b[0] = byte(n)
	return b
}

// BuildModeSense10 assembles MODE SENSE(10) data: the 8-byte header (LONGLBA
// when the descriptor is 16 bytes), the block descriptor and the pages.
func BuildModeSense10(deviceSpecific byte, blockDesc, pages []byte) []byte {
	b := make([]byte, 8, 8+len(blockDesc)+len(pages))
	b[3] = deviceSpecific
	if len(blockDesc) == 16 {
		b[4] = 0x01
	}
	binary.BigEndian.PutUint16(b[6:], uint16(len(blockDesc)))
	b = append(b, blockDesc...)
	b = append(b, pages...)
	binary.BigEndian.PutUint16(b[0:], uint16(len(b)-2))
	return b
}
