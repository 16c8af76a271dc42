package scsi

// CDB builders, after the SPC-4 layouts. No I/O here, so every one is
// table-tested.

import (
	"encoding/binary"
	"sort"
)

// CDBTestUnitReady builds TEST UNIT READY.
func CDBTestUnitReady() []byte { return make([]byte, 6) }

// CDBInquiry builds INQUIRY: the standard page when evpd is false, else the
// VPD page given.
func CDBInquiry(evpd bool, page byte, alloc uint16) []byte {
	c := []byte{OpInquiry, 0, 0, 0, 0, 0}
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
	c[0] = OpMaintenanceIn
	c[1] = OpTargetPortGroupsSA
	binary.BigEndian.PutUint32(c[6:], alloc)
	return c
}

// CDBSetTPGs builds SET TARGET PORT GROUPS (MAINTENANCE OUT, service action
// 0x0A) for a parameter list of paramLen bytes.
func CDBSetTPGs(paramLen uint32) []byte {
	c := make([]byte, 12)
	c[0] = OpMaintenanceOut
	c[1] = OpTargetPortGroupsSA
	binary.BigEndian.PutUint32(c[6:], paramLen)
	return c
}

// STPGParams builds the SET TARGET PORT GROUPS parameter list: a 4-byte
// reserved header, then one 4-byte descriptor (state, reserved, TPG id) per
// group, in group order.
func STPGParams(states map[uint16]State) []byte {
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
