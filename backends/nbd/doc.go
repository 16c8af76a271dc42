// Package nbd is mpathfs's own pure-Go client of the Network Block Device
// protocol: one Client is one path to an NBD export, over one or more
// connections (connections=N).
//
// # Objective
//
// A path to a store served by nbdkit, qemu-nbd or nbd-server, with the
// failure behaviour multipathing needs: a dead or hung server fails every
// request on the path promptly, classified as a path failure, and nothing a
// late reply carries can land after the caller got its buffer back.
//
// # URIs
//
// Openers are registered for the NBD URI schemes:
//
//	nbd://host[:port]/export               TCP, port 10809 by default
//	nbd+unix:///export?socket=/path        Unix socket
//	nbds://host[:port]/export?…            TCP with TLS
//	nbds+unix:///export?socket=/path&…     Unix socket with TLS
//
// The path after the first "/" is the export name (percent-decoded; empty
// is the server's default export). Query parameters:
//
//	socket=PATH            the Unix socket (nbd+unix, nbds+unix only)
//	tls-certificates=DIR   a directory in the nbdkit/qemu layout: ca-cert.pem
//	                       (the CA the server's certificate must chain to) and,
//	                       for client authentication, client-cert.pem and
//	                       client-key.pem
//	tls-ca=FILE            CA bundle (PEM); overrides DIR's ca-cert.pem.
//	                       Without any CA the system roots are used.
//	tls-cert=FILE          client certificate (PEM), with tls-key=FILE
//	tls-key=FILE           client private key (PEM)
//	tls-servername=NAME    name to verify the server certificate against
//	                       (default: the URI host; "localhost" for sockets)
//	connect-timeout=DUR    bound on connect plus handshake (default 10s)
//	watchdog=DUR           how often the connection watchdog checks request
//	                       deadlines (default 100ms)
//	structured=BOOL        negotiate structured replies (default true)
//	connections=N          connections the path opens to the export, 1 to 16
//	                       (default: 4 when the server advertises
//	                       NBD_FLAG_CAN_MULTI_CONN, else 1); more than 1
//	                       without that flag is refused
//
// tls-* parameters on nbd:// or nbd+unix:// are an error, as are unknown
// parameters. With nbds the client sends NBD_OPT_STARTTLS first and
// refuses to continue without TLS (no downgrade).
//
// # Decisions
//
// Handshake: fixed newstyle only (NBD_FLAG_C_FIXED_NEWSTYLE, plus
// NBD_FLAG_C_NO_ZEROES when offered); NBD_OPT_STARTTLS when asked for;
// NBD_OPT_STRUCTURED_REPLY (a refusal means simple replies); NBD_OPT_GO
// asking for NBD_INFO_BLOCK_SIZE, falling back to NBD_OPT_EXPORT_NAME only
// when the server answers NBD_REP_ERR_UNSUP. Every length read from the
// server is bounded: option replies at 64 KiB, 64 replies to one option,
// error chunks at 64 KiB, data chunks at the request's length; the
// handshake is bounded in time by connect-timeout and the context.
//
// Transmission: requests are pipelined on the connection and matched to
// replies by handle; replies are demultiplexed straight into the callers'
// buffers, per-request state comes from a pool, and concurrent senders
// combine their requests: one of them at a time writes, and the requests
// sent while it writes leave together in its next write (send.go; a payload
// above 64 KiB is written from the caller's buffer, not copied). Who reads
// replies (leader/follower): on a plain Unix or TCP socket
// the reader role is a token. A submitter that finds it free becomes the
// leader and reads replies itself, delivering other requests' replies on
// the way, until its own has arrived; at QD1 that removes the hand-off to a
// reader goroutine (the netpoller wakes the submitter directly instead of
// waking a reader that then wakes the submitter). Submitters that find the
// role taken wait for their reply as followers; they do not ask their
// context for its Done channel either: one timer per connection, armed
// while followers wait, looks at their contexts every 1 ms and wakes those
// whose context ended (follow.go). A leader reads a message only
// once it is entirely in the 64 KiB read buffer (bufio Peek), so when its
// context ends it can be woken (the read deadline is pulled in) at a
// message boundary with nothing half read, and it steps down at once. A
// leader watches its context that way only once its reply is late (1 ms):
// until then its read carries a deadline of at most that (or the request's
// own, if earlier) and a timed-out read looks at ctx.Err, so a reply that
// comes in time costs no watcher — for contexts package context does not
// know, such as go-fuse's, context.AfterFunc and the Done channel behind it
// cost a goroutine, a wake-up and a timer per request. On
// stepping down with requests still in flight (other waiters, abandoned
// requests, or a message larger than the buffer, such as a 1 MiB read) the
// leader starts a helper goroutine that reads until nothing is in flight
// and then frees the role; with nothing in flight the role is simply
// freed. So at high queue depth a helper keeps the role and the path
// behaves as with a dedicated reader. With nothing in flight nobody reads
// the socket, so the watchdog's tick also peeks at an idle socket
// (non-blocking MSG_PEEK) to notice a server that closed it. TLS
// connections keep one reader goroutine for their life. Reads and writes larger
// than the server's maximum block size (capped at the spec's 32 MiB default
// payload) are split. Structured READ replies are checked chunk by chunk:
// inside the request, no overlap, full coverage before success.
//
// Block size: when the server's minimum block size is above 1, unaligned
// reads are widened to aligned ones through a bounce buffer; unaligned
// writes, discards and write-zeroes fail with a device error (EINVAL). A
// read-modify-write is not done: it would race with writes through other
// paths to the same store, which no client-side lock can cover.
//
// Flags: NBD_FLAG_READ_ONLY makes writes fail with a device error (EROFS)
// and hides discard and write-zeroes; without NBD_FLAG_SEND_FLUSH the server
// has no volatile cache, so Flush succeeds without a round trip (it still
// fails on a dead connection); NBD_FLAG_SEND_TRIM and
// NBD_FLAG_SEND_WRITE_ZEROES answer Can; WriteAtFUA uses NBD_CMD_FLAG_FUA
// when NBD_FLAG_SEND_FUA is set and write plus flush otherwise;
// WriteZeroesNoHole adds NBD_CMD_FLAG_NO_HOLE; MultiConn reports
// NBD_FLAG_CAN_MULTI_CONN.
//
// Connections: a path may open N connections to the same export and spread
// requests over them (the first one with the fewest requests in flight, so
// an idle path keeps using its first connection). Every connection must report the same size, transmission
// flags, block sizes and reply mode, else opening fails naming the
// difference. N > 1 needs NBD_FLAG_CAN_MULTI_CONN: only then does the
// protocol promise that a flush on one connection covers writes completed
// on another, and that what one connection wrote another reads. Even so
// Flush keeps the project's rule literally: it goes, in parallel, to every
// connection that carried a write, trim or write-zeroes since its last
// flush (a connection is marked after the write's reply, before the caller
// sees it, so no acknowledged write can slip between the mark and the
// flush), and to one connection when none did. The connections of a path
// live and die together: a teardown of any of them (a dead socket, a
// protocol violation, a deadline, the watchdog) tears down all of them,
// failing every request in flight on the path; Abort aborts all; Probe
// reconnects all N (refusing a set that no longer matches) and reads the
// first block on each.
//
// Deadlines and teardown: a request's deadline is its context's. When a
// caller's deadline passes, the connection is torn down (a hung path is a
// failed path) and every request in flight on it fails with a path failure.
// A watchdog per connection (a ticker, not a timer per request) tears the
// connection down when any request in flight, including one whose caller
// cancelled, outlives its deadline. A cancelled request without an expired
// deadline is abandoned: its reply is read and discarded, never copied into
// the caller's buffer. Abort tears the connection down at once. A teardown
// half-closes the socket and, while write-class requests on it may still
// land, keeps reading it for the proof that they cannot (fence.go: their
// errors are backends.Pending, settled by a late reply or the server
// closing the connection). After a
// teardown requests fail fast with a path failure wrapping ErrConnDown; the
// client never reconnects inline. Probe (the path checker) reconnects with
// backoff, bounded by its context, then reads the first block; an export
// whose size changed across a reconnect is a permanent device loss.
//
// # Defaults
//
// connections defaults to 4 when the server sets NBD_FLAG_CAN_MULTI_CONN
// (1 without the flag): four connections spread the copying of large
// requests over both cores, and an idle path keeps using its first
// connection so QD1 latency is unaffected. Replies are read by a
// leader/follower hand-off rather than a reader goroutine per connection.
// The measurements behind both choices are in docs/benchmarks.md ("NBD
// defaults").
//
// # Error mapping
//
//	connection refused, reset, closed, I/O timeout,     path failure
//	deadline exceeded, Abort, protocol violation
//	server EIO (transport EIO; nbdkit's error filter)    path failure
//	server ESHUTDOWN                                    path failure
//	server ENOMEM                                       retryable
//	server EPERM, EINVAL, ENOSPC, EOVERFLOW, ENOTSUP,   device error
//	EROFS, any other value
//	read-only export, unaligned write, out of range     device error
//	context cancelled (no deadline expired)             unclassified ctx error
//
// Server errors keep the errno: errors.Is(err, syscall.ENOSPC) works, and
// ServerError carries the server's message. A server error for one request
// does not tear the connection down. A protocol violation (bad magic,
// unknown handle, a reply longer than its request, overlapping chunks)
// tears it down.
//
// Inquiry reports transport "nbd", vendor "NBD" and the export name
// (at most 16 bytes) as model; NBD has no identity, so the WWID is empty.
package nbd
