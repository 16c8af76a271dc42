package nbd

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"
)

// memConn is a net.Conn whose reads come from a fixed server byte stream and
// whose writes vanish.
type memConn struct {
	mu     sync.Mutex
	r      *bytes.Reader
	closed bool
}

func newMemConn(b []byte) *memConn { return &memConn{r: bytes.NewReader(b)} }

func (m *memConn) Read(p []byte) (int, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return 0, net.ErrClosed
	}
	return m.r.Read(p)
}

func (m *memConn) Write(p []byte) (int, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return 0, net.ErrClosed
	}
	return len(p), nil
}

func (m *memConn) Close() error {
	m.mu.Lock()
	m.closed = true
	m.mu.Unlock()
	return nil
}

func (m *memConn) LocalAddr() net.Addr                { return &net.UnixAddr{Name: "client", Net: "unix"} }
func (m *memConn) RemoteAddr() net.Addr               { return &net.UnixAddr{Name: "server", Net: "unix"} }
func (m *memConn) SetDeadline(t time.Time) error      { return nil }
func (m *memConn) SetReadDeadline(t time.Time) error  { return nil }
func (m *memConn) SetWriteDeadline(t time.Time) error { return nil }

// Builders of server byte streams, for seeds and the fake servers.

type stream struct{ bytes.Buffer }

func (s *stream) u16(v uint16) *stream { binary.Write(s, binary.BigEndian, v); return s }
func (s *stream) u32(v uint32) *stream { binary.Write(s, binary.BigEndian, v); return s }
func (s *stream) u64(v uint64) *stream { binary.Write(s, binary.BigEndian, v); return s }
func (s *stream) raw(b []byte) *stream { s.Write(b); return s }

func (s *stream) greeting(flags uint16) *stream {
	return s.u64(magicNBD).u64(magicOpt).u16(flags)
}

func (s *stream) optReply(opt, typ uint32, data []byte) *stream {
	return s.u64(magicOptReply).u32(opt).u32(typ).u32(uint32(len(data))).raw(data)
}

func infoExportData(size uint64, flags uint16) []byte {
	var s stream
	s.u16(infoExport).u64(size).u16(flags)
	return s.Bytes()
}

func infoBlockData(min, pref, max uint32) []byte {
	var s stream
	s.u16(infoBlockSize).u32(min).u32(pref).u32(max)
	return s.Bytes()
}

const testFlags = tflagHasFlags | tflagSendFlush | tflagSendFUA | tflagSendTrim | tflagWriteZeroes | tflagCanMultiConn

// goodHandshake is a server's side of a successful negotiation with
// structured replies (if structured) and NBD_OPT_GO.
func goodHandshake(structured bool) []byte {
	var s stream
	s.greeting(flagFixedNewstyle | flagNoZeroes)
	if structured {
		s.optReply(optStructuredReply, repAck, nil)
	} else {
		s.optReply(optStructuredReply, repErrUnsup, nil)
	}
	s.optReply(optGo, repInfo, infoExportData(1<<20, testFlags))
	s.optReply(optGo, repInfo, infoBlockData(512, 4096, 1<<20))
	s.optReply(optGo, repAck, nil)
	return s.Bytes()
}

func handshakeSeeds() [][]byte {
	var seeds [][]byte
	seeds = append(seeds, goodHandshake(true), goodHandshake(false))
	var s stream // NBD_OPT_GO unsupported: NBD_OPT_EXPORT_NAME fallback, with zeroes
	s.greeting(flagFixedNewstyle).optReply(optStructuredReply, repAck, nil).optReply(optGo, repErrUnsup, nil).u64(1 << 20).u16(testFlags).raw(make([]byte, 124))
	seeds = append(seeds, s.Bytes())
	s = stream{}
	s.greeting(flagFixedNewstyle|flagNoZeroes).optReply(optStructuredReply, repAck, nil).optReply(optGo, repErrUnknown, []byte("no such export"))
	seeds = append(seeds, s.Bytes())
	s = stream{}
	s.greeting(flagFixedNewstyle).optReply(optStructuredReply, repErrTLSReqd, nil)
	seeds = append(seeds, s.Bytes())
	s = stream{} // a list reply where it does not belong
	s.greeting(flagFixedNewstyle).optReply(optStructuredReply, repAck, nil).optReply(optGo, repServer, []byte{0, 0, 0, 1, 'x'})
	seeds = append(seeds, s.Bytes())
	s = stream{} // huge option reply length
	s.greeting(flagFixedNewstyle).u64(magicOptReply).u32(optStructuredReply).u32(repAck).u32(0xffffffff)
	seeds = append(seeds, s.Bytes())
	s = stream{}
	s.u64(magicNBD).u64(magicOldstyle).u64(1 << 20).u32(3).raw(make([]byte, 124))
	seeds = append(seeds, s.Bytes())
	return seeds
}

func FuzzHandshake(f *testing.F) {
	for _, s := range handshakeSeeds() {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_, info, err := handshake(ctx, newMemConn(data), &handshakeConfig{export: "disk"})
		if err != nil {
			if info != nil {
				t.Fatal("error with an export info")
			}
			return
		}
		if info.minBlock == 0 || info.maxBlock == 0 || info.maxBlock > defaultMaxPayload || info.maxBlock%info.minBlock != 0 {
			t.Fatalf("accepted bad block sizes %+v", info)
		}
	})
}

// replySeeds are server streams for the requests FuzzReply registers:
// handle 1 READ [0, +4096), 2 WRITE, 3 FLUSH, 4 READ [8192, +512) abandoned.
// The first byte selects structured replies (odd) or simple ones.
func replySeeds() [][]byte {
	var seeds [][]byte
	var s stream
	s.raw([]byte{0}) // simple replies
	s.u32(magicSimple).u32(0).u64(2)
	s.u32(magicSimple).u32(0).u64(1).raw(bytes.Repeat([]byte{1}, 4096))
	s.u32(magicSimple).u32(nbdEIO).u64(3)
	s.u32(magicSimple).u32(0).u64(4).raw(bytes.Repeat([]byte{4}, 512))
	seeds = append(seeds, s.Bytes())

	s = stream{}
	s.raw([]byte{1}) // structured: data and hole out of order, then NONE
	s.u32(magicStructured).u16(0).u16(chunkOffsetData).u64(1).u32(8 + 1024).u64(3072).raw(bytes.Repeat([]byte{9}, 1024))
	s.u32(magicStructured).u16(0).u16(chunkOffsetHole).u64(1).u32(12).u64(0).u32(3072)
	s.u32(magicStructured).u16(replyFlagDone).u16(chunkNone).u64(1).u32(0)
	s.u32(magicSimple).u32(0).u64(2)
	s.u32(magicStructured).u16(replyFlagDone).u16(chunkError).u64(3).u32(6 + 4).u32(nbdENOSPC).u16(4).raw([]byte("full"))
	s.u32(magicStructured).u16(replyFlagDone).u16(chunkOffsetData).u64(4).u32(8 + 512).u64(8192).raw(bytes.Repeat([]byte{4}, 512))
	seeds = append(seeds, s.Bytes())

	s = stream{}
	s.raw([]byte{1}) // error offset, then an overlapping chunk
	s.u32(magicStructured).u16(0).u16(chunkErrorOffset).u64(1).u32(14).u32(nbdEIO).u16(0).u64(100)
	s.u32(magicStructured).u16(0).u16(chunkOffsetData).u64(1).u32(8 + 100).u64(0).raw(make([]byte, 100))
	s.u32(magicStructured).u16(replyFlagDone).u16(chunkOffsetData).u64(1).u32(8 + 100).u64(50).raw(make([]byte, 100))
	seeds = append(seeds, s.Bytes())

	s = stream{}
	s.raw([]byte{1}) // oversized data chunk
	s.u32(magicStructured).u16(replyFlagDone).u16(chunkOffsetData).u64(1).u32(0xfffffff0).u64(0)
	seeds = append(seeds, s.Bytes())

	s = stream{}
	s.raw([]byte{0}) // unknown handle, bad magic
	s.u32(magicSimple).u32(0).u64(99)
	seeds = append(seeds, s.Bytes(), []byte{0, 0xde, 0xad, 0xbe, 0xef})
	return seeds
}

func FuzzReply(f *testing.F) {
	for _, s := range replySeeds() {
		f.Add(s)
	}
	f.Fuzz(fuzzReplyBody)
}

func fuzzReplyBody(t *testing.T, data []byte) {
	{
		if len(data) == 0 {
			return
		}
		info := &exportInfo{size: 1 << 20, flags: testFlags, structured: data[0]&1 == 1, minBlock: 1, prefBlock: 4096, maxBlock: 1 << 20}
		mc := newMemConn(data[1:])
		c := allocConn(mc, info, "fuzz")
		const guard = 64
		area1 := bytes.Repeat([]byte{0xaa}, 4096+2*guard)
		area4 := bytes.Repeat([]byte{0xaa}, 512)
		reqs := []*request{
			{handle: 1, typ: cmdRead, off: 0, length: 4096, buf: area1[guard : guard+4096]},
			{handle: 2, typ: cmdWrite, off: 0, length: 4096},
			{handle: 3, typ: cmdFlush},
			{handle: 4, typ: cmdRead, off: 8192, length: 512, buf: area4, abandoned: true},
		}
		c.mu.Lock()
		for _, r := range reqs {
			r.done = make(chan error, 1)
			c.mu.inflight[r.handle] = r
		}
		c.mu.Unlock()
		c.start(0)
		waited := make(chan struct{})
		go func() { c.wg.Wait(); close(waited) }()
		select {
		case <-waited:
		case <-time.After(2 * time.Second):
			t.Fatal("reader did not finish on a finite stream")
		}
		for _, r := range reqs[:3] {
			if len(r.done) != 1 {
				t.Fatalf("request %d completed %d times", r.handle, len(r.done))
			}
		}
		for i := 0; i < guard; i++ {
			if area1[i] != 0xaa || area1[len(area1)-1-i] != 0xaa {
				t.Fatal("reply data landed outside the read buffer")
			}
		}
		for _, b := range area4 {
			if b != 0xaa {
				t.Fatal("reply data landed in an abandoned request's buffer")
			}
		}
		if c.alive() {
			t.Fatal("connection alive after the stream ended")
		}
	}
}

// TestWriteSeedCorpus regenerates testdata/fuzz with NBD_WRITE_CORPUS=1.
func TestWriteSeedCorpus(t *testing.T) {
	if os.Getenv("NBD_WRITE_CORPUS") == "" {
		t.Skip("set NBD_WRITE_CORPUS=1 to regenerate testdata/fuzz")
	}
	write := func(name string, seeds [][]byte) {
		dir := filepath.Join("testdata", "fuzz", name)
		os.MkdirAll(dir, 0o755)
		for i, s := range seeds {
			body := "go test fuzz v1\n[]byte(" + strconv.Quote(string(s)) + ")\n"
			if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("seed-%02d", i)), []byte(body), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	write("FuzzHandshake", handshakeSeeds())
	write("FuzzReply", replySeeds())
}

var _ io.Reader = (*memConn)(nil)
