package block_test

import (
	"bytes"
	"context"
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/mpathfs/mpathfs/backends"
	"github.com/mpathfs/mpathfs/backends/block"
	"github.com/mpathfs/mpathfs/internal/hangfs"
)

func deadline(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// TestBlockHungCalls: a loop device over a file on hangfs hangs when the
// test holds the file system's requests. Reads return at their deadline,
// writes return a Pending that settles when the pwrite returns, Close
// returns while calls hang, and the late write lands.
func TestBlockHungCalls(t *testing.T) {
	needLoop(t)
	fsys := hangfs.Mount(t, 4<<20)
	dev := attach(t, fsys.Path())
	t.Cleanup(fsys.Release) // before the detach: a loop device with hung I/O does not detach
	d, err := block.OpenDevice(dev, block.Options{})
	require.NoError(t, err)
	t.Cleanup(func() { d.Close() })

	ctx := t.Context()
	old := bytes.Repeat([]byte{1}, 4096)
	_, err = d.WriteAt(ctx, old, 0)
	require.NoError(t, err)

	fsys.Hold(hangfs.Read | hangfs.Write)
	p := make([]byte, 4096)
	_, err = d.ReadAt(deadline(t, 100*time.Millisecond), p, 0)
	require.ErrorIs(t, err, context.DeadlineExceeded)
	var pe backends.Pending
	assert.False(t, errors.As(err, &pe), "a hung read is never pending")

	data := bytes.Repeat([]byte{2}, 8192)
	_, err = d.WriteAt(deadline(t, 100*time.Millisecond), data, 8192)
	require.ErrorAs(t, err, &pe)
	assert.Equal(t, "the pwrite system call on "+dev+" to return", pe.WaitingFor())
	for i := range data {
		data[i] = 3 // the caller's buffer is its own again
	}
	fsys.WaitHeld(t, 1)
	select {
	case <-pe.Settled():
		t.Fatal("settled while the write is held")
	default:
	}
	assert.EqualValues(t, 2, d.Hung())

	closed := make(chan error, 1)
	go func() { closed <- d.Close() }()
	select {
	case err := <-closed:
		require.NoError(t, err)
	case <-time.After(time.Minute):
		t.Fatal("Close hangs behind hung calls")
	}

	fsys.Release()
	select {
	case <-pe.Settled():
	case <-time.After(time.Minute):
		t.Fatal("not settled after the pwrite was released")
	}
	require.Eventually(t, func() bool { return d.Hung() == 0 }, time.Minute, time.Millisecond)
	assert.Equal(t, bytes.Repeat([]byte{2}, 8192), fsys.Data(8192, 8192), "the late write landed")
	assert.Equal(t, make([]byte, 4096), p, "the late read never filled the caller's buffer")
}
