package host

import (
	"context"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/mpathfs/mpathfs/hotplug"
)

// TestHotplugRemoval: a removal uevent for the device number of a watched
// path fails the path and takes it out of its device; an event for another
// device number and an added device of an unknown WWID change nothing.
func TestHotplugRemoval(t *testing.T) {
	files := store(t, 1<<20, 1)
	h := newHost(t, Options{})
	require.NoError(t, h.Build(context.Background(), []DeviceConfig{fileDevice("d0", files[0], files[1])}))
	d, _ := h.Device("d0")
	var log strings.Builder
	hp := &hotplugger{h: h, log: &log, paths: []blockPath{{dev: "d0", name: "vmhba2:C0:T0:L0", major: 7, minor: 3}}}

	hp.handle(context.Background(), hotplug.Event{Kind: hotplug.Removed, Major: 7, Minor: 4})
	assert.Len(t, d.Paths(), 2, "another device number")
	hp.handle(context.Background(), hotplug.Event{Kind: hotplug.Added, DevNode: "/dev/loop9", WWID: "naa.0"})
	assert.Len(t, d.Paths(), 2, "no device has that WWID")

	hp.handle(context.Background(), hotplug.Event{Kind: hotplug.Removed, Name: "loop3", Major: 7, Minor: 3})
	require.Len(t, d.Paths(), 1)
	assert.Equal(t, "vmhba1:C0:T0:L0", d.Paths()[0].Name)
	assert.Empty(t, hp.paths, "the path is no longer watched")
	assert.Contains(t, log.String(), "mpathfs: hotplug: d0: path vmhba2:C0:T0:L0 removed (hot removal: ")
}
