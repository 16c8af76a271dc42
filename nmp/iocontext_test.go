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
		c := newIOCtx(context.Background(), time.Now(), time.Second)
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
		c := newIOCtx(context.Background(), time.Now(), time.Second)
		time.Sleep(2 * time.Second)
		if !errors.Is(c.Err(), context.DeadlineExceeded) || !c.expired() {
			t.Fatalf("Err %v after the deadline", c.Err())
		}
		c.release()
		// A recycled context starts fresh.
		c2 := newIOCtx(context.Background(), time.Now(), time.Second)
		if c2.Err() != nil {
			t.Fatalf("recycled context is done: %v", c2.Err())
		}
		c2.release()
	})
}

func TestIOCtxParentCancel(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		parent, cancel := context.WithCancel(context.Background())
		c := newIOCtx(parent, time.Now(), time.Hour)
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
	c := newIOCtx(parent, time.Now(), time.Hour)
	defer c.release()
	if dl, _ := c.Deadline(); time.Until(dl) > time.Second {
		t.Fatalf("deadline %v ignores the parent's earlier one", dl)
	}
}
