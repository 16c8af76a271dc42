package alua_test

import (
	"context"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/mpathfs/mpathfs/alua"
	"github.com/mpathfs/mpathfs/array"
	"github.com/mpathfs/mpathfs/ioerr"
	"github.com/mpathfs/mpathfs/mpath"
	"github.com/mpathfs/mpathfs/nmp"
	"github.com/mpathfs/mpathfs/scsi"
	"github.com/stretchr/testify/require"
)

func apArray() array.ArrayConfig {
	cfg := array.DefaultLabArray()
	cfg.Name = "ap"
	cfg.Mode = array.ModeAP
	cfg.Implicit, cfg.Explicit = false, false
	cfg.Transition = 0
	return cfg
}

func TestAPFailoverTrespass(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		l := newLab(t, apArray(), alua.SATPDefaultAP, "", nil)
		if got := l.dev.Status().PSP; got != nmp.PSPMRU {
			t.Fatalf("default PSP %s, want MRU", got)
		}
		l.run(t, 300*time.Millisecond)
		pathStates := func() string {
			var s []string
			for _, p := range l.dev.Status().Paths {
				s = append(s, p.State)
			}
			return strings.Join(s, " ")
		}
		if got := pathStates(); got != "active active standby standby" {
			t.Fatalf("before failure: %s", got)
		}
		if err := l.arr.FailController("A"); err != nil {
			t.Fatal(err)
		}
		l.run(t, 2*time.Second)
		if got := pathStates(); got != "dead dead active active" {
			t.Fatalf("after controller A failed: %s", got)
		}
		st := l.arr.Status()
		if st.Owner != "B" || st.Trespasses != 1 {
			t.Fatalf("array after failover: owner %s, %d trespasses; want B, 1", st.Owner, st.Trespasses)
		}
		if err := l.arr.RestoreController("A"); err != nil {
			t.Fatal(err)
		}
		l.run(t, time.Second)
		if got := pathStates(); got != "standby standby active active" {
			t.Fatalf("after controller A returned: %s", got)
		}
		if st := l.arr.Status(); st.Owner != "B" || st.Trespasses != 1 {
			t.Fatalf("the LU moved back: owner %s, %d trespasses", st.Owner, st.Trespasses)
		}
		l.verifyStore(t)
	})
}

// TestAPPingPongDamped: host 1 reaches only controller A, host 2 only B.
// Each, finding its paths passive, trespasses the LU to its controller:
// the LU ping-pongs. The guard bounds it.
func TestAPPingPongDamped(t *testing.T) {
	run := func(t *testing.T, opts map[string]string) (trespasses uint64) {
		synctest.Test(t, func(t *testing.T) {
			arr, err := array.New(apArray())
			if err != nil {
				t.Fatal(err)
			}
			file := newStoreFile(t)
			all := portPaths(t, arr, file)
			var wg sync.WaitGroup
			for h, paths := range [][]*mpath.Path{all[:2], all[2:]} {
				d, err := nmp.NewDevice(mpath.DeviceConfig{Name: "host" + string(rune('1'+h)), SATP: alua.SATPDefaultAP, SATPOptions: opts,
					IOTimeout: time.Second, APDTimeout: time.Second, CheckInterval: 100 * time.Millisecond, ProbeTimeout: 100 * time.Millisecond}, paths, nil)
				if err != nil {
					t.Fatal(err)
				}
				defer d.Close()
				wg.Add(1)
				go func() {
					defer wg.Done()
					buf := make([]byte, 4096)
					end := time.Now().Add(5 * time.Second)
					for time.Now().Before(end) {
						d.ReadAt(context.Background(), buf, 0)
						time.Sleep(5 * time.Millisecond)
					}
				}()
			}
			wg.Wait()
			trespasses = arr.Status().Trespasses
		})
		return trespasses
	}
	undamped := run(t, map[string]string{"trespass_interval_ms": "0", "trespass_limit": "0"})
	damped := run(t, map[string]string{"trespass_interval_ms": "500", "trespass_limit": "2", "trespass_window_ms": "60000"})
	t.Logf("trespasses in 5s: undamped %d, damped %d", undamped, damped)
	if damped > 4 {
		t.Fatalf("damped: %d trespasses in 5s, want at most 2 per host", damped)
	}
	if undamped < 4*damped || undamped < 20 {
		t.Fatalf("undamped: only %d trespasses (damped %d): the scenario does not ping-pong", undamped, damped)
	}
}

func TestTrespassGuard(t *testing.T) {
	t0 := time.Unix(1000, 0)
	g := alua.TrespassGuard{MinInterval: 10 * time.Second, Limit: 3, Window: time.Minute}
	steps := []struct {
		at   time.Duration
		ok   bool
		wait time.Duration
	}{
		{0, true, 0},
		{5 * time.Second, false, 5 * time.Second},
		{10 * time.Second, true, 0},
		{20 * time.Second, true, 0},
		{30 * time.Second, false, 30 * time.Second}, // 3 in the window: wait for the first to age out
		{60 * time.Second, true, 0},
		{65 * time.Second, false, 5 * time.Second},
	}
	for i, s := range steps {
		ok, wait, why := g.Check(t0.Add(s.at))
		if ok != s.ok || (s.wait != 0 && wait != s.wait) {
			t.Fatalf("step %d at +%v: ok=%v wait=%v (%s); want ok=%v wait=%v", i, s.at, ok, wait, why, s.ok, s.wait)
		}
		if ok {
			g.Record(t0.Add(s.at))
		}
	}
}

// TestClassifyAPOwnershipChanged: unit attention 2A/06 on an active/passive
// array is another host's (or the array's) trespass: a retry, a sweep of
// the paths and an ownership-changed event; the SATP counts them.
func TestClassifyAPOwnershipChanged(t *testing.T) {
	v := alua.ClassifyAP(senseErr(ioerr.SenseAccessChanged, ioerr.ClassRetryable), 0)
	require.Equal(t, alua.EventOwnershipChanged, v.Event)
	require.True(t, v.Retry)
	require.True(t, v.Update)
	require.Equal(t, mpath.StateUnknown, v.State, "a trespass elsewhere changes no path's state by itself")
	other := alua.ClassifyAP(senseErr(scsi.SensePowerOnReset, ioerr.ClassRetryable), 0)
	require.Empty(t, other.Event, "only 2A/06 is an ownership change")

	s, err := alua.NewAPSATP(nil)
	require.NoError(t, err)
	p := &mpath.Path{Name: "p"}
	for range 3 {
		s.Classify(p, mpath.OpWrite, senseErr(ioerr.SenseAccessChanged, ioerr.ClassRetryable))
	}
	require.Contains(t, s.(interface{ Config() string }).Config(), "ownership_changes_seen=3")
}

// TestCheckedReservationConflict: a probe that meets RESERVATION CONFLICT
// (another host's SCSI-2 reservation refuses TEST UNIT READY) reached a
// live path: no SATP declares it dead.
func TestCheckedReservationConflict(t *testing.T) {
	conflict := ioerr.NewError(ioerr.ClassConflict, "probe", ioerr.ErrConflict)
	st, _ := alua.CheckedAP(mpath.StateActive, conflict)
	require.Equal(t, mpath.StateActive, st)
	want, stale, reason := alua.CheckedALUA(mpath.StateActive, scsi.ActiveOptimized, true, conflict)
	require.Equal(t, mpath.StateActive, want)
	require.False(t, stale)
	require.Contains(t, reason, "reservation conflict")
	want, _, _ = alua.CheckedALUA(mpath.StateStandby, scsi.Standby, true, conflict)
	require.Equal(t, mpath.StateStandby, want)
}
