package scsi

import (
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
)

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
func PortFromDesignators(ds []Designator) (pi PortInfo, ok bool) {
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
