// Package study answers the seed article's question — does RL widen what a
// model can solve, or only sharpen what it already samples? — as one
// experiment: several independent replicates of a base model and of every
// model made from it (RL with each algorithm, KL variants, a distilled
// student), all evaluated on the same problems, and for each of the five
// findings of SPEC-RL.md a verdict decided by a hierarchical bootstrap
// interval (replicates, then problems within each).
//
// A study is a run.Plan: its stages are reused when their settings have
// not changed, and an interrupted study continues where it stopped.
package study

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"slices"

	"github.com/BurntSushi/toml"

	"github.com/moerl/moerl/rl/algo"
	"github.com/moerl/moerl/run"
)

// Config is a study. Every field can be set from a TOML file (the JSON
// names, tables for nested structs) and from the command line
// (--rl.steps 60).
type Config struct {
	// Recipe is what every replicate's stages share: the task, the model,
	// pretraining, the RL loop and the evaluation. Its fields sit at the
	// top level of the file and of the flags (task, rl.steps, eval.n).
	run.Recipe
	// Replicates is the number of independent (pretraining seed, RL seed)
	// pairs.
	Replicates int `json:"replicates" help:"independent replicates, each with its own pretraining seed and RL seed (at least 2 for intervals over replicates)"`
	// Algos are the RL presets compared in finding 4; Main is the one of
	// findings 1 and 2 (the RL model against the base).
	Algos []string `json:"algos" help:"RL presets compared at one sample budget (finding 4)"`
	Main  string   `json:"main" help:"the RL preset of findings 1 and 2 (one of algos)"`
	// Sets override fields of every algorithm, key=value.
	Sets []string `json:"sets" help:"overrides of every algorithm's fields, key=value (e.g. mini_batches=4)"`
	// KL are the two GRPO arms of finding 5: KL coefficient KL[0] against
	// KL[1] (0.001 against 0).
	KL      []float64     `json:"kl" help:"finding 5: GRPO with KL coefficient kl[0] (k3 in the loss) against kl[1]"`
	Teacher TeacherConfig `json:"teacher"`
	Stats   StatsConfig   `json:"stats"`
}

// TeacherConfig is finding 3's teacher: a larger model, pretrained longer
// (and on every evaluated difficulty at full weight), whose verified
// samples a student fine-tuned from each base model learns from.
type TeacherConfig struct {
	DModel       int `json:"d_model" help:"the teacher's model width"`
	ExpertHidden int `json:"expert_hidden" help:"the teacher's expert hidden width"`
	Layers       int `json:"layers" help:"the teacher's layers"`
	Steps        int `json:"steps" help:"the teacher's pretraining steps"`
	// Difficulties are the teacher's pretraining bins, at equal weight
	// (empty: the base's, at equal weight).
	Difficulties []int `json:"difficulties" help:"the teacher's pretraining difficulties, at equal weight; empty: the base model's"`
	// PerReplicate trains one teacher per replicate (its seed varying
	// with the replicate's) instead of one for all.
	PerReplicate bool `json:"per_replicate" help:"train a teacher per replicate instead of one shared by all (slower; the intervals then include the teacher's variance)"`
}

// StatsConfig is the bootstrap and the decision rules.
type StatsConfig struct {
	Resamples int     `json:"resamples" help:"bootstrap resamples (at least 2000 for 95% intervals)"`
	Level     float64 `json:"level" help:"confidence level of the intervals"`
	Seed      uint64  `json:"seed" help:"seed of the bootstrap draws"`
	// Equivalence is the margin δ of the findings that predict no
	// difference ("differ little", "keeps pass@1"): reproduced when the
	// whole interval lies within ±δ.
	Equivalence float64 `json:"equivalence" help:"margin of the findings that predict no difference: reproduced when the whole interval lies within ± this (pass-rate units)"`
}

// Default is the CPU default study (docs/study.md shows its run), on
// addition:
//
//   - pretraining on 2- to 5-digit problems, the longer ones rarer (35%,
//     35%, 20%, 10%), so that the base model is competent at 2 and 3
//     digits, at the edge of competence at 4 (pass@1 0.03 to 0.11 over
//     three seeds tried) and solves some 5-digit problems only at large k
//     (pass@1 0.003 to 0.05, pass@64 0.06 to 0.41);
//   - RL on 3 and 4 digits;
//   - evaluation on 4 and 5 digits, whole bins with no selection of
//     problems by any model's results, so that the choice cannot favour
//     one model (a selection on the base model's calibrated pass rate
//     would pick the problems where it was unlucky or weak, and RL,
//     correlated with it but not perfectly, would regress upward there).
//
// The 5-digit bin is the held-out one of the question "does RL widen":
// no RL stage trains on it and pretraining saw it rarely.
func Default() Config {
	r := run.DefaultRecipe()
	r.Seed = 1
	r.Pretrain.Difficulties, r.Pretrain.Weights = []int{2, 3, 4, 5}, []float64{0.35, 0.35, 0.2, 0.1}
	r.RL.Difficulties = []int{3, 4}
	r.RL.Steps, r.RL.Prompts, r.RL.LR = 40, 8, 1e-4
	r.Distill.Difficulties = []int{2, 3, 4, 5}
	r.Eval.Difficulties, r.Eval.Problems, r.Eval.N, r.Eval.Scored = []int{4, 5}, 32, 256, 16
	return Config{Recipe: r, Replicates: 3,
		Algos: []string{"ppo", "grpo", "dapo", "rloo", "reinforce++", "drgrpo", "omd"}, Main: "grpo",
		KL:      []float64{0.001, 0},
		Teacher: TeacherConfig{DModel: 160, ExpertHidden: 320, Layers: 2, Steps: 800, Difficulties: []int{2, 3, 4, 5}},
		Stats:   StatsConfig{Resamples: 2000, Level: 0.95, Seed: 1, Equivalence: 0.02},
	}
}

// Quick shrinks a study to a smoke test that runs every stage and every
// statistic in seconds.
func (c *Config) Quick() {
	c.Recipe.Quick()
	c.Replicates = 2
	c.Teacher.DModel, c.Teacher.ExpertHidden, c.Teacher.Layers, c.Teacher.Steps = 96, 128, 1, 200
	c.Teacher.Difficulties = nil // the quick base's easiest bin
	c.Stats.Resamples = 200
}

// Validate names the first bad setting.
func (c Config) Validate() error {
	if err := c.Recipe.Validate(); err != nil {
		return err
	}
	switch {
	case c.Replicates < 1:
		return fmt.Errorf("study: replicates must be at least 1, got %d", c.Replicates)
	case len(c.Algos) == 0:
		return errors.New("study: no algorithms")
	case !slices.Contains(c.Algos, c.Main):
		return fmt.Errorf("study: main %q is not one of algos %v", c.Main, c.Algos)
	case len(c.KL) != 2 || c.KL[0] < 0 || c.KL[1] < 0 || c.KL[0] == c.KL[1]:
		return fmt.Errorf("study: kl must be two different coefficients ≥ 0, got %v", c.KL)
	case c.Teacher.DModel <= 0 || c.Teacher.ExpertHidden <= 0 || c.Teacher.Layers <= 0 || c.Teacher.Steps <= 0:
		return errors.New("study: the teacher's d_model, expert_hidden, layers and steps must be positive")
	case c.Stats.Resamples < 100 || !(c.Stats.Level > 0 && c.Stats.Level < 1) || !(c.Stats.Equivalence > 0):
		return errors.New("study: stats need resamples ≥ 100, level in (0, 1) and equivalence > 0")
	}
	for i, a := range c.Algos {
		if _, err := algo.Preset(a); err != nil {
			return fmt.Errorf("study: algos: %w", err)
		}
		if slices.Contains(c.Algos[:i], a) {
			return fmt.Errorf("study: algos lists %s twice", a)
		}
	}
	for _, s := range c.Sets {
		a, _ := algo.Preset(c.Main)
		if err := a.Apply(s); err != nil {
			return fmt.Errorf("study: sets: %w", err)
		}
	}
	return nil
}

// Load reads a study file (TOML) over the defaults (quick: the quick
// defaults). Keys are the JSON names; an unknown key is an error naming it.
func Load(path string, quick bool) (Config, error) {
	c := Default()
	if quick {
		c.Quick()
	}
	if path == "" {
		return c, nil
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return c, fmt.Errorf("study config: %w", err)
	}
	var doc map[string]any
	if _, err := toml.NewDecoder(bytes.NewReader(data)).Decode(&doc); err != nil {
		return c, fmt.Errorf("study config %s: %w", path, err)
	}
	if err := run.MergeInto(&c, doc); err != nil {
		return c, fmt.Errorf("study config %s: %w", path, err)
	}
	return c, nil
}
