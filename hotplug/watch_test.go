package hotplug_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mpathfs/mpathfs/backends/block"
	"github.com/mpathfs/mpathfs/hotplug"
	"github.com/mpathfs/mpathfs/internal/needs"
)

func needLoop(t *testing.T) {
	t.Helper()
	needs.Tools(t, "root", "losetup", "/dev/loop-control")
}

func losetup(t *testing.T, args ...string) string {
	t.Helper()
	out, err := exec.Command("losetup", args...).CombinedOutput()
	if err != nil {
		t.Fatalf("losetup %s: %v: %s", strings.Join(args, " "), err, out)
	}
	return strings.TrimSpace(string(out))
}

// next waits up to 5 s for an event of kind k on dev, skipping others
// (other tests attach loop devices too).
func next(t *testing.T, w *hotplug.Watcher, k hotplug.Kind, dev string) hotplug.Event {
	t.Helper()
	deadline := time.After(5 * time.Second)
	for {
		select {
		case e, ok := <-w.Events():
			if !ok {
				t.Fatalf("events closed while waiting for %s %s: %v", k, dev, w.Err())
			}
			t.Logf("event: %s", e)
			if e.Kind == k && e.DevNode == dev {
				return e
			}
		case <-deadline:
			t.Fatalf("no %s event for %s within 5 s", k, dev)
		}
	}
}

func TestWatchLoop(t *testing.T) {
	needLoop(t)
	w, err := hotplug.Watch(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()

	img := filepath.Join(t.TempDir(), "store.img")
	if err := os.WriteFile(img, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(img, 1<<20); err != nil {
		t.Fatal(err)
	}
	dev := losetup(t, "-f", "--show", img)
	attached := true
	t.Cleanup(func() {
		if attached {
			losetup(t, "-d", dev)
		}
	})
	added := next(t, w, hotplug.Added, dev)

	// The WWID is the one a path opened on the device reports.
	d, err := block.OpenDevice(dev, block.Options{})
	if err != nil {
		t.Fatal(err)
	}
	inq, err := d.Inquiry(t.Context())
	d.Close()
	if err != nil {
		t.Fatal(err)
	}
	if added.WWID == "" || added.WWID != inq.WWID {
		t.Errorf("Added WWID %q, the device's WWID %q", added.WWID, inq.WWID)
	}
	maj, min, ok := hotplug.DeviceOf("block://" + dev)
	if !ok || maj != added.Major || min != added.Minor {
		t.Errorf("DeviceOf(block://%s) = %d:%d %v, event says %d:%d", dev, maj, min, ok, added.Major, added.Minor)
	}
	if maj2, min2, ok2 := hotplug.DeviceOf(dev); !ok2 || maj2 != maj || min2 != min {
		t.Errorf("DeviceOf(%s) = %d:%d %v", dev, maj2, min2, ok2)
	}

	losetup(t, "-d", dev)
	attached = false
	next(t, w, hotplug.Removed, dev)

	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	for range w.Events() { // drains, then ends: the channel is closed
	}
}
