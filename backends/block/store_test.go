package block_test

import (
	"bytes"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/mpathfs/mpathfs/backends"
	"github.com/mpathfs/mpathfs/backends/block"
)

// TestLoopTwoPathsSubSector: two loop devices over one image are two paths
// to one store. Many concurrent sub-sector writes to the same sectors
// through both paths, each writer owning disjoint bytes: the read-modify-
// writes of the two paths are serialised per store, so none is lost.
func TestLoopTwoPathsSubSector(t *testing.T) {
	needLoop(t)
	ctx := t.Context()
	img := newImage(t, 1<<20)
	a, b := openDev(t, attach(t, img)), openDev(t, attach(t, img))
	lbs := int64(a.LogicalBlockSize())
	require.Equal(t, lbs, int64(b.LogicalBlockSize()))
	paths := []*block.Device{a, b}

	const workers, rounds, blocks = 16, 100, 2
	per := int(lbs) / workers // worker w owns bytes [w*per, (w+1)*per) of each block
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := range workers {
		wg.Go(func() {
			for i := range rounds {
				d := paths[(w+i)%2] // alternate paths, so every block is patched through both at once
				for blk := int64(0); blk < blocks; blk++ {
					p := bytes.Repeat([]byte{byte(w*rounds + i + 1)}, per)
					if _, err := d.WriteAt(ctx, p, blk*lbs+int64(w*per)); err != nil {
						errs <- err
						return
					}
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	for _, d := range paths {
		for blk := int64(0); blk < blocks; blk++ {
			got := make([]byte, lbs)
			_, err := d.ReadAt(ctx, got, blk*lbs)
			require.NoError(t, err)
			for w := range workers {
				want := bytes.Repeat([]byte{byte(w*rounds + rounds)}, per)
				assert.Equalf(t, want, got[w*per:(w+1)*per], "%s block %d: the bytes of writer %d", d.Name(), blk, w)
			}
		}
	}
}

// TestLoopCacheDomain: two loop devices over one image, and a file path to
// it, name one cache domain; a loop device over another image does not.
func TestLoopCacheDomain(t *testing.T) {
	needLoop(t)
	img := newImage(t, 1<<20)
	a, b := openDev(t, attach(t, img)), openDev(t, attach(t, img))
	other := openDev(t, attach(t, newImage(t, 1<<20)))
	f, err := backends.OpenFile(img, backends.FileOptions{})
	require.NoError(t, err)
	defer f.Close()
	require.NotEmpty(t, a.CacheDomain())
	assert.Equal(t, a.CacheDomain(), b.CacheDomain())
	assert.Equal(t, a.CacheDomain(), f.CacheDomain())
	assert.NotEqual(t, a.CacheDomain(), other.CacheDomain())
	buffered, err := block.OpenDevice(a.Name(), block.Options{Buffered: true})
	require.NoError(t, err)
	defer buffered.Close()
	assert.Empty(t, buffered.CacheDomain(), "a buffered path keeps writes in its own page cache")
}
