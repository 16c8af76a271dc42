package main

import (
	"os"
	"runtime/debug"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/mpathfs/mpathfs/fusedev"
)

func TestParseMemoryLimit(t *testing.T) {
	cases := []struct {
		in      string
		limit   int64
		auto    bool
		errWant string
	}{
		{"", 0, true, ""},
		{"auto", 0, true, ""},
		{"AUTO", 0, true, ""},
		{"off", 0, false, ""},
		{"256MiB", 256 << 20, false, ""},
		{"1G", 1 << 30, false, ""},
		{"5MiB", 0, false, "below 16 MiB"},
		{"0", 0, false, "want auto, off or a size"},
		{"lots", 0, false, "want auto, off or a size"},
	}
	for _, c := range cases {
		limit, auto, err := parseMemoryLimit(c.in)
		if c.errWant != "" {
			if err == nil || !strings.Contains(err.Error(), c.errWant) {
				t.Errorf("parseMemoryLimit(%q) = %v, want an error mentioning %q", c.in, err, c.errWant)
			}
			continue
		}
		if err != nil || limit != c.limit || auto != c.auto {
			t.Errorf("parseMemoryLimit(%q) = %d, %v, %v; want %d, %v", c.in, limit, auto, err, c.limit, c.auto)
		}
	}
}

func TestApplyMemoryLimit(t *testing.T) {
	t.Setenv("GOMEMLIMIT", "")
	prev := debug.SetMemoryLimit(-1)
	defer debug.SetMemoryLimit(prev)

	if line := applyMemoryLimit("off", 0); line != "" {
		t.Errorf("off: %q, want nothing set", line)
	}
	if line := applyMemoryLimit("auto", -1); line != "" {
		t.Errorf("auto with unbounded requests: %q, want nothing set", line)
	}
	if line := applyMemoryLimit("300MiB", 0); !strings.Contains(line, "300 MiB") || debug.SetMemoryLimit(-1) != 300<<20 {
		t.Errorf("300MiB: %q, limit %d", line, debug.SetMemoryLimit(-1))
	}
	base := goMemoryInUse()
	applyMemoryLimit("auto", 8)
	got := debug.SetMemoryLimit(-1)
	want := int64(8*fusedev.RequestBytes(0)) + memoryHeadroom
	// The baseline is read again inside, after a GC: allow it to move.
	if got < want || got > base+want+(8<<20) {
		t.Errorf("auto with 8 requests: limit %d, want baseline (%d) + %d", got, base, want)
	}
}

func TestBlocksInSyscalls(t *testing.T) {
	shm := t.TempDir()
	if _, err := os.Stat("/dev/shm"); err == nil {
		shm = "/dev/shm"
	}
	f, err := os.CreateTemp(shm, "procs-*.img")
	if err != nil {
		t.Fatal(err)
	}
	f.Close()
	defer os.Remove(f.Name())
	var st unix.Statfs_t
	unix.Statfs(f.Name(), &st)
	inMemory := st.Type == unix.TMPFS_MAGIC
	cases := []struct {
		uri  string
		want bool
	}{
		{"nbd+unix:///?socket=/run/x.sock", true},
		{"nbd://127.0.0.1:10809/x", true},
		{"nbds://127.0.0.1/x", true},
		{"block:///dev/sdb", true},
		{"/dev/null", true},
		{"file://" + f.Name(), !inMemory},
		{f.Name(), !inMemory},
		{"/nonexistent/store.img", true},
	}
	for _, c := range cases {
		if got := blocksInSyscalls(c.uri); got != c.want {
			t.Errorf("blocksInSyscalls(%q) = %v, want %v", c.uri, got, c.want)
		}
	}
}
