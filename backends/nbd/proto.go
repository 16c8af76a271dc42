package nbd

import (
	"errors"
	"fmt"
	"syscall"

	"github.com/mpathfs/mpathfs/ioerr"
)

// Protocol constants, from the NBD protocol specification (doc/proto.md).
const (
	magicNBD      = 0x4e42444d41474943 // "NBDMAGIC"
	magicOpt      = 0x49484156454F5054 // "IHAVEOPT"
	magicOldstyle = 0x00420281861253
	magicOptReply = 0x3e889045565a9

	magicRequest    = 0x25609513
	magicSimple     = 0x67446698
	magicStructured = 0x668e33ef

	// handshake flags (server)
	flagFixedNewstyle = 1 << 0
	flagNoZeroes      = 1 << 1
	// client flags
	flagCFixedNewstyle = 1 << 0
	flagCNoZeroes      = 1 << 1

	// transmission flags
	tflagHasFlags     = 1 << 0
	tflagReadOnly     = 1 << 1
	tflagSendFlush    = 1 << 2
	tflagSendFUA      = 1 << 3
	tflagRotational   = 1 << 4
	tflagSendTrim     = 1 << 5
	tflagWriteZeroes  = 1 << 6
	tflagSendDF       = 1 << 7
	tflagCanMultiConn = 1 << 8

	optExportName      = 1
	optAbort           = 2
	optList            = 3
	optStartTLS        = 5
	optInfo            = 6
	optGo              = 7
	optStructuredReply = 8

	repAck        = 1
	repServer     = 2
	repInfo       = 3
	repMetaCtx    = 4
	repErrBit     = 1 << 31
	repErrUnsup   = repErrBit + 1
	repErrPolicy  = repErrBit + 2
	repErrInvalid = repErrBit + 3
	repErrPlatf   = repErrBit + 4
	repErrTLSReqd = repErrBit + 5
	repErrUnknown = repErrBit + 6
	repErrShut    = repErrBit + 7
	repErrBSReqd  = repErrBit + 8
	repErrTooBig  = repErrBit + 9

	infoExport    = 0
	infoName      = 1
	infoDesc      = 2
	infoBlockSize = 3

	cmdRead        = 0
	cmdWrite       = 1
	cmdDisc        = 2
	cmdFlush       = 3
	cmdTrim        = 4
	cmdWriteZeroes = 6

	cmdFlagFUA    = 1 << 0
	cmdFlagNoHole = 1 << 1

	replyFlagDone = 1 << 0

	chunkNone        = 0
	chunkOffsetData  = 1
	chunkOffsetHole  = 2
	chunkBlockStatus = 5
	chunkErrBit      = 1 << 15
	chunkError       = chunkErrBit + 1
	chunkErrorOffset = chunkErrBit + 2

	// NBD error values (the spec fixes them to the Linux errno numbers).
	nbdEPERM     = 1
	nbdEIO       = 5
	nbdENOMEM    = 12
	nbdEINVAL    = 22
	nbdENOSPC    = 28
	nbdEOVERFLOW = 75
	nbdENOTSUP   = 95
	nbdESHUTDOWN = 108
	nbdEROFS     = 30 // not in the spec; some servers send it

	// Bounds on what we accept from a server.
	maxOptReplyLen    = 64 << 10 // one option reply's payload
	maxOptReplies     = 64       // replies to one option before we call it a loop
	maxErrChunkLen    = 64 << 10 // an error chunk's payload
	defaultMaxPayload = 32 << 20 // the spec's default maximum payload
	maxTrimChunk      = 1 << 30  // TRIM / WRITE_ZEROES requests are split at 1 GiB
)

// ServerError is an error a live server returned for one request.
type ServerError struct {
	Errno   uint32 // the NBD error value
	Message string // the server's message, if it sent a structured error
}

func (e *ServerError) Error() string {
	s := fmt.Sprintf("server error %s", errnoName(e.Errno))
	if e.Message != "" {
		s += ": " + e.Message
	}
	return s
}

// Unwrap returns the matching syscall.Errno, so errors.Is(err, syscall.EIO)
// works.
func (e *ServerError) Unwrap() error { return syscall.Errno(e.Errno) }

func errnoName(n uint32) string {
	switch n {
	case nbdEPERM:
		return "EPERM"
	case nbdEIO:
		return "EIO"
	case nbdENOMEM:
		return "ENOMEM"
	case nbdEINVAL:
		return "EINVAL"
	case nbdENOSPC:
		return "ENOSPC"
	case nbdEOVERFLOW:
		return "EOVERFLOW"
	case nbdENOTSUP:
		return "ENOTSUP"
	case nbdESHUTDOWN:
		return "ESHUTDOWN"
	case nbdEROFS:
		return "EROFS"
	}
	return fmt.Sprintf("errno %d", n)
}

// classifyServerErr maps an error a live server returned for one request
// into the taxonomy (see the package documentation).
func classifyServerErr(errno uint32) ioerr.Class {
	switch errno {
	case nbdEIO, nbdESHUTDOWN:
		return ioerr.ClassPathFailure
	case nbdENOMEM:
		return ioerr.ClassRetryable
	}
	return ioerr.ClassDeviceError
}

// ProtocolError reports a server that broke the protocol. The connection
// it happened on is torn down.
type ProtocolError struct{ Msg string }

func (e *ProtocolError) Error() string { return "nbd protocol violation: " + e.Msg }

func protoErr(format string, args ...any) error {
	return &ProtocolError{Msg: fmt.Sprintf(format, args...)}
}

// ErrConnDown is wrapped by the errors of requests that found the
// connection down or lost it while in flight.
var ErrConnDown = errors.New("nbd connection down")

// sanitize makes a server-provided string safe to print: bounded and
// without control characters.
func sanitize(b []byte) string {
	const max = 256
	if len(b) > max {
		b = b[:max]
	}
	out := make([]rune, 0, len(b))
	for _, r := range string(b) {
		if r < 0x20 || r == 0x7f || r == 0xfffd {
			r = '?'
		}
		out = append(out, r)
	}
	return string(out)
}
