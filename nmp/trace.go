package nmp

import (
	"bufio"
	"encoding/json"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mpathfs/mpathfs/ioerr"
	"github.com/mpathfs/mpathfs/mpath"
)

// TraceAttempt is one try of an I/O on one path.
type TraceAttempt struct {
	Path   string `json:"path"`
	Reason string `json:"reason"`
	Class  string `json:"class,omitempty"` // the error class when the try failed
	Error  string `json:"error,omitempty"`
}

// TraceRecord is one I/O, as `mpathfs trace` prints it (one JSON line).
type TraceRecord struct {
	ID        uint64         `json:"id"`
	Time      *time.Time     `json:"time,omitempty"`
	Device    string         `json:"device"`
	Op        string         `json:"op"`
	Offset    int64          `json:"offset"`
	Length    int64          `json:"length"`
	Attempts  []TraceAttempt `json:"attempts"`
	LatencyUs *float64       `json:"latency_us,omitempty"`
	Status    string         `json:"status"`
}

// Tracer records one TraceRecord per I/O of the devices it is attached to:
// into a bounded ring, to subscribers, and optionally as JSON lines to a
// writer. With Decisions set, times and latencies are left out, so two runs
// of the same scripted workload and seed give the same bytes.
//
// A tracer works in one of two ways:
//
//   - NewTracer: synchronous. Each I/O stores its record in the ring, hands
//     it to the subscribers and writes it to w under the tracer's mutex,
//     before the I/O returns. For tests and deterministic replays, where
//     every record must be there as soon as the I/O is done.
//   - NewAsyncTracer: for production (`mount --trace`, `mpathfs trace`).
//     An I/O only offers its record to a bounded queue (a non-blocking
//     channel send: no mutex of ours, no system call). One goroutine takes
//     the records from the queue, keeps the ring, feeds the subscribers and
//     writes w through a buffer, flushed whenever the queue runs empty. A
//     record the full queue cannot take is dropped and counted (Dropped);
//     I/O never waits for the trace. Close drains the queue and flushes.
type Tracer struct {
	Decisions bool

	mu   sync.Mutex
	ring []TraceRecord
	next int
	full bool
	w    io.Writer     // synchronous tracers: written under mu
	enc  *json.Encoder // synchronous tracers
	subs map[chan TraceRecord]struct{}

	// Asynchronous tracers.
	q       chan TraceRecord
	closing atomic.Bool
	stop    chan struct{}
	done    chan struct{}
	dropped atomic.Uint64
	werr    error // the first write error; set by the writer goroutine

	closeOnce sync.Once

	// Sharing (ShareTracer), under shareMu.
	shares    int
	ephemeral bool
}

// dropReportEvery bounds how often AsyncTraceOptions.OnDrop is called.
const dropReportEvery = 10 * time.Second

// NewTracer makes a synchronous tracer keeping the last ringSize records
// and writing each as a JSON line to w (if not nil) before the I/O returns.
func NewTracer(ringSize int, w io.Writer) *Tracer {
	if ringSize <= 0 {
		ringSize = 4096
	}
	t := &Tracer{ring: make([]TraceRecord, ringSize), w: w, subs: map[chan TraceRecord]struct{}{}}
	if w != nil {
		t.enc = json.NewEncoder(w)
	}
	return t
}

// AsyncTraceOptions configure NewAsyncTracer.
type AsyncTraceOptions struct {
	// Ring is how many of the last records Records keeps; default 4096.
	Ring int
	// Queue bounds the records waiting for the writer goroutine; default
	// 16384 (about 2 MiB). Beyond it records are dropped and counted.
	Queue int
	// W, if not nil, receives each record as a JSON line, through a 64 KiB
	// buffer flushed whenever the queue runs empty.
	W io.Writer
	// OnDrop, if not nil, is called from the writer goroutine with the
	// total of dropped records: at the first drop, then at most every
	// 10 s while records keep being dropped. It must not block for long.
	OnDrop func(total uint64)
}

// NewAsyncTracer makes an asynchronous tracer and starts its writer
// goroutine; Close stops it.
func NewAsyncTracer(o AsyncTraceOptions) *Tracer {
	if o.Ring <= 0 {
		o.Ring = 4096
	}
	if o.Queue <= 0 {
		o.Queue = 16384
	}
	t := &Tracer{ring: make([]TraceRecord, o.Ring), subs: map[chan TraceRecord]struct{}{},
		q: make(chan TraceRecord, o.Queue), stop: make(chan struct{}), done: make(chan struct{})}
	go t.run(o.W, o.OnDrop)
	return t
}

// Dropped is the number of records an asynchronous tracer dropped because
// its queue was full (or it was closed).
func (t *Tracer) Dropped() uint64 { return t.dropped.Load() }

// Close stops the tracer: an asynchronous one writes what is queued,
// flushes w and returns the first write error; every subscription is
// closed. Records of I/Os after Close are dropped. Close does not close w.
func (t *Tracer) Close() error {
	t.closeOnce.Do(func() {
		t.closing.Store(true)
		if t.q != nil {
			close(t.stop)
			<-t.done
		}
		t.mu.Lock()
		for c := range t.subs {
			delete(t.subs, c)
			close(c)
		}
		t.mu.Unlock()
	})
	return t.werr
}

// run is the writer goroutine of an asynchronous tracer.
func (t *Tracer) run(w io.Writer, onDrop func(uint64)) {
	defer close(t.done)
	var bw *bufio.Writer
	var enc *json.Encoder
	if w != nil {
		bw = bufio.NewWriterSize(w, 64<<10)
		enc = json.NewEncoder(bw)
	}
	var reported uint64
	var lastReport time.Time
	reportDrops := func() {
		if onDrop == nil {
			return
		}
		if n := t.dropped.Load(); n != reported && (reported == 0 || time.Since(lastReport) >= dropReportEvery) {
			reported, lastReport = n, time.Now()
			onDrop(n)
		}
	}
	taken := 0
	take := func(r TraceRecord) {
		t.store(r)
		if enc != nil && t.werr == nil {
			if err := enc.Encode(r); err != nil {
				t.werr = err
			}
		}
		if taken++; taken%1024 == 0 {
			reportDrops() // a writer that never catches up still says so
		}
	}
	flush := func() {
		if bw != nil && t.werr == nil {
			if err := bw.Flush(); err != nil {
				t.werr = err
			}
		}
		reportDrops()
	}
	for {
		select {
		case r := <-t.q:
			take(r)
			if len(t.q) == 0 {
				flush()
			}
		case <-t.stop:
			// Emitters see closing and stop queueing; take what is there.
			for len(t.q) > 0 {
				take(<-t.q)
			}
			flush()
			return
		}
	}
}

type tracerBox struct{ t *Tracer }

// SetTracer attaches a tracer to the device (nil detaches it). With no
// tracer the I/O path pays one atomic load and allocates nothing.
func (d *Device) SetTracer(t *Tracer) {
	if t == nil {
		d.tracer.Store(nil)
		return
	}
	d.tracer.Store(&tracerBox{t})
}

// Tracer returns the attached tracer, if any.
func (d *Device) Tracer() *Tracer {
	if b := d.tracer.Load(); b != nil {
		return b.t
	}
	return nil
}

// shareMu orders ShareTracer and its releases across devices; it is never
// taken on the I/O path.
var shareMu sync.Mutex

// ShareTracer is for readers that want a device's records while they read
// (`mpathfs trace`, a scenario's sampling): it returns the attached tracer
// or, when none is, attaches a new asynchronous one. Call release once
// when done (after unsubscribing): the tracer ShareTracer attached is
// detached and closed when its last reader released it, never earlier, so
// readers do not cut each other off. A tracer attached with SetTracer
// (mount --trace) is shared and stays attached.
func (d *Device) ShareTracer() (t *Tracer, release func()) {
	shareMu.Lock()
	defer shareMu.Unlock()
	t = d.Tracer()
	if t == nil {
		t = NewAsyncTracer(AsyncTraceOptions{Ring: 1, Queue: 4096})
		t.ephemeral = true
		d.SetTracer(t)
	}
	t.shares++
	var once sync.Once
	return t, func() {
		once.Do(func() {
			shareMu.Lock()
			t.shares--
			last := t.shares == 0 && t.ephemeral
			if last {
				if b := d.tracer.Load(); b != nil && b.t == t {
					d.tracer.CompareAndSwap(b, nil)
				}
			}
			shareMu.Unlock()
			if last {
				t.Close()
			}
		})
	}
}

// Subscribe returns a channel of records; a slow reader loses records.
// The channel of a closed tracer is closed at once.
func (t *Tracer) Subscribe(n int) chan TraceRecord {
	c := make(chan TraceRecord, n)
	t.mu.Lock()
	if t.closing.Load() {
		close(c)
	} else {
		t.subs[c] = struct{}{}
	}
	t.mu.Unlock()
	return c
}

// Unsubscribe closes a subscription.
func (t *Tracer) Unsubscribe(c chan TraceRecord) {
	t.mu.Lock()
	if _, ok := t.subs[c]; ok {
		delete(t.subs, c)
		close(c)
	}
	t.mu.Unlock()
}

// Subscribers is the number of open subscriptions.
func (t *Tracer) Subscribers() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.subs)
}

// Records returns the ring's records, oldest first. An asynchronous
// tracer's ring holds the records its goroutine has taken so far.
func (t *Tracer) Records() []TraceRecord {
	t.mu.Lock()
	defer t.mu.Unlock()
	if !t.full {
		return append([]TraceRecord(nil), t.ring[:t.next]...)
	}
	return append(append([]TraceRecord(nil), t.ring[t.next:]...), t.ring[:t.next]...)
}

// emit runs on the I/O path.
func (t *Tracer) emit(r TraceRecord) {
	if t.q != nil {
		if t.closing.Load() {
			t.dropped.Add(1)
			return
		}
		select {
		case t.q <- r:
		default:
			t.dropped.Add(1)
		}
		return
	}
	t.store(r)
}

// store keeps r in the ring, writes it to a synchronous tracer's writer
// and hands it to the subscribers (a full subscriber misses it).
func (t *Tracer) store(r TraceRecord) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.ring[t.next] = r
	t.next++
	if t.next == len(t.ring) {
		t.next, t.full = 0, true
	}
	if t.enc != nil {
		_ = t.enc.Encode(r)
	}
	for c := range t.subs {
		select {
		case c <- r:
		default:
		}
	}
}

type ioTrace struct {
	t     *Tracer
	start time.Time
	rec   TraceRecord
}

func (t *Tracer) begin(d *Device, op mpath.OpKind, off, length int64) *ioTrace {
	return &ioTrace{t: t, start: time.Now(), rec: TraceRecord{
		ID: d.ioSeq.Add(1), Device: d.name, Op: op.String(), Offset: off, Length: length,
	}}
}

func (it *ioTrace) attempt(p *mpath.Path, r Reason) {
	it.rec.Attempts = append(it.rec.Attempts, TraceAttempt{Path: p.Name, Reason: r.String()})
}

func (it *ioTrace) failed(c ioerr.Class, err error) {
	if n := len(it.rec.Attempts); n > 0 {
		it.rec.Attempts[n-1].Class = c.String()
		if !it.t.Decisions {
			it.rec.Attempts[n-1].Error = err.Error()
		}
	}
}

func (it *ioTrace) finish(err error) {
	it.rec.Status = "ok"
	if err != nil {
		it.rec.Status = "error: " + err.Error()
		if it.t.Decisions {
			it.rec.Status = "error: " + ioerr.ClassOf(err).String()
		}
	}
	if !it.t.Decisions {
		st := it.start
		lat := float64(time.Since(st).Nanoseconds()) / 1e3
		it.rec.Time, it.rec.LatencyUs = &st, &lat
	}
	it.t.emit(it.rec)
}

// Observer sees every completed try of an I/O on a path (metrics). It is
// called on the I/O path and must not block.
type Observer interface {
	Completed(d *Device, p *mpath.Path, op mpath.OpKind, n int, lat time.Duration, class ioerr.Class)
}

type observerBox struct{ o Observer }

// SetObserver attaches an observer (nil detaches it).
func (d *Device) SetObserver(o Observer) {
	if o == nil {
		d.obs.Store(nil)
		return
	}
	d.obs.Store(&observerBox{o})
}
