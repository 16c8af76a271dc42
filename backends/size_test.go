package backends_test

import (
	"strings"
	"testing"

	"github.com/mpathfs/mpathfs/backends"
)

func TestSizes(t *testing.T) {
	for in, want := range map[string]int64{
		"0": 0, "512": 512, "4k": 4096, "4K": 4096, "4KiB": 4096, "4kb": 4096,
		"1M": 1 << 20, "1mib": 1 << 20, "2G": 2 << 30, "1T": 1 << 40, "8589934591G": 8589934591 << 30,
	} {
		if got, err := backends.ParseSize(in); err != nil || got != want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "k", "-1", "1.5M", "4x", "8589934592G", "1e3"} {
		if _, err := backends.ParseSize(in); err == nil {
			t.Errorf("ParseSize(%q) succeeded", in)
		}
	}
	for n, want := range map[int64]string{0: "0", 1: "1", 4096: "4k", 6144: "6k", 1 << 20: "1M", 3 << 30: "3G", 1<<20 + 1: "1048577"} {
		if got := backends.FormatSize(n); got != want {
			t.Errorf("FormatSize(%d) = %q, want %q", n, got, want)
		}
	}
	n, err := backends.ParsePositiveSize("store size", "64M")
	if err != nil || n != 64<<20 {
		t.Errorf("ParsePositiveSize(64M) = %d, %v", n, err)
	}
	if _, err := backends.ParsePositiveSize("store size", "0"); err == nil || !strings.Contains(err.Error(), `store size "0": want a positive size`) {
		t.Errorf("ParsePositiveSize(0): %v", err)
	}
}
