package integrity

import (
	"bytes"
	"context"
	"encoding/binary"
	"hash/crc32"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// The store rolls back behind the oracle's back: an older acknowledged
// version lands again over newer data (written straight to the store, as
// a stale write that timed out on another path would).

// TestRolledBackAfterReadBack: the last write was read back intact, then
// the version before it is back on every reader: rolled back, not lost.
func TestRolledBackAfterReadBack(t *testing.T) {
	ctx := context.Background()
	const at = 5 * 4096
	d, paths := device(t, nil)
	o := New(d, Options{Paths: PathReaders(d.Paths)})
	_, err := o.WriteAt(ctx, fill(1), at)
	require.NoError(t, err)
	_, err = o.WriteAt(ctx, fill(2), at)
	require.NoError(t, err)
	_, err = o.ReadAt(ctx, make([]byte, 4096), at) // generation 2 is on the store
	require.NoError(t, err)
	require.Empty(t, o.Problems())
	_, err = paths[1].Backend.WriteAt(ctx, fill(1), at) // the stale write lands
	require.NoError(t, err)

	rep, err := o.Check(ctx)
	require.NoError(t, err)
	require.NotEmpty(t, rep.Problems)
	for _, p := range rep.Problems {
		t.Logf("%s", p)
		assert.Equal(t, KindRolledBack, p.Kind)
		assert.Equal(t, int64(at), p.Offset)
		assert.Equal(t, uint64(2), p.Generation, "expected generation")
		assert.Equal(t, uint64(1), p.FoundGeneration, "found generation")
		assert.Contains(t, p.String(), "rolled back at offset 20480")
		assert.Contains(t, p.String(), "expected generation 2, found generation 1")
	}
	assert.Len(t, rep.Problems, 3, "the device and both paths")
}

// TestRolledBackOlderThanPredecessor: with no read in between, an older
// version than the one before the last write coming back is a rollback
// too; the immediate predecessor alone is a lost write.
func TestRolledBackOlderThanPredecessor(t *testing.T) {
	ctx := context.Background()
	d, paths := device(t, nil)
	o := New(d, Options{Paths: PathReaders(d.Paths)})
	for _, v := range []byte{1, 2, 3} {
		_, err := o.WriteAt(ctx, fill(v), 0)
		require.NoError(t, err)
		_, err = o.WriteAt(ctx, fill(v+10), 8*4096)
		require.NoError(t, err)
	}
	// block 0 gets generation 1 back (two writes gone), block 8 the
	// version just before its last write (generation 4)
	_, err := paths[1].Backend.WriteAt(ctx, fill(1), 0)
	require.NoError(t, err)
	_, err = paths[1].Backend.WriteAt(ctx, fill(12), 8*4096)
	require.NoError(t, err)

	rep, err := o.Check(ctx)
	require.NoError(t, err)
	kinds := map[int64]string{}
	for _, p := range rep.Problems {
		t.Logf("%s", p)
		kinds[p.Offset] = p.Kind
		switch p.Offset {
		case 0:
			assert.Equal(t, [2]uint64{5, 1}, [2]uint64{p.Generation, p.FoundGeneration})
		case 8 * 4096:
			assert.Equal(t, [2]uint64{6, 4}, [2]uint64{p.Generation, p.FoundGeneration})
		}
	}
	assert.Equal(t, map[int64]string{0: KindRolledBack, 8 * 4096: KindLost}, kinds)
}

// TestStaleReadNamesGenerations: an application read of an older version
// is stale, with both generations.
func TestStaleReadNamesGenerations(t *testing.T) {
	ctx := context.Background()
	d, paths := device(t, nil)
	o := New(d, Options{})
	for _, v := range []byte{1, 2, 3} {
		_, err := o.WriteAt(ctx, fill(v), 0)
		require.NoError(t, err)
	}
	_, err := paths[1].Backend.WriteAt(ctx, fill(1), 0)
	require.NoError(t, err)
	_, err = o.ReadAt(ctx, make([]byte, 4096), 0)
	require.NoError(t, err)
	p := o.Problems()
	require.Len(t, p, 1)
	assert.Equal(t, KindStale, p[0].Kind)
	assert.Equal(t, [2]uint64{3, 1}, [2]uint64{p[0].Generation, p[0].FoundGeneration})
}

// fioBlock is a 4 KiB block as fio's crc32c verification writes it: a
// header (magic, type, length, seed, offset, time, write number) closed by
// the complement of its own CRC-32C, then the payload (here: pay).
func fioBlock(off int64, numberio uint16, pay byte) []byte {
	b := bytes.Repeat([]byte{pay}, 4096)
	binary.LittleEndian.PutUint16(b[0:], 0xacca)
	binary.LittleEndian.PutUint16(b[2:], 5)
	binary.LittleEndian.PutUint32(b[4:], 4096)
	binary.LittleEndian.PutUint64(b[8:], 7)
	binary.LittleEndian.PutUint64(b[16:], uint64(off))
	binary.LittleEndian.PutUint32(b[24:], uint32(numberio)) // time
	binary.LittleEndian.PutUint16(b[34:], numberio)
	binary.LittleEndian.PutUint32(b[36:], ^crc32.Checksum(b[:36], crc32.MakeTable(crc32.Castagnoli)))
	return b
}

// TestSelfChecksummedVersionsDiffer: two versions of a block that differ
// only in a header closed by its own CRC-32C have the same per-sector
// CRC-32C; the oracle must still tell them apart, and two blocks apart.
func TestSelfChecksummedVersionsDiffer(t *testing.T) {
	v1, v2, other := fioBlock(4096, 1, 0x5a), fioBlock(4096, 2, 0x5a), fioBlock(8192, 1, 0x5a)
	castagnoli := crc32.MakeTable(crc32.Castagnoli)
	require.Equal(t, crc32.Checksum(v1[:512], castagnoli), crc32.Checksum(v2[:512], castagnoli),
		"the premise: CRC-32C cannot tell the two headers apart")
	assert.NotEqual(t, sumOf(v1), sumOf(v2))
	assert.NotEqual(t, sumOf(v1), sumOf(other))

	// and a rollback to such a version is found
	ctx := context.Background()
	d, paths := device(t, nil)
	o := New(d, Options{Paths: PathReaders(d.Paths)})
	_, err := o.WriteAt(ctx, v1, 4096)
	require.NoError(t, err)
	_, err = o.WriteAt(ctx, v2, 4096)
	require.NoError(t, err)
	_, err = o.ReadAt(ctx, make([]byte, 4096), 4096)
	require.NoError(t, err)
	_, err = paths[1].Backend.WriteAt(ctx, v1, 4096)
	require.NoError(t, err)
	rep, err := o.Check(ctx)
	require.NoError(t, err)
	require.NotEmpty(t, rep.Problems, "the rollback to a version with the same payload went unnoticed")
	for _, p := range rep.Problems {
		assert.Equal(t, KindRolledBack, p.Kind, "%s", p)
	}
}

// TestLostZeroesAreNotMisdirected: when a zeroed block's zeroes are gone,
// a zeroed neighbour is no evidence that they landed there.
func TestLostZeroesAreNotMisdirected(t *testing.T) {
	ctx := context.Background()
	d, paths := device(t, nil)
	o := New(d, Options{Paths: PathReaders(d.Paths)})
	_, err := o.WriteAt(ctx, fill(1), 4*4096)
	require.NoError(t, err)
	require.NoError(t, o.WriteZeroes(ctx, 4*4096, 4096)) // block 3 and 5 are zeroes too, never written
	_, err = paths[1].Backend.WriteAt(ctx, fill(1), 4*4096)
	require.NoError(t, err)
	rep, err := o.Check(ctx)
	require.NoError(t, err)
	require.NotEmpty(t, rep.Problems)
	for _, p := range rep.Problems {
		assert.Equal(t, KindLost, p.Kind, "%s", p)
	}
}
