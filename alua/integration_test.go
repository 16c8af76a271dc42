package alua_test

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
	"testing/synctest"
	"time"

	"github.com/mpathfs/mpathfs/alua"
	"github.com/mpathfs/mpathfs/array"
	"github.com/mpathfs/mpathfs/backends"
	"github.com/mpathfs/mpathfs/mpath"
	"github.com/mpathfs/mpathfs/nmp"
)

const storeSize = 1 << 20

// lab is a device over every port of an array, each port opening the one
// store file on its own.
type lab struct {
	arr   *array.Array
	dev   *nmp.Device
	file  string
	model []byte // what the store should hold
	rng   *rand.Rand
}

func newStoreFile(t *testing.T) string {
	t.Helper()
	name := filepath.Join(t.TempDir(), "store")
	if err := os.WriteFile(name, make([]byte, storeSize), 0o600); err != nil {
		t.Fatal(err)
	}
	return name
}

// portPaths opens the store once per array port and makes one path each,
// named vmhba<port>:C0:T0:L0, with the identity the port reports.
func portPaths(t *testing.T, arr *array.Array, file string) []*mpath.Path {
	t.Helper()
	var paths []*mpath.Path
	for _, id := range arr.Ports() {
		f, err := backends.OpenFile(file, backends.FileOptions{Inline: true}) // inline: sysio's workers would outlive a synctest bubble
		if err != nil {
			t.Fatal(err)
		}
		b := arr.Port(id, f)
		inq, err := b.(backends.Inquirer).Inquiry(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		loc := mpath.Location{Adapter: int(id)}
		paths = append(paths, &mpath.Path{Name: loc.RuntimeName(), URI: "file://" + file, Location: loc,
			Transport: inq.Transport, Backend: b, Inquiry: inq})
	}
	return paths
}

func newLab(t *testing.T, cfg array.ArrayConfig, satp, psp string, pspOpts map[string]string) *lab {
	t.Helper()
	arr, err := array.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	file := newStoreFile(t)
	dev, err := nmp.NewDevice(mpath.DeviceConfig{
		Name: "lab0", SATP: satp, PSP: psp, PSPOptions: pspOpts,
		IOTimeout: time.Second, APDTimeout: 20 * time.Second, CheckInterval: 100 * time.Millisecond,
		ProbeTimeout: 100 * time.Millisecond,
	}, portPaths(t, arr, file), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { dev.Close() })
	return &lab{arr: arr, dev: dev, file: file, model: make([]byte, storeSize), rng: rand.New(rand.NewPCG(1, 2))}
}

// run does verified I/O for a while of (fake) time: each step writes a
// random 4 KiB block and reads it back; every error fails the test.
func (l *lab) run(t *testing.T, d time.Duration) {
	t.Helper()
	ctx := context.Background()
	end := time.Now().Add(d)
	buf := make([]byte, 4096)
	for time.Now().Before(end) {
		off := int64(l.rng.IntN(storeSize/4096)) * 4096
		w := make([]byte, 4096)
		for i := range w {
			w[i] = byte(l.rng.Uint32())
		}
		if _, err := l.dev.WriteAt(ctx, w, off); err != nil {
			t.Fatalf("write at %d: %v", off, err)
		}
		copy(l.model[off:], w)
		if _, err := l.dev.ReadAt(ctx, buf, off); err != nil {
			t.Fatalf("read at %d: %v", off, err)
		}
		if !bytes.Equal(buf, w) {
			t.Fatalf("read at %d returned other data than written", off)
		}
		time.Sleep(time.Millisecond)
	}
}

func (l *lab) verifyStore(t *testing.T) {
	t.Helper()
	if err := l.dev.Flush(context.Background()); err != nil {
		t.Fatalf("flush: %v", err)
	}
	got, err := os.ReadFile(l.file)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, l.model) {
		t.Fatal("the store does not hold what was written")
	}
}

// states prints every path as name=state/tpg:alua.
func states(d *nmp.Device) string {
	s := ""
	for _, p := range d.Status().Paths {
		tpg := "?"
		if p.TPG != nil {
			tpg = fmt.Sprint(*p.TPG)
		}
		s += fmt.Sprintf("%s=%s/%s:%s ", p.Name, p.State, tpg, p.ALUAState)
	}
	return s
}

func ioCount(d *nmp.Device) map[string]uint64 {
	out := map[string]uint64{}
	for _, p := range d.Paths() {
		out[p.Name] = p.Reads.Load() + p.Writes.Load()
	}
	return out
}

func TestIntegrationControllerFailover(t *testing.T) {
	for _, tc := range []struct {
		psp  string
		opts map[string]string
	}{
		{nmp.PSPMRU, nil},
		{nmp.PSPRR, map[string]string{"iops": "1"}},
	} {
		t.Run(tc.psp, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				cfg := array.DefaultLabArray()
				cfg.ANOLatency = time.Millisecond
				l := newLab(t, cfg, alua.SATPALUA, tc.psp, tc.opts)
				a1, a2, b1, b2 := "vmhba1:C0:T0:L0", "vmhba2:C0:T0:L0", "vmhba3:C0:T0:L0", "vmhba4:C0:T0:L0"

				l.run(t, 300*time.Millisecond)
				want := a1 + "=active/1:AO " + a2 + "=active/1:AO " + b1 + "=active/2:ANO " + b2 + "=active/2:ANO "
				if got := states(l.dev); got != want {
					t.Fatalf("before failure:\n got %s\nwant %s", got, want)
				}
				before := ioCount(l.dev)
				if before[b1]+before[b2] != 0 {
					t.Fatalf("I/O went to ANO paths while AO paths were usable: %v", before)
				}
				if tc.psp == nmp.PSPRR && (before[a1] == 0 || before[a2] == 0) {
					t.Fatalf("RR did not use both AO paths: %v", before)
				}

				if err := l.arr.FailController("A"); err != nil {
					t.Fatal(err)
				}
				l.run(t, 2*time.Second)
				want = a1 + "=dead/1:O " + a2 + "=dead/1:O " + b1 + "=active/2:AO " + b2 + "=active/2:AO "
				if got := states(l.dev); got != want {
					t.Fatalf("after controller A failed:\n got %s\nwant %s", got, want)
				}
				if got := l.dev.Status().SATPConfig; got != "{implicit_support=on; explicit_support=on; explicit_allow=on; alua_followover=on; action_OnRetryErrors=off; {TPG_id=1,TPG_state=O}{TPG_id=2,TPG_state=AO}}" {
					t.Fatalf("SATP config: %s", got)
				}

				if err := l.arr.RestoreController("A"); err != nil {
					t.Fatal(err)
				}
				l.run(t, 500*time.Millisecond)
				mid := ioCount(l.dev)
				l.run(t, time.Second)
				want = a1 + "=active/1:ANO " + a2 + "=active/1:ANO " + b1 + "=active/2:AO " + b2 + "=active/2:AO "
				if got := states(l.dev); got != want {
					t.Fatalf("after controller A returned:\n got %s\nwant %s", got, want)
				}
				after := ioCount(l.dev)
				if after[a1] != mid[a1] || after[a2] != mid[a2] {
					t.Fatalf("I/O went to the non-optimized paths of the restored controller: %v -> %v", mid, after)
				}
				l.verifyStore(t)
				if s := l.dev.Status(); s.APDEntries != 0 {
					t.Fatalf("the device went All-Paths-Down %d times", s.APDEntries)
				}
			})
		})
	}
}

// TestANOPenaltyLatency: with useANO=1, RR spreads I/O over AO and ANO
// paths, and the interconnect penalty shows in the ANO paths' latency.
func TestANOPenaltyLatency(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		cfg := array.DefaultLabArray()
		cfg.ANOLatency = 5 * time.Millisecond
		l := newLab(t, cfg, alua.SATPALUA, nmp.PSPRR, map[string]string{"iops": "1", "useANO": "1"})
		l.run(t, 200*time.Millisecond) // learn the groups
		for _, p := range l.dev.Paths() {
			p.LatencyNs.Store(0)
			p.Completions.Store(0)
		}
		l.run(t, time.Second)
		st := l.dev.Status()
		ao := (st.Paths[0].AvgLatencyU + st.Paths[1].AvgLatencyU) / 2
		ano := (st.Paths[2].AvgLatencyU + st.Paths[3].AvgLatencyU) / 2
		if st.Paths[2].ALUAState != "ANO" || st.Paths[0].ALUAState != "AO" {
			t.Fatalf("states: %s", states(l.dev))
		}
		if ano < 5000 || ano <= ao {
			t.Fatalf("ANO avg latency %.0fµs, AO %.0fµs: want ANO ≥ 5000µs and above AO", ano, ao)
		}
		for _, p := range st.Paths {
			if p.Reads+p.Writes == 0 {
				t.Fatalf("useANO=1: path %s carried no I/O", p.Name)
			}
		}
	})
}
