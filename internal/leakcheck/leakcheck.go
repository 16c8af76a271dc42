// Package leakcheck fails a test binary that leaves goroutines of this module
// running after its tests passed.
//
// A package whose code starts goroutines (a reader loop, a path prober, a
// listener, a timer-driven retry) uses it from its TestMain:
//
//	func TestMain(m *testing.M) { leakcheck.Main(m) }
//
// After m.Run returned with every test passed, Main waits up to Wait for the
// goroutines to wind down (a Close that returned may leave a goroutine a few
// scheduling rounds from its return), then fails the binary, printing the
// stack of every goroutine still running that belongs to this module: one
// with a frame of a function of the module, or created by one. Goroutines of
// the runtime and of libraries that this module did not start are not its
// business, nor are those of the testing package: the main goroutine (in
// TestMain) and the goroutines running tests (so Check also works from
// inside a test, where they are still running).
//
// Some goroutines live for the life of the process by design; they are
// recognised by the function the goroutine started in (its entry, the frame
// just above "created by" in the stack) and never reported:
//
//   - backends/internal/sysio.worker: the pool of idle system-call workers
//     (up to a bound stay parked for the next call, and a worker stuck in a
//     system call a test hung on purpose finishes when the kernel lets it);
//   - backends/internal/sysio.watchdog: the one goroutine that enforces
//     every deadline of sysio calls (it winds down by itself when idle);
//   - backends/internal/sysio.CloseWithin: a close(2) left to finish in the
//     background after its bound, by design.
//
// A package with other long-lived goroutines names their entry functions in
// Main's ignore argument.
package leakcheck

import (
	"fmt"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"
)

// Module is the import path prefix of the functions this check is about.
const Module = "github.com/mpathfs/mpathfs"

// Wait is how long Main waits for goroutines to wind down before it reports
// those still running. It bounds the wait; a clean binary waits not at all.
var Wait = 5 * time.Second

// LongLived are the entry functions (full names, or prefixes of them) of the
// goroutines that live as long as the process by design; see the package
// comment.
var LongLived = []string{
	Module + "/backends/internal/sysio.worker",
	Module + "/backends/internal/sysio.watchdog",
	Module + "/backends/internal/sysio.CloseWithin.func",
}

// Main runs the tests, then, if they passed, checks that no goroutine of
// this module is left running (see the package comment), and exits. ignore
// adds entry functions (full names or prefixes) to LongLived for this
// binary.
func Main(m *testing.M, ignore ...string) {
	code := m.Run()
	if code == 0 {
		if err := Check(Wait, ignore...); err != nil {
			fmt.Fprintln(os.Stderr, err)
			code = 1
		}
	}
	os.Exit(code)
}

// Check waits up to wait for the goroutines of this module (other than the
// caller's, LongLived and ignore) to end, and returns an error listing the
// stacks of those still running then, or nil.
func Check(wait time.Duration, ignore ...string) error {
	deadline := time.Now().Add(wait)
	pause := time.Millisecond
	for {
		left := Leaked(ignore...)
		if len(left) == 0 {
			return nil
		}
		if !time.Now().Before(deadline) {
			return &Error{Stacks: left}
		}
		time.Sleep(pause)
		pause = min(2*pause, 100*time.Millisecond)
	}
}

// Error lists the goroutines left running.
type Error struct {
	Stacks []string // one goroutine's stack each, as runtime.Stack prints it
}

func (e *Error) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "leakcheck: %d goroutine(s) of %s still running after the tests:\n", len(e.Stacks), Module)
	for _, s := range e.Stacks {
		b.WriteString("\n")
		b.WriteString(s)
		b.WriteString("\n")
	}
	return b.String()
}

// Leaked returns the stacks of the goroutines running now that belong to
// this module, less the caller's, LongLived and ignore.
func Leaked(ignore ...string) []string {
	var left []string
	for i, g := range strings.Split(allStacks(), "\n\n") {
		if i == 0 { // the caller's own goroutine comes first
			continue
		}
		g = strings.TrimSpace(g)
		if g == "" {
			continue
		}
		funcs, entry := parse(g)
		if !ours(funcs) || testingGoroutine(entry) || longLived(entry, ignore) {
			continue
		}
		left = append(left, g)
	}
	return left
}

func allStacks() string {
	buf := make([]byte, 1<<16)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			return string(buf[:n])
		}
		buf = make([]byte, 2*len(buf))
	}
}

// parse returns the functions of one goroutine's stack (the creator last)
// and its entry function (the outermost frame of the goroutine itself).
//
// A stack reads:
//
//	goroutine 7 [chan receive]:
//	example.com/pkg.(*T).loop(0xc000010000)
//		/src/pkg/t.go:42 +0x3c
//	created by example.com/pkg.Start in goroutine 1
//		/src/pkg/t.go:17 +0x6e
func parse(g string) (funcs []string, entry string) {
	lines := strings.Split(g, "\n")
	for _, l := range lines[1:] {
		if strings.HasPrefix(l, "\t") || l == "" {
			continue // a file:line, or the blank line before the next
		}
		if c, ok := strings.CutPrefix(l, "created by "); ok {
			c, _, _ = strings.Cut(c, " in goroutine ")
			funcs = append(funcs, c)
			continue
		}
		if strings.HasPrefix(l, "...") { // "...N frames elided..."
			continue
		}
		f := l
		if i := strings.LastIndex(f, "("); i > 0 {
			f = f[:i]
		}
		funcs = append(funcs, f)
		entry = f
	}
	return funcs, entry
}

func ours(funcs []string) bool {
	for _, f := range funcs {
		if strings.HasPrefix(f, Module+"/") || strings.HasPrefix(f, Module+".") {
			return true
		}
	}
	return false
}

// testingGoroutine reports whether a goroutine is one of the testing package's: the
// main goroutine, or one running a test.
func testingGoroutine(entry string) bool {
	return entry == "main.main" || strings.HasPrefix(entry, "testing.")
}

func longLived(entry string, ignore []string) bool {
	for _, l := range LongLived {
		if strings.HasPrefix(entry, l) {
			return true
		}
	}
	for _, l := range ignore {
		if strings.HasPrefix(entry, l) {
			return true
		}
	}
	return false
}
