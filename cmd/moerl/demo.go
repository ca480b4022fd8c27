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

	"github.com/moerl/moerl/engine"
	"github.com/moerl/moerl/moe"
	"github.com/moerl/moerl/moe/tokenizer"
	"github.com/moerl/moerl/rl"
	"github.com/moerl/moerl/rl/algo"
	"github.com/moerl/moerl/rl/eval"
	"github.com/moerl/moerl/rl/task"
)

// demoSettings is the whole demo recipe; --quick shrinks it for tests.
type demoSettings struct {
	Task          string     `json:"task"`
	Algo          string     `json:"algo"`
	Model         moe.Config `json:"model"`
	Mix           rl.Mix     `json:"mix"`
	PretrainDocs  int        `json:"pretrain_docs"`
	PretrainSteps int        `json:"pretrain_steps"`
	PretrainLR    float64    `json:"pretrain_lr"`
	RLSteps       int        `json:"rl_steps"`
	RLPrompts     int        `json:"rl_prompts"`
	RLLR          float64    `json:"rl_lr"`
	EvalProblems  int        `json:"eval_problems"` // per difficulty
	N             int        `json:"n"`             // samples per problem
	MaxNew        int        `json:"max_new"`
	Seed          uint64     `json:"seed"`
}

func defaultDemo(quick bool) demoSettings {
	m, _ := moe.Preset("moe-micro")
	s := demoSettings{Task: "add", Algo: "grpo", Model: m, Mix: rl.DefaultMix,
		PretrainDocs: 20000, PretrainSteps: 600, PretrainLR: 3e-3,
		RLSteps: 100, RLPrompts: 16, RLLR: 2e-4, EvalProblems: 64, N: 256, MaxNew: 40, Seed: 1}
	if quick {
		s.Model.DModel, s.Model.ExpertHidden, s.Model.Layers = 64, 96, 1
		s.PretrainDocs, s.PretrainSteps, s.RLSteps, s.RLPrompts, s.EvalProblems, s.N = 2000, 40, 3, 4, 4, 8
	}
	return s
}

// fitToTask sizes the generation budget and the context for a task: the
// budget covers the longest canonical response at the training
// difficulties (rounded up to 8 tokens), the context the longest prompt of
// the evaluated difficulties plus that budget (rounded up to 16, at least
// the preset's). For add it leaves moe-micro's 64 tokens and 40 new ones.
func (s *demoSettings) fitToTask(t task.Task) {
	tok := tokenizer.Default()
	train, held := t.Difficulties()
	diffs := slices.Clone(train)
	if len(held) > 0 {
		diffs = append(diffs, held[0])
	}
	var prompt, response int
	for _, d := range diffs {
		for _, p := range task.GenerateSet(t, s.Seed, 200, []int{d}) {
			pi, _ := tok.Encode(p.Prompt)
			prompt = max(prompt, len(pi)+1) // <bos>
			if slices.Contains(train, d) {
				ri, _ := tok.Encode(p.Response())
				response = max(response, len(ri)+1) // <eos>
			}
		}
	}
	s.MaxNew = (response + 7) / 8 * 8
	s.Model.MaxSeq = max(s.Model.MaxSeq, (prompt+s.MaxNew+15)/16*16)
}

// study is what the demo writes to study.json.
type study struct {
	Settings demoSettings `json:"settings"`
	Base     eval.Report  `json:"base"`
	// RL is the first algorithm's model (the one --algo names first);
	// Runs holds every algorithm's, keyed by preset.
	RL         eval.Report        `json:"rl"`
	DeltaSE    float64            `json:"delta_se"` // pass@n(base) − pass@1(RL)
	RLSettings rl.Config          `json:"rl_settings"`
	Runs       map[string]algoRun `json:"runs"`
	Device     string             `json:"device"`
	Seconds    float64            `json:"seconds"`
	StageTimes map[string]float64 `json:"stage_seconds"`
}

// algoRun is one algorithm's result in a study.
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
(checkpoints, metrics), study.json (every model's report) and
pass_at_k.svg. --resume reuses the stages already finished in --out.`, stderr)
	quick := fs.Bool("quick", false, "a tiny model and a few steps (a smoke test, seconds)")
	d := defaultDemo(false)
	taskName := fs.String("task", d.Task, "task: "+strings.Join(task.Names(), ", "))
	algoNames := fs.String("algo", d.Algo, "RL algorithm presets, comma-separated: "+strings.Join(algo.Presets(), ", "))
	pretrainSteps := fs.Int("pretrain-steps", 0, "pretraining steps (0: the recipe's)")
	rlSteps := fs.Int("rl-steps", 0, "RL steps (0: the recipe's)")
	n := fs.Int("n", 0, "samples per evaluation problem (0: the recipe's, 256)")
	seed := fs.Uint64("seed", d.Seed, "seed of the whole study")
	var sets setList
	fs.Var(&sets, "set", "override an algorithm field of every algorithm: key=value (repeatable)")
	out := fs.String("out", "runs/demo", "output folder")
	resume := fs.Bool("resume", false, "reuse finished stages in --out")
	device := fs.String("device", "auto", "compute device: auto, cpu or cuda")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	s := defaultDemo(*quick)
	s.Task, s.Algo, s.Seed = *taskName, *algoNames, *seed
	if *pretrainSteps < 0 || *rlSteps < 0 || *n < 0 {
		return usagef("--pretrain-steps, --rl-steps and --n must be ≥ 0")
	}
	if *pretrainSteps > 0 {
		s.PretrainSteps = *pretrainSteps
	}
	if *rlSteps > 0 {
		s.RLSteps = *rlSteps
	}
	if *n > 0 {
		s.N = *n
	}
	t, err := task.Get(s.Task)
	if err != nil {
		return usageError{fmt.Errorf("--task: %w", err)}
	}
	s.fitToTask(t)
	var algos []string
	cfgs := map[string]rl.Config{}
	for _, name := range strings.Split(s.Algo, ",") {
		if _, dup := cfgs[name]; dup {
			return usagef("--algo lists %s twice", name)
		}
		cfg, err := demoRLConfig(s, name, sets)
		if err != nil {
			return err
		}
		algos = append(algos, name)
		cfgs[name] = cfg
	}
	studyPath := filepath.Join(*out, "study.json")
	if _, err := os.Stat(studyPath); err == nil && !*resume {
		return fmt.Errorf("%s exists: choose another --out (or --resume to redo only what is missing)", studyPath)
	}
	be, err := openBackend(*device, stderr)
	if err != nil {
		return err
	}
	start := time.Now()
	st := study{Settings: s, Runs: map[string]algoRun{}, Device: be.Device(), StageTimes: map[string]float64{}}
	timed := func(stage string, f func() error) error {
		t0 := time.Now()
		err := f()
		st.StageTimes[stage] = time.Since(t0).Seconds()
		return err
	}

	// 1. The base model and its evaluation.
	tok := tokenizer.Default()
	basePath := filepath.Join(*out, "base", "model.ck")
	if err := timed("pretrain", func() error { return pretrainBase(s, t, basePath, *resume, be, tok, stdout, stderr) }); err != nil {
		return err
	}
	evaluate := evaluator(s, studyProblems(s, t, !*quick), be, tok, stderr)
	if err := timed("eval base", func() (err error) { st.Base, err = evaluate("base", basePath); return }); err != nil {
		return err
	}

	// 2. Each algorithm from the base model, and its evaluation.
	for _, name := range algos {
		cfg := cfgs[name]
		dir := filepath.Join(*out, name)
		if len(algos) == 1 {
			dir = filepath.Join(*out, "rl")
		}
		path := filepath.Join(dir, "policy.ck")
		err := timed("rl "+name, func() error {
			done, err := finished(path, *resume)
			if err != nil || done && stageComplete(path, cfg.Steps) {
				return err
			}
			_, err = trainRL(cfg, basePath, dir, done, 10, "", be, stdout, stderr)
			return err
		})
		if err != nil {
			return err
		}
		run := algoRun{Settings: cfg}
		if err := timed("eval "+name, func() (err error) { run.Report, err = evaluate(name, path); return }); err != nil {
			return err
		}
		if run.DeltaSE, err = eval.DeltaSE(st.Base, run.Report); err != nil {
			return err
		}
		st.Runs[name] = run
	}
	first := st.Runs[algos[0]]
	st.RL, st.RLSettings, st.DeltaSE = first.Report, first.Settings, first.DeltaSE
	st.Seconds = time.Since(start).Seconds()

	// 3. Report.
	js, _ := json.MarshalIndent(st, "", "  ")
	if err := writeFileAtomic(studyPath, append(js, '\n')); err != nil {
		return err
	}
	svgPath := filepath.Join(*out, "pass_at_k.svg")
	curves := []curve{{"base", curveColors[0], st.Base.PassAtK}}
	for i, name := range algos {
		curves = append(curves, curve{name, curveColors[(i+1)%len(curveColors)], st.Runs[name].Report.PassAtK})
	}
	var svg strings.Builder
	title := fmt.Sprintf("%s: pass@k of the base model and after RL, %d problems", s.Task, st.Base.Problems)
	if err := writePassAtKSVG(&svg, title, curves); err != nil {
		return err
	}
	if err := writeFileAtomic(svgPath, []byte(svg.String())); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "\n%s, %d problems × %d samples, device %s, %.0f s\n\n", s.Task, st.Base.Problems, s.N, be.Device(), st.Seconds)
	reports := []namedReport{{"base", st.Base}}
	for _, name := range algos {
		reports = append(reports, namedReport{name, st.Runs[name].Report})
	}
	printComparison(stdout, reports)
	fmt.Fprintln(stdout)
	for _, name := range algos {
		fmt.Fprintf(stdout, "ΔSE = pass@%d(base) − pass@1(%s) = %.3f\n", s.N, name, st.Runs[name].DeltaSE)
	}
	fmt.Fprintf(stdout, "wrote %s and %s\n", studyPath, svgPath)
	return nil
}

var curveColors = []string{"#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f"}

// demoRLConfig is the study's RL setting for one preset.
func demoRLConfig(s demoSettings, preset string, sets []string) (rl.Config, error) {
	cfg, err := rl.DefaultConfig(preset)
	if err != nil {
		return cfg, usageError{fmt.Errorf("--algo: %w", err)}
	}
	cfg.Task, cfg.Steps, cfg.Prompts, cfg.MaxNew, cfg.LR, cfg.MinLR, cfg.Seed =
		s.Task, s.RLSteps, s.RLPrompts, s.MaxNew, s.RLLR, s.RLLR, s.Seed
	if cfg.Algo.GroupSize < 2 { // ppo samples one response per prompt: keep the batch size
		cfg.Prompts *= 8
	}
	for _, a := range sets {
		if err := cfg.Algo.Apply(a); err != nil {
			return cfg, usageError{fmt.Errorf("--set %s: %w", a, err)}
		}
	}
	if err := cfg.Validate(); err != nil {
		return cfg, usageError{err}
	}
	return cfg, nil
}

// finished reports whether a stage's checkpoint is there to reuse.
func finished(path string, resume bool) (bool, error) {
	_, err := os.Stat(path)
	switch {
	case err == nil && resume:
		return true, nil
	case err == nil:
		return false, fmt.Errorf("%s exists: choose another --out, or --resume", path)
	case errors.Is(err, fs.ErrNotExist):
		return false, nil
	}
	return false, err
}

// stageComplete reports whether an RL checkpoint reached its last step.
func stageComplete(path string, steps int) bool {
	ck, err := engine.Load(path)
	if err != nil {
		return false
	}
	var st moe.RunState
	return json.Unmarshal(ck.State, &st) == nil && st.Step >= steps
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

// writeFileAtomic writes through a temporary file and a rename, so a
// finished result is never half-overwritten.
func writeFileAtomic(path string, data []byte) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// pretrainBase trains the study's base model into path's folder, or with
// resume reuses (or completes) the one there.
func pretrainBase(s demoSettings, t task.Task, path string, resume bool, be engine.Backend, tok *tokenizer.Tokenizer, stdout, stderr io.Writer) error {
	done, err := finished(path, resume)
	if err != nil || done && stageComplete(path, s.PretrainSteps) {
		return err
	}
	train, _ := t.Difficulties()
	docs, err := rl.TaskCorpus(t, s.PretrainDocs, train, s.Mix, s.Seed)
	if err != nil {
		return err
	}
	corpus, err := moe.EncodeCorpus(docs, tok)
	if err != nil {
		return err
	}
	tc := moe.DefaultTrain
	tc.Steps, tc.LR, tc.MinLR, tc.Warmup, tc.SeqLen, tc.Seed = s.PretrainSteps, s.PretrainLR, s.PretrainLR/10, s.PretrainSteps/20, s.Model.MaxSeq, s.Seed
	r := &lmRun{stage: "pretrain", model: s.Model, train: tc, corpus: corpus, tok: tok,
		out: filepath.Dir(path), resume: resume, saveEvery: 200, be: be}
	if err := r.run(stdout, stderr); err != nil {
		return fmt.Errorf("pretrain: %w", err)
	}
	return nil
}

// studyProblems are the evaluation problems: EvalProblems per training
// difficulty (from a seed of their own; at 2 digits there are only ~8k
// distinct additions, so some were seen in pretraining — every model is
// scored on the same set) and, with heldOut, the first held-out, harder
// difficulty, which no stage trains on.
func studyProblems(s demoSettings, t task.Task, heldOut bool) []task.Problem {
	train, held := t.Difficulties()
	diffs := slices.Clone(train)
	if heldOut && len(held) > 0 {
		diffs = append(diffs, held[0])
	}
	var problems []task.Problem
	for _, d := range diffs {
		problems = append(problems, task.GenerateSet(t, s.Seed+1_000_003+uint64(d), s.EvalProblems, []int{d})...)
	}
	return problems
}

// evaluator returns a function that samples s.N responses per problem from
// a checkpoint (with the study's seed, so every model sees the same draws'
// random numbers) and summarises pass@k and maj@k.
func evaluator(s demoSettings, problems []task.Problem, be engine.Backend, tok *tokenizer.Tokenizer, stderr io.Writer) func(label, ckpt string) (eval.Report, error) {
	return func(label, ckpt string) (eval.Report, error) {
		m, _, _, err := moe.LoadCheckpoint(ckpt, be)
		if err != nil {
			return eval.Report{}, err
		}
		bar := newProgress(stderr, "eval "+label, len(problems))
		o := rl.EvalOptions{N: s.N, Temperature: 1, MaxNew: s.MaxNew, Progress: func(done, _ int) { bar.update(done, "") }}
		rep, _, err := rl.Evaluate(m, tok, problems, o, engine.NewRNG(s.Seed, engine.StreamEval))
		bar.finish()
		return rep, err
	}
}
