package algo

import (
	"fmt"
	"math"
	"strings"
)

// aggWeight is an aggregation: the weight of each valid token of a row
// with n valid tokens, in a batch of seqs rows with a valid token, tokens
// valid tokens in all, and rows of length L.
type aggWeight func(n, seqs, tokens, L int) float64

// aggregations is the registry of aggregations.
var aggregations = newKind[aggWeight]("aggregation", "")

func init() {
	aggregations.register(
		part[aggWeight]{name: string(SeqMeanTokenMean), doc: "(1/B) Σ_i (1/|o_i|) Σ_t ℓ_it (original GRPO)",
			fn: func(n, seqs, _, _ int) float64 {
				if n > 0 {
					return 1 / (float64(seqs) * float64(n))
				}
				return 0
			}},
		part[aggWeight]{name: string(TokenMean), doc: "Σ_it ℓ_it / Σ_i |o_i| (DAPO)",
			fn: func(_, _, tokens, _ int) float64 { return 1 / float64(tokens) }},
		part[aggWeight]{name: string(SeqMeanTokenSumNorm), doc: "Σ_it ℓ_it / (B·L), L the padded length (Dr. GRPO)",
			fn: func(_, seqs, _, L int) float64 { return 1 / (float64(seqs) * float64(L)) }},
		part[aggWeight]{name: string(SeqMeanTokenSum), doc: "(1/B) Σ_i Σ_t ℓ_it",
			fn: func(_, seqs, _, _ int) float64 { return 1 / float64(seqs) }},
	)
}

// TokenWeights returns w with Σ_it w_it·ℓ_it equal to the aggregation of
// per-token losses ℓ over the tokens where mask is 1, so that w_it is also
// d loss / d ℓ_it. mask has length B·L for rows of length L. Rows without a
// valid token are not counted in B; with no valid token at all every weight
// is 0.
func TokenWeights(agg Aggregation, mask []float32, L int) ([]float64, error) {
	if L <= 0 || len(mask)%L != 0 {
		return nil, fmt.Errorf("token weights: mask of length %d is not rows of length %d", len(mask), L)
	}
	weight, ok := aggregations.get(string(agg))
	if !ok {
		return nil, fmt.Errorf("token weights: unknown aggregation %q", agg)
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
		wi := weight.fn(lens[i], seqs, tokens, L)
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
	// Loss is the total loss, PolicyLoss + KLLoss + EntropyLoss.
	Loss float64 `json:"loss"`
	// PolicyLoss is the aggregated policy term (weighted by the rollout
	// correction, if any).
	PolicyLoss float64 `json:"policy_loss"`
	// KLLoss is β times the aggregated KL to the reference when the KL is in
	// the loss, else 0.
	KLLoss float64 `json:"kl_loss"`
	// EntropyLoss is −c_H times the aggregated entropy when the entropy
	// bonus is on, else 0.
	EntropyLoss float64 `json:"entropy_loss"`
	// Entropy is the mean per-token entropy H_t, nats; 0 when the batch has
	// no entropies.
	Entropy float64 `json:"entropy"`
	// KLRef is the mean KL estimate (Config.KLEstimator) of the new policy to
	// the reference; 0 when the batch has no reference log-probs.
	KLRef float64 `json:"kl_ref"`
	// ApproxKL is the mean k3 estimate of KL(π_old‖π_new) from the ratio,
	// (ρ − 1) − log ρ.
	ApproxKL float64 `json:"approx_kl"`
	// ClipFrac is the fraction of tokens where the clip was active: clip's
	// clipped branch was strictly larger and passed no gradient; gspo's, on
	// every token of a clipped response; cispo's IS weight differed from ρ.
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
// returns the term. mask is the loss mask, w the aggregation weights, corr
// the rollout correction's weight of each token (nil when there is none;
// a sequence-level term reads it at a response's first token, where a
// sequence-level correction puts the same weight as on every other).
type policyTermFunc func(cfg Config, b *Batch, mask []float32, w, corr, grad []float64, st *Stats) float64

// policyTerms is the registry of policy terms.
var policyTerms = newKind[policyTermFunc]("policy_loss", "")

func init() {
	policyTerms.register(
		part[policyTermFunc]{name: string(Clip), doc: "PPO's clipped surrogate −min(ρÂ, clip(ρ, 1−ε_low, 1+ε_high)Â), optional dual clip",
			fn: clipTerm, check: clipChecks(true)},
		part[policyTermFunc]{name: string(OMD), doc: "Kimi k1.5's mirror descent (Â_i − τ·Σ_t log ρ)²/(2τ) per response",
			fn: omdTerm, is: traits{sequence: true}, check: func(c Config) []string {
				var bad []string
				if c.Tau <= 0 {
					bad = append(bad, fmt.Sprintf("tau: %v is not positive (omd divides by τ)", c.Tau))
				}
				return append(bad, needsSequenceAdvantage(c)...)
			}},
		part[policyTermFunc]{name: string(GSPO), doc: "−min(s_iÂ_i, clip(s_i)Â_i) on the geometric-mean sequence ratio s_i, per response (GSPO, arXiv 2507.18071)",
			fn: gspoTerm, is: traits{sequence: true}, check: func(c Config) []string {
				return append(clipChecks(false)(c), needsSequenceAdvantage(c)...)
			}},
		part[policyTermFunc]{name: string(CISPO), doc: "−sg(clip(ρ, 1−ε_low, 1+ε_high))·Â·log π per token (CISPO, MiniMax-M1 arXiv 2506.13585)",
			fn: cispoTerm, check: func(c Config) []string {
				var bad []string
				if c.ClipLow <= 0 {
					bad = append(bad, fmt.Sprintf("clip_low: %v is not positive", c.ClipLow))
				}
				if c.ClipHigh <= 0 {
					bad = append(bad, fmt.Sprintf("clip_high: %v is not positive", c.ClipHigh))
				}
				return bad
			}},
	)
}

// clipChecks checks the ratio clip's range, and the dual clip if the term
// has one.
func clipChecks(dual bool) func(c Config) []string {
	return func(c Config) []string {
		var bad []string
		if c.ClipLow <= 0 || c.ClipLow >= 1 {
			bad = append(bad, fmt.Sprintf("clip_low: %v is outside (0, 1)", c.ClipLow))
		}
		if c.ClipHigh <= 0 {
			bad = append(bad, fmt.Sprintf("clip_high: %v is not positive", c.ClipHigh))
		}
		if dual && c.DualClip != 0 && c.DualClip <= 1 {
			bad = append(bad, fmt.Sprintf("dual_clip: %v must be 0 (off) or greater than 1", c.DualClip))
		}
		return bad
	}
}

// needsSequenceAdvantage checks that a policy term with one loss per
// response has one advantage per response.
func needsSequenceAdvantage(c Config) []string {
	if advantages.must(string(c.Advantage)).is.sequence {
		return nil
	}
	seq := advantages.namesWhere(func(p part[advantageFunc]) bool { return p.is.sequence })
	return []string{fmt.Sprintf("advantage: %s needs a sequence-level estimator (%s), not %q",
		c.PolicyLoss, strings.Join(seq, ", "), c.Advantage)}
}

// PolicyLoss returns the loss of the batch under cfg, its gradient with
// respect to NewLogp (length B·L, 0 outside the loss mask) and statistics.
// It reads NewLogp, OldLogp, Advantages and Mask, RefLogp when the KL is in
// the loss (or when present, for Stats.KLRef), Truncated when overlong
// responses are filtered, RolloutLogp with a rollout correction and
// Entropy with an entropy bonus (or when present, for Stats.Entropy).
//
// clip: ℓ_it = −min(ρÂ, clip(ρ, 1−ε_low, 1+ε_high)·Â) with ρ = exp(l − l°),
// the log-ratio clamped to ±20 first; with dual clip c and Â < 0,
// ℓ_it ← min(ℓ_it, −c·Â). Aggregated by cfg.Aggregation.
//
// omd: ℓ_i = (Â_i − τ·s_i)²/(2τ) with s_i = Σ_t m_it(l_it − l°_it) and Â_i
// the mean of Advantages over the response's tokens (r_i − r̄ for
// group-mean), averaged over responses.
//
// gspo: ℓ_i = −min(s_iÂ_i, clip(s_i, 1−ε_low, 1+ε_high)·Â_i) with
// s_i = exp((1/|o_i|) Σ_t m_it(l_it − l°_it)), the mean log-ratio clamped
// to ±20, and Â_i as for omd; averaged over responses.
//
// cispo: ℓ_it = −sg(clip(ρ, 1−ε_low, 1+ε_high))·Â·l_it, sg the stop-gradient:
// the returned gradient treats the clipped ratio as a constant, so it is
// the derivative of the loss with l° moved along with l (ρ fixed), not of
// the loss as a function of l alone. Aggregated by cfg.Aggregation.
//
// With a rollout correction (RolloutWeights), ℓ_it (clip, cispo) or ℓ_i
// (omd, gspo) is multiplied by the correction's weight, a constant.
//
// With the KL in the loss, β·KL_t (cfg.KLEstimator, new policy against the
// reference) is added to each token's loss and aggregated with it. With the
// entropy bonus, −c_H·H_t is too (EntropyBonus); H_t is an input, not a
// function of NewLogp, so dNewLogp holds none of its gradient.
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
	klInLoss := klPlacements.must(string(cfg.KLPlacement)).fn.loss
	if klInLoss || b.RefLogp != nil {
		if err := checkLen("reference log-probs", len(b.RefLogp), n); err != nil {
			return 0, nil, Stats{}, fmt.Errorf("policy loss: %w", err)
		}
	}
	if cfg.EntropyCoef > 0 || b.Entropy != nil {
		if err := checkLen("entropies", len(b.Entropy), n); err != nil {
			return 0, nil, Stats{}, fmt.Errorf("policy loss: entropy bonus: %w", err)
		}
	}
	corr, err := RolloutWeights(cfg, b)
	if err != nil {
		return 0, nil, Stats{}, fmt.Errorf("policy loss: %w", err)
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
	st.PolicyLoss = policyTerms.must(string(cfg.PolicyLoss)).fn(cfg, b, mask, w, corr, grad, &st)

	if b.RefLogp != nil {
		kl := klEstimators.must(string(cfg.KLEstimator)).fn
		var klSum, klAgg float64
		for p, m := range mask {
			if m == 0 {
				continue
			}
			v, d := kl(float64(b.NewLogp[p]), float64(b.RefLogp[p]))
			klSum += v
			klAgg += w[p] * v
			if klInLoss {
				grad[p] += cfg.KLCoef * w[p] * d
			}
		}
		if st.Tokens > 0 {
			st.KLRef = klSum / float64(st.Tokens)
		}
		if klInLoss {
			st.KLLoss = cfg.KLCoef * klAgg
		}
	}
	if b.Entropy != nil {
		var hSum, hAgg float64
		for p, m := range mask {
			if m != 0 {
				hSum += float64(b.Entropy[p])
				hAgg += w[p] * float64(b.Entropy[p])
			}
		}
		if st.Tokens > 0 {
			st.Entropy = hSum / float64(st.Tokens)
		}
		st.EntropyLoss = -cfg.EntropyCoef * hAgg
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
	if cfg.EntropyCoef > 0 {
		st.Loss += st.EntropyLoss
	}
	return st.Loss, toFloat32(grad), st, nil
}

// EntropyBonus returns the entropy term of PolicyLoss, −c_H·Σ_it w_it·H_it
// with w the aggregation weights of the loss mask, and its gradient with
// respect to Batch.Entropy, −c_H·w_it (0 outside the loss mask), which a
// caller chains through ∂H_t/∂logits = −p⊙(log p + H_t) of the model's
// softmax. That chain needs the model's backward to take a gradient per
// token's entropy as well as per token's log-prob (moe's
// Model.BackwardEntropy, which rl's trainer calls); it is not expressible
// through d loss / d NewLogp, which is why PolicyLoss's gradient leaves it
// out. It reads Mask, Entropy and Truncated (overlong filtering).
func EntropyBonus(cfg Config, b *Batch) (loss float64, dEntropy []float32, err error) {
	mask, err := LossMask(cfg, b)
	if err != nil {
		return 0, nil, fmt.Errorf("entropy bonus: %w", err)
	}
	if err := checkLen("entropies", len(b.Entropy), b.B*b.L); err != nil {
		return 0, nil, fmt.Errorf("entropy bonus: %w", err)
	}
	w, err := TokenWeights(cfg.Aggregation, mask, b.L)
	if err != nil {
		return 0, nil, fmt.Errorf("entropy bonus: %w", err)
	}
	g := make([]float64, len(w))
	var hAgg float64
	for p, m := range mask {
		if m != 0 {
			hAgg += w[p] * float64(b.Entropy[p])
			g[p] = -cfg.EntropyCoef * w[p]
		}
	}
	return -cfg.EntropyCoef * hAgg, toFloat32(g), nil
}

func clampLogRatio(x float64) float64 {
	return math.Max(-logRatioClamp, math.Min(logRatioClamp, x))
}

// weightAt is the rollout correction's weight of token p: 1 without one.
// Multiplying by it is exact when it is 1, so that a run without a
// correction computes bit for bit what it did before corrections existed.
func weightAt(corr []float64, p int) float64 {
	if corr == nil {
		return 1
	}
	return corr[p]
}

// firstToken returns the index of row i's first valid token, or -1.
func firstToken(mask []float32, i, L int) int {
	for t := range L {
		if mask[i*L+t] != 0 {
			return i*L + t
		}
	}
	return -1
}

// clipTerm is PPO's clipped surrogate. ClipFrac and DualClipFrac are left as
// counts for PolicyLoss to normalise.
func clipTerm(cfg Config, b *Batch, mask []float32, w, corr, grad []float64, st *Stats) float64 {
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
		wp := w[p] * weightAt(corr, p)
		total += wp * loss
		grad[p] += wp * d
	}
	return total
}

// cispoTerm is MiniMax-M1's CISPO: the clipped ratio is a constant weight
// on the REINFORCE term −Â·l, so no token loses its gradient to the clip
// (PPO's clip zeroes it). Unlike clip, a clamped log-ratio keeps the
// gradient too: only the weight depends on ρ. ClipFrac counts the tokens
// whose weight was clipped.
func cispoTerm(cfg Config, b *Batch, mask []float32, w, corr, grad []float64, st *Stats) float64 {
	lo, hi := 1-cfg.ClipLow, 1+cfg.ClipHigh
	total := 0.0
	for p, m := range mask {
		if m == 0 {
			continue
		}
		a := float64(b.Advantages[p])
		rho := math.Exp(clampLogRatio(float64(b.NewLogp[p]) - float64(b.OldLogp[p])))
		c := math.Max(lo, math.Min(hi, rho))
		if c != rho {
			st.ClipFrac++
		}
		d := -c * a
		wp := w[p] * weightAt(corr, p)
		total += wp * d * float64(b.NewLogp[p])
		grad[p] += wp * d
	}
	return total
}

// gspoTerm is GSPO's sequence-level clipped surrogate, averaged over
// responses. Its gradient on each token of response i is
// −s_i·Â_i/(|o_i|·B) where the unclipped branch is taken and 0 where the
// clip or the clamp of the mean log-ratio is active: verl's GSPO-token
// form, whose per-token loss has the same value on every token of a
// response, gives the same gradient under seq-mean-token-mean. ClipFrac
// counts the tokens of clipped responses, as verl's pg_clipfrac does.
func gspoTerm(cfg Config, b *Batch, mask []float32, _, corr, grad []float64, st *Stats) float64 {
	if st.Sequences == 0 {
		return 0
	}
	lo, hi := 1-cfg.ClipLow, 1+cfg.ClipHigh
	S := float64(st.Sequences)
	total := 0.0
	for i := range b.B {
		var lsum, asum float64
		n := 0
		for t := range b.L {
			p := i*b.L + t
			if mask[p] == 0 {
				continue
			}
			lsum += float64(b.NewLogp[p]) - float64(b.OldLogp[p])
			asum += float64(b.Advantages[p])
			n++
		}
		if n == 0 {
			continue
		}
		mlr := lsum / float64(n)
		s := math.Exp(clampLogRatio(mlr))
		a := asum / float64(n)
		loss, d := -s*a, -s*a // d is dℓ_i / d(mean log-ratio)
		if clipped := -math.Max(lo, math.Min(hi, s)) * a; clipped > loss {
			loss, d = clipped, 0
			st.ClipFrac += float64(n)
		}
		if mlr != clampLogRatio(mlr) {
			d = 0
		}
		c := weightAt(corr, firstToken(mask, i, b.L))
		total += c * loss
		g := c * d / (float64(n) * S)
		for t := range b.L {
			if p := i*b.L + t; mask[p] != 0 {
				grad[p] += g
			}
		}
	}
	return total / S
}

// omdTerm is Kimi k1.5's mirror-descent loss, a mean over responses of
// (Â_i − τ·s_i)²/(2τ). Its gradient −(Â_i − τs_i)·∇s_i is the mean-baseline
// policy gradient plus an ℓ2 pull of s_i toward 0.
func omdTerm(cfg Config, b *Batch, mask []float32, _, corr, grad []float64, st *Stats) float64 {
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
		c := weightAt(corr, firstToken(mask, i, b.L))
		resid := asum/float64(n) - cfg.Tau*s
		total += c * (resid * resid / (2 * cfg.Tau))
		g := -(c * resid) / float64(st.Sequences)
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
