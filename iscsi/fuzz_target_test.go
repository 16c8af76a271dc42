package iscsi_test

import (
	"fmt"
	"io"
	"net"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/mpathfs/mpathfs/iscsi"
	"github.com/mpathfs/mpathfs/iscsi/iscsitest"
)

// pipeListener hands out the server ends of in-memory pipes.
type pipeListener struct {
	conns chan net.Conn
	once  sync.Once
	done  chan struct{}
}

func newPipeListener() *pipeListener {
	return &pipeListener{conns: make(chan net.Conn), done: make(chan struct{})}
}

func (l *pipeListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *pipeListener) Close() error { l.once.Do(func() { close(l.done) }); return nil }
func (l *pipeListener) Addr() net.Addr {
	return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 3260}
}

// dial returns the client end of a new pipe whose server end the target
// accepts.
func (l *pipeListener) dial() net.Conn {
	c, s := net.Pipe()
	l.conns <- s
	return c
}

func loginPDU(initiator string, keys ...iscsi.KV) []byte {
	tx := iscsi.Text{{Key: "InitiatorName", Value: initiator}, {Key: "TargetName", Value: targetName}}
	tx = append(tx, keys...)
	var w pipeBuf
	fr := iscsi.NewFramer(nil, &w, 0)
	var p iscsi.PDU
	p.Encode(&iscsi.LoginRequest{Transit: true, CSG: 1, NSG: 3, ISID: [6]byte{0x80, 0, 0, 0, 0, 1}, ITT: 1, CmdSN: 1}, tx.Marshal())
	if err := fr.WritePDU(&p); err != nil {
		panic(err)
	}
	return w.b
}

type pipeBuf struct{ b []byte }

func (w *pipeBuf) Write(p []byte) (int, error) { w.b = append(w.b, p...); return len(p), nil }

func pdu(m iscsi.Message, data []byte) []byte {
	var w pipeBuf
	fr := iscsi.NewFramer(nil, &w, 0)
	var p iscsi.PDU
	p.Encode(m, data)
	if err := fr.WritePDU(&p); err != nil {
		panic(err)
	}
	return w.b
}

// FuzzTargetConnection feeds arbitrary bytes to a target connection, after
// a valid login or instead of one: the target never panics, never hangs
// (the connection ends when the input does) and closes cleanly.
func FuzzTargetConnection(f *testing.F) {
	var seed []byte
	seed = append(seed, pdu(&iscsi.SCSICommand{Final: true, Write: true, LUN: iscsi.EncodeLUN(0), ITT: 2, CmdSN: 1,
		ExpectedDataTransferLength: 1024, CDB: [16]byte{0x2a, 0, 0, 0, 0, 1, 0, 0, 2}}, make([]byte, 512))...)
	seed = append(seed, pdu(&iscsi.DataOut{Final: true, ITT: 2, TTT: 1, Offset: 512}, make([]byte, 512))...)
	seed = append(seed, pdu(&iscsi.TMFRequest{Immediate: true, Function: iscsi.TMFAbortTask, ITT: 3, ReferencedTag: 2, CmdSN: 2}, nil)...)
	seed = append(seed, pdu(&iscsi.TextRequest{Final: true, ITT: 4, TTT: iscsi.ReservedTag, CmdSN: 2}, []byte("SendTargets=All\x00"))...)
	seed = append(seed, pdu(&iscsi.LogoutRequest{Immediate: true, ITT: 5, CmdSN: 3}, nil)...)
	f.Add(seed, true)
	f.Add(pdu(&iscsi.SCSICommand{Final: true, Read: true, ITT: 9, CmdSN: 1, ExpectedDataTransferLength: 96,
		CDB: [16]byte{0x12, 0, 0, 0, 96}}, nil), true)
	f.Add(loginPDU("iqn.2026-01.org.fuzz:x", iscsi.KV{Key: "AuthMethod", Value: "CHAP,None"}), false)
	f.Add([]byte("garbage"), false)
	f.Fuzz(func(t *testing.T, input []byte, login bool) {
		ram := iscsitest.NewRAM(1, 64, 512)
		tgt, err := iscsi.NewTarget(iscsi.TargetConfig{Name: targetName,
			Limits: iscsi.Limits{LoginTimeout: 2 * time.Second, NOPInterval: -1, MaxRecvDataSegmentLength: 8192}}, ram)
		require.NoError(t, err)
		l := newPipeListener()
		served := make(chan error, 1)
		go func() { served <- tgt.Serve(l, iscsi.Portal{TPGT: 1, RelativePort: 1}) }()
		c := l.dial()
		drained := make(chan struct{})
		go func() {
			_, _ = io.Copy(io.Discard, c)
			close(drained)
		}()
		if login {
			input = append(loginPDU("iqn.2026-01.org.fuzz:x"), input...)
		}
		// A hang is a failure: after a generous bound, fail with every
		// goroutine's stack.
		watchdog := time.AfterFunc(20*time.Second, func() {
			buf := make([]byte, 1<<20)
			panic(fmt.Sprintf("the target hung on input %q:\n%s", input, buf[:runtime.Stack(buf, true)]))
		})
		defer watchdog.Stop()
		_, _ = c.Write(input)
		c.Close()
		<-drained
		require.NoError(t, tgt.Close())
		<-served
	})
}
