package backendtest_test

import (
	"context"
	"io"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/mpathfs/mpathfs/backends"
	"github.com/mpathfs/mpathfs/backends/backendtest"
)

func TestMemConformance(t *testing.T) {
	backendtest.Run(t, func(t *testing.T, size int64) backends.Backend { return backendtest.NewMem(size) })
}

func TestMemEdges(t *testing.T) {
	ctx := context.Background()
	m := backendtest.NewMem(8)
	n, err := m.WriteAt(ctx, []byte{1, 2, 3}, 6)
	assert.ErrorIs(t, err, io.ErrShortWrite, "a write past the end")
	assert.Zero(t, n)
	n, err = m.ReadAt(ctx, make([]byte, 4), 6)
	assert.ErrorIs(t, err, io.EOF, "a read past the end is short")
	assert.Equal(t, 2, n)
	assert.Error(t, m.WriteZeroes(ctx, 4, 8))

	m.Update(func(d []byte) { copy(d, "abcdefgh") })
	require.NoError(t, m.Discard(ctx, 2, 2))
	assert.Equal(t, []byte("ab\x00\x00efgh"), m.Snapshot())
	assert.Equal(t, []byte("ef"), m.Bytes(4, 2))
	var seen string
	m.View(func(d []byte) { seen = string(d[6:]) })
	assert.Equal(t, "gh", seen)
}
