package leakcheck

import (
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// helperEnv makes this test binary the one under test in TestMainFailsOnLeak:
// it runs TestLeakOnPurpose, which leaks, and Main must fail it.
const helperEnv = "LEAKCHECK_LEAK_ON_PURPOSE"

func TestMain(m *testing.M) {
	if os.Getenv(helperEnv) != "" {
		Wait = 100 * time.Millisecond
	}
	Main(m)
}

var leakForever = make(chan struct{}) // never closed

func TestLeakOnPurpose(t *testing.T) {
	if os.Getenv(helperEnv) == "" {
		t.Skip("runs only inside TestMainFailsOnLeak, which expects it to leak a goroutine")
	}
	go func() { <-leakForever }()
}

func TestMainFailsOnLeak(t *testing.T) {
	cmd := exec.Command(os.Args[0], "-test.run", "^TestLeakOnPurpose$", "-test.count=1")
	cmd.Env = append(os.Environ(), helperEnv+"=1")
	out, err := cmd.CombinedOutput()
	var exit *exec.ExitError
	require.ErrorAs(t, err, &exit, "a test binary that leaked must fail; output:\n%s", out)
	assert.Equal(t, 1, exit.ExitCode())
	assert.Contains(t, string(out), "still running after the tests")
	assert.Contains(t, string(out), "leakcheck.TestLeakOnPurpose.func1", "the report shows the leaked goroutine's stack")
}

func TestCheckReportsThenClears(t *testing.T) {
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		<-stop
	}()

	err := Check(10 * time.Millisecond)
	var e *Error
	require.ErrorAs(t, err, &e)
	require.Len(t, e.Stacks, 1, "%v", err)
	assert.Contains(t, e.Stacks[0], "leakcheck.TestCheckReportsThenClears.func1")
	assert.Contains(t, e.Stacks[0], "created by "+Module+"/internal/leakcheck.TestCheckReportsThenClears")

	// Named as long-lived, it is not reported.
	assert.NoError(t, Check(0, Module+"/internal/leakcheck.TestCheckReportsThenClears.func1"))

	// Once it ends, the check is clean; Check waits for it to wind down.
	close(stop)
	<-done
	assert.NoError(t, Check(Wait))
}

func TestParse(t *testing.T) {
	g := "goroutine 7 [chan receive]:\n" +
		"example.com/lib.(*T).loop(0xc000010000)\n" +
		"\t/src/lib/t.go:42 +0x3c\n" +
		"example.com/lib.Run.func1()\n" +
		"\t/src/lib/t.go:30 +0x1c\n" +
		"created by " + Module + "/nmp.(*Device).start in goroutine 1\n" +
		"\t/src/nmp/d.go:17 +0x6e"
	funcs, entry := parse(g)
	assert.Equal(t, []string{"example.com/lib.(*T).loop", "example.com/lib.Run.func1", Module + "/nmp.(*Device).start"}, funcs)
	assert.Equal(t, "example.com/lib.Run.func1", entry)
	assert.True(t, ours(funcs), "created by the module: ours even if every frame is a library's")
	assert.False(t, ours(funcs[:2]), "no frame of the module, not created by it: not ours")

	assert.True(t, testingGoroutine("testing.tRunner"))
	assert.True(t, testingGoroutine("main.main"))
	assert.False(t, testingGoroutine(Module+"/nmp.(*Device).probe"))
	assert.True(t, longLived(Module+"/backends/internal/sysio.worker", nil))
	assert.True(t, longLived(Module+"/backends/internal/sysio.watchdog", nil))
	assert.False(t, longLived(Module+"/nmp.(*Device).probe", nil))
	assert.True(t, longLived(Module+"/nmp.(*Device).probe", []string{Module + "/nmp.(*Device).probe"}))
}

func TestErrorListsEveryStack(t *testing.T) {
	e := &Error{Stacks: []string{"goroutine 1 [a]:\nx.f()", "goroutine 2 [b]:\ny.g()"}}
	s := e.Error()
	assert.True(t, strings.Contains(s, "2 goroutine(s)") && strings.Contains(s, "x.f()") && strings.Contains(s, "y.g()"), s)
}
