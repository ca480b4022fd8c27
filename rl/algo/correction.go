package algo

import (
	"fmt"
	"math"
)

// Rollout corrections (SPEC-RL.md, "Rollout vs training policy"). The
// engine that samples and the trainer may compute different log-probs for
// the same tokens under the same weights (lower-precision or stale rollout
// weights, a different kernel); then the samples come from π_roll, not
// from the old policy π° whose ratio the policy term takes. With l^roll the
// log-prob recorded while sampling and l° the trainer's recomputation
// before the update, w_it = exp(l°_it − l^roll_it) reweights the samples
// toward π°. Truncating (TIS) or masking (MIS) w at C bounds the variance.
// The anchors are verl's rollout correction (verl/trainer/ppo/
// rollout_corr_helper.py: rollout_is token or sequence, truncated at
// rollout_is_threshold = 2, weights detached and multiplied into the
// per-token policy loss; log-ratios clamped to ±20 before exp) and TRL's
// vllm_importance_sampling_mode (token_truncate, token_mask,
// sequence_truncate, sequence_mask: a mask zeroes a weight above the cap
// and keeps the others, as the masked IS of Yao et al.'s "Your efficient
// RL framework secretly brings you off-policy RL training" does). Masked
// tokens stay in the aggregation's denominators, as TRL's do; verl's
// rejection sampling (rollout_rs) removes them from the mask instead.

// correctionMode is what a rollout correction does.
type correctionMode struct {
	on   bool // weights the policy term
	mask bool // zero above C (MIS) instead of truncating at C (TIS)
}

var corrections = newKind[correctionMode]("rollout_correction", string(CorrectionNone))

func init() {
	checkCap := func(c Config) []string {
		if !(c.RolloutISCap > 0) {
			return []string{fmt.Sprintf("rollout_is_cap: %v is not positive", c.RolloutISCap)}
		}
		return nil
	}
	tokenLevel := func(c Config) []string {
		bad := checkCap(c)
		if policyTerms.must(string(c.PolicyLoss)).is.sequence {
			bad = append(bad, fmt.Sprintf("rollout_correction: %s weights tokens, and policy_loss %s has one loss per response: use seq-tis or seq-mis",
				c.RolloutCorrection, c.PolicyLoss))
		}
		return bad
	}
	corrections.register(
		part[correctionMode]{name: string(CorrectionNone), doc: "the recorded log-probs are l°; nothing is weighted"},
		part[correctionMode]{name: string(TokenTIS), doc: "ℓ_it × min(w_it, C) (verl rollout_is=token, TRL token_truncate)",
			fn: correctionMode{on: true}, check: tokenLevel},
		part[correctionMode]{name: string(SeqTIS), doc: "response loss × min(Π_t w_it, C) (verl rollout_is=sequence, TRL sequence_truncate)",
			fn: correctionMode{on: true}, is: traits{sequence: true}, check: checkCap},
		part[correctionMode]{name: string(TokenMIS), doc: "ℓ_it × w_it, or 0 where w_it > C (TRL token_mask)",
			fn: correctionMode{on: true, mask: true}, check: tokenLevel},
		part[correctionMode]{name: string(SeqMIS), doc: "response loss × Π_t w_it, or 0 where it exceeds C (TRL sequence_mask)",
			fn: correctionMode{on: true, mask: true}, is: traits{sequence: true}, check: checkCap},
	)
}

// UsesRolloutCorrection reports whether the policy term is weighted for
// the rollout/trainer mismatch; then Batch.OldLogp must be the trainer's
// recomputation l° and Batch.RolloutLogp the recorded l^roll.
func (c Config) UsesRolloutCorrection() bool {
	return corrections.must(string(c.RolloutCorrection)).fn.on
}

// correctionWeights returns the weight of each valid token under the
// correction named by mode (the raw token weight w_it when it is off),
// and whether the (truncated or masked) weight exceeded C, with old = l°,
// roll = l^roll and rows of length L. The response weight Π_t w_it is
// exp of the summed log-ratio, clamped to ±20 as verl does.
func correctionWeights(cfg Config, old, roll, mask []float32, L int) (w []float64, over []bool) {
	p := corrections.must(string(cfg.RolloutCorrection))
	C := cfg.RolloutISCap
	w, over = make([]float64, len(mask)), make([]bool, len(mask))
	for i := range len(mask) / L {
		var rowLR float64
		for t := range L {
			if q := i*L + t; mask[q] != 0 {
				rowLR += float64(old[q]) - float64(roll[q])
			}
		}
		rowW := math.Exp(clampLogRatio(rowLR))
		for t := range L {
			q := i*L + t
			if mask[q] == 0 {
				continue
			}
			x := math.Exp(clampLogRatio(float64(old[q]) - float64(roll[q])))
			if p.is.sequence {
				x = rowW
			}
			over[q] = x > C
			switch {
			case !p.fn.on:
			case over[q] && p.fn.mask:
				x = 0
			case over[q]:
				x = C
			}
			w[q] = x
		}
	}
	return w, over
}

// RolloutWeights returns the rollout correction's weight of each token of
// b (0 off its mask), from OldLogp (the trainer's l°) and RolloutLogp (the
// sampler's l^roll), or nil when the Config has no correction. The weights
// are constants of the update: neither l° nor l^roll depends on the policy
// being trained.
func RolloutWeights(cfg Config, b *Batch) ([]float64, error) {
	if !cfg.UsesRolloutCorrection() {
		return nil, nil
	}
	if err := b.checkShape(); err != nil {
		return nil, fmt.Errorf("rollout correction: %w", err)
	}
	n := b.B * b.L
	if err := checkLen("old log-probs", len(b.OldLogp), n); err != nil {
		return nil, fmt.Errorf("rollout correction: %w", err)
	}
	if err := checkLen("rollout log-probs", len(b.RolloutLogp), n); err != nil {
		return nil, fmt.Errorf("rollout correction: %w", err)
	}
	w, _ := correctionWeights(cfg, b.OldLogp, b.RolloutLogp, b.Mask, b.L)
	return w, nil
}

// RolloutStats measures the mismatch between the trainer's log-probs l°
// and the sampler's l^roll over the response tokens of a batch, before any
// update. Log-probs are in nats.
type RolloutStats struct {
	// GapMean and GapMax are the mean and the largest |l° − l^roll|.
	GapMean float64 `json:"gap_mean"`
	GapMax  float64 `json:"gap_max"`
	// KL is the mean k3 estimate of KL(π_roll‖π°) from the sampled tokens,
	// w − 1 − log w with w = exp(l° − l^roll), the log-ratio clamped to ±20.
	KL float64 `json:"kl"`
	// ESS is the effective sample size (Σc)²/(N·Σc²) of the correction's
	// weights c, in (0, 1]: per token for token-tis and token-mis (N
	// tokens), per response for seq-tis and seq-mis (N responses), after
	// truncation or masking; with no correction, of the raw token weights
	// w_it, to show what one would face. 0 when every weight is 0.
	ESS float64 `json:"ess"`
	// MaskedFrac is the share of tokens whose weight (their own, or their
	// response's for a sequence correction) exceeds C: masked under MIS,
	// truncated under TIS, untouched with no correction.
	MaskedFrac float64 `json:"masked_frac"`
}

// MeasureRollout returns the RolloutStats of a batch with the trainer's
// log-probs old (l°), the sampler's roll (l^roll) and its mask, rows of
// length L, under cfg's rollout correction and cap.
func MeasureRollout(cfg Config, old, roll, mask []float32, L int) (RolloutStats, error) {
	if L <= 0 || len(mask)%L != 0 || len(old) != len(mask) || len(roll) != len(mask) {
		return RolloutStats{}, fmt.Errorf("measure rollout: log-probs of lengths %d and %d, mask %d, rows of %d: want equal lengths, a multiple of the row length",
			len(old), len(roll), len(mask), L)
	}
	var st RolloutStats
	w, over := correctionWeights(cfg, old, roll, mask, L)
	seqLevel := corrections.must(string(cfg.RolloutCorrection)).is.sequence
	var tokens, overN, weights int
	var sum, sumSq float64
	for i := range len(mask) / L {
		first := firstToken(mask, i, L)
		for t := range L {
			q := i*L + t
			if mask[q] == 0 {
				continue
			}
			tokens++
			d := float64(old[q]) - float64(roll[q])
			st.GapMean += math.Abs(d)
			st.GapMax = math.Max(st.GapMax, math.Abs(d))
			lr := clampLogRatio(d)
			st.KL += math.Exp(lr) - 1 - lr
			if over[q] {
				overN++
			}
			if !seqLevel || q == first { // one weight per token, or per response
				weights++
				sum += w[q]
				sumSq += w[q] * w[q]
			}
		}
	}
	if tokens == 0 {
		return RolloutStats{}, nil
	}
	st.GapMean /= float64(tokens)
	st.KL /= float64(tokens)
	st.MaskedFrac = float64(overN) / float64(tokens)
	if sumSq > 0 {
		st.ESS = sum * sum / (float64(weights) * sumSq)
	}
	return st, nil
}
