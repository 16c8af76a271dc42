package scenario

import (
	"bytes"
	"errors"
	"strings"
	"testing"
	"time"
)

const examples = `# every example of the package documentation
seed 42
at 2s fail path vmhba1:C0:T0:L0 with path-failure for 3s
at 2s fail path P with retryable probability 10% op read,write
every 500ms flap path P for 10s
at 5s hang path P until 8s
at 10s all-paths-down for 2s
at 10s all-paths-down device lab for 2s
at 3s slow path P x5 for 4s
at 4s fail path P with path-failure op read,write   # gray: the probe passes
at 6s fail path P with device-error range 0:1M
at 7s path P off
at 9s path P on
at 12s array A controller B fail
at 12.5s array A controller B restore
at 13s array A transfer-ownership B
at 14s array A tpg 1 state standby
at 1s policy lab psp VMW_PSP_RR iops=1
at 1s policy psp VMW_PSP_MRU
at 15s fail path P with retryable --count 3 --sense 02/04/0a
at 16s clear path P
at 17s land-late path P 2s op write silent for 1s
at 18s corrupt path P misdirect misdirect-by -8k range 0:64k count 1
end 20s
`

func TestParseExamples(t *testing.T) {
	sc, err := Parse("ex.scn", examples)
	if err != nil {
		t.Fatal(err)
	}
	if sc.Seed != 42 || sc.End != 20*time.Second {
		t.Fatalf("seed %d end %v", sc.Seed, sc.End)
	}
	if len(sc.Stmts) != 21 {
		t.Fatalf("%d statements, want 21", len(sc.Stmts))
	}
	s := sc.Stmts[0]
	if s.Action != "fail" || s.Path != "vmhba1:C0:T0:L0" || s.Spec.Error != "path-failure" || s.Lifetime != 3*time.Second || s.Spec.Duration != 3*time.Second {
		t.Errorf("first: %+v", s)
	}
	if s := sc.Stmts[1]; s.Spec.Probability != 0.1 || strings.Join(s.Spec.Ops, ",") != "read,write" || s.Lifetime != 0 {
		t.Errorf("probability: %+v", s.Spec)
	}
	if s := sc.Stmts[3]; !s.Spec.Hang || s.Lifetime != 3*time.Second {
		t.Errorf("hang until: %+v", s)
	}
	if s := sc.Stmts[5]; s.Device != "lab" || s.Action != "all-paths-down" {
		t.Errorf("apd: %+v", s)
	}
	if s := sc.Stmts[6]; s.Spec.SlowFactor != 5 {
		t.Errorf("slow: %+v", s.Spec)
	}
	if s := sc.Stmts[8]; s.Spec.Offset != 0 || s.Spec.Length != 1<<20 || s.Spec.Error != "device-error" {
		t.Errorf("range: %+v", s.Spec)
	}
	if s := sc.Stmts[11]; s.Array.Action != "controller-fail" || s.Array.Array != "A" || s.Array.Controller != "B" {
		t.Errorf("array: %+v", s.Array)
	}
	if s := sc.Stmts[14]; s.Array.Action != "tpg-state" || *s.Array.TPG != 1 || s.Array.State != "standby" {
		t.Errorf("tpg: %+v", s.Array)
	}
	if s := sc.Stmts[15]; s.Device != "lab" || s.PSP != "VMW_PSP_RR" || s.Options["iops"] != "1" {
		t.Errorf("policy: %+v", s)
	}
	if s := sc.Stmts[17]; s.Spec.Count != 3 || s.Spec.Sense != "02/04/0a" {
		t.Errorf("dashed flags: %+v", s.Spec)
	}
	if s := sc.Stmts[19]; s.Action != "land-late" || s.Spec.LandLate != 2*time.Second || !s.Spec.Silent || s.Lifetime != time.Second || strings.Join(s.Spec.Ops, ",") != "write" {
		t.Errorf("land-late: %+v", s)
	}
	if s := sc.Stmts[20]; s.Action != "corrupt" || s.Spec.Corrupt != "misdirect" || s.Spec.MisdirectBy != -8192 || s.Spec.Length != 64<<10 || s.Spec.Count != 1 {
		t.Errorf("corrupt: %+v", s)
	}
}

func TestParseErrors(t *testing.T) {
	for _, tc := range []struct{ src, want string }{
		{"seed 1\n\nat 2s fial path P", `s.scn:3:7: unknown action "fial" (want fail, hang, land-late, corrupt, slow, flap, path, all-paths-down, array, policy, exec)`},
		{"at 1s corrupt path P bitflip op flush", `--corrupt bitflip with --op flush`},
		{"at 1s corrupt path P scramble", `--corrupt "scramble"`},
		{"at 1s land-late path P 0 op write", `s.scn:1:24: a land-late delay of 0 lands nothing late`},
		{"at 1s land-late path P 2s op read", `s.scn:1:27: --land-late never lands anything with --op read`},
		{"at 1s land-late path P 2s silent error retryable", `--land-late and --error exclude each other`},
		{"at 2x fail path P with path-failure", `s.scn:1:4: time "2x": want a duration`},
		{"at 2s fail path P with broken", `s.scn:1:24: unknown error class "broken"`},
		{"at 2s fail path P", `s.scn:1:18: missing "with" at the end of the line`},
		{"at 2s fail path P with path-failure op reed", `s.scn:1:37: --op "reed": want --op LIST`},
		{"at 2s fail path P with path-failure wobble 3", `s.scn:1:37: unknown fault option "wobble"`},
		{"at 5s hang path P until 4s", `s.scn:1:25: until 4s is not after the statement's time 5s`},
		{"at 1s slow path P 5", `s.scn:1:19: slow factor "5"`},
		{"at 1s path P sideways", `s.scn:1:14: path state "sideways": want on or off`},
		{"at 1s policy lab psp VMW_PSP_XX", `s.scn:1:22: unknown PSP "VMW_PSP_XX"`},
		{"at 1s policy lab psp VMW_PSP_RR iops", `s.scn:1:33: PSP option "iops": want NAME=VALUE`},
		{"at 1s array A controller B explode", `s.scn:1:28: controller action "explode": want fail or restore`},
		{"every 1s fail path P with path-failure for 3s", `s.scn:1:10: every repeats flap`},
		{"wait 3s", `s.scn:1:1: unknown statement "wait"`},
		{"seed x", `s.scn:1:6: seed "x"`},
		{"at 1s path P off extra", `s.scn:1:18: unexpected "extra"`},
	} {
		_, err := Parse("s.scn", tc.src)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: got %v, want %q", tc.src, err, tc.want)
		}
	}
	// Every bad line is reported, in order.
	_, err := Parse("s.scn", "at 1s fial\nat 2s path P on\nat x")
	var l ErrorList
	if !errors.As(err, &l) || len(l) != 2 || l[0].Line != 1 || l[1].Line != 3 {
		t.Fatalf("got %v", err)
	}
}

func TestExpand(t *testing.T) {
	sc, err := Parse("x.scn", `seed 7
at 2s fail path A with path-failure for 3s
every 1s from 1s flap path B for 4s
at 2s path C off
at 0 policy psp VMW_PSP_RR iops=1
`)
	if err != nil {
		t.Fatal(err)
	}
	steps := sc.Expand()
	var got []string
	for _, s := range steps {
		got = append(got, s.At.String()+" "+string(s.Kind)+" "+s.Path)
	}
	want := []string{"0s policy ", "1s inject B", "2s inject A", "2s restore B", "2s admin C", "3s inject B", "4s restore B", "5s restore A"}
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Fatalf("timeline\n got %q\nwant %q", got, want)
	}
	if steps[2].Ref != -1 || steps[7].Ref != 2 || steps[3].Ref != 1 || steps[6].Ref != 5 {
		t.Errorf("refs: %+v", steps)
	}
	if steps[1].Fault != 1 || steps[2].Fault != 2 || steps[4].Fault != 3 || steps[5].Fault != 4 {
		t.Errorf("fault numbers wrong")
	}
	// Seeds come from the scenario's seed and the step index: stable, and
	// different per step and per scenario seed.
	again := sc.Expand()
	if steps[1].Spec.Seed != again[1].Spec.Seed || steps[1].Spec.Seed == steps[2].Spec.Seed || steps[1].Spec.Seed != StepSeed(7, 1) {
		t.Errorf("seeds: %d %d %d", steps[1].Spec.Seed, again[1].Spec.Seed, steps[2].Spec.Seed)
	}
	sc.Seed = 8
	if sc.Expand()[1].Spec.Seed == steps[1].Spec.Seed {
		t.Error("the scenario seed does not change the fault seeds")
	}
	var b bytes.Buffer
	PrintTimeline(&b, sc)
	if !strings.Contains(b.String(), "inject on A: --error path-failure --for 3s --seed") {
		t.Errorf("timeline:\n%s", b.String())
	}
}
