package rl

import (
	"math"
	"path/filepath"
	"testing"

	"github.com/moerl/moerl/engine/cpu"
	"github.com/moerl/moerl/moe"
	"github.com/moerl/moerl/moe/tokenizer"
	"github.com/moerl/moerl/rl/algo"
)

func tinyModel(t *testing.T) (*moe.Model, *moe.Model, *tokenizer.Tokenizer) {
	t.Helper()
	tok := tokenizer.Default()
	cfg := moe.Config{Vocab: tok.VocabSize(), DModel: 32, Layers: 1, Heads: 2, Experts: 3, TopK: 2, ExpertHidden: 32,
		MaxSeq: 48, RopeTheta: 10000, NormEps: 1e-6, InitStd: 0.05, AuxLossCoef: 0.01}
	be := cpu.New()
	p, err := moe.New(cfg, be, 1)
	if err != nil {
		t.Fatal(err)
	}
	r, _ := moe.New(cfg, be, 1)
	return p, r, tok
}

func tinyRL(t *testing.T, preset string) Config {
	t.Helper()
	c, err := DefaultConfig(preset)
	if err != nil {
		t.Fatal(err)
	}
	c.Steps, c.Prompts, c.MaxNew, c.Difficulties = 3, 3, 12, []int{2}
	if c.Algo.GroupSize < 2 {
		c.Prompts = 6
	}
	c.Algo.GroupSize = min(c.Algo.GroupSize, 4)
	c.Algo.MaxTries = 2
	return c
}

// TestEveryPresetSteps runs each preset for a step on an untrained model:
// the loop runs, the stats are finite, and the log-probs the trainer
// recomputes equal the ones recorded while sampling (ratio 1 before the
// first update) to float rounding.
func TestEveryPresetSteps(t *testing.T) {
	for _, preset := range algo.Presets() {
		t.Run(preset, func(t *testing.T) {
			p, r, tok := tinyModel(t)
			tr, err := NewTrainer(tinyRL(t, preset), p, r, tok)
			if err != nil {
				t.Fatal(err)
			}
			st, err := tr.TrainStep()
			if err != nil {
				t.Fatal(err)
			}
			if st.Groups > 0 && st.LogpGap > 1e-4 {
				t.Errorf("rollout and trainer log-probs differ by %g on average", st.LogpGap)
			}
			for name, v := range map[string]float64{"loss": st.Loss, "entropy": st.Entropy, "kl": st.KLRef, "grad": st.GradNorm} {
				if math.IsNaN(v) || math.IsInf(v, 0) {
					t.Errorf("%s is %v", name, v)
				}
			}
			if st.Groups > 0 && st.KLRef > 1e-6 {
				t.Errorf("KL to the reference before any update is %g, want 0", st.KLRef)
			}
			if (tr.Critic != nil) != tr.Cfg.Algo.Critic {
				t.Errorf("critic present %v, preset wants %v", tr.Critic != nil, tr.Cfg.Algo.Critic)
			}
		})
	}
}

// TestRLResumeBitwise: three steps in one go equal one step, a checkpoint,
// and two more steps after restoring it — for GRPO and for PPO's critic.
func TestRLResumeBitwise(t *testing.T) {
	for _, preset := range []string{"grpo", "ppo"} {
		t.Run(preset, func(t *testing.T) {
			cfg := tinyRL(t, preset)
			p, r, tok := tinyModel(t)
			whole, err := NewTrainer(cfg, p, r, tok)
			if err != nil {
				t.Fatal(err)
			}
			for range 3 {
				if _, err := whole.TrainStep(); err != nil {
					t.Fatal(err)
				}
			}
			p2, r2, _ := tinyModel(t)
			first, _ := NewTrainer(cfg, p2, r2, tok)
			if _, err := first.TrainStep(); err != nil {
				t.Fatal(err)
			}
			dir := t.TempDir()
			pp, cp := filepath.Join(dir, "policy.ck"), filepath.Join(dir, "critic.ck")
			if err := first.Save(pp, cp, "base.ck"); err != nil {
				t.Fatal(err)
			}
			be := cpu.New()
			pol, _, st, err := moe.LoadCheckpoint(pp, be)
			if err != nil {
				t.Fatal(err)
			}
			var critic *moe.Model
			if cfg.Algo.Critic {
				if critic, _, _, err = moe.LoadCheckpoint(cp, be); err != nil {
					t.Fatal(err)
				}
			}
			_, r3, _ := tinyModel(t)
			resumed, _ := NewTrainer(cfg, pol, r3, tok)
			if err := resumed.Restore(st, critic); err != nil {
				t.Fatal(err)
			}
			for range 2 {
				if _, err := resumed.TrainStep(); err != nil {
					t.Fatal(err)
				}
			}
			a, b := whole.Policy.HostParams(), resumed.Policy.HostParams()
			for i := range a {
				if math.Float32bits(a[i]) != math.Float32bits(b[i]) {
					t.Fatalf("policy parameter %d differs after resume: %v vs %v", i, a[i], b[i])
				}
			}
			if cfg.Algo.Critic {
				a, b := whole.Critic.HostParams(), resumed.Critic.HostParams()
				for i := range a {
					if math.Float32bits(a[i]) != math.Float32bits(b[i]) {
						t.Fatalf("critic parameter %d differs after resume", i)
					}
				}
			}
		})
	}
}
