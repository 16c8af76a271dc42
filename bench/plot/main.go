// Command benchplot analyses one failover run of bench/failover.sh and draws
// the per-path IOPS of several runs as one SVG.
//
//	benchplot analyze -title T -fault-ns NS -victim PATH -clat LOG -status FILE -trace FILE -series OUT.json
//	    prints one JSON summary line; writes the run's time series to OUT.json
//	benchplot svg -o OUT.svg -title T SERIES.json...
//	    one panel per run: per-path IOPS (from status samples), fio's total
//	    IOPS (from its per-I/O completion log), the fault marked at t=0
//
// Inputs: fio's per-I/O clat log written with --log_avg_msec=0
// --log_unix_epoch=1 (time ms, latency ns, direction, size, offset); the
// status file has one line per sample, "UNIX_NS<TAB>`mpathfs status --json`";
// the trace is `mpathfs mount --trace FILE` (one JSON record per I/O).
package main

import (
	"bufio"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/mpathfs/mpathfs/svgplot"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: benchplot analyze|svg ...")
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "analyze":
		err = analyze(os.Args[2:], os.Stdout)
	case "svg":
		err = drawSVG(os.Args[2:])
	default:
		err = fmt.Errorf("unknown command %q", os.Args[1])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "benchplot:", err)
		os.Exit(1)
	}
}

// Point is one sample of a series: seconds relative to the fault, IOPS.
type Point [2]float64

// Series is what the svg command draws for one run.
type Series struct {
	Title   string             `json:"title"`
	Note    string             `json:"note"`
	Start   float64            `json:"start"` // seconds relative to the fault
	End     float64            `json:"end"`
	Victim  string             `json:"victim"`
	Paths   map[string][]Point `json:"paths"`
	FioIOPS []Point            `json:"fio_iops"` // per 100 ms, scaled to IOPS
}

// Summary is the JSON line analyze prints.
type Summary struct {
	Title           string         `json:"title"`
	Victim          string         `json:"victim"`
	IOsTotal        int            `json:"ios_total"`
	IOPSBefore      float64        `json:"iops_before"`           // mean IOPS over the 2 s before the fault
	IOPSPerSecond   []int          `json:"iops_per_second"`       // whole seconds from the fault: [-k..]
	FirstSecond     int            `json:"iops_per_second_start"` // the second of IOPSPerSecond[0], relative to the fault
	MinIOPSAfter    int            `json:"min_iops_fault_to_3s"`  // min over the 1-s windows [f,f+1) [f+1,f+2) [f+2,f+3)
	MaxClatMs       float64        `json:"max_clat_ms"`           // completions in [fault-1s, fault+3s]
	MaxClatBeforeMs float64        `json:"max_clat_before_ms"`    // completions in [start, fault-1s)
	LongestGapMs    float64        `json:"longest_gap_ms"`        // between consecutive completions in [fault-1s, fault+3s]
	P99BeforeMs     float64        `json:"p99_clat_before_ms"`    // before the fault
	FirstOtherOkMs  *float64       `json:"first_ok_other_path_ms"`
	FirstFailoverMs *float64       `json:"first_failover_io_ms"` // first I/O that failed on the victim and completed elsewhere
	FailoverIOs     int            `json:"failover_ios"`         // I/Os retried off the victim
	MaxFailoverMs   float64        `json:"max_failover_io_ms"`   // the largest latency of those I/Os, first try to completion
	FailedIOs       int            `json:"failed_ios"`           // I/Os with a non-ok status
	VictimDeadMs    *float64       `json:"victim_dead_ms"`       // first status sample showing the victim not active
	AttemptsByClass map[string]int `json:"error_classes"`
	TraceRecords    int            `json:"trace_records"`
	StatusSamples   int            `json:"status_samples"`
}

type completion struct {
	ms    float64 // completion time, unix ms
	latNs float64
}

func readClat(name string) ([]completion, error) {
	f, err := os.Open(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []completion
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fs := strings.Split(sc.Text(), ",")
		if len(fs) < 2 {
			continue
		}
		t, err1 := strconv.ParseFloat(strings.TrimSpace(fs[0]), 64)
		v, err2 := strconv.ParseFloat(strings.TrimSpace(fs[1]), 64)
		if err1 != nil || err2 != nil {
			continue
		}
		out = append(out, completion{t, v})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ms < out[j].ms })
	return out, sc.Err()
}

type statusDoc struct {
	Devices []struct {
		Paths []struct {
			Name   string `json:"name"`
			State  string `json:"state"`
			Reads  int64  `json:"reads"`
			Writes int64  `json:"writes"`
		} `json:"paths"`
	} `json:"devices"`
}

type sample struct {
	ms    float64
	ios   map[string]int64
	state map[string]string
}

func readStatus(name string) ([]sample, error) {
	f, err := os.Open(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []sample
	r := bufio.NewReaderSize(f, 1<<20)
	for {
		line, err := r.ReadString('\n')
		if i := strings.IndexByte(line, '\t'); i > 0 {
			ns, perr := strconv.ParseFloat(line[:i], 64)
			var d statusDoc
			if perr == nil && json.Unmarshal([]byte(line[i+1:]), &d) == nil && len(d.Devices) > 0 {
				s := sample{ms: ns / 1e6, ios: map[string]int64{}, state: map[string]string{}}
				for _, p := range d.Devices[0].Paths {
					s.ios[p.Name] = p.Reads + p.Writes
					s.state[p.Name] = p.State
				}
				out = append(out, s)
			}
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, err
		}
	}
	return out, nil
}

type traceRec struct {
	Time      *time.Time `json:"time"`
	LatencyUs *float64   `json:"latency_us"`
	Status    string     `json:"status"`
	Attempts  []struct {
		Path  string `json:"path"`
		Class string `json:"class"`
	} `json:"attempts"`
}

func ptr(f float64) *float64 { return &f }

func analyze(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("analyze", flag.ContinueOnError)
	title := fs.String("title", "", "run title")
	faultNs := fs.Float64("fault-ns", 0, "unix time of the fault injection, ns")
	victim := fs.String("victim", "", "the faulted path")
	clat := fs.String("clat", "", "fio per-I/O clat log")
	status := fs.String("status", "", "status samples")
	trace := fs.String("trace", "", "mpathfs trace JSON lines")
	seriesOut := fs.String("series", "", "write the time series here")
	note := fs.String("note", "", "a note for the plot")
	if err := fs.Parse(args); err != nil {
		return err
	}
	fault := *faultNs / 1e6 // ms
	sum := Summary{Title: *title, Victim: *victim, AttemptsByClass: map[string]int{}}
	comps, err := readClat(*clat)
	if err != nil {
		return err
	}
	if len(comps) == 0 {
		return fmt.Errorf("no completions in %s", *clat)
	}
	sum.IOsTotal = len(comps)
	first, last := comps[0].ms, comps[len(comps)-1].ms
	// per-second IOPS, windows aligned on the fault
	k0 := int(math.Floor((first - fault) / 1000))
	k1 := int(math.Floor((last - fault) / 1000))
	counts := make([]int, k1-k0+1)
	var before []float64
	prev := math.NaN()
	for _, c := range comps {
		counts[int(math.Floor((c.ms-fault)/1000))-k0]++
		rel := c.ms - fault
		if rel >= -1000 && rel <= 3000 {
			sum.MaxClatMs = math.Max(sum.MaxClatMs, c.latNs/1e6)
			if !math.IsNaN(prev) && prev-fault >= -1000 {
				sum.LongestGapMs = math.Max(sum.LongestGapMs, c.ms-prev)
			}
		} else if rel < -1000 {
			sum.MaxClatBeforeMs = math.Max(sum.MaxClatBeforeMs, c.latNs/1e6)
		}
		if rel < 0 {
			before = append(before, c.latNs/1e6)
		}
		prev = c.ms
	}
	// drop partial first and last seconds
	sum.FirstSecond = k0 + 1
	if len(counts) > 2 {
		sum.IOPSPerSecond = counts[1 : len(counts)-1]
	}
	sum.MinIOPSAfter = -1
	for k := 0; k < 3; k++ {
		if i := k - k0; i >= 1 && i < len(counts)-1 {
			if sum.MinIOPSAfter < 0 || counts[i] < sum.MinIOPSAfter {
				sum.MinIOPSAfter = counts[i]
			}
		}
	}
	if i := -2 - k0; i >= 1 {
		sum.IOPSBefore = float64(counts[i]+counts[i+1]) / 2
	}
	if len(before) > 0 {
		sort.Float64s(before)
		sum.P99BeforeMs = before[int(float64(len(before)-1)*0.99)]
	}

	// trace
	if *trace != "" {
		f, err := os.Open(*trace)
		if err != nil {
			return err
		}
		dec := json.NewDecoder(bufio.NewReaderSize(f, 1<<20))
		for {
			var r traceRec
			if err := dec.Decode(&r); err != nil {
				break
			}
			sum.TraceRecords++
			if r.Time == nil || r.LatencyUs == nil || len(r.Attempts) == 0 {
				continue
			}
			startMs := float64(r.Time.UnixNano()) / 1e6
			doneMs := startMs + *r.LatencyUs/1000
			touchedVictim := false
			for _, a := range r.Attempts {
				if a.Class != "" {
					sum.AttemptsByClass[a.Class]++
				}
				if a.Path == *victim && a.Class != "" {
					touchedVictim = true
				}
			}
			if r.Status != "ok" {
				sum.FailedIOs++
				continue
			}
			lastPath := r.Attempts[len(r.Attempts)-1].Path
			if touchedVictim && lastPath != *victim {
				sum.FailoverIOs++
				sum.MaxFailoverMs = max(sum.MaxFailoverMs, *r.LatencyUs/1000)
				if doneMs >= fault && (sum.FirstFailoverMs == nil || doneMs-fault < *sum.FirstFailoverMs) {
					sum.FirstFailoverMs = ptr(doneMs - fault)
				}
			}
			if lastPath != *victim && doneMs >= fault && (startMs >= fault || touchedVictim) {
				if sum.FirstOtherOkMs == nil || doneMs-fault < *sum.FirstOtherOkMs {
					sum.FirstOtherOkMs = ptr(doneMs - fault)
				}
			}
		}
		f.Close()
	}

	// status samples: per-path IOPS
	samples, err := readStatus(*status)
	if err != nil {
		return err
	}
	sum.StatusSamples = len(samples)
	series := Series{Title: *title, Note: *note, Victim: *victim, Paths: map[string][]Point{},
		Start: (first - fault) / 1000, End: (last - fault) / 1000}
	for i := 1; i < len(samples); i++ {
		a, b := samples[i-1], samples[i]
		dt := (b.ms - a.ms) / 1000
		if dt <= 0 {
			continue
		}
		t := ((a.ms+b.ms)/2 - fault) / 1000
		for name, n := range b.ios {
			series.Paths[name] = append(series.Paths[name], Point{t, float64(n-a.ios[name]) / dt})
		}
	}
	for _, s := range samples {
		if s.ms >= fault && s.state[*victim] != "" && s.state[*victim] != "active" {
			sum.VictimDeadMs = ptr(s.ms - fault)
			break
		}
	}
	// fio total per 100 ms
	bins := map[int]int{}
	for _, c := range comps {
		bins[int(math.Floor((c.ms-fault)/100))]++
	}
	b0, b1 := int(math.Floor((first-fault)/100))+1, int(math.Floor((last-fault)/100))-1
	for b := b0; b <= b1; b++ {
		series.FioIOPS = append(series.FioIOPS, Point{(float64(b) + 0.5) / 10, float64(bins[b]) * 10})
	}
	if *seriesOut != "" {
		data, _ := json.Marshal(series)
		if err := os.WriteFile(*seriesOut, data, 0o644); err != nil {
			return err
		}
	}
	data, _ := json.Marshal(sum)
	_, err = fmt.Fprintln(stdout, string(data))
	return err
}

// pathColors are the per-path colours; fio's total is grey under them.
var pathColors = []string{"#1f77b4", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2"}

func drawSVG(args []string) error {
	fs := flag.NewFlagSet("svg", flag.ContinueOnError)
	out := fs.String("o", "", "output SVG")
	title := fs.String("title", "", "figure title")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *out == "" {
		return fmt.Errorf("svg: no output file: pass -o OUT.svg")
	}
	var runs []Series
	for _, name := range fs.Args() {
		data, err := os.ReadFile(name)
		if err != nil {
			return err
		}
		var s Series
		if err := json.Unmarshal(data, &s); err != nil {
			return fmt.Errorf("%s: %v", name, err)
		}
		runs = append(runs, s)
	}
	if len(runs) == 0 {
		return fmt.Errorf("no series")
	}
	fig := figure(*title, runs)
	var b strings.Builder
	if err := fig.Render(&b); err != nil {
		return err
	}
	return os.WriteFile(*out, []byte(b.String()), 0o644)
}

// figure makes one panel per run: fio's total IOPS, the per-path IOPS and
// the fault marked at t=0.
func figure(title string, runs []Series) svgplot.Figure {
	fig := svgplot.Figure{Title: title, FontSize: 11}
	for _, s := range runs {
		p := svgplot.Panel{
			Title: s.Title, Note: s.Note, Height: 170,
			XMin: math.Floor(s.Start), XMax: math.Ceil(s.End), YTicks: 4,
			XLabel: "s from fault", YLabel: "IOPS",
			Markers: []svgplot.Marker{{At: 0, Color: "red", Label: "fault"}},
		}
		p.Series = append(p.Series, svgplot.Series{Name: "fio total (100 ms)", Color: "#bbb", Width: 1, Points: points(s.FioIOPS)})
		names := make([]string, 0, len(s.Paths))
		for n := range s.Paths {
			names = append(names, n)
		}
		sort.Strings(names)
		for j, n := range names {
			label := n
			if n == s.Victim {
				label += " (faulted)"
			}
			p.Series = append(p.Series, svgplot.Series{Name: label, Color: pathColors[j%len(pathColors)], Width: 1.4, Points: points(s.Paths[n])})
		}
		fig.Panels = append(fig.Panels, p)
	}
	return fig
}

func points(pts []Point) []svgplot.Point {
	out := make([]svgplot.Point, len(pts))
	for i, p := range pts {
		out[i] = svgplot.Point{X: p[0], Y: p[1]}
	}
	return out
}
