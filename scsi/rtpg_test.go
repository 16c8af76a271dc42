package scsi

import (
	"bytes"
	"encoding/binary"
	"errors"
	"reflect"
	"testing"
)

// Fixtures after the SPC-4 layouts.

// tpgDesc builds one target port group descriptor.
func tpgDesc(b0, b1 byte, id uint16, status, vendor byte, ports ...uint16) []byte {
	d := []byte{b0, b1, byte(id >> 8), byte(id), 0, status, vendor, byte(len(ports))}
	for _, p := range ports {
		d = append(d, 0, 0, byte(p>>8), byte(p))
	}
	return d
}

// rtpgResp builds a response: the header (4 bytes, or 8 with the extended
// format) with a return data length covering everything after byte 3.
func rtpgResp(extended bool, itt byte, descs ...[]byte) []byte {
	b := []byte{0, 0, 0, 0}
	if extended {
		b = append(b, 0x10, itt, 0, 0)
	}
	for _, d := range descs {
		b = append(b, d...)
	}
	binary.BigEndian.PutUint32(b, uint32(len(b)-4))
	return b
}

var (
	// PREF, AO, all support bits (T O LBD U S AN AO), group 1, altered by
	// STPG, vendor 0xaa, ports 1 and 2.
	descAO = tpgDesc(0x80, 0xdf, 1, 1, 0xaa, 1, 2)
	// standby, S and AO supported, group 0x102, altered implicitly, port 0x8003.
	descS = tpgDesc(0x02, 0x05, 0x102, 2, 0, 0x8003)
	// transitioning, no ports.
	descT = tpgDesc(0x0f, 0x80, 7, 0, 0)

	rtpgTwo      = rtpgResp(false, 0, descAO, descS)
	rtpgExtended = rtpgResp(true, 60, descAO, descS, descT)
)

func TestParseRTPG(t *testing.T) {
	groupAO := TPGDescriptor{Pref: true, State: ActiveOptimized, TSup: true, OSup: true, LBDSup: true, USup: true, SSup: true, ANSup: true, AOSup: true, ID: 1, StatusCode: 1, VendorSpecific: 0xaa, Ports: []uint16{1, 2}}
	groupS := TPGDescriptor{State: Standby, SSup: true, AOSup: true, ID: 0x102, StatusCode: 2, Ports: []uint16{0x8003}}
	groupT := TPGDescriptor{State: Transitioning, TSup: true, ID: 7}
	padded := append(append([]byte(nil), rtpgTwo...), make([]byte, 100)...)
	for _, c := range []struct {
		name    string
		in      []byte
		want    RTPGResponse
		wantErr string
	}{
		{"two groups", rtpgTwo, RTPGResponse{Length: len(rtpgTwo), Groups: []TPGDescriptor{groupAO, groupS}}, ""},
		{"extended header", rtpgExtended, RTPGResponse{Length: len(rtpgExtended), Extended: true, ImplicitTransitionTime: 60, Groups: []TPGDescriptor{groupAO, groupS, groupT}}, ""},
		{"allocation longer than the data", padded, RTPGResponse{Length: len(rtpgTwo), Groups: []TPGDescriptor{groupAO, groupS}}, ""},
		{"no groups", []byte{0, 0, 0, 0}, RTPGResponse{Length: 4}, ""},
		{"truncated after one group", rtpgTwo[:4+len(descAO)+3], RTPGResponse{Length: len(rtpgTwo), Groups: []TPGDescriptor{groupAO}}, "truncated"},
		{"truncated in the first group", rtpgTwo[:10], RTPGResponse{Length: len(rtpgTwo)}, "truncated"},
		{"port count overruns", rtpgResp(false, 0, tpgDesc(0, 0, 1, 0, 0, 1)[:8+4-4], []byte{}), RTPGResponse{}, "overrunning"},
		{"trailing bytes", rtpgResp(false, 0, descS, []byte{1, 2, 3}), RTPGResponse{}, "trailing"},
		{"too short", []byte{0, 0}, RTPGResponse{}, "too short"},
	} {
		t.Run(c.name, func(t *testing.T) {
			got, err := ParseRTPG(c.in)
			if c.wantErr != "" {
				if err == nil || !bytes.Contains([]byte(err.Error()), []byte(c.wantErr)) {
					t.Fatalf("ParseRTPG error = %v, want one containing %q", err, c.wantErr)
				}
				if c.wantErr == "truncated" && !errors.Is(err, ErrRTPGTruncated) {
					t.Fatalf("error %v is not ErrRTPGTruncated", err)
				}
				if c.want.Length == 0 {
					return
				}
			} else if err != nil {
				t.Fatalf("ParseRTPG: %v", err)
			}
			if !reflect.DeepEqual(got, c.want) {
				t.Fatalf("ParseRTPG\n got %+v\nwant %+v", got, c.want)
			}
		})
	}
}

func TestTPGConversion(t *testing.T) {
	r, err := ParseRTPG(rtpgExtended)
	if err != nil {
		t.Fatal(err)
	}
	var got []TPG
	for _, g := range r.Groups {
		got = append(got, g.TPG())
	}
	want := []TPG{
		{ID: 1, State: ActiveOptimized, Pref: true, Supported: []State{ActiveOptimized, ActiveNonOptimized, Standby, Unavailable, Offline, Transitioning}, Ports: []uint16{1, 2}},
		{ID: 0x102, State: Standby, Supported: []State{ActiveOptimized, Standby}, Ports: []uint16{0x8003}},
		{ID: 7, State: Transitioning, Supported: []State{Transitioning}, Ports: []uint16{}},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("TPGs\n got %+v\nwant %+v", got, want)
	}
}

func FuzzRTPG(f *testing.F) {
	for _, s := range rtpgSeeds() {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := ParseRTPG(b)
		if err != nil && !errors.Is(err, ErrRTPGTruncated) {
			return
		}
		// Everything parsed lies within the data.
		used := 4
		if r.Extended {
			used = 8
		}
		for _, g := range r.Groups {
			used += 8 + 4*len(g.Ports)
			_ = g.TPG()
		}
		if used > len(b) || (err == nil && used != min(len(b), r.Length)) {
			t.Fatalf("parsed %d bytes of %d (length %d)", used, len(b), r.Length)
		}
	})
}
