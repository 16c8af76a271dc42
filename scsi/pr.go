package scsi

import (
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"strings"
)

// PRType is a persistent reservation type (SPC-4 6.15.1, table 212).
type PRType uint8

// The six reservation types.
const (
	PRWriteExclusive         PRType = 0x1 // WE
	PRExclusiveAccess        PRType = 0x3 // EA
	PRWriteExclusiveRegOnly  PRType = 0x5 // WERO
	PRExclusiveAccessRegOnly PRType = 0x6 // EARO
	PRWriteExclusiveAllReg   PRType = 0x7 // WEAR
	PRExclusiveAccessAllReg  PRType = 0x8 // EAAR
)

// Valid reports whether t is one of the six types.
func (t PRType) Valid() bool {
	switch t {
	case PRWriteExclusive, PRExclusiveAccess, PRWriteExclusiveRegOnly, PRExclusiveAccessRegOnly, PRWriteExclusiveAllReg, PRExclusiveAccessAllReg:
		return true
	}
	return false
}

// AllRegistrants: every registered I_T nexus holds the reservation (WEAR,
// EAAR).
func (t PRType) AllRegistrants() bool {
	return t == PRWriteExclusiveAllReg || t == PRExclusiveAccessAllReg
}

// RegistrantsOnly: the registrants-only types (WERO, EARO).
func (t PRType) RegistrantsOnly() bool {
	return t == PRWriteExclusiveRegOnly || t == PRExclusiveAccessRegOnly
}

// ExclusiveAccess: the type keeps reads from non-holders too (EA, EARO, EAAR).
func (t PRType) ExclusiveAccess() bool {
	return t == PRExclusiveAccess || t == PRExclusiveAccessRegOnly || t == PRExclusiveAccessAllReg
}

// String is the type's common abbreviation.
func (t PRType) String() string {
	switch t {
	case PRWriteExclusive:
		return "WE"
	case PRExclusiveAccess:
		return "EA"
	case PRWriteExclusiveRegOnly:
		return "WERO"
	case PRExclusiveAccessRegOnly:
		return "EARO"
	case PRWriteExclusiveAllReg:
		return "WEAR"
	case PRExclusiveAccessAllReg:
		return "EAAR"
	}
	return fmt.Sprintf("type(0x%x)", uint8(t))
}

// ParsePRType accepts an abbreviation (WE, EA, WERO, EARO, WEAR, EAAR).
func ParsePRType(s string) (PRType, error) {
	for t := PRType(1); t <= 8; t++ {
		if t.Valid() && strings.EqualFold(s, t.String()) {
			return t, nil
		}
	}
	return 0, fmt.Errorf("unknown persistent reservation type %q (want WE, EA, WERO, EARO, WEAR or EAAR)", s)
}

// PERSISTENT RESERVE IN service actions.
const (
	PRInReadKeys           = 0x00
	PRInReadReservation    = 0x01
	PRInReportCapabilities = 0x02
	PRInReadFullStatus     = 0x03
)

// PERSISTENT RESERVE OUT service actions.
const (
	PROutRegister                  = 0x00
	PROutReserve                   = 0x01
	PROutRelease                   = 0x02
	PROutClear                     = 0x03
	PROutPreempt                   = 0x04
	PROutPreemptAndAbort           = 0x05
	PROutRegisterAndIgnoreExisting = 0x06
	PROutRegisterAndMove           = 0x07
)

// PROutParams is the basic PERSISTENT RESERVE OUT parameter list (SPC-4
// 6.16.3): 24 bytes, then, with SPEC_I_PT, a list of TransportIDs.
type PROutParams struct {
	Key, SAKey              uint64
	SpecIPT, AllTgPt, APTPL bool
	TransportIDs            []byte // the raw TransportID list after SPEC_I_PT
}

// PROutParamLen is the length of the basic parameter list.
const PROutParamLen = 24

// ParsePROutParams parses the basic parameter list.
func ParsePROutParams(b []byte) (PROutParams, error) {
	if len(b) < PROutParamLen {
		return PROutParams{}, fmt.Errorf("PERSISTENT RESERVE OUT parameter list of %d bytes: want at least %d", len(b), PROutParamLen)
	}
	p := PROutParams{
		Key:     binary.BigEndian.Uint64(b[0:]),
		SAKey:   binary.BigEndian.Uint64(b[8:]),
		SpecIPT: b[20]&0x08 != 0,
		AllTgPt: b[20]&0x04 != 0,
		APTPL:   b[20]&0x01 != 0,
	}
	if p.SpecIPT && len(b) >= 28 {
		n := int(binary.BigEndian.Uint32(b[24:]))
		if 28+n > len(b) {
			return p, fmt.Errorf("PERSISTENT RESERVE OUT: TransportID list of %d bytes overruns the %d-byte parameter list", n, len(b))
		}
		p.TransportIDs = b[28 : 28+n]
	}
	return p, nil
}

// Encode builds the basic parameter list (no TransportIDs).
func (p PROutParams) Encode() []byte {
	b := make([]byte, PROutParamLen)
	binary.BigEndian.PutUint64(b[0:], p.Key)
	binary.BigEndian.PutUint64(b[8:], p.SAKey)
	if p.SpecIPT {
		b[20] |= 0x08
	}
	if p.AllTgPt {
		b[20] |= 0x04
	}
	if p.APTPL {
		b[20] |= 0x01
	}
	return b
}

// RegisterAndMoveParams is the REGISTER AND MOVE parameter list (SPC-4
// 6.16.4): the reservation moves to the I_T nexus named by the
// TransportID and RelativeTargetPort.
type RegisterAndMoveParams struct {
	Key, SAKey         uint64
	Unreg, APTPL       bool
	RelativeTargetPort uint16
	TransportID        TransportID
}

// ParseRegisterAndMove parses a REGISTER AND MOVE parameter list.
func ParseRegisterAndMove(b []byte) (RegisterAndMoveParams, error) {
	if len(b) < 24 {
		return RegisterAndMoveParams{}, fmt.Errorf("REGISTER AND MOVE parameter list of %d bytes: want at least 24", len(b))
	}
	p := RegisterAndMoveParams{
		Key:                binary.BigEndian.Uint64(b[0:]),
		SAKey:              binary.BigEndian.Uint64(b[8:]),
		Unreg:              b[17]&0x02 != 0,
		APTPL:              b[17]&0x01 != 0,
		RelativeTargetPort: binary.BigEndian.Uint16(b[18:]),
	}
	n := int(binary.BigEndian.Uint32(b[20:]))
	if n < 4 || 24+n > len(b) {
		return p, fmt.Errorf("REGISTER AND MOVE: TransportID length %d does not fit the %d-byte parameter list", n, len(b))
	}
	t, _, err := ParseTransportID(b[24 : 24+n])
	if err != nil {
		return p, err
	}
	p.TransportID = t
	return p, nil
}

// Encode builds the REGISTER AND MOVE parameter list.
func (p RegisterAndMoveParams) Encode() []byte {
	tid := p.TransportID.Encode()
	b := make([]byte, 24+len(tid))
	binary.BigEndian.PutUint64(b[0:], p.Key)
	binary.BigEndian.PutUint64(b[8:], p.SAKey)
	if p.Unreg {
		b[17] |= 0x02
	}
	if p.APTPL {
		b[17] |= 0x01
	}
	binary.BigEndian.PutUint16(b[18:], p.RelativeTargetPort)
	binary.BigEndian.PutUint32(b[20:], uint32(len(tid)))
	copy(b[24:], tid)
	return b
}

// ProtocolISCSI is the iSCSI protocol identifier of TransportIDs and
// designators (SPC-4 table 362).
const ProtocolISCSI = 0x5

// TransportID names an initiator port for persistent reservations. Only
// the iSCSI format is understood: the initiator's name, and with format 1
// its ISID (a port rather than the whole initiator device).
type TransportID struct {
	Name string
	// ISID (12 hex digits) is empty for format 0 (all the initiator's
	// ports).
	ISID string
}

// Encode builds an iSCSI TransportID (format 1 when ISID is set), padded
// to a multiple of four bytes with at least one NUL.
func (t TransportID) Encode() []byte {
	s := t.Name
	format := byte(0)
	if t.ISID != "" {
		s += ",i,0x" + t.ISID
		format = 1
	}
	n := len(s) + 1
	n = (n + 3) &^ 3
	b := make([]byte, 4+n)
	b[0] = format<<6 | ProtocolISCSI
	binary.BigEndian.PutUint16(b[2:], uint16(n))
	copy(b[4:], s)
	return b
}

// ParseTransportID parses one iSCSI TransportID and returns its length.
func ParseTransportID(b []byte) (TransportID, int, error) {
	if len(b) < 4 {
		return TransportID{}, 0, fmt.Errorf("TransportID of %d bytes: want at least 4", len(b))
	}
	if b[0]&0x0f != ProtocolISCSI {
		return TransportID{}, 0, fmt.Errorf("TransportID protocol 0x%x: only iSCSI (0x5) is supported", b[0]&0x0f)
	}
	format := b[0] >> 6
	n := int(binary.BigEndian.Uint16(b[2:]))
	if 4+n > len(b) {
		return TransportID{}, 0, fmt.Errorf("TransportID additional length %d overruns the %d bytes given", n, len(b)-4)
	}
	s := string(b[4 : 4+n])
	if i := strings.IndexByte(s, 0); i >= 0 {
		s = s[:i]
	}
	t := TransportID{Name: s}
	switch format {
	case 0:
	case 1:
		i := strings.Index(s, ",i,0x")
		if i < 0 {
			i = strings.Index(s, ",i,0X")
		}
		if i < 0 {
			return TransportID{}, 0, fmt.Errorf("iSCSI TransportID format 1 %q lacks the ,i,0x separator", s)
		}
		name, isid := s[:i], s[i+5:]
		if _, err := hex.DecodeString(isid); err != nil || len(isid) != 12 {
			return TransportID{}, 0, fmt.Errorf("iSCSI TransportID %q: ISID %q is not 12 hex digits", s, isid)
		}
		t = TransportID{Name: name, ISID: strings.ToLower(isid)}
	default:
		return TransportID{}, 0, fmt.Errorf("iSCSI TransportID format %d is reserved", format)
	}
	if t.Name == "" {
		return TransportID{}, 0, fmt.Errorf("iSCSI TransportID names no initiator")
	}
	return t, 4 + n, nil
}

// CDBPersistentReserveIn builds PERSISTENT RESERVE IN.
func CDBPersistentReserveIn(sa byte, alloc uint16) []byte {
	c := make([]byte, 10)
	c[0] = OpPersistentReserveIn
	c[1] = sa & 0x1f
	binary.BigEndian.PutUint16(c[7:], alloc)
	return c
}

// CDBPersistentReserveOut builds PERSISTENT RESERVE OUT (scope LU).
func CDBPersistentReserveOut(sa byte, t PRType, paramLen uint32) []byte {
	c := make([]byte, 10)
	c[0] = OpPersistentReserveOut
	c[1] = sa & 0x1f
	c[2] = byte(t) & 0x0f
	binary.BigEndian.PutUint32(c[5:], paramLen)
	return c
}
