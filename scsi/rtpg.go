package scsi

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// TPGDescriptor is one target port group descriptor of the REPORT TARGET
// PORT GROUPS response, every field.
type TPGDescriptor struct {
	Pref  bool
	State State
	// Support bits of byte 1.
	TSup, OSup, LBDSup, USup, SSup, ANSup, AOSup bool
	ID                                           uint16
	StatusCode                                   uint8 // 0 none, 1 altered by STPG, 2 altered by implicit transition
	VendorSpecific                               uint8
	Ports                                        []uint16 // relative target port identifiers
}

// TPG converts the descriptor to the alua package's form.
func (d TPGDescriptor) TPG() TPG {
	t := TPG{ID: d.ID, State: d.State, Pref: d.Pref, Ports: d.Ports}
	if t.Ports == nil {
		t.Ports = []uint16{}
	}
	for _, s := range []struct {
		ok bool
		st State
	}{{d.AOSup, ActiveOptimized}, {d.ANSup, ActiveNonOptimized}, {d.SSup, Standby}, {d.USup, Unavailable}, {d.OSup, Offline}, {d.TSup, Transitioning}} {
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
			State:          State(d[0] & 0x0f),
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
