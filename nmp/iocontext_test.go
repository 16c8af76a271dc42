package nmp

import (
	"context"
	"errors"
	"testing"
	"testing/synctest"
	"time"
)

func TestIOCtxDeadline(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := newIOCtx(context.Background(), time.Second)
		if c.Err() != nil {
			t.Fatal("fresh context already done")
		}
		if dl, ok := c.Deadline(); !ok || time.Until(dl) != time.Second {
			t.Fatalf("deadline %v %v", dl, ok)
		}
		done := c.Done()
		select {
		case <-done:
			t.Fatal("done before the deadline")
		default:
		}
		time.Sleep(time.Second)
		synctest.Wait()
		select {
		case <-done:
		default:
			t.Fatal("not done at the deadline")
		}
		if !errors.Is(c.Err(), context.DeadlineExceeded) || !c.expired() {
			t.Fatalf("Err %v expired %v", c.Err(), c.expired())
		}
		c.release()
	})
}

func TestIOCtxErrWithoutDone(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := newIOCtx(context.Background(), time.Second)
		time.Sleep(2 * time.Second)
		if !errors.Is(c.Err(), context.DeadlineExceeded) || !c.expired() {
			t.Fatalf("Err %v after the deadline", c.Err())
		}
		c.release()
		// A recycled context starts fresh.
		c2 := newIOCtx(context.Background(), time.Second)
		if c2.Err() != nil {
			t.Fatalf("recycled context is done: %v", c2.Err())
		}
		c2.release()
	})
}

func TestIOCtxParentCancel(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		parent, cancel := context.WithCancel(context.Background())
		c := newIOCtx(parent, time.Hour)
		done := c.Done()
		cancel()
		synctest.Wait()
		select {
		case <-done:
		default:
			t.Fatal("parent cancellation did not close Done")
		}
		if !errors.Is(c.Err(), context.Canceled) || c.expired() {
			t.Fatalf("Err %v expired %v, want Canceled and not expired", c.Err(), c.expired())
		}
		c.release()
	})
}

func TestIOCtxParentDeadlineEarlier(t *testing.T) {
	parent, cancel := context.WithTimeout(context.Background(), time.Millisecond)
	defer cancel()
	c := newIOCtx(parent, time.Hour)
	defer c.release()
	if dl, _ := c.Deadline(); time.Until(dl) > time.Second {
		t.Fatalf("deadline %v ignores the parent's earlier one", dl)
	}
}

// TestIOCtxReuseAfterDone: a context whose Done was asked for but which
// neither expired nor was cancelled goes back to the pool with its channel
// and timer, and works again: it expires at its new deadline.
func TestIOCtxReuseAfterDone(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := newIOCtx(context.Background(), time.Second)
		done := c.Done()
		c.release()
		select {
		case <-done:
			t.Fatal("release closed the channel of a context that did not fire")
		default:
		}
		// Reuse until the pool hands the same one back (it usually does at once).
		var c2 *ioCtx
		for i := 0; i < 100 && c2 != c; i++ {
			c2 = newIOCtx(context.Background(), 2*time.Second)
			if c2 != c {
				c2.release()
			}
		}
		if c2 != c {
			t.Skip("the pool did not hand the context back")
		}
		d2 := c2.Done()
		if c2.Err() != nil {
			t.Fatalf("reused context already done: %v", c2.Err())
		}
		time.Sleep(1500 * time.Millisecond)
		synctest.Wait()
		select {
		case <-d2:
			t.Fatal("the reused context fired at its old deadline")
		default:
		}
		time.Sleep(time.Second)
		synctest.Wait()
		select {
		case <-d2:
		default:
			t.Fatal("the reused context did not fire at its new deadline")
		}
		c2.release()
	})
}

// TestIOCtxDoneAllocs: a steady stream of I/Os that wait on Done (as the
// NBD client does) reuses channel and timer.
func TestIOCtxDoneAllocs(t *testing.T) {
	n := testing.AllocsPerRun(1000, func() {
		c := newIOCtx(context.Background(), time.Second)
		_ = c.Done()
		c.release()
	})
	t.Logf("allocs per I/O that asks for Done (Background parent): %v", n)
	if n > 2 {
		t.Errorf("%v allocs per I/O with Done, want only the timer", n)
	}
}
