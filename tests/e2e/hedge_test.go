package e2e

import (
	"context"
	"testing"
	"time"

	"github.com/mpathfs/mpathfs/internal/needs"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestHedgedReadsUnderHangFault: fio randrw with crc32c verification while
// the busiest of three file paths holds every read (--hang --op read, a
// gray failure: probes and writes still pass, so nothing fails the path).
// With hedged reads on, fio sees no error and every block verifies; the
// hung path's reads are answered by their hedges, it is reported slow and
// demoted, and it stays active. A full hang (every operation) also leaves
// fio without an error. Assertions are about correctness, never time.
func TestHedgedReadsUnderHangFault(t *testing.T) {
	needs.Tools(t, "fio")
	for _, c := range []struct {
		psp string
		op  []string
	}{
		{"VMW_PSP_RR", []string{"--op", "read"}},
		{"VMW_PSP_FIXED", []string{"--op", "read"}},
		{"queue-length", nil},
	} {
		name := c.psp
		if c.op == nil {
			name += "/all-ops"
		}
		t.Run(name, func(t *testing.T) {
			st := store(t, 256<<20)
			args := append([]string{"--name", "d0", "--psp", c.psp, "--io-timeout", "3s", "--check-interval", "500ms", "--hedge", "on"}, filePaths(st, 3)...)
			if c.psp == "VMW_PSP_RR" {
				args = append(args, "--psp-option", "iops=1")
			}
			m := startMount(t, args...)
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			run := startFio(ctx, verifyJob(m.file("d0"), 8)...)
			time.Sleep(1500 * time.Millisecond)
			before := pathIO(m.status(), "d0")
			time.Sleep(500 * time.Millisecond)
			victim := busiest(before, pathIO(m.status(), "d0"))
			m.mustCtl(append([]string{"fault", "inject", victim, "--hang"}, c.op...)...)
			r, out, err := run.wait()
			if err != nil || len(r.Jobs) == 0 || r.Jobs[0].Error != 0 || r.Jobs[0].TotalErr != 0 {
				t.Fatalf("fio failed with hedged reads across a hung path: %v\n%s\n--- mpathfs:\n%s", err, out, m.out.String())
			}
			final := m.status()
			require.Len(t, final.Devices, 1)
			d := final.Devices[0]
			assert.Equal(t, "on", d.Options.HedgeReads)
			assert.NotZero(t, d.HedgedReads, "no read was hedged")
			assert.NotZero(t, d.HedgeWins, "no hedge answered first")
			vs := pathStatus(m, "d0", victim)
			assert.NotZero(t, vs.HedgeLost, "the hung path lost no read to a hedge")
			if c.op != nil {
				assert.True(t, vs.Slow, "the hung path is not reported slow")
				assert.Equal(t, "active", vs.State, "a path whose reads only lose races is not failed")
				events := m.mustCtl("events", "--last", "100")
				assert.Contains(t, events, "path-slow")
			}
			m.mustCtl("fault", "clear", victim)
			t.Logf("%s: victim %s; fio read %.0f IOPS, max read clat %.1f ms; hedged %d, hedge wins %d, victim lost %d",
				c.psp, victim, r.Jobs[0].Read.IOPS, r.Jobs[0].Read.ClatNs.Max/1e6, d.HedgedReads, d.HedgeWins, vs.HedgeLost)
			m.stopClean(t)
		})
	}
}
