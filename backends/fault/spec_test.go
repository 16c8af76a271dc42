package fault_test

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/mpathfs/mpathfs/backends/fault"
)

func TestParseArgs(t *testing.T) {
	for _, c := range []struct {
		args string
		want fault.Spec
	}{
		{"--error path-failure", fault.Spec{Error: "path-failure"}},
		{"-error=pdl", fault.Spec{Error: "permanent-loss"}},
		{"--error busy --sense 02/04/0a", fault.Spec{Error: "retryable", Sense: "02/04/0a"}},
		{"--error path-failure --late --op write", fault.Spec{Error: "path-failure", Late: true, Ops: []string{"write"}}},
		{"--hang --for 30s", fault.Spec{Hang: true, Duration: 30 * time.Second}},
		{"--hang=true --duration=1m", fault.Spec{Hang: true, Duration: time.Minute}},
		{"--error not-ready --op read,write --op probe", fault.Spec{Error: "not-ready", Ops: []string{"read", "write", "probe"}}},
		{"--error device-error --offset 1M --length 4k", fault.Spec{Error: "device-error", Offset: 1 << 20, Length: 4096}},
		{"--error device-error --range 1G:64KiB", fault.Spec{Error: "device-error", Offset: 1 << 30, Length: 64 << 10}},
		{"--error retryable --probability 10%", fault.Spec{Error: "retryable", Probability: 0.1}},
		{"--error retryable --probability 0.25", fault.Spec{Error: "retryable", Probability: 0.25}},
		{"--error retryable --every 10 --after 100 --count 3", fault.Spec{Error: "retryable", Every: 10, After: 100, Count: 3}},
		{"--latency 20ms --jitter 5ms", fault.Spec{Latency: 20 * time.Millisecond, Jitter: 5 * time.Millisecond}},
		{"--slow 3", fault.Spec{SlowFactor: 3}},
		{"--slow 2.5x", fault.Spec{SlowFactor: 2.5}},
		{"--bandwidth 10M", fault.Spec{Bandwidth: 10 << 20}},
		{"--bandwidth 512k/s", fault.Spec{Bandwidth: 512 << 10}},
		{"--bandwidth 1000", fault.Spec{Bandwidth: 1000}},
		{"--latency 1ms --seed 0x10", fault.Spec{Latency: time.Millisecond, Seed: 16}},
		{"--latency 1ms --seed 18446744073709551615", fault.Spec{Latency: time.Millisecond, Seed: 1<<64 - 1}},
		{"--error path-failure --error retryable", fault.Spec{Error: "retryable"}}, // the last one wins
	} {
		got, err := fault.ParseArgs(strings.Fields(c.args))
		if err != nil {
			t.Errorf("ParseArgs(%q): %v", c.args, err)
			continue
		}
		if !reflect.DeepEqual(got, c.want) {
			t.Errorf("ParseArgs(%q) =\n %+v, want\n %+v", c.args, got, c.want)
		}
	}
}

func TestParseArgsErrors(t *testing.T) {
	for _, c := range []struct{ args, want string }{
		{"", "does nothing"},
		{"--op read", "does nothing"},
		{"--frobnicate", "unknown flag --frobnicate (known: --error, "},
		{"path-failure", `unexpected argument "path-failure"`},
		{"--error", "--error needs a value: --error CLASS"},
		{"--error oops", `--error "oops": want --error CLASS (path-failure,`},
		{"--error path-failure --op reed", `--op "reed": want --op LIST`},
		{"--error path-failure --op ''", `--op "''"`},
		{"--error path-failure --offset 4q", `--offset "4q": want --offset SIZE`},
		{"--error path-failure --range 4k", `--range "4k": want --range OFFSET:LENGTH`},
		{"--error path-failure --range x:4k", `--range "x:4k"`},
		{"--error path-failure --probability 0", `--probability "0": want --probability P`},
		{"--error path-failure --probability 150%", `--probability "150%"`},
		{"--error path-failure --probability -0.5", `--probability "-0.5"`},
		{"--error path-failure --every 0", `--every "0": want --every N with N ≥ 1`},
		{"--error path-failure --every two", `--every "two"`},
		{"--error path-failure --after -1", `--after "-1": want --after N with N ≥ 0`},
		{"--error path-failure --count 0", `--count "0"`},
		{"--error path-failure --for 3", `--for "3": want --for DURATION`},
		{"--latency -1s", `--latency "-1s"`},
		{"--jitter soon", `--jitter "soon"`},
		{"--slow 0.5", `--slow "0.5": want --slow N with N ≥ 1`},
		{"--bandwidth 0", `--bandwidth "0": want --bandwidth RATE`},
		{"--bandwidth fast", `--bandwidth "fast"`},
		{"--hang=maybe", `--hang "maybe": want --hang or --hang=true|false`},
		{"--latency 1ms --seed -1", `--seed "-1"`},
		{"--error path-failure --sense 02/04", `--sense "02/04": want --sense KEY/ASC/ASCQ`},
		{"--latency 1ms --sense 02/04/0a", "--sense needs --error"},
		{"--latency 1ms --late", "--late needs --error"},
		{"--hang --error path-failure", "--hang and --error exclude each other"},
		{"--error path-failure --offset 4k", "--offset needs --length"},
		{"--error path-failure --op flush,probe --range 0:4k", "--range never matches"},
	} {
		_, err := fault.ParseArgs(strings.Fields(c.args))
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("ParseArgs(%q) = %v, want an error containing %q", c.args, err, c.want)
		}
	}
}

func TestValidate(t *testing.T) {
	for _, c := range []struct {
		spec fault.Spec
		want string // "" means valid
	}{
		{fault.Spec{Error: "path-failure"}, ""},
		{fault.Spec{Latency: time.Millisecond, Ops: []string{"write-zeroes"}}, ""},
		{fault.Spec{Error: "medium", Probability: 1}, ""},
		{fault.Spec{}, "does nothing"},
		{fault.Spec{SlowFactor: 1}, "does nothing"},
		{fault.Spec{Error: "nope"}, `--error "nope"`},
		{fault.Spec{Error: "none"}, `--error "none"`},
		{fault.Spec{Error: "path-failure", Ops: []string{"read", "trim"}}, `unknown operation "trim"`},
		{fault.Spec{Error: "path-failure", Offset: -1, Length: 1}, "--offset -1 is negative"},
		{fault.Spec{Error: "path-failure", Length: -1}, "--length -1 is negative"},
		{fault.Spec{Error: "path-failure", Offset: 1<<63 - 10, Length: 20}, "overflows"},
		{fault.Spec{Error: "path-failure", Probability: 1.5}, "--probability 1.5"},
		{fault.Spec{Error: "path-failure", Every: -2}, "--every -2 is negative"},
		{fault.Spec{Error: "path-failure", After: -2}, "--after -2 is negative"},
		{fault.Spec{Error: "path-failure", Count: -2}, "--count -2 is negative"},
		{fault.Spec{Error: "path-failure", Duration: -time.Second}, "--for -1s is negative"},
		{fault.Spec{Jitter: -time.Second}, "--jitter -1s is negative"},
		{fault.Spec{SlowFactor: 0.5}, "--slow 0.5"},
		{fault.Spec{Bandwidth: -5}, "--bandwidth -5 is negative"},
		{fault.Spec{Error: "retryable", Sense: "zz/00/00"}, "--sense"},
	} {
		err := c.spec.Validate()
		switch {
		case c.want == "" && err != nil:
			t.Errorf("Validate(%+v) = %v, want nil", c.spec, err)
		case c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)):
			t.Errorf("Validate(%+v) = %v, want an error containing %q", c.spec, err, c.want)
		}
	}
}

var roundTripSpecs = []fault.Spec{
	{Error: "path-failure"},
	{Error: "retryable", Sense: "02/04/0a", Count: 3, Ops: []string{"read", "write"}},
	{Error: "path-failure", Late: true, Ops: []string{"write"}, Probability: 0.1},
	{Hang: true, Duration: 90 * time.Second, Ops: []string{"probe"}},
	{Error: "device-error", Offset: 1<<30 + 4096, Length: 512},
	{Error: "device-error", Offset: 0, Length: 3},
	{Error: "not-ready", Every: 7, After: 3, Probability: 1.0 / 3},
	{Latency: 1500 * time.Microsecond, Jitter: time.Nanosecond, SlowFactor: 2.25, Bandwidth: 10<<20 + 1, Seed: 1<<64 - 1},
	{Bandwidth: 3 << 40},
}

func TestArgsRoundTrip(t *testing.T) {
	for _, s := range roundTripSpecs {
		args := s.Args()
		got, err := fault.ParseArgs(args)
		if err != nil {
			t.Errorf("ParseArgs(%q): %v", args, err)
			continue
		}
		if !reflect.DeepEqual(got, s) {
			t.Errorf("round trip through %q:\n got %+v\nwant %+v", args, got, s)
		}
	}
	want := "--error retryable --sense 02/04/0a --op read,write --count 3"
	if got := roundTripSpecs[1].String(); got != want {
		t.Errorf("String() = %q, want %q", got, want)
	}
	if got := roundTripSpecs[4].String(); got != "--error device-error --range 1048580k:512" {
		t.Errorf("String() = %q", got)
	}
}

func TestJSON(t *testing.T) {
	for _, s := range roundTripSpecs {
		b, err := json.Marshal(s)
		if err != nil {
			t.Fatal(err)
		}
		var got fault.Spec
		if err := json.Unmarshal(b, &got); err != nil {
			t.Fatalf("Unmarshal(%s): %v", b, err)
		}
		if !reflect.DeepEqual(got, s) {
			t.Errorf("round trip through %s:\n got %+v\nwant %+v", b, got, s)
		}
	}
	b, _ := json.Marshal(fault.Spec{Hang: true, Duration: 3 * time.Second, Ops: []string{"read"}, SlowFactor: 2})
	if want := `{"hang":true,"ops":["read"],"slow_factor":2,"duration":"3s"}`; string(b) != want {
		t.Errorf("Marshal = %s, want %s", b, want)
	}
	// What a control-socket client sends.
	var s fault.Spec
	in := `{"error":"retryable","ops":["write"],"offset":4096,"length":8192,"probability":0.5,"every":2,"after":1,"count":9,"duration":"1m","latency":"20ms","jitter":1000,"bandwidth":1048576,"seed":5}`
	if err := json.Unmarshal([]byte(in), &s); err != nil {
		t.Fatal(err)
	}
	want := fault.Spec{Error: "retryable", Ops: []string{"write"}, Offset: 4096, Length: 8192, Probability: 0.5, Every: 2, After: 1, Count: 9,
		Duration: time.Minute, Latency: 20 * time.Millisecond, Jitter: time.Microsecond, Bandwidth: 1 << 20, Seed: 5}
	if !reflect.DeepEqual(s, want) {
		t.Errorf("Unmarshal =\n %+v, want\n %+v", s, want)
	}
	if err := json.Unmarshal([]byte(`{"latency":"soon"}`), &s); err == nil || !strings.Contains(err.Error(), "Go duration") {
		t.Errorf("bad duration: %v", err)
	}
	// Active, as List reports it, is JSON too.
	fb, _ := newFB(t, 1)
	inject(t, fb, "--latency 1ms")
	b, err := json.Marshal(fb.List())
	if err != nil || !strings.Contains(string(b), `"spec":{"latency":"1ms"}`) || strings.Contains(string(b), "expires") {
		t.Errorf("List as JSON: %s, %v", b, err)
	}
}
