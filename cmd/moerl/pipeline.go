package main

import (
	"encoding/json"
	"fmt"
	"io"
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
	"github.com/moerl/moerl/rl/eval"
	"github.com/moerl/moerl/rl/task"
)

// pipelineStage is one stage of a multi-stage recipe. Each stage starts
// from an earlier one's checkpoint (from) and writes its own folder.
type pipelineStage struct {
	name string
	what string // printed description
	kind string // "rl", "sft" (canonical solutions), "distil" (SFT on a teacher's verified samples), "fusion", "rm" (a reward model)
	from string // the stage whose checkpoint it starts from ("base" is the pretrained model)
	// rl
	algo string
	sets []string
	// distil, fusion and rm: the stage whose samples are used
	teacher string
	// rl: "model" or "mix" takes rewards from the reward model of stage rm
	rewardSource, rm string
}

// pipelines are the article's training recipes at toy scale.
var pipelines = map[string]struct {
	doc    string
	stages []pipelineStage
}{
	"r1-zero": {"DeepSeek-R1-Zero: pure RL from the base model with the R1 template and rule-based rewards", []pipelineStage{
		{name: "r1-zero", what: "GRPO from the base model", kind: "rl", from: "base", algo: "grpo"},
	}},
	"r1": {"DeepSeek-R1: R1-Zero's samples as cold start, SFT, reasoning RL, rejection sampling into a second SFT on the base, a second RL", []pipelineStage{
		{name: "r1-zero", what: "stage 0: GRPO from the base model", kind: "rl", from: "base", algo: "grpo"},
		{name: "sft1", what: "stage 1: SFT of the base on R1-Zero's verified samples (cold start)", kind: "distil", from: "base", teacher: "r1-zero"},
		{name: "rl1", what: "stage 2: reasoning RL (GRPO)", kind: "rl", from: "sft1", algo: "grpo"},
		{name: "sft2", what: "stages 2.5-3: rejection-sample rl1, SFT the base on it", kind: "distil", from: "base", teacher: "rl1"},
		{name: "rl2", what: "stage 4: second RL round (GRPO)", kind: "rl", from: "sft2", algo: "grpo"},
	}},
	"kimi": {"Kimi k1.5: long-CoT SFT warm-up, then online mirror descent without a critic (curriculum, prioritized sampling, length penalty)", []pipelineStage{
		{name: "sft", what: "long-CoT SFT on canonical solutions", kind: "sft", from: "base"},
		{name: "omd", what: "online policy mirror descent", kind: "rl", from: "sft", algo: "omd"},
	}},
	"qwen3": {"Qwen3: long-CoT cold start, reasoning RL, thinking-mode fusion (SFT on thinking and non-thinking answers), general RL", []pipelineStage{
		{name: "cold-start", what: "stage 1: long-CoT cold start (SFT)", kind: "sft", from: "base"},
		{name: "reasoning-rl", what: "stage 2: reasoning RL (GRPO)", kind: "rl", from: "cold-start", algo: "grpo"},
		{name: "fusion", what: "stage 3: thinking-mode fusion: SFT on reasoning-rl's verified samples, half with the thinking removed", kind: "fusion", from: "reasoning-rl", teacher: "reasoning-rl"},
		{name: "general-rl", what: "stage 4: general RL (GRPO, KL 0.001)", kind: "rl", from: "fusion", algo: "grpo", sets: []string{"kl_coef=0.001"}},
	}},
	"seed-thinking": {"Seed-Thinking v1.5: SFT on chains of thought, a verifier model trained on the SFT model's samples, then RL with DAPO's techniques (clip-higher, dynamic sampling, token-mean, overlong shaping) on the mean of the rule-based and the learned reward", []pipelineStage{
		{name: "sft", what: "SFT on canonical chains of thought", kind: "sft", from: "base"},
		{name: "verifier", what: "a reward model judging whole responses, trained on the SFT model's labelled samples", kind: "rm", from: "sft", teacher: "sft"},
		{name: "dapo", what: "DAPO, reward: mean of the verifier rule and the reward model", kind: "rl", from: "sft", algo: "dapo", rewardSource: "mix", rm: "verifier"},
	}},
}

func pipelineNames() []string {
	var n []string
	for k := range pipelines {
		n = append(n, k)
	}
	slices.Sort(n)
	return n
}

// pipelineResult is what pipeline.json holds.
type pipelineResult struct {
	Pipeline string                 `json:"pipeline"`
	Settings demoSettings           `json:"settings"`
	Stages   []string               `json:"stages"` // in order, "base" first
	Reports  map[string]eval.Report `json:"reports"`
	Device   string                 `json:"device"`
	Seconds  float64                `json:"seconds"`
}

func runPipeline(args []string, stdout, stderr io.Writer) error {
	var list strings.Builder
	for _, n := range pipelineNames() {
		fmt.Fprintf(&list, "\n  %-14s %s", n, pipelines[n].doc)
	}
	fs := newFlagSet("pipeline", `Run one of the article's multi-stage training recipes at toy scale on a
task, from a pretrained base model (made as moerl demo makes it), and
evaluate every stage's model with pass@k and maj@k on the same problems.
Writes OUT/<stage>/ for each stage and OUT/pipeline.json. Pipelines:`+list.String(), stderr)
	name := fs.String("name", "r1", "pipeline: "+strings.Join(pipelineNames(), ", "))
	quick := fs.Bool("quick", false, "a tiny model and a few steps (a smoke test)")
	taskName := fs.String("task", "add", "task: "+strings.Join(task.Names(), ", "))
	rlSteps := fs.Int("rl-steps", 0, "steps of each RL stage (0: the recipe's)")
	sftSteps := fs.Int("sft-steps", 0, "steps of each SFT stage (0: 200, or 10 with --quick)")
	n := fs.Int("n", 0, "samples per evaluation problem (0: the recipe's)")
	out := fs.String("out", "runs/pipeline", "output folder")
	resume := fs.Bool("resume", false, "reuse finished stages in --out")
	device := fs.String("device", "auto", "compute device: auto, cpu or cuda")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	p, ok := pipelines[*name]
	if !ok {
		return usagef("--name %q: want one of %s", *name, strings.Join(pipelineNames(), ", "))
	}
	if *rlSteps < 0 || *sftSteps < 0 || *n < 0 {
		return usagef("--rl-steps, --sft-steps and --n must be ≥ 0")
	}
	s := defaultDemo(*quick)
	s.Task = *taskName
	if *rlSteps > 0 {
		s.RLSteps = *rlSteps
	}
	if *n > 0 {
		s.N = *n
	}
	sft := 200
	if *quick {
		sft = 10
	}
	if *sftSteps > 0 {
		sft = *sftSteps
	}
	t, err := task.Get(s.Task)
	if err != nil {
		return usageError{fmt.Errorf("--task: %w", err)}
	}
	s.fitToTask(t)
	resultPath := filepath.Join(*out, "pipeline.json")
	if _, err := os.Stat(resultPath); err == nil && !*resume {
		return fmt.Errorf("%s exists: choose another --out (or --resume to redo only what is missing)", resultPath)
	}
	be, err := openBackend(*device, stderr)
	if err != nil {
		return err
	}
	start := time.Now()
	tok := tokenizer.Default()
	ck := map[string]string{"base": filepath.Join(*out, "base", "model.ck")}
	if err := pretrainBase(s, t, ck["base"], *resume, be, tok, stdout, stderr); err != nil {
		return err
	}
	for _, st := range p.stages {
		fmt.Fprintf(stderr, "== %s: %s\n", st.name, st.what)
		dir := filepath.Join(*out, st.name)
		var err error
		switch st.kind {
		case "rl":
			ck[st.name], err = pipelineRL(s, st, ck, dir, *resume, be, stdout, stderr)
		case "rm":
			ck[st.name], err = pipelineRM(s, t, st, ck, dir, *resume, be, tok, stderr)
		default:
			ck[st.name], err = pipelineSFT(s, t, st, ck, sft, dir, *resume, be, tok, stdout, stderr)
		}
		if err != nil {
			return fmt.Errorf("stage %s: %w", st.name, err)
		}
	}
	res := pipelineResult{Pipeline: *name, Settings: s, Stages: []string{"base"}, Reports: map[string]eval.Report{}, Device: be.Device()}
	evaluate := evaluator(s, studyProblems(s, t, !*quick), be, tok, stderr)
	for _, st := range p.stages {
		if st.kind != "rm" {
			res.Stages = append(res.Stages, st.name)
		}
	}
	for _, name := range res.Stages {
		if res.Reports[name], err = evaluate(name, ck[name]); err != nil {
			return err
		}
	}
	res.Seconds = time.Since(start).Seconds()
	js, _ := json.MarshalIndent(res, "", "  ")
	if err := writeFileAtomic(resultPath, append(js, '\n')); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "\npipeline %s on %s, %d problems × %d samples, %.0f s\n\n", *name, s.Task, res.Reports["base"].Problems, s.N, res.Seconds)
	tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	k := s.N
	mid := min(16, k)
	fmt.Fprintf(tw, "stage\tpass@1\tpass@%d\tpass@%d\tmaj@%d\t\n", mid, k, k)
	for _, name := range res.Stages {
		r := res.Reports[name]
		fmt.Fprintf(tw, "%s\t%.3f\t%.3f\t%.3f\t%.3f\t\n", name, r.PassAtK[1], r.PassAtK[mid], r.PassAtK[k], r.MajAtK[k])
	}
	tw.Flush()
	fmt.Fprintf(stdout, "\nwrote %s\n", resultPath)
	return nil
}

func pipelineRL(s demoSettings, st pipelineStage, ck map[string]string, dir string, resume bool, be engine.Backend, stdout, stderr io.Writer) (string, error) {
	path := filepath.Join(dir, "policy.ck")
	cfg, err := rl.DefaultConfig(st.algo)
	if err != nil {
		return "", err
	}
	cfg.Task, cfg.Steps, cfg.Prompts, cfg.MaxNew, cfg.LR, cfg.MinLR, cfg.Seed = s.Task, s.RLSteps, s.RLPrompts, s.MaxNew, s.RLLR, s.RLLR, s.Seed
	if cfg.Algo.GroupSize < 2 {
		cfg.Prompts *= 8
	}
	if st.rewardSource != "" {
		cfg.RewardSource = st.rewardSource
	}
	for _, a := range st.sets {
		if err := cfg.Algo.Apply(a); err != nil {
			return "", err
		}
	}
	if err := cfg.Validate(); err != nil {
		return "", err
	}
	done, err := finished(path, resume)
	if err != nil {
		return "", err
	}
	if done && stageComplete(path, cfg.Steps) {
		return path, nil
	}
	return trainRL(cfg, ck[st.from], dir, done, 10, ck[st.rm], be, stdout, stderr)
}

// pipelineRM trains a reward model on stage st.teacher's labelled samples.
// A reward model is not trained in steps that a checkpoint resumes: with
// resume, a finished one is reused, an unfinished one retrained.
func pipelineRM(s demoSettings, t task.Task, st pipelineStage, ck map[string]string, dir string, resume bool,
	be engine.Backend, tok *tokenizer.Tokenizer, stderr io.Writer) (string, error) {
	path := filepath.Join(dir, "model.ck")
	if done, err := finished(path, resume); err != nil || done {
		return path, err
	}
	policy, _, _, err := moe.LoadCheckpoint(ck[st.teacher], be)
	if err != nil {
		return "", err
	}
	train, _ := t.Difficulties()
	rng := engine.NewRNG(s.Seed, engine.StreamSample)
	ex, err := rl.LabelledSamples(policy, tok, task.GenerateSet(t, s.Seed+17, max(64, s.PretrainDocs/40), train), 4, s.MaxNew, rng)
	if err != nil {
		return "", err
	}
	cfg := rl.RMTrainConfig{Steps: 300, Batch: 32, LR: 1e-3, Seed: s.Seed}
	if s.PretrainSteps < 100 { // --quick
		cfg.Steps, cfg.Batch = 10, 8
	}
	rm, err := rl.TrainRM(policy, ex, cfg, nil)
	if err != nil {
		return "", err
	}
	fmt.Fprintf(stderr, "%s: reward model trained on %d samples (%.0f%% correct)\n", st.name, len(ex), 100*correctShare(ex))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	rs := moe.RunState{Stage: "rm", Step: cfg.Steps}
	return path, rm.SaveCheckpoint(path, tok, rs, false)
}

// pipelineSFT fine-tunes stage st.from on canonical solutions ("sft"), a
// teacher's verified samples ("distil"), or those samples with half of them
// stripped of their thinking ("fusion": Qwen3's thinking and non-thinking
// modes in one model).
func pipelineSFT(s demoSettings, t task.Task, st pipelineStage, ck map[string]string, steps int, dir string, resume bool,
	be engine.Backend, tok *tokenizer.Tokenizer, stdout, stderr io.Writer) (string, error) {
	path := filepath.Join(dir, "model.ck")
	done, err := finished(path, resume)
	if err != nil {
		return "", err
	}
	if done && stageComplete(path, steps) {
		return path, nil
	}
	train, _ := t.Difficulties()
	var docs []string
	switch st.kind {
	case "sft":
		if docs, err = rl.TaskCorpus(t, s.PretrainDocs/4, train, rl.Mix{Full: 1}, s.Seed+11); err != nil {
			return "", err
		}
	case "distil", "fusion":
		teacher, _, _, err := moe.LoadCheckpoint(ck[st.teacher], be)
		if err != nil {
			return "", err
		}
		problems := task.GenerateSet(t, s.Seed+13, max(64, s.PretrainDocs/40), train)
		var kept float64
		docs, kept, err = rl.DistilCorpus(teacher, tok, problems, 4, moe.SampleOptions{Temperature: 1, MaxNew: s.MaxNew},
			engine.NewRNG(s.Seed, engine.StreamSample))
		if err != nil {
			return "", err
		}
		fmt.Fprintf(stderr, "%s: kept %d verified samples of %s (%.0f%% correct)\n", st.name, len(docs), st.teacher, 100*kept)
		if st.kind == "fusion" {
			for i := 0; i < len(docs); i += 2 {
				docs[i] = withoutThinking(docs[i])
			}
		}
	}
	corpus, err := moe.EncodeCorpus(docs, tok)
	if err != nil {
		return "", err
	}
	base, _, _, err := moe.LoadCheckpoint(ck[st.from], be)
	if err != nil {
		return "", err
	}
	tc := moe.DefaultTrain
	tc.Steps, tc.LR, tc.MinLR, tc.Warmup, tc.SeqLen, tc.Seed = steps, 1e-3, 1e-4, steps/20, base.Cfg.MaxSeq, s.Seed
	r := &lmRun{stage: "sft", model: base.Cfg, train: tc, corpus: corpus, tok: tok, out: dir, resume: done,
		saveEvery: 100, init: ck[st.from], be: be}
	return path, r.run(stdout, stderr)
}

// withoutThinking empties a document's think block: a non-thinking answer.
func withoutThinking(doc string) string {
	a := strings.Index(doc, task.ThinkOpen)
	b := strings.Index(doc, task.ThinkClose)
	if a < 0 || b < a {
		return doc
	}
	return doc[:a+len(task.ThinkOpen)] + doc[b:]
}
