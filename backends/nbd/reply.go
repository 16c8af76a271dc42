package nbd

import (
	"encoding/binary"
	"fmt"
	"io"

	"github.com/mpathfs/mpathfs/ioerr"
)

// Reading replies: the role holder (role.go) reads one message at a time,
// claims the request it names and fills in its data.

// claim finds the request a reply names and marks it as being processed.
// Whether its submitter abandoned it is r.abandoned, which only the reader
// changes while r is claimed (a wake-up detaching it).
func (c *conn) claim(handle uint64) (*request, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	r := c.mu.inflight[handle]
	if r == nil {
		return nil, protoErr("reply for unknown handle %#x", handle)
	}
	r.claimed = true
	c.cur = r
	return r, nil
}

func (c *conn) unclaim(r *request) {
	c.mu.Lock()
	r.claimed = false
	c.cur = nil
	c.mu.Unlock()
}

func (c *conn) release(r *request, err error) {
	c.cur = nil
	c.complete(r, err)
}

// readReply reads and dispatches one simple reply or structured reply chunk.
// A returned error is fatal for the connection.
func (c *conn) readReply() error {
	b := c.rbuf[:]
	if err := c.fill(b[:4]); err != nil {
		return err
	}
	switch m := binary.BigEndian.Uint32(b); m {
	case magicSimple:
		if err := c.fill(b[4:16]); err != nil {
			return err
		}
		errno := binary.BigEndian.Uint32(b[4:])
		r, err := c.claim(binary.BigEndian.Uint64(b[8:]))
		if err != nil {
			return err
		}
		if errno != 0 {
			c.release(r, serverErr(c.name, r.typ, &ServerError{Errno: errno}))
			return nil
		}
		if r.typ == cmdRead {
			if c.info.structured {
				return protoErr("simple reply with data to a READ after structured replies were negotiated")
			}
			if err := c.readData(r, 0, uint64(r.length)); err != nil {
				return err
			}
		}
		c.release(r, nil)
		return nil
	case magicStructured:
		if !c.info.structured {
			return protoErr("structured reply chunk although structured replies were not negotiated")
		}
		if err := c.fill(b[4:20]); err != nil {
			return err
		}
		flags := binary.BigEndian.Uint16(b[4:])
		typ := binary.BigEndian.Uint16(b[6:])
		length := binary.BigEndian.Uint32(b[16:])
		r, err := c.claim(binary.BigEndian.Uint64(b[8:]))
		if err != nil {
			return err
		}
		if err := c.readChunk(r, flags, typ, length); err != nil {
			return err
		}
		if flags&replyFlagDone == 0 {
			c.unclaim(r)
			return nil
		}
		if r.err == nil && r.typ == cmdRead && r.covered != uint64(r.length) {
			return protoErr("structured READ reply ended after covering %d of %d bytes", r.covered, r.length)
		}
		var rerr error
		if r.err != nil {
			rerr = serverErr(c.name, r.typ, r.err.(*ServerError))
		}
		c.release(r, rerr)
		return nil
	default:
		return protoErr("bad reply magic %#x", m)
	}
}

func serverErr(name string, typ uint16, se *ServerError) error {
	return ioerr.NewError(classifyServerErr(se.Errno), opName(typ), fmt.Errorf("%s: %w", name, se))
}

// readData reads n bytes of a READ's data for the request-relative offset
// rel, into the caller's buffer or, if abandoned, nowhere. A wake-up that
// detaches the request mid-way sends the rest nowhere.
func (c *conn) readData(r *request, rel, n uint64) error {
	if r.abandoned {
		return c.discard(int(n))
	}
	dst := r.buf[rel : rel+n]
	for {
		k, err := io.ReadFull(c.br, dst)
		if err == nil {
			return nil
		}
		if !c.woken(err) {
			return err
		}
		dst = dst[k:]
		if r.abandoned {
			return c.discard(len(dst))
		}
	}
}

func (c *conn) readChunk(r *request, flags, typ uint16, length uint32) error {
	b := c.rbuf[:]
	switch typ {
	case chunkNone:
		if length != 0 {
			return protoErr("NBD_REPLY_TYPE_NONE with length %d", length)
		}
		if flags&replyFlagDone == 0 {
			return protoErr("NBD_REPLY_TYPE_NONE without NBD_REPLY_FLAG_DONE")
		}
		return nil
	case chunkOffsetData, chunkOffsetHole:
		if r.typ != cmdRead {
			return protoErr("content chunk in reply to a %s request", opName(r.typ))
		}
		if typ == chunkOffsetData {
			if length < 9 || uint64(length)-8 > uint64(r.length) {
				return protoErr("NBD_REPLY_TYPE_OFFSET_DATA of length %d for a %d-byte read", length, r.length)
			}
		} else if length != 12 {
			return protoErr("NBD_REPLY_TYPE_OFFSET_HOLE of length %d, want 12", length)
		}
		hl := 8
		if typ == chunkOffsetHole {
			hl = 12
		}
		if err := c.fill(b[:hl]); err != nil {
			return err
		}
		off := binary.BigEndian.Uint64(b)
		var n uint64
		if typ == chunkOffsetData {
			n = uint64(length) - 8
		} else {
			n = uint64(binary.BigEndian.Uint32(b[8:]))
			if n == 0 {
				return protoErr("NBD_REPLY_TYPE_OFFSET_HOLE of size 0")
			}
		}
		if off < r.off || off-r.off > uint64(r.length) || n > uint64(r.length)-(off-r.off) {
			return protoErr("content chunk [%d, +%d) outside the request [%d, +%d)", off, n, r.off, r.length)
		}
		rel := off - r.off
		if err := r.addExtent(rel, n); err != nil {
			return err
		}
		if typ == chunkOffsetData {
			return c.readData(r, rel, n)
		}
		if !r.abandoned {
			clear(r.buf[rel : rel+n])
		}
		return nil
	case chunkBlockStatus:
		return protoErr("block status chunk although no metadata context was negotiated")
	}
	if typ&chunkErrBit == 0 {
		return protoErr("unknown structured reply chunk type %d", typ)
	}
	// An error chunk.
	if length < 6 || length > maxErrChunkLen {
		return protoErr("error chunk of length %d", length)
	}
	p := make([]byte, length)
	if err := c.fill(p); err != nil {
		return err
	}
	errno := binary.BigEndian.Uint32(p)
	msgLen := uint32(binary.BigEndian.Uint16(p[4:]))
	if msgLen > length-6 {
		return protoErr("error chunk message of %d bytes in a %d-byte chunk", msgLen, length)
	}
	if errno == 0 {
		return protoErr("error chunk with error value 0")
	}
	if typ == chunkErrorOffset {
		if length-6-msgLen < 8 {
			return protoErr("NBD_REPLY_TYPE_ERROR_OFFSET of length %d has no offset", length)
		}
		off := binary.BigEndian.Uint64(p[6+msgLen:])
		if off < r.off || off-r.off >= uint64(r.length) {
			return protoErr("error offset %d outside the request [%d, +%d)", off, r.off, r.length)
		}
	}
	if r.err == nil {
		r.err = &ServerError{Errno: errno, Message: sanitize(p[6 : 6+msgLen])}
	}
	return nil
}

// addExtent records that [rel, rel+n) of a READ was covered, refusing
// overlaps. In-order chunks cost nothing; out-of-order ones keep a sorted
// list.
func (r *request) addExtent(rel, n uint64) error {
	if len(r.ivs) == 0 {
		if rel == r.covered {
			r.covered += n
			return nil
		}
		if r.covered > 0 {
			r.ivs = append(r.ivs, interval{0, r.covered})
		}
	}
	hi := rel + n
	i := 0
	for i < len(r.ivs) && r.ivs[i].hi <= rel {
		i++
	}
	if i < len(r.ivs) && r.ivs[i].lo < hi {
		return protoErr("content chunks overlap at request offset %d", rel)
	}
	r.ivs = append(r.ivs, interval{})
	copy(r.ivs[i+1:], r.ivs[i:])
	r.ivs[i] = interval{rel, hi}
	r.covered += n
	return nil
}
