package nbd

import (
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/bits"
	"net"
	"time"
)

// exportInfo is what the handshake learned about the export.
type exportInfo struct {
	size       uint64
	flags      uint16 // transmission flags
	structured bool   // structured replies negotiated
	minBlock   uint32 // 1 when the server sent no constraints
	prefBlock  uint32
	maxBlock   uint32 // maximum payload we send or ask for
	tls        bool
	usedGo     bool // NBD_OPT_GO (false: the NBD_OPT_EXPORT_NAME fallback)
}

// handshakeConfig is what the client asks for.
type handshakeConfig struct {
	export       string
	tls          *tls.Config // nil: no TLS
	noStructured bool
}

// handshake runs the fixed newstyle negotiation on nc and returns the
// connection to use for transmission (a *tls.Conn when TLS was started).
// The caller bounds it in time with a deadline on nc; ctx bounds the TLS
// handshake.
func handshake(ctx context.Context, nc net.Conn, cfg *handshakeConfig) (net.Conn, *exportInfo, error) {
	if len(cfg.export) > 4096 {
		return nil, nil, errors.New("export name longer than 4096 bytes")
	}
	var hdr [18]byte
	if _, err := io.ReadFull(nc, hdr[:]); err != nil {
		return nil, nil, fmt.Errorf("reading the server greeting: %w", eofMeansClosed(err))
	}
	if m := binary.BigEndian.Uint64(hdr[0:]); m != magicNBD {
		return nil, nil, protoErr("bad greeting magic %#x (not an NBD server?)", m)
	}
	switch m := binary.BigEndian.Uint64(hdr[8:]); m {
	case magicOpt:
	case magicOldstyle:
		return nil, nil, errors.New("server uses the oldstyle handshake, which is not supported; run it in newstyle mode")
	default:
		return nil, nil, protoErr("bad newstyle magic %#x", m)
	}
	hflags := binary.BigEndian.Uint16(hdr[16:])
	if hflags&flagFixedNewstyle == 0 {
		return nil, nil, errors.New("server does not offer the fixed newstyle handshake (NBD_FLAG_FIXED_NEWSTYLE); it is too old")
	}
	cflags := uint32(flagCFixedNewstyle)
	noZeroes := hflags&flagNoZeroes != 0
	if noZeroes {
		cflags |= flagCNoZeroes
	}
	var b4 [4]byte
	binary.BigEndian.PutUint32(b4[:], cflags)
	if _, err := nc.Write(b4[:]); err != nil {
		return nil, nil, fmt.Errorf("sending client flags: %w", err)
	}
	h := &haggler{nc: nc}
	info := &exportInfo{minBlock: 1, prefBlock: 4096, maxBlock: defaultMaxPayload}

	if cfg.tls != nil {
		typ, data, err := h.simpleOption(optStartTLS, nil)
		if err != nil {
			return nil, nil, fmt.Errorf("NBD_OPT_STARTTLS: %w", err)
		}
		if typ != repAck {
			h.abort()
			return nil, nil, fmt.Errorf("server refused TLS (NBD_OPT_STARTTLS answered %s%s); the server must be started with TLS enabled, or use nbd:// instead of nbds://", repName(typ), msgSuffix(data))
		}
		tc := tls.Client(nc, cfg.tls)
		if err := tc.HandshakeContext(ctx); err != nil {
			return nil, nil, fmt.Errorf("TLS handshake: %w", err)
		}
		nc = tc
		h.nc = tc
		info.tls = true
	}

	if !cfg.noStructured {
		typ, data, err := h.simpleOption(optStructuredReply, nil)
		if err != nil {
			return nil, nil, fmt.Errorf("NBD_OPT_STRUCTURED_REPLY: %w", err)
		}
		switch typ {
		case repAck:
			info.structured = true
		case repErrTLSReqd:
			h.abort()
			return nil, nil, errTLSRequired(data)
		case repErrShut:
			h.abort()
			return nil, nil, fmt.Errorf("server is shutting down%s", msgSuffix(data))
		default:
			if typ&repErrBit == 0 {
				return nil, nil, protoErr("unexpected reply %s to NBD_OPT_STRUCTURED_REPLY", repName(typ))
			}
			// Any error: carry on with simple replies.
		}
	}

	err := h.optGo(cfg.export, info)
	if errors.Is(err, errGoUnsupported) {
		err = h.exportName(cfg.export, noZeroes, info)
	}
	if err != nil {
		return nil, nil, err
	}
	if info.flags&tflagHasFlags == 0 {
		// Servers must set it; treat all other flags as absent.
		info.flags = 0
	}
	return nc, info, nil
}

var errGoUnsupported = errors.New("NBD_OPT_GO unsupported")

func errTLSRequired(data []byte) error {
	return fmt.Errorf("server requires TLS (NBD_REP_ERR_TLS_REQD%s); use nbds:// or nbds+unix:// with tls-certificates=DIR or tls-ca=FILE", msgSuffix(data))
}

func msgSuffix(data []byte) string {
	if len(data) == 0 {
		return ""
	}
	return ": " + sanitize(data)
}

func repName(t uint32) string {
	switch t {
	case repAck:
		return "NBD_REP_ACK"
	case repServer:
		return "NBD_REP_SERVER"
	case repInfo:
		return "NBD_REP_INFO"
	case repMetaCtx:
		return "NBD_REP_META_CONTEXT"
	case repErrUnsup:
		return "NBD_REP_ERR_UNSUP"
	case repErrPolicy:
		return "NBD_REP_ERR_POLICY"
	case repErrInvalid:
		return "NBD_REP_ERR_INVALID"
	case repErrPlatf:
		return "NBD_REP_ERR_PLATFORM"
	case repErrTLSReqd:
		return "NBD_REP_ERR_TLS_REQD"
	case repErrUnknown:
		return "NBD_REP_ERR_UNKNOWN"
	case repErrShut:
		return "NBD_REP_ERR_SHUTDOWN"
	case repErrBSReqd:
		return "NBD_REP_ERR_BLOCK_SIZE_REQD"
	case repErrTooBig:
		return "NBD_REP_ERR_TOO_BIG"
	}
	return fmt.Sprintf("reply type %#x", t)
}

type haggler struct {
	nc  net.Conn
	buf [20]byte
}

func (h *haggler) sendOption(opt uint32, data []byte) error {
	msg := make([]byte, 16+len(data))
	binary.BigEndian.PutUint64(msg[0:], magicOpt)
	binary.BigEndian.PutUint32(msg[8:], opt)
	binary.BigEndian.PutUint32(msg[12:], uint32(len(data)))
	copy(msg[16:], data)
	if _, err := h.nc.Write(msg); err != nil {
		return fmt.Errorf("sending option %d: %w", opt, err)
	}
	return nil
}

// abort sends NBD_OPT_ABORT without waiting for the reply.
func (h *haggler) abort() { h.sendOption(optAbort, nil) }

// readReply reads one option reply to opt, bounding its length.
func (h *haggler) readReply(opt uint32) (uint32, []byte, error) {
	if _, err := io.ReadFull(h.nc, h.buf[:]); err != nil {
		return 0, nil, fmt.Errorf("reading option reply: %w", eofMeansClosed(err))
	}
	if m := binary.BigEndian.Uint64(h.buf[0:]); m != magicOptReply {
		return 0, nil, protoErr("bad option reply magic %#x", m)
	}
	if o := binary.BigEndian.Uint32(h.buf[8:]); o != opt {
		return 0, nil, protoErr("option reply for option %d, expected %d", o, opt)
	}
	typ := binary.BigEndian.Uint32(h.buf[12:])
	n := binary.BigEndian.Uint32(h.buf[16:])
	if n > maxOptReplyLen {
		return 0, nil, protoErr("option reply of %d bytes exceeds the %d-byte limit", n, maxOptReplyLen)
	}
	var data []byte
	if n > 0 {
		data = make([]byte, n)
		if _, err := io.ReadFull(h.nc, data); err != nil {
			return 0, nil, fmt.Errorf("reading option reply payload: %w", eofMeansClosed(err))
		}
	}
	return typ, data, nil
}

// simpleOption sends an option that has exactly one reply.
func (h *haggler) simpleOption(opt uint32, data []byte) (uint32, []byte, error) {
	if err := h.sendOption(opt, data); err != nil {
		return 0, nil, err
	}
	typ, d, err := h.readReply(opt)
	if err != nil {
		return 0, nil, err
	}
	if typ == repAck && len(d) != 0 {
		return 0, nil, protoErr("NBD_REP_ACK with a %d-byte payload", len(d))
	}
	return typ, d, nil
}

func (h *haggler) optGo(export string, info *exportInfo) error {
	data := make([]byte, 4+len(export)+2+2)
	binary.BigEndian.PutUint32(data[0:], uint32(len(export)))
	copy(data[4:], export)
	binary.BigEndian.PutUint16(data[4+len(export):], 1)
	binary.BigEndian.PutUint16(data[6+len(export):], infoBlockSize)
	if err := h.sendOption(optGo, data); err != nil {
		return err
	}
	gotExport := false
	for i := 0; ; i++ {
		if i >= maxOptReplies {
			return protoErr("more than %d replies to NBD_OPT_GO", maxOptReplies)
		}
		typ, d, err := h.readReply(optGo)
		if err != nil {
			return fmt.Errorf("NBD_OPT_GO: %w", err)
		}
		if typ&repErrBit != 0 && typ != repErrUnsup {
			h.abort() // a soft disconnect, as the spec asks
		}
		switch typ {
		case repAck:
			if len(d) != 0 {
				return protoErr("NBD_REP_ACK with a %d-byte payload", len(d))
			}
			if !gotExport {
				return protoErr("server acknowledged NBD_OPT_GO without sending NBD_INFO_EXPORT")
			}
			info.usedGo = true
			return nil
		case repInfo:
			if len(d) < 2 {
				return protoErr("NBD_REP_INFO of %d bytes", len(d))
			}
			switch binary.BigEndian.Uint16(d) {
			case infoExport:
				if len(d) != 12 {
					return protoErr("NBD_INFO_EXPORT of %d bytes, want 12", len(d))
				}
				info.size = binary.BigEndian.Uint64(d[2:])
				info.flags = binary.BigEndian.Uint16(d[10:])
				gotExport = true
			case infoBlockSize:
				if len(d) != 14 {
					return protoErr("NBD_INFO_BLOCK_SIZE of %d bytes, want 14", len(d))
				}
				if err := info.setBlockSizes(binary.BigEndian.Uint32(d[2:]), binary.BigEndian.Uint32(d[6:]), binary.BigEndian.Uint32(d[10:])); err != nil {
					return err
				}
			default:
				// NBD_INFO_NAME, NBD_INFO_DESCRIPTION, future types: ignored.
			}
		case repErrUnsup:
			return errGoUnsupported
		case repErrUnknown:
			return fmt.Errorf("export %q does not exist on the server (NBD_REP_ERR_UNKNOWN%s); check the export name in the URI path (nbdinfo --list shows the server's exports)", export, msgSuffix(d))
		case repErrTLSReqd:
			return errTLSRequired(d)
		case repErrPolicy:
			return fmt.Errorf("server refused export %q by policy (NBD_REP_ERR_POLICY%s)", export, msgSuffix(d))
		case repErrShut:
			return fmt.Errorf("server is shutting down (NBD_REP_ERR_SHUTDOWN%s)", msgSuffix(d))
		case repErrBSReqd:
			return fmt.Errorf("server insists on block size negotiation it did not complete (NBD_REP_ERR_BLOCK_SIZE_REQD%s)", msgSuffix(d))
		default:
			if typ&repErrBit != 0 {
				return fmt.Errorf("server refused export %q: %s%s", export, repName(typ), msgSuffix(d))
			}
			return protoErr("unexpected %s in reply to NBD_OPT_GO", repName(typ))
		}
	}
}

func (info *exportInfo) setBlockSizes(min, pref, max uint32) error {
	if min == 0 || min > 64<<10 || bits.OnesCount32(min) != 1 {
		return protoErr("minimum block size %d is not a power of two in 1..65536", min)
	}
	if pref < min || pref > 32<<20 || bits.OnesCount32(pref) != 1 {
		return protoErr("preferred block size %d is not a power of two in %d..32 MiB", pref, min)
	}
	if max < pref || (max != 0xffffffff && max%min != 0) {
		return protoErr("maximum block size %d is invalid (minimum %d, preferred %d)", max, min, pref)
	}
	info.minBlock, info.prefBlock = min, pref
	if max > defaultMaxPayload {
		max = defaultMaxPayload
	}
	info.maxBlock = max - max%min
	return nil
}

func (h *haggler) exportName(export string, noZeroes bool, info *exportInfo) error {
	if err := h.sendOption(optExportName, []byte(export)); err != nil {
		return err
	}
	n := 10
	if !noZeroes {
		n += 124
	}
	buf := make([]byte, n)
	if _, err := io.ReadFull(h.nc, buf); err != nil {
		return fmt.Errorf("NBD_OPT_EXPORT_NAME: the server closed the connection (export %q does not exist, or the server requires TLS): %w", export, eofMeansClosed(err))
	}
	info.size = binary.BigEndian.Uint64(buf)
	info.flags = binary.BigEndian.Uint16(buf[8:])
	return nil
}

func eofMeansClosed(err error) error {
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return fmt.Errorf("server closed the connection: %w", err)
	}
	return err
}

// deadlineFor returns the earlier of ctx's deadline and now+d.
func deadlineFor(ctx context.Context, d time.Duration) time.Time {
	dl := time.Now().Add(d)
	if cd, ok := ctx.Deadline(); ok && cd.Before(dl) {
		return cd
	}
	return dl
}
