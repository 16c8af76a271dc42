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

// The requests FuzzReply puts in flight. Their lengths are small on purpose:
// every byte of READ data is a byte of fuzz input, and a worker minimises
// each new interesting input (internal/fuzz minimizeBytes, which tries
// removing every byte range: executions quadratic in the input's length)
// before it fuzzes again. Inputs of kilobytes (a 4 KiB READ) made every
// minimisation run the whole -fuzzminimizetime (60 s by default) on both
// workers; the coordinator counts none of those executions until a
// minimisation ends, so it showed 0 execs/sec, and a run shorter than that
// ended, dropped the unfinished minimisations and passed.
const (
	fuzzRead1Len = 128 // handle 1: READ [0, +128)
	fuzzRead4Off = 8192
	fuzzRead4Len = 32 // handle 4: READ [8192, +32), abandoned
	// maxReplyInput bounds the inputs FuzzReply runs (longer ones return
	// at once, so they add no coverage and are never minimised). It leaves
	// room for a dozen or more chunks per request.
	maxReplyInput = 512
)

// replySeeds are server streams for the requests FuzzReply registers:
// handle 1 READ [0, +128), 2 WRITE, 3 FLUSH, 4 READ [8192, +32) abandoned.
// The first byte selects structured replies (odd) or simple ones.
func replySeeds() [][]byte {
	var seeds [][]byte
	var s stream
	s.raw([]byte{0}) // simple replies
	s.u32(magicSimple).u32(0).u64(2)
	s.u32(magicSimple).u32(0).u64(1).raw(bytes.Repeat([]byte{1}, fuzzRead1Len))
	s.u32(magicSimple).u32(nbdEIO).u64(3)
	s.u32(magicSimple).u32(0).u64(4).raw(bytes.Repeat([]byte{4}, fuzzRead4Len))
	seeds = append(seeds, s.Bytes())

	s = stream{}
	s.raw([]byte{1}) // structured: data and hole out of order, then NONE
	s.u32(magicStructured).u16(0).u16(chunkOffsetData).u64(1).u32(8 + 32).u64(96).raw(bytes.Repeat([]byte{9}, 32))
	s.u32(magicStructured).u16(0).u16(chunkOffsetHole).u64(1).u32(12).u64(0).u32(96)
	s.u32(magicStructured).u16(replyFlagDone).u16(chunkNone).u64(1).u32(0)
	s.u32(magicSimple).u32(0).u64(2)
	s.u32(magicStructured).u16(replyFlagDone).u16(chunkError).u64(3).u32(6 + 4).u32(nbdENOSPC).u16(4).raw([]byte("full"))
	s.u32(magicStructured).u16(replyFlagDone).u16(chunkOffsetData).u64(4).u32(8 + fuzzRead4Len).u64(fuzzRead4Off).raw(bytes.Repeat([]byte{4}, fuzzRead4Len))
	seeds = append(seeds, s.Bytes())

	s = stream{}
	s.raw([]byte{1}) // error offset, then an overlapping chunk
	s.u32(magicStructured).u16(0).u16(chunkErrorOffset).u64(1).u32(14).u32(nbdEIO).u16(0).u64(100)
	s.u32(magicStructured).u16(0).u16(chunkOffsetData).u64(1).u32(8 + 64).u64(0).raw(make([]byte, 64))
	s.u32(magicStructured).u16(replyFlagDone).u16(chunkOffsetData).u64(1).u32(8 + 64).u64(32).raw(make([]byte, 64))
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

// TestReplySeedsFit keeps the FuzzReply seeds within the inputs the harness
// runs and small enough to minimise quickly.
func TestReplySeedsFit(t *testing.T) {
	for i, s := range replySeeds() {
		if len(s) > maxReplyInput/2 {
			t.Errorf("seed %d is %d bytes, want at most %d", i, len(s), maxReplyInput/2)
		}
	}
	ents, err := os.ReadDir(filepath.Join("testdata", "fuzz", "FuzzReply"))
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join("testdata", "fuzz", "FuzzReply", e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		// The encoding quotes each input byte as at most 4 characters.
		if len(b) > 64+4*maxReplyInput {
			t.Errorf("corpus file %s is %d bytes: an input longer than maxReplyInput is never run", e.Name(), len(b))
		}
	}
}

func FuzzReply(f *testing.F) {
	for _, s := range replySeeds() {
		f.Add(s)
	}
	f.Fuzz(fuzzReplyBody)
}

func fuzzReplyBody(t *testing.T, data []byte) {
	{
		if len(data) == 0 || len(data) > maxReplyInput {
			return
		}
		info := &exportInfo{size: 1 << 20, flags: testFlags, structured: data[0]&1 == 1, minBlock: 1, prefBlock: 4096, maxBlock: 1 << 20}
		mc := newMemConn(data[1:])
		c := allocConn(mc, info, "fuzz")
		const guard = 64
		area1 := bytes.Repeat([]byte{0xaa}, fuzzRead1Len+2*guard)
		area4 := bytes.Repeat([]byte{0xaa}, fuzzRead4Len)
		reqs := []*request{
			{handle: 1, typ: cmdRead, off: 0, length: fuzzRead1Len, buf: area1[guard : guard+fuzzRead1Len]},
			{handle: 2, typ: cmdWrite, off: 0, length: 4096},
			{handle: 3, typ: cmdFlush},
			{handle: 4, typ: cmdRead, off: fuzzRead4Off, length: fuzzRead4Len, buf: area4, abandoned: true},
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
		timer := time.NewTimer(2 * time.Second)
		defer timer.Stop()
		select {
		case <-waited:
		case <-timer.C:
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
