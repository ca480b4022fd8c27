package run

import (
	"fmt"
	"slices"

	"github.com/moerl/moerl/moe"
	"github.com/moerl/moerl/moe/tokenizer"
	"github.com/moerl/moerl/rl"
	"github.com/moerl/moerl/rl/task"
)

// Recipe holds the settings a pipeline's stages share. Each stage kind's
// defaults are made from it in one place (the *Stage methods), so that the
// demo, the pipelines and the study agree on what an SFT or an RL stage is;
// a stage's own fields then override them.
type Recipe struct {
	Task     string         `json:"task" help:"reasoning task: add, countdown, kk or mul"`
	Seed     uint64         `json:"seed" help:"seed of the whole recipe: weights, data, sampling and evaluation draws"`
	Model    moe.Config     `json:"model"`
	MaxNew   int            `json:"max_new" help:"generation budget per response, in tokens (0: the longest canonical response of the task's bins, rounded up to 8)"`
	Pretrain PretrainRecipe `json:"pretrain"`
	SFT      SFTRecipe      `json:"sft"`
	Distill  DistillRecipe  `json:"distill"`
	RM       RMRecipe       `json:"rm"`
	RL       RLRecipe       `json:"rl"`
	Eval     EvalRecipe     `json:"eval"`
}

// PretrainRecipe is how the base model is made.
type PretrainRecipe struct {
	Docs  int     `json:"docs" help:"pretraining documents generated from the task"`
	Steps int     `json:"steps" help:"pretraining steps (batches of 32 documents)"`
	LR    float64 `json:"lr" help:"peak learning rate (warm-up over the first 5% of steps, cosine decay to a tenth)"`
	Mix   rl.Mix  `json:"mix"`
	// Difficulties and Weights choose the difficulty of each document:
	// empty Difficulties is the task's training bins, empty Weights equal
	// shares. A small weight makes a difficulty rare in pretraining.
	Difficulties []int     `json:"difficulties" help:"task difficulties of the pretraining documents; empty: the task's training bins"`
	Weights      []float64 `json:"weights" help:"share of each pretraining difficulty, in order; empty: equal"`
}

// SFTRecipe is a supervised fine-tuning stage on canonical solutions.
type SFTRecipe struct {
	Steps int     `json:"steps" help:"fine-tuning steps"`
	LR    float64 `json:"lr" help:"peak learning rate (decays to a tenth)"`
	Docs  int     `json:"docs" help:"documents of canonical solutions"`
}

// DistillRecipe is rejection sampling from a teacher and fine-tuning on it.
type DistillRecipe struct {
	// Difficulties are the bins of the problems the teacher answers; empty
	// is the RL stages' bins.
	Difficulties []int   `json:"difficulties" help:"difficulties of the problems the teacher answers; empty: the RL bins"`
	Problems     int     `json:"problems" help:"problems the teacher answers (split evenly over the difficulties)"`
	Samples      int     `json:"samples" help:"teacher samples per problem; the correct ones are kept"`
	Steps        int     `json:"steps" help:"fine-tuning steps of the student"`
	LR           float64 `json:"lr" help:"peak learning rate of the student (decays to a tenth)"`
}

// RMRecipe is a reward-model stage.
type RMRecipe struct {
	Steps   int     `json:"steps" help:"reward-model training steps"`
	Batch   int     `json:"batch" help:"labelled responses per step"`
	LR      float64 `json:"lr" help:"peak learning rate (warm-up over a tenth of the steps, decay to a tenth)"`
	Samples int     `json:"samples" help:"policy samples per problem, labelled by the verifier"`
}

// RLRecipe is the loop around every RL stage.
type RLRecipe struct {
	// Difficulties are the bins RL trains on; empty is the task's
	// training bins.
	Difficulties []int   `json:"difficulties" help:"task difficulties RL trains on; empty: the task's training bins"`
	Steps        int     `json:"steps" help:"RL steps"`
	Prompts      int     `json:"prompts" help:"prompts per step; a preset without groups (ppo, G = 1) gets 8× as many, so every preset samples the same responses per step"`
	LR           float64 `json:"lr" help:"learning rate (constant)"`
}

// EvalRecipe is how every model is evaluated.
type EvalRecipe struct {
	Problems int `json:"problems" help:"evaluation problems per difficulty"`
	N        int `json:"n" help:"samples per problem (pass@k is reported for k = 1, 2, 4, …, n)"`
	// Difficulties are the evaluated bins; empty means the task's training
	// bins and, with HeldOut, its first held-out one.
	Difficulties []int   `json:"difficulties" help:"evaluated difficulties; empty: the task's training bins, plus its first held-out bin with held_out"`
	HeldOut      bool    `json:"held_out" help:"with the default difficulties, also evaluate the task's first held-out (harder) bin"`
	Temperature  float64 `json:"temperature" help:"sampling temperature of the evaluation"`
	TopP         float64 `json:"top_p" help:"nucleus sampling: keep the smallest set of tokens with this much probability (0 or 1: off)"`
	TopK         int     `json:"top_k" help:"keep the k most likely tokens (0: off)"`
	Scored       int     `json:"scored" help:"samples per problem scored by the base model, for the sharpening measure (0: none)"`
}

// DefaultRecipe is the demo's: moe-micro on 2- and 3-digit addition.
func DefaultRecipe() Recipe {
	m, _ := moe.Preset("moe-micro")
	return Recipe{Task: "add", Seed: 1, Model: m,
		Pretrain: PretrainRecipe{Docs: 20000, Steps: 600, LR: 3e-3, Mix: rl.DefaultMix},
		SFT:      SFTRecipe{Steps: 200, LR: 1e-3, Docs: 5000},
		Distill:  DistillRecipe{Problems: 500, Samples: 4, Steps: 200, LR: 1e-3},
		RM:       RMRecipe{Steps: 300, Batch: 32, LR: 1e-3, Samples: 4},
		RL:       RLRecipe{Steps: 100, Prompts: 16, LR: 2e-4},
		Eval:     EvalRecipe{Problems: 64, N: 256, HeldOut: true, Temperature: 1},
	}
}

// Quick shrinks a recipe to a smoke test of seconds that still runs every
// stage and gives each something to learn from: a one-layer model trained
// briefly at a high learning rate on the task's easiest difficulty (for
// add, one digit), where it solves a few problems, so that distillation
// finds correct samples and a reward model sees both kinds; it is
// evaluated there and one difficulty up.
func (r *Recipe) Quick() {
	r.Model.DModel, r.Model.ExpertHidden, r.Model.Layers = 64, 96, 1
	r.Pretrain.Docs, r.Pretrain.Steps, r.Pretrain.LR = 2000, 80, 1e-2
	if t, err := task.Get(r.Task); err == nil {
		lo, hi := 1, 1
		if rt, ok := t.(task.RangedTask); ok {
			lo, hi = rt.DifficultyRange()
		}
		r.Pretrain.Difficulties, r.Pretrain.Weights = []int{lo}, nil
		r.RL.Difficulties, r.Distill.Difficulties = []int{lo}, []int{lo}
		r.Eval.Difficulties = []int{lo, min(lo+1, hi)}
		if lo == hi {
			r.Eval.Difficulties = []int{lo}
		}
	}
	r.SFT.Steps, r.SFT.Docs = 10, 500
	r.Distill.Problems, r.Distill.Samples, r.Distill.Steps = 32, 4, 10
	r.RM.Steps, r.RM.Batch = 10, 8
	r.RL.Steps, r.RL.Prompts = 3, 4
	r.Eval.Problems, r.Eval.N, r.Eval.Scored = 4, 8, min(r.Eval.Scored, 4)
}

// Validate names the first bad setting.
func (r Recipe) Validate() error {
	t, err := task.Get(r.Task)
	if err != nil {
		return fmt.Errorf("recipe: %w", err)
	}
	for _, d := range slices.Concat(r.Pretrain.Difficulties, r.RL.Difficulties, r.Distill.Difficulties, r.Eval.Difficulties) {
		if err := task.CheckDifficulty(t, d); err != nil {
			return fmt.Errorf("recipe: %w", err)
		}
	}
	switch {
	case r.MaxNew < 0:
		return fmt.Errorf("recipe: max_new must be ≥ 0, got %d", r.MaxNew)
	case r.Pretrain.Docs <= 0 || r.Pretrain.Steps <= 0 || !(r.Pretrain.LR > 0):
		return fmt.Errorf("recipe: pretrain docs, steps and lr must be positive")
	case r.SFT.Steps <= 0 || r.SFT.Docs <= 0 || !(r.SFT.LR > 0):
		return fmt.Errorf("recipe: sft steps, docs and lr must be positive")
	case r.Distill.Problems <= 0 || r.Distill.Samples <= 0 || r.Distill.Steps <= 0 || !(r.Distill.LR > 0):
		return fmt.Errorf("recipe: distill problems, samples, steps and lr must be positive")
	case r.RM.Steps <= 0 || r.RM.Batch <= 0 || r.RM.Samples <= 0 || !(r.RM.LR > 0):
		return fmt.Errorf("recipe: rm steps, batch, samples and lr must be positive")
	case r.RL.Steps <= 0 || r.RL.Prompts <= 0 || !(r.RL.LR > 0):
		return fmt.Errorf("recipe: rl steps, prompts and lr must be positive")
	case r.Eval.Problems <= 0 || r.Eval.N <= 0 || !(r.Eval.Temperature >= 0) || r.Eval.TopK < 0 || !(r.Eval.TopP >= 0 && r.Eval.TopP <= 1) || r.Eval.Scored < 0:
		return fmt.Errorf("recipe: eval needs problems > 0, n > 0, temperature ≥ 0, top_k ≥ 0, top_p in [0, 1], scored ≥ 0")
	case r.Eval.Scored > r.Eval.N:
		return fmt.Errorf("recipe: eval scored %d is more than n %d", r.Eval.Scored, r.Eval.N)
	}
	if err := r.Model.Validate(); err != nil {
		return fmt.Errorf("recipe: %w", err)
	}
	return r.Pretrain.Mix.Validate()
}

// Fit sizes the generation budget and the context for the task, unless
// MaxNew is set: the budget covers the longest canonical response of the
// pretraining difficulties (rounded up to 8 tokens), the context the
// longest prompt of those and the evaluated difficulties plus that budget
// (rounded up to 16, at least the model's). For add on its training bins
// it leaves moe-micro's 64 tokens and 40 new ones.
func (r *Recipe) Fit() {
	t, err := task.Get(r.Task)
	if err != nil {
		return // Validate reports it
	}
	var prompt, response int
	train := r.pretrainDifficulties(t)
	for _, d := range slices.Concat(train, r.EvalDifficulties()) {
		for _, p := range task.GenerateSet(t, r.Seed, 200, []int{d}) {
			pi, _ := defaultTokens(p.Prompt)
			prompt = max(prompt, pi+1) // <bos>
			if slices.Contains(train, d) {
				ri, _ := defaultTokens(p.Response())
				response = max(response, ri+1) // <eos>
			}
		}
	}
	if r.MaxNew == 0 {
		r.MaxNew = (response + 7) / 8 * 8
	}
	r.Model.MaxSeq = max(r.Model.MaxSeq, (prompt+r.MaxNew+15)/16*16)
}

func (r Recipe) pretrainDifficulties(t task.Task) []int {
	if len(r.Pretrain.Difficulties) > 0 {
		return r.Pretrain.Difficulties
	}
	train, _ := t.Difficulties()
	return train
}

// EvalDifficulties are the evaluated bins.
func (r Recipe) EvalDifficulties() []int {
	if len(r.Eval.Difficulties) > 0 {
		return r.Eval.Difficulties
	}
	t, err := task.Get(r.Task)
	if err != nil {
		return nil
	}
	train, held := t.Difficulties()
	diffs := slices.Clone(train)
	if r.Eval.HeldOut && len(held) > 0 {
		diffs = append(diffs, held[0])
	}
	return diffs
}

// PretrainStage is the base model's pretraining.
func (r Recipe) PretrainStage() *Pretrain {
	tc := moe.DefaultTrain
	tc.Steps, tc.LR, tc.MinLR, tc.Warmup, tc.SeqLen, tc.Seed = r.Pretrain.Steps, r.Pretrain.LR, r.Pretrain.LR/10, r.Pretrain.Steps/20, r.Model.MaxSeq, r.Seed
	return &Pretrain{Model: r.Model, Train: tc, Corpus: Corpus{Task: r.Task, Difficulties: r.Pretrain.Difficulties,
		Weights: r.Pretrain.Weights, Docs: r.Pretrain.Docs, Mix: r.Pretrain.Mix, Seed: r.Seed}}
}

// fineTune is the training setting of SFT and distillation.
func (r Recipe) fineTune(steps int, lr float64) moe.TrainConfig {
	tc := moe.DefaultTrain
	tc.Steps, tc.LR, tc.MinLR, tc.Warmup, tc.SeqLen, tc.Seed = steps, lr, lr/10, steps/20, r.Model.MaxSeq, r.Seed
	return tc
}

// SFTStage fine-tunes on canonical solutions of the training bins.
func (r Recipe) SFTStage() *SFT {
	return &SFT{Train: r.fineTune(r.SFT.Steps, r.SFT.LR),
		Corpus: Corpus{Task: r.Task, Difficulties: r.Pretrain.Difficulties, Weights: r.Pretrain.Weights, Docs: r.SFT.Docs,
			Mix: rl.Mix{Full: 1}, Seed: r.Seed + 11}}
}

// DistillStage fine-tunes on a teacher's verified samples of fresh
// problems of the training bins.
func (r Recipe) DistillStage() *Distill {
	t, _ := task.Get(r.Task)
	diffs := r.Distill.Difficulties
	if len(diffs) == 0 {
		diffs = r.RL.Difficulties
	}
	if len(diffs) == 0 && t != nil {
		diffs, _ = t.Difficulties()
	}
	per := max(1, r.Distill.Problems/max(1, len(diffs)))
	return &Distill{Train: r.fineTune(r.Distill.Steps, r.Distill.LR),
		Problems: Problems{Task: r.Task, Difficulties: diffs, Count: per, Seed: r.Seed + 13},
		Samples:  r.Distill.Samples, Temperature: 1, MaxNew: r.MaxNew, Seed: r.Seed}
}

// RMStage trains a reward model on a policy's samples of the training bins.
func (r Recipe) RMStage() *RM {
	return &RM{Problems: Problems{Task: r.Task, Difficulties: r.RL.Difficulties, Count: max(32, r.Pretrain.Docs/80), Seed: r.Seed + 17},
		HeldOut: Problems{Task: r.Task, Difficulties: r.RL.Difficulties, Count: max(16, r.Pretrain.Docs/640), Seed: r.Seed + 1_000_033},
		Samples: r.RM.Samples, MaxNew: r.MaxNew, Train: rl.RMTrainConfig{Steps: r.RM.Steps, Batch: r.RM.Batch, LR: r.RM.LR, Seed: r.Seed}}
}

// RLStage is one RL run of a preset, with the recipe's loop settings.
func (r Recipe) RLStage(preset string) (*rl.Config, error) {
	cfg, err := rl.DefaultConfig(preset)
	if err != nil {
		return nil, err
	}
	cfg.Task, cfg.Steps, cfg.Prompts, cfg.MaxNew, cfg.LR, cfg.MinLR, cfg.Seed =
		r.Task, r.RL.Steps, r.RL.Prompts, r.MaxNew, r.RL.LR, r.RL.LR, r.Seed
	cfg.Difficulties = r.RL.Difficulties
	if cfg.Algo.GroupSize < 2 { // ppo samples one response per prompt: keep the responses per step
		cfg.Prompts *= 8
	}
	return &cfg, nil
}

// EvalStage evaluates a model on the recipe's problems: the same problems
// and the same random draws for every model.
func (r Recipe) EvalStage() *Eval {
	return &Eval{Problems: Problems{Task: r.Task, Difficulties: r.EvalDifficulties(), Count: r.Eval.Problems, Seed: r.Seed + 1_000_003},
		N: r.Eval.N, Temperature: r.Eval.Temperature, TopP: r.Eval.TopP, TopK: r.Eval.TopK, MaxNew: r.MaxNew,
		Seed: r.Seed, Scored: r.Eval.Scored}
}

// defaultTokens is the length of s in the default tokenizer's tokens.
func defaultTokens(s string) (int, error) {
	ids, err := tokenizer.Default().Encode(s)
	return len(ids), err
}
