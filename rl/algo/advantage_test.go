package algo

import (
	"fmt"
	"math"
	"strings"
	"testing"
)

// rows expands per-response values to tokens under a mask.
func rows(mask []float32, L int, per []float64) []float64 {
	out := make([]float64, len(mask))
	for p, m := range mask {
		if m != 0 {
			out[p] = per[p/L]
		}
	}
	return out
}

// whitenRef whitens vals (the valid entries, in order) with unbiased std.
func whitenRef(vals []float64, eps float64) []float64 {
	mean := 0.0
	for _, v := range vals {
		mean += v
	}
	mean /= float64(len(vals))
	ss := 0.0
	for _, v := range vals {
		ss += (v - mean) * (v - mean)
	}
	std := math.Sqrt(ss / float64(len(vals)-1))
	out := make([]float64, len(vals))
	for i, v := range vals {
		out[i] = (v - mean) / (std + eps)
	}
	return out
}

// scatter places vals on the valid positions of mask, in order.
func scatter(mask []float32, vals []float64) []float64 {
	out := make([]float64, len(mask))
	k := 0
	for p, m := range mask {
		if m != 0 {
			out[p] = vals[k]
			k++
		}
	}
	return out
}

func closeSlices(t *testing.T, name string, got []float32, want []float64, tol float64) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: length %d, want %d", name, len(got), len(want))
	}
	for i := range got {
		if math.Abs(float64(got[i])-want[i]) > tol*(1+math.Abs(want[i])) || math.IsNaN(float64(got[i])) {
			t.Errorf("%s[%d] = %v, want %v", name, i, got[i], want[i])
		}
	}
}

func TestGroupAdvantages(t *testing.T) {
	// Group 7 is responses 0..2 with rewards 1, 0, 0.5; group 9 is a single
	// response. Padding carries junk log-probs that must not count.
	mask := []float32{1, 1, 0, 1, 1, 1, 1, 0, 0, 1, 1, 1}
	base := Batch{
		B: 4, L: 3, Mask: mask,
		Rewards: []float64{1, 0, 0.5, 3},
		Groups:  []int{7, 7, 7, 9},
		OldLogp: []float32{-1, -1, 50, -1, -1, -1, -1, 50, 50, -1, -1, -1},
		RefLogp: []float32{-1.5, -1.5, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1},
	}
	tests := []struct {
		name     string
		adv      AdvantageEstimator
		klCoef   float64 // with KL (k1) in the reward when > 0
		want     []float64
		wantRets []float64
	}{
		{"group", Group, 0, []float64{1, -1, 0, 0}, []float64{1, 0, 0.5, 3}},
		{"group-mean", GroupMean, 0, []float64{0.5, -0.5, 0, 0}, []float64{1, 0, 0.5, 3}},
		{"rloo", RLOO, 0, []float64{0.75, -0.75, 0, 0}, []float64{1, 0, 0.5, 3}},
		// Response 0's two tokens have k1 = 0.5 each: r_0 = 1 − 0.1·1.
		{"rloo+kl", RLOO, 0.1, []float64{0.9 - 0.25, 0 - 0.7, 0.5 - 0.45, 0}, []float64{0.9, 0, 0.5, 3}},
		{"group-mean+kl", GroupMean, 0.1, []float64{0.9 - 1.4/3, -1.4 / 3, 0.5 - 1.4/3, 0}, []float64{0.9, 0, 0.5, 3}},
		// pass@k: only the best of group 7 gets r_max − r_second.
		{"passk", PassK, 0, []float64{1 - 0.5, 0, 0, 0}, []float64{1, 0, 0.5, 3}},
		{"passk+kl", PassK, 0.1, []float64{0.9 - 0.5, 0, 0, 0}, []float64{0.9, 0, 0.5, 3}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg, _ := Preset("grpo")
			cfg.Advantage, cfg.StdEps, cfg.KLPlacement, cfg.KLEstimator = tc.adv, 0, KLNone, K1
			if tc.klCoef > 0 {
				cfg.KLPlacement, cfg.KLCoef = KLReward, tc.klCoef
			}
			b := base
			adv, ret, err := ComputeAdvantages(cfg, &b)
			if err != nil {
				t.Fatal(err)
			}
			closeSlices(t, "adv", adv, rows(mask, 3, tc.want), 1e-6)
			closeSlices(t, "returns", ret, rows(mask, 3, tc.wantRets), 1e-6)
		})
	}

	// ε_std enters as std + ε: std of {1, 0, 0.5} is 0.5.
	cfg, _ := Preset("grpo")
	b := base
	adv, _, _ := ComputeAdvantages(cfg, &b)
	if want := 0.5 / (0.5 + 1e-6); math.Abs(float64(adv[0])-want) > 1e-7 {
		t.Errorf("group adv with ε_std = %v, want %v", adv[0], want)
	}
}

func TestGroupAllEqualAndSingletons(t *testing.T) {
	for _, est := range []AdvantageEstimator{Group, GroupMean, RLOO, PassK} {
		cfg, _ := Preset("grpo")
		cfg.Advantage, cfg.StdEps = est, 0 // ε = 0: a zero std must not divide
		b := Batch{
			B: 5, L: 1, Mask: []float32{1, 1, 1, 1, 1},
			Rewards: []float64{0.1, 0.1, 0.1, 2, -4},
			Groups:  []int{0, 0, 0, 1, 2},
		}
		adv, _, err := ComputeAdvantages(cfg, &b)
		if err != nil {
			t.Fatal(err)
		}
		for i, a := range adv {
			if a != 0 {
				t.Errorf("%s: adv[%d] = %v, want 0 (all-equal group or group of one)", est, i, a)
			}
		}
	}
}

// TestPassKTies: with two best responses, r_max − r_second is 0, so no
// response of the group is pushed up; the best alone gets the margin.
func TestPassKTies(t *testing.T) {
	cfg, _ := Preset("grpo")
	cfg.Advantage, cfg.KLPlacement = PassK, KLNone
	tests := []struct {
		rewards []float64
		want    []float64
	}{
		{[]float64{1, 0.1, 1, 0}, []float64{0, 0, 0, 0}},
		{[]float64{0.1, 1, 0, 0.1}, []float64{0, 0.9, 0, 0}},
		{[]float64{-1, -1, -1, 1}, []float64{0, 0, 0, 2}},
	}
	for _, tc := range tests {
		b := Batch{B: 4, L: 1, Mask: []float32{1, 1, 1, 1}, Rewards: tc.rewards, Groups: []int{5, 5, 5, 5}}
		adv, _, err := ComputeAdvantages(cfg, &b)
		if err != nil {
			t.Fatal(err)
		}
		closeSlices(t, fmt.Sprint("passk ", tc.rewards), adv, tc.want, 1e-6)
	}
}

func TestGAE(t *testing.T) {
	mask := []float32{1, 1, 1, 1, 0, 0}
	values := []float32{0.5, 0.6, 0.7, 0.2, 9, 9}
	tests := []struct {
		name     string
		klCoef   float64
		raw, ret []float64 // pre-whitening advantages and returns on valid tokens
	}{
		// λ = 0.5, γ = 1: δ_2 = 1 − 0.7, δ_1 = 0.7 − 0.6, δ_0 = 0.6 − 0.5.
		{"no kl", 0, []float64{0.225, 0.25, 0.3, -0.2}, []float64{0.725, 0.85, 1, 0}},
		// β_r = 0.5 and k1 = 0.2, 0.4, 0 on row 0: r = −0.1, −0.2, 1.
		{"kl in reward", 0.5, []float64{0.025, 0.05, 0.3, -0.2}, []float64{0.525, 0.65, 1, 0}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg, _ := Preset("ppo")
			cfg.Lambda, cfg.KLCoef = 0.5, tc.klCoef
			b := Batch{
				B: 2, L: 3, Mask: mask, OldValues: values,
				Rewards: []float64{1, 0},
				OldLogp: []float32{-1, -1, -1, -1, 7, 7},
				RefLogp: []float32{-1.2, -1.4, -1, -1, 0, 0},
			}
			adv, ret, err := ComputeAdvantages(cfg, &b)
			if err != nil {
				t.Fatal(err)
			}
			closeSlices(t, "returns", ret, scatter(mask, tc.ret), 1e-6)
			closeSlices(t, "adv", adv, scatter(mask, whitenRef(tc.raw, 1e-6)), 1e-5)
		})
	}
}

func TestReinforcePP(t *testing.T) {
	mask := []float32{1, 1, 1, 1, 1, 1}
	b := Batch{
		B: 3, L: 2, Mask: mask,
		Rewards: []float64{1, 0, 0.5},
		Groups:  []int{0, 0, 1},
		OldLogp: []float32{0, 0, 0, 0, 0, 0},
		RefLogp: []float32{-1, 0, 0, 0, 0, -2}, // k1 = 1 and 2 on two tokens
	}
	tests := []struct {
		adv AdvantageEstimator
		ret []float64
	}{
		// Token rewards: row 0 (−0.1, 1), row 1 (0, 0), row 2 (0, −0.2+0.5).
		{ReinforcePP, []float64{0.9, 1, 0, 0, 0.3, 0.3}},
		// Group means 0.5 and (group of one) 0.5: rows 0..2 get 0.5, −0.5, 0.
		{ReinforcePPBaseline, []float64{0.4, 0.5, -0.5, -0.5, -0.2, -0.2}},
	}
	for _, tc := range tests {
		cfg, _ := Preset("reinforce++")
		cfg.Advantage, cfg.KLCoef = tc.adv, 0.1
		adv, ret, err := ComputeAdvantages(cfg, &b)
		if err != nil {
			t.Fatal(err)
		}
		closeSlices(t, string(tc.adv)+" returns", ret, tc.ret, 1e-6)
		closeSlices(t, string(tc.adv)+" adv", adv, whitenRef(tc.ret, 1e-6), 1e-5)
	}
}

func TestAdvantageInputErrors(t *testing.T) {
	grpo, _ := Preset("grpo")
	ppo, _ := Preset("ppo")
	ok := Batch{B: 2, L: 1, Mask: []float32{1, 1}, Rewards: []float64{1, 0}, Groups: []int{0, 0}}
	tests := []struct {
		name string
		cfg  Config
		edit func(b *Batch)
		want string
	}{
		{"no groups", grpo, func(b *Batch) { b.Groups = nil }, "groups has length 0, want 2"},
		{"short rewards", grpo, func(b *Batch) { b.Rewards = b.Rewards[:1] }, "rewards"},
		{"nan reward", grpo, func(b *Batch) { b.Rewards = []float64{math.NaN(), 0} }, "reward 0 is NaN"},
		{"bad mask", grpo, func(b *Batch) { b.Mask = []float32{1, 0.5} }, "0 or 1"},
		{"bad shape", grpo, func(b *Batch) { b.B = 0 }, "shape"},
		{"no values", ppo, func(b *Batch) {}, "old values"},
		{"bad config", Config{}, func(b *Batch) {}, "algorithm config"},
	}
	for _, tc := range tests {
		b := ok
		tc.edit(&b)
		_, _, err := ComputeAdvantages(tc.cfg, &b)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %v, want one containing %q", tc.name, err, tc.want)
		}
	}
	if _, _, err := ComputeAdvantages(grpo, nil); err == nil {
		t.Error("nil batch: no error")
	}
}

func TestKL(t *testing.T) {
	tests := []struct {
		est       KLEstimator
		l, ref    float64
		value, dv float64
	}{
		{K1, -1, -1.5, 0.5, 1},
		{K2, -1, -1.5, 0.125, 0.5},
		{K3, -1, -1.5, math.Exp(-0.5) + 0.5 - 1, 1 - math.Exp(-0.5)},
		{K3, -2, -2, 0, 0},
		{K3, 0, -30, math.Exp(-20) + 20 - 1, 0}, // clamped
	}
	for _, tc := range tests {
		v, d := KL(tc.est, tc.l, tc.ref)
		if math.Abs(v-tc.value) > 1e-12 || math.Abs(d-tc.dv) > 1e-12 {
			t.Errorf("KL(%s, %v, %v) = %v, %v; want %v, %v", tc.est, tc.l, tc.ref, v, d, tc.value, tc.dv)
		}
	}
	if v, _ := KL("k9", 0, 0); !math.IsNaN(v) {
		t.Errorf("unknown estimator gave %v, want NaN", v)
	}
}

func BenchmarkComputeAdvantagesGAE(b *testing.B) {
	cfg, _ := Preset("ppo")
	const B, L = 64, 512
	batch := &Batch{B: B, L: L, Mask: make([]float32, B*L), OldValues: make([]float32, B*L),
		OldLogp: make([]float32, B*L), RefLogp: make([]float32, B*L), Rewards: make([]float64, B)}
	for p := range batch.Mask {
		batch.Mask[p] = 1
	}
	for range b.N {
		if _, _, err := ComputeAdvantages(cfg, batch); err != nil {
			b.Fatal(err)
		}
	}
}
