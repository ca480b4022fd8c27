package main

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/moerl/moerl/rl/eval"
	"github.com/moerl/moerl/run"
)

// pipelineResult is what pipeline.json holds.
type pipelineResult struct {
	Pipeline string                 `json:"pipeline"`
	Recipe   run.Recipe             `json:"recipe"`
	Stages   []string               `json:"stages"` // the evaluated stages, in order
	Reports  map[string]eval.Report `json:"reports"`
	Device   string                 `json:"device"`
	Seconds  float64                `json:"seconds"`
}

func runPipeline(args []string, stdout, stderr io.Writer) error {
	var list strings.Builder
	for _, n := range run.Shipped() {
		p, err := run.LoadPipeline(n, false, nil)
		if err == nil {
			fmt.Fprintf(&list, "\n  %-14s %s", n, p.Doc)
		}
	}
	fs := newFlagSet("pipeline", `Run a multi-stage training recipe at toy scale and evaluate every stage's
model with pass@k and maj@k on the same problems:

  moerl pipeline [flags] NAME|FILE

NAME is a built-in pipeline, FILE a pipeline file (TOML) of your own:
'moerl pipeline --print r1 > my.toml' writes one to start from, and
docs/cmd/pipeline.md describes the format. The recipe flags (--rl.steps,
--eval.n, …) override the file's [recipe]. Writes OUT/<stage>/ for each
stage (its evaluation in OUT/<stage>/eval/) and OUT/pipeline.json.
Built in:`+list.String(), stderr)
	name := fs.String("name", "", "a built-in pipeline or a file (the same as the argument)")
	printFile := fs.Bool("print", false, "print the pipeline file and exit (to copy and edit)")
	quick := fs.Bool("quick", false, "a tiny model and a few steps: a smoke test of every stage (seconds)")
	rc := run.DefaultRecipe() // so that the help shows the defaults
	bindStruct(fs, &rc, "", ".", "recipe")
	out := fs.String("out", "", "output folder; none: runs/<pipeline name>")
	rf := addRunFlags(fs, 100)
	if err := parseArgs(fs, args); err != nil {
		return err
	}
	which := *name
	switch {
	case fs.NArg() == 1 && which == "":
		which = fs.Arg(0)
	case fs.NArg() > 1 || fs.NArg() == 1 && which != "":
		return usagef("give one pipeline (a name or a file), got %q", append([]string{which}, fs.Args()...))
	case which == "":
		return usagef("which pipeline? built in: %s (or the path of a pipeline file)", strings.Join(run.Shipped(), ", "))
	}
	if *printFile {
		data, err := run.ShippedFile(which)
		if err != nil {
			if data, err = os.ReadFile(which); err != nil {
				return usageError{err}
			}
		}
		_, err = stdout.Write(data)
		return err
	}
	override := func(r *run.Recipe) error {
		copySetFields(fs, r, &rc, "", ".")
		return nil
	}
	p, err := run.LoadPipeline(which, *quick, override)
	if err != nil {
		return usageError{err}
	}
	if *out == "" {
		*out = filepath.Join("runs", p.Name)
	}
	resultPath := filepath.Join(*out, "pipeline.json")
	if err := refuseFinished(resultPath, *rf.resume); err != nil {
		return err
	}
	env, release, err := newEnv(rf, stderr, "pipeline", args)
	if err != nil {
		return err
	}
	defer release()
	start := time.Now()
	results, err := run.Execute(env, *out, p.Plan, compositeMode(*rf.resume))
	if err != nil {
		return err
	}
	reports, err := readReports(results, p.Evals)
	if err != nil {
		return err
	}
	res := pipelineResult{Pipeline: p.Name, Recipe: p.Recipe, Stages: p.Evaluated, Reports: reports,
		Device: env.Backend.Device(), Seconds: time.Since(start).Seconds()}
	if err := writeJSON(resultPath, res); err != nil {
		return err
	}
	n := p.Recipe.Eval.N
	fmt.Fprintf(stdout, "\npipeline %s on %s, %d problems × %d samples, %.0f s\n\n", p.Name, p.Recipe.Task, reports[p.Evaluated[0]].Problems, n, res.Seconds)
	tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	ks := []int{1}
	if mid := min(16, n); mid > 1 && mid < n {
		ks = append(ks, mid)
	}
	if n > 1 {
		ks = append(ks, n)
	}
	fmt.Fprint(tw, "stage\t")
	for _, k := range ks {
		fmt.Fprintf(tw, "pass@%d\t", k)
	}
	fmt.Fprintf(tw, "maj@%d\t\n", n)
	for _, name := range p.Evaluated {
		r := reports[name]
		fmt.Fprintf(tw, "%s\t", name)
		for _, k := range ks {
			fmt.Fprintf(tw, "%.3f\t", r.PassAtK[k])
		}
		fmt.Fprintf(tw, "%.3f\t\n", r.MajAtK[n])
	}
	tw.Flush()
	fmt.Fprintf(stdout, "\nwrote %s\n", resultPath)
	return nil
}
