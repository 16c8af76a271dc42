package scenario

import (
	"bytes"
	"context"
	"testing"
	"testing/synctest"
	"time"

	"github.com/mpathfs/mpathfs/mpath"
	"github.com/mpathfs/mpathfs/nmp"
)

const replayScenario = `# faults whose effect depends on the seed
at 1s fail path vmhba1:C0:T0:L0 with retryable probability 30% op read,write for 4s
at 2s fail path vmhba2:C0:T0:L0 with path-failure for 2s
every 500ms from 6s flap path vmhba3:C0:T0:L0 for 3s
at 7s policy psp VMW_PSP_RR iops=3
at 8s fail path vmhba4:C0:T0:L0 with path-failure probability 20% op write for 1500ms
`

// replay runs the scripted workload under the scenario with the given
// seed and returns the decisions-mode trace.
func replay(t *testing.T, seed uint64) []byte {
	var trace bytes.Buffer
	synctest.Test(t, func(t *testing.T) {
		// Steps, fault expiries and restores fall on whole milliseconds; the
		// workload's I/Os at x.3 ms; the path checker ticks at x.9, x.8, …
		// ms. No two goroutines ever wake at the same instant, so the order
		// of everything is fixed.
		l := newLab(t, labOpts{psp: nmp.PSPRR, pspOpts: map[string]string{"iops": "1"},
			cfg: func(c *mpath.DeviceConfig) { c.CheckInterval = 2*time.Second - 100*time.Microsecond }})
		tr := nmp.NewTracer(16, &trace)
		tr.Decisions = true
		l.dev.SetTracer(tr)
		sc, err := Parse("replay.scn", replayScenario)
		if err != nil {
			t.Fatal(err)
		}
		sc.Seed = seed
		done := make(chan []error)
		go func() {
			done <- workload(context.Background(), l.dev, 2000, 300*time.Microsecond, 5*time.Millisecond, 77)
		}()
		if _, err := Run(context.Background(), sc, RuntimeTarget{RT: l.rt}, Options{SampleInterval: -1, NoTrace: true, Settle: time.Millisecond}); err != nil {
			t.Fatal(err)
		}
		if errs := <-done; len(errs) > 0 {
			t.Errorf("%d I/O errors, first %v", len(errs), errs[0])
		}
		l.dev.SetTracer(nil)
	})
	return trace.Bytes()
}

// TestReplayDeterminism: the same scenario, seed and scripted workload give
// a byte-identical per-I/O trace (decisions mode); another seed does not.
func TestReplayDeterminism(t *testing.T) {
	a := replay(t, 42)
	b := replay(t, 42)
	if n := bytes.Count(a, []byte("\n")); n != 2000 {
		t.Fatalf("trace has %d records, want 2000", n)
	}
	if !bytes.Contains(a, []byte(`"class":"retryable"`)) || !bytes.Contains(a, []byte(`"class":"path-failure"`)) {
		t.Fatalf("the scenario's faults left no mark on the trace")
	}
	if !bytes.Equal(a, b) {
		al, bl := bytes.Split(a, []byte("\n")), bytes.Split(b, []byte("\n"))
		for i := range min(len(al), len(bl)) {
			if !bytes.Equal(al[i], bl[i]) {
				t.Fatalf("two runs with seed 42 differ first at record %d:\n%s\n%s", i+1, al[i], bl[i])
			}
		}
		t.Fatalf("two runs with seed 42 differ in length: %d vs %d bytes", len(a), len(b))
	}
	if c := replay(t, 43); bytes.Equal(a, c) {
		t.Fatalf("seeds 42 and 43 give the same trace")
	}
}
