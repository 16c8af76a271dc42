// Package fault is the fault-injection decorator: it wraps any
// backends.Backend and makes it fail, stall, hang or crawl on demand, live,
// reproducibly and in layers.
//
//	fb := fault.Wrap(file, seed)
//	id, err := fb.Inject(fault.Spec{Error: "path-failure", Ops: []string{"read", "write"}})
//	…
//	fb.Clear(id)
//
// Inject, Clear, ClearAll and List may be called from any goroutine while
// I/O runs. With no fault active an operation costs one atomic load more
// than the backend underneath: no lock, no allocation.
//
// # A fault
//
// A Spec says which operations a fault matches (filters), on which of those
// it fires (triggers) and what it does then (effects). It travels as JSON
// (snake_case fields, durations as Go duration strings such as "3s") and as
// CLI-style flags, which ParseArgs reads and Spec.Args prints:
//
//	effects
//	  --error CLASS       fail with an *ioerr.Error of this class: path-failure,
//	                      retryable, not-ready, device-error, permanent-loss
//	                      (aliases busy, medium, pdl as ioerr.ParseClass reads them)
//	  --sense KK/AA/QQ    the error's sense data, hex (default per class, below)
//	  --late              run the operation first, then fail it (ack lost)
//	  --hang              hold the operation until the fault is cleared or
//	                      expires (it then proceeds), the caller's context
//	                      ends or Abort is called (it then fails: path failure)
//	  --land-late D       a write, discard or write-zeroes lands late: the
//	                      caller sees a hang until its context ends, Abort
//	                      is called or the decorator closes, and the
//	                      operation executes on the backend underneath D
//	                      after it was issued (a stale write). The caller's
//	                      error is a path failure and a backends.Pending
//	                      settled once the late execution returned. Reads,
//	                      flushes and probes it matches are held as by --hang
//	  --silent            with --land-late: no proof. The error is a plain
//	                      path failure wrapping the deadline, not a Pending,
//	                      and Abort does not cut the wait short
//	  --latency D         delay it by D (e.g. 20ms)
//	  --jitter D          plus a uniform random delay in [0, D)
//	  --slow N            make it take N× its natural time (N ≥ 1, "3" or "3x")
//	  --bandwidth RATE    cap the bytes/s of the reads and writes it matches
//	                      (one bucket per fault): 10M = 10 MiB/s, "512k/s"
//	  --corrupt KIND      acknowledge it, but with wrong data (excludes --error,
//	                      --hang and --land-late):
//	                      bitflip: a read returns, a write stores, the data
//	                      with --bits N (default 1) random bits flipped, inside
//	                      the part of the operation in the fault's range;
//	                      misdirect: a write lands --misdirect-by SIZE away
//	                      (either sign; default a seeded 1 to 8 blocks of
//	                      4 KiB, either side); drop: a write is not stored;
//	                      torn: only the first --torn-at SIZE bytes of a write
//	                      are stored (default a seeded sector boundary inside
//	                      it). Default --op: read,write for bitflip, write for
//	                      the others; other operations are refused
//	filters
//	  --op LIST           read,write,flush,discard,probe (discard also covers
//	                      write-zeroes; "write-zeroes" and "zero" are accepted
//	                      as its aliases); default all of them; repeatable
//	  --range OFF:LEN     only operations overlapping [OFF, OFF+LEN);
//	  --offset N --length N   the same in two flags
//	triggers (default: every matching operation)
//	  --probability P     with chance P: 0.05 or 5%
//	  --every N           every Nth matching operation
//	  --after N           let the first N matching operations pass
//	  --count N           fire at most N times, then expire
//	  --for D             expire D after injection (alias --duration)
//	  --seed N            the fault's own seed (default: from Wrap's seed and the ID)
//
// Flags take "--flag value" or "--flag=value"; one dash works too. Sizes are
// binary as in fio: 4k = 4096, 1M = 1 MiB, 1G = 1 GiB ("KiB", "kb" mean the
// same). Bandwidth is in bytes per second, not bits as nbdkit's rate filter
// takes it.
//
// Examples:
//
//	--error path-failure                      the path is dead
//	--error path-failure --op read,write      gray failure: the checker's probe passes, data I/O fails
//	--hang --for 30s                          a hung path that comes back
//	--error device-error --op read --range 1M:4k   a bad sector
//	--error retryable --sense 02/04/0a --count 3   ALUA transitioning, three times
//	--latency 20ms --jitter 10ms --probability 10%
//	--slow 4 --op write                       slow, not dead
//	--error path-failure --late --op write    the write lands, its ack is lost
//	--land-late 2s --op write                 writes time out, then land 2 s after they were issued
//	--land-late 2s --op write --silent        the same, with no proof of the landing
//	--corrupt bitflip --op read --range 1M:4k a bit rots on the way back
//	--corrupt misdirect --misdirect-by 8k --count 1   one write lands 8k too far
//
// # Filters and triggers
//
// A range filter matches by overlap and only operations that have a range
// (read, write, discard, write-zeroes); it never matches flush or probe.
// Triggers combine: of the operations a fault matches, After lets the first
// N pass; of the rest, Every picks each Nth; of those, Probability picks at
// random; Count caps how often it fires and Duration how long it lives.
// Either ends the fault: it leaves the list. A hang fault whose Count is used
// up is the exception: it catches no new operation but holds those it caught
// until it is cleared or its Duration ends (List shows it as exhausted).
//
// # Injected errors
//
// An injected error is an *ioerr.Error of the spec's class whose Err is an
// *InjectedError ("injected fault #3"); errors.Is(err, fault.ErrInjected)
// tells it from a real one. Unless the error is --late, the operation never
// reached the backend underneath, so nothing was written. Default sense data:
//
//	path-failure    none (a transport error)
//	retryable       0b/00/00 ABORTED COMMAND
//	not-ready       02/04/00 LOGICAL UNIT NOT READY, CAUSE NOT REPORTABLE
//	device-error    03/11/00 UNRECOVERED READ ERROR on reads and probes,
//	                03/0c/00 WRITE ERROR on writes, flushes and discards
//	permanent-loss  05/25/00 LOGICAL UNIT NOT SUPPORTED (PDL, as ESXi reads it)
//
// An operation that the decorator holds or delays and whose context ends,
// or that Abort cuts short, fails with a path failure wrapping ctx.Err()
// or the abort reason: it timed out on this path.
//
// # Late landing
//
// A land-late fault models the classic multipath hazard: a write times out
// on one path, is retried on another and acknowledged, newer data is
// written to the same blocks, and then the first attempt executes and
// rolls them back. The decorator copies the data when the operation is
// issued and schedules its execution D later on a background context,
// whatever happens to the fault or the caller meanwhile (Clear does not
// cancel it, nor release the caller: the operation is in the hands of a
// server that will not answer). Its caller waits until its context ends,
// Abort is called or the decorator is closed, and gets a path failure
// wrapping the reason:
//
//   - by default that error is a backends.Pending whose Settled closes once
//     the late execution has returned — a server that drains its queue and
//     then closes the connection, so the initiator learns when the write
//     cannot land any more;
//   - with --silent it is not a Pending, and Abort does not end the wait
//     early (the caller times out on its own deadline): there is no proof,
//     and only quiesce, fencing or APD can end the ambiguity.
//
// List shows the operations a fault holds (Held) and has yet to land
// (Landing); Backend.Landing counts the latter over every fault, cleared
// ones included. A land-late fault whose Count is used up stays listed as
// exhausted, like a hang fault.
//
// # Stacking
//
// Every active fault is evaluated in ID order, like a stack of nbdkit
// filters with the oldest nearest the caller. Delays add up (and so do the
// extra factors of --slow); a hang holds the operation before later faults
// are looked at; the first fault that fires with an error ends the
// evaluation: later faults do not see the operation, count it or fire.
// Delays are served before the error is returned. A land-late fault that
// fires on a write-class operation ends the evaluation too, and the delays
// of the faults before it do not apply.
//
// # Determinism
//
// Each fault draws its probability, jitter and corruption (which bits, how
// far, where to tear) from its own PCG generator,
// seeded from Spec.Seed or else from Wrap's seed and the fault's ID. The
// same seeds and the same sequence of operations (from one goroutine) give
// the same errors and delays, run after run.
//
// # Capabilities
//
// The decorator implements every optional capability and answers Can by
// asking the backend underneath, except that it always offers probe (with
// no Prober underneath, a probe is a successful no-op that faults still
// apply to) and abort (Abort fails what the decorator holds or delays, then
// aborts the backend underneath if it can). Discard, WriteZeroes and Inquiry
// on a backend that lacks them fail with a device error wrapping
// backends.ErrNotSupported. Unwrap returns the backend underneath, so
// backends.As sees through the decorator. Inquiry and Size are never
// faulted.
package fault
