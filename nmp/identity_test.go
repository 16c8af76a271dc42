package nmp

import (
	"context"
	"errors"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/mpathfs/mpathfs/backends"
	"github.com/mpathfs/mpathfs/backends/backendtest"
	"github.com/mpathfs/mpathfs/ioerr"
	"github.com/mpathfs/mpathfs/mpath"
)

// filled returns a store of rigSize bytes of seeded pseudo-random data.
func filled(seed uint64) *backendtest.Mem {
	s := backendtest.NewMem(rigSize)
	r := rand.New(rand.NewPCG(seed, seed))
	s.Update(func(d []byte) {
		for i := range d {
			d[i] = byte(r.Uint32())
		}
	})
	return s
}

// labelled is a backend with a label and a native identity.
type labelled struct {
	backends.Backend
	label    string
	labelErr error
	wwid     string
}

func (l *labelled) Label(context.Context) (string, error)      { return l.label, l.labelErr }
func (l *labelled) SetLabel(_ context.Context, w string) error { l.label = w; return nil }
func (l *labelled) Inquiry(context.Context) (backends.Inquiry, error) {
	return backends.Inquiry{WWID: l.wwid, Transport: "file"}, nil
}
func (l *labelled) Unwrap() backends.Backend { return l.Backend }

func TestSampleOffsets(t *testing.T) {
	const size = 64 << 20
	a, b := SampleOffsets(size), SampleOffsets(size)
	require.Equal(t, a, b, "the sample is deterministic")
	require.Contains(t, a, int64(0))
	require.Contains(t, a, int64(size-sampleBlockSize))
	assert.LessOrEqual(t, len(a), SampleBlocks+2)
	assert.Greater(t, len(a), SampleBlocks/2, "most random offsets are distinct")
	for i, off := range a {
		assert.Zero(t, off%sampleBlockSize, "offset %d aligned", off)
		assert.LessOrEqual(t, off+sampleBlockSize, int64(size))
		if i > 0 {
			assert.Greater(t, off, a[i-1], "sorted, no duplicates")
		}
	}
	assert.NotEqual(t, a, SampleOffsets(size+sampleBlockSize), "the seed is the size")
	assert.Equal(t, []int64{0}, SampleOffsets(1000), "a store smaller than a block is one sample")
	odd := SampleOffsets(10*sampleBlockSize + 1536)
	assert.Contains(t, odd, int64(9*sampleBlockSize+1536), "the last block of an odd size is aligned to 512 and ends at the end")
}

func TestVerifySameStore(t *testing.T) {
	ctx := context.Background()
	s := filled(1)
	ref := StorePath{"file:///a/lun.img", newFakePath("a", s)}

	t.Run("same store", func(t *testing.T) {
		pr, err := VerifySameStore(ctx, ref, StorePath{"file:///b/lun.img", newFakePath("b", s)})
		require.NoError(t, err)
		assert.Equal(t, "sample", pr.How)
		assert.Equal(t, len(SampleOffsets(rigSize)), pr.Blocks)
		assert.False(t, pr.AllZero)
	})

	t.Run("one byte differs in a sampled block", func(t *testing.T) {
		other := filled(1)
		off := SampleOffsets(rigSize)[3] + 77
		other.Update(func(d []byte) { d[off] ^= 0xff })
		_, err := VerifySameStore(ctx, ref, StorePath{"file:///b/copy.img", newFakePath("b", other)})
		var ie *IdentityError
		require.ErrorAs(t, err, &ie)
		assert.Equal(t, off, ie.Offset)
		assert.Contains(t, err.Error(), "file:///b/copy.img")
		assert.Contains(t, err.Error(), "file:///a/lun.img")
		assert.Contains(t, err.Error(), "different stores")
	})

	t.Run("different file of the same size", func(t *testing.T) {
		_, err := VerifySameStore(ctx, ref, StorePath{"b", newFakePath("b", filled(2))})
		var ie *IdentityError
		require.ErrorAs(t, err, &ie)
		assert.Equal(t, int64(0), ie.Offset, "the first block already differs")
	})

	t.Run("sizes differ", func(t *testing.T) {
		f := newFakePath("b", s)
		f.size = rigSize / 2
		_, err := VerifySameStore(ctx, ref, StorePath{"b", f})
		var ie *IdentityError
		require.ErrorAs(t, err, &ie)
		assert.Contains(t, err.Error(), "sizes differ")
	})

	t.Run("two empty stores cannot be told apart", func(t *testing.T) {
		pr, err := VerifySameStore(ctx, StorePath{"a", newFakePath("a", backendtest.NewMem(rigSize))}, StorePath{"b", newFakePath("b", backendtest.NewMem(rigSize))})
		require.NoError(t, err)
		assert.True(t, pr.AllZero)
		assert.Contains(t, pr.String(), "cannot tell")
	})

	t.Run("labels", func(t *testing.T) {
		a := &labelled{Backend: newFakePath("a", s), label: "naa.1"}
		for _, c := range []struct {
			name string
			b    *labelled
			want string // "" ok, else part of the error
		}{
			{"same label", &labelled{Backend: newFakePath("b", s), label: "naa.1"}, ""},
			{"different label", &labelled{Backend: newFakePath("b", s), label: "naa.2"}, `different labels`},
			{"label missing", &labelled{Backend: newFakePath("b", s), labelErr: backends.ErrNoLabel}, `carries no user.mpathfs.wwid label`},
			{"labels unsupported", &labelled{Backend: newFakePath("b", s), labelErr: backends.ErrLabelsUnsupported}, ""},
		} {
			t.Run(c.name, func(t *testing.T) {
				pr, err := VerifySameStore(ctx, StorePath{"a", a}, StorePath{"b", c.b})
				if c.want == "" {
					require.NoError(t, err)
					assert.Equal(t, "naa.1", pr.Label)
					return
				}
				var ie *IdentityError
				require.ErrorAs(t, err, &ie)
				assert.Contains(t, err.Error(), c.want)
			})
		}
	})

	t.Run("one native identity needs no sample", func(t *testing.T) {
		a := &labelled{Backend: newFakePath("a", s), labelErr: backends.ErrLabelsUnsupported, wwid: "naa.6abc"}
		b := &labelled{Backend: newFakePath("b", filled(3)), labelErr: backends.ErrLabelsUnsupported, wwid: "naa.6abc"}
		pr, err := VerifySameStore(ctx, StorePath{"a", a}, StorePath{"b", b})
		require.NoError(t, err)
		assert.Equal(t, "same-object", pr.How)
	})

	t.Run("a read failure is no verdict", func(t *testing.T) {
		f := newFakePath("b", s)
		f.failClass(ioerr.ClassPathFailure, "read")
		_, err := VerifySameStore(ctx, ref, StorePath{"b", f})
		require.Error(t, err)
		var ie *IdentityError
		assert.False(t, errors.As(err, &ie))
	})
}

// TestDeadPathReturnsToAnotherStore: a dead path whose backend now leads
// to another store (a remount to a different export) passes its probe but
// is not reinstated; the refusal is published once; led back to the
// device's store it returns.
func TestDeadPathReturnsToAnotherStore(t *testing.T) {
	r := newRig(t, 2, testConfig(PSPFixed, nil))
	r.store.Update(func(d []byte) { copy(d, filled(7).Snapshot()) })
	r.d.CheckNow() // the paths' identities are remembered
	p2 := r.fake("p2")
	require.NoError(t, r.d.FailPath("p2", "test"))
	r.drainEvents()

	p2.store = filled(8) // no I/O runs on the dead path: no race
	r.d.CheckNow()
	assert.Equal(t, mpath.StateDead, r.state("p2"), "a path leading elsewhere stays dead")
	r.d.CheckNow()
	var refused []string
	for _, ev := range r.drainEvents() {
		if ev.Kind == "identity-refused" {
			refused = append(refused, ev.Reason)
		}
	}
	require.Len(t, refused, 1, "the refusal is published once")
	assert.Contains(t, refused[0], "different stores")

	p2.store = r.store
	r.d.CheckNow()
	assert.Equal(t, mpath.StateActive, r.state("p2"), "back on the device's store, the path returns")
}

// TestReturningPathChangedIdentity: with no other path to compare with, a
// path that reports another native identity than when it joined is
// refused.
func TestReturningPathChangedIdentity(t *testing.T) {
	store := filled(9)
	lb := &labelled{Backend: newFakePath("p1", store), labelErr: backends.ErrLabelsUnsupported, wwid: "naa.6111"}
	p := &mpath.Path{Name: "p1", URI: "fake://p1", Transport: "fake", Backend: lb}
	events := &mpath.Events{}
	sub := events.Subscribe(64)
	d, err := NewDevice(testConfig(PSPFixed, nil), []*mpath.Path{p}, events)
	require.NoError(t, err)
	t.Cleanup(func() { d.Close() })
	d.CheckNow()
	require.NoError(t, d.FailPath("p1", "test"))
	lb.wwid = "naa.6222" // a loop device re-pointed at another file
	d.CheckNow()
	assert.Equal(t, mpath.StateDead, p.State())
	refused := ""
	for len(sub.C) > 0 {
		if ev := <-sub.C; ev.Kind == "identity-refused" {
			refused = ev.Reason
		}
	}
	assert.Contains(t, refused, "reports identity naa.6222 now but reported naa.6111")
	lb.wwid = "naa.6111"
	d.CheckNow()
	assert.Equal(t, mpath.StateActive, p.State())
}

// TestAddPathToAnotherStore: VerifyPath refuses a path to another store
// before it joins; a path to the same store passes.
func TestAddPathToAnotherStore(t *testing.T) {
	r := newRig(t, 2, testConfig(PSPFixed, nil))
	r.store.Update(func(d []byte) { copy(d, filled(11).Snapshot()) })
	bad := &mpath.Path{Name: "p3", URI: "fake://other", Transport: "fake", Backend: newFakePath("p3", filled(12))}
	err := r.d.VerifyPath(context.Background(), bad)
	var ie *IdentityError
	require.ErrorAs(t, err, &ie)
	assert.True(t, strings.Contains(err.Error(), "fake://other"), err.Error())

	// Added all the same (AddPath's probe runs the same check), it joins dead.
	require.NoError(t, r.d.AddPath(bad))
	assert.Equal(t, mpath.StateDead, bad.State())

	good := &mpath.Path{Name: "p4", URI: "fake://p4", Transport: "fake", Backend: newFakePath("p4", r.store)}
	require.NoError(t, r.d.VerifyPath(context.Background(), good))
	require.NoError(t, r.d.AddPath(good))
	assert.Equal(t, mpath.StateActive, good.State())
}

// TestUncheckedPathMustProve: a path that joined dead because its identity
// could not be checked (its reads failed at mount) is not reinstated on a
// passing probe while its sample cannot be read; once it can, and matches,
// it serves. A path the device had in service is judged by its I/O instead
// (the gray-failure transcript).
func TestUncheckedPathMustProve(t *testing.T) {
	store := filled(13)
	f1, f2 := newFakePath("p1", store), newFakePath("p2", store)
	f2.failClass(ioerr.ClassPathFailure, "read")
	p1 := &mpath.Path{Name: "p1", URI: "fake://p1", Transport: "fake", Backend: f1}
	p2 := &mpath.Path{Name: "p2", URI: "fake://p2", Transport: "fake", Backend: f2}
	p2.SetState(mpath.StateDead, "identity not checked yet", time.Now())
	d, err := NewDevice(testConfig(PSPFixed, nil), []*mpath.Path{p1, p2}, nil)
	require.NoError(t, err)
	t.Cleanup(func() { d.Close() })
	d.CheckNow()
	assert.Equal(t, mpath.StateDead, p2.State(), "an unchecked path does not serve before its check passes")
	f2.recover()
	d.CheckNow()
	assert.Equal(t, mpath.StateActive, p2.State())
}
