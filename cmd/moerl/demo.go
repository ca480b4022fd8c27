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
		RLSteps: 60, RLPrompts: 16, RLLR: 2e-4, EvalProblems: 32, N: 256, MaxNew: 40, Seed: 1}
	if quick {
		s.Model.DModel, s.Model.ExpertHidden, s.Model.Layers = 64, 96, 1
		s.PretrainDocs, s.PretrainSteps, s.RLSteps, s.RLPrompts, s.EvalProblems, s.N = 2000, 40, 3, 4, 4, 8
	}
	return s
}

// study is what the demo writes to study.json.
type study struct {
	Settings    demoSettings `json:"settings"`
	Base        eval.Report  `json:"base"`
	RL          eval.Report  `json:"rl"`
	DeltaSE     float64      `json:"delta_se"` // pass@n(base) − pass@1(RL)
	RLSettings  rl.Config    `json:"rl_settings"`
	Device      string       `json:"device"`
	Seconds     float64      `json:"seconds"`
	StageTimesS struct {
		Pretrain, EvalBase, RL, EvalRL float64
	} `json:"stage_seconds"`
}

func runDemo(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("demo", `The main job. Pretrain a base model on a reasoning task (problems with
full, noisy, partial and no solutions), run an RL algorithm from it, sample
--n responses to held-back problems from both, and compare pass@k and maj@k
for k = 1, 2, …, n. Writes into --out: base/ and rl/ (checkpoints, metrics),
study.json (both models' reports) and pass_at_k.svg. --resume reuses the
stages already finished in --out.`, stderr)
	quick := fs.Bool("quick", false, "a tiny model and a few steps (a smoke test, seconds)")
	d := defaultDemo(false)
	taskName := fs.String("task", d.Task, "task: "+strings.Join(task.Names(), ", "))
	algoName := fs.String("algo", d.Algo, "RL algorithm preset: "+strings.Join(algo.Presets(), ", "))
	pretrainSteps := fs.Int("pretrain-steps", 0, "pretraining steps (0: the recipe's)")
	rlSteps := fs.Int("rl-steps", 0, "RL steps (0: the recipe's)")
	n := fs.Int("n", 0, "samples per evaluation problem (0: the recipe's, 256)")
	seed := fs.Uint64("seed", d.Seed, "seed of the whole study")
	var sets setList
	fs.Var(&sets, "set", "override an algorithm field: key=value (repeatable)")
	out := fs.String("out", "runs/demo", "output folder")
	resume := fs.Bool("resume", false, "reuse finished stages in --out")
	device := fs.String("device", "auto", "compute device: auto, cpu or cuda")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	s := defaultDemo(*quick)
	s.Task, s.Algo, s.Seed = *taskName, *algoName, *seed
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
	rcfg, err := rl.DefaultConfig(s.Algo)
	if err != nil {
		return usageError{fmt.Errorf("--algo: %w", err)}
	}
	rcfg.Task, rcfg.Steps, rcfg.Prompts, rcfg.MaxNew, rcfg.LR, rcfg.MinLR, rcfg.Seed =
		s.Task, s.RLSteps, s.RLPrompts, s.MaxNew, s.RLLR, s.RLLR, s.Seed
	if rcfg.Algo.GroupSize < 2 { // ppo samples one response per prompt: keep the batch size
		rcfg.Prompts *= 8
	}
	for _, a := range sets {
		if err := rcfg.Algo.Apply(a); err != nil {
			return usageError{fmt.Errorf("--set %s: %w", a, err)}
		}
	}
	if err := rcfg.Validate(); err != nil {
		return usageError{err}
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
	st := study{Settings: s, RLSettings: rcfg, Device: be.Device()}

	// 1. The base model.
	tok := tokenizer.Default()
	basePath := filepath.Join(*out, "base", "model.ck")
	t0 := time.Now()
	if err := pretrainBase(s, t, basePath, *resume, be, tok, stdout, stderr); err != nil {
		return err
	}
	st.StageTimesS.Pretrain = time.Since(t0).Seconds()
	evaluate := evaluator(s, studyProblems(s, t, !*quick), be, tok, stderr)
	t0 = time.Now()
	if st.Base, err = evaluate("base", basePath); err != nil {
		return err
	}
	st.StageTimesS.EvalBase = time.Since(t0).Seconds()

	// 3. RL from the base model.
	t0 = time.Now()
	rlPath := filepath.Join(*out, "rl", "policy.ck")
	if done, err := finished(rlPath, *resume); err != nil {
		return err
	} else if !done || !stageComplete(rlPath, rcfg.Steps) {
		if _, err := trainRL(rcfg, basePath, filepath.Dir(rlPath), done, 10, be, stdout, stderr); err != nil {
			return err
		}
	}
	st.StageTimesS.RL = time.Since(t0).Seconds()
	t0 = time.Now()
	if st.RL, err = evaluate("rl", rlPath); err != nil {
		return err
	}
	st.StageTimesS.EvalRL = time.Since(t0).Seconds()
	if st.DeltaSE, err = eval.DeltaSE(st.Base, st.RL); err != nil {
		return err
	}
	st.Seconds = time.Since(start).Seconds()

	// 4. Report.
	js, _ := json.MarshalIndent(st, "", "  ")
	if err := writeFileAtomic(studyPath, append(js, '\n')); err != nil {
		return err
	}
	svgPath := filepath.Join(*out, "pass_at_k.svg")
	f, err := os.Create(svgPath)
	if err != nil {
		return err
	}
	title := fmt.Sprintf("%s: base vs %s, pass@k over %d problems", s.Task, s.Algo, st.Base.Problems)
	if err := writePassAtKSVG(f, title, []curve{{"base", "#1f77b4", st.Base.PassAtK}, {s.Algo, "#d62728", st.RL.PassAtK}}); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "\n%s, %d problems × %d samples, device %s, %.0f s\n\n", s.Task, st.Base.Problems, s.N, be.Device(), st.Seconds)
	printComparison(stdout, s.Algo, st.Base, st.RL)
	fmt.Fprintf(stdout, "\nΔSE = pass@%d(base) − pass@1(%s) = %.3f\nwrote %s and %s\n", s.N, s.Algo, st.DeltaSE, studyPath, svgPath)
	return nil
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

func printComparison(w io.Writer, algoName string, base, rlr eval.Report) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(tw, "k\tpass@k base\tpass@k %s\tmaj@k base\tmaj@k %s\t\n", algoName, algoName)
	for _, k := range eval.Ks(base.N) {
		fmt.Fprintf(tw, "%d\t%.3f\t%.3f\t%.3f\t%.3f\t\n", k, base.PassAtK[k], rlr.PassAtK[k], base.MajAtK[k], rlr.MajAtK[k])
	}
	tw.Flush()
	if len(base.Bins) < 2 {
		return
	}
	n := base.N
	fmt.Fprintf(w, "\nper difficulty bin:\n")
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(tw, "bin\tproblems\tpass@1 base\tpass@1 %s\tpass@%d base\tpass@%d %s\t\n", algoName, n, n, algoName)
	for _, b := range slices.Sorted(maps.Keys(base.Bins)) {
		br, rr := base.Bins[b], rlr.Bins[b]
		fmt.Fprintf(tw, "%s\t%d\t%.3f\t%.3f\t%.3f\t%.3f\t\n", b, br.Problems, br.PassAtK[1], rr.PassAtK[1], br.PassAtK[n], rr.PassAtK[n])
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
