package nmp

import (
	"encoding/json"
	"io"
	"sync"
	"time"

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
type Tracer struct {
	Decisions bool

	mu   sync.Mutex
	ring []TraceRecord
	next int
	full bool
	w    io.Writer
	enc  *json.Encoder
	subs map[chan TraceRecord]struct{}
}

// NewTracer makes a tracer keeping the last ringSize records.
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

// Subscribe returns a channel of records; a slow reader loses records.
func (t *Tracer) Subscribe(n int) chan TraceRecord {
	c := make(chan TraceRecord, n)
	t.mu.Lock()
	t.subs[c] = struct{}{}
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

// Records returns the ring's records, oldest first.
func (t *Tracer) Records() []TraceRecord {
	t.mu.Lock()
	defer t.mu.Unlock()
	if !t.full {
		return append([]TraceRecord(nil), t.ring[:t.next]...)
	}
	return append(append([]TraceRecord(nil), t.ring[t.next:]...), t.ring[:t.next]...)
}

func (t *Tracer) emit(r TraceRecord) {
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

func (it *ioTrace) failed(c mpath.Class, err error) {
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
			it.rec.Status = "error: " + mpath.ClassOf(err).String()
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
	Completed(d *Device, p *mpath.Path, op mpath.OpKind, n int, lat time.Duration, class mpath.Class)
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
