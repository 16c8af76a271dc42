package nbd

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"crypto/tls"

	"github.com/mpathfs/mpathfs/backends"
	"github.com/mpathfs/mpathfs/mpath"
)

// Options configure a Client. ParseURI fills them from a path URI.
type Options struct {
	Network string // "tcp" or "unix"
	Address string // host:port, or the socket path
	Export  string // the export name ("" is the default export)
	// TLS, if set, makes the client start TLS (NBD_OPT_STARTTLS) before
	// any other option and refuse a server that declines.
	TLS *tls.Config
	// DialTimeout bounds connecting plus the handshake (default 10s; a
	// context deadline, if earlier, wins).
	DialTimeout time.Duration
	// WatchdogInterval is how often the connection's watchdog looks for
	// requests past their deadline (default 100ms).
	WatchdogInterval time.Duration
	// NoStructuredReplies skips NBD_OPT_STRUCTURED_REPLY (simple replies only).
	NoStructuredReplies bool
	// Name names the path in messages (default: built from the address).
	Name string
}

const (
	defaultDialTimeout = 10 * time.Second
	defaultWatchdog    = 100 * time.Millisecond
)

// Client is one path to an NBD export over one connection. Requests from
// many goroutines are pipelined on it. When the connection dies, requests
// fail with a path failure until Probe reconnects.
type Client struct {
	opts Options
	name string
	size int64

	info atomic.Pointer[exportInfo] // of the latest connection

	mu struct {
		sync.Mutex
		c      *conn // nil before a successful reconnect
		closed bool
	}
	probeMu sync.Mutex // one reconnect at a time
}

var (
	_ backends.Backend    = (*Client)(nil)
	_ backends.Discarder  = (*Client)(nil)
	_ backends.ZeroWriter = (*Client)(nil)
	_ backends.Prober     = (*Client)(nil)
	_ backends.Inquirer   = (*Client)(nil)
	_ backends.Aborter    = (*Client)(nil)
	_ backends.Capable    = (*Client)(nil)
)

// Dial connects to an NBD server and negotiates the export.
func Dial(ctx context.Context, opts Options) (*Client, error) {
	if opts.DialTimeout <= 0 {
		opts.DialTimeout = defaultDialTimeout
	}
	if opts.WatchdogInterval <= 0 {
		opts.WatchdogInterval = defaultWatchdog
	}
	if opts.Network == "" {
		opts.Network = "tcp"
	}
	cl := &Client{opts: opts, name: opts.Name}
	if cl.name == "" {
		cl.name = opts.Network + ":" + opts.Address + "/" + opts.Export
	}
	c, err := cl.connect(ctx)
	if err != nil {
		return nil, mpath.NewError(mpath.ClassPathFailure, "open", err)
	}
	cl.size = int64(c.info.size)
	cl.install(c)
	return cl, nil
}

// connect dials and negotiates one connection.
func (cl *Client) connect(ctx context.Context) (*conn, error) {
	dl := deadlineFor(ctx, cl.opts.DialTimeout)
	dctx, cancel := context.WithDeadline(ctx, dl)
	defer cancel()
	var d net.Dialer
	nc, err := d.DialContext(dctx, cl.opts.Network, cl.opts.Address)
	if err != nil {
		hint := "is the NBD server running and listening there?"
		if cl.opts.Network == "unix" {
			hint = "is the NBD server running and is ?socket= its socket path?"
		}
		return nil, fmt.Errorf("nbd %s: cannot connect to %s %s: %w (%s)", cl.name, cl.opts.Network, cl.opts.Address, err, hint)
	}
	nc.SetDeadline(dl)
	cfg := &handshakeConfig{export: cl.opts.Export, tls: cl.opts.TLS, noStructured: cl.opts.NoStructuredReplies}
	tc, info, err := handshake(dctx, nc, cfg)
	if err != nil {
		nc.Close()
		if ne, ok := errors.AsType[net.Error](err); ok && ne.Timeout() {
			err = fmt.Errorf("%w (the handshake did not finish within the connect timeout %v)", err, cl.opts.DialTimeout)
		}
		return nil, fmt.Errorf("nbd %s: handshake failed: %w", cl.name, err)
	}
	if info.size > math.MaxInt64 {
		nc.Close()
		return nil, fmt.Errorf("nbd %s: handshake failed: %w", cl.name, protoErr("export size %d too large", info.size))
	}
	tc.SetDeadline(time.Time{})
	return newConn(tc, info, cl.name, cl.opts.WatchdogInterval), nil
}

func (cl *Client) install(c *conn) {
	cl.info.Store(c.info)
	cl.mu.Lock()
	cl.mu.c = c
	cl.mu.Unlock()
}

// current returns the connection to use, or a path failure.
func (cl *Client) current(op string) (*conn, error) {
	cl.mu.Lock()
	c, closed := cl.mu.c, cl.mu.closed
	cl.mu.Unlock()
	if closed {
		return nil, mpath.NewError(mpath.ClassPathFailure, op, fmt.Errorf("nbd %s: %w: client closed", cl.name, ErrConnDown))
	}
	if c == nil {
		return nil, mpath.NewError(mpath.ClassPathFailure, op, fmt.Errorf("nbd %s: %w: not connected (waiting for the path checker to reconnect)", cl.name, ErrConnDown))
	}
	return c, nil
}

func deviceErr(op string, err error) error {
	return mpath.NewError(mpath.ClassDeviceError, op, err)
}

// checkRange validates [off, off+n) against the export for op and returns
// how many bytes lie inside it.
func (cl *Client) checkRange(op string, off int64, n int) (int, error) {
	if off < 0 {
		return 0, deviceErr(op, fmt.Errorf("nbd %s: negative offset %d: %w", cl.name, off, syscall.EINVAL))
	}
	if off >= cl.size {
		return 0, nil
	}
	if int64(n) > cl.size-off {
		n = int(cl.size - off)
	}
	return n, nil
}

func (cl *Client) aligned(info *exportInfo, off, n int64) bool {
	m := int64(info.minBlock)
	return m <= 1 || (off%m == 0 && n%m == 0)
}

func (cl *Client) unalignedErr(op string, info *exportInfo, off, n int64) error {
	return deviceErr(op, fmt.Errorf("nbd %s: %s of %d bytes at %d is not aligned to the server's minimum block size %d: %w", cl.name, op, n, off, info.minBlock, syscall.EINVAL))
}

// ReadAt reads len(p) bytes at off. A read across the end of the export
// returns the bytes before it and io.EOF. Reads not aligned to the server's
// minimum block size are widened to aligned ones through a bounce buffer.
func (cl *Client) ReadAt(ctx context.Context, p []byte, off int64) (int, error) {
	n, err := cl.checkRange("read", off, len(p))
	if err != nil {
		return 0, err
	}
	if n == 0 && len(p) > 0 {
		return 0, io.EOF
	}
	c, err := cl.current("read")
	if err != nil {
		return 0, err
	}
	if !cl.aligned(c.info, off, int64(n)) {
		err = cl.readUnaligned(ctx, c, p[:n], off)
	} else {
		err = cl.readAligned(ctx, c, p[:n], off)
	}
	if err != nil {
		return 0, err
	}
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

func (cl *Client) readAligned(ctx context.Context, c *conn, p []byte, off int64) error {
	max := int(c.info.maxBlock)
	for len(p) > 0 {
		k := min(len(p), max)
		if err := c.do(ctx, cmdRead, 0, uint64(off), uint32(k), nil, p[:k]); err != nil {
			return err
		}
		p, off = p[k:], off+int64(k)
	}
	return nil
}

func (cl *Client) readUnaligned(ctx context.Context, c *conn, p []byte, off int64) error {
	m := int64(c.info.minBlock)
	lo := off - off%m
	hi := off + int64(len(p))
	if r := hi % m; r != 0 {
		hi += m - r
	}
	hi = min(hi, cl.size)
	bounce := make([]byte, hi-lo)
	if err := cl.readAligned(ctx, c, bounce, lo); err != nil {
		return err
	}
	copy(p, bounce[off-lo:])
	return nil
}

// WriteAt writes p at off. Writes must be aligned to the server's minimum
// block size (a read-modify-write could lose a concurrent write made
// through another path) and lie inside the export.
func (cl *Client) WriteAt(ctx context.Context, p []byte, off int64) (int, error) {
	return cl.write(ctx, p, off, 0)
}

// WriteAtFUA writes p at off with Force Unit Access: it returns once the
// data is durable. Without server support (SendFUA false) it is a write
// followed by a flush.
func (cl *Client) WriteAtFUA(ctx context.Context, p []byte, off int64) (int, error) {
	if !cl.flag(tflagSendFUA) {
		n, err := cl.write(ctx, p, off, 0)
		if err != nil {
			return n, err
		}
		if err := cl.Flush(ctx); err != nil {
			return 0, err
		}
		return n, nil
	}
	return cl.write(ctx, p, off, cmdFlagFUA)
}

func (cl *Client) write(ctx context.Context, p []byte, off int64, flags uint16) (int, error) {
	n, err := cl.checkRange("write", off, len(p))
	if err != nil {
		return 0, err
	}
	if n < len(p) {
		return 0, deviceErr("write", fmt.Errorf("nbd %s: write of %d bytes at %d beyond the end of the %d-byte export: %w", cl.name, len(p), off, cl.size, syscall.ENOSPC))
	}
	c, err := cl.current("write")
	if err != nil {
		return 0, err
	}
	if c.info.flags&tflagReadOnly != 0 {
		return 0, deviceErr("write", fmt.Errorf("nbd %s: the export is read-only: %w", cl.name, syscall.EROFS))
	}
	if !cl.aligned(c.info, off, int64(n)) {
		return 0, cl.unalignedErr("write", c.info, off, int64(n))
	}
	max, done := int(c.info.maxBlock), 0
	for done < n {
		k := min(n-done, max)
		if err := c.do(ctx, cmdWrite, flags, uint64(off)+uint64(done), uint32(k), p[done:done+k], nil); err != nil {
			return done, err
		}
		done += k
	}
	return done, nil
}

// Flush makes every acknowledged write durable. A server that does not
// advertise NBD_FLAG_SEND_FLUSH has no volatile write cache, so Flush then
// only checks that the path is up.
func (cl *Client) Flush(ctx context.Context) error {
	c, err := cl.current("flush")
	if err != nil {
		return err
	}
	if c.info.flags&tflagSendFlush == 0 {
		if !c.alive() {
			return c.do(ctx, cmdFlush, 0, 0, 0, nil, nil) // fails with the cause
		}
		return nil
	}
	return c.do(ctx, cmdFlush, 0, 0, 0, nil, nil)
}

// Discard sends NBD_CMD_TRIM over [off, off+length).
func (cl *Client) Discard(ctx context.Context, off, length int64) error {
	return cl.ranged(ctx, "discard", tflagSendTrim, cmdTrim, 0, off, length)
}

// WriteZeroes sends NBD_CMD_WRITE_ZEROES over [off, off+length); the server
// may punch holes.
func (cl *Client) WriteZeroes(ctx context.Context, off, length int64) error {
	return cl.ranged(ctx, "write-zeroes", tflagWriteZeroes, cmdWriteZeroes, 0, off, length)
}

// WriteZeroesNoHole is WriteZeroes with NBD_CMD_FLAG_NO_HOLE: the range
// stays allocated.
func (cl *Client) WriteZeroesNoHole(ctx context.Context, off, length int64) error {
	return cl.ranged(ctx, "write-zeroes", tflagWriteZeroes, cmdWriteZeroes, cmdFlagNoHole, off, length)
}

func (cl *Client) ranged(ctx context.Context, op string, need uint16, typ, flags uint16, off, length int64) error {
	c, err := cl.current(op)
	if err != nil {
		return err
	}
	if c.info.flags&need == 0 {
		return fmt.Errorf("nbd %s: %s: %w", cl.name, op, backends.ErrNotSupported)
	}
	if c.info.flags&tflagReadOnly != 0 {
		return deviceErr(op, fmt.Errorf("nbd %s: the export is read-only: %w", cl.name, syscall.EROFS))
	}
	if off < 0 || length < 0 || off > cl.size || length > cl.size-off {
		return deviceErr(op, fmt.Errorf("nbd %s: %s [%d, +%d) outside the %d-byte export: %w", cl.name, op, off, length, cl.size, syscall.EINVAL))
	}
	if !cl.aligned(c.info, off, length) {
		return cl.unalignedErr(op, c.info, off, length)
	}
	chunk := int64(maxTrimChunk)
	if m := int64(c.info.minBlock); m > 1 {
		chunk -= chunk % m
	}
	for length > 0 {
		k := min(length, chunk)
		if err := c.do(ctx, typ, flags, uint64(off), uint32(k), nil, nil); err != nil {
			return err
		}
		off, length = off+k, length-k
	}
	return nil
}

// Size is the export's size in bytes.
func (cl *Client) Size() int64 { return cl.size }

func (cl *Client) flag(f uint16) bool { return cl.info.Load().flags&f != 0 }

// Can answers from the server's transmission flags.
func (cl *Client) Can(c backends.Capability) bool {
	switch c {
	case backends.CapDiscard:
		return cl.flag(tflagSendTrim) && !cl.flag(tflagReadOnly)
	case backends.CapWriteZeroes:
		return cl.flag(tflagWriteZeroes) && !cl.flag(tflagReadOnly)
	case backends.CapProbe, backends.CapInquiry, backends.CapAbort:
		return true
	}
	return false
}

// MultiConn reports NBD_FLAG_CAN_MULTI_CONN: flushes and FUA writes on one
// connection to the export are visible on all.
func (cl *Client) MultiConn() bool { return cl.flag(tflagCanMultiConn) }

// FUA reports whether the server honours NBD_CMD_FLAG_FUA.
func (cl *Client) FUA() bool { return cl.flag(tflagSendFUA) }

// ReadOnly reports whether the server exports read-only.
func (cl *Client) ReadOnly() bool { return cl.flag(tflagReadOnly) }

// BlockSizes returns the server's minimum, preferred and maximum block
// sizes (the maximum capped at 32 MiB).
func (cl *Client) BlockSizes() (min, preferred, max uint32) {
	i := cl.info.Load()
	return i.minBlock, i.prefBlock, i.maxBlock
}

// StructuredReplies reports whether the current connection negotiated
// structured replies.
func (cl *Client) StructuredReplies() bool { return cl.info.Load().structured }

// Inquiry reports transport nbd, vendor NBD and the export name as model.
// NBD carries no identity: the WWID is left empty.
func (cl *Client) Inquiry(ctx context.Context) (backends.Inquiry, error) {
	model := cl.opts.Export
	if len(model) > 16 {
		model = strings.ToValidUTF8(model[:16], "")
	}
	return backends.Inquiry{Transport: "nbd", Vendor: "NBD", Model: model}, nil
}

// Abort tears the connection down: every request in flight fails with a
// path failure at once, and no late reply can complete one.
func (cl *Client) Abort(reason error) {
	cl.mu.Lock()
	c := cl.mu.c
	cl.mu.Unlock()
	if c != nil {
		if reason == nil {
			reason = errors.New("aborted")
		}
		c.teardown(fmt.Errorf("aborted: %w", reason))
	}
}

// Probe is the path checker's test. If the connection is down it
// reconnects, retrying with backoff until ctx ends; then it reads the first
// block. Reconnecting to an export whose size changed fails with a
// permanent-loss error.
func (cl *Client) Probe(ctx context.Context) error {
	cl.probeMu.Lock()
	defer cl.probeMu.Unlock()
	cl.mu.Lock()
	c, closed := cl.mu.c, cl.mu.closed
	cl.mu.Unlock()
	if closed {
		return mpath.NewError(mpath.ClassPathFailure, "probe", fmt.Errorf("nbd %s: %w: client closed", cl.name, ErrConnDown))
	}
	if c == nil || !c.alive() {
		if c != nil {
			c.close(errors.New("replaced"))
		}
		nc, err := cl.reconnect(ctx)
		if err != nil {
			return err
		}
		cl.mu.Lock()
		if cl.mu.closed {
			cl.mu.Unlock()
			nc.close(errors.New("client closed"))
			return mpath.NewError(mpath.ClassPathFailure, "probe", fmt.Errorf("nbd %s: %w: client closed", cl.name, ErrConnDown))
		}
		cl.info.Store(nc.info)
		cl.mu.c = nc
		cl.mu.Unlock()
		c = nc
	}
	n := max(512, int64(c.info.minBlock))
	n = min(n, cl.size)
	if n == 0 {
		return nil
	}
	buf := make([]byte, n)
	if err := c.do(ctx, cmdRead, 0, 0, uint32(n), nil, buf); err != nil {
		return err
	}
	return nil
}

func (cl *Client) reconnect(ctx context.Context) (*conn, error) {
	backoff := 20 * time.Millisecond
	for {
		c, err := cl.connect(ctx)
		if err == nil {
			if int64(c.info.size) != cl.size {
				c.close(errors.New("size changed"))
				return nil, mpath.NewError(mpath.ClassPermanentLoss, "probe", fmt.Errorf("nbd %s: the export's size changed from %d to %d bytes: not the same logical unit", cl.name, cl.size, c.info.size))
			}
			return c, nil
		}
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, mpath.NewError(mpath.ClassPathFailure, "probe", fmt.Errorf("reconnect gave up (%v): %w", ctx.Err(), err))
		case <-t.C:
		}
		backoff = min(2*backoff, 2*time.Second)
	}
}

// Close disconnects. Requests in flight fail with a path failure.
func (cl *Client) Close() error {
	cl.mu.Lock()
	c := cl.mu.c
	already := cl.mu.closed
	cl.mu.closed = true
	cl.mu.c = nil
	cl.mu.Unlock()
	if already || c == nil {
		return nil
	}
	c.mu.Lock()
	idle := len(c.mu.inflight) == 0 && c.mu.err == nil
	c.mu.Unlock()
	if idle {
		c.disconnect()
	}
	c.close(errors.New("client closed"))
	return nil
}
