package iscsi

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
)

// Opcode is the operation code of a PDU (RFC 7143 11.1.1), without the
// immediate bit.
type Opcode uint8

// Initiator opcodes.
const (
	OpNOPOut     Opcode = 0x00
	OpSCSICmd    Opcode = 0x01
	OpTMFReq     Opcode = 0x02
	OpLoginReq   Opcode = 0x03
	OpTextReq    Opcode = 0x04
	OpDataOut    Opcode = 0x05
	OpLogoutReq  Opcode = 0x06
	OpSNACKReq   Opcode = 0x10
	OpNOPIn      Opcode = 0x20
	OpSCSIResp   Opcode = 0x21
	OpTMFResp    Opcode = 0x22
	OpLoginResp  Opcode = 0x23
	OpTextResp   Opcode = 0x24
	OpDataIn     Opcode = 0x25
	OpLogoutResp Opcode = 0x26
	OpR2T        Opcode = 0x31
	OpAsync      Opcode = 0x32
	OpReject     Opcode = 0x3f
)

var opNames = map[Opcode]string{
	OpNOPOut: "NOP-Out", OpSCSICmd: "SCSI Command", OpTMFReq: "Task Management Function Request",
	OpLoginReq: "Login Request", OpTextReq: "Text Request", OpDataOut: "SCSI Data-Out",
	OpLogoutReq: "Logout Request", OpSNACKReq: "SNACK Request", OpNOPIn: "NOP-In",
	OpSCSIResp: "SCSI Response", OpTMFResp: "Task Management Function Response",
	OpLoginResp: "Login Response", OpTextResp: "Text Response", OpDataIn: "SCSI Data-In",
	OpLogoutResp: "Logout Response", OpR2T: "Ready To Transfer", OpAsync: "Asynchronous Message",
	OpReject: "Reject",
}

func (o Opcode) String() string {
	if s, ok := opNames[o]; ok {
		return s
	}
	return fmt.Sprintf("opcode 0x%02x", uint8(o))
}

// Known reports whether o is an opcode of RFC 7143.
func (o Opcode) Known() bool { _, ok := opNames[o]; return ok }

// BHSLen is the length of a basic header segment.
const BHSLen = 48

// Limits of the framing: a data segment length is 24 bits; the additional
// header segments are at most 255 words.
const (
	MaxDataSegmentLength = 1<<24 - 1
	maxAHSLen            = 255 * 4
)

// ReservedTag is the initiator/target task tag value 0xffffffff.
const ReservedTag = 0xffffffff

// BHS is a basic header segment. Its accessors read and write the fields
// every opcode shares; the typed messages (SCSICommand, DataIn, ...) encode
// and decode the rest.
type BHS [BHSLen]byte

// Opcode returns the opcode without the immediate bit.
func (b *BHS) Opcode() Opcode { return Opcode(b[0] & 0x3f) }

// Immediate reports the I bit (requests only).
func (b *BHS) Immediate() bool { return b[0]&0x40 != 0 }

// Final reports the F bit.
func (b *BHS) Final() bool { return b[1]&0x80 != 0 }

// TotalAHSLength is the length of the additional header segments in bytes.
func (b *BHS) TotalAHSLength() int { return int(b[4]) * 4 }

// DataSegmentLength is the length of the data segment without padding.
func (b *BHS) DataSegmentLength() int {
	return int(b[5])<<16 | int(b[6])<<8 | int(b[7])
}

func (b *BHS) setLengths(ahs, data int) {
	b[4] = byte(ahs / 4)
	b[5], b[6], b[7] = byte(data>>16), byte(data>>8), byte(data)
}

// ITT is the initiator task tag (bytes 16..19).
func (b *BHS) ITT() uint32 { return be32(b[16:]) }

// LUNField is the 8-byte LUN field (bytes 8..15) as a big-endian number.
func (b *BHS) LUNField() uint64 { return binary.BigEndian.Uint64(b[8:]) }

func be32(b []byte) uint32     { return binary.BigEndian.Uint32(b) }
func be16(b []byte) uint16     { return binary.BigEndian.Uint16(b) }
func put32(b []byte, v uint32) { binary.BigEndian.PutUint32(b, v) }
func put16(b []byte, v uint16) { binary.BigEndian.PutUint16(b, v) }
func put64(b []byte, v uint64) { binary.BigEndian.PutUint64(b, v) }
func get64(b []byte) uint64    { return binary.BigEndian.Uint64(b) }
func flag(b byte, m byte) bool { return b&m != 0 }
func setf(v bool, m byte) byte {
	if v {
		return m
	}
	return 0
}
func opByte(o Opcode, imm bool) byte {
	if imm {
		return byte(o) | 0x40
	}
	return byte(o)
}

// EncodeLUN turns a logical unit number into the 8-byte SAM LUN field:
// peripheral device addressing below 256, flat space addressing up to 16383.
func EncodeLUN(lun uint64) uint64 {
	if lun < 256 {
		return lun << 48
	}
	return (0x4000 | lun&0x3fff) << 48
}

// DecodeLUN turns the 8-byte SAM LUN field into a logical unit number. It
// understands peripheral and flat space addressing of the first level; any
// other form is returned unchanged with ok false.
func DecodeLUN(field uint64) (lun uint64, ok bool) {
	if field&0x0000ffffffffffff != 0 {
		return field, false
	}
	top := field >> 48
	switch top >> 14 {
	case 0: // peripheral device addressing, bus 0
		if top&0x3f00 != 0 {
			return field, false
		}
		return top & 0xff, true
	case 1: // flat space
		return top & 0x3fff, true
	}
	return field, false
}

// A Message is one typed basic header segment.
type Message interface {
	// Op is the message's opcode.
	Op() Opcode
	// Encode writes the message's fields into b (the lengths are set by
	// the writer from the PDU's AHS and data).
	Encode(b *BHS)
	// Decode reads the message's fields from b.
	Decode(b *BHS)
}

// NOPOut is a NOP-Out (RFC 7143 11.18).
type NOPOut struct {
	Immediate bool
	LUN       uint64
	ITT       uint32
	TTT       uint32
	CmdSN     uint32
	ExpStatSN uint32
}

func (*NOPOut) Op() Opcode { return OpNOPOut }
func (m *NOPOut) Encode(b *BHS) {
	*b = BHS{}
	b[0], b[1] = opByte(OpNOPOut, m.Immediate), 0x80
	put64(b[8:], m.LUN)
	put32(b[16:], m.ITT)
	put32(b[20:], m.TTT)
	put32(b[24:], m.CmdSN)
	put32(b[28:], m.ExpStatSN)
}
func (m *NOPOut) Decode(b *BHS) {
	*m = NOPOut{Immediate: b.Immediate(), LUN: get64(b[8:]), ITT: be32(b[16:]), TTT: be32(b[20:]),
		CmdSN: be32(b[24:]), ExpStatSN: be32(b[28:])}
}

// NOPIn is a NOP-In (RFC 7143 11.19).
type NOPIn struct {
	LUN      uint64
	ITT      uint32
	TTT      uint32
	StatSN   uint32
	ExpCmdSN uint32
	MaxCmdSN uint32
}

func (*NOPIn) Op() Opcode { return OpNOPIn }
func (m *NOPIn) Encode(b *BHS) {
	*b = BHS{}
	b[0], b[1] = byte(OpNOPIn), 0x80
	put64(b[8:], m.LUN)
	put32(b[16:], m.ITT)
	put32(b[20:], m.TTT)
	put32(b[24:], m.StatSN)
	put32(b[28:], m.ExpCmdSN)
	put32(b[32:], m.MaxCmdSN)
}
func (m *NOPIn) Decode(b *BHS) {
	*m = NOPIn{LUN: get64(b[8:]), ITT: be32(b[16:]), TTT: be32(b[20:]), StatSN: be32(b[24:]),
		ExpCmdSN: be32(b[28:]), MaxCmdSN: be32(b[32:])}
}

// SCSICommand is a SCSI Command (RFC 7143 11.3). CDB holds the first 16
// bytes; a longer CDB continues in an extended-CDB AHS.
type SCSICommand struct {
	Immediate bool
	Final     bool
	Read      bool
	Write     bool
	Attr      uint8 // task attribute, 0..4
	LUN       uint64
	ITT       uint32
	// ExpectedDataTransferLength is the length of the write data (or, with
	// Read alone, of the read data).
	ExpectedDataTransferLength uint32
	CmdSN                      uint32
	ExpStatSN                  uint32
	CDB                        [16]byte
}

func (*SCSICommand) Op() Opcode { return OpSCSICmd }
func (m *SCSICommand) Encode(b *BHS) {
	*b = BHS{}
	b[0] = opByte(OpSCSICmd, m.Immediate)
	b[1] = setf(m.Final, 0x80) | setf(m.Read, 0x40) | setf(m.Write, 0x20) | m.Attr&7
	put64(b[8:], m.LUN)
	put32(b[16:], m.ITT)
	put32(b[20:], m.ExpectedDataTransferLength)
	put32(b[24:], m.CmdSN)
	put32(b[28:], m.ExpStatSN)
	copy(b[32:], m.CDB[:])
}
func (m *SCSICommand) Decode(b *BHS) {
	*m = SCSICommand{Immediate: b.Immediate(), Final: b.Final(), Read: flag(b[1], 0x40), Write: flag(b[1], 0x20),
		Attr: b[1] & 7, LUN: get64(b[8:]), ITT: be32(b[16:]), ExpectedDataTransferLength: be32(b[20:]),
		CmdSN: be32(b[24:]), ExpStatSN: be32(b[28:])}
	copy(m.CDB[:], b[32:48])
}

// SCSIResponse is a SCSI Response (RFC 7143 11.4). Its data segment carries
// a 2-byte sense length and the sense data.
type SCSIResponse struct {
	BidiOverflow  bool // o
	BidiUnderflow bool // u
	Overflow      bool // O
	Underflow     bool // U
	Response      uint8
	Status        uint8
	ITT           uint32
	SNACKTag      uint32
	StatSN        uint32
	ExpCmdSN      uint32
	MaxCmdSN      uint32
	ExpDataSN     uint32
	BidiResidual  uint32
	Residual      uint32
}

func (*SCSIResponse) Op() Opcode { return OpSCSIResp }
func (m *SCSIResponse) Encode(b *BHS) {
	*b = BHS{}
	b[0] = byte(OpSCSIResp)
	b[1] = 0x80 | setf(m.BidiOverflow, 0x10) | setf(m.BidiUnderflow, 0x08) | setf(m.Overflow, 0x04) | setf(m.Underflow, 0x02)
	b[2], b[3] = m.Response, m.Status
	put32(b[16:], m.ITT)
	put32(b[20:], m.SNACKTag)
	put32(b[24:], m.StatSN)
	put32(b[28:], m.ExpCmdSN)
	put32(b[32:], m.MaxCmdSN)
	put32(b[36:], m.ExpDataSN)
	put32(b[40:], m.BidiResidual)
	put32(b[44:], m.Residual)
}
func (m *SCSIResponse) Decode(b *BHS) {
	*m = SCSIResponse{BidiOverflow: flag(b[1], 0x10), BidiUnderflow: flag(b[1], 0x08), Overflow: flag(b[1], 0x04),
		Underflow: flag(b[1], 0x02), Response: b[2], Status: b[3], ITT: be32(b[16:]), SNACKTag: be32(b[20:]),
		StatSN: be32(b[24:]), ExpCmdSN: be32(b[28:]), MaxCmdSN: be32(b[32:]), ExpDataSN: be32(b[36:]),
		BidiResidual: be32(b[40:]), Residual: be32(b[44:])}
}

// Task management function codes (RFC 7143 11.5.1).
const (
	TMFAbortTask        uint8 = 1
	TMFAbortTaskSet     uint8 = 2
	TMFClearACA         uint8 = 3
	TMFClearTaskSet     uint8 = 4
	TMFLogicalUnitReset uint8 = 5
	TMFTargetWarmReset  uint8 = 6
	TMFTargetColdReset  uint8 = 7
	TMFTaskReassign     uint8 = 8
)

// Task management response codes (RFC 7143 11.6.1).
const (
	TMFRespComplete      uint8 = 0
	TMFRespNoTask        uint8 = 1
	TMFRespNoLUN         uint8 = 2
	TMFRespTaskAllegiant uint8 = 3
	TMFRespNoReassign    uint8 = 4
	TMFRespNotSupported  uint8 = 5
	TMFRespAuthFailed    uint8 = 6
	TMFRespRejected      uint8 = 255
)

// TMFRequest is a Task Management Function Request (RFC 7143 11.5).
type TMFRequest struct {
	Immediate     bool
	Function      uint8
	LUN           uint64
	ITT           uint32
	ReferencedTag uint32
	CmdSN         uint32
	ExpStatSN     uint32
	RefCmdSN      uint32
	ExpDataSN     uint32
}

func (*TMFRequest) Op() Opcode { return OpTMFReq }
func (m *TMFRequest) Encode(b *BHS) {
	*b = BHS{}
	b[0], b[1] = opByte(OpTMFReq, m.Immediate), 0x80|m.Function&0x7f
	put64(b[8:], m.LUN)
	put32(b[16:], m.ITT)
	put32(b[20:], m.ReferencedTag)
	put32(b[24:], m.CmdSN)
	put32(b[28:], m.ExpStatSN)
	put32(b[32:], m.RefCmdSN)
	put32(b[36:], m.ExpDataSN)
}
func (m *TMFRequest) Decode(b *BHS) {
	*m = TMFRequest{Immediate: b.Immediate(), Function: b[1] & 0x7f, LUN: get64(b[8:]), ITT: be32(b[16:]),
		ReferencedTag: be32(b[20:]), CmdSN: be32(b[24:]), ExpStatSN: be32(b[28:]), RefCmdSN: be32(b[32:]),
		ExpDataSN: be32(b[36:])}
}

// TMFResponse is a Task Management Function Response (RFC 7143 11.6).
type TMFResponse struct {
	Response uint8
	ITT      uint32
	StatSN   uint32
	ExpCmdSN uint32
	MaxCmdSN uint32
}

func (*TMFResponse) Op() Opcode { return OpTMFResp }
func (m *TMFResponse) Encode(b *BHS) {
	*b = BHS{}
	b[0], b[1], b[2] = byte(OpTMFResp), 0x80, m.Response
	put32(b[16:], m.ITT)
	put32(b[24:], m.StatSN)
	put32(b[28:], m.ExpCmdSN)
	put32(b[32:], m.MaxCmdSN)
}
func (m *TMFResponse) Decode(b *BHS) {
	*m = TMFResponse{Response: b[2], ITT: be32(b[16:]), StatSN: be32(b[24:]), ExpCmdSN: be32(b[28:]), MaxCmdSN: be32(b[32:])}
}

// Login stages (CSG/NSG, RFC 7143 11.12.3).
const (
	StageSecurity    uint8 = 0
	StageOperational uint8 = 1
	StageFullFeature uint8 = 3
)

// LoginRequest is a Login Request (RFC 7143 11.12).
type LoginRequest struct {
	Transit    bool
	Continue   bool
	CSG, NSG   uint8
	VersionMax uint8
	VersionMin uint8
	ISID       [6]byte
	TSIH       uint16
	ITT        uint32
	CID        uint16
	CmdSN      uint32
	ExpStatSN  uint32
}

func (*LoginRequest) Op() Opcode { return OpLoginReq }
func (m *LoginRequest) Encode(b *BHS) {
	*b = BHS{}
	b[0] = opByte(OpLoginReq, true)
	b[1] = setf(m.Transit, 0x80) | setf(m.Continue, 0x40) | (m.CSG&3)<<2 | m.NSG&3
	b[2], b[3] = m.VersionMax, m.VersionMin
	copy(b[8:14], m.ISID[:])
	put16(b[14:], m.TSIH)
	put32(b[16:], m.ITT)
	put16(b[20:], m.CID)
	put32(b[24:], m.CmdSN)
	put32(b[28:], m.ExpStatSN)
}
func (m *LoginRequest) Decode(b *BHS) {
	*m = LoginRequest{Transit: flag(b[1], 0x80), Continue: flag(b[1], 0x40), CSG: b[1] >> 2 & 3, NSG: b[1] & 3,
		VersionMax: b[2], VersionMin: b[3], TSIH: be16(b[14:]), ITT: be32(b[16:]), CID: be16(b[20:]),
		CmdSN: be32(b[24:]), ExpStatSN: be32(b[28:])}
	copy(m.ISID[:], b[8:14])
}

// Login status classes and details (RFC 7143 11.13.5).
const (
	LoginSuccess            uint16 = 0x0000
	LoginRedirectTemp       uint16 = 0x0101
	LoginRedirectPerm       uint16 = 0x0102
	LoginInitiatorError     uint16 = 0x0200
	LoginAuthFailed         uint16 = 0x0201
	LoginForbidden          uint16 = 0x0202
	LoginNotFound           uint16 = 0x0203
	LoginTargetRemoved      uint16 = 0x0204
	LoginUnsupportedVersion uint16 = 0x0205
	LoginTooManyConnections uint16 = 0x0206
	LoginMissingParameter   uint16 = 0x0207
	LoginNoSessionSpanning  uint16 = 0x0208
	LoginUnsupportedSession uint16 = 0x0209
	LoginSessionNotExist    uint16 = 0x020a
	LoginInvalidRequest     uint16 = 0x020b
	LoginTargetError        uint16 = 0x0300
	LoginServiceUnavailable uint16 = 0x0301
	LoginOutOfResources     uint16 = 0x0302
)

// LoginResponse is a Login Response (RFC 7143 11.13). Status is the class in
// the high byte and the detail in the low byte.
type LoginResponse struct {
	Transit       bool
	Continue      bool
	CSG, NSG      uint8
	VersionMax    uint8
	VersionActive uint8
	ISID          [6]byte
	TSIH          uint16
	ITT           uint32
	StatSN        uint32
	ExpCmdSN      uint32
	MaxCmdSN      uint32
	Status        uint16
}

func (*LoginResponse) Op() Opcode { return OpLoginResp }
func (m *LoginResponse) Encode(b *BHS) {
	*b = BHS{}
	b[0] = byte(OpLoginResp)
	b[1] = setf(m.Transit, 0x80) | setf(m.Continue, 0x40) | (m.CSG&3)<<2 | m.NSG&3
	b[2], b[3] = m.VersionMax, m.VersionActive
	copy(b[8:14], m.ISID[:])
	put16(b[14:], m.TSIH)
	put32(b[16:], m.ITT)
	put32(b[24:], m.StatSN)
	put32(b[28:], m.ExpCmdSN)
	put32(b[32:], m.MaxCmdSN)
	put16(b[36:], m.Status)
}
func (m *LoginResponse) Decode(b *BHS) {
	*m = LoginResponse{Transit: flag(b[1], 0x80), Continue: flag(b[1], 0x40), CSG: b[1] >> 2 & 3, NSG: b[1] & 3,
		VersionMax: b[2], VersionActive: b[3], TSIH: be16(b[14:]), ITT: be32(b[16:]), StatSN: be32(b[24:]),
		ExpCmdSN: be32(b[28:]), MaxCmdSN: be32(b[32:]), Status: be16(b[36:])}
	copy(m.ISID[:], b[8:14])
}

// TextRequest is a Text Request (RFC 7143 11.10).
type TextRequest struct {
	Immediate bool
	Final     bool
	Continue  bool
	LUN       uint64
	ITT       uint32
	TTT       uint32
	CmdSN     uint32
	ExpStatSN uint32
}

func (*TextRequest) Op() Opcode { return OpTextReq }
func (m *TextRequest) Encode(b *BHS) {
	*b = BHS{}
	b[0], b[1] = opByte(OpTextReq, m.Immediate), setf(m.Final, 0x80)|setf(m.Continue, 0x40)
	put64(b[8:], m.LUN)
	put32(b[16:], m.ITT)
	put32(b[20:], m.TTT)
	put32(b[24:], m.CmdSN)
	put32(b[28:], m.ExpStatSN)
}
func (m *TextRequest) Decode(b *BHS) {
	*m = TextRequest{Immediate: b.Immediate(), Final: b.Final(), Continue: flag(b[1], 0x40), LUN: get64(b[8:]),
		ITT: be32(b[16:]), TTT: be32(b[20:]), CmdSN: be32(b[24:]), ExpStatSN: be32(b[28:])}
}

// TextResponse is a Text Response (RFC 7143 11.11).
type TextResponse struct {
	Final    bool
	Continue bool
	LUN      uint64
	ITT      uint32
	TTT      uint32
	StatSN   uint32
	ExpCmdSN uint32
	MaxCmdSN uint32
}

func (*TextResponse) Op() Opcode { return OpTextResp }
func (m *TextResponse) Encode(b *BHS) {
	*b = BHS{}
	b[0], b[1] = byte(OpTextResp), setf(m.Final, 0x80)|setf(m.Continue, 0x40)
	put64(b[8:], m.LUN)
	put32(b[16:], m.ITT)
	put32(b[20:], m.TTT)
	put32(b[24:], m.StatSN)
	put32(b[28:], m.ExpCmdSN)
	put32(b[32:], m.MaxCmdSN)
}
func (m *TextResponse) Decode(b *BHS) {
	*m = TextResponse{Final: b.Final(), Continue: flag(b[1], 0x40), LUN: get64(b[8:]), ITT: be32(b[16:]),
		TTT: be32(b[20:]), StatSN: be32(b[24:]), ExpCmdSN: be32(b[28:]), MaxCmdSN: be32(b[32:])}
}

// DataOut is a SCSI Data-Out (RFC 7143 11.7).
type DataOut struct {
	Final     bool
	LUN       uint64
	ITT       uint32
	TTT       uint32
	ExpStatSN uint32
	DataSN    uint32
	Offset    uint32
}

func (*DataOut) Op() Opcode { return OpDataOut }
func (m *DataOut) Encode(b *BHS) {
	*b = BHS{}
	b[0], b[1] = byte(OpDataOut), setf(m.Final, 0x80)
	put64(b[8:], m.LUN)
	put32(b[16:], m.ITT)
	put32(b[20:], m.TTT)
	put32(b[28:], m.ExpStatSN)
	put32(b[36:], m.DataSN)
	put32(b[40:], m.Offset)
}
func (m *DataOut) Decode(b *BHS) {
	*m = DataOut{Final: b.Final(), LUN: get64(b[8:]), ITT: be32(b[16:]), TTT: be32(b[20:]),
		ExpStatSN: be32(b[28:]), DataSN: be32(b[36:]), Offset: be32(b[40:])}
}

// DataIn is a SCSI Data-In (RFC 7143 11.7). With HasStatus (the S bit) it
// carries the command's status and residual: phase collapse.
type DataIn struct {
	Final     bool
	Ack       bool
	Overflow  bool
	Underflow bool
	HasStatus bool
	Status    uint8
	LUN       uint64
	ITT       uint32
	TTT       uint32
	StatSN    uint32
	ExpCmdSN  uint32
	MaxCmdSN  uint32
	DataSN    uint32
	Offset    uint32
	Residual  uint32
}

func (*DataIn) Op() Opcode { return OpDataIn }
func (m *DataIn) Encode(b *BHS) {
	*b = BHS{}
	b[0] = byte(OpDataIn)
	b[1] = setf(m.Final, 0x80) | setf(m.Ack, 0x40) | setf(m.Overflow, 0x04) | setf(m.Underflow, 0x02) | setf(m.HasStatus, 0x01)
	if m.HasStatus {
		b[3] = m.Status
	}
	put64(b[8:], m.LUN)
	put32(b[16:], m.ITT)
	put32(b[20:], m.TTT)
	put32(b[24:], m.StatSN)
	put32(b[28:], m.ExpCmdSN)
	put32(b[32:], m.MaxCmdSN)
	put32(b[36:], m.DataSN)
	put32(b[40:], m.Offset)
	put32(b[44:], m.Residual)
}
func (m *DataIn) Decode(b *BHS) {
	*m = DataIn{Final: b.Final(), Ack: flag(b[1], 0x40), Overflow: flag(b[1], 0x04), Underflow: flag(b[1], 0x02),
		HasStatus: flag(b[1], 0x01), LUN: get64(b[8:]), ITT: be32(b[16:]), TTT: be32(b[20:]),
		StatSN: be32(b[24:]), ExpCmdSN: be32(b[28:]), MaxCmdSN: be32(b[32:]), DataSN: be32(b[36:]),
		Offset: be32(b[40:]), Residual: be32(b[44:])}
	if m.HasStatus {
		m.Status = b[3]
	}
}

// Logout reason codes (RFC 7143 11.14.1).
const (
	LogoutCloseSession    uint8 = 0
	LogoutCloseConnection uint8 = 1
	LogoutRemoveForRecov  uint8 = 2
)

// LogoutRequest is a Logout Request (RFC 7143 11.14).
type LogoutRequest struct {
	Immediate bool
	Reason    uint8
	ITT       uint32
	CID       uint16
	CmdSN     uint32
	ExpStatSN uint32
}

func (*LogoutRequest) Op() Opcode { return OpLogoutReq }
func (m *LogoutRequest) Encode(b *BHS) {
	*b = BHS{}
	b[0], b[1] = opByte(OpLogoutReq, m.Immediate), 0x80|m.Reason&0x7f
	put32(b[16:], m.ITT)
	put16(b[20:], m.CID)
	put32(b[24:], m.CmdSN)
	put32(b[28:], m.ExpStatSN)
}
func (m *LogoutRequest) Decode(b *BHS) {
	*m = LogoutRequest{Immediate: b.Immediate(), Reason: b[1] & 0x7f, ITT: be32(b[16:]), CID: be16(b[20:]),
		CmdSN: be32(b[24:]), ExpStatSN: be32(b[28:])}
}

// LogoutResponse is a Logout Response (RFC 7143 11.15).
type LogoutResponse struct {
	Response    uint8
	ITT         uint32
	StatSN      uint32
	ExpCmdSN    uint32
	MaxCmdSN    uint32
	Time2Wait   uint16
	Time2Retain uint16
}

func (*LogoutResponse) Op() Opcode { return OpLogoutResp }
func (m *LogoutResponse) Encode(b *BHS) {
	*b = BHS{}
	b[0], b[1], b[2] = byte(OpLogoutResp), 0x80, m.Response
	put32(b[16:], m.ITT)
	put32(b[24:], m.StatSN)
	put32(b[28:], m.ExpCmdSN)
	put32(b[32:], m.MaxCmdSN)
	put16(b[40:], m.Time2Wait)
	put16(b[42:], m.Time2Retain)
}
func (m *LogoutResponse) Decode(b *BHS) {
	*m = LogoutResponse{Response: b[2], ITT: be32(b[16:]), StatSN: be32(b[24:]), ExpCmdSN: be32(b[28:]),
		MaxCmdSN: be32(b[32:]), Time2Wait: be16(b[40:]), Time2Retain: be16(b[42:])}
}

// R2T is a Ready To Transfer (RFC 7143 11.8).
type R2T struct {
	LUN      uint64
	ITT      uint32
	TTT      uint32
	StatSN   uint32
	ExpCmdSN uint32
	MaxCmdSN uint32
	R2TSN    uint32
	Offset   uint32
	Length   uint32
}

func (*R2T) Op() Opcode { return OpR2T }
func (m *R2T) Encode(b *BHS) {
	*b = BHS{}
	b[0], b[1] = byte(OpR2T), 0x80
	put64(b[8:], m.LUN)
	put32(b[16:], m.ITT)
	put32(b[20:], m.TTT)
	put32(b[24:], m.StatSN)
	put32(b[28:], m.ExpCmdSN)
	put32(b[32:], m.MaxCmdSN)
	put32(b[36:], m.R2TSN)
	put32(b[40:], m.Offset)
	put32(b[44:], m.Length)
}
func (m *R2T) Decode(b *BHS) {
	*m = R2T{LUN: get64(b[8:]), ITT: be32(b[16:]), TTT: be32(b[20:]), StatSN: be32(b[24:]), ExpCmdSN: be32(b[28:]),
		MaxCmdSN: be32(b[32:]), R2TSN: be32(b[36:]), Offset: be32(b[40:]), Length: be32(b[44:])}
}

// Asynchronous event codes (RFC 7143 11.9.1).
const (
	AsyncSCSIEvent      uint8 = 0
	AsyncLogoutRequest  uint8 = 1
	AsyncDropConnection uint8 = 2
	AsyncDropAll        uint8 = 3
	AsyncRenegotiate    uint8 = 4
	AsyncVendor         uint8 = 255
)

// AsyncMessage is an Asynchronous Message (RFC 7143 11.9); a SCSI event
// carries sense data in its data segment, as a SCSI Response does.
type AsyncMessage struct {
	LUN        uint64
	StatSN     uint32
	ExpCmdSN   uint32
	MaxCmdSN   uint32
	Event      uint8
	VendorCode uint8
	Parameter1 uint16
	Parameter2 uint16
	Parameter3 uint16
}

func (*AsyncMessage) Op() Opcode { return OpAsync }
func (m *AsyncMessage) Encode(b *BHS) {
	*b = BHS{}
	b[0], b[1] = byte(OpAsync), 0x80
	put64(b[8:], m.LUN)
	put32(b[16:], ReservedTag)
	put32(b[24:], m.StatSN)
	put32(b[28:], m.ExpCmdSN)
	put32(b[32:], m.MaxCmdSN)
	b[36], b[37] = m.Event, m.VendorCode
	put16(b[38:], m.Parameter1)
	put16(b[40:], m.Parameter2)
	put16(b[42:], m.Parameter3)
}
func (m *AsyncMessage) Decode(b *BHS) {
	*m = AsyncMessage{LUN: get64(b[8:]), StatSN: be32(b[24:]), ExpCmdSN: be32(b[28:]), MaxCmdSN: be32(b[32:]),
		Event: b[36], VendorCode: b[37], Parameter1: be16(b[38:]), Parameter2: be16(b[40:]), Parameter3: be16(b[42:])}
}

// Reject reasons (RFC 7143 11.17.1).
const (
	RejectDataDigest       uint8 = 0x02
	RejectSNACK            uint8 = 0x03
	RejectProtocolError    uint8 = 0x04
	RejectNotSupported     uint8 = 0x05
	RejectImmediateCmd     uint8 = 0x06
	RejectTaskInProgress   uint8 = 0x07
	RejectInvalidDataAck   uint8 = 0x08
	RejectInvalidField     uint8 = 0x09
	RejectOutOfResources   uint8 = 0x0a
	RejectNegotiationReset uint8 = 0x0b
	RejectWaitingForLogout uint8 = 0x0c
)

// Reject is a Reject (RFC 7143 11.17); its data segment is the complete
// header of the rejected PDU.
type Reject struct {
	Reason   uint8
	StatSN   uint32
	ExpCmdSN uint32
	MaxCmdSN uint32
	DataSN   uint32 // DataSN or R2TSN
}

func (*Reject) Op() Opcode { return OpReject }
func (m *Reject) Encode(b *BHS) {
	*b = BHS{}
	b[0], b[1], b[2] = byte(OpReject), 0x80, m.Reason
	put32(b[16:], ReservedTag)
	put32(b[24:], m.StatSN)
	put32(b[28:], m.ExpCmdSN)
	put32(b[32:], m.MaxCmdSN)
	put32(b[36:], m.DataSN)
}
func (m *Reject) Decode(b *BHS) {
	*m = Reject{Reason: b[2], StatSN: be32(b[24:]), ExpCmdSN: be32(b[28:]), MaxCmdSN: be32(b[32:]), DataSN: be32(b[36:])}
}

// SNACKRequest is a SNACK Request (RFC 7143 11.16); this package's target
// runs at ErrorRecoveryLevel 0 and rejects it, the codec still knows it.
type SNACKRequest struct {
	Type      uint8
	LUN       uint64
	ITT       uint32
	TTT       uint32
	ExpStatSN uint32
	BegRun    uint32
	RunLength uint32
}

func (*SNACKRequest) Op() Opcode { return OpSNACKReq }
func (m *SNACKRequest) Encode(b *BHS) {
	*b = BHS{}
	b[0], b[1] = byte(OpSNACKReq), 0x80|m.Type&0x0f
	put64(b[8:], m.LUN)
	put32(b[16:], m.ITT)
	put32(b[20:], m.TTT)
	put32(b[28:], m.ExpStatSN)
	put32(b[40:], m.BegRun)
	put32(b[44:], m.RunLength)
}
func (m *SNACKRequest) Decode(b *BHS) {
	*m = SNACKRequest{Type: b[1] & 0x0f, LUN: get64(b[8:]), ITT: be32(b[16:]), TTT: be32(b[20:]),
		ExpStatSN: be32(b[28:]), BegRun: be32(b[40:]), RunLength: be32(b[44:])}
}

// NewMessage returns an empty typed message for an opcode, or nil for an
// opcode RFC 7143 does not define.
func NewMessage(o Opcode) Message {
	switch o {
	case OpNOPOut:
		return &NOPOut{}
	case OpSCSICmd:
		return &SCSICommand{}
	case OpTMFReq:
		return &TMFRequest{}
	case OpLoginReq:
		return &LoginRequest{}
	case OpTextReq:
		return &TextRequest{}
	case OpDataOut:
		return &DataOut{}
	case OpLogoutReq:
		return &LogoutRequest{}
	case OpSNACKReq:
		return &SNACKRequest{}
	case OpNOPIn:
		return &NOPIn{}
	case OpSCSIResp:
		return &SCSIResponse{}
	case OpTMFResp:
		return &TMFResponse{}
	case OpLoginResp:
		return &LoginResponse{}
	case OpTextResp:
		return &TextResponse{}
	case OpDataIn:
		return &DataIn{}
	case OpLogoutResp:
		return &LogoutResponse{}
	case OpR2T:
		return &R2T{}
	case OpAsync:
		return &AsyncMessage{}
	case OpReject:
		return &Reject{}
	}
	return nil
}

// AHS types (RFC 7143 11.2.2.1).
const (
	AHSExtendedCDB    uint8 = 1
	AHSBidiReadLength uint8 = 2
)

// AppendAHS appends one additional header segment (length, type, a
// reserved byte, the specific bytes, padding to 4) to dst.
func AppendAHS(dst []byte, typ uint8, specific []byte) []byte {
	n := len(specific) + 1 // the AHSLength counts the reserved byte
	dst = append(dst, byte(n>>8), byte(n), typ, 0)
	dst = append(dst, specific...)
	for len(dst)%4 != 0 {
		dst = append(dst, 0)
	}
	return dst
}

// WalkAHS calls fn for each additional header segment in ahs, with its type
// and its specific bytes (after the reserved byte). It fails on a segment
// that runs past the end.
func WalkAHS(ahs []byte, fn func(typ uint8, specific []byte)) error {
	for len(ahs) > 0 {
		if len(ahs) < 4 {
			return fmt.Errorf("iscsi: %d trailing bytes in the additional header segments", len(ahs))
		}
		n := int(be16(ahs))
		if n < 1 || 3+n > len(ahs) {
			return fmt.Errorf("iscsi: additional header segment of length %d runs past the %d bytes left", n, len(ahs))
		}
		fn(ahs[2], ahs[4:3+n])
		ahs = ahs[pad4(3+n):]
	}
	return nil
}

func pad4(n int) int { return (n + 3) &^ 3 }

// PDU is one protocol data unit: its basic header, additional header
// segments and data segment (without padding or digests).
type PDU struct {
	BHS  BHS
	AHS  []byte
	Data []byte

	own []byte // ReadPDU's buffer for a data segment longer than its reader's
}

// Encode sets the PDU's header from m and its data segment to data (the
// slice is kept, not copied).
func (p *PDU) Encode(m Message, data []byte) {
	m.Encode(&p.BHS)
	p.AHS = p.AHS[:0]
	p.Data = data
}

// Errors a PDU reader returns. A header digest error leaves the stream
// unsynchronised: the connection must be dropped. A data digest error
// leaves it in step (the PDU was read whole): the PDU can be rejected.
var (
	ErrHeaderDigest = errors.New("iscsi: header digest mismatch")
	ErrDataDigest   = errors.New("iscsi: data digest mismatch")
)

// TooLongError reports a data segment longer than the reader accepts. The
// segment was not read: the stream is out of step and the connection must
// be dropped.
type TooLongError struct {
	Op         Opcode
	Length     int
	MaxAllowed int
}

func (e *TooLongError) Error() string {
	return fmt.Sprintf("iscsi: %v carries a %d-byte data segment, more than the %d bytes negotiated (MaxRecvDataSegmentLength)",
		e.Op, e.Length, e.MaxAllowed)
}

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// CRC32C returns the iSCSI digest of b.
func CRC32C(b []byte) uint32 { return crc32.Checksum(b, castagnoli) }

// Framer reads and writes PDUs on one connection, with the digests and the
// data segment limit in force. Its buffers are reused: a PDU read by
// ReadPDU holds slices that stay valid until the next ReadPDU. A Framer is
// not safe for concurrent use of the same direction; reading and writing
// may run in parallel.
type Framer struct {
	r *bufio.Reader
	w *bufio.Writer

	// HeaderDigest and DataDigest switch the CRC32C digests on (after
	// login negotiated them).
	HeaderDigest bool
	DataDigest   bool
	// MaxRecvDataSegmentLength bounds the data segment ReadPDU accepts
	// (0: MaxDataSegmentLength).
	MaxRecvDataSegmentLength int

	rbuf [4]byte
	dbuf [4]byte
	wbuf [BHSLen + maxAHSLen + 8]byte
	zero [8]byte
}

// NewFramer returns a framer over rw with bufSize-byte buffers (at least
// 4096).
func NewFramer(r io.Reader, w io.Writer, bufSize int) *Framer {
	bufSize = max(bufSize, 4096)
	f := &Framer{}
	if r != nil {
		f.r = bufio.NewReaderSize(r, bufSize)
	}
	if w != nil {
		f.w = bufio.NewWriterSize(w, bufSize)
	}
	return f
}

// ReadPDU reads one PDU into p, reusing p.AHS and p's buffers; p.Data may
// be a slice of the framer's read buffer. Either way it is valid until the
// next ReadPDU. On ErrDataDigest p holds the whole PDU (header and data).
func (f *Framer) ReadPDU(p *PDU) error {
	if _, err := io.ReadFull(f.r, p.BHS[:]); err != nil {
		return err
	}
	ahsLen := p.BHS.TotalAHSLength()
	dataLen := p.BHS.DataSegmentLength()
	if ahsLen > 0 {
		p.AHS = grow(p.AHS, ahsLen)
		if _, err := io.ReadFull(f.r, p.AHS); err != nil {
			return noEOF(err)
		}
	} else {
		p.AHS = p.AHS[:0]
	}
	if f.HeaderDigest {
		if _, err := io.ReadFull(f.r, f.rbuf[:]); err != nil {
			return noEOF(err)
		}
		crc := crc32.Update(0, castagnoli, p.BHS[:])
		crc = crc32.Update(crc, castagnoli, p.AHS)
		if crc != leUint32(f.rbuf[:]) {
			return ErrHeaderDigest
		}
	}
	limit := f.MaxRecvDataSegmentLength
	if limit <= 0 {
		limit = MaxDataSegmentLength
	}
	if dataLen > limit {
		return &TooLongError{Op: p.BHS.Opcode(), Length: dataLen, MaxAllowed: limit}
	}
	padded := pad4(dataLen)
	digest := 0
	if f.DataDigest && dataLen > 0 {
		digest = 4
	}
	var seg, dig []byte
	if dataLen > 0 && padded+digest <= f.r.Size() {
		// The segment (and its digest) fits the read buffer: leave it
		// there, no copy (valid until the next ReadPDU, as promised: the
		// buffer moves only when more is read).
		b, err := f.r.Peek(padded + digest)
		if err != nil {
			return noEOF(err)
		}
		_, _ = f.r.Discard(padded + digest)
		seg, dig = b[:padded:padded], b[padded:]
	} else {
		p.own = grow(p.own, padded)
		seg = p.own
		if dataLen > 0 {
			if _, err := io.ReadFull(f.r, seg); err != nil {
				return noEOF(err)
			}
		}
		if digest > 0 {
			if _, err := io.ReadFull(f.r, f.rbuf[:]); err != nil {
				return noEOF(err)
			}
			dig = f.rbuf[:]
		}
	}
	p.Data = seg[:dataLen:dataLen]
	if digest > 0 && CRC32C(seg) != leUint32(dig) {
		return ErrDataDigest
	}
	return nil
}

// WritePDU writes p (setting its header's lengths from p.AHS and p.Data)
// and flushes it to the connection.
func (f *Framer) WritePDU(p *PDU) error {
	if err := f.writePDU(p); err != nil {
		return err
	}
	return f.w.Flush()
}

// WritePDUNoFlush writes p into the buffer without flushing; Flush sends
// what is buffered. A sequence of Data-In PDUs goes out in fewer writes.
func (f *Framer) WritePDUNoFlush(p *PDU) error { return f.writePDU(p) }

// Flush sends the buffered PDUs.
func (f *Framer) Flush() error { return f.w.Flush() }

func (f *Framer) writePDU(p *PDU) error {
	if len(p.AHS)%4 != 0 || len(p.AHS) > maxAHSLen {
		return fmt.Errorf("iscsi: additional header segments of %d bytes: must be a multiple of 4 up to %d", len(p.AHS), maxAHSLen)
	}
	if len(p.Data) > MaxDataSegmentLength {
		return fmt.Errorf("iscsi: data segment of %d bytes is longer than the 24-bit limit %d", len(p.Data), MaxDataSegmentLength)
	}
	p.BHS.setLengths(len(p.AHS), len(p.Data))
	h := f.wbuf[:0]
	h = append(h, p.BHS[:]...)
	h = append(h, p.AHS...)
	if f.HeaderDigest {
		h = leAppend(h, CRC32C(h))
	}
	if _, err := f.w.Write(h); err != nil {
		return err
	}
	if len(p.Data) == 0 {
		return nil
	}
	if _, err := f.w.Write(p.Data); err != nil {
		return err
	}
	padLen := pad4(len(p.Data)) - len(p.Data)
	if _, err := f.w.Write(f.zero[:padLen]); err != nil {
		return err
	}
	if f.DataDigest {
		crc := crc32.Update(CRC32C(p.Data), castagnoli, f.zero[:padLen])
		if _, err := f.w.Write(leAppend(f.dbuf[:0], crc)); err != nil {
			return err
		}
	}
	return nil
}

// The digests travel least significant byte first, the byte order in
// which the CRC register is shifted out (RFC 7143 13.1 and its examples).
func leUint32(b []byte) uint32           { return binary.LittleEndian.Uint32(b) }
func leAppend(b []byte, v uint32) []byte { return binary.LittleEndian.AppendUint32(b, v) }

func grow(b []byte, n int) []byte {
	if cap(b) < n {
		return make([]byte, n, max(n, 2*cap(b)))
	}
	return b[:n]
}

func noEOF(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}
