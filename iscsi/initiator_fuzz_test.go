package iscsi

import (
	"context"
	"io"
	"net"
	"testing"
	"time"
)

func encodePDU(m Message, data []byte) []byte {
	var p PDU
	p.Encode(m, data)
	var out []byte
	w := writerFunc(func(b []byte) (int, error) { out = append(out, b...); return len(b), nil })
	fr := NewFramer(nil, w, 4096)
	_ = fr.WritePDU(&p)
	return out
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(b []byte) (int, error) { return f(b) }

// FuzzInitiatorReplies feeds arbitrary bytes, as the target's answer, to a
// session with one command out (a read when the input's length is even, a
// write needing R2Ts when odd). Whatever comes, the command ends (the
// target then hangs up) and nothing panics.
func FuzzInitiatorReplies(f *testing.F) {
	win := func(exp uint32) (uint32, uint32) { return exp, exp + 32 }
	e, m := win(2)
	f.Add(encodePDU(&SCSIResponse{ITT: 1, StatSN: 1, ExpCmdSN: e, MaxCmdSN: m}, nil))
	f.Add(encodePDU(&SCSIResponse{ITT: 1, Status: 2, StatSN: 1, ExpCmdSN: e, MaxCmdSN: m}, []byte{0, 18, 0x70, 0, 6, 0, 0, 0, 0, 10, 0, 0, 0, 0, 0x29, 0, 0, 0, 0, 0}))
	f.Add(append(encodePDU(&DataIn{ITT: 1, Offset: 0, ExpCmdSN: e, MaxCmdSN: m}, make([]byte, 2048)),
		encodePDU(&DataIn{ITT: 1, Final: true, HasStatus: true, Offset: 2048, ExpCmdSN: e, MaxCmdSN: m}, make([]byte, 2048))...))
	f.Add(append(encodePDU(&R2T{ITT: 1, TTT: 9, Offset: 8192, Length: 8192, ExpCmdSN: e, MaxCmdSN: m}, nil), 0))
	f.Add(encodePDU(&NOPIn{ITT: ReservedTag, TTT: 5, ExpCmdSN: e, MaxCmdSN: m}, nil))
	f.Add(encodePDU(&Reject{Reason: RejectProtocolError}, make([]byte, 48)))
	f.Add(encodePDU(&AsyncMessage{Event: AsyncLogoutRequest, ExpCmdSN: e, MaxCmdSN: m}, nil))
	f.Fuzz(func(t *testing.T, reply []byte) {
		a, b := net.Pipe()
		s := &Session{cfg: InitiatorConfig{Address: "fuzz", TargetName: "iqn.2026-01.x:t", InitiatorName: testIQN}}
		s.cfg.defaults()
		cc := newClientConn(s, a, 1)
		cc.params = DefaultParams()
		cc.fr.MaxRecvDataSegmentLength = 65536
		cc.updateWindow(1, 32)
		cc.start()
		s.mu.cc = cc
		target := make(chan struct{})
		go func() {
			defer close(target)
			fr := NewFramer(b, b, 4096)
			var p PDU
			if fr.ReadPDU(&p) != nil {
				b.Close()
				return
			}
			done := make(chan struct{})
			go func() { // swallow what the initiator sends next
				defer close(done)
				var q PDU
				for fr.ReadPDU(&q) == nil {
				}
			}()
			_ = b.SetWriteDeadline(time.Now().Add(2 * time.Second))
			_, _ = b.Write(reply)
			b.Close()
			<-done
		}()
		task := &Task{LUN: 1, CDB: cdbRW16(0x88, 0, 8), DataIn: make([]byte, 4096)}
		if len(reply)%2 == 1 {
			task = &Task{LUN: 1, CDB: cdbRW16(0x8a, 0, 32), DataOut: make([]byte, 16384), Mutating: true}
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_, _ = s.Do(ctx, task)
		cancel()
		s.Close()
		<-target
	})
}

// FuzzInitiatorLogin feeds arbitrary bytes, as the target's answers, to a
// login (with CHAP and mutual CHAP, so every stage's parsing runs): Dial
// ends with an error or a session, within its timeout, and nothing panics.
func FuzzInitiatorLogin(f *testing.F) {
	ok := func(csg, nsg uint8, transit bool, keys Text) []byte {
		return encodePDU(&LoginResponse{Transit: transit, CSG: csg, NSG: nsg, ISID: [6]byte{0xc0, 0, 0, 0, 0, 1}, TSIH: 1, ExpCmdSN: 1, MaxCmdSN: 8}, keys.Marshal())
	}
	var seed []byte
	seed = append(seed, ok(0, 0, false, Text{{"AuthMethod", "CHAP"}})...)
	seed = append(seed, ok(0, 0, false, Text{{"CHAP_A", "5"}, {"CHAP_I", "1"}, {"CHAP_C", "0x0102030405060708"}})...)
	seed = append(seed, ok(0, 1, true, Text{{"CHAP_N", "t"}, {"CHAP_R", "0x00112233445566778899aabbccddeeff"}})...)
	seed = append(seed, ok(1, 3, true, Text{{"HeaderDigest", "None"}, {"MaxRecvDataSegmentLength", "8192"}, {"MaxBurstLength", "65536"}})...)
	f.Add(seed)
	f.Add(ok(0, 1, true, Text{{"AuthMethod", "None"}}))
	f.Add(encodePDU(&LoginResponse{Status: LoginAuthFailed, ISID: [6]byte{0xc0, 0, 0, 0, 0, 1}}, nil))
	f.Fuzz(func(t *testing.T, replies []byte) {
		a, b := net.Pipe()
		done := make(chan struct{})
		go func() {
			defer close(done)
			go func() { _, _ = io.Copy(io.Discard, b) }()
			_ = b.SetWriteDeadline(time.Now().Add(2 * time.Second))
			_, _ = b.Write(replies)
			b.Close()
		}()
		cfg := InitiatorConfig{Address: "fuzz", TargetName: "iqn.2026-01.x:t", InitiatorName: testIQN, ISID: [6]byte{0xc0, 0, 0, 0, 0, 1},
			CHAPUser: "u", CHAPSecret: "s", MutualUser: "t", MutualSecret: "m", LoginTimeout: 2 * time.Second,
			Dialer: func(context.Context, string, string) (net.Conn, error) { return a, nil }}
		s, err := Dial(context.Background(), cfg)
		if err == nil {
			s.Close()
		}
		a.Close()
		<-done
	})
}
