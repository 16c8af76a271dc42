package e2e

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/mpathfs/mpathfs/internal/needs"
)

// TestLandLateNeverRollsBack: the stale-write hazard of multipath through
// the real binary. Two file paths, a short I/O timeout, no flap damping
// (the victim keeps coming back and catching writes) and the integrity
// oracle (--verify); fio rewrites a 1 MiB file at random, verifying, while
// half the writes the busiest path gets time out and land 1.5 s after they
// were issued — after the device retried them on the other path,
// acknowledged them and fio wrote newer data over them. (Half, not all: a
// write whose every retry is routed back to the victim would be caught 33
// times and fail with EIO after the NMP's retry bound.) The fault stays until fio is done, so
// the last late writes land on a quiet device. Then: fio saw no error, and
// the oracle finds no rolled-back, stale, lost, torn or misdirected block.
// (fio's own verification cannot see a rollback: an older version of a
// block carries a valid header and checksum.)
func TestLandLateNeverRollsBack(t *testing.T) {
	needs.Tools(t, "fio")
	const land = 1500 * time.Millisecond
	st := store(t, 64<<20)
	args := append([]string{"--name", "d0", "--psp", "VMW_PSP_RR", "--psp-option", "iops=1",
		"--io-timeout", "500ms", "--check-interval", "200ms", "--flap-threshold", "1000", "--verify"}, filePaths(st, 2)...)
	m := startMount(t, args...)

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	run := startFio(ctx, "--name=landlate", "--filename="+m.file("d0"), "--direct=1", "--rw=randwrite", "--bs=4k",
		"--ioengine=libaio", "--iodepth=4", "--size=1M", "--time_based", "--runtime=6",
		"--verify=crc32c", "--verify_backlog=32", "--verify_fatal=1", "--verify_state_save=0", "--randseed=7")

	time.Sleep(1500 * time.Millisecond)
	before := pathIO(m.status(), "d0")
	time.Sleep(500 * time.Millisecond)
	victim := busiest(before, pathIO(m.status(), "d0"))
	out := m.mustCtl("fault", "inject", victim, "--land-late", land.String(), "--op", "write", "--probability", "50%", "--seed", "7")
	require.Contains(t, out, "--land-late 1.5s")

	r, fioOut, fioErr := run.wait()
	// How many writes the fault caught, before it is cleared.
	var list struct {
		Faults []struct {
			Path     string `json:"path"`
			Injected uint64 `json:"injected"`
		} `json:"faults"`
	}
	listOut := m.mustCtl("fault", "list", "--json")
	require.NoError(t, json.Unmarshal([]byte(listOut), &list), listOut)
	var caught uint64
	for _, f := range list.Faults {
		if f.Path == victim {
			caught += f.Injected
		}
	}
	m.mustCtl("fault", "clear", victim)
	// The writes caught last land up to 1.5 s after they were issued: give
	// them that before the verdict (a wait, not an assertion on time).
	time.Sleep(land + time.Second)

	if fioErr != nil || len(r.Jobs) == 0 || r.Jobs[0].Error != 0 || r.Jobs[0].TotalErr != 0 {
		t.Errorf("fio failed (an error or a verify mismatch) with late-landing writes on %s: %v\n%s", victim, fioErr, landlateTail(fioOut, 40))
	}
	assert.NotZero(t, caught, "the land-late fault on %s caught no write: the test tests nothing", victim)
	verdict, err := m.ctl("verify", "d0")
	t.Logf("victim %s, %d writes caught by --land-late %v; oracle: %s", victim, caught, land, strings.SplitN(verdict, "\n", 2)[0])
	if err != nil || !strings.Contains(verdict, "no lost, stale, torn or misdirected writes") {
		t.Errorf("the oracle found acknowledged writes that went back in time (%v):\n%s\n--- mpathfs:\n%s", err, landlateTail(verdict, 60), landlateTail(m.out.String(), 30))
	}
	m.stopClean(t)
}

// landlateTail returns the last n lines of s.
func landlateTail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = append([]string{"…"}, lines[len(lines)-n:]...)
	}
	return strings.Join(lines, "\n")
}
