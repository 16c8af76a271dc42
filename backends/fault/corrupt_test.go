package fault_test

import (
	"bytes"
	"context"
	"encoding/json"
	"math/bits"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/mpathfs/mpathfs/backends/fault"
)

// pattern returns n bytes no two 4 KiB blocks of which are alike.
func pattern(n int, salt byte) []byte {
	p := make([]byte, n)
	for i := range p {
		p[i] = byte(i*7+i/4096) ^ salt
	}
	return p
}

// diffBits counts the bits in which a and b differ.
func diffBits(a, b []byte) int {
	n := 0
	for i := range a {
		n += bits.OnesCount8(a[i] ^ b[i])
	}
	return n
}

func store(m *mem, off, n int64) []byte {
	return m.Bytes(off, n)
}

func TestCorruptBitflipRead(t *testing.T) {
	ctx := context.Background()
	fb, m := newFB(t, 1)
	data := pattern(8192, 1)
	_, err := fb.WriteAt(ctx, data, 0)
	require.NoError(t, err)
	inject(t, fb, "--corrupt bitflip --bits 3 --op read --range 4k:4k --count 1")

	got := make([]byte, 8192)
	n, err := fb.ReadAt(ctx, got, 0)
	require.NoError(t, err, "a corrupted read is acknowledged")
	require.Equal(t, 8192, n)
	assert.Equal(t, data[:4096], got[:4096], "outside the fault's range nothing flips")
	d := diffBits(data[4096:], got[4096:])
	assert.True(t, d >= 1 && d <= 3, "3 flips (two may hit one bit): %d bits differ", d)
	assert.Equal(t, data, store(m, 0, 8192), "a read bitflip leaves the store intact")

	// --count 1: the next read is clean.
	_, err = fb.ReadAt(ctx, got, 0)
	require.NoError(t, err)
	assert.Equal(t, data, got)
}

func TestCorruptBitflipWrite(t *testing.T) {
	ctx := context.Background()
	fb, m := newFB(t, 2)
	inject(t, fb, "--corrupt bitflip --op write")
	data := pattern(4096, 2)
	orig := bytes.Clone(data)
	n, err := fb.WriteAt(ctx, data, 8192)
	require.NoError(t, err, "a corrupted write is acknowledged")
	require.Equal(t, 4096, n)
	assert.Equal(t, orig, data, "the caller's buffer is not touched")
	assert.Equal(t, 1, diffBits(orig, store(m, 8192, 4096)), "the store holds the data with one bit flipped")
}

func TestCorruptBitflipSeeded(t *testing.T) {
	ctx := context.Background()
	run := func() []byte {
		fb, m := newFB(t, 3)
		inject(t, fb, "--corrupt bitflip --bits 5 --op write --seed 42")
		_, err := fb.WriteAt(ctx, make([]byte, 65536), 0)
		require.NoError(t, err)
		return store(m, 0, 65536)
	}
	assert.Equal(t, run(), run(), "the same seed flips the same bits")
}

func TestCorruptMisdirect(t *testing.T) {
	ctx := context.Background()
	fb, m := newFB(t, 4)
	inject(t, fb, "--corrupt misdirect --misdirect-by 8k --op write --count 1")
	data := pattern(4096, 4)
	n, err := fb.WriteAt(ctx, data, 16384)
	require.NoError(t, err)
	require.Equal(t, 4096, n)
	assert.Equal(t, make([]byte, 4096), store(m, 16384, 4096), "nothing lands at the write's own offset")
	assert.Equal(t, data, store(m, 16384+8192, 4096), "the write lands 8k further")

	// Negative distance; off the device that way, it goes the other way.
	inject(t, fb, "--corrupt misdirect --misdirect-by -8k --op write --count 1")
	_, err = fb.WriteAt(ctx, data, 4096)
	require.NoError(t, err)
	assert.Equal(t, data, store(m, 4096+8192, 4096))
}

func TestCorruptMisdirectSeeded(t *testing.T) {
	ctx := context.Background()
	fb, m := newFB(t, 5)
	inject(t, fb, "--corrupt misdirect --op write --seed 7")
	data := pattern(4096, 5)
	const off = 64 << 10
	_, err := fb.WriteAt(ctx, data, off)
	require.NoError(t, err)
	assert.Equal(t, make([]byte, 4096), store(m, off, 4096))
	found := 0
	for d := int64(1); d <= 8; d++ {
		for _, at := range []int64{off + d*4096, off - d*4096} {
			if bytes.Equal(store(m, at, 4096), data) {
				found++
			}
		}
	}
	assert.Equal(t, 1, found, "the write landed on exactly one block 1 to 8 blocks away")
}

func TestCorruptDrop(t *testing.T) {
	ctx := context.Background()
	fb, m := newFB(t, 6)
	old := pattern(8192, 6)
	_, err := fb.WriteAt(ctx, old, 0)
	require.NoError(t, err)
	inject(t, fb, "--corrupt drop --range 0:4k")
	n, err := fb.WriteAt(ctx, pattern(4096, 7), 0)
	require.NoError(t, err, "a dropped write is acknowledged")
	assert.Equal(t, 4096, n)
	assert.Equal(t, old[:4096], store(m, 0, 4096), "and never stored")
	// Outside the range: stored.
	_, err = fb.WriteAt(ctx, pattern(4096, 8), 4096)
	require.NoError(t, err)
	assert.Equal(t, pattern(4096, 8), store(m, 4096, 4096))
	// Reads pass untouched (no --op: drop applies to writes only).
	got := make([]byte, 4096)
	_, err = fb.ReadAt(ctx, got, 0)
	require.NoError(t, err)
	assert.Equal(t, old[:4096], got)
}

func TestCorruptTorn(t *testing.T) {
	ctx := context.Background()
	fb, m := newFB(t, 9)
	inject(t, fb, "--corrupt torn --torn-at 1536 --op write --count 1")
	data := pattern(4096, 9)
	n, err := fb.WriteAt(ctx, data, 0)
	require.NoError(t, err, "a torn write is acknowledged")
	assert.Equal(t, 4096, n)
	s := store(m, 0, 4096)
	assert.Equal(t, data[:1536], s[:1536], "the prefix is stored")
	assert.Equal(t, make([]byte, 4096-1536), s[1536:], "the rest is not")

	// Seeded: a sector boundary strictly inside the write.
	inject(t, fb, "--corrupt torn --op write --seed 11")
	_, err = fb.WriteAt(ctx, data, 65536)
	require.NoError(t, err)
	s = store(m, 65536, 4096)
	keep := 0
	for keep < len(s) && s[keep] == data[keep] {
		keep++
	}
	keep -= keep % 512 // the pattern may match zeroes for a byte or so past the tear
	assert.True(t, keep > 0 && keep < 4096, "torn at %d", keep)
	assert.Equal(t, data[:keep], s[:keep])
	assert.Equal(t, make([]byte, 4096-keep), s[keep:])
}

func TestCorruptSpec(t *testing.T) {
	for _, c := range []struct{ args, want string }{
		{"--corrupt bitflip --op flush", "--corrupt bitflip with --op flush"},
		{"--corrupt bitflip --op read,probe", "--corrupt bitflip with --op probe"},
		{"--corrupt misdirect --op read", "--corrupt misdirect with --op read"},
		{"--corrupt torn --op discard", "want --op write"},
		{"--corrupt drop --error path-failure", "--corrupt and --error exclude each other"},
		{"--corrupt drop --hang", "--corrupt and --hang exclude each other"},
		{"--corrupt drop --land-late 1s --op write", "--corrupt and --land-late exclude each other"},
		{"--corrupt drop --bits 2", "--bits needs --corrupt bitflip, not --corrupt drop"},
		{"--bits 2 --latency 1ms", "--bits needs --corrupt bitflip"},
		{"--corrupt bitflip --torn-at 1k", "--torn-at needs --corrupt torn"},
		{"--corrupt torn --misdirect-by 4k", "--misdirect-by needs --corrupt misdirect"},
		{"--corrupt scramble", `--corrupt "scramble"`},
		{"--corrupt torn --torn-at 0", `--torn-at "0"`},
	} {
		_, err := fault.ParseArgs(strings.Fields(c.args))
		if assert.Error(t, err, c.args) {
			assert.Contains(t, err.Error(), c.want, c.args)
		}
	}
	for _, args := range []string{
		"--corrupt bitflip --bits 4 --op read --range 1M:4k --probability 0.1 --seed 3",
		"--corrupt misdirect --misdirect-by -8k --op write --every 2",
		"--corrupt drop --after 5 --count 1",
		"--corrupt torn --torn-at 2k --op write",
	} {
		s, err := fault.ParseArgs(strings.Fields(args))
		require.NoError(t, err, args)
		assert.Equal(t, args, s.String(), "Args prints what ParseArgs reads")
		b, err := json.Marshal(s)
		require.NoError(t, err)
		var back fault.Spec
		require.NoError(t, json.Unmarshal(b, &back))
		assert.Equal(t, s, back, "JSON round trip of %s", b)
	}
	s, err := fault.ParseArgs(strings.Fields("--corrupt misdirect --misdirect-by -8k"))
	require.NoError(t, err)
	b, _ := json.Marshal(s)
	assert.JSONEq(t, `{"corrupt":"misdirect","misdirect_by":-8192}`, string(b))
}

func TestCorruptList(t *testing.T) {
	fb, _ := newFB(t, 1)
	inject(t, fb, "--corrupt torn --torn-at 2k --op write")
	l := fb.List()
	require.Len(t, l, 1)
	assert.Equal(t, "--corrupt torn --torn-at 2k --op write", l[0].Spec.String())
}
