package hotplug

import (
	"reflect"
	"testing"
	"time"
)

func TestMap(t *testing.T) {
	env := func(sub string) map[string]string {
		return map[string]string{"SUBSYSTEM": sub, "DEVNAME": "loop3", "DEVPATH": "/devices/virtual/block/loop3", "MAJOR": "7", "MINOR": "3", "DEVTYPE": "disk"}
	}
	blk := env("block")
	unknown := DeviceState{}
	emptyLoop := DeviceState{Present: true, Size: 0, Loop: true}
	loopA := DeviceState{Present: true, Size: 8192, Loop: true, Backing: "65024:11"}
	loopB := DeviceState{Present: true, Size: 8192, Loop: true, Backing: "65024:12"}
	sized := DeviceState{Present: true, Size: 2048}
	empty := DeviceState{Present: true}
	ev := func(k Kind, reason string) Event {
		return Event{Kind: k, DevNode: "/dev/loop3", Name: "loop3", Major: 7, Minor: 3, Reason: reason}
	}
	for _, c := range []struct {
		name      string
		action    string
		env       map[string]string
		prev, cur DeviceState
		want      []Event
	}{
		{"losetup attach", "change", blk, emptyLoop, loopA, []Event{ev(Added, "change: loop device attached, size 8192 sectors")}},
		{"losetup detach", "change", blk, loopA, emptyLoop, []Event{ev(Removed, "change: size 0")}},
		{"second change after attach", "change", blk, loopA, loopA, []Event{ev(Changed, "change: device changed")}},
		{"second change after detach", "change", blk, emptyLoop, emptyLoop, nil},
		{"size kept but backing gone", "change", blk, loopA, DeviceState{Present: true, Size: 8192, Loop: true}, []Event{ev(Removed, "change: loop device detached")}},
		{"re-attached to another file", "change", blk, loopA, loopB, []Event{
			ev(Removed, "change: loop device re-attached to another file"),
			ev(Added, "change: loop device re-attached to another file"),
		}},
		{"attach of a device not seen before", "change", blk, unknown, loopA, []Event{ev(Added, "change: loop device attached, size 8192 sectors")}},
		{"add with a size", "add", blk, unknown, sized, []Event{ev(Added, "add: size 2048 sectors")}},
		{"add of an empty device", "add", blk, unknown, empty, nil},
		{"remove of a usable device", "remove", blk, sized, unknown, []Event{ev(Removed, "remove: device removed")}},
		{"remove of an unknown device", "remove", blk, unknown, unknown, []Event{ev(Removed, "remove: device removed")}},
		{"remove of a known empty device", "remove", blk, empty, unknown, nil},
		{"media ejected", "change", blk, sized, empty, []Event{ev(Removed, "change: size 0")}},
		{"media inserted", "change", blk, empty, sized, []Event{ev(Added, "change: size 2048 sectors")}},
		{"resize", "change", blk, sized, DeviceState{Present: true, Size: 4096}, []Event{ev(Changed, "change: device changed")}},
		{"rescan of a usable device", "change", blk, sized, sized, []Event{ev(Changed, "change: device changed")}},
		{"gone from sysfs on change", "change", blk, sized, unknown, []Event{ev(Removed, "change: device gone from sysfs")}},
		{"other subsystem", "change", env("net"), emptyLoop, loopA, nil},
		{"online", "online", blk, empty, sized, []Event{ev(Added, "online: size 2048 sectors")}},
	} {
		t.Run(c.name, func(t *testing.T) {
			got := Map(c.action, c.env, c.prev, c.cur)
			if !reflect.DeepEqual(got, c.want) {
				t.Errorf("Map(%s, %+v -> %+v)\n got %+v\nwant %+v", c.action, c.prev, c.cur, got, c.want)
			}
		})
	}
}

func TestMapNameFromDevpath(t *testing.T) {
	got := Map("add", map[string]string{"SUBSYSTEM": "block", "DEVPATH": "/devices/pci0000:00/host0/target0:0:0/0:0:0:0/block/sdb", "MAJOR": "8", "MINOR": "16"}, DeviceState{}, DeviceState{Present: true, Size: 1})
	if len(got) != 1 || got[0].Name != "sdb" || got[0].DevNode != "/dev/sdb" || got[0].Major != 8 || got[0].Minor != 16 {
		t.Fatalf("Map = %+v", got)
	}
	if Map("add", map[string]string{"SUBSYSTEM": "block"}, DeviceState{}, DeviceState{Present: true, Size: 1}) != nil {
		t.Fatal("an event without a name was mapped")
	}
}

func TestIsLoopDisk(t *testing.T) {
	for name, want := range map[string]bool{"loop0": true, "loop12": true, "loop0p1": false, "loop": false, "sda": false, "loop-control": false} {
		if got := isLoopDisk(name); got != want {
			t.Errorf("isLoopDisk(%q) = %v", name, got)
		}
	}
}

func TestNewFromChannel(t *testing.T) {
	ch := make(chan Event)
	w := NewFromChannel(ch)
	var src Source = w
	want := Event{Kind: Removed, DevNode: "/dev/sdc", Name: "sdc", Major: 8, Minor: 32}
	go func() { ch <- want; close(ch) }()
	select {
	case got := <-src.Events():
		if got != want {
			t.Fatalf("got %+v", got)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no event")
	}
	if _, ok := <-src.Events(); ok {
		t.Fatal("Events not closed after the source channel closed")
	}
	if err := src.Close(); err != nil {
		t.Fatal(err)
	}

	// Close while the fake source is still open.
	w2 := NewFromChannel(make(chan Event))
	w2.Close()
	if _, ok := <-w2.Events(); ok {
		t.Fatal("Events not closed after Close")
	}
	w2.Close() // twice is fine
}

func TestDeviceOf(t *testing.T) {
	for _, uri := range []string{"file:///dev/null", "/tmp/x.img", "nbd://h/e", "/dev/null", "block:///dev/null", "block:///nonexistent"} {
		if _, _, ok := DeviceOf(uri); ok {
			t.Errorf("DeviceOf(%q) ok", uri)
		}
	}
}
