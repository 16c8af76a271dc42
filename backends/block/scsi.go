package block

// Pure SCSI helpers: CDB builders and parsers of the responses, after the
// SPC-4 layouts. No I/O here, so every one is table-tested and fuzzed.

import (
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"sort"
	"strings"

	"github.com/mpathfs/mpathfs/alua"
	"github.com/mpathfs/mpathfs/ioerr"
)

// SCSI operation codes and service actions used here.
const (
	opTestUnitReady  = 0x00
	opInquiry        = 0x12
	opMaintenanceIn  = 0xa3
	opMaintenanceOut = 0xa4
	saTargetPortGrps = 0x0a // REPORT / SET TARGET PORT GROUPS
)

// SCSI status bytes.
const (
	statusGood           = 0x00
	statusCheckCondition = 0x02
	statusBusy           = 0x08
	statusReservConflict = 0x18
	statusTaskSetFull    = 0x28
	statusACAActive      = 0x30
	statusTaskAborted    = 0x40
	statusConditionMet   = 0x04
	statusIntermediate   = 0x10
	statusIntermCondMet  = 0x14
)

// CDBTestUnitReady builds TEST UNIT READY.
func CDBTestUnitReady() []byte { return make([]byte, 6) }

// CDBInquiry builds INQUIRY: the standard page when evpd is false, else the
// VPD page given.
func CDBInquiry(evpd bool, page byte, alloc uint16) []byte {
	c := []byte{opInquiry, 0, 0, 0, 0, 0}
	if evpd {
		c[1] = 1
		c[2] = page
	}
	binary.BigEndian.PutUint16(c[3:], alloc)
	return c
}

// CDBReportTPGs builds REPORT TARGET PORT GROUPS (MAINTENANCE IN, service
// action 0x0A) asking for the length-only header format, which every ALUA
// target supports; ParseRTPG accepts the extended header too.
func CDBReportTPGs(alloc uint32) []byte {
	c := make([]byte, 12)
	c[0] = opMaintenanceIn
	c[1] = saTargetPortGrps
	binary.BigEndian.PutUint32(c[6:], alloc)
	return c
}

// CDBSetTPGs builds SET TARGET PORT GROUPS (MAINTENANCE OUT, service action
// 0x0A) for a parameter list of paramLen bytes.
func CDBSetTPGs(paramLen uint32) []byte {
	c := make([]byte, 12)
	c[0] = opMaintenanceOut
	c[1] = saTargetPortGrps
	binary.BigEndian.PutUint32(c[6:], paramLen)
	return c
}

// STPGParams builds the SET TARGET PORT GROUPS parameter list: a 4-byte
// reserved header, then one 4-byte descriptor (state, reserved, TPG id) per
// group, in group order.
func STPGParams(states map[uint16]alua.State) []byte {
	ids := make([]int, 0, len(states))
	for id := range states {
		ids = append(ids, int(id))
	}
	sort.Ints(ids)
	p := make([]byte, 4+4*len(ids))
	for i, id := range ids {
		d := p[4+4*i:]
		d[0] = byte(states[uint16(id)]) & 0x0f
		binary.BigEndian.PutUint16(d[2:], uint16(id))
	}
	return p
}

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

// ParseVPD80 returns the unit serial number from VPD page 0x80.
func ParseVPD80(b []byte) (string, error) {
	if len(b) < 4 || b[1] != 0x80 {
		return "", errors.New("not a unit serial number VPD page (0x80)")
	}
	n := int(binary.BigEndian.Uint16(b[2:]))
	if 4+n > len(b) {
		return "", fmt.Errorf("VPD 0x80 page length %d exceeds the %d bytes returned", n, len(b)-4)
	}
	return strings.TrimSpace(printable(b[4 : 4+n])), nil
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

// Designator types, associations and code sets of VPD page 0x83.
const (
	DesigVendor       = 0x0
	DesigT10          = 0x1
	DesigEUI64        = 0x2
	DesigNAA          = 0x3
	DesigRelativePort = 0x4
	DesigTPG          = 0x5
	DesigLUGroup      = 0x6
	DesigMD5          = 0x7
	DesigSCSIName     = 0x8

	AssocLU         = 0x0
	AssocTargetPort = 0x1
	AssocTarget     = 0x2

	CodeSetBinary = 0x1
	CodeSetASCII  = 0x2
	CodeSetUTF8   = 0x3
)

// Designator is one designation descriptor of VPD page 0x83.
type Designator struct {
	ProtocolID  uint8
	CodeSet     uint8
	PIV         bool
	Association uint8
	Type        uint8
	Value       []byte // shares the page's memory
}

// ParseVPD83 parses the device identification VPD page (0x83) into its
// designators. A descriptor that overruns the page is an error.
func ParseVPD83(b []byte) ([]Designator, error) {
	if len(b) < 4 || b[1] != 0x83 {
		return nil, errors.New("not a device identification VPD page (0x83)")
	}
	n := int(binary.BigEndian.Uint16(b[2:]))
	if 4+n > len(b) {
		return nil, fmt.Errorf("VPD 0x83 page length %d exceeds the %d bytes returned", n, len(b)-4)
	}
	page := b[4 : 4+n]
	var out []Designator
	for len(page) > 0 {
		if len(page) < 4 {
			return out, fmt.Errorf("VPD 0x83: %d trailing bytes, too few for a designator header", len(page))
		}
		l := int(page[3])
		if 4+l > len(page) {
			return out, fmt.Errorf("VPD 0x83: designator length %d overruns the page", l)
		}
		out = append(out, Designator{
			ProtocolID:  page[0] >> 4,
			CodeSet:     page[0] & 0x0f,
			PIV:         page[1]&0x80 != 0,
			Association: (page[1] >> 4) & 3,
			Type:        page[1] & 0x0f,
			Value:       page[4 : 4+l],
		})
		page = page[4+l:]
	}
	return out, nil
}

// WWIDFromDesignators picks the LU's name the way Linux does for its sysfs
// wwid: NAA first (the longest, i.e. IEEE Registered Extended, wins), then
// EUI-64, then the T10 vendor identification, then a SCSI name string.
// It returns "naa.<hex>", "eui.<hex>", "t10.<text>" or the name, or "".
func WWIDFromDesignators(ds []Designator) string {
	best, bestRank := "", 0
	for _, d := range ds {
		if d.Association != AssocLU || len(d.Value) == 0 {
			continue
		}
		var id string
		rank := 0
		switch d.Type {
		case DesigNAA:
			if d.CodeSet != CodeSetBinary {
				continue
			}
			id, rank = "naa."+hex.EncodeToString(d.Value), 400+len(d.Value)
		case DesigEUI64:
			if d.CodeSet != CodeSetBinary {
				continue
			}
			id, rank = "eui."+hex.EncodeToString(d.Value), 300+len(d.Value)
		case DesigT10:
			id, rank = "t10."+strings.TrimRight(printable(d.Value), " "), 200
		case DesigSCSIName:
			id, rank = strings.TrimRight(printable(d.Value), " "), 100
		default:
			continue
		}
		if rank > bestRank {
			best, bestRank = id, rank
		}
	}
	return best
}

// PortFromDesignators reads the relative target port and target port group
// designators (association: target port) into a PortInfo; ok is false if
// either is missing.
func PortFromDesignators(ds []Designator) (pi alua.PortInfo, ok bool) {
	var havePort, haveTPG bool
	for _, d := range ds {
		if d.Association != AssocTargetPort || len(d.Value) < 4 {
			continue
		}
		switch d.Type {
		case DesigRelativePort:
			pi.RelativePort, havePort = binary.BigEndian.Uint16(d.Value[2:]), true
		case DesigTPG:
			pi.TPG, haveTPG = binary.BigEndian.Uint16(d.Value[2:]), true
		}
	}
	return pi, havePort && haveTPG
}

// TPGDescriptor is one target port group descriptor of the REPORT TARGET
// PORT GROUPS response, every field.
type TPGDescriptor struct {
	Pref  bool
	State alua.State
	// Support bits of byte 1.
	TSup, OSup, LBDSup, USup, SSup, ANSup, AOSup bool
	ID                                           uint16
	StatusCode                                   uint8 // 0 none, 1 altered by STPG, 2 altered by implicit transition
	VendorSpecific                               uint8
	Ports                                        []uint16 // relative target port identifiers
}

// TPG converts the descriptor to the alua package's form.
func (d TPGDescriptor) TPG() alua.TPG {
	t := alua.TPG{ID: d.ID, State: d.State, Pref: d.Pref, Ports: d.Ports}
	if t.Ports == nil {
		t.Ports = []uint16{}
	}
	for _, s := range []struct {
		ok bool
		st alua.State
	}{{d.AOSup, alua.ActiveOptimized}, {d.ANSup, alua.ActiveNonOptimized}, {d.SSup, alua.Standby}, {d.USup, alua.Unavailable}, {d.OSup, alua.Offline}, {d.TSup, alua.Transitioning}} {
		if s.ok {
			t.Supported = append(t.Supported, s.st)
		}
	}
	return t
}

// RTPGResponse is a parsed REPORT TARGET PORT GROUPS response.
type RTPGResponse struct {
	// Length is the RETURN DATA LENGTH + 4: the bytes the target had to
	// send. More than were parsed means the allocation length was short.
	Length   int
	Extended bool // extended header (format type 1)
	// ImplicitTransitionTime in seconds (extended header only).
	ImplicitTransitionTime int
	Groups                 []TPGDescriptor
}

// ParseRTPG parses a REPORT TARGET PORT GROUPS response. If the target had
// more to say than b holds (RTPGResponse.Length > len(b)) it parses the
// descriptors that are complete and returns ErrRTPGTruncated.
func ParseRTPG(b []byte) (RTPGResponse, error) {
	var r RTPGResponse
	if len(b) < 4 {
		return r, fmt.Errorf("RTPG response too short: %d bytes", len(b))
	}
	r.Length = int(binary.BigEndian.Uint32(b)) + 4
	if r.Length < 4 { // overflow of a huge length
		return r, fmt.Errorf("RTPG return data length %d is invalid", binary.BigEndian.Uint32(b))
	}
	data := b
	truncated := false
	if r.Length < len(b) {
		data = b[:r.Length]
	} else if r.Length > len(b) {
		truncated = true
	}
	off := 4
	if len(data) >= 8 && data[4]&0x70 == 0x10 {
		r.Extended = true
		r.ImplicitTransitionTime = int(data[5])
		off = 8
	}
	for off < len(data) {
		d := data[off:]
		if len(d) < 8 {
			if truncated {
				return r, ErrRTPGTruncated
			}
			return r, fmt.Errorf("RTPG: %d trailing bytes, too few for a descriptor", len(d))
		}
		count := int(d[7])
		need := 8 + 4*count
		if need > len(d) {
			if truncated {
				return r, ErrRTPGTruncated
			}
			return r, fmt.Errorf("RTPG: descriptor of group %d lists %d ports, overrunning the response", binary.BigEndian.Uint16(d[2:]), count)
		}
		g := TPGDescriptor{
			Pref:           d[0]&0x80 != 0,
			State:          alua.State(d[0] & 0x0f),
			TSup:           d[1]&0x80 != 0,
			OSup:           d[1]&0x40 != 0,
			LBDSup:         d[1]&0x10 != 0,
			USup:           d[1]&0x08 != 0,
			SSup:           d[1]&0x04 != 0,
			ANSup:          d[1]&0x02 != 0,
			AOSup:          d[1]&0x01 != 0,
			ID:             binary.BigEndian.Uint16(d[2:]),
			StatusCode:     d[5],
			VendorSpecific: d[6],
		}
		for i := 0; i < count; i++ {
			g.Ports = append(g.Ports, binary.BigEndian.Uint16(d[8+4*i+2:]))
		}
		r.Groups = append(r.Groups, g)
		off += need
	}
	if truncated {
		return r, ErrRTPGTruncated
	}
	return r, nil
}

// ErrRTPGTruncated: the REPORT TARGET PORT GROUPS response did not fit the
// allocation length; ask again with RTPGResponse.Length.
var ErrRTPGTruncated = errors.New("RTPG response truncated by the allocation length")

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

// ClassifySense maps sense data to the error taxonomy:
//   - NO SENSE, RECOVERED ERROR: none;
//   - NOT READY 04/0A (ALUA transitioning), 04/01 (becoming ready), 04/07
//     (operation in progress), 04/09 (self-test in progress): retryable;
//   - NOT READY 04/0B and 04/0C (ALUA standby, unavailable) and any other
//     NOT READY (04/03 is a passive controller on many arrays): not ready;
//   - the ESXi permanent device loss codes 05/25/00 (LU not supported),
//     04/4C/00 (LU failed self-configuration), 02/3E/01 and 02/3E/03 (LU
//     failure, failed self-test): permanent loss;
//   - UNIT ATTENTION (access states changed, reset, capacity changed …)
//     and ABORTED COMMAND: retryable;
//   - MEDIUM ERROR, ILLEGAL REQUEST, DATA PROTECT, BLANK CHECK, COPY
//     ABORTED, VOLUME OVERFLOW, MISCOMPARE: device error;
//   - HARDWARE ERROR and anything else: path failure (another path, another
//     controller, may get through).
func ClassifySense(s ioerr.Sense) ioerr.Class {
	switch {
	case s == ioerr.Sense{Key: ioerr.SenseIllegalRequest, ASC: 0x25, ASCQ: 0x00},
		s == ioerr.Sense{Key: 0x04, ASC: 0x4c, ASCQ: 0x00},
		s == ioerr.Sense{Key: ioerr.SenseNotReady, ASC: 0x3e, ASCQ: 0x01},
		s == ioerr.Sense{Key: ioerr.SenseNotReady, ASC: 0x3e, ASCQ: 0x03}:
		return ioerr.ClassPermanentLoss
	}
	switch s.Key {
	case 0x00, 0x01: // NO SENSE, RECOVERED ERROR
		return ioerr.ClassNone
	case ioerr.SenseNotReady:
		if s.ASC == 0x04 {
			switch s.ASCQ {
			case 0x01, 0x07, 0x09, 0x0a:
				return ioerr.ClassRetryable
			}
		}
		return ioerr.ClassNotReady
	case ioerr.SenseUnitAttention, ioerr.SenseAbortedCommand:
		return ioerr.ClassRetryable
	case ioerr.SenseMediumError, ioerr.SenseIllegalRequest,
		0x07, 0x08, 0x0a, 0x0d, 0x0e: // DATA PROTECT, BLANK CHECK, COPY ABORTED, VOLUME OVERFLOW, MISCOMPARE
		return ioerr.ClassDeviceError
	}
	return ioerr.ClassPathFailure // HARDWARE ERROR (0x04), vendor specific, reserved
}

// Host status values of sg_io_hdr that mean "try again", not "path dead".
const (
	didBusBusy     = 0x02
	didSoftError   = 0x0b
	didImmRetry    = 0x0c
	didRequeue     = 0x0d
	driverSenseBit = 0x08
)

// SGResult is the outcome of one SG_IO command, as the sg_io_hdr reports it.
type SGResult struct {
	Status       uint8
	HostStatus   uint16
	DriverStatus uint16
	Sense        []byte
}

// ResultError turns an SG_IO outcome into nil or a classified error for op.
func ResultError(op string, r SGResult) error {
	if r.HostStatus != 0 {
		c := ioerr.ClassPathFailure
		switch r.HostStatus {
		case didBusBusy, didSoftError, didImmRetry, didRequeue:
			c = ioerr.ClassRetryable
		}
		return ioerr.NewError(c, op, fmt.Errorf("SCSI host status 0x%02x", r.HostStatus))
	}
	switch r.Status {
	case statusGood, statusConditionMet, statusIntermediate, statusIntermCondMet:
		if r.DriverStatus&^driverSenseBit != 0 {
			return ioerr.NewError(ioerr.ClassPathFailure, op, fmt.Errorf("SCSI driver status 0x%02x", r.DriverStatus))
		}
		return nil
	case statusCheckCondition:
		s, _, err := ParseSense(r.Sense)
		if err != nil {
			return ioerr.NewError(ioerr.ClassPathFailure, op, fmt.Errorf("CHECK CONDITION without usable sense data: %v", err))
		}
		c := ClassifySense(s)
		if c == ioerr.ClassNone {
			return nil
		}
		return &ioerr.Error{Class: c, Op: op, Sense: &s, Err: errors.New("CHECK CONDITION")}
	case statusBusy, statusTaskSetFull, statusACAActive, statusTaskAborted:
		return ioerr.NewError(ioerr.ClassRetryable, op, fmt.Errorf("SCSI status 0x%02x", r.Status))
	case statusReservConflict:
		return ioerr.NewError(ioerr.ClassDeviceError, op, errors.New("SCSI reservation conflict"))
	}
	return ioerr.NewError(ioerr.ClassPathFailure, op, fmt.Errorf("SCSI status 0x%02x", r.Status))
}
