package nmp

import (
	"context"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/mpathfs/mpathfs/backends"
	"github.com/mpathfs/mpathfs/ioerr"
	"github.com/mpathfs/mpathfs/mpath"
	"github.com/mpathfs/mpathfs/scsi"
)

// fakeLU is the persistent reservation state of one LU, shared by the
// fake paths (each one I_T nexus, named by its path) that lead to it: a
// small model of SPC-4 — enough to tell a registered nexus from one that
// is not, and WE/WERO from the all-registrants types.
type fakeLU struct {
	mu       sync.Mutex
	reg      map[string]uint64 // nexus -> key
	holder   string            // nexus holding a WE/EA reservation
	resvKey  uint64
	resvType scsi.PRType
	reads    int // PR IN commands served
}

func newFakeLU() *fakeLU { return &fakeLU{reg: map[string]uint64{}} }

var errConflict = ioerr.NewError(ioerr.ClassConflict, "", ioerr.ErrReservationConflict)

// writeOK reports whether nexus n may write now.
func (l *fakeLU) writeOK(n string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.resvType == 0 {
		return true
	}
	if l.resvType.RegistrantsOnly() || l.resvType.AllRegistrants() {
		_, ok := l.reg[n]
		return ok
	}
	return n == l.holder
}

func (l *fakeLU) keyOn(n string) uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.reg[n]
}

// resvPath is a fake path that carries reservations to a fakeLU.
type resvPath struct {
	*fakePath
	lu *fakeLU
}

var _ backends.Reserver = (*resvPath)(nil)

func (r *resvPath) Can(c backends.Capability) bool {
	return c == backends.CapReserve || r.fakePath.Can(c)
}

func (r *resvPath) WriteAt(ctx context.Context, p []byte, off int64) (int, error) {
	if !r.lu.writeOK(r.name) {
		return 0, errConflict
	}
	return r.fakePath.WriteAt(ctx, p, off)
}

func (r *resvPath) PRRegister(ctx context.Context, oldKey, newKey uint64, ignore bool) error {
	if err := ctx.Err(); err != nil {
		return err // a transport gives up on a context that ended
	}
	l := r.lu
	l.mu.Lock()
	defer l.mu.Unlock()
	if !ignore && l.reg[r.name] != oldKey {
		return errConflict
	}
	if newKey == 0 {
		delete(l.reg, r.name)
	} else {
		l.reg[r.name] = newKey
	}
	return nil
}

func (r *resvPath) PRReserve(ctx context.Context, key uint64, typ scsi.PRType) error {
	l := r.lu
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.reg[r.name] != key || (l.resvType != 0 && l.resvKey != key) {
		return errConflict
	}
	l.holder, l.resvKey, l.resvType = r.name, key, typ
	return nil
}

func (r *resvPath) PRRelease(ctx context.Context, key uint64, typ scsi.PRType) error {
	l := r.lu
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.resvType != 0 && (r.name == l.holder || l.resvType.AllRegistrants()) {
		l.holder, l.resvKey, l.resvType = "", 0, 0
	}
	return nil
}

func (r *resvPath) PRClear(ctx context.Context, key uint64) error {
	l := r.lu
	l.mu.Lock()
	defer l.mu.Unlock()
	l.reg, l.holder, l.resvKey, l.resvType = map[string]uint64{}, "", 0, 0
	return nil
}

func (r *resvPath) PRPreempt(ctx context.Context, key, victim uint64, typ scsi.PRType, abort bool) error {
	l := r.lu
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.reg[r.name] != key {
		return errConflict
	}
	for n, k := range l.reg {
		if k == victim {
			delete(l.reg, n)
		}
	}
	if l.resvKey == victim {
		l.holder, l.resvKey, l.resvType = r.name, key, typ
	}
	return nil
}

func (r *resvPath) PRReadKeys(ctx context.Context) (uint32, []uint64, error) {
	if err := ctx.Err(); err != nil {
		return 0, nil, err
	}
	l := r.lu
	l.mu.Lock()
	defer l.mu.Unlock()
	l.reads++
	var keys []uint64
	for _, k := range l.reg {
		keys = append(keys, k)
	}
	return 1, keys, nil
}

func (r *resvPath) PRReadReservation(ctx context.Context) (backends.PRReservation, error) {
	l := r.lu
	l.mu.Lock()
	defer l.mu.Unlock()
	return backends.PRReservation{Generation: 1, Held: l.resvType != 0, Key: l.resvKey, Type: l.resvType}, nil
}

func (r *resvPath) PRReadFullStatus(ctx context.Context) (backends.PRFullStatus, error) {
	return backends.PRFullStatus{}, nil
}

func (r *resvPath) PRCapabilities(ctx context.Context) (backends.PRCapabilities, error) {
	return backends.PRCapabilities{}, nil
}

func (r *resvPath) Reserve6(ctx context.Context) error { return nil }
func (r *resvPath) Release6(ctx context.Context) error { return nil }

// newPRRig is a rig whose paths carry reservations to one fake LU.
func newPRRig(t *testing.T, n int, psp string, opts map[string]string) (*rig, *fakeLU) {
	lu := newFakeLU()
	r := newRigSetup(t, n, testConfig(psp, opts), func(p *mpath.Path) {
		p.Backend = &resvPath{fakePath: p.Backend.(*fakePath), lu: lu}
	})
	return r, lu
}

func (r *rig) addResvPath(t *testing.T, lu *fakeLU, name string) error {
	t.Helper()
	f := newFakePath(name, r.store)
	r.fakes = append(r.fakes, f)
	return r.d.AddPath(&mpath.Path{Name: name, URI: "fake://" + name, Transport: "fake",
		Location: mpath.Location{Adapter: len(r.fakes)}, Backend: &resvPath{fakePath: f, lu: lu}})
}

func TestPRRegisterOnEveryPath(t *testing.T) {
	r, lu := newPRRig(t, 3, PSPRR, map[string]string{"iops": "1"})
	ctx := context.Background()
	require.NoError(t, r.d.PRRegister(ctx, 0, 0xabc, false))
	for _, p := range []string{"p1", "p2", "p3"} {
		assert.Equal(t, uint64(0xabc), lu.keyOn(p), "key on %s", p)
	}
	key, lost := r.d.PRKey()
	assert.Equal(t, uint64(0xabc), key)
	assert.False(t, lost)

	// WERO: only registered nexuses may write; every path of this host is.
	require.NoError(t, r.d.PRReserve(ctx, 0xabc, scsi.PRWriteExclusiveRegOnly))
	for i := range 6 {
		r.write(t, int64(i)*4096)
	}
	assert.Zero(t, r.d.ReservationConflicts())

	// Unregistering removes the key everywhere.
	require.NoError(t, r.d.PRRelease(ctx, 0xabc, scsi.PRWriteExclusiveRegOnly))
	require.NoError(t, r.d.PRRegister(ctx, 0xabc, 0, false))
	for _, p := range []string{"p1", "p2", "p3"} {
		assert.Zero(t, lu.keyOn(p), "key on %s", p)
	}
}

func TestPRRegisterWrongKeyFails(t *testing.T) {
	r, lu := newPRRig(t, 2, PSPRR, nil)
	ctx := context.Background()
	require.NoError(t, r.d.PRRegister(ctx, 0, 0x1, false))
	err := r.d.PRRegister(ctx, 0x99, 0x2, false)
	require.Error(t, err)
	assert.ErrorIs(t, err, ioerr.ErrConflict)
	assert.Equal(t, uint64(0x1), lu.keyOn("p1"), "a refused REGISTER changes nothing")
	assert.Equal(t, uint64(0x1), lu.keyOn("p2"))
}

// Adding a path to a reserved device must not produce conflicts: the path
// is registered by its probe, before it joins the view.
func TestPRJoiningPathRegisteredBeforeIO(t *testing.T) {
	r, lu := newPRRig(t, 2, PSPRR, map[string]string{"iops": "1"})
	ctx := context.Background()
	require.NoError(t, r.d.PRRegister(ctx, 0, 0x77, false))
	require.NoError(t, r.d.PRReserve(ctx, 0x77, scsi.PRWriteExclusiveRegOnly))
	require.NoError(t, r.addResvPath(t, lu, "p3"))
	assert.Equal(t, uint64(0x77), lu.keyOn("p3"))
	served := map[string]bool{}
	for i := range 9 {
		served[r.write(t, int64(i)*4096)] = true
	}
	assert.True(t, served["p3"], "the new path carries I/O: %v", served)
	assert.Zero(t, r.d.ReservationConflicts())
}

// A path whose nexus lost its registration (a target that restarted without
// its PR state, a new ISID) is registered again on its way back.
func TestPRReinstatedPathRegisteredAgain(t *testing.T) {
	r, lu := newPRRig(t, 2, PSPRR, map[string]string{"iops": "1"})
	ctx := context.Background()
	require.NoError(t, r.d.PRRegister(ctx, 0, 0x55, false))
	require.NoError(t, r.d.PRReserve(ctx, 0x55, scsi.PRWriteExclusiveRegOnly))
	r.fake("p2").failClass(ioerr.ClassPathFailure)
	r.d.CheckNow()
	require.Equal(t, mpath.StateDead, r.state("p2"))
	lu.mu.Lock()
	delete(lu.reg, "p2")
	lu.mu.Unlock()
	r.fake("p2").recover()
	r.d.CheckNow()
	require.Equal(t, mpath.StateActive, r.state("p2"))
	assert.Equal(t, uint64(0x55), lu.keyOn("p2"))
	for i := range 4 {
		r.write(t, int64(i)*4096)
	}
	assert.Zero(t, r.d.ReservationConflicts())
}

// A host another host preempted stays fenced: its paths that come back are
// not registered again, and its writes meet the conflict.
func TestPRPreemptedHostStaysFenced(t *testing.T) {
	r, lu := newPRRig(t, 2, PSPRR, map[string]string{"iops": "1"})
	ctx := context.Background()
	require.NoError(t, r.d.PRRegister(ctx, 0, 0xa, false))
	require.NoError(t, r.d.PRReserve(ctx, 0xa, scsi.PRWriteExclusiveRegOnly))
	r.fake("p2").failClass(ioerr.ClassPathFailure)
	r.d.CheckNow()
	require.Equal(t, mpath.StateDead, r.state("p2"))
	// Host B (nexus "b") preempts A.
	lu.mu.Lock()
	lu.reg["b"] = 0xb
	lu.mu.Unlock()
	other := &resvPath{fakePath: newFakePath("b", r.store), lu: lu}
	require.NoError(t, other.PRPreempt(ctx, 0xb, 0xa, scsi.PRWriteExclusiveRegOnly, true))
	r.fake("p2").recover()
	r.d.CheckNow()
	require.Equal(t, mpath.StateActive, r.state("p2"))
	assert.Zero(t, lu.keyOn("p2"), "a fenced host must not register itself again")
	_, lost := r.d.PRKey()
	assert.True(t, lost)
	_, err := r.d.WriteAt(ctx, make([]byte, 4096), 0)
	require.ErrorIs(t, err, ioerr.ErrConflict)
	assert.Equal(t, "p1=active p2=active", r.states(), "a conflict fails no path")
}

// A conflict is not a path failure: no failover, no retry elsewhere.
func TestPRConflictDoesNotFailOver(t *testing.T) {
	r, lu := newPRRig(t, 2, PSPFixed, nil)
	ctx := context.Background()
	lu.mu.Lock()
	lu.reg["b"], lu.holder, lu.resvKey, lu.resvType = 0xb, "b", 0xb, scsi.PRWriteExclusive
	lu.mu.Unlock()
	_, err := r.d.WriteAt(ctx, make([]byte, 4096), 0)
	require.ErrorIs(t, err, ioerr.ErrConflict)
	assert.Equal(t, int64(0), r.fake("p2").writes.Load(), "no retry on the other path")
	assert.Equal(t, "p1=active p2=active", r.states())
	assert.Equal(t, uint64(1), r.d.ReservationConflicts())
	assert.Equal(t, uint64(1), r.d.Status().ReservationConflicts)
	// Reads still work under WE.
	r.read(t, 0)
}

// The SCSI-2 reservation pins I/O to the path that took it.
func TestReserve6PinsIO(t *testing.T) {
	r, _ := newPRRig(t, 3, PSPRR, map[string]string{"iops": "1"})
	ctx := context.Background()
	require.NoError(t, r.d.Reserve6(ctx))
	pin := r.d.pr.pin.Load()
	require.NotNil(t, pin)
	for i := range 6 {
		assert.Equal(t, pin.Name, r.write(t, int64(i)*4096))
	}
	require.NoError(t, r.d.Release6(ctx))
	served := map[string]bool{}
	for i := range 6 {
		served[r.write(t, int64(i)*4096)] = true
	}
	assert.Len(t, served, 3, "unpinned: every path again")
}

func TestPRPathWithoutReserveSupport(t *testing.T) {
	r := newRig(t, 2, testConfig(PSPRR, nil))
	err := r.d.PRRegister(context.Background(), 0, 1, false)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "path p1 (fake) cannot carry persistent reservations")
	assert.ErrorIs(t, err, backends.ErrNotSupported)
	_, _, err = r.d.PRReadKeys(context.Background())
	require.ErrorContains(t, err, "cannot carry persistent reservations")
}

// WE is held by one nexus: the device pins I/O to the path that reserved,
// so this host's other (registered, not holding) paths meet no conflict.
func TestPRWriteExclusivePinsHolder(t *testing.T) {
	r, _ := newPRRig(t, 2, PSPRR, map[string]string{"iops": "1"})
	ctx := context.Background()
	require.NoError(t, r.d.PRRegister(ctx, 0, 0xe, false))
	require.NoError(t, r.d.PRReserve(ctx, 0xe, scsi.PRWriteExclusive))
	for i := range 6 {
		r.write(t, int64(i)*4096)
	}
	assert.Zero(t, r.d.ReservationConflicts())
	require.NoError(t, r.d.PRRelease(ctx, 0xe, scsi.PRWriteExclusive))
	served := map[string]bool{}
	for i := range 4 {
		served[r.write(t, int64(i)*4096)] = true
	}
	assert.Len(t, served, 2)
}
