package nbd

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mpathfs/mpathfs/ioerr"
)

type reqHdr struct {
	flags, typ uint16
	handle     uint64
	off        uint64
	length     uint32
}

// fakeServer serves one connection on a Unix socket: it sends hs as the
// server's side of the handshake, consumes the client's side up to
// NBD_OPT_GO or NBD_OPT_EXPORT_NAME, then hands each request to handle.
func fakeServer(t *testing.T, hs []byte, handle func(nc net.Conn, r reqHdr)) string {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "fake.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	t.Cleanup(func() { l.Close(); <-done })
	go func() {
		defer close(done)
		nc, err := l.Accept()
		if err != nil {
			return
		}
		serveFake(t, nc, hs, handle)
	}()
	return "nbd+unix:///disk?socket=" + sock + "&connections=1" // one Accept
}

// serveFake runs the server's side of one fake connection.
func serveFake(t *testing.T, nc net.Conn, hs []byte, handle func(nc net.Conn, r reqHdr)) {
	defer nc.Close()
	go func() { <-ctxDone(t); nc.Close() }()
	nc.Write(hs)
	var b4 [4]byte
	if _, err := io.ReadFull(nc, b4[:]); err != nil {
		return
	}
	for {
		var oh [16]byte
		if _, err := io.ReadFull(nc, oh[:]); err != nil {
			return
		}
		opt := binary.BigEndian.Uint32(oh[8:])
		if _, err := io.CopyN(io.Discard, nc, int64(binary.BigEndian.Uint32(oh[12:]))); err != nil {
			return
		}
		if opt == optGo || opt == optExportName {
			break
		}
	}
	for {
		var h [28]byte
		if _, err := io.ReadFull(nc, h[:]); err != nil {
			return
		}
		r := reqHdr{binary.BigEndian.Uint16(h[4:]), binary.BigEndian.Uint16(h[6:]), binary.BigEndian.Uint64(h[8:]), binary.BigEndian.Uint64(h[16:]), binary.BigEndian.Uint32(h[24:])}
		if r.typ == cmdWrite {
			io.CopyN(io.Discard, nc, int64(r.length))
		}
		if r.typ == cmdDisc {
			return
		}
		handle(nc, r)
	}
}

func ctxDone(t *testing.T) <-chan struct{} { return t.Context().Done() }

func TestHostileServers(t *testing.T) {
	cases := []struct {
		name       string
		structured bool
		reply      func(r reqHdr) []byte
	}{
		{"bad magic", true, func(r reqHdr) []byte { return []byte{0xde, 0xad, 0xbe, 0xef, 0, 0, 0, 0} }},
		{"unknown handle", false, func(r reqHdr) []byte {
			var s stream
			return s.u32(magicSimple).u32(0).u64(r.handle + 1000).raw(make([]byte, r.length)).Bytes()
		}},
		{"oversized data chunk", true, func(r reqHdr) []byte {
			var s stream
			return s.u32(magicStructured).u16(replyFlagDone).u16(chunkOffsetData).u64(r.handle).u32(8 + r.length + 100).u64(r.off).raw(make([]byte, r.length+100)).Bytes()
		}},
		{"data outside the request", true, func(r reqHdr) []byte {
			var s stream
			return s.u32(magicStructured).u16(replyFlagDone).u16(chunkOffsetData).u64(r.handle).u32(8 + 512).u64(r.off + uint64(r.length) - 256).raw(make([]byte, 512)).Bytes()
		}},
		{"short structured read", true, func(r reqHdr) []byte {
			var s stream
			return s.u32(magicStructured).u16(replyFlagDone).u16(chunkOffsetData).u64(r.handle).u32(8 + 512).u64(r.off).raw(make([]byte, 512)).Bytes()
		}},
		{"error message longer than its chunk", true, func(r reqHdr) []byte {
			var s stream
			return s.u32(magicStructured).u16(replyFlagDone).u16(chunkError).u64(r.handle).u32(8).u32(nbdEIO).u16(1000).u16(0).Bytes()
		}},
		{"huge error chunk", true, func(r reqHdr) []byte {
			var s stream
			return s.u32(magicStructured).u16(replyFlagDone).u16(chunkError).u64(r.handle).u32(0x7fffffff).Bytes()
		}},
		{"simple data reply after structured", true, func(r reqHdr) []byte {
			var s stream
			return s.u32(magicSimple).u32(0).u64(r.handle).raw(make([]byte, r.length)).Bytes()
		}},
		{"truncated reply then close", false, func(r reqHdr) []byte {
			var s stream
			return s.u32(magicSimple).u32(0).u64(r.handle).raw(make([]byte, 100)).Bytes()
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			closeAfter := strings.Contains(tc.name, "close")
			uri := fakeServer(t, goodHandshake(tc.structured), func(nc net.Conn, r reqHdr) {
				nc.Write(tc.reply(r))
				if closeAfter {
					nc.Close()
				}
			})
			c := openT(t, uri)
			defer c.Close()
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			start := time.Now()
			n, err := c.ReadAt(ctx, make([]byte, 4096), 0)
			if n != 0 || !errors.Is(err, ioerr.ErrPathFailure) {
				t.Fatalf("ReadAt = %d, %v; want a path failure", n, err)
			}
			if el := time.Since(start); el > 2*time.Second {
				t.Fatalf("took %v", el)
			}
			t.Logf("%v", err)
			if _, err := c.ReadAt(ctx, make([]byte, 512), 0); !errors.Is(err, ErrConnDown) {
				t.Fatalf("after a protocol violation the connection is still used: %v", err)
			}
		})
	}
}

func TestHostileHandshakes(t *testing.T) {
	loop := func() []byte {
		var s stream
		s.greeting(flagFixedNewstyle|flagNoZeroes).optReply(optStructuredReply, repAck, nil)
		for i := 0; i < 1000; i++ {
			s.optReply(optGo, repInfo, infoExportData(1<<20, testFlags))
		}
		return s.Bytes()
	}
	servers := func() []byte {
		var s stream
		s.greeting(flagFixedNewstyle|flagNoZeroes).optReply(optStructuredReply, repAck, nil)
		for i := 0; i < 1000; i++ {
			s.optReply(optGo, repServer, []byte{0, 0, 0, 1, 'x'})
		}
		return s.Bytes()
	}
	var huge, badMagic, noFixed, badBlock, goNoExport stream
	huge.greeting(flagFixedNewstyle).u64(magicOptReply).u32(optStructuredReply).u32(repAck).u32(1 << 30)
	badMagic.u64(0x1122334455667788).u64(magicOpt).u16(1)
	noFixed.greeting(0)
	badBlock.greeting(flagFixedNewstyle|flagNoZeroes).optReply(optStructuredReply, repAck, nil).optReply(optGo, repInfo, infoBlockData(3, 4096, 1<<20))
	goNoExport.greeting(flagFixedNewstyle|flagNoZeroes).optReply(optStructuredReply, repAck, nil).optReply(optGo, repAck, nil)
	cases := []struct {
		name, want string
		hs         []byte
	}{
		{"endless NBD_REP_INFO", "more than 64 replies", loop()},
		{"NBD_REP_SERVER list for GO", "unexpected NBD_REP_SERVER", servers()},
		{"huge option reply", "exceeds the 65536-byte limit", huge.Bytes()},
		{"bad magic", "bad greeting magic", badMagic.Bytes()},
		{"not fixed newstyle", "fixed newstyle", noFixed.Bytes()},
		{"bad block size", "minimum block size 3", badBlock.Bytes()},
		{"GO without export info", "without sending NBD_INFO_EXPORT", goNoExport.Bytes()},
		{"silent", "i/o timeout", nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			uri := fakeServer(t, tc.hs, func(net.Conn, reqHdr) {})
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			opts, err := ParseURI(mustURL(t, uri+"&connect-timeout=300ms"))
			if err != nil {
				t.Fatal(err)
			}
			start := time.Now()
			_, err = Dial(ctx, opts)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Dial: %v; want an error containing %q", err, tc.want)
			}
			if !errors.Is(err, ioerr.ErrPathFailure) {
				t.Fatalf("Dial error %v is not a path failure", err)
			}
			if el := time.Since(start); el > 2*time.Second {
				t.Fatalf("took %v", el)
			}
		})
	}
}

// TestServerErrorKeepsConnection: an error reply is per request.
func TestServerErrorKeepsConnection(t *testing.T) {
	uri := fakeServer(t, goodHandshake(true), func(nc net.Conn, r reqHdr) {
		var s stream
		if r.off == 0 {
			msg := []byte("no space\x00\x1b[31m")
			s.u32(magicStructured).u16(replyFlagDone).u16(chunkError).u64(r.handle).u32(6 + uint32(len(msg))).u32(nbdENOSPC).u16(uint16(len(msg))).raw(msg)
		} else {
			s.u32(magicStructured).u16(0).u16(chunkOffsetHole).u64(r.handle).u32(12).u64(r.off).u32(r.length / 2)
			s.u32(magicStructured).u16(replyFlagDone).u16(chunkOffsetData).u64(r.handle).u32(8 + r.length/2).u64(r.off + uint64(r.length/2)).raw(bytes.Repeat([]byte{5}, int(r.length/2)))
		}
		nc.Write(s.Bytes())
	})
	c := openT(t, uri)
	defer c.Close()
	ctx := ctxTimeout(t, 5*time.Second)
	_, err := c.ReadAt(ctx, make([]byte, 4096), 0)
	var se *ServerError
	if !errors.Is(err, ioerr.ErrDeviceError) || !errors.As(err, &se) || se.Message != "no space??[31m" {
		t.Fatalf("ReadAt = %v; want a device error with a sanitised message", err)
	}
	buf := bytes.Repeat([]byte{0xff}, 4096)
	if _, err := c.ReadAt(ctx, buf, 4096); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(buf[:2048], make([]byte, 2048)) || !bytes.Equal(buf[2048:], bytes.Repeat([]byte{5}, 2048)) {
		t.Fatal("hole + data chunks assembled wrongly")
	}
}
