package integrity

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/mpathfs/mpathfs/backends"
	"github.com/mpathfs/mpathfs/backends/fault"
)

// unique returns n bytes of which no two 512-byte sectors are alike (and
// none is zero), different for every salt.
func unique(n int, off int64, salt byte) []byte {
	p := make([]byte, n)
	for i := range p {
		p[i] = byte(i/512) ^ byte(off/512) ^ byte(off>>12) ^ salt ^ byte(i*13)
	}
	for i := 0; i < n; i += 512 {
		copy(p[i:], fmt.Sprintf("%d/%d/%d", off+int64(i), salt, i))
	}
	return p
}

// faulty makes a device whose first path (the one the Fixed PSP uses) is
// the fault decorator with spec injected, once setup has written through
// the oracle.
func faulty(t *testing.T, spec string, setup func(o *Oracle)) (*Oracle, *fault.Backend) {
	t.Helper()
	var fb *fault.Backend
	d, _ := device(t, func(b backends.Backend) backends.Backend { fb = fault.Wrap(b, 1); return fb })
	o := New(d, Options{Paths: PathReaders(d.Paths)})
	if setup != nil {
		setup(o)
	}
	s, err := fault.ParseArgs(strings.Fields(spec))
	require.NoError(t, err)
	_, err = fb.Inject(s)
	require.NoError(t, err)
	return o, fb
}

// kinds is the set of (kind, offset, found-at) a report names.
func kinds(t *testing.T, rep Report) map[string]bool {
	m := map[string]bool{}
	for _, p := range rep.Problems {
		t.Logf("%s", p)
		m[fmt.Sprintf("%s@%d>%d", p.Kind, p.Offset, p.FoundAt)] = true
	}
	return m
}

func TestCatchesWriteBitflip(t *testing.T) {
	ctx := context.Background()
	const at = 5 * 4096
	o, _ := faulty(t, "--corrupt bitflip --op write --range 20k:4k", nil)
	_, err := o.WriteAt(ctx, unique(16384, 4096, 1), 4096) // blocks 1-4: outside the range
	require.NoError(t, err)
	_, err = o.WriteAt(ctx, unique(4096, at, 2), at)
	require.NoError(t, err)
	rep, err := o.Check(ctx)
	require.NoError(t, err)
	got := kinds(t, rep)
	assert.Equal(t, map[string]bool{fmt.Sprintf("corrupt@%d>0", at): true}, got, "every reader sees the flipped block, nothing else")
	for _, p := range rep.Problems {
		assert.Contains(t, p.Detail, "1 of 8 sectors match none")
		assert.Contains(t, p.Detail, "sectors at offset")
	}
}

func TestCatchesReadBitflipOnOnePath(t *testing.T) {
	ctx := context.Background()
	const at = 3 * 4096
	o, _ := faulty(t, "--corrupt bitflip --bits 2 --op read --range 12k:4k", func(o *Oracle) {
		_, err := o.WriteAt(ctx, unique(8*4096, 0, 3), 0)
		require.NoError(t, err)
	})
	buf := make([]byte, 8*4096)
	_, err := o.ReadAt(ctx, buf, 0)
	require.NoError(t, err)
	p := o.Problems()
	require.Len(t, p, 1, "the application read is checked on the fly")
	assert.Equal(t, KindCorrupt, p[0].Kind)
	assert.Equal(t, int64(at), p[0].Offset)
	assert.Equal(t, "read", p[0].Via)

	rep, err := o.Check(ctx)
	require.NoError(t, err)
	vias := map[string]bool{}
	for _, p := range rep.Problems {
		t.Logf("%s", p)
		assert.Equal(t, KindCorrupt, p.Kind)
		assert.Equal(t, int64(at), p.Offset)
		vias[p.Via] = true
	}
	assert.Equal(t, map[string]bool{"read": true, "device": true, "vmhba1:C0:T0:L0": true}, vias, "the second path reads the intact store")
}

func TestCatchesMisdirect(t *testing.T) {
	ctx := context.Background()
	const at, by = 10 * 4096, 8192
	// The target block is tracked: both ends name the write's own offset
	// and where it landed.
	o, _ := faulty(t, "--corrupt misdirect --misdirect-by 8k --op write --count 1", func(o *Oracle) {
		for b := int64(0); b < 20; b++ {
			_, err := o.WriteAt(ctx, unique(4096, b*4096, 4), b*4096)
			require.NoError(t, err)
		}
	})
	_, err := o.WriteAt(ctx, unique(4096, at, 5), at)
	require.NoError(t, err)
	rep, err := o.Check(ctx)
	require.NoError(t, err)
	got := kinds(t, rep)
	assert.Equal(t, map[string]bool{fmt.Sprintf("misdirected@%d>%d", at, at+by): true}, got)
}

func TestCatchesMisdirectToUntrackedBlock(t *testing.T) {
	ctx := context.Background()
	const at = 10 * 4096
	o, _ := faulty(t, "--corrupt misdirect --misdirect-by -12k --op write", nil)
	_, err := o.WriteAt(ctx, unique(4096, at, 6), at)
	require.NoError(t, err)
	rep, err := o.Check(ctx)
	require.NoError(t, err)
	got := kinds(t, rep)
	assert.Equal(t, map[string]bool{fmt.Sprintf("misdirected@%d>%d", at, at-12288): true}, got, "found by searching the neighbours")
}

func TestCatchesDrop(t *testing.T) {
	ctx := context.Background()
	const at = 6 * 4096
	o, _ := faulty(t, "--corrupt drop --range 24k:4k", func(o *Oracle) {
		_, err := o.WriteAt(ctx, unique(4096, at, 7), at)
		require.NoError(t, err)
	})
	_, err := o.WriteAt(ctx, unique(3*4096, at-4096, 8), at-4096)
	require.NoError(t, err, "acknowledged")
	rep, err := o.Check(ctx)
	require.NoError(t, err)
	got := kinds(t, rep)
	assert.Equal(t, map[string]bool{fmt.Sprintf("lost@%d>0", at-4096): true, fmt.Sprintf("lost@%d>0", at): true, fmt.Sprintf("lost@%d>0", at+4096): true}, got,
		"the whole write is dropped: it overlaps the fault's range")
	for _, p := range rep.Problems {
		if p.Offset == at {
			assert.Equal(t, uint64(1), p.FoundGeneration, "the block holds the write before")
		}
	}
}

func TestCatchesTorn(t *testing.T) {
	ctx := context.Background()
	o, _ := faulty(t, "--corrupt torn --torn-at 6k --op write", func(o *Oracle) {
		_, err := o.WriteAt(ctx, unique(4*4096, 0, 9), 0)
		require.NoError(t, err)
	})
	_, err := o.WriteAt(ctx, unique(4*4096, 0, 10), 0)
	require.NoError(t, err)
	rep, err := o.Check(ctx)
	require.NoError(t, err)
	got := kinds(t, rep)
	// Block 0 landed whole; block 1 holds 2k of the write; 2 and 3 none.
	assert.Equal(t, map[string]bool{"torn@4096>0": true, "lost@8192>0": true, "lost@12288>0": true}, got)
	for _, p := range rep.Problems {
		if p.Kind == KindTorn {
			assert.Contains(t, p.Detail, "the first 2048 bytes (4 of 8 sectors) hold the last write")
		}
	}
}
