package host

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"gopkg.in/yaml.v3"

	"github.com/mpathfs/mpathfs/array"
	"github.com/mpathfs/mpathfs/backends/fault"
	"github.com/mpathfs/mpathfs/mpath"
)

// store makes a file store of size bytes (seeded data) and n hard links to
// it: n+1 names of one store, each a file path of its own.
func store(t *testing.T, size int, links int) []string {
	t.Helper()
	dir := t.TempDir()
	names := []string{randomFile(t, dir, "lun.img", size, 7)}
	for i := 0; i < links; i++ {
		l := filepath.Join(dir, "link"+string(rune('a'+i))+".img")
		require.NoError(t, os.Link(names[0], l))
		names = append(names, l)
	}
	return names
}

func fileDevice(name string, files ...string) DeviceConfig {
	dc := DeviceConfig{Name: name, CheckInterval: Duration(time.Hour)}
	for _, f := range files {
		dc.Paths = append(dc.Paths, PathConfig{URI: "file://" + f})
	}
	return dc
}

func newHost(t *testing.T, opts Options) *Host {
	t.Helper()
	h := New(opts)
	t.Cleanup(func() { h.Close() })
	return h
}

// TestAddRemovePath: a device made of two names of one file; a third name
// joins live through the claim rules and the identity check, a different
// file is refused, and each failure has its kind.
func TestAddRemovePath(t *testing.T) {
	files := store(t, 1<<20, 2)
	h := newHost(t, Options{})
	require.NoError(t, h.Build(context.Background(), []DeviceConfig{fileDevice("d0", files[0], files[1])}))
	d, err := h.Device("d0")
	require.NoError(t, err)
	require.Len(t, d.Paths(), 2)
	assert.Equal(t, "vmhba1:C0:T0:L0", d.Paths()[0].Name)

	st, err := h.AddPath(context.Background(), "d0", "file://"+files[2], "third")
	require.NoError(t, err)
	assert.Equal(t, "third", st.Name)
	assert.Equal(t, "active", st.State)
	assert.Equal(t, "vmhba3:C0:T0:L0", st.Location, "a joining path takes the next adapter number")
	require.Len(t, d.Paths(), 3)
	f, name, err := h.Fault("third")
	require.NoError(t, err, "a joined path has its fault injector")
	assert.Equal(t, "third", name)
	_, err = f.Inject(fault.Spec{Error: "path-failure", Ops: []string{"probe"}})
	require.NoError(t, err)
	require.Len(t, h.Faults(), 1)
	assert.Equal(t, "third", h.Faults()[0].Path)

	_, err = h.AddPath(context.Background(), "d0", "file://"+files[2], "")
	assert.ErrorIs(t, err, ErrExists)
	assert.ErrorContains(t, err, "already has path third")
	_, err = h.AddPath(context.Background(), "nodev", "file://"+files[2], "")
	assert.ErrorIs(t, err, ErrNotFound)
	assert.ErrorContains(t, err, `no device "nodev" (devices: [d0])`)
	_, err = h.AddPath(context.Background(), "d0", "file:///x.img?quiesce=later", "")
	assert.ErrorIs(t, err, ErrInvalid)

	other := randomFile(t, t.TempDir(), "other.img", 1<<20, 8)
	_, err = h.AddPath(context.Background(), "d0", "file://"+other, "")
	assert.ErrorIs(t, err, ErrRefused, "a file with other data leads to another store")
	assert.Len(t, d.Paths(), 3, "a refused path does not join")

	require.NoError(t, h.RemovePath("d0", "third", "test"))
	assert.Len(t, d.Paths(), 2)
	assert.ErrorIs(t, h.RemovePath("d0", "third", "again"), ErrNotFound)
	_, _, err = h.FindPath("third")
	assert.ErrorIs(t, err, ErrNotFound)

	var kinds []string
	for _, ev := range h.Events().Recent(mpath.EventHistory) {
		kinds = append(kinds, ev.Kind)
	}
	assert.Contains(t, kinds, "path-add")
}

// TestClaimRulesMask: a rule that hands one path to MASK_PATH keeps it out
// of the device and says why; masking every path is an error.
func TestClaimRulesMask(t *testing.T) {
	files := store(t, 1<<20, 1)
	claims, satp, err := Rules([]string{"110 location MASK_PATH location=vmhba2:C0:*:*"}, nil)
	require.NoError(t, err)
	h := newHost(t, Options{Claims: claims, SATPRules: satp})
	require.NoError(t, h.Build(context.Background(), []DeviceConfig{fileDevice("d0", files[0], files[1])}))
	d, err := h.Device("d0")
	require.NoError(t, err)
	require.Len(t, d.Paths(), 1)
	require.Len(t, h.Masked(), 1)
	assert.Contains(t, h.Masked()[0], "d0 path vmhba2:C0:T0:L0 (file://"+files[1]+"): claim rule 110 gives it to MASK_PATH")
	e, err := h.Explain("d0")
	require.NoError(t, err)
	assert.Equal(t, "NMP", e.MPP)
	assert.Contains(t, ruleIDs(h), 110)

	all, _, err := Rules([]string{"102 transport MASK_PATH transport=file"}, nil)
	require.NoError(t, err)
	h2 := newHost(t, Options{Claims: all})
	err = h2.Build(context.Background(), []DeviceConfig{fileDevice("d1", files[0])})
	assert.ErrorContains(t, err, "device d1: every path is masked by the claim rules")
	assert.Empty(t, h2.Devices())
}

// TestGroupByWWID: names of one file report one WWID and form one group;
// another file forms another, in the order given; a bad URI names itself.
func TestGroupByWWID(t *testing.T) {
	a := store(t, 1<<20, 1)
	b := randomFile(t, t.TempDir(), "b.img", 1<<20, 9)
	groups, err := GroupByWWID(context.Background(), []string{"file://" + a[0], b, "file://" + a[1] + "?quiesce=1s"}, 0)
	require.NoError(t, err)
	require.Len(t, groups, 2)
	assert.Equal(t, []string{"file://" + a[0], "file://" + a[1] + "?quiesce=1s"}, groups[0].URIs)
	assert.Equal(t, []string{b}, groups[1].URIs)
	assert.NotEqual(t, groups[0].WWID, groups[1].WWID)
	assert.True(t, strings.HasPrefix(groups[0].WWID, "naa."))

	_, err = GroupByWWID(context.Background(), []string{"file:///nonexistent/x.img"}, 0)
	assert.ErrorContains(t, err, "path file:///nonexistent/x.img")
	assert.Equal(t, []string{"mpatha", "mpathz", "mpathaa"}, []string{FriendlyName(0), FriendlyName(25), FriendlyName(26)})
}

// TestArray: a device behind a simulated ALUA array; array commands by
// name, with the kind of each failure.
func TestArray(t *testing.T) {
	files := store(t, 1<<20, 0)
	ac := array.DefaultLabArray()
	ac.Transition = 0
	var node yaml.Node
	require.NoError(t, node.Encode(ac))
	dc := DeviceConfig{Name: "lab", WWID: "naa.600d0230000000000000000000001ab1", Array: &node, CheckInterval: Duration(time.Hour)}
	for _, port := range []int{1, 3} {
		dc.Paths = append(dc.Paths, PathConfig{URI: "file://" + files[0], Port: port})
	}
	require.NoError(t, dc.Validate("devices[0]"))
	h := newHost(t, Options{})
	require.NoError(t, h.Build(context.Background(), []DeviceConfig{dc}))
	require.Contains(t, h.Arrays(), "lab")
	assert.Equal(t, "A", h.Arrays()["lab"].Owner)

	st, err := h.Array(ArrayCommand{Array: "lab", Action: "transfer", Controller: "B"})
	require.NoError(t, err)
	assert.Equal(t, "B", st.Owner)
	_, err = h.Array(ArrayCommand{Array: "nope", Action: "transfer", Controller: "B"})
	assert.ErrorIs(t, err, ErrNotFound)
	assert.ErrorContains(t, err, `no array "nope" (arrays: [lab])`)
	_, err = h.Array(ArrayCommand{Array: "lab", Action: "explode"})
	assert.ErrorIs(t, err, ErrInvalid)
	_, err = h.Array(ArrayCommand{Array: "lab", Action: "tpg-state"})
	assert.ErrorIs(t, err, ErrInvalid)
	_, err = h.AddPath(context.Background(), "lab", "file://"+files[0], "")
	assert.ErrorIs(t, err, ErrUnsupported, "an array's paths are its ports")
}

// TestVerifyAndClose: with Verify the host serves the integrity checker in
// front of the device and runs its check; without, verify is unsupported.
// Close closes the devices once, and a closed host takes no device.
func TestVerifyAndClose(t *testing.T) {
	files := store(t, 1<<20, 0)
	h := New(Options{Verify: true})
	require.NoError(t, h.Build(context.Background(), []DeviceConfig{fileDevice("d0", files[0])}))
	io := h.Serve()
	require.Len(t, io, 1)
	d, _ := h.Device("d0")
	assert.NotSame(t, d, io[0], "with Verify the checker is served, not the device")
	buf := make([]byte, 4096)
	_, err := io[0].WriteAt(context.Background(), buf, 0)
	require.NoError(t, err)
	rep, err := h.Verify(context.Background(), "d0")
	require.NoError(t, err)
	assert.True(t, rep.OK())
	assert.EqualValues(t, 1, rep.Tracked)

	closed := 0
	h.OnClose(func() error { closed++; return nil })
	require.NoError(t, h.Close())
	require.NoError(t, h.Close())
	assert.Equal(t, 1, closed)
	_, err = d.ReadAt(context.Background(), buf, 0)
	assert.Error(t, err, "Close closed the device")
	assert.ErrorIs(t, h.Build(context.Background(), []DeviceConfig{fileDevice("d1", files[0])}), ErrUnsupported)

	h2 := newHost(t, Options{})
	require.NoError(t, h2.Build(context.Background(), []DeviceConfig{fileDevice("d0", files[0])}))
	_, err = h2.Verify(context.Background(), "d0")
	assert.ErrorIs(t, err, ErrUnsupported)
	assert.ErrorContains(t, err, "mount with --verify")
}

func TestErrorKinds(t *testing.T) {
	base := errors.New("base")
	err := errorf(ErrNotFound, "no thing %q: %w", "x", base)
	assert.Equal(t, `no thing "x": base`, err.Error(), "the kind does not change the message")
	assert.ErrorIs(t, err, ErrNotFound)
	assert.ErrorIs(t, err, base)
	assert.NotErrorIs(t, err, ErrInvalid)
	assert.Nil(t, Kinded(ErrInvalid, nil))
	k := Kinded(ErrInvalid, err)
	assert.ErrorIs(t, k, ErrInvalid)
	assert.ErrorIs(t, k, ErrNotFound)
	assert.ErrorIs(t, ErrNoWWID, ErrInvalid)
}

func ruleIDs(h *Host) []int {
	var ids []int
	for _, r := range h.ClaimRules() {
		ids = append(ids, r.ID)
	}
	return ids
}
