package fault_test

import (
	"bytes"
	"context"
	"errors"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/mpathfs/mpathfs/backends"
	"github.com/mpathfs/mpathfs/ioerr"
)

// TestAbortTasks: a reset ends the operations the decorator holds and
// delays with the reset's own error (retryable, its sense, the op's
// name), never reaching the store, without aborting the backend
// underneath; a late-landing write keeps waiting; new operations are not
// affected.
func TestAbortTasks(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		fb, m := newFB(t, 1)
		inject(t, fb, "--hang --op read")
		inject(t, fb, "--latency 10s --op write")
		held := startRead(t.Context(), fb)
		delayed := make(chan error, 1)
		go func() {
			_, err := fb.WriteAt(t.Context(), bytes.Repeat([]byte{7}, 4096), 0)
			delayed <- err
		}()
		synctest.Wait()
		opsBefore := m.ops.Load()
		reset := ioerr.Sense{Key: ioerr.SenseUnitAttention, ASC: 0x29, ASCQ: 0x03}
		n := fb.AbortTasks(&ioerr.Error{Class: ioerr.ClassRetryable, Sense: &reset, Err: errors.New("LUN reset")})
		assert.Equal(t, 2, n, "two operations ended")
		for name, ch := range map[string]<-chan error{"read": held, "write": delayed} {
			err := <-ch
			require.Error(t, err, name)
			assert.ErrorIs(t, err, ioerr.ErrRetryable, name)
			var ie *ioerr.Error
			require.True(t, errors.As(err, &ie), name)
			assert.Equal(t, name, ie.Op)
			require.NotNil(t, ie.Sense)
			assert.Equal(t, "06/29/03", ie.Sense.String())
			var p backends.Pending
			require.True(t, errors.As(err, &p), "%s: an ended operation is settled: it cannot land later", name)
		}
		assert.Equal(t, opsBefore, m.ops.Load(), "ended operations never reached the store")
		assert.Equal(t, make([]byte, 4096), m.block(0), "the delayed write was not stored")
		assert.Equal(t, int64(0), m.aborts.Load(), "a reset does not abort the transport")
		fb.ClearAll()
		require.NoError(t, <-startRead(t.Context(), fb), "a read after the reset")
	})
}

func TestAbortTasksLeavesLateLanding(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		fb, m := newFB(t, 1)
		inject(t, fb, "--land-late 3s --op write")
		ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
		defer cancel()
		res := make(chan error, 1)
		start := time.Now()
		go func() {
			_, err := fb.WriteAt(ctx, bytes.Repeat([]byte{5}, 4096), 0)
			res <- err
		}()
		time.Sleep(time.Second)
		assert.Equal(t, 0, fb.AbortTasks(nil), "a late-landing write is not the decorator's to end")
		err := <-res
		assert.ErrorIs(t, err, context.DeadlineExceeded, "the caller waits for its own deadline")
		assert.Equal(t, 5*time.Second, time.Since(start))
		assert.Equal(t, bytes.Repeat([]byte{5}, 4096), m.block(0), "it landed at 3s all the same")
	})
}
