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
	"github.com/mpathfs/mpathfs/ioerr"
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
	// Connections is how many connections the path opens to the export
	// (1..MaxConnections). 0 means the default: DefaultMultiConn when the
	// server advertises NBD_FLAG_CAN_MULTI_CONN, else 1. More than one
	// needs that flag.
	Connections int
	// CacheDomain, when set (URI `cache=NAME`), is the operator's word that
	// this server writes through the same cache as every other path declaring
	// the same name — two nbdkit or qemu-nbd processes on one host serving
	// one file share that file's page cache — so a flush on one covers
	// writes another acknowledged. Without it only connections to the same
	// server with multi-conn cover each other.
	CacheDomain string
}

// MaxConnections bounds Options.Connections.
const MaxConnections = 16

// DefaultMultiConn is the number of connections a path opens when the URI
// does not say and the server advertises NBD_FLAG_CAN_MULTI_CONN (see the
// package documentation for the measurement behind it).
const DefaultMultiConn = 4

const (
	defaultDialTimeout = 10 * time.Second
	defaultWatchdog    = 100 * time.Millisecond
)

// Client is one path to an NBD export over one or more connections
// (Options.Connections). Requests from many goroutines are pipelined and
// spread over the connections. When any connection dies, all are torn down
// and requests fail with a path failure until Probe reconnects them all.
type Client struct {
	opts Options
	name string
	size int64
	n    int // connections per path, fixed at Dial

	info atomic.Pointer[exportInfo] // of the latest connections

	// set is the current connection set (nil before a successful
	// reconnect or after Close); writers hold mu.
	set atomic.Pointer[connSet]
	mu  struct {
		sync.Mutex
		closed bool
		// draining: torn-down connections of replaced sets, still read
		// for the proof that their abandoned writes cannot land
		// (fence.go), oldest first.
		draining []*conn
	}
	probeMu sync.Mutex   // one reconnect at a time
	connSeq atomic.Int64 // numbers connections, for messages
}

// connSet is the connections of one (re)connect. A teardown of any of them
// tears all of them down: a path is up only when every connection is.
type connSet struct {
	cs []*conn
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
	if opts.Connections < 0 || opts.Connections > MaxConnections {
		return nil, fmt.Errorf("nbd %s: connections=%d is not from 1 to %d", cl.name, opts.Connections, MaxConnections)
	}
	set, err := cl.connectAll(ctx, opts.Connections, -1)
	if err != nil {
		if ioerr.ClassOf(err) == ioerr.ClassNone {
			err = ioerr.NewError(ioerr.ClassPathFailure, "open", err)
		}
		return nil, err
	}
	cl.n = len(set.cs)
	cl.size = int64(set.cs[0].info.size)
	cl.info.Store(set.cs[0].info)
	cl.set.Store(set)
	return cl, nil
}

// connectAll opens n connections (0: decided by the first connection's
// flags) and checks that they all describe the same export. size, if not
// negative, is the size the export must have.
func (cl *Client) connectAll(ctx context.Context, n int, size int64) (*connSet, error) {
	first, err := cl.connect(ctx)
	if err != nil {
		return nil, err
	}
	multi := first.info.flags&tflagCanMultiConn != 0
	if n == 0 {
		n = 1
		if multi {
			n = DefaultMultiConn
		}
	}
	if n > 1 && !multi {
		first.close(errors.New("refused"))
		return nil, ioerr.NewError(ioerr.ClassDeviceError, "open", fmt.Errorf("nbd %s: connections=%d needs a server that advertises NBD_FLAG_CAN_MULTI_CONN (without it a flush on one connection need not cover writes on another); this one does not: use connections=1, or enable multi-conn on the server (nbdkit: --filter=multi-conn)", cl.name, n))
	}
	cs := make([]*conn, n)
	cs[0] = first
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := 1; i < n; i++ {
		wg.Go(func() { cs[i], errs[i] = cl.connect(ctx) })
	}
	wg.Wait()
	fail := func(err error) (*connSet, error) {
		for _, c := range cs {
			if c != nil {
				c.close(errors.New("connection set incomplete"))
			}
		}
		return nil, err
	}
	for i := 1; i < n; i++ {
		if errs[i] != nil {
			return fail(fmt.Errorf("connection %d of %d: %w", i+1, n, errs[i]))
		}
		if d := infoDiff(first.info, cs[i].info); d != "" {
			return fail(ioerr.NewError(ioerr.ClassDeviceError, "open", fmt.Errorf("nbd %s: connection %d of %d describes a different export than connection 1 (%s): the connections of one path must reach the same export; use connections=1", cl.name, i+1, n, d)))
		}
	}
	if size >= 0 && int64(first.info.size) != size {
		return fail(ioerr.NewError(ioerr.ClassPermanentLoss, "probe", fmt.Errorf("nbd %s: the export's size changed from %d to %d bytes: not the same logical unit", cl.name, size, first.info.size)))
	}
	set := &connSet{cs: cs}
	if n == 1 {
		first.start(cl.opts.WatchdogInterval)
		return set, nil
	}
	for i, c := range cs {
		c.onDown = func(cause error) {
			for j, o := range cs {
				if j != i {
					o.down(fmt.Errorf("connection %d of %d went down: %w", i+1, n, cause), false)
				}
			}
		}
	}
	for _, c := range cs {
		c.start(cl.opts.WatchdogInterval)
	}
	return set, nil
}

// infoDiff describes how two connections' views of the export differ, or
// returns "" when they agree.
func infoDiff(a, b *exportInfo) string {
	switch {
	case a.size != b.size:
		return fmt.Sprintf("size %d, not %d", b.size, a.size)
	case a.flags != b.flags:
		return fmt.Sprintf("transmission flags %#x, not %#x", b.flags, a.flags)
	case a.minBlock != b.minBlock || a.prefBlock != b.prefBlock || a.maxBlock != b.maxBlock:
		return fmt.Sprintf("block sizes %d/%d/%d, not %d/%d/%d", b.minBlock, b.prefBlock, b.maxBlock, a.minBlock, a.prefBlock, a.maxBlock)
	case a.structured != b.structured:
		return fmt.Sprintf("structured replies %v, not %v", b.structured, a.structured)
	}
	return ""
}

// connect dials and negotiates one connection; the caller starts it.
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
	c := allocConn(tc, info, cl.name) // started by connectAll
	c.id = int(cl.connSeq.Add(1))
	return c, nil
}

// conns returns the current connection set, or a path failure.
func (cl *Client) conns(op string) (*connSet, error) {
	set := cl.set.Load()
	if set == nil {
		cl.mu.Lock()
		closed := cl.mu.closed
		cl.mu.Unlock()
		if closed {
			return nil, ioerr.NewError(ioerr.ClassPathFailure, op, fmt.Errorf("nbd %s: %w: client closed", cl.name, ErrConnDown))
		}
		return nil, ioerr.NewError(ioerr.ClassPathFailure, op, fmt.Errorf("nbd %s: %w: not connected (waiting for the path checker to reconnect)", cl.name, ErrConnDown))
	}
	return set, nil
}

// current returns the connection to send a request on: the first one with
// the fewest requests in flight. An idle path thus keeps using its first
// connection (at QD1 that measured faster than round robin over idle
// connections, which wakes a different server connection each time; see
// docs/benchmarks.md, "NBD defaults"), and load spreads as soon as
// requests overlap.
func (cl *Client) current(op string) (*conn, error) {
	set, err := cl.conns(op)
	if err != nil {
		return nil, err
	}
	cs := set.cs
	best := cs[0]
	bn := best.load.Load()
	for i := 1; i < len(cs) && bn > 0; i++ {
		if n := cs[i].load.Load(); n < bn {
			best, bn = cs[i], n
		}
	}
	return best, nil
}

func deviceErr(op string, err error) error {
	return ioerr.NewError(ioerr.ClassDeviceError, op, err)
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
	defer c.markDirty() // after the replies: see Flush
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
// only checks that the path is up. With several connections a flush goes to
// every connection that carried writes since the last flush (in parallel),
// or to one if none did.
func (cl *Client) Flush(ctx context.Context) error {
	set, err := cl.conns("flush")
	if err != nil {
		return err
	}
	cs := set.cs
	if cs[0].info.flags&tflagSendFlush == 0 {
		for _, c := range cs {
			if !c.alive() {
				return c.do(ctx, cmdFlush, 0, 0, 0, nil, nil) // fails with the cause
			}
		}
		return nil
	}
	if len(cs) == 1 {
		return cs[0].do(ctx, cmdFlush, 0, 0, 0, nil, nil)
	}
	// A write marks its connection dirty after its reply, so a write
	// acknowledged before this flush either is seen dirty here or marks
	// it again after the swap, and the flush sent after the swap covers
	// it; a write acknowledged later is not this flush's business.
	var targets []*conn
	for _, c := range cs {
		if c.dirty.Swap(false) {
			targets = append(targets, c)
		}
	}
	if len(targets) == 0 {
		c, err := cl.current("flush")
		if err != nil {
			return err
		}
		return c.do(ctx, cmdFlush, 0, 0, 0, nil, nil)
	}
	errs := make([]error, len(targets))
	var wg sync.WaitGroup
	for i := 1; i < len(targets); i++ {
		wg.Go(func() { errs[i] = targets[i].do(ctx, cmdFlush, 0, 0, 0, nil, nil) })
	}
	errs[0] = targets[0].do(ctx, cmdFlush, 0, 0, 0, nil, nil)
	wg.Wait()
	var first error
	for i, err := range errs {
		if err != nil {
			targets[i].dirty.Store(true) // its writes are not known durable
			if first == nil {
				first = err
			}
		}
	}
	return first
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
	defer c.markDirty()
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

// Abort tears the path's connections down: every request in flight fails
// with a path failure at once, and no late reply can complete one. A
// write-class request that may still land fails with a backends.Pending:
// each connection is half-closed and read until the server answers or
// closes it, which settles them (fence.go).
func (cl *Client) Abort(reason error) {
	set := cl.set.Load()
	if set == nil {
		return
	}
	if reason == nil {
		reason = errors.New("aborted")
	}
	for _, c := range set.cs {
		c.teardown(fmt.Errorf("aborted: %w", reason))
	}
}

// Probe is the path checker's test. If any connection is down it tears
// them all down and reconnects all of them, retrying with backoff until ctx
// ends; then it reads the first block on every connection (in parallel). Reconnecting to
// an export whose size changed fails with a permanent-loss error.
func (cl *Client) Probe(ctx context.Context) error {
	cl.probeMu.Lock()
	defer cl.probeMu.Unlock()
	cl.mu.Lock()
	closed := cl.mu.closed
	cl.mu.Unlock()
	if closed {
		return ioerr.NewError(ioerr.ClassPathFailure, "probe", fmt.Errorf("nbd %s: %w: client closed", cl.name, ErrConnDown))
	}
	set := cl.set.Load()
	up := set != nil
	if up {
		for _, c := range set.cs {
			up = up && c.alive()
		}
	}
	if !up {
		if set != nil {
			cl.set.CompareAndSwap(set, nil)
			cl.retire(set)
		}
		ns, err := cl.reconnect(ctx)
		if err != nil {
			return err
		}
		cl.mu.Lock()
		if cl.mu.closed {
			cl.mu.Unlock()
			for _, c := range ns.cs {
				c.close(errors.New("client closed"))
			}
			return ioerr.NewError(ioerr.ClassPathFailure, "probe", fmt.Errorf("nbd %s: %w: client closed", cl.name, ErrConnDown))
		}
		cl.info.Store(ns.cs[0].info)
		cl.set.Store(ns)
		cl.mu.Unlock()
		set = ns
	}
	n := max(512, int64(set.cs[0].info.minBlock))
	n = min(n, cl.size)
	if n == 0 {
		return nil
	}
	errs := make([]error, len(set.cs))
	var wg sync.WaitGroup
	for i, c := range set.cs {
		wg.Go(func() { errs[i] = c.do(ctx, cmdRead, 0, 0, uint32(n), nil, make([]byte, n)) })
	}
	wg.Wait()
	return errors.Join(errs...)
}

func (cl *Client) reconnect(ctx context.Context) (*connSet, error) {
	backoff := 20 * time.Millisecond
	for {
		set, err := cl.connectAll(ctx, cl.n, cl.size)
		if err == nil {
			return set, nil
		}
		if c := ioerr.ClassOf(err); c == ioerr.ClassPermanentLoss || c == ioerr.ClassDeviceError {
			return nil, err
		}
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, ioerr.NewError(ioerr.ClassPathFailure, "probe", fmt.Errorf("reconnect gave up (%v): %w", ctx.Err(), err))
		case <-t.C:
		}
		backoff = min(2*backoff, 2*time.Second)
	}
}

// retire tears a replaced connection set down and keeps its connections
// draining (while they have unsettled writes) next to the fresh ones, at
// most maxDraining of them: the oldest beyond are closed.
func (cl *Client) retire(set *connSet) {
	for _, c := range set.cs {
		c.teardown(errors.New("replaced"))
	}
	cl.mu.Lock()
	var keep []*conn
	for _, c := range cl.mu.draining {
		if !c.sockGone.Load() {
			keep = append(keep, c)
		}
	}
	for _, c := range set.cs {
		if !c.sockGone.Load() {
			keep = append(keep, c)
		}
	}
	var evict []*conn
	if n := len(keep) - maxDraining; n > 0 {
		evict = append(evict, keep[:n]...)
		keep = keep[n:]
	}
	cl.mu.draining = keep
	cl.mu.Unlock()
	for _, c := range evict {
		c.kill()
	}
}

// Close disconnects. Requests in flight fail with a path failure; writes
// that may still land stay unsettled (closing our side proves nothing).
// Connections still draining are closed too.
func (cl *Client) Close() error {
	cl.mu.Lock()
	already := cl.mu.closed
	cl.mu.closed = true
	set := cl.set.Swap(nil)
	draining := cl.mu.draining
	cl.mu.draining = nil
	cl.mu.Unlock()
	if already {
		return nil
	}
	for _, c := range draining {
		c.close(errors.New("client closed"))
	}
	if set == nil {
		return nil
	}
	for _, c := range set.cs {
		c.mu.Lock()
		idle := len(c.mu.inflight) == 0 && c.mu.err == nil
		c.mu.Unlock()
		if idle {
			c.disconnect()
		}
	}
	for _, c := range set.cs {
		c.close(errors.New("client closed"))
	}
	return nil
}
