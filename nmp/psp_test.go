package nmp

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/mpathfs/mpathfs/backends/backendtest"
	"github.com/mpathfs/mpathfs/ioerr"
	"github.com/mpathfs/mpathfs/mpath"
)

// expectServed checks the paths that carried a run of I/Os.
func expectServed(t *testing.T, what string, got []string, want ...string) {
	t.Helper()
	if !slices.Equal(got, want) {
		t.Fatalf("%s: I/O went to %v, want %v", what, got, want)
	}
}

func repeat(s string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = s
	}
	return out
}

// TestPSP drives real devices over fake paths through each PSP's
// documented behaviour (seed 001: Fixed, MRU, Round Robin; dm-multipath's
// queue-length and service-time).
func TestPSP(t *testing.T) {
	tests := []struct {
		name  string
		paths int
		psp   string
		opts  map[string]string
		satp  string
		sopts map[string]string
		run   func(t *testing.T, r *rig)
	}{
		{
			name: "fixed/default preferred is the first path claimed", paths: 3, psp: PSPFixed,
			run: func(t *testing.T, r *rig) {
				expectServed(t, "healthy", r.ios(t, 5), repeat("p1", 5)...)
				if f := r.d.PSP().(*fixed); f.user {
					t.Fatalf("preferred path is user-set: %s", f.Config())
				}
			},
		},
		{
			name: "fixed/user preferred fails over and fails back after the checker", paths: 3, psp: PSPFixed,
			opts: map[string]string{"preferred": "p2"},
			run: func(t *testing.T, r *rig) {
				expectServed(t, "healthy", r.ios(t, 3), "p2", "p2", "p2")
				r.fake("p2").failClass(ioerr.ClassPathFailure)
				expectServed(t, "p2 failing", r.ios(t, 3), "p1", "p1", "p1")
				if st := r.state("p2"); st != mpath.StateDead {
					t.Fatalf("p2 is %s after a path failure, want dead", st)
				}
				if pref, user := r.d.PSP().(*fixed).Preferred(); pref.Name != "p2" || !user {
					t.Fatalf("user preferred path moved to %s (user=%v)", pref.Name, user)
				}
				r.fake("p2").recover()
				expectServed(t, "p2 recovered, not yet checked", r.ios(t, 2), "p1", "p1")
				r.d.CheckNow()
				expectServed(t, "p2 reinstated", r.ios(t, 3), "p2", "p2", "p2")
			},
		},
		{
			name: "fixed/default preferred dead is replaced, no failback", paths: 3, psp: PSPFixed,
			run: func(t *testing.T, r *rig) {
				expectServed(t, "healthy", r.ios(t, 2), "p1", "p1")
				r.fake("p1").failClass(ioerr.ClassPathFailure)
				expectServed(t, "p1 failing", r.ios(t, 2), "p2", "p2")
				if pref, user := r.d.PSP().(*fixed).Preferred(); pref.Name != "p2" || user {
					t.Fatalf("preferred path after p1 died: %s (user=%v), want a new default p2", pref.Name, user)
				}
				r.fake("p1").recover()
				r.d.CheckNow()
				if st := r.state("p1"); st != mpath.StateActive {
					t.Fatalf("p1 is %s after a passing probe", st)
				}
				expectServed(t, "p1 back", r.ios(t, 3), "p2", "p2", "p2")
				// The new default preferred path dies: the next one in claim order.
				r.fake("p2").failClass(ioerr.ClassPathFailure)
				expectServed(t, "p2 failing", r.ios(t, 2), "p1", "p1")
			},
		},
		{
			name: "fixed/user preferred switched off and on", paths: 2, psp: PSPFixed,
			opts: map[string]string{"preferred": "p1"},
			run: func(t *testing.T, r *rig) {
				if err := r.d.SetPathAdmin("p1", false); err != nil {
					t.Fatal(err)
				}
				expectServed(t, "p1 off", r.ios(t, 2), "p2", "p2")
				if err := r.d.SetPathAdmin("p1", true); err != nil {
					t.Fatal(err)
				}
				expectServed(t, "p1 on", r.ios(t, 2), "p1", "p1")
			},
		},
		{
			name: "mru/stays on the current path and never fails back", paths: 3, psp: PSPMRU,
			run: func(t *testing.T, r *rig) {
				expectServed(t, "healthy", r.ios(t, 3), "p1", "p1", "p1")
				r.fake("p1").failClass(ioerr.ClassPathFailure)
				expectServed(t, "p1 failing", r.ios(t, 2), "p2", "p2")
				r.fake("p1").recover()
				r.d.CheckNow()
				if st := r.state("p1"); st != mpath.StateActive {
					t.Fatalf("p1 is %s after a passing probe", st)
				}
				expectServed(t, "p1 back", r.ios(t, 4), repeat("p2", 4)...)
			},
		},
		{
			name: "mru/moves to the highest-ranked path", paths: 4, psp: PSPMRU,
			run: func(t *testing.T, r *rig) {
				if err := r.d.SetPathRank("p3", 10); err != nil {
					t.Fatal(err)
				}
				if err := r.d.SetPathRank("p4", 5); err != nil {
					t.Fatal(err)
				}
				// The first I/O picks the highest rank: there is no current path yet.
				expectServed(t, "first", r.ios(t, 2), "p3", "p3")
				// A rank change alone does not move MRU.
				if err := r.d.SetPathRank("p2", 20); err != nil {
					t.Fatal(err)
				}
				expectServed(t, "rank change", r.ios(t, 2), "p3", "p3")
				r.fake("p3").failClass(ioerr.ClassPathFailure)
				expectServed(t, "p3 failing", r.ios(t, 2), "p2", "p2")
				r.fake("p2").failClass(ioerr.ClassPathFailure)
				expectServed(t, "p2 failing", r.ios(t, 2), "p4", "p4")
				if err := r.d.SetPathRank("x9", 1); err == nil || !strings.Contains(err.Error(), `"x9"`) {
					t.Fatalf("SetPathRank of an unknown path: %v", err)
				}
			},
		},
		{
			name: "rr/every N I/Os", paths: 3, psp: PSPRR, opts: map[string]string{"iops": "2"},
			run: func(t *testing.T, r *rig) {
				expectServed(t, "healthy", r.ios(t, 8), "p1", "p1", "p2", "p2", "p3", "p3", "p1", "p1")
			},
		},
		{
			name: "rr/default switches every 1000 I/Os", paths: 2, psp: PSPRR,
			run: func(t *testing.T, r *rig) {
				got := r.ios(t, 1001)
				expectServed(t, "first 1000", got[:1000], repeat("p1", 1000)...)
				expectServed(t, "1001st", got[1000:], "p2")
			},
		},
		{
			name: "rr/every N bytes", paths: 2, psp: PSPRR, opts: map[string]string{"type": "bytes", "bytes": "8192"},
			run: func(t *testing.T, r *rig) {
				expectServed(t, "4k I/Os, 8k limit", r.ios(t, 6), "p1", "p1", "p2", "p2", "p1", "p1")
			},
		},
		{
			name: "rr/skips dead, disabled and standby paths", paths: 4, psp: PSPRR, opts: map[string]string{"iops": "1"},
			run: func(t *testing.T, r *rig) {
				expectServed(t, "healthy", r.ios(t, 4), "p1", "p2", "p3", "p4")
				r.fake("p2").failClass(ioerr.ClassPathFailure)
				r.fake("p3").failClass(ioerr.ClassNotReady)
				if err := r.d.SetPathAdmin("p4", false); err != nil {
					t.Fatal(err)
				}
				got := r.ios(t, 6)
				expectServed(t, "only p1 usable", got, repeat("p1", 6)...)
				if got := r.states(); got != "p1=active p2=dead p3=standby p4=disabled" {
					t.Fatalf("states: %s", got)
				}
				r.fake("p2").recover()
				r.d.CheckNow()
				// p1 had the last turn: the next one is p2's.
				expectServed(t, "p2 back", r.ios(t, 4), "p2", "p1", "p2", "p1")
			},
		},
		{
			// ESXi moves from lastPathIndex to the next active path: the
			// turn of a path that dies goes to the path after it (p3), not
			// wherever count/limit mod 3 falls (p4, then p1 again).
			name: "rr/a dead path's turn goes to the next path", paths: 4, psp: PSPRR, opts: map[string]string{"iops": "2"},
			run: func(t *testing.T, r *rig) {
				expectServed(t, "healthy", r.ios(t, 10), "p1", "p1", "p2", "p2", "p3", "p3", "p4", "p4", "p1", "p1")
				r.fake("p2").failClass(ioerr.ClassPathFailure)
				expectServed(t, "p2 dies in its turn", r.ios(t, 7), "p3", "p3", "p4", "p4", "p1", "p1", "p3")
			},
		},
		{
			name: "rr/a returning path joins after the path in turn", paths: 4, psp: PSPRR, opts: map[string]string{"iops": "2"},
			run: func(t *testing.T, r *rig) {
				if err := r.d.SetPathAdmin("p2", false); err != nil {
					t.Fatal(err)
				}
				expectServed(t, "p2 off", r.ios(t, 7), "p1", "p1", "p3", "p3", "p4", "p4", "p1")
				if err := r.d.SetPathAdmin("p2", true); err != nil {
					t.Fatal(err)
				}
				expectServed(t, "p2 back", r.ios(t, 7), "p1", "p2", "p2", "p3", "p3", "p4", "p4")
			},
		},
		{
			name: "rr/active-optimized paths only unless useANO", paths: 4, psp: PSPRR, opts: map[string]string{"iops": "1"},
			satp: satpTestGrouped, sopts: map[string]string{"ano": "p3,p4"},
			run: func(t *testing.T, r *rig) {
				expectServed(t, "AO only", r.ios(t, 4), "p1", "p2", "p1", "p2")
				if err := r.d.SetPolicy(PSPRR, map[string]string{"iops": "1", "useANO": "1"}); err != nil {
					t.Fatal(err)
				}
				expectServed(t, "useANO=1", r.ios(t, 4), "p1", "p2", "p3", "p4")
				if err := r.d.SetPolicy(PSPRR, map[string]string{"iops": "1"}); err != nil {
					t.Fatal(err)
				}
				// With every AO path dead the ANO group is the best group.
				r.fake("p1").failClass(ioerr.ClassPathFailure)
				r.fake("p2").failClass(ioerr.ClassPathFailure)
				got := r.ios(t, 4)
				expectServed(t, "AO dead", got[1:], "p4", "p3", "p4")
			},
		},
		{
			name: "fixed/prefers the best group", paths: 3, psp: PSPFixed, opts: map[string]string{"preferred": "p3"},
			satp: satpTestGrouped, sopts: map[string]string{"ano": "p3"},
			run: func(t *testing.T, r *rig) {
				// A preferred path that is not optimized is not used while an optimized one is.
				expectServed(t, "preferred ANO", r.ios(t, 2), "p1", "p1")
			},
		},
		{
			name: "queue-length/fewest I/Os in flight", paths: 2, psp: PSPQueueLength,
			run: func(t *testing.T, r *rig) {
				// Ties spread: both paths get I/O.
				got := r.ios(t, 10)
				if !slices.Contains(got, "p1") || !slices.Contains(got, "p2") {
					t.Fatalf("idle paths, ties: I/O went to %v, want both", got)
				}
				// Hold reads on both paths: four reads spread two and two.
				r.fake("p1").hangOps("read")
				r.fake("p2").hangOps("read")
				var wg sync.WaitGroup
				for i := range 4 {
					wg.Add(1)
					go func() {
						defer wg.Done()
						buf := make([]byte, 4096)
						if _, err := r.d.ReadAt(context.Background(), buf, 0); err != nil {
							t.Errorf("held read: %v", err)
						}
					}()
					waitFor(t, "the read to hang", func() bool { return r.fake("p1").hung.Load()+r.fake("p2").hung.Load() == int64(i+1) })
				}
				if n1, n2 := r.path("p1").Inflight.Load(), r.path("p2").Inflight.Load(); n1 != 2 || n2 != 2 {
					t.Fatalf("in flight p1=%d p2=%d, want 2 and 2", n1, n2)
				}
				// Release p2's reads: p1 still holds two, so new I/O goes to p2.
				r.fake("p2").recover()
				waitFor(t, "p2's reads to finish", func() bool { return r.path("p2").Inflight.Load() == 0 })
				r.records()
				expectServed(t, "p1 loaded", r.ios(t, 6), repeat("p2", 6)...)
				r.fake("p1").recover()
				wg.Wait()
				if n := r.path("p1").Inflight.Load(); n != 0 {
					t.Fatalf("p1 has %d I/Os in flight after release", n)
				}
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := testConfig(tc.psp, tc.opts)
			cfg.SATP, cfg.SATPOptions = tc.satp, tc.sopts
			r := newRig(t, tc.paths, cfg)
			tc.run(t, r)
		})
	}
}

// waitFor polls cond for up to 5 s of real time.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// TestPSPServiceTime checks that service-time sends most I/O to the faster
// path once it has measured both (fake time: the slow path's latency is a
// timer in the bubble).
func TestPSPServiceTime(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newRig(t, 2, testConfig(PSPServiceTime, nil))
		r.fake("p2").slow(2 * time.Millisecond)
		// Warm-up: both paths measured.
		for range 4 {
			r.write(t, 0)
		}
		if r.path("p2").Completions.Load() == 0 || r.path("p1").Completions.Load() == 0 {
			t.Fatalf("warm-up did not measure both paths: p1=%d p2=%d", r.path("p1").Completions.Load(), r.path("p2").Completions.Load())
		}
		count := map[string]int{}
		for _, s := range r.ios(t, 100) {
			count[s]++
		}
		if count["p1"] < 90 {
			t.Fatalf("service-time after warm-up: %v, want most I/O on the fast p1", count)
		}
		// The other way round: p1 slows down, p2 becomes fast.
		r.fake("p2").recover()
		r.fake("p1").slow(5 * time.Millisecond)
		for range 20 {
			r.write(t, 0)
		}
		count = map[string]int{}
		for _, s := range r.ios(t, 100) {
			count[s]++
		}
		if count["p2"] < 90 {
			t.Fatalf("service-time after p1 slowed: %v, want most I/O on p2", count)
		}
		r.d.Close()
	})
}

// TestPSPOptionErrors checks that unknown plugins and bad options are
// refused with messages that say what is wrong and what is known.
func TestPSPOptionErrors(t *testing.T) {
	tests := []struct {
		satp string
		psp  string
		opts map[string]string
		want []string
	}{
		{psp: "VMW_PSP_NOPE", want: []string{`unknown PSP "VMW_PSP_NOPE"`, PSPFixed, PSPMRU, PSPRR, PSPQueueLength}},
		{satp: "VMW_SATP_NOPE", want: []string{`unknown SATP "VMW_SATP_NOPE"`, SATPDefaultAA, SATPLocal}},
		{psp: PSPRR, opts: map[string]string{"iops": "0"}, want: []string{"VMW_PSP_RR", `iops="0"`, "whole number ≥ 1"}},
		{psp: PSPRR, opts: map[string]string{"iops": "ten"}, want: []string{`iops="ten"`, "whole number"}},
		{psp: PSPRR, opts: map[string]string{"iops": "-3"}, want: []string{`iops="-3"`}},
		{psp: PSPRR, opts: map[string]string{"bytes": "1.5"}, want: []string{`bytes="1.5"`}},
		{psp: PSPRR, opts: map[string]string{"type": "fastest"}, want: []string{`type="fastest"`, "want iops, bytes or latency"}},
		{psp: PSPRR, opts: map[string]string{"type": "latency", "latencyEvalTime": "soon"}, want: []string{`latencyEvalTime="soon"`, "positive duration"}},
		{psp: PSPRR, opts: map[string]string{"type": "latency", "samplingCycles": "0"}, want: []string{`samplingCycles="0"`, "≥ 1"}},
		{psp: PSPRR, opts: map[string]string{"useANO": "maybe"}, want: []string{`useANO="maybe"`, "want on or off"}},
		{psp: PSPRR, opts: map[string]string{"iosp": "3"}, want: []string{"VMW_PSP_RR", "unknown option(s) iosp", "known: bytes, iops, type, useANO"}},
		{psp: PSPFixed, opts: map[string]string{"preferred": "p9"}, want: []string{`preferred path "p9" is not a path of this device`}},
		{psp: PSPFixed, opts: map[string]string{"iops": "1"}, want: []string{"VMW_PSP_FIXED", "unknown option(s) iops", "known: preferred"}},
		{psp: PSPMRU, opts: map[string]string{"preferred": "p1"}, want: []string{"VMW_PSP_MRU", "unknown option(s) preferred"}},
		{psp: PSPQueueLength, opts: map[string]string{"useANO": "2"}, want: []string{"queue-length", `useANO="2"`}},
		{psp: PSPServiceTime, opts: map[string]string{"x": "1", "a": "2"}, want: []string{"service-time", "unknown option(s) a, x"}},
		{satp: SATPDefaultAA, psp: PSPFixed, want: nil},
	}
	for _, tc := range tests {
		name := fmt.Sprintf("%s/%s/%v", tc.satp, tc.psp, tc.opts)
		t.Run(name, func(t *testing.T) {
			// NewDevice refuses the configuration.
			s := backendtest.NewMem(4096)
			paths := []*mpath.Path{{Name: "p1", Backend: newFakePath("p1", s)}, {Name: "p2", Backend: newFakePath("p2", s)}}
			cfg := mpath.DeviceConfig{Name: "dev0", SATP: tc.satp, PSP: tc.psp, PSPOptions: tc.opts, SATPOptions: nil}
			d, err := NewDevice(cfg, paths, nil)
			if tc.want == nil {
				if err != nil {
					t.Fatalf("NewDevice: %v", err)
				}
				d.Close()
				return
			}
			if err == nil {
				d.Close()
				t.Fatalf("NewDevice accepted %+v", cfg)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("NewDevice error %q does not say %q", err, w)
				}
			}
			if !strings.Contains(err.Error(), "dev0") {
				t.Errorf("NewDevice error %q does not name the device", err)
			}
			if tc.satp != "" {
				return
			}
			// SetPolicy refuses it too, and the device keeps its policy.
			r := newRig(t, 2, testConfig(PSPMRU, nil))
			before := r.d.PSP()
			err = r.d.SetPolicy(tc.psp, tc.opts)
			if err == nil {
				t.Fatalf("SetPolicy accepted %s %v", tc.psp, tc.opts)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("SetPolicy error %q does not say %q", err, w)
				}
			}
			if r.d.PSP() != before {
				t.Errorf("a refused SetPolicy changed the PSP to %s", r.d.PSP().Name())
			}
		})
	}
	t.Run("bad SATP option", func(t *testing.T) {
		s := backendtest.NewMem(4096)
		paths := []*mpath.Path{{Name: "p1", Backend: newFakePath("p1", s)}}
		_, err := NewDevice(mpath.DeviceConfig{Name: "dev0", SATPOptions: map[string]string{"retry_backoff_ms": "soon", "nope": "1"}}, paths, nil)
		if err == nil || !strings.Contains(err.Error(), `retry_backoff_ms="soon"`) {
			t.Fatalf("bad SATP option: %v", err)
		}
	})
}

// TestPSPOptionsNormalised checks Options and Config, what status prints.
func TestPSPOptionsNormalised(t *testing.T) {
	tests := []struct {
		psp        string
		opts       map[string]string
		wantOpts   map[string]string
		wantConfig string
	}{
		{PSPRR, nil, map[string]string{"type": "iops", "iops": "1000"}, "{policy=iops,iops=1000,useANO=0; lastPathIndex=0}"},
		{PSPRR, map[string]string{"type": "bytes", "bytes": "4096", "useANO": "true"}, map[string]string{"type": "bytes", "bytes": "4096", "useANO": "1"}, "{policy=bytes,bytes=4096,useANO=1; lastPathIndex=0}"},
		{PSPFixed, nil, map[string]string{}, "{preferred=p1 (default); current=none}"},
		{PSPFixed, map[string]string{"preferred": "p2"}, map[string]string{"preferred": "p2"}, "{preferred=p2 (user); current=none}"},
		{PSPMRU, nil, map[string]string{}, "{current=none}"},
		{PSPQueueLength, map[string]string{"useANO": "1"}, map[string]string{"useANO": "1"}, "{policy=queue-length,useANO=1}"},
		{PSPServiceTime, nil, map[string]string{}, "{policy=service-time,useANO=0}"},
	}
	for _, tc := range tests {
		r := newRig(t, 2, testConfig(tc.psp, tc.opts))
		p := r.d.PSP()
		if !maps.Equal(p.Options(), tc.wantOpts) {
			t.Errorf("%s %v: Options() = %v, want %v", tc.psp, tc.opts, p.Options(), tc.wantOpts)
		}
		if got := p.Config(); got != tc.wantConfig {
			t.Errorf("%s %v: Config() = %q, want %q", tc.psp, tc.opts, got, tc.wantConfig)
		}
		if st := r.d.Status(); st.PSP != tc.psp || st.PSPConfig != tc.wantConfig {
			t.Errorf("%s: status says %s %s", tc.psp, st.PSP, st.PSPConfig)
		}
	}
	names := []string{}
	for _, i := range PSPs() {
		names = append(names, i.Name)
	}
	for _, want := range []string{PSPFixed, PSPMRU, PSPRR, PSPQueueLength, PSPServiceTime} {
		if !slices.Contains(names, want) {
			t.Errorf("PSPs() = %v, missing %s", names, want)
		}
	}
	if !slices.IsSorted(names) {
		t.Errorf("PSPs() not sorted: %v", names)
	}
}

// TestSetPolicyUnderIO changes the PSP and its options in a loop while
// eight goroutines do I/O: no I/O may fail and every write must land.
func TestSetPolicyUnderIO(t *testing.T) {
	r := newRig(t, 3, testConfig(PSPFixed, nil))
	policies := []struct {
		name string
		opts map[string]string
	}{
		{PSPRR, map[string]string{"iops": "1"}},
		{PSPFixed, map[string]string{"preferred": "p3"}},
		{PSPMRU, nil},
		{PSPRR, map[string]string{"type": "bytes", "bytes": "4096"}},
		{PSPQueueLength, nil},
		{PSPServiceTime, nil},
		{PSPFixed, nil},
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var ios [8]int
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx := context.Background()
			buf := make([]byte, 4096)
			got := make([]byte, 4096)
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				off := int64(g*16+i%16) * 4096
				for j := range buf {
					buf[j] = byte(g + i + j)
				}
				if _, err := r.d.WriteAt(ctx, buf, off); err != nil {
					t.Errorf("writer %d: %v", g, err)
					return
				}
				if _, err := r.d.ReadAt(ctx, got, off); err != nil {
					t.Errorf("reader %d: %v", g, err)
					return
				}
				if string(got) != string(buf) {
					t.Errorf("goroutine %d: read back other data at %d", g, off)
					return
				}
				ios[g]++
			}
		}()
	}
	for i := range 400 {
		p := policies[i%len(policies)]
		if err := r.d.SetPolicy(p.name, p.opts); err != nil {
			t.Fatalf("SetPolicy %s %v: %v", p.name, p.opts, err)
		}
		if i%50 == 0 {
			time.Sleep(time.Millisecond)
		}
	}
	time.Sleep(20 * time.Millisecond)
	close(stop)
	wg.Wait()
	total := 0
	for _, n := range ios {
		total += n
	}
	if total == 0 {
		t.Fatal("no I/O ran")
	}
	if got, want := r.d.PSP().Name(), policies[399%len(policies)].name; got != want {
		t.Fatalf("final policy %s, want %s", got, want)
	}
	// Every policy change was announced.
	n := 0
	for _, ev := range r.drainEvents() {
		if ev.Kind == "policy" {
			n++
		}
	}
	if n != 400 {
		t.Errorf("%d policy events, want 400", n)
	}
	for _, p := range r.d.Paths() {
		if p.State() != mpath.StateActive {
			t.Errorf("%s is %s after policy changes", p.Name, p.State())
		}
	}
}

// TestRRRotationAcrossViewChanges drives VMW_PSP_RR's Select and ViewChanged
// directly: when the candidates change, the rotation goes on from the path
// in turn (it keeps its turn if it is still a candidate; otherwise the next
// surviving path after it starts a full turn).
func TestRRRotationAcrossViewChanges(t *testing.T) {
	type step struct {
		view  string // non-empty: the candidates change to these (- for none)
		stale int    // I/Os routed by the previous view after the change
		n     int    // bytes per I/O (0: 4096)
		want  string // paths that serve the next I/Os, in order
	}
	tests := []struct {
		name  string
		opts  map[string]string
		steps []step
	}{
		{name: "no change", opts: map[string]string{"iops": "2"}, steps: []step{
			{view: "p1 p2 p3", want: "p1 p1 p2 p2 p3 p3 p1"},
		}},
		{name: "the path in turn dies mid-turn", opts: map[string]string{"iops": "2"}, steps: []step{
			{view: "p1 p2 p3 p4", want: "p1 p1 p2 p2 p3 p3 p4 p4 p1 p1 p2"},
			{view: "p1 p3 p4", want: "p3 p3 p4 p4 p1 p1 p3"},
		}},
		{name: "the path in turn dies at a turn boundary", opts: map[string]string{"iops": "2"}, steps: []step{
			{view: "p1 p2 p3 p4", want: "p1 p1"},
			{view: "p1 p3 p4", want: "p3 p3 p4 p4 p1 p1"},
		}},
		{name: "a path that had its turn dies: the next one keeps its place", opts: map[string]string{"iops": "2"}, steps: []step{
			{view: "p1 p2 p3 p4", want: "p1 p1 p2 p2"},
			{view: "p1 p3 p4", want: "p3 p3 p4 p4 p1 p1 p3"},
		}},
		{name: "another path dies: the path in turn finishes its turn", opts: map[string]string{"iops": "2"}, steps: []step{
			{view: "p1 p2 p3 p4", want: "p1 p1 p2"},
			{view: "p1 p2 p3", want: "p2 p3 p3 p1 p1 p2"},
		}},
		{name: "the path in turn and the next die together", opts: map[string]string{"iops": "2"}, steps: []step{
			{view: "p1 p2 p3 p4", want: "p1 p1 p2"},
			{view: "p1 p4", want: "p4 p4 p1 p1 p4"},
		}},
		{name: "the last path dies: the rotation wraps", opts: map[string]string{"iops": "2"}, steps: []step{
			{view: "p1 p2 p3 p4", want: "p1 p1 p2 p2 p3 p3 p4"},
			{view: "p1 p2 p3", want: "p1 p1 p2 p2 p3 p3 p1"},
		}},
		{name: "a path returns behind the path in turn", opts: map[string]string{"iops": "2"}, steps: []step{
			{view: "p1 p3 p4", want: "p1 p1 p3"},
			{view: "p1 p2 p3 p4", want: "p3 p4 p4 p1 p1 p2 p2 p3"},
		}},
		{name: "a path returns ahead of the path in turn", opts: map[string]string{"iops": "2"}, steps: []step{
			{view: "p1 p3 p4", want: "p1 p1 p3 p3 p4"},
			{view: "p1 p2 p3 p4", want: "p4 p1 p1 p2 p2 p3"},
		}},
		{name: "several changes in a row", opts: map[string]string{"iops": "1"}, steps: []step{
			{view: "p1 p2 p3 p4 p5", want: "p1 p2"},
			{view: "p1 p2 p4 p5", want: "p4"},
			{view: "p1 p2 p5", want: "p5 p1"},
			{view: "p1 p2 p3 p5", want: "p2 p3 p5 p1 p2"},
		}},
		{name: "all paths down, then back", opts: map[string]string{"iops": "2"}, steps: []step{
			{view: "p1 p2 p3", want: "p1 p1 p2"},
			{view: "-", want: "- -"},
			{view: "p1 p2 p3", want: "p2 p3 p3 p1"},
		}},
		{name: "all paths down, others back", opts: map[string]string{"iops": "2"}, steps: []step{
			{view: "p1 p2 p3 p4", want: "p1 p1 p2"},
			{view: "-", want: "-"},
			{view: "p1 p3 p4", want: "p3 p3 p4 p4 p1"},
		}},
		{name: "the only path", opts: map[string]string{"iops": "3"}, steps: []step{
			{view: "p1 p2", want: "p1 p1 p1 p2"},
			{view: "p1", want: "p1 p1 p1"},
			{view: "p1 p2", want: "p2 p2 p2 p1"},
		}},
		// An I/O still routed by the view being replaced follows that
		// view's rotation (it draws from the same count, so p3's fresh
		// turn is one I/O short).
		{name: "stale view keeps its own rotation", opts: map[string]string{"iops": "2"}, steps: []step{
			{view: "p1 p2 p3 p4", want: "p1 p1 p2"},
			{view: "p1 p3 p4", stale: 1, want: "p2 p3 p4 p4 p1"},
		}},
		{name: "bytes: the dead path's turn goes to the next path", opts: map[string]string{"type": "bytes", "bytes": "8192"}, steps: []step{
			{view: "p1 p2 p3", want: "p1 p1 p2"},
			{view: "p1 p3", want: "p3 p3 p1 p1"},
		}},
		{name: "bytes: the path in turn finishes its turn", opts: map[string]string{"type": "bytes", "bytes": "8192"}, steps: []step{
			{view: "p1 p2 p3", n: 2048, want: "p1 p1 p1 p1 p2"},
			{view: "p2 p3", n: 2048, want: "p2 p2 p2 p3 p3 p3 p3 p2"},
		}},
	}
	paths := map[string]*mpath.Path{}
	for _, n := range []string{"p1", "p2", "p3", "p4", "p5"} {
		paths[n] = &mpath.Path{Name: n}
	}
	view := func(spec string) *View {
		v := &View{changed: make(chan struct{})}
		if spec != "-" {
			for _, n := range strings.Fields(spec) {
				v.Usable = append(v.Usable, paths[n])
			}
			v.All = v.Usable
			v.Groups = [][]*mpath.Path{v.Usable}
		}
		return v
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			psp, err := NewPSP(PSPRR, tt.opts, nil)
			if err != nil {
				t.Fatal(err)
			}
			var cur *View
			for i, st := range tt.steps {
				prev := cur
				cur = view(st.view)
				psp.ViewChanged(cur)
				n := st.n
				if n == 0 {
					n = 4096
				}
				var got []string
				for j := range len(strings.Fields(st.want)) {
					v := cur
					if j < st.stale {
						v = prev
					}
					p, _ := psp.Select(v, mpath.OpWrite, n)
					if p == nil {
						got = append(got, "-")
					} else {
						got = append(got, p.Name)
					}
				}
				if g := strings.Join(got, " "); g != st.want {
					t.Fatalf("step %d (candidates %s): I/O went to %s, want %s", i+1, st.view, g, st.want)
				}
			}
		})
	}
}

// TestRRConcurrentViewChanges runs Select on many goroutines while the
// candidates keep changing: every I/O must go to a candidate of the view it
// was routed by.
func TestRRConcurrentViewChanges(t *testing.T) {
	psp, err := NewPSP(PSPRR, map[string]string{"iops": "3"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	var all []*mpath.Path
	for i := range 5 {
		all = append(all, &mpath.Path{Name: fmt.Sprintf("p%d", i+1)})
	}
	var views []*View
	for mask := 1; mask < 1<<len(all); mask++ {
		v := &View{All: all, changed: make(chan struct{})}
		for i, p := range all {
			if mask&(1<<i) != 0 {
				v.Usable = append(v.Usable, p)
			}
		}
		v.Groups = [][]*mpath.Path{v.Usable}
		views = append(views, v)
	}
	var cur atomic.Pointer[View]
	cur.Store(views[0])
	psp.ViewChanged(views[0])
	stop := make(chan struct{})
	var wg sync.WaitGroup
	errs := make(chan string, 4)
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				v := cur.Load()
				p, _ := psp.Select(v, mpath.OpRead, 4096)
				if !slices.Contains(v.Usable, p) {
					select {
					case errs <- fmt.Sprintf("Select returned %v, not a candidate of %v", p, v.Usable):
					default:
					}
					return
				}
			}
		}()
	}
	for i := range 2000 {
		v := views[(i*7)%len(views)]
		psp.ViewChanged(v) // as the device does: before publishing the view
		cur.Store(v)
	}
	close(stop)
	wg.Wait()
	select {
	case e := <-errs:
		t.Fatal(e)
	default:
	}
}
