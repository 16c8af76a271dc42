package nbd

import (
	"encoding/binary"
	"net"
	"time"
)

// Sending. Concurrent senders combine their requests into few writes:
// each appends its request (header and, up to maxCombined bytes, its
// payload) to the connection's pending batch under wmu. One sender at a
// time — the flusher — takes the pending batch and writes it to the socket
// outside wmu, again and again until nothing is pending; a sender that
// finds a flusher at work waits until the batch holding its request has
// been written (or sending failed). At queue depth the requests that
// arrive during one write(2) leave together in the next, not in one
// write(2) each; at queue depth 1 nobody else is sending, and the sender
// writes its own request at once, as before.
//
// A larger payload is not copied: its sender waits until no flusher is at
// work (so nothing is pending), becomes the flusher and writes its header
// and the caller's buffer in one writev, then what was appended meanwhile.
// Its header never goes into the pending batch: requests appended after it
// would land between the header and its payload.
//
// Invariant: while no flusher is at work the pending batch is empty (a
// sender that appends to it with no flusher at work becomes the flusher in
// the same critical section), unless a write failed (werr).
//
// What send reports is what happened to the request's own bytes, as when
// every sender wrote its own: wrote is false only if its batch was never
// handed to the socket (the connection was torn down, or an earlier write
// failed, first), so that a request that never left is settled (fence.go);
// a batch whose write failed may have partly left, and every request in it
// counts as sent. A write error ends sending, and the senders of the
// failed batch tear the connection down (do).

// maxCombined is the largest payload a sender copies into the pending
// buffer; a larger one is written from the caller's buffer.
const maxCombined = 64 << 10

// maxSpare bounds the capacity of a write buffer kept for reuse after a
// burst of large requests.
const maxSpare = 1 << 20

// appendRequest appends an NBD request header to b.
func appendRequest(b []byte, flags, typ uint16, handle, off uint64, length uint32) []byte {
	b = binary.BigEndian.AppendUint32(b, magicRequest)
	b = binary.BigEndian.AppendUint16(b, flags)
	b = binary.BigEndian.AppendUint16(b, typ)
	b = binary.BigEndian.AppendUint64(b, handle)
	b = binary.BigEndian.AppendUint64(b, off)
	return binary.BigEndian.AppendUint32(b, length)
}

// send sends a request: it writes it, or has the flusher at work write it.
// It returns once the request's bytes are in the socket or sending failed.
// wrote is false when nothing of it was sent because the connection was
// already torn down or sending had failed (then the request never left).
func (c *conn) send(r *request, flags uint16, data []byte) (wrote bool, err error) {
	big := len(data) > maxCombined
	c.wmu.Lock()
	if big {
		c.waitFlusherLocked()
	}
	if c.shut.Load() || c.werr != nil {
		c.wmu.Unlock()
		return false, errShut
	}
	if big {
		// Nothing is pending (no flusher at work): write the header and
		// the caller's buffer at once. The header is not put in the
		// pending batch, where requests sent meanwhile would follow it.
		c.flushing = true
		c.wmu.Unlock()
		bufs := net.Buffers{appendRequest(c.hdr[:0], flags, r.typ, r.handle, r.off, r.length), data}
		_, err := bufs.WriteTo(c.nc)
		_, ferr := c.flush(err)
		if err == nil {
			err = ferr
		}
		return true, err
	}
	c.wbuf = appendRequest(c.wbuf, flags, r.typ, r.handle, r.off, r.length)
	c.wbuf = append(c.wbuf, data...)
	if c.flushing {
		b := c.batch
		for c.written < b && c.werr == nil {
			c.wcond.Wait()
		}
		wrote, err = c.written >= b || c.tried >= b, nil
		if c.written < b {
			err = c.werr
			if !wrote {
				err = errShut
			}
		}
		c.wmu.Unlock()
		return wrote, err
	}
	c.flushing = true
	c.wmu.Unlock()
	return c.flush(nil)
}

// waitFlusherLocked waits (wmu held) until no flusher is at work or
// sending has failed.
func (c *conn) waitFlusherLocked() {
	for c.flushing && c.werr == nil {
		c.wcond.Wait()
	}
}

// flush runs on the flusher: it writes the pending batch and the batches
// appended meanwhile, until nothing is pending, then lets the next sender
// be the flusher. prior is the error of a write the flusher made before
// (a large request's): it ends sending at once. sent reports whether the
// first batch, which holds a small flusher's own request, was handed to
// the socket; err is the write error that ended sending, if any.
func (c *conn) flush(prior error) (sent bool, err error) {
	c.wmu.Lock()
	if prior != nil {
		if c.werr == nil {
			c.werr = prior
		}
		c.wbuf = c.wbuf[:0] // never handed to the socket
	}
	for len(c.wbuf) > 0 {
		if c.shut.Load() {
			// Torn down: what is pending never leaves.
			if c.werr == nil {
				c.werr = errShut
			}
			if !sent {
				err = errShut
			}
			c.wbuf = c.wbuf[:0]
			break
		}
		buf := c.wbuf
		c.wbuf = c.spare[:0]
		c.tried = c.batch
		c.batch++
		c.wmu.Unlock()
		sent = true
		_, err = c.nc.Write(buf)
		if cap(buf) > maxSpare {
			buf = nil
		}
		c.spare = buf[:0]
		c.wmu.Lock()
		if err != nil {
			if c.werr == nil {
				c.werr = err
			}
			c.wbuf = c.wbuf[:0] // never handed to the socket
			break
		}
		c.written = c.tried
		c.wcond.Broadcast()
	}
	c.flushing = false
	c.wcond.Broadcast()
	c.wmu.Unlock()
	return sent, err
}

// disconnect sends NBD_CMD_DISC (best effort) before the connection closes.
func (c *conn) disconnect() {
	c.wmu.Lock()
	c.waitFlusherLocked()
	if c.shut.Load() || c.werr != nil {
		c.wmu.Unlock()
		return
	}
	c.flushing = true
	c.wmu.Unlock()
	c.nc.SetWriteDeadline(time.Now().Add(100 * time.Millisecond))
	_, err := c.nc.Write(appendRequest(c.hdr[:0], 0, cmdDisc, 0, 0, 0))
	c.flush(err)
}
