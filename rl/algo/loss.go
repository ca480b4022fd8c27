package algo

import (
	"fmt"
	"math"
)

// TokenWeights returns w with Σ_it w_it·ℓ_it equal to the aggregation of
// per-token losses ℓ over the tokens where mask is 1, so that w_it is also
// d loss / d ℓ_it. mask has length B·L for rows of length L. Rows without a
// valid token are not counted in B; with no valid token at all every weight
// is 0.
func TokenWeights(agg Aggregation, mask []float32, L int) ([]float64, error) {
	if L <= 0 || len(mask)%L != 0 {
		return nil, fmt.Errorf("token weights: mask of length %d is not rows of length %d", len(mask), L)
	}
	w := make([]float64, len(mask))
	rows := len(mask) / L
	seqs, tokens := 0, 0
	lens := make([]int, rows)
	for i := range rows {
		for _, m := range mask[i*L : (i+1)*L] {
			if m != 0 {
				lens[i]++
			}
		}
		if lens[i] > 0 {
			seqs++
		}
		tokens += lens[i]
	}
	if tokens == 0 {
		return w, nil
	}
	for i := range rows {
		var wi float64
		switch agg {
		case SeqMeanTokenMean:
			if lens[i] > 0 {
				wi = 1 / (float64(seqs) * float64(lens[i]))
			}
		case TokenMean:
			wi = 1 / float64(tokens)
		case SeqMeanTokenSumNorm:
			wi = 1 / (float64(seqs) * float64(L))
		case SeqMeanTokenSum:
			wi = 1 / float64(seqs)
		default:
			return nil, fmt.Errorf("token weights: unknown aggregation %q", agg)
		}
		for t := range L {
			if p := i*L + t; mask[p] != 0 {
				w[p] = wi
			}
		}
	}
	return w, nil
}

// Stats describes one evaluation of PolicyLoss, for logging. Means are over
// the tokens of the loss mask.
type Stats struct {
	// Loss is the total loss, PolicyLoss + KLLoss.
	Loss float64 `json:"loss"`
	// PolicyLoss is the aggregated policy term.
	PolicyLoss float64 `json:"policy_loss"`
	// KLLoss is β times the aggregated KL to the reference when the KL is in
	// the loss, else 0.
	KLLoss float64 `json:"kl_loss"`
	// KLRef is the mean KL estimate (Config.KLEstimator) of the new policy to
	// the reference; 0 when the batch has no reference log-probs.
	KLRef float64 `json:"kl_ref"`
	// ApproxKL is the mean k3 estimate of KL(π_old‖π_new) from the ratio,
	// (ρ − 1) − log ρ.
	ApproxKL float64 `json:"approx_kl"`
	// ClipFrac is the fraction of tokens where the ratio clip was active
	// (the clipped branch was strictly larger and passed no gradient).
	ClipFrac float64 `json:"clip_frac"`
	// DualClipFrac is the fraction of tokens where the dual clip was active.
	DualClipFrac float64 `json:"dual_clip_frac"`
	// RatioMean, RatioMin and RatioMax describe ρ = exp(l − l°).
	RatioMean float64 `json:"ratio_mean"`
	RatioMin  float64 `json:"ratio_min"`
	RatioMax  float64 `json:"ratio_max"`
	// Tokens and Sequences count the tokens and responses in the loss.
	Tokens    int `json:"tokens"`
	Sequences int `json:"sequences"`
}

// policyTermFunc adds the gradient of the aggregated policy term to grad and
// returns the term. mask is the loss mask, w the aggregation weights.
type policyTermFunc func(cfg Config, b *Batch, mask []float32, w, grad []float64, st *Stats) float64

// policyTerms is the registry of policy terms.
var policyTerms = map[PolicyTerm]policyTermFunc{
	Clip: clipTerm,
	OMD:  omdTerm,
}

// PolicyLoss returns the loss of the batch under cfg, its gradient with
// respect to NewLogp (length B·L, 0 outside the loss mask) and statistics.
// It reads NewLogp, OldLogp, Advantages and Mask, RefLogp when the KL is in
// the loss (or when present, for Stats.KLRef) and Truncated when overlong
// responses are filtered.
//
// clip: ℓ_it = −min(ρÂ, clip(ρ, 1−ε_low, 1+ε_high)·Â) with ρ = exp(l − l°),
// the log-ratio clamped to ±20 first; with dual clip c and Â < 0,
// ℓ_it ← min(ℓ_it, −c·Â). Aggregated by cfg.Aggregation.
//
// omd: ℓ_i = (Â_i − τ·s_i)²/(2τ) with s_i = Σ_t m_it(l_it − l°_it) and Â_i
// the mean of Advantages over the response's tokens (r_i − r̄ for
// group-mean), averaged over responses.
//
// With the KL in the loss, β·KL_t (cfg.KLEstimator, new policy against the
// reference) is added to each token's loss and aggregated with it.
func PolicyLoss(cfg Config, b *Batch) (loss float64, dNewLogp []float32, stats Stats, err error) {
	if err := cfg.Validate(); err != nil {
		return 0, nil, Stats{}, fmt.Errorf("policy loss: %w", err)
	}
	mask, err := LossMask(cfg, b)
	if err != nil {
		return 0, nil, Stats{}, fmt.Errorf("policy loss: %w", err)
	}
	n := b.B * b.L
	for _, c := range []struct {
		name string
		got  int
	}{{"new log-probs", len(b.NewLogp)}, {"old log-probs", len(b.OldLogp)}, {"advantages", len(b.Advantages)}} {
		if err := checkLen(c.name, c.got, n); err != nil {
			return 0, nil, Stats{}, fmt.Errorf("policy loss: %w", err)
		}
	}
	if cfg.KLPlacement == KLLoss || b.RefLogp != nil {
		if err := checkLen("reference log-probs", len(b.RefLogp), n); err != nil {
			return 0, nil, Stats{}, fmt.Errorf("policy loss: %w", err)
		}
	}
	w, err := TokenWeights(cfg.Aggregation, mask, b.L)
	if err != nil {
		return 0, nil, Stats{}, fmt.Errorf("policy loss: %w", err)
	}

	var st Stats
	for i := range b.B {
		seq := false
		for _, m := range mask[i*b.L : (i+1)*b.L] {
			if m != 0 {
				st.Tokens++
				seq = true
			}
		}
		if seq {
			st.Sequences++
		}
	}
	grad := make([]float64, n)
	st.PolicyLoss = policyTerms[cfg.PolicyLoss](cfg, b, mask, w, grad, &st)

	if b.RefLogp != nil {
		var klSum, klAgg float64
		for p, m := range mask {
			if m == 0 {
				continue
			}
			v, d := KL(cfg.KLEstimator, float64(b.NewLogp[p]), float64(b.RefLogp[p]))
			klSum += v
			klAgg += w[p] * v
			if cfg.KLPlacement == KLLoss {
				grad[p] += cfg.KLCoef * w[p] * d
			}
		}
		if st.Tokens > 0 {
			st.KLRef = klSum / float64(st.Tokens)
		}
		if cfg.KLPlacement == KLLoss {
			st.KLLoss = cfg.KLCoef * klAgg
		}
	}

	// Ratio statistics, the same for every policy term.
	st.RatioMin, st.RatioMax = math.Inf(1), math.Inf(-1)
	for p, m := range mask {
		if m == 0 {
			continue
		}
		lr := clampLogRatio(float64(b.NewLogp[p]) - float64(b.OldLogp[p]))
		rho := math.Exp(lr)
		st.RatioMean += rho
		st.ApproxKL += rho - 1 - lr
		st.RatioMin = math.Min(st.RatioMin, rho)
		st.RatioMax = math.Max(st.RatioMax, rho)
	}
	if st.Tokens > 0 {
		st.RatioMean /= float64(st.Tokens)
		st.ApproxKL /= float64(st.Tokens)
		st.ClipFrac /= float64(st.Tokens)
		st.DualClipFrac /= float64(st.Tokens)
	} else {
		st.RatioMin, st.RatioMax = 0, 0
	}
	st.Loss = st.PolicyLoss + st.KLLoss
	return st.Loss, toFloat32(grad), st, nil
}

func clampLogRatio(x float64) float64 {
	return math.Max(-logRatioClamp, math.Min(logRatioClamp, x))
}

// clipTerm is PPO's clipped surrogate. ClipFrac and DualClipFrac are left as
// counts for PolicyLoss to normalise.
func clipTerm(cfg Config, b *Batch, mask []float32, w, grad []float64, st *Stats) float64 {
	lo, hi := 1-cfg.ClipLow, 1+cfg.ClipHigh
	total := 0.0
	for p, m := range mask {
		if m == 0 {
			continue
		}
		a := float64(b.Advantages[p])
		lr := float64(b.NewLogp[p]) - float64(b.OldLogp[p])
		clamped := lr != clampLogRatio(lr)
		rho := math.Exp(clampLogRatio(lr))
		loss := -rho * a
		d := -rho * a // dℓ/dl, since dρ/dl = ρ
		// At a tie the unclipped branch is taken, so that at ρ = 1 the
		// gradient is the plain policy gradient.
		if clipped := -math.Max(lo, math.Min(hi, rho)) * a; clipped > loss {
			loss, d = clipped, 0
			st.ClipFrac++
		}
		if cfg.DualClip > 0 && a < 0 {
			if bound := -cfg.DualClip * a; bound < loss {
				loss, d = bound, 0
				st.DualClipFrac++
			}
		}
		if clamped {
			d = 0
		}
		total += w[p] * loss
		grad[p] += w[p] * d
	}
	return total
}

// omdTerm is Kimi k1.5's mirror-descent loss, a mean over responses of
// (Â_i − τ·s_i)²/(2τ). Its gradient −(Â_i − τs_i)·∇s_i is the mean-baseline
// policy gradient plus an ℓ2 pull of s_i toward 0.
func omdTerm(cfg Config, b *Batch, mask []float32, _, grad []float64, st *Stats) float64 {
	if st.Sequences == 0 {
		return 0
	}
	total := 0.0
	for i := range b.B {
		var s, asum float64
		n := 0
		for t := range b.L {
			p := i*b.L + t
			if mask[p] == 0 {
				continue
			}
			s += float64(b.NewLogp[p]) - float64(b.OldLogp[p])
			asum += float64(b.Advantages[p])
			n++
		}
		if n == 0 {
			continue
		}
		resid := asum/float64(n) - cfg.Tau*s
		total += resid * resid / (2 * cfg.Tau)
		g := -resid / float64(st.Sequences)
		for t := range b.L {
			if p := i*b.L + t; mask[p] != 0 {
				grad[p] += g
			}
		}
	}
	return total / float64(st.Sequences)
}

// ValueLoss returns the critic's clipped value loss
// ½·max((V − R)², (clip(V, V_old ± ε_v) − R)²) aggregated by agg over the
// tokens where mask is 1 (rows of length L), its gradient with respect to
// values, and the fraction of tokens where the clipped branch was active.
// clip = 0 turns clipping off and oldValues may then be nil.
func ValueLoss(values, oldValues, returns, mask []float32, L int, clip float64, agg Aggregation) (loss float64, dValues []float32, clipFrac float64, err error) {
	n := len(mask)
	if len(values) != n || len(returns) != n || (clip != 0 && len(oldValues) != n) {
		return 0, nil, 0, fmt.Errorf("value loss: values, old values, returns and mask have lengths %d, %d, %d, %d; want equal",
			len(values), len(oldValues), len(returns), n)
	}
	if clip < 0 || math.IsNaN(clip) {
		return 0, nil, 0, fmt.Errorf("value loss: clip %v is negative", clip)
	}
	w, err := TokenWeights(agg, mask, L)
	if err != nil {
		return 0, nil, 0, fmt.Errorf("value loss: %w", err)
	}
	grad := make([]float64, n)
	tokens, clipped := 0, 0
	for p, m := range mask {
		if m == 0 {
			continue
		}
		tokens++
		v, r := float64(values[p]), float64(returns[p])
		e, d := 0.5*(v-r)*(v-r), v-r
		if clip > 0 {
			old := float64(oldValues[p])
			vc := math.Max(old-clip, math.Min(old+clip, v))
			// The clipped branch can only be strictly larger when V is
			// outside the band, where it does not depend on V.
			if ec := 0.5 * (vc - r) * (vc - r); ec > e {
				e, d = ec, 0
				clipped++
			}
		}
		loss += w[p] * e
		grad[p] = w[p] * d
	}
	if tokens > 0 {
		clipFrac = float64(clipped) / float64(tokens)
	}
	return loss, toFloat32(grad), clipFrac, nil
}
