package scenario

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/mpathfs/mpathfs/mpath"
	"github.com/mpathfs/mpathfs/nmp"
)

// TestRunInProcess plays a scenario with every kind of fault against an
// in-process device under load and checks the report.
func TestRunInProcess(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		// Hedged reads off: the hang step is here to show the cost of a hung
		// path in the report (hedging's own tests are in nmp and e2e).
		l := newLab(t, labOpts{psp: nmp.PSPRR, pspOpts: map[string]string{"iops": "1"}, latency: 200 * time.Microsecond,
			cfg: func(c *mpath.DeviceConfig) { c.HedgeReads = "off" }})
		sc, err := Parse("inproc.scn", `seed 3
at 1s fail path vmhba1:C0:T0:L0 with path-failure for 2s
at 3500ms slow path vmhba2:C0:T0:L0 x10 for 1s
at 5s path vmhba3:C0:T0:L0 off
at 6s path vmhba3:C0:T0:L0 on
at 7s hang path vmhba4:C0:T0:L0 for 1s
at 9s all-paths-down for 1s
at 11s array A controller B fail
at 11s policy psp queue-length
end 12s
`)
		if err != nil {
			t.Fatal(err)
		}
		tr := nmp.NewTracer(16, nil)
		l.dev.SetTracer(tr)
		ctx, cancel := context.WithCancel(context.Background())
		var ioErrs []error
		done := make(chan struct{})
		go func() {
			defer close(done)
			ioErrs = workload(ctx, l.dev, 1<<30, 300*time.Microsecond, 2*time.Millisecond, 9)
		}()
		var log bytes.Buffer
		rep, err := Run(context.Background(), sc, RuntimeTarget{RT: l.rt}, Options{ContinueOnError: true, Log: &log})
		cancel()
		<-done
		if !errors.Is(err, ErrNoArray) {
			t.Errorf("Run: %v, want the missing array endpoint", err)
		}
		t.Logf("log:\n%s", log.String())
		var md bytes.Buffer
		rep.Markdown(&md)
		t.Logf("report:\n%s", md.String())
		if len(rep.Faults) != 5 {
			t.Fatalf("%d faults, want 5", len(rep.Faults))
		}
		f1 := rep.Faults[0]
		if f1.Detect < 0 || f1.Detect > 10*time.Millisecond || f1.Recover < 0 || f1.Errors != 0 || f1.Restored != 3*time.Second {
			t.Errorf("F1: %+v", f1)
		}
		if f := rep.Faults[2]; f.What != "admin off" || f.DetectedBy != "active→disabled" || f.Restored != 6*time.Second {
			t.Errorf("F3: %+v", f)
		}
		if f := rep.Faults[3]; f.What != "hang" || f.MaxLatency < 900*time.Millisecond {
			t.Errorf("F4 (hang): %+v", f)
		}
		if f := rep.Faults[4]; f.DetectedBy != "apd-enter" || !f.ErrorsExpected || f.Recover < time.Second {
			t.Errorf("F5 (APD): %+v", f)
		}
		p := rep.Problems()
		if len(p) != 1 || !strings.Contains(p[0], "no array endpoint") {
			t.Errorf("problems: %q", p)
		}
		if len(ioErrs) > 0 {
			t.Errorf("%d I/O errors, first %v", len(ioErrs), ioErrs[0])
		}
		if got := l.dev.Status().PSP; got != nmp.PSPQueueLength {
			t.Errorf("policy step did not run after the failed array step: %s", got)
		}
		for i, o := range l.outer {
			if n := len(o.List()); n != 0 {
				t.Errorf("path %d has %d faults left after the run", i, n)
			}
		}
		var svg bytes.Buffer
		rep.SVG(&svg)
		if !strings.Contains(svg.String(), "<polyline") || !strings.Contains(svg.String(), ">F5<") {
			t.Errorf("svg lacks series or fault marks")
		}
	})
}

// TestRunPreflight: unknown names fail before anything is injected.
func TestRunPreflight(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		l := newLab(t, labOpts{})
		sc, err := Parse("bad.scn", "at 1s fail path vmhba9:C0:T0:L0 with path-failure\nat 2s policy nodev psp VMW_PSP_RR")
		if err != nil {
			t.Fatal(err)
		}
		_, err = Run(context.Background(), sc, RuntimeTarget{RT: l.rt}, Options{})
		if err == nil || !strings.Contains(err.Error(), `bad.scn:1: no path "vmhba9:C0:T0:L0"`) || !strings.Contains(err.Error(), `bad.scn:2: no device "nodev"`) {
			t.Fatalf("got %v", err)
		}
	})
}
