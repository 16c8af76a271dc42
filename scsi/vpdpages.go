package scsi

import "encoding/binary"

// VPD page codes (SPC-4 7.8, SBC-3 6.6).
const (
	VPDSupportedPages           = 0x00
	VPDUnitSerialNumber         = 0x80
	VPDDeviceIdentification     = 0x83
	VPDBlockLimits              = 0xb0
	VPDBlockDeviceCharacter     = 0xb1
	VPDLogicalBlockProvisioning = 0xb2
)

// vpdPage wraps a page's payload in the 4-byte VPD header (peripheral
// device type 0: direct access block device).
func vpdPage(code byte, payload []byte) []byte {
	b := make([]byte, 4+len(payload))
	b[1] = code
	binary.BigEndian.PutUint16(b[2:], uint16(len(payload)))
	copy(b[4:], payload)
	return b
}

// BuildVPDSupportedPages builds page 0x00 listing pages (ascending, 0x00
// included by the caller).
func BuildVPDSupportedPages(pages []byte) []byte { return vpdPage(VPDSupportedPages, pages) }

// BuildVPDSerial builds the unit serial number page (0x80).
func BuildVPDSerial(serial string) []byte { return vpdPage(VPDUnitSerialNumber, []byte(serial)) }

// AppendDesignator appends one designation descriptor of page 0x83.
// PIV is set (and the protocol identifier meaningful) for target port and
// target associations.
func AppendDesignator(b []byte, protocolID, codeSet uint8, piv bool, assoc, typ uint8, value []byte) []byte {
	h := [4]byte{protocolID<<4 | codeSet&0x0f, assoc&3<<4 | typ&0x0f, 0, byte(len(value))}
	if piv {
		h[1] |= 0x80
	}
	b = append(b, h[:]...)
	return append(b, value...)
}

// BuildVPDDeviceID builds the device identification page (0x83) from
// designators appended with AppendDesignator.
func BuildVPDDeviceID(designators []byte) []byte {
	return vpdPage(VPDDeviceIdentification, designators)
}

// BlockLimits is the content of the block limits VPD page (0xB0), in
// logical blocks.
type BlockLimits struct {
	MaxCompareAndWrite      uint8
	OptimalGranularity      uint16
	MaxTransfer             uint32
	OptimalTransfer         uint32
	MaxUnmapLBACount        uint32
	MaxUnmapDescriptors     uint32
	OptimalUnmapGranularity uint32
	MaxWriteSame            uint64
}

// BuildVPDBlockLimits builds page 0xB0 (SBC-3 6.6.3, 0x3C bytes of payload).
func BuildVPDBlockLimits(l BlockLimits) []byte {
	p := make([]byte, 0x3c)
	p[1] = l.MaxCompareAndWrite
	binary.BigEndian.PutUint16(p[2:], l.OptimalGranularity)
	binary.BigEndian.PutUint32(p[4:], l.MaxTransfer)
	binary.BigEndian.PutUint32(p[8:], l.OptimalTransfer)
	binary.BigEndian.PutUint32(p[16:], l.MaxUnmapLBACount)
	binary.BigEndian.PutUint32(p[20:], l.MaxUnmapDescriptors)
	binary.BigEndian.PutUint32(p[24:], l.OptimalUnmapGranularity)
	binary.BigEndian.PutUint64(p[32:], l.MaxWriteSame)
	return vpdPage(VPDBlockLimits, p)
}

// BuildVPDBlockDeviceCharacteristics builds page 0xB1 with the medium
// rotation rate (1: non-rotating medium).
func BuildVPDBlockDeviceCharacteristics(rotationRate uint16) []byte {
	p := make([]byte, 0x3c)
	binary.BigEndian.PutUint16(p[0:], rotationRate)
	return vpdPage(VPDBlockDeviceCharacter, p)
}

// Provisioning is the content of the logical block provisioning VPD page
// (0xB2).
type Provisioning struct {
	// LBPU: UNMAP is supported; LBPWS, LBPWS10: WRITE SAME(16)/(10) with
	// the UNMAP bit are; LBPRZ: unmapped blocks read as zeroes.
	LBPU, LBPWS, LBPWS10, LBPRZ bool
	// Type is the provisioning type: 0 full, 1 resource, 2 thin.
	Type uint8
}

// BuildVPDProvisioning builds page 0xB2 (SBC-3 6.6.4).
func BuildVPDProvisioning(p Provisioning) []byte {
	b := make([]byte, 4)
	if p.LBPU {
		b[1] |= 0x80
	}
	if p.LBPWS {
		b[1] |= 0x40
	}
	if p.LBPWS10 {
		b[1] |= 0x20
	}
	if p.LBPRZ {
		b[1] |= 0x04
	}
	b[2] = p.Type & 7
	return vpdPage(VPDLogicalBlockProvisioning, b)
}
