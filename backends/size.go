package backends

import (
	"fmt"
	"math"
	"strconv"
	"strings"
)

var sizeSuffixes = []struct {
	suffix, print string
	shift         uint
}{{"t", "T", 40}, {"g", "G", 30}, {"m", "M", 20}, {"k", "k", 10}}

// ParseSize parses a byte count with an optional binary suffix, as fio
// reads sizes: 4k = 4096, 1M = 1 MiB, 1G = 1 GiB, 1T = 1 TiB. Case does not
// matter, and a trailing "b" or "ib" changes nothing (64KiB = 64kb = 64k).
func ParseSize(s string) (int64, error) {
	t := strings.ToLower(strings.TrimSpace(s))
	t = strings.TrimSuffix(strings.TrimSuffix(t, "b"), "i")
	var shift uint
	for _, x := range sizeSuffixes {
		if rest, ok := strings.CutSuffix(t, x.suffix); ok {
			t, shift = rest, x.shift
			break
		}
	}
	n, err := strconv.ParseInt(t, 10, 64)
	if err != nil || n < 0 || n > math.MaxInt64>>shift {
		return 0, fmt.Errorf("size %q: want a byte count such as 4096, 4k, 1M or 1G", s)
	}
	return n << shift, nil
}

// FormatSize prints a byte count with the largest binary suffix that keeps
// it exact (4096 → "4k", 1048576 → "1M"), so ParseSize reads it back.
func FormatSize(n int64) string {
	if n != 0 {
		for _, x := range sizeSuffixes {
			if n%(1<<x.shift) == 0 {
				return strconv.FormatInt(n>>x.shift, 10) + x.print
			}
		}
	}
	return strconv.FormatInt(n, 10)
}

// ParsePositiveSize is ParseSize for sizes that must be above zero (a store, a
// memory limit); what reads the size names itself in the error.
func ParsePositiveSize(what, s string) (int64, error) {
	n, err := ParseSize(s)
	if err != nil || n == 0 {
		return 0, fmt.Errorf("%s %q: want a positive size such as 4096, 4k, 64M or 1G (powers of 1024)", what, s)
	}
	return n, nil
}
