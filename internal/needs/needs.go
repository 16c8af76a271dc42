// Package needs is the one "needs a tool" helper of the tests: a test that
// needs root, a device node or a program calls needs.Tools first. What is
// missing fails the test when the environment variable CI is set (CI must
// have everything) and skips it elsewhere, naming what is missing and how
// to get it, so a developer's machine without fio or nbdkit still runs the
// rest of the suite.
//
//	needs.Tools(t, "root", "/dev/fuse", "fio")
//	bin := needs.Program(t, "nbdkit")
package needs

import (
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
)

// Missing returns the requirements that are not met: "root" (the effective
// user is root), a path starting with "/" (it exists: a device node such
// as /dev/fuse or /dev/loop-control) or a program name (found in PATH).
func Missing(reqs ...string) []string {
	var out []string
	for _, r := range reqs {
		switch {
		case r == "root":
			if os.Geteuid() != 0 {
				out = append(out, "root")
			}
		case strings.HasPrefix(r, "/"):
			if _, err := os.Stat(r); err != nil {
				out = append(out, r)
			}
		default:
			if _, err := exec.LookPath(r); err != nil {
				out = append(out, r)
			}
		}
	}
	return out
}

// Tools fails (CI set) or skips (CI unset) t unless every requirement is met
// (see Missing).
func Tools(t testing.TB, reqs ...string) {
	t.Helper()
	if m := Missing(reqs...); len(m) > 0 {
		Unavailable(t, fmt.Sprintf("needs %s (install with `make deps`)", strings.Join(m, ", ")))
	}
}

// Program is Tools for one program; it returns the program's path.
func Program(t testing.TB, name string) string {
	t.Helper()
	Tools(t, name)
	p, err := exec.LookPath(name)
	if err != nil { // not reached: Tools stopped the test
		t.Fatal(err)
	}
	return p
}

// Unavailable fails (CI set) or skips (CI unset) t because of why: for
// requirements Missing cannot check (a plugin of a tool, a kernel feature).
func Unavailable(t testing.TB, why string) {
	t.Helper()
	if ci := os.Getenv("CI"); ci != "" {
		t.Fatalf("CI=%s is set but the test %s", ci, why)
		return
	}
	t.Skipf("skipped: the test %s (set CI=1 to make this a failure)", why)
}
