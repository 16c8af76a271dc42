package nmp

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func readOne(t *testing.T, d *Device) {
	t.Helper()
	buf := make([]byte, 4096)
	_, err := d.ReadAt(context.Background(), buf, 0)
	require.NoError(t, err)
}

// TestShareTracerReaders: two readers share one tracer, both receive every
// record, and the first to leave does not cut off the second; the tracer
// ShareTracer attached goes away with the last reader.
func TestShareTracerReaders(t *testing.T) {
	r := newRig(t, 2, testConfig(PSPRR, nil))
	r.d.SetTracer(nil)

	t1, rel1 := r.d.ShareTracer()
	c1 := t1.Subscribe(16)
	t2, rel2 := r.d.ShareTracer()
	c2 := t2.Subscribe(16)
	require.Same(t, t1, t2, "one tracer for both readers")
	require.Same(t, t1, r.d.Tracer())

	readOne(t, r.d)
	a, b := <-c1, <-c2
	assert.Equal(t, a.ID, b.ID, "both readers get the record")
	assert.Equal(t, "read", a.Op)

	t1.Unsubscribe(c1)
	rel1()
	rel1() // a second call is harmless
	require.Same(t, t2, r.d.Tracer(), "still attached for the second reader")
	readOne(t, r.d)
	b2, ok := <-c2
	require.True(t, ok)
	assert.Greater(t, b2.ID, b.ID)

	t2.Unsubscribe(c2)
	rel2()
	assert.Nil(t, r.d.Tracer(), "detached after the last reader")
	// A new reader gets a new tracer.
	t3, rel3 := r.d.ShareTracer()
	defer rel3()
	assert.NotSame(t, t1, t3)
}

// TestShareTracerKeepsAttached: a tracer attached with SetTracer (mount
// --trace) is shared and stays attached after its readers leave.
func TestShareTracerKeepsAttached(t *testing.T) {
	r := newRig(t, 2, testConfig(PSPRR, nil))
	tr := NewAsyncTracer(AsyncTraceOptions{})
	defer tr.Close()
	r.d.SetTracer(tr)
	got, rel := r.d.ShareTracer()
	require.Same(t, tr, got)
	c := got.Subscribe(4)
	readOne(t, r.d)
	<-c
	got.Unsubscribe(c)
	rel()
	assert.Same(t, tr, r.d.Tracer())
	assert.Equal(t, 0, tr.Subscribers())
}

// TestAsyncTracerFile: every record reaches the writer as one JSON line,
// the subscribers and the ring; Close flushes and closes subscriptions.
func TestAsyncTracerFile(t *testing.T) {
	r := newRig(t, 2, testConfig(PSPRR, nil))
	var out bytes.Buffer
	tr := NewAsyncTracer(AsyncTraceOptions{W: &out, Ring: 8, Queue: 1024})
	r.d.SetTracer(tr)
	c := tr.Subscribe(1024)
	const n = 200
	for i := range n {
		if i%2 == 0 {
			r.write(t, int64(i%64)*4096)
		} else {
			readOne(t, r.d)
		}
	}
	r.d.SetTracer(nil)
	require.NoError(t, tr.Close())
	assert.Zero(t, tr.Dropped())
	sc := bufio.NewScanner(&out)
	lines := 0
	var last uint64
	for sc.Scan() {
		var rec TraceRecord
		require.NoError(t, json.Unmarshal(sc.Bytes(), &rec))
		assert.Greater(t, rec.ID, last, "in order")
		last = rec.ID
		lines++
	}
	assert.Equal(t, n, lines)
	subs := 0
	for range c { // closed by Close
		subs++
	}
	assert.Equal(t, n, subs)
	assert.Len(t, tr.Records(), 8)
	// After Close: dropped, counted, nothing written.
	r.d.SetTracer(tr)
	readOne(t, r.d)
	assert.Equal(t, uint64(1), tr.Dropped())
}

// blockingWriter blocks every Write until release is closed.
type blockingWriter struct {
	release chan struct{}
	entered chan struct{}
	once    sync.Once
	buf     bytes.Buffer
}

func (w *blockingWriter) Write(p []byte) (int, error) {
	w.once.Do(func() { close(w.entered) })
	<-w.release
	return w.buf.Write(p)
}

// TestAsyncTracerDropsWhenBehind: a writer that does not move never holds
// up I/O: records beyond the queue are dropped, counted and reported.
func TestAsyncTracerDropsWhenBehind(t *testing.T) {
	r := newRig(t, 2, testConfig(PSPRR, nil))
	w := &blockingWriter{release: make(chan struct{}), entered: make(chan struct{})}
	var reported atomic.Uint64
	tr := NewAsyncTracer(AsyncTraceOptions{W: w, Queue: 4, OnDrop: func(n uint64) { reported.Store(n) }})
	r.d.SetTracer(tr)
	readOne(t, r.d)
	<-w.entered // the writer goroutine is stuck in Write with record 1
	const n = 100
	for range n {
		readOne(t, r.d) // returns although nothing can be written
	}
	dropped := tr.Dropped()
	assert.GreaterOrEqual(t, dropped, uint64(n-4), "at most the queue's 4 records wait")
	close(w.release)
	r.d.SetTracer(nil)
	require.NoError(t, tr.Close())
	assert.Equal(t, dropped, reported.Load(), "the drop was reported")
	lines := bytes.Count(w.buf.Bytes(), []byte("\n"))
	assert.Equal(t, uint64(n+1), uint64(lines)+dropped, "every record written or counted as dropped")
}

var _ io.Writer = (*blockingWriter)(nil)
