package nbd

import (
	"bytes"
	"context"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestSendCombined: requests sent while another sender is writing leave
// together. A large write to a stopped server blocks its sender in the
// socket write; 16 small writes (and their headers) sent meanwhile wait in
// one pending batch and go out in one write once the server reads again.
// Every write lands where it should.
func TestSendCombined(t *testing.T) {
	s, c, cn := stoppedOneConn(t, "64M")
	ctx := ctxTimeout(t, 30*time.Second)
	big := bytes.Repeat([]byte{0xbb}, 8<<20)
	var wg sync.WaitGroup
	errs := make(chan error, 17)
	wg.Go(func() {
		_, err := c.WriteAt(ctx, big, 0)
		errs <- err
	})
	// The big write is written from the caller's buffer (maxCombined),
	// outside the batches, and blocks: the socket's buffer is smaller than
	// 8 MiB.
	require.Eventually(t, func() bool {
		cn.wmu.Lock()
		defer cn.wmu.Unlock()
		return cn.flushing
	}, wait, time.Millisecond)
	const n = 16
	for i := range n {
		wg.Go(func() {
			_, err := c.WriteAt(ctx, bytes.Repeat([]byte{byte(i + 1)}, 4096), 16<<20+int64(i)*4096)
			errs <- err
		})
	}
	require.Eventually(t, func() bool { return cn.load.Load() == n+1 }, wait, time.Millisecond)
	require.NoError(t, syscall.Kill(s.pid(), syscall.SIGCONT))
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	cn.wmu.Lock()
	written := cn.written
	cn.wmu.Unlock()
	require.Equal(t, uint64(1), written, "batches written after the big write: one for the %d small ones", n)
	got := make([]byte, len(big))
	_, err := c.ReadAt(context.Background(), got, 0)
	require.NoError(t, err)
	require.True(t, bytes.Equal(big, got), "the big write's data")
	for i := range n {
		_, err := c.ReadAt(context.Background(), got[:4096], 16<<20+int64(i)*4096)
		require.NoError(t, err)
		require.Equal(t, bytes.Repeat([]byte{byte(i + 1)}, 4096), got[:4096], "small write %d", i)
	}
}
