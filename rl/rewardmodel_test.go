package rl

import (
	"math"
	"testing"

	"github.com/moerl/moerl/moe"
)

func TestAUC(t *testing.T) {
	cases := []struct {
		pos, neg []float64
		want     float64
	}{
		{[]float64{0.9, 0.8}, []float64{0.1, 0.2}, 1},
		{[]float64{0.1}, []float64{0.9}, 0},
		{[]float64{0.5}, []float64{0.5}, 0.5},
		{[]float64{0.6, 0.4}, []float64{0.5}, 0.5},
		{[]float64{0.7}, []float64{0.2, 0.7, 0.9}, 0.5},
		{nil, []float64{0.3}, 0.5},
	}
	for _, c := range cases {
		if got := auc(c.pos, append([]float64(nil), c.neg...)); math.Abs(got-c.want) > 1e-12 {
			t.Errorf("auc(%v, %v) = %v, want %v", c.pos, c.neg, got, c.want)
		}
	}
}

// TestTrainRMLearnsALabel: on examples whose label is whether the response
// contains token 9, a small reward model learns to rank them (held-out AUC
// well above chance) from a policy's trunk.
func TestTrainRMLearnsALabel(t *testing.T) {
	policy, _, _ := tinyModel(t)
	mk := func(seed int) []RMExample {
		var ex []RMExample
		for i := range 64 {
			tok := int32(10 + (i+seed)%7)
			if (i+seed)%2 == 0 {
				tok = 9
			}
			ex = append(ex, RMExample{Prompt: []int32{1, 20, 21}, Response: []int32{30, tok, 31, 2}, Correct: tok == 9})
		}
		return ex
	}
	train, held := mk(0), mk(1)
	before := EvalRM(mustNewCritic(t, policy), held)
	rm, err := TrainRM(policy, train, RMTrainConfig{Steps: 60, Batch: 16, LR: 3e-3, Seed: 1}, nil)
	if err != nil {
		t.Fatal(err)
	}
	after := EvalRM(rm, held)
	if after.AUC < 0.9 || after.Loss >= before.Loss {
		t.Errorf("reward model: AUC %.3f (want ≥ 0.9), loss %.4f → %.4f", after.AUC, before.Loss, after.Loss)
	}
	if _, err := TrainRM(policy, train[:1], RMTrainConfig{Steps: 1, Batch: 1, LR: 1e-3}, nil); err == nil {
		t.Error("training on one class only was accepted")
	}
}

func mustNewCritic(t *testing.T, m *moe.Model) *moe.Model {
	t.Helper()
	c, err := moe.NewCritic(m)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestRewardSourceModel: a model reward source needs a reward model, and
// with one the step runs.
func TestRewardSourceModel(t *testing.T) {
	cfg := tinyRL(t, "grpo")
	cfg.RewardSource = "model"
	p, r, tok := tinyModel(t)
	tr, err := NewTrainer(cfg, p, r, tok)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tr.TrainStep(); err == nil {
		t.Fatal("a model reward source without a reward model was accepted")
	}
	tr.RM = mustNewCritic(t, p)
	if _, err := tr.TrainStep(); err != nil {
		t.Fatal(err)
	}
	cfg.RewardSource = "oracle"
	if err := cfg.Validate(); err == nil {
		t.Error("an unknown reward source was accepted")
	}
}
