package iscsi

import (
	"context"
	"errors"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/mpathfs/mpathfs/ioerr"
)

// fakeTarget is a scripted target for the initiator's tests: it logs in
// any initiator (no authentication) and hands every full-feature PDU to
// the test's function, which answers through the framer (or sends
// garbage).
type fakeTarget struct {
	ln     net.Listener
	wg     sync.WaitGroup
	mu     sync.Mutex
	conns  []net.Conn
	logins int
}

type fakeConn struct {
	nc     net.Conn
	fr     *Framer
	statSN uint32
	cmdSN  uint32
}

// send writes one PDU with the window open wide.
func (c *fakeConn) send(m Message, data []byte) error {
	var p PDU
	p.Encode(m, data)
	return c.fr.WritePDU(&p)
}

func startFake(t *testing.T, handle func(c *fakeConn, p *PDU) error) *fakeTarget {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	f := &fakeTarget{ln: ln}
	t.Cleanup(func() {
		ln.Close()
		f.mu.Lock()
		for _, c := range f.conns {
			c.Close()
		}
		f.mu.Unlock()
		f.wg.Wait()
	})
	f.wg.Go(func() {
		for {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			f.mu.Lock()
			f.conns = append(f.conns, nc)
			f.mu.Unlock()
			f.wg.Go(func() { f.serve(nc, handle) })
		}
	})
	return f
}

func (f *fakeTarget) serve(nc net.Conn, handle func(c *fakeConn, p *PDU) error) {
	defer nc.Close()
	c := &fakeConn{nc: nc, fr: NewFramer(nc, nc, 4096)}
	var p PDU
	for {
		if err := c.fr.ReadPDU(&p); err != nil {
			return
		}
		if p.BHS.Opcode() != OpLoginReq {
			break
		}
		var req LoginRequest
		req.Decode(&p.BHS)
		t, _ := ParseText(p.Data)
		var ans Text
		if req.CSG == StageOperational {
			neg := NewNegotiator(Params{MaxRecvDataSegmentLength: 8192, MaxBurstLength: 262144, FirstBurstLength: 65536,
				InitialR2T: false, ImmediateData: true, MaxConnections: 1, MaxOutstandingR2T: 1, DataPDUInOrder: true, DataSequenceInOrder: true})
			for _, kv := range t {
				if v, err := neg.Answer(kv.Key, kv.Value); err == nil && kv.Key != "MaxRecvDataSegmentLength" {
					ans.Add(kv.Key, v)
				}
			}
			ans.Add("MaxRecvDataSegmentLength", "8192")
		}
		c.cmdSN = req.CmdSN
		resp := &LoginResponse{Transit: req.Transit, CSG: req.CSG, NSG: req.NSG, ISID: req.ISID, TSIH: 1, ITT: req.ITT,
			StatSN: c.statSN, ExpCmdSN: req.CmdSN, MaxCmdSN: req.CmdSN + 64}
		c.statSN++
		full := req.Transit && req.NSG == StageFullFeature
		if full {
			// Counted before the answer goes out: a caller whose login
			// returned must see it (after the send, the count raced it).
			f.mu.Lock()
			f.logins++
			f.mu.Unlock()
		}
		if err := c.send(resp, ans.Marshal()); err != nil {
			return
		}
		if full {
			if err := c.fr.ReadPDU(&p); err != nil {
				return
			}
			break
		}
	}
	for {
		if err := handle(c, &p); err != nil {
			return
		}
		if err := c.fr.ReadPDU(&p); err != nil {
			return
		}
	}
}

func (f *fakeTarget) Logins() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.logins
}

func fakeSession(t *testing.T, f *fakeTarget, mod func(*InitiatorConfig)) *Session {
	t.Helper()
	cfg := InitiatorConfig{Address: f.ln.Addr().String(), TargetName: "iqn.2026-01.io.mpathfs.test:fake", InitiatorName: testIQN,
		LoginTimeout: 2 * time.Second, TMFTimeout: 500 * time.Millisecond}
	if mod != nil {
		mod(&cfg)
	}
	s, err := Dial(context.Background(), cfg)
	require.NoError(t, err)
	t.Cleanup(func() { s.Close() })
	return s
}

var readCDB = cdbRW16(0x88, 0, 8)

// TestInitiatorHostileTarget: whatever a target sends in answer to a
// command, the command ends with a path failure (the connection is
// dropped), never a hang or a panic.
func TestInitiatorHostileTarget(t *testing.T) {
	cases := []struct {
		name  string
		reply func(c *fakeConn, cmd *SCSICommand) error
		// stalls: the garbage announces more bytes than it sends, so only
		// the command's deadline ends the wait
		stalls bool
	}{
		{"garbage", func(c *fakeConn, _ *SCSICommand) error {
			_, err := c.nc.Write([]byte("HTTP/1.1 400 Bad Request\r\n\r\n this is not iSCSI at all, is it? no......"))
			return err
		}, true},
		{"unknown opcode", func(c *fakeConn, cmd *SCSICommand) error {
			var b BHS
			b[0] = 0x3a
			_, err := c.nc.Write(b[:])
			return err
		}, false},
		{"wrong task tag", func(c *fakeConn, cmd *SCSICommand) error {
			return c.send(&SCSIResponse{ITT: cmd.ITT + 7, StatSN: c.statSN, ExpCmdSN: cmd.CmdSN + 1, MaxCmdSN: cmd.CmdSN + 64}, nil)
		}, false},
		{"huge data segment", func(c *fakeConn, cmd *SCSICommand) error {
			var b BHS
			(&DataIn{ITT: cmd.ITT}).Encode(&b)
			b[5], b[6], b[7] = 0xff, 0xff, 0xff
			_, err := c.nc.Write(b[:])
			return err
		}, false},
		{"data past the buffer", func(c *fakeConn, cmd *SCSICommand) error {
			return c.send(&DataIn{ITT: cmd.ITT, Offset: 4000, ExpCmdSN: cmd.CmdSN + 1, MaxCmdSN: cmd.CmdSN + 64}, make([]byte, 512))
		}, false},
		{"sense longer than the segment", func(c *fakeConn, cmd *SCSICommand) error {
			return c.send(&SCSIResponse{ITT: cmd.ITT, Status: 2, StatSN: c.statSN, ExpCmdSN: cmd.CmdSN + 1, MaxCmdSN: cmd.CmdSN + 64}, []byte{0x10, 0, 1, 2})
		}, false},
		{"status without final", func(c *fakeConn, cmd *SCSICommand) error {
			var b BHS
			(&DataIn{ITT: cmd.ITT, HasStatus: true, ExpCmdSN: cmd.CmdSN + 1, MaxCmdSN: cmd.CmdSN + 64}).Encode(&b)
			b[1] &^= 0x80
			_, err := c.nc.Write(b[:])
			return err
		}, false},
		{"R2T for a read", func(c *fakeConn, cmd *SCSICommand) error {
			return c.send(&R2T{ITT: cmd.ITT, TTT: 5, Length: 512, ExpCmdSN: cmd.CmdSN + 1, MaxCmdSN: cmd.CmdSN + 64}, nil)
		}, false},
		{"login response in full feature phase", func(c *fakeConn, cmd *SCSICommand) error {
			return c.send(&LoginResponse{ITT: cmd.ITT}, nil)
		}, false},
		{"drop connection", func(c *fakeConn, cmd *SCSICommand) error {
			return errors.New("hang up")
		}, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := startFake(t, func(c *fakeConn, p *PDU) error {
				if p.BHS.Opcode() != OpSCSICmd {
					return nil
				}
				var cmd SCSICommand
				cmd.Decode(&p.BHS)
				return tc.reply(c, &cmd)
			})
			s := fakeSession(t, f, nil)
			timeout := 10 * time.Second
			if tc.stalls {
				timeout = 300 * time.Millisecond
			}
			ctx, cancel := context.WithTimeout(context.Background(), timeout)
			defer cancel()
			_, err := s.Do(ctx, &Task{LUN: 1, CDB: readCDB, DataIn: make([]byte, 4096)})
			require.Error(t, err)
			require.Equal(t, ioerr.ClassPathFailure, ioerr.ClassOf(err), "%v", err)
			if tc.stalls {
				return
			}
			require.NoError(t, ctx.Err(), "the command waited for its deadline: the hostile answer was not noticed")
			require.ErrorIs(t, err, ErrSessionDown)
			require.False(t, s.Alive())
		})
	}
}

// TestInitiatorHostileLogin: a target that answers the login with garbage
// or never answers fails Dial within the login timeout.
func TestInitiatorHostileLogin(t *testing.T) {
	for _, tc := range []struct {
		name  string
		serve func(nc net.Conn)
	}{
		{"garbage", func(nc net.Conn) { nc.Write(make([]byte, 200)) }},
		{"silence", func(nc net.Conn) {}},
		{"huge text", func(nc net.Conn) {
			var b BHS
			(&LoginResponse{Transit: true, NSG: 1}).Encode(&b)
			b[5], b[6], b[7] = 0xff, 0xff, 0xff
			nc.Write(b[:])
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			require.NoError(t, err)
			var wg sync.WaitGroup
			done := make(chan struct{})
			wg.Go(func() {
				nc, err := ln.Accept()
				if err != nil {
					return
				}
				tc.serve(nc)
				<-done
				nc.Close()
			})
			defer func() { close(done); ln.Close(); wg.Wait() }()
			start := time.Now()
			_, err = Dial(context.Background(), InitiatorConfig{Address: ln.Addr().String(), TargetName: "iqn.2026-01.io.mpathfs.test:x",
				InitiatorName: testIQN, LoginTimeout: 500 * time.Millisecond})
			require.Error(t, err)
			var le *LoginError
			require.ErrorAs(t, err, &le)
			require.Less(t, time.Since(start), 5*time.Second)
		})
	}
}

// TestInitiatorAbortTaskSettles: a write the target holds is abandoned
// when its caller gives up; ABORT TASK answered Function Complete settles
// its PendingError, and the session stays up.
func TestInitiatorAbortTaskSettles(t *testing.T) {
	var mu sync.Mutex
	var aborted []uint32
	f := startFake(t, func(c *fakeConn, p *PDU) error {
		switch p.BHS.Opcode() {
		case OpSCSICmd:
			// hold it: no answer
		case OpDataOut:
		case OpTMFReq:
			var m TMFRequest
			m.Decode(&p.BHS)
			mu.Lock()
			aborted = append(aborted, m.ReferencedTag)
			mu.Unlock()
			return c.send(&TMFResponse{Response: TMFRespComplete, ITT: m.ITT, StatSN: c.statSN, ExpCmdSN: m.CmdSN, MaxCmdSN: m.CmdSN + 64}, nil)
		case OpNOPOut:
			var m NOPOut
			m.Decode(&p.BHS)
			c.statSN++
			return c.send(&NOPIn{ITT: m.ITT, TTT: ReservedTag, StatSN: c.statSN - 1, ExpCmdSN: m.CmdSN, MaxCmdSN: m.CmdSN + 64}, nil)
		}
		return nil
	})
	s := fakeSession(t, f, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	_, err := s.Do(ctx, &Task{LUN: 1, CDB: cdbRW16(0x8a, 0, 8), DataOut: make([]byte, 4096), Mutating: true})
	require.Error(t, err)
	var pe *PendingError
	require.ErrorAs(t, err, &pe)
	select {
	case <-pe.Settled():
	case <-time.After(10 * time.Second):
		t.Fatalf("not settled after ABORT TASK: %s", pe.WaitingFor())
	}
	mu.Lock()
	require.Len(t, aborted, 1)
	mu.Unlock()
	require.True(t, s.Alive())
	require.NoError(t, s.Ping(context.Background()))
}

// TestInitiatorLUNResetSettles: a target that ignores ABORT TASK but
// answers LUN RESET: the reset settles the abandoned write.
func TestInitiatorLUNResetSettles(t *testing.T) {
	var mu sync.Mutex
	var fns []uint8
	f := startFake(t, func(c *fakeConn, p *PDU) error {
		if p.BHS.Opcode() == OpTMFReq {
			var m TMFRequest
			m.Decode(&p.BHS)
			mu.Lock()
			fns = append(fns, m.Function)
			mu.Unlock()
			if m.Function == TMFLogicalUnitReset {
				return c.send(&TMFResponse{Response: TMFRespComplete, ITT: m.ITT, StatSN: c.statSN, ExpCmdSN: m.CmdSN, MaxCmdSN: m.CmdSN + 64}, nil)
			}
		}
		return nil
	})
	s := fakeSession(t, f, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	_, err := s.Do(ctx, &Task{LUN: 1, CDB: cdbRW16(0x8a, 0, 8), DataOut: make([]byte, 4096), Mutating: true})
	var pe *PendingError
	require.ErrorAs(t, err, &pe)
	select {
	case <-pe.Settled():
	case <-time.After(10 * time.Second):
		t.Fatalf("not settled after LUN RESET: %s", pe.WaitingFor())
	}
	mu.Lock()
	require.Equal(t, []uint8{TMFAbortTask, TMFLogicalUnitReset}, fns)
	mu.Unlock()
}

// TestInitiatorReinstatementSettles: a target that answers no task
// management: the connection is dropped and the write stays pending until
// a new login with the same ISID.
func TestInitiatorReinstatementSettles(t *testing.T) {
	f := startFake(t, func(c *fakeConn, p *PDU) error { return nil })
	s := fakeSession(t, f, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	_, err := s.Do(ctx, &Task{LUN: 1, CDB: cdbRW16(0x8a, 0, 8), DataOut: make([]byte, 4096), Mutating: true})
	var pe *PendingError
	require.ErrorAs(t, err, &pe)
	require.Eventually(t, func() bool { return s.orphanCount() == 1 }, 10*time.Second, 10*time.Millisecond, "the fence did not give up on the connection")
	select {
	case <-pe.Settled():
		t.Fatal("settled with no proof")
	default:
	}
	require.False(t, s.Alive())
	isid := s.ISID()
	require.NoError(t, s.Reinstate(context.Background()))
	require.Equal(t, isid, s.ISID())
	select {
	case <-pe.Settled():
	default:
		t.Fatalf("reinstated but not settled: %s", pe.WaitingFor())
	}
	require.Equal(t, 2, f.Logins())
}

// TestInitiatorCancelledRead: a read whose caller cancels (a hedged read
// that lost) returns the cancellation without a class — it says nothing
// about the path — and the session carries on.
func TestInitiatorCancelledRead(t *testing.T) {
	f := startFake(t, func(c *fakeConn, p *PDU) error {
		if p.BHS.Opcode() == OpNOPOut {
			var m NOPOut
			m.Decode(&p.BHS)
			return c.send(&NOPIn{ITT: m.ITT, TTT: ReservedTag, StatSN: c.statSN, ExpCmdSN: m.CmdSN, MaxCmdSN: m.CmdSN + 64}, nil)
		}
		return nil // commands are held
	})
	s := fakeSession(t, f, nil)
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(50*time.Millisecond, cancel)
	_, err := s.Do(ctx, &Task{LUN: 1, CDB: readCDB, DataIn: make([]byte, 4096)})
	require.ErrorIs(t, err, context.Canceled)
	require.Equal(t, ioerr.ClassNone, ioerr.ClassOf(err))
	require.True(t, s.Alive())
	require.NoError(t, s.Ping(context.Background()))
}
