package main

import (
	"flag"
	"fmt"
	"io"

	"github.com/moerl/moerl/report"
)

func runReport(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("report", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), `Usage: moerl report [--out DIR] [--smooth N] RUN [RUN...]

Draw the metrics of runs as one HTML page (report.html: plots inlined as
SVG, no external files, no script) and a markdown summary (report.md: a
table per run of the first, last, smallest and largest value of its main
metrics, and pass@k). A RUN is a run folder (it holds metrics.jsonl or
eval.json) or a folder of runs such as a demo's or a pipeline's, whose
immediate subfolders are the runs. Runs of the same kind are overlaid in
one plot per metric; fields the report does not know are plotted under
"Other metrics". It never writes a run's own files.

Flags:
`)
		fs.PrintDefaults()
	}
	out := fs.String("out", "", "folder to write report.html and report.md into, created if missing (default: the first RUN)")
	smooth := fs.Int("smooth", 0, "width in steps of a centred moving average drawn over each per-step curve, raw values left faint beneath; 0 or 1 draws raw values only (default 0)")
	// flags may come after the RUN folders too: parse up to each folder,
	// set it aside, go on
	var paths []string
	for rest := args; ; {
		if err := fs.Parse(rest); err != nil {
			if err == flag.ErrHelp {
				return err
			}
			return usageError{err}
		}
		if rest = fs.Args(); len(rest) == 0 {
			break
		}
		paths, rest = append(paths, rest[0]), rest[1:]
	}
	if len(paths) == 0 {
		return usagef("no RUN folder given (see --help)")
	}
	if *smooth < 0 {
		return usagef("--smooth %d: want a window of 0 or more steps", *smooth)
	}
	runs, err := report.Load(paths...)
	if err != nil {
		return err
	}
	dir := *out
	if dir == "" {
		dir = paths[0]
	}
	htmlPath, mdPath, err := report.Write(dir, runs, report.Options{Smooth: *smooth})
	if err != nil {
		return err
	}
	for _, r := range runs {
		fmt.Fprintf(stdout, "%-12s %-9s %6d steps  %s\n", r.Name, stageLabel(r.Stage), len(metricsSteps(r)), evalLabel(r))
	}
	fmt.Fprintf(stdout, "wrote %s and %s\n", htmlPath, mdPath)
	return nil
}

func stageLabel(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func metricsSteps(r *report.Run) []float64 {
	if r.Metrics == nil {
		return nil
	}
	return r.Metrics.Steps
}

func evalLabel(r *report.Run) string {
	if r.Eval == nil {
		return "not evaluated"
	}
	return fmt.Sprintf("evaluated: %d problems, n = %d, pass@1 %.3f", r.Eval.Problems, r.Eval.N, r.Eval.PassAtK[1])
}
