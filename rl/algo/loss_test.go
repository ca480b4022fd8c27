package algo

import (
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"testing"
)

// quantum is the grid test log-probs live on: values on it, and those
// values ± fdStep, are exact in float32, so float64 finite differences of a
// loss that computes in float64 see no float32 rounding.
const (
	quantum = 1.0 / 4096
	fdStep  = 1.0 / 1024
)

func quantize(x float64) float32 { return float32(math.Round(x/quantum) * quantum) }

// nearKink reports whether log-ratio x is within the finite-difference
// reach of a point where the clipped loss is not differentiable.
func nearKink(x float64, cfg Config) bool {
	kinks := []float64{math.Log(1 - cfg.ClipLow), math.Log(1 + cfg.ClipHigh)}
	if cfg.DualClip > 0 {
		kinks = append(kinks, math.Log(cfg.DualClip))
	}
	for _, k := range kinks {
		if math.Abs(x-k) < 0.02 {
			return true
		}
	}
	return false
}

// randomBatch returns a batch with ragged masks, one response masked out
// entirely, one truncated response, and log-ratios in [−1.5, 1.5] away from
// the clip kinks of cfg.
func randomBatch(rng *rand.Rand, cfg Config, B, L int) *Batch {
	b := &Batch{B: B, L: L}
	n := B * L
	b.NewLogp, b.OldLogp, b.RefLogp = make([]float32, n), make([]float32, n), make([]float32, n)
	b.Mask, b.Advantages = make([]float32, n), make([]float32, n)
	b.Truncated = make([]bool, B)
	b.Truncated[1] = true
	for i := range B {
		length := 1 + rng.IntN(L)
		if i == B-1 {
			length = 0
		}
		rowAdv := rng.NormFloat64()
		for t := range L {
			p := i*L + t
			if t < length {
				b.Mask[p] = 1
			}
			b.OldLogp[p] = quantize(-3 + 2.9*rng.Float64())
			var x float64
			for x = -1.5 + 3*rng.Float64(); nearKink(x, cfg); x = -1.5 + 3*rng.Float64() {
			}
			b.NewLogp[p] = quantize(float64(b.OldLogp[p]) + x)
			b.RefLogp[p] = quantize(float64(b.NewLogp[p]) - 1 + 2*rng.Float64())
			if policyTerms.must(string(cfg.PolicyLoss)).is.sequence {
				b.Advantages[p] = float32(rowAdv)
			} else {
				b.Advantages[p] = float32(rng.NormFloat64())
			}
		}
	}
	return b
}

// checkGradient compares grad with float64 central differences of f with
// respect to x at every index.
func checkGradient(t *testing.T, name string, x []float32, grad []float32, f func() float64) {
	t.Helper()
	for p := range x {
		orig := x[p]
		x[p] = orig + fdStep
		up := f()
		x[p] = orig - fdStep
		down := f()
		x[p] = orig
		fd := (up - down) / (2 * fdStep)
		if math.Abs(fd-float64(grad[p])) > 1e-6+1e-4*math.Abs(fd) {
			t.Errorf("%s: d/dx[%d] = %v, finite difference %v", name, p, grad[p], fd)
		}
	}
}

func TestPolicyLossGradient(t *testing.T) {
	aggs := []Aggregation{SeqMeanTokenMean, TokenMean, SeqMeanTokenSumNorm, SeqMeanTokenSum}
	type klCase struct {
		place KLPlacement
		est   KLEstimator
	}
	kls := []klCase{{KLNone, K1}, {KLLoss, K1}, {KLLoss, K2}, {KLLoss, K3}}
	rng := rand.New(rand.NewPCG(1, 2))
	var sawClip, sawDual bool
	for _, term := range []PolicyTerm{Clip, OMD} {
		for _, agg := range aggs {
			for _, dual := range []float64{0, 3} {
				if term == OMD && dual != 0 {
					continue
				}
				for _, kl := range kls {
					for _, filter := range []bool{false, true} {
						cfg, _ := Preset("grpo")
						if term == OMD {
							cfg, _ = Preset("omd")
						}
						cfg.Aggregation, cfg.DualClip, cfg.OverlongFilter = agg, dual, filter
						cfg.KLPlacement, cfg.KLEstimator, cfg.KLCoef = kl.place, kl.est, 0.3
						cfg.ClipHigh = 0.28
						name := fmt.Sprintf("%s/%s/dual=%v/kl=%s-%s/filter=%v", term, agg, dual, kl.place, kl.est, filter)
						b := randomBatch(rng, cfg, 6, 5)
						loss, grad, st, err := PolicyLoss(cfg, b)
						if err != nil {
							t.Fatalf("%s: %v", name, err)
						}
						if st.Loss != loss || math.Abs(st.PolicyLoss+st.KLLoss-loss) > 1e-12 {
							t.Errorf("%s: stats loss %v = %v + %v, returned %v", name, st.Loss, st.PolicyLoss, st.KLLoss, loss)
						}
						if (kl.place == KLLoss) != (st.KLLoss != 0) {
							t.Errorf("%s: KL loss %v", name, st.KLLoss)
						}
						sawClip = sawClip || st.ClipFrac > 0
						sawDual = sawDual || st.DualClipFrac > 0
						checkGradient(t, name, b.NewLogp, grad, func() float64 {
							l, _, _, err := PolicyLoss(cfg, b)
							if err != nil {
								t.Fatal(err)
							}
							return l
						})
						for p, g := range grad {
							if b.Mask[p] == 0 && g != 0 || filter && p/b.L == 1 && g != 0 {
								t.Errorf("%s: gradient %v at token %d outside the loss mask", name, g, p)
							}
						}
					}
				}
			}
		}
	}
	if !sawClip || !sawDual {
		t.Errorf("random batches never clipped (%v) or dual-clipped (%v): the test does not cover those branches", sawClip, sawDual)
	}
}

// TestRatioOne checks that at new = old the clipped surrogate's gradient is
// the plain policy gradient −Â·m/normaliser, for each aggregation.
func TestRatioOne(t *testing.T) {
	// Rows: 2 tokens, 3 tokens, none, 1 token; L = 4.
	mask := []float32{1, 1, 0, 0, 1, 1, 1, 0, 0, 0, 0, 0, 1, 0, 0, 0}
	lens := []float64{2, 3, 0, 1}
	logp := make([]float32, len(mask))
	adv := make([]float32, len(mask))
	for p := range mask {
		logp[p] = -0.5 - float32(p)/10
		adv[p] = float32(p%5) - 2
	}
	norm := map[Aggregation]func(row int) float64{
		SeqMeanTokenMean:    func(row int) float64 { return 3 * lens[row] },
		TokenMean:           func(int) float64 { return 6 },
		SeqMeanTokenSumNorm: func(int) float64 { return 3 * 4 },
		SeqMeanTokenSum:     func(int) float64 { return 3 },
	}
	for agg, nf := range norm {
		cfg, _ := Preset("dapo")
		cfg.Aggregation, cfg.DualClip = agg, 3
		b := &Batch{B: 4, L: 4, Mask: mask, NewLogp: logp, OldLogp: logp, Advantages: adv}
		loss, grad, st, err := PolicyLoss(cfg, b)
		if err != nil {
			t.Fatal(err)
		}
		wantLoss := 0.0
		for p, m := range mask {
			want := 0.0
			if m != 0 {
				want = -float64(adv[p]) / nf(p/4)
				wantLoss += want
			}
			if math.Abs(float64(grad[p])-want) > 1e-7 {
				t.Errorf("%s: grad[%d] = %v, want %v", agg, p, grad[p], want)
			}
		}
		if math.Abs(loss-wantLoss) > 1e-12 || st.ClipFrac != 0 || st.RatioMean != 1 || st.ApproxKL != 0 || st.Tokens != 6 || st.Sequences != 3 {
			t.Errorf("%s: loss %v (want %v), stats %+v", agg, loss, wantLoss, st)
		}
	}
}

func TestClipCases(t *testing.T) {
	// One token each: log-ratio, advantage → loss, gradient, clipped, dual.
	tests := []struct {
		lr, a         float64
		loss, d       float64
		clip, dualHit bool
	}{
		{math.Log(1.5), 1, -1.28, 0, true, false},     // above 1+ε_high, Â>0: clipped
		{math.Log(1.1), 1, -1.1, -1.1, false, false},  // inside
		{math.Log(0.5), 1, -0.5, -0.5, false, false},  // below, Â>0: not clipped
		{math.Log(0.5), -1, 0.8, 0, true, false},      // below 1−ε_low, Â<0: clipped
		{math.Log(2), -1, 2, -(-1 * 2), false, false}, // above, Â<0, under c: unclipped
		{math.Log(4), -1, 3, 0, false, true},          // above c = 3: dual clip
		{30, -1, 3, 0, false, true},                   // clamped ratio, dual clip
		{-30, 1, -math.Exp(-20), 0, false, false},     // clamped ratio: no gradient
		{math.Log(1.5), 0, 0, 0, false, false},        // Â = 0
	}
	for _, tc := range tests {
		cfg, _ := Preset("dapo")
		cfg.DualClip = 3
		b := &Batch{B: 1, L: 1, Mask: []float32{1},
			NewLogp: []float32{float32(tc.lr)}, OldLogp: []float32{0}, Advantages: []float32{float32(tc.a)}}
		loss, grad, st, err := PolicyLoss(cfg, b)
		if err != nil {
			t.Fatal(err)
		}
		if math.Abs(loss-tc.loss) > 1e-6 || math.Abs(float64(grad[0])-tc.d) > 1e-6 ||
			(st.ClipFrac == 1) != tc.clip || (st.DualClipFrac == 1) != tc.dualHit {
			t.Errorf("lr=%.4f Â=%v: loss %v grad %v clip %v dual %v; want %v %v %v %v",
				tc.lr, tc.a, loss, grad[0], st.ClipFrac, st.DualClipFrac, tc.loss, tc.d, tc.clip, tc.dualHit)
		}
	}
}

func TestOMDLoss(t *testing.T) {
	// Two responses of 2 and 1 tokens: s = 0.3 and −0.2, Â = 0.5 and −0.5.
	cfg, _ := Preset("omd")
	b := &Batch{B: 2, L: 2, Mask: []float32{1, 1, 1, 0},
		NewLogp:    []float32{-1 + 0.1, -2 + 0.2, -1 - 0.2, 5},
		OldLogp:    []float32{-1, -2, -1, 0},
		Advantages: []float32{0.5, 0.5, -0.5, 0}}
	loss, grad, _, err := PolicyLoss(cfg, b)
	if err != nil {
		t.Fatal(err)
	}
	r0, r1 := 0.5-0.1*0.3, -0.5-0.1*(-0.2)
	want := (r0*r0/0.2 + r1*r1/0.2) / 2
	if math.Abs(loss-want) > 1e-6 {
		t.Errorf("omd loss %v, want %v", loss, want)
	}
	wantGrad := []float64{-r0 / 2, -r0 / 2, -r1 / 2, 0}
	closeSlices(t, "omd grad", grad, wantGrad, 1e-6)
}

func TestTokenWeights(t *testing.T) {
	mask := []float32{1, 1, 0, 1, 0, 0, 0, 0, 0}
	tests := map[Aggregation][]float64{
		SeqMeanTokenMean:    {0.25, 0.25, 0, 0.5, 0, 0, 0, 0, 0},
		TokenMean:           {1.0 / 3, 1.0 / 3, 0, 1.0 / 3, 0, 0, 0, 0, 0},
		SeqMeanTokenSumNorm: {1.0 / 6, 1.0 / 6, 0, 1.0 / 6, 0, 0, 0, 0, 0},
		SeqMeanTokenSum:     {0.5, 0.5, 0, 0.5, 0, 0, 0, 0, 0},
	}
	for agg, want := range tests {
		w, err := TokenWeights(agg, mask, 3)
		if err != nil {
			t.Fatal(err)
		}
		for p := range w {
			if math.Abs(w[p]-want[p]) > 1e-15 {
				t.Errorf("%s: w[%d] = %v, want %v", agg, p, w[p], want[p])
			}
		}
	}
	w, err := TokenWeights(TokenMean, make([]float32, 6), 3)
	if err != nil || w[0] != 0 {
		t.Errorf("empty mask: %v, %v", w, err)
	}
	if _, err := TokenWeights(TokenMean, mask, 4); err == nil {
		t.Error("mask not a multiple of L: no error")
	}
	if _, err := TokenWeights("sum", mask, 3); err == nil {
		t.Error("unknown aggregation: no error")
	}
}

func TestPolicyLossErrors(t *testing.T) {
	cfg, _ := Preset("grpo") // KL in the loss: needs reference log-probs
	full := func() *Batch {
		return &Batch{B: 1, L: 2, Mask: []float32{1, 1}, NewLogp: []float32{0, 0}, OldLogp: []float32{0, 0},
			RefLogp: []float32{0, 0}, Advantages: []float32{1, 1}, Truncated: []bool{false}}
	}
	tests := []struct {
		name string
		edit func(*Batch, *Config)
		want string
	}{
		{"no ref", func(b *Batch, _ *Config) { b.RefLogp = nil }, "reference log-probs"},
		{"no old", func(b *Batch, _ *Config) { b.OldLogp = nil }, "old log-probs"},
		{"no adv", func(b *Batch, _ *Config) { b.Advantages = b.Advantages[:1] }, "advantages has length 1, want 2"},
		{"no truncated", func(b *Batch, c *Config) { b.Truncated = nil; c.OverlongFilter = true }, "overlong filtering"},
		{"bad config", func(_ *Batch, c *Config) { c.ClipLow = 2 }, "clip_low"},
	}
	for _, tc := range tests {
		b, c := full(), cfg
		tc.edit(b, &c)
		_, _, _, err := PolicyLoss(c, b)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %v, want one containing %q", tc.name, err, tc.want)
		}
	}
	// All tokens filtered out: a zero loss and gradient, not NaN.
	b, c := full(), cfg
	b.Truncated[0], c.OverlongFilter = true, true
	loss, grad, _, err := PolicyLoss(c, b)
	if err != nil || loss != 0 || grad[0] != 0 || grad[1] != 0 {
		t.Errorf("fully filtered batch: loss %v grad %v err %v", loss, grad, err)
	}
}

func TestValueLossGradient(t *testing.T) {
	const B, L, clip = 4, 5, 0.2
	rng := rand.New(rand.NewPCG(3, 4))
	n := B * L
	values, old, ret, mask := make([]float32, n), make([]float32, n), make([]float32, n), make([]float32, n)
	for p := range n {
		mask[p] = 1
		if p%L == L-1 && p/L%2 == 0 {
			mask[p] = 0
		}
		for {
			old[p] = quantize(rng.NormFloat64())
			values[p] = quantize(float64(old[p]) + 0.6*rng.NormFloat64())
			ret[p] = quantize(rng.NormFloat64())
			v, o, r := float64(values[p]), float64(old[p]), float64(ret[p])
			vc := math.Max(o-clip, math.Min(o+clip, v))
			// Away from the band edges and from the switch between branches.
			if math.Abs(v-(o-clip)) > 0.01 && math.Abs(v-(o+clip)) > 0.01 && math.Abs(math.Abs(v-r)-math.Abs(vc-r)) > 0.01 {
				break
			}
		}
	}
	for _, agg := range []Aggregation{SeqMeanTokenMean, TokenMean, SeqMeanTokenSumNorm, SeqMeanTokenSum} {
		for _, c := range []float64{0, clip} {
			loss, grad, frac, err := ValueLoss(values, old, ret, mask, L, c, agg)
			if err != nil {
				t.Fatal(err)
			}
			if (c > 0) != (frac > 0) {
				t.Errorf("%s clip=%v: clip fraction %v", agg, c, frac)
			}
			if loss <= 0 {
				t.Errorf("%s clip=%v: loss %v", agg, c, loss)
			}
			checkGradient(t, fmt.Sprintf("value %s clip=%v", agg, c), values, grad, func() float64 {
				l, _, _, _ := ValueLoss(values, old, ret, mask, L, c, agg)
				return l
			})
		}
	}
	// Hand case: V = 1, V_old = 0, R = 2, ε = 0.2: max(½·1, ½·1.8²) = 1.62, no gradient.
	loss, grad, frac, _ := ValueLoss([]float32{1}, []float32{0}, []float32{2}, []float32{1}, 1, 0.2, TokenMean)
	if math.Abs(loss-1.62) > 1e-6 || grad[0] != 0 || frac != 1 {
		t.Errorf("value hand case: %v %v %v", loss, grad, frac)
	}
	if _, _, _, err := ValueLoss([]float32{1}, nil, []float32{2}, []float32{1}, 1, 0.2, TokenMean); err == nil {
		t.Error("missing old values with clipping: no error")
	}
	if _, _, _, err := ValueLoss([]float32{1}, nil, []float32{2}, []float32{1}, 1, 0, TokenMean); err != nil {
		t.Errorf("no old values needed without clipping: %v", err)
	}
}

func BenchmarkPolicyLoss(b *testing.B) {
	cfg, _ := Preset("grpo")
	batch := randomBatch(rand.New(rand.NewPCG(1, 1)), cfg, 64, 512)
	b.ResetTimer()
	for range b.N {
		if _, _, _, err := PolicyLoss(cfg, batch); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N*64*512)/b.Elapsed().Seconds()/1e6, "Mtok/s")
}
