package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"

	"github.com/mpathfs/mpathfs/control"
	"github.com/mpathfs/mpathfs/scenario"
)

// `mpathfs scenario check|run` and `mpathfs mount --scenario FILE`.

func cmdScenario(args []string, stdout io.Writer) error {
	if len(args) == 0 {
		return usagef("want `scenario check FILE` or `scenario run [--control S] [--report FILE.md] [--svg FILE.svg] FILE`")
	}
	switch args[0] {
	case "check":
		return cmdScenarioCheck(args[1:], stdout)
	case "run":
		return cmdScenarioRun(args[1:], stdout)
	}
	return usagef("unknown scenario subcommand %q (want check or run)", args[0])
}

// parseScenario parses a file; a file with errors prints each on stderr,
// one per line as FILE:LINE:COL: message, and returns a usage error.
func parseScenario(name string) (*scenario.Scenario, error) {
	sc, err := scenario.ParseFile(name)
	var l scenario.ErrorList
	if errors.As(err, &l) {
		if len(l) == 1 {
			return nil, usageError{l[0].Error()}
		}
		for _, e := range l {
			fmt.Fprintln(os.Stderr, e.Error())
		}
		return nil, usagef("%d errors in %s", len(l), name)
	}
	return sc, err
}

func cmdScenarioCheck(args []string, stdout io.Writer) error {
	fs := newFlags(stdout, "scenario check", "scenario check FILE")
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return usagef("give exactly one scenario FILE")
	}
	sc, err := parseScenario(pos[0])
	if err != nil {
		return err
	}
	scenario.PrintTimeline(stdout, sc)
	return nil
}

func cmdScenarioRun(args []string, stdout io.Writer) error {
	fs := newFlags(stdout, "scenario run", "scenario run [--control S] [--report FILE.md] [--svg FILE.svg] [--json FILE] [--continue] [--keep-faults] FILE")
	ctl := fs.String("control", "", "control socket")
	report := fs.String("report", "", "write the Markdown report here (default: print it)")
	svg := fs.String("svg", "", "write an SVG plot of per-path IOPS with the faults marked")
	jsonOut := fs.String("json", "", "write the report as JSON")
	cont := fs.Bool("continue", false, "go on after a step fails (default: stop and clear what was injected)")
	keep := fs.Bool("keep-faults", false, "leave faults without a lifetime in place at the end")
	quiet := fs.Bool("quiet", false, "do not print each step as it runs")
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return usagef("give exactly one scenario FILE")
	}
	sc, err := parseScenario(pos[0])
	if err != nil {
		return err
	}
	ctx, cancel := interruptible()
	defer cancel()
	opts := scenario.Options{ContinueOnError: *cont, KeepFaults: *keep}
	if !*quiet {
		opts.Log = stdout
	}
	if len(sc.Hosts) > 0 {
		if *ctl != "" {
			return usagef("--control: %s declares its hosts and starts their mounts itself; drop --control", pos[0])
		}
		return runClusterScenario(ctx, sc, opts, *report, *svg, *jsonOut, stdout)
	}
	c, err := dial(*ctl)
	if err != nil {
		return err
	}
	rep, runErr := scenario.Run(ctx, sc, scenario.ClientTarget{C: c}, opts)
	if rep == nil {
		return runErr
	}
	if err := writeReport(rep, *report, *svg, *jsonOut, stdout); err != nil {
		return err
	}
	if runErr != nil {
		return runErr
	}
	if p := rep.Problems(); len(p) > 0 {
		return fmt.Errorf("%d problems: %s", len(p), strings.Join(p, "; "))
	}
	return nil
}

func writeReport(rep *scenario.Report, md, svg, js string, stdout io.Writer) error {
	if md == "" {
		if err := rep.Markdown(stdout); err != nil {
			return err
		}
	} else if err := writeFileWith(md, rep.Markdown); err != nil {
		return err
	} else {
		fmt.Fprintf(stdout, "report: %s (%d faults, %d problems)\n", md, len(rep.Faults), len(rep.Problems()))
	}
	if svg != "" {
		if err := writeFileWith(svg, rep.SVG); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "plot: %s\n", svg)
	}
	if js != "" {
		if err := writeFileWith(js, func(w io.Writer) error { return printJSON(w, rep) }); err != nil {
			return err
		}
	}
	return nil
}

func writeFileWith(name string, fn func(io.Writer) error) error {
	f, err := createOutput(name, 0o644)
	if err != nil {
		return err
	}
	if err := fn(f); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// loadMountScenario parses the scenario of `mount --scenario FILE` (or
// `scenario:` in the config) before the mount comes up, so a bad file
// stops it; nil when there is none.
func loadMountScenario(file string) (*scenario.Scenario, error) {
	if file == "" {
		return nil, nil
	}
	sc, err := scenario.ParseFile(file)
	if err != nil {
		return nil, usageError{oneLine(err.Error())}
	}
	if len(sc.Hosts) > 0 || sc.Serve != nil {
		return nil, usageError{file + ": " + errClusterInMount.Error()}
	}
	return sc, nil
}

// playMountScenario plays the scenario in process once the mount is up and
// prints its report; the mount keeps serving afterwards. It returns at
// once; the scenario stops with ctx.
func playMountScenario(ctx context.Context, rt *control.Runtime, sc *scenario.Scenario, file string, stdout io.Writer) {
	fmt.Fprintf(stdout, "mpathfs: running scenario %s (%v)\n", sc.Name, sc.Length())
	go func() {
		var log syncWriter
		log.w = stdout
		rep, err := scenario.Run(ctx, sc, scenario.RuntimeTarget{RT: rt, ArrayFunc: func(ctx context.Context, req scenario.ArrayRequest) error {
			_, err := rt.Array(ctx, req)
			return err
		}}, scenario.Options{Log: &log, ContinueOnError: true})
		if rep != nil {
			md := file + ".report.md"
			if werr := writeFileWith(md, rep.Markdown); werr != nil {
				fmt.Fprintf(&log, "mpathfs: scenario report: %v\n", werr)
			} else {
				fmt.Fprintf(&log, "mpathfs: scenario %s done: %d faults, %d problems; report %s\n", sc.Name, len(rep.Faults), len(rep.Problems()), md)
			}
		}
		if err != nil {
			fmt.Fprintf(&log, "mpathfs: scenario %s: %s\n", sc.Name, oneLine(err.Error()))
		}
	}()
}

// syncWriter serialises writes to a shared stdout.
type syncWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (s *syncWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Write(p)
}
