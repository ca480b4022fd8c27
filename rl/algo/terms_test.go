package algo

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"
)

// withRollout gives b rollout log-probs within ±1 of OldLogp, so that the
// token weights w = exp(l° − l^roll) fall on both sides of C = 2 and so do
// some responses' products.
func withRollout(rng *rand.Rand, b *Batch) {
	b.RolloutLogp = make([]float32, len(b.OldLogp))
	for p := range b.OldLogp {
		b.RolloutLogp[p] = quantize(float64(b.OldLogp[p]) - 1 + 2*rng.Float64())
	}
}

// withEntropy gives b per-token entropies in [0, 3) nats.
func withEntropy(rng *rand.Rand, b *Batch) {
	b.Entropy = make([]float32, len(b.OldLogp))
	for p := range b.Entropy {
		b.Entropy[p] = quantize(3 * rng.Float64())
	}
}

// gspoSafe reports whether every response's mean log-ratio is away from
// GSPO's clip kinks by more than a finite difference moves it.
func gspoSafe(cfg Config, b *Batch) bool {
	for i := range b.B {
		var s float64
		n := 0
		for t := range b.L {
			if p := i*b.L + t; b.Mask[p] != 0 {
				s += float64(b.NewLogp[p]) - float64(b.OldLogp[p])
				n++
			}
		}
		if n == 0 {
			continue
		}
		for _, k := range []float64{math.Log(1 - cfg.ClipLow), math.Log(1 + cfg.ClipHigh)} {
			if math.Abs(s/float64(n)-k) < 0.01 {
				return false
			}
		}
	}
	return true
}

// TestTermsGradient checks every policy term's gradient against float64
// central differences under every rollout correction it allows, every
// aggregation, with and without the KL in the loss and the entropy bonus.
// CISPO's clipped ratio is a stop-gradient: its derivative is taken with
// l°, and l^roll with it, moved along with l, which keeps ρ and the
// correction's weight fixed and moves only the log π factor.
func TestTermsGradient(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	terms := []PolicyTerm{Clip, OMD, GSPO, CISPO}
	aggs := []Aggregation{SeqMeanTokenMean, TokenMean, SeqMeanTokenSumNorm, SeqMeanTokenSum}
	var sawClip, sawMasked, sawTruncated bool
	for _, term := range terms {
		for _, corr := range Allowed("rollout_correction") {
			for _, agg := range aggs {
				for _, kl := range []bool{false, true} {
					cfg, _ := Preset("grpo")
					cfg.PolicyLoss, cfg.Aggregation, cfg.ClipHigh = term, agg, 0.28
					cfg.RolloutCorrection = RolloutCorrection(corr)
					cfg.Tau, cfg.EntropyCoef = 0.1, 0.05
					cfg.KLPlacement, cfg.KLCoef = KLNone, 0
					if kl {
						cfg.KLPlacement, cfg.KLCoef = KLLoss, 0.3
					}
					if term == CISPO {
						cfg.ClipLow = 0.2
					}
					if cfg.Validate() != nil {
						continue // a token-level correction of a per-response term
					}
					name := fmt.Sprintf("%s/%s/%s/kl=%v", term, corr, agg, kl)
					b := randomBatch(rng, cfg, 6, 5)
					for term == GSPO && !gspoSafe(cfg, b) {
						b = randomBatch(rng, cfg, 6, 5)
					}
					withRollout(rng, b)
					withEntropy(rng, b)
					loss, grad, st, err := PolicyLoss(cfg, b)
					if err != nil {
						t.Fatalf("%s: %v", name, err)
					}
					if want := st.PolicyLoss + st.KLLoss + st.EntropyLoss; math.Abs(loss-want) > 1e-12 || st.EntropyLoss == 0 {
						t.Errorf("%s: loss %v, want policy %v + KL %v + entropy %v", name, loss, st.PolicyLoss, st.KLLoss, st.EntropyLoss)
					}
					sawClip = sawClip || st.ClipFrac > 0
					if w, _ := RolloutWeights(cfg, b); w != nil {
						for p, x := range w {
							sawMasked = sawMasked || b.Mask[p] != 0 && x == 0
							sawTruncated = sawTruncated || x == cfg.RolloutISCap
						}
					}
					shift := func(p int, d float32) {
						b.NewLogp[p] += d
						if term == CISPO {
							b.OldLogp[p] += d
							b.RolloutLogp[p] += d
						}
					}
					eval := func() float64 {
						l, _, _, err := PolicyLoss(cfg, b)
						if err != nil {
							t.Fatal(err)
						}
						return l
					}
					for p := range b.NewLogp {
						shift(p, fdStep)
						up := eval()
						shift(p, -2*fdStep)
						down := eval()
						shift(p, fdStep)
						fd := (up - down) / (2 * fdStep)
						if math.Abs(fd-float64(grad[p])) > 1e-6+1e-4*math.Abs(fd) {
							t.Errorf("%s: d/dl[%d] = %v, finite difference %v", name, p, grad[p], fd)
						}
						if b.Mask[p] == 0 && grad[p] != 0 {
							t.Errorf("%s: gradient %v at padding %d", name, grad[p], p)
						}
					}
				}
			}
		}
	}
	if !sawClip || !sawMasked || !sawTruncated {
		t.Errorf("the batches never clipped (%v), masked (%v) or truncated (%v) a weight: branches not covered", sawClip, sawMasked, sawTruncated)
	}
}

// TestEntropyBonus: the entropy term is −c_H times the aggregated entropy,
// its gradient with respect to each H_t is what EntropyBonus returns (by
// finite differences), and it leaves the gradient with respect to the
// log-probs bit for bit as it was.
func TestEntropyBonus(t *testing.T) {
	rng := rand.New(rand.NewPCG(8, 9))
	for _, agg := range []Aggregation{SeqMeanTokenMean, TokenMean, SeqMeanTokenSumNorm, SeqMeanTokenSum} {
		for _, filter := range []bool{false, true} {
			cfg, _ := Preset("grpo")
			cfg.Aggregation, cfg.OverlongFilter = agg, filter
			b := randomBatch(rng, cfg, 6, 5)
			withEntropy(rng, b)
			plain, gradPlain, stPlain, err := PolicyLoss(cfg, b)
			if err != nil {
				t.Fatal(err)
			}
			cfg.EntropyCoef = 0.01
			loss, grad, st, err := PolicyLoss(cfg, b)
			if err != nil {
				t.Fatal(err)
			}
			bonus, dH, err := EntropyBonus(cfg, b)
			if err != nil {
				t.Fatal(err)
			}
			name := fmt.Sprintf("%s/filter=%v", agg, filter)
			if math.Abs(loss-(plain+bonus)) > 1e-12 || bonus >= 0 || st.EntropyLoss != bonus || stPlain.Entropy != st.Entropy || st.Entropy <= 0 {
				t.Errorf("%s: loss %v = %v + bonus %v? stats %+v", name, loss, plain, bonus, st)
			}
			for p := range grad {
				if math.Float32bits(grad[p]) != math.Float32bits(gradPlain[p]) {
					t.Fatalf("%s: the entropy bonus changed d/dl[%d]: %v, was %v", name, p, grad[p], gradPlain[p])
				}
			}
			checkGradient(t, "entropy "+name, b.Entropy, dH, func() float64 {
				l, _, _, err := PolicyLoss(cfg, b)
				if err != nil {
					t.Fatal(err)
				}
				return l
			})
		}
	}
	cfg, _ := Preset("grpo")
	cfg.EntropyCoef = 0.01
	b := randomBatch(rng, cfg, 2, 3)
	if _, _, _, err := PolicyLoss(cfg, b); err == nil {
		t.Error("entropy bonus without entropies: no error")
	}
}

// TestCorrectionIdentity: when the sampler and the trainer agree bit for
// bit (l^roll = l°, so w ≡ 1), every correction gives the loss and the
// gradient of none, bit for bit.
func TestCorrectionIdentity(t *testing.T) {
	for _, preset := range []string{"grpo", "dapo", "gspo", "cispo", "omd", "drgrpo"} {
		base, _ := Preset(preset)
		b := randomBatch(rand.New(rand.NewPCG(3, 3)), base, 6, 5)
		b.RolloutLogp = b.OldLogp
		want, wantGrad, _, err := PolicyLoss(base, b)
		if err != nil {
			t.Fatal(err)
		}
		for _, corr := range Allowed("rollout_correction") {
			cfg := base
			cfg.RolloutCorrection = RolloutCorrection(corr)
			if cfg.Validate() != nil {
				continue
			}
			loss, grad, _, err := PolicyLoss(cfg, b)
			if err != nil {
				t.Fatal(err)
			}
			if math.Float64bits(loss) != math.Float64bits(want) {
				t.Errorf("%s/%s: loss %v, without the correction %v", preset, corr, loss, want)
			}
			for p := range grad {
				if math.Float32bits(grad[p]) != math.Float32bits(wantGrad[p]) {
					t.Errorf("%s/%s: d/dl[%d] %v, without the correction %v", preset, corr, p, grad[p], wantGrad[p])
					break
				}
			}
		}
	}
}

// TestRolloutWeights checks each correction's weights and the mismatch
// metrics on a hand batch: row 0 has token weights 3 and 0.5 (product
// 1.5), row 1 1.5 and 1.6 (product 2.4); C = 2.
func TestRolloutWeights(t *testing.T) {
	lw := func(x ...float64) []float32 {
		out := make([]float32, len(x))
		for i, v := range x {
			out[i] = float32(math.Log(v))
		}
		return out
	}
	old := lw(3, 0.5, 1.5, 1.6) // l^roll = 0, so l° = log w
	roll := make([]float32, 4)
	mask := []float32{1, 1, 1, 1}
	w32 := func(i int) float64 { return math.Exp(float64(old[i])) }
	tests := []struct {
		corr       RolloutCorrection
		want       []float64
		masked     float64
		ess        float64
		sequenceWs []float64 // the weights ESS counts
	}{
		{CorrectionNone, nil, 0.25, 0, []float64{w32(0), w32(1), w32(2), w32(3)}},
		{TokenTIS, []float64{2, w32(1), w32(2), w32(3)}, 0.25, 0, []float64{2, w32(1), w32(2), w32(3)}},
		{TokenMIS, []float64{0, w32(1), w32(2), w32(3)}, 0.25, 0, []float64{0, w32(1), w32(2), w32(3)}},
		{SeqTIS, []float64{w32(0) * w32(1), w32(0) * w32(1), 2, 2}, 0.5, 0, []float64{w32(0) * w32(1), 2}},
		{SeqMIS, []float64{w32(0) * w32(1), w32(0) * w32(1), 0, 0}, 0.5, 0.5, []float64{w32(0) * w32(1), 0}},
	}
	for _, tc := range tests {
		cfg, _ := Preset("grpo")
		cfg.RolloutCorrection = tc.corr
		b := &Batch{B: 2, L: 2, Mask: mask, OldLogp: old, RolloutLogp: roll}
		w, err := RolloutWeights(cfg, b)
		if err != nil {
			t.Fatal(err)
		}
		if (w == nil) != (tc.want == nil) {
			t.Fatalf("%s: weights %v, want %v", tc.corr, w, tc.want)
		}
		for p := range tc.want {
			if math.Abs(w[p]-tc.want[p]) > 1e-6*tc.want[p] {
				t.Errorf("%s: weight %d = %v, want %v", tc.corr, p, w[p], tc.want[p])
			}
		}
		st, err := MeasureRollout(cfg, old, roll, mask, 2)
		if err != nil {
			t.Fatal(err)
		}
		var sum, sq, gap, gapMax, kl float64
		for _, x := range tc.sequenceWs {
			sum, sq = sum+x, sq+x*x
		}
		for p := range old {
			d := float64(old[p])
			gap += math.Abs(d) / 4
			gapMax = math.Max(gapMax, math.Abs(d))
			kl += (math.Exp(d) - 1 - d) / 4
		}
		ess := sum * sum / (float64(len(tc.sequenceWs)) * sq)
		if math.Abs(st.ESS-ess) > 1e-9 || st.MaskedFrac != tc.masked || math.Abs(st.GapMean-gap) > 1e-9 ||
			st.GapMax != gapMax || math.Abs(st.KL-kl) > 1e-9 {
			t.Errorf("%s: stats %+v; want ess %v masked %v gap %v max %v kl %v", tc.corr, st, ess, tc.masked, gap, gapMax, kl)
		}
		if tc.ess != 0 && math.Abs(st.ESS-tc.ess) > 1e-9 {
			t.Errorf("%s: ess %v, want %v", tc.corr, st.ESS, tc.ess)
		}
	}
	cfg, _ := Preset("grpo")
	cfg.RolloutCorrection = TokenTIS
	if _, err := RolloutWeights(cfg, &Batch{B: 2, L: 2, Mask: mask, OldLogp: old}); err == nil {
		t.Error("a correction without rollout log-probs: no error")
	}
	if _, err := MeasureRollout(cfg, old, roll[:3], mask, 2); err == nil {
		t.Error("MeasureRollout with short rollout log-probs: no error")
	}
	if st, err := MeasureRollout(cfg, old, old, make([]float32, 4), 2); err != nil || st != (RolloutStats{}) {
		t.Errorf("no valid token: %+v, %v", st, err)
	}
	if st, _ := MeasureRollout(cfg, old, old, mask, 2); st.ESS != 1 || st.KL != 0 || st.GapMax != 0 || st.MaskedFrac != 0 {
		t.Errorf("agreeing log-probs: %+v, want ESS 1 and no gap", st)
	}
}

// TestGSPOLoss: a hand case with the paper's clip range. Response 0 (two
// tokens, mean log-ratio 0.002, Â = 1) is above 1 + ε_high: clipped, no
// gradient. Response 1 (one token, log-ratio −1e-4, Â = −1) is inside:
// loss s, gradient s/B on its token.
func TestGSPOLoss(t *testing.T) {
	cfg, _ := Preset("gspo")
	b := &Batch{B: 2, L: 2, Mask: []float32{1, 1, 1, 0},
		NewLogp:    []float32{-1 + 0.001, -2 + 0.003, -1 - 0.0001, 3},
		OldLogp:    []float32{-1, -2, -1, 0},
		Advantages: []float32{1, 1, -1, 0}}
	loss, grad, st, err := PolicyLoss(cfg, b)
	if err != nil {
		t.Fatal(err)
	}
	s1 := math.Exp(float64(b.NewLogp[2]) - float64(b.OldLogp[2]))
	if want := (-(1 + 4e-4) + s1) / 2; math.Abs(loss-want) > 1e-7 {
		t.Errorf("gspo loss %v, want %v", loss, want)
	}
	closeSlices(t, "gspo grad", grad, []float64{0, 0, s1 / 2, 0}, 1e-6)
	if math.Abs(st.ClipFrac-2.0/3) > 1e-12 {
		t.Errorf("clip_frac %v, want 2/3 (the tokens of the clipped response)", st.ClipFrac)
	}
}

// TestCISPOLoss: a hand case. Token 0: ρ = 1.5 clipped to 1.2, Â = 1,
// l = −1: ℓ = 1.2, dℓ/dl = −1.2. Token 1: ρ = 0.5, no lower bound
// (ε_low = 1), Â = −1, l = −2: ℓ = −1, dℓ/dl = 0.5. Token-mean over two
// tokens. A clamped log-ratio keeps its gradient.
func TestCISPOLoss(t *testing.T) {
	cfg, _ := Preset("cispo")
	lr0 := float32(math.Log(1.5))
	b := &Batch{B: 1, L: 2, Mask: []float32{1, 1},
		NewLogp:    []float32{-1, -2},
		OldLogp:    []float32{-1 - lr0, -2 + float32(math.Log(2))},
		Advantages: []float32{1, -1}}
	loss, grad, st, err := PolicyLoss(cfg, b)
	if err != nil {
		t.Fatal(err)
	}
	if math.Abs(loss-0.1) > 1e-6 || st.ClipFrac != 0.5 {
		t.Errorf("cispo loss %v clip_frac %v, want 0.1 and 0.5", loss, st.ClipFrac)
	}
	closeSlices(t, "cispo grad", grad, []float64{-0.6, 0.25}, 1e-6)
	b.OldLogp[0] = -31 // log-ratio 30, clamped to 20: still weighted 1.2
	_, grad, _, _ = PolicyLoss(cfg, b)
	closeSlices(t, "cispo grad, clamped ratio", grad, []float64{-0.6, 0.25}, 1e-6)
}
