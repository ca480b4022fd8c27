package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/moerl/moerl/report"
	"github.com/moerl/moerl/rl"
	"github.com/moerl/moerl/rl/algo"
	"github.com/moerl/moerl/rl/eval"
	"github.com/moerl/moerl/rl/task"
	"github.com/moerl/moerl/run"
)

// demoResult is what the demo writes to demo.json.
type demoResult struct {
	Recipe run.Recipe  `json:"recipe"`
	Base   eval.Report `json:"base"`
	// RL is the first algorithm's model (the one --algo names first);
	// Runs holds every algorithm's, keyed by preset.
	RL         eval.Report        `json:"rl"`
	DeltaSE    float64            `json:"delta_se"` // pass@n(base) − pass@1(RL)
	Runs       map[string]algoRun `json:"runs"`
	Device     string             `json:"device"`
	Seconds    float64            `json:"seconds"`
	StageTimes map[string]float64 `json:"stage_seconds"`
}

// algoRun is one algorithm's result in the demo.
type algoRun struct {
	Settings rl.Config   `json:"settings"`
	Report   eval.Report `json:"report"`
	DeltaSE  float64     `json:"delta_se"`
}

func runDemo(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("demo", `The main job. Pretrain a base model on a reasoning task (problems with
full, noisy, partial and no solutions), run an RL algorithm from it (or
several, side by side: --algo grpo,ppo,dapo), sample --n responses to
held-back problems from every model, and compare pass@k and maj@k for
k = 1, 2, …, n. Writes into --out: base/ and one folder per algorithm
(checkpoints, metrics, and each model's evaluation in its eval/),
demo.json (every model's report) and pass_at_k.svg. --resume reuses the
stages already finished in --out and continues an interrupted one.
For replicates, intervals and verdicts, run moerl study.`, stderr)
	quick := fs.Bool("quick", false, "a tiny model and a few steps: a smoke test of every stage (seconds)")
	d := run.DefaultRecipe()
	taskName := fs.String("task", d.Task, "task: "+strings.Join(task.Names(), ", "))
	algoNames := fs.String("algo", "grpo", "RL algorithm presets, comma-separated: "+strings.Join(algo.Presets(), ", "))
	pretrainSteps := fs.Int("pretrain-steps", 0, "pretraining steps (0: the recipe's, 600)")
	rlSteps := fs.Int("rl-steps", 0, "RL steps (0: the recipe's, 100)")
	n := fs.Int("n", 0, "samples per evaluation problem (0: the recipe's, 256)")
	seed := fs.Uint64("seed", d.Seed, "seed of the whole demo: weights, data, sampling and evaluation draws")
	var sets setList
	fs.Var(&sets, "set", "override an algorithm field of every algorithm: key=value (repeatable; keys: "+strings.Join(algo.Keys(), ", ")+")")
	out := fs.String("out", "runs/demo", "output folder")
	rf := addRunFlags(fs, 100)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *pretrainSteps < 0 || *rlSteps < 0 || *n < 0 {
		return usagef("--pretrain-steps, --rl-steps and --n must be ≥ 0")
	}
	r := run.DefaultRecipe()
	if *quick {
		r.Quick()
	}
	r.Task, r.Seed = *taskName, *seed
	if _, err := task.Get(r.Task); err != nil {
		return usageError{fmt.Errorf("--task: %w", err)}
	}
	if *pretrainSteps > 0 {
		r.Pretrain.Steps = *pretrainSteps
	}
	if *rlSteps > 0 {
		r.RL.Steps = *rlSteps
	}
	if *n > 0 {
		r.Eval.N = *n
	}
	r.Fit()
	if err := r.Validate(); err != nil {
		return usageError{err}
	}
	algos := strings.Split(*algoNames, ",")
	plan := run.Plan{Stages: []run.Stage{{Name: "base", Kind: "pretrain", What: "the base model", Settings: r.PretrainStage()}}}
	for i, name := range algos {
		if slices.Contains(algos[:i], name) {
			return usagef("--algo lists %s twice", name)
		}
		cfg, err := r.RLStage(name)
		if err != nil {
			return usageError{fmt.Errorf("--algo: %w", err)}
		}
		for _, a := range sets {
			if err := cfg.Algo.Apply(a); err != nil {
				return usageError{fmt.Errorf("--set %s: %w", a, err)}
			}
		}
		dir := name
		if len(algos) == 1 {
			dir = "rl"
		}
		plan.Stages = append(plan.Stages, run.Stage{Name: name, Kind: "rl", Dir: dir, What: name + " from the base model",
			Inputs: map[string]string{"init": "base"}, Settings: cfg})
	}
	evals := plan.AddEvals(r.EvalStage())
	if err := plan.Validate(); err != nil {
		return usageError{err}
	}
	resultPath := filepath.Join(*out, "demo.json")
	if err := refuseFinished(resultPath, *rf.resume); err != nil {
		return err
	}
	env, release, err := newEnv(rf, stderr, "demo", args)
	if err != nil {
		return err
	}
	defer release()
	start := time.Now()
	results, err := run.Execute(env, *out, plan, compositeMode(*rf.resume))
	if err != nil {
		return err
	}
	reports, err := readReports(results, evals)
	if err != nil {
		return err
	}
	res := demoResult{Recipe: r, Base: reports["base"], Runs: map[string]algoRun{}, Device: env.Backend.Device(),
		StageTimes: map[string]float64{}}
	for _, x := range results {
		res.StageTimes[x.Name] = x.Seconds
	}
	for _, s := range plan.Stages[1 : 1+len(algos)] {
		ar := algoRun{Settings: *s.Settings.(*rl.Config), Report: reports[s.Name]}
		if ar.DeltaSE, err = eval.DeltaSE(res.Base, ar.Report); err != nil {
			return err
		}
		res.Runs[s.Name] = ar
	}
	first := res.Runs[algos[0]]
	res.RL, res.DeltaSE = first.Report, first.DeltaSE
	res.Seconds = time.Since(start).Seconds()
	if err := writeJSON(resultPath, res); err != nil {
		return err
	}
	named := []namedReport{{"base", res.Base}}
	plot := report.CurvePlot{Title: fmt.Sprintf("%s: pass@k of the base model and after RL, %d problems", r.Task, res.Base.Problems),
		XLabel: "k (samples)", YLabel: "pass@k", LogX: true, YMin: 0, YMax: 1, Width: 560, Height: 340}
	plot.Series = append(plot.Series, passSeries("base", res.Base, 0))
	for i, name := range algos {
		named = append(named, namedReport{name, res.Runs[name].Report})
		plot.Series = append(plot.Series, passSeries(name, res.Runs[name].Report, i+1))
	}
	svgPath := filepath.Join(*out, "pass_at_k.svg")
	svg, err := report.CurvesSVG(plot)
	if err != nil {
		return err
	}
	if err := run.WriteFileAtomic(svgPath, svg); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "\n%s, %d problems × %d samples, device %s, %.0f s\n\n", r.Task, res.Base.Problems, r.Eval.N, res.Device, res.Seconds)
	printComparison(stdout, named)
	fmt.Fprintln(stdout)
	for _, name := range algos {
		fmt.Fprintf(stdout, "ΔSE = pass@%d(base) − pass@1(%s) = %.3f\n", r.Eval.N, name, res.Runs[name].DeltaSE)
	}
	fmt.Fprintf(stdout, "wrote %s and %s\n", resultPath, svgPath)
	return nil
}

// passSeries is a model's pass@k curve.
func passSeries(name string, rep eval.Report, color int) report.Series {
	s := report.Series{Name: name, Color: report.Color(color)}
	for _, k := range eval.Ks(rep.N) {
		s.X, s.Y = append(s.X, float64(k)), append(s.Y, rep.PassAtK[k])
	}
	return s
}

// readReports reads each evaluated stage's report, by model stage name.
func readReports(results []run.Result, evals map[string]string) (map[string]eval.Report, error) {
	paths := map[string]string{}
	for _, r := range results {
		paths[r.Name] = r.Output
	}
	out := map[string]eval.Report{}
	for model, ev := range evals {
		data, err := os.ReadFile(paths[ev])
		if err != nil {
			return nil, fmt.Errorf("evaluation of %s: %w", model, err)
		}
		var rep eval.Report
		if err := json.Unmarshal(data, &rep); err != nil {
			return nil, fmt.Errorf("evaluation of %s: %s: %w", model, paths[ev], err)
		}
		out[model] = rep
	}
	return out, nil
}

// compositeMode is the folder mode of a demo, pipeline or study: with
// --resume every stage whose settings did not change is reused (and one
// whose did is moved aside and run again); without it nothing is
// overwritten.
func compositeMode(resume bool) run.Mode {
	if resume {
		return run.Reuse
	}
	return run.Fresh
}

// refuseFinished refuses to start over a finished result without --resume.
func refuseFinished(path string, resume bool) error {
	_, err := os.Stat(path)
	switch {
	case err == nil && !resume:
		return fmt.Errorf("%s exists: choose another --out, or --resume to redo only what is missing or changed", path)
	case err != nil && !errors.Is(err, fs.ErrNotExist):
		return err
	}
	return nil
}

// writeJSON writes v as indented JSON, atomically.
func writeJSON(path string, v any) error {
	data, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return run.WriteFileAtomic(path, append(data, '\n'))
}

// namedReport is one model's report in a comparison.
type namedReport struct {
	name string
	rep  eval.Report
}

// printComparison prints pass@k and maj@k of several models side by side,
// then pass@1 and pass@n per difficulty bin.
func printComparison(w io.Writer, reports []namedReport) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprint(tw, "k\t")
	for _, r := range reports {
		fmt.Fprintf(tw, "pass@k %s\t", r.name)
	}
	for _, r := range reports {
		fmt.Fprintf(tw, "maj@k %s\t", r.name)
	}
	fmt.Fprintln(tw)
	for _, k := range eval.Ks(reports[0].rep.N) {
		fmt.Fprintf(tw, "%d\t", k)
		for _, r := range reports {
			fmt.Fprintf(tw, "%.3f\t", r.rep.PassAtK[k])
		}
		for _, r := range reports {
			fmt.Fprintf(tw, "%.3f\t", r.rep.MajAtK[k])
		}
		fmt.Fprintln(tw)
	}
	tw.Flush()
	base := reports[0].rep
	if len(base.Bins) < 2 {
		return
	}
	n := base.N
	fmt.Fprintf(w, "\nper difficulty bin, pass@1 / pass@%d:\n", n)
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprint(tw, "bin\tproblems\t")
	for _, r := range reports {
		fmt.Fprintf(tw, "%s\t", r.name)
	}
	fmt.Fprintln(tw)
	for _, b := range slices.Sorted(maps.Keys(base.Bins)) {
		fmt.Fprintf(tw, "%s\t%d\t", b, base.Bins[b].Problems)
		for _, r := range reports {
			br := r.rep.Bins[b]
			fmt.Fprintf(tw, "%.3f / %.3f\t", br.PassAtK[1], br.PassAtK[n])
		}
		fmt.Fprintln(tw)
	}
	tw.Flush()
}
