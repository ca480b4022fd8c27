package algo

import (
	"fmt"
	"math"
)

// KL returns a per-token estimate of KL(π‖π_ref) at a token sampled from π,
// with log-prob logp under π and refLogp under π_ref, and its derivative with
// respect to logp. With d = logp − refLogp:
//
//	k1 = d                       (unbiased, can be negative)
//	k2 = ½d²                     (biased, low variance)
//	k3 = exp(−d) + d − 1         (unbiased, non-negative, low variance)
//
// For k3, d is clamped to ±20 before exp, as the policy ratio is, and the
// derivative is 0 where the clamp is active. An unknown estimator gives NaN.
func KL(est KLEstimator, logp, refLogp float64) (value, dLogp float64) {
	p, ok := klEstimators.get(string(est))
	if !ok {
		return math.NaN(), math.NaN()
	}
	return p.fn(logp, refLogp)
}

// klFunc is a KL estimator: its value at a token and its derivative with
// respect to logp.
type klFunc func(logp, refLogp float64) (value, dLogp float64)

// klPlacement says which terms a KL placement adds.
type klPlacement struct{ reward, loss bool }

var (
	klEstimators = newKind[klFunc]("kl_estimator", "")
	klPlacements = newKind[klPlacement]("kl_placement", "")
)

func init() {
	klEstimators.register(
		part[klFunc]{name: string(K1), doc: "l − l_ref (Schulman's k1: unbiased, can be negative)",
			fn: func(logp, refLogp float64) (float64, float64) { return logp - refLogp, 1 }},
		part[klFunc]{name: string(K2), doc: "½(l − l_ref)² (k2: biased, low variance)",
			fn: func(logp, refLogp float64) (float64, float64) {
				d := logp - refLogp
				return 0.5 * d * d, d
			}},
		part[klFunc]{name: string(K3), doc: "exp(l_ref − l) − (l_ref − l) − 1 (k3: unbiased, non-negative; GRPO's)", fn: k3},
	)
	klPlacements.register(
		part[klPlacement]{name: string(KLNone), doc: "no KL term (DAPO, Dr. GRPO)"},
		part[klPlacement]{name: string(KLReward), doc: "−β_r·KL of the sampling policy added to the reward (PPO, RLOO, REINFORCE++)",
			fn: klPlacement{reward: true}},
		part[klPlacement]{name: string(KLLoss), doc: "β·KL of the trained policy added to each token's loss (GRPO)",
			fn: klPlacement{loss: true}},
	)
}

func k3(logp, refLogp float64) (float64, float64) {
	d := logp - refLogp
	if d > logRatioClamp || d < -logRatioClamp {
		d = math.Max(-logRatioClamp, math.Min(logRatioClamp, d))
		return math.Exp(-d) + d - 1, 0
	}
	e := math.Exp(-d)
	return e + d - 1, 1 - e
}

// logRatioClamp bounds a log-ratio before exp so that one wild token cannot
// overflow the loss.
const logRatioClamp = 20

// advantageFunc computes per-token advantages and returns into adv and ret
// (length B·L, zero on entry) for a batch already checked for what the
// estimator reads (its traits say: groups, critic values).
type advantageFunc func(cfg Config, b *Batch, adv, ret []float64)

// advantages is the registry of advantage estimators.
var advantages = newKind[advantageFunc]("advantage", "")

func init() {
	seq := traits{sequence: true, grouped: true}
	advantages.register(
		part[advantageFunc]{name: string(GAE), doc: "generalized advantage estimation with the critic, whitened over the batch (PPO)",
			fn: gaeAdvantages, is: traits{values: true}, check: func(c Config) []string {
				if !c.Critic {
					return []string{"advantage: gae needs a critic (critic=true)"}
				}
				return nil
			}},
		part[advantageFunc]{name: string(Group), doc: "(r − mean_g r)/(std_g r + ε), std unbiased (GRPO)",
			fn: groupAdvantages(groupNormalized), is: seq},
		part[advantageFunc]{name: string(GroupMean), doc: "r − mean_g r (Dr. GRPO)",
			fn: groupAdvantages(groupCentered), is: seq},
		part[advantageFunc]{name: string(RLOO), doc: "r_i − mean_{j≠i} r_j, the leave-one-out baseline (RLOO)",
			fn: groupAdvantages(leaveOneOut), is: seq},
		part[advantageFunc]{name: string(ReinforcePP), doc: "per-token returns with KL in the reward, whitened over the batch (REINFORCE++)",
			fn: reinforceAdvantages(false)},
		part[advantageFunc]{name: string(ReinforcePPBaseline), doc: "REINFORCE++ on rewards less their group mean",
			fn: reinforceAdvantages(true), is: traits{grouped: true}},
		part[advantageFunc]{name: string(PassK), doc: "the group's best response gets r_max − r_second, the others 0 (verl grpo_passk, arXiv 2503.19595)",
			fn: groupAdvantages(passK), is: seq},
	)
}

// ComputeAdvantages returns the per-token advantages Â and returns R of the
// batch under cfg's estimator, both zero on tokens outside the mask.
//
//   - gae: per-token reward r_t = (t last ? r_i : 0) − β_r·KL_t (KL term only
//     with KL in the reward), δ_t = r_t + γV_{t+1} − V_t over the valid
//     tokens of a response, Â_t = δ_t + γλÂ_{t+1}, R_t = Â_t + V_t with V
//     from OldValues; then Â is whitened over all valid tokens of the batch.
//   - group, group-mean, rloo: one advantage per response, on all its tokens;
//     with KL in the reward, r_i first loses β_r·Σ_t KL_t. R_t = that r_i.
//   - reinforce++: R_t = Σ_{s≥t} γ^{s−t} r_s with the per-token reward of
//     gae, Â = R whitened over the batch; reinforce++-baseline first
//     subtracts the group mean from r_i.
//   - passk: as group, but only the response with the highest r_i in its
//     group gets an advantage, r_max − r_second (verl grpo_passk).
//
// Whitening is (x − mean)/(std + StdEps), std unbiased over the valid tokens.
// A group of one response has no comparison: its group, group-mean and rloo
// advantage is 0, and its reinforce++-baseline reward is 0. A group whose
// rewards are all equal gets exactly 0 from group, group-mean, rloo and
// passk.
func ComputeAdvantages(cfg Config, b *Batch) (adv, returns []float32, err error) {
	if err := cfg.Validate(); err != nil {
		return nil, nil, fmt.Errorf("compute advantages: %w", err)
	}
	if err := checkAdvantageInputs(cfg, b); err != nil {
		return nil, nil, fmt.Errorf("compute advantages (%s): %w", cfg.Advantage, err)
	}
	a := make([]float64, b.B*b.L)
	r := make([]float64, b.B*b.L)
	advantages.must(string(cfg.Advantage)).fn(cfg, b, a, r)
	return toFloat32(a), toFloat32(r), nil
}

func checkAdvantageInputs(cfg Config, b *Batch) error {
	if err := b.checkShape(); err != nil {
		return err
	}
	if err := checkLen("rewards", len(b.Rewards), b.B); err != nil {
		return err
	}
	for i, r := range b.Rewards {
		if math.IsNaN(r) || math.IsInf(r, 0) {
			return fmt.Errorf("reward %d is %v", i, r)
		}
	}
	est := advantages.must(string(cfg.Advantage))
	if est.is.grouped {
		if err := checkLen("groups", len(b.Groups), b.B); err != nil {
			return err
		}
	}
	if est.is.values {
		if err := checkLen("old values", len(b.OldValues), b.B*b.L); err != nil {
			return err
		}
	}
	if klPlacements.must(string(cfg.KLPlacement)).fn.reward {
		if err := checkLen("old log-probs", len(b.OldLogp), b.B*b.L); err != nil {
			return fmt.Errorf("KL in the reward: %w", err)
		}
		if err := checkLen("reference log-probs", len(b.RefLogp), b.B*b.L); err != nil {
			return fmt.Errorf("KL in the reward: %w", err)
		}
	}
	return nil
}

// rewardKL returns the function giving β_r·KL_t at token p when the KL is
// in the reward, and 0 otherwise. The KL is that of the sampling policy,
// whose log-probs the reward sees.
func rewardKL(cfg Config, b *Batch) func(p int) float64 {
	if !klPlacements.must(string(cfg.KLPlacement)).fn.reward {
		return func(int) float64 { return 0 }
	}
	kl := klEstimators.must(string(cfg.KLEstimator)).fn
	return func(p int) float64 {
		v, _ := kl(float64(b.OldLogp[p]), float64(b.RefLogp[p]))
		return cfg.KLCoef * v
	}
}

// tokenRewards returns the per-token reward: seq[i] on the last valid token
// of response i, minus β_r·KL_t on every valid token.
func tokenRewards(cfg Config, b *Batch, seq []float64) []float64 {
	r := make([]float64, b.B*b.L)
	kl := rewardKL(cfg, b)
	for i := range b.B {
		last := -1
		for t := range b.L {
			p := i*b.L + t
			if b.Mask[p] == 0 {
				continue
			}
			r[p] = -kl(p)
			last = p
		}
		if last >= 0 {
			r[last] += seq[i]
		}
	}
	return r
}

func gaeAdvantages(cfg Config, b *Batch, adv, ret []float64) {
	r := tokenRewards(cfg, b, b.Rewards)
	for i := range b.B {
		// The valid tokens of a response are its trajectory; padding (or a
		// masked hole) is skipped, and V after the last token is 0.
		var next, gae float64
		for t := b.L - 1; t >= 0; t-- {
			p := i*b.L + t
			if b.Mask[p] == 0 {
				continue
			}
			v := float64(b.OldValues[p])
			delta := r[p] + cfg.Gamma*next - v
			gae = delta + cfg.Gamma*cfg.Lambda*gae
			adv[p] = gae
			ret[p] = gae + v
			next = v
		}
	}
	whiten(adv, b.Mask, cfg.StdEps)
}

// reinforceAdvantages is REINFORCE++, with the group mean subtracted from
// each reward first when baseline is set.
func reinforceAdvantages(baseline bool) advantageFunc {
	return func(cfg Config, b *Batch, adv, ret []float64) {
		seq := b.Rewards
		if baseline {
			seq = make([]float64, b.B)
			for _, members := range groupMembers(b.Groups) {
				mean := 0.0
				for _, i := range members {
					mean += b.Rewards[i]
				}
				mean /= float64(len(members))
				for _, i := range members {
					seq[i] = b.Rewards[i] - mean
				}
			}
		}
		r := tokenRewards(cfg, b, seq)
		for i := range b.B {
			g := 0.0
			for t := b.L - 1; t >= 0; t-- {
				p := i*b.L + t
				if b.Mask[p] == 0 {
					continue
				}
				g = r[p] + cfg.Gamma*g
				ret[p] = g
				adv[p] = g
			}
		}
		whiten(adv, b.Mask, cfg.StdEps)
	}
}

// groupScore sets a[i] for the members of one group of two or more
// responses whose rewards r (after any KL in the reward) are not all equal;
// sum is Σ r over the members.
type groupScore func(cfg Config, r []float64, members []int, sum float64, a []float64)

func groupNormalized(cfg Config, r []float64, members []int, sum float64, a []float64) {
	n := len(members)
	mean := sum / float64(n)
	ss := 0.0
	for _, i := range members {
		ss += (r[i] - mean) * (r[i] - mean)
	}
	std := math.Sqrt(ss / float64(n-1))
	for _, i := range members {
		a[i] = (r[i] - mean) / (std + cfg.StdEps)
	}
}

func groupCentered(_ Config, r []float64, members []int, sum float64, a []float64) {
	mean := sum / float64(len(members))
	for _, i := range members {
		a[i] = r[i] - mean
	}
}

func leaveOneOut(_ Config, r []float64, members []int, sum float64, a []float64) {
	n := len(members)
	for _, i := range members {
		a[i] = r[i] - (sum-r[i])/float64(n-1)
	}
}

// passK is verl's grpo_passk (after Chen et al., arXiv 2503.19595): the
// response with the highest reward (the first of them on a tie) gets
// r_max − r_second, every other response 0, so the gradient pushes up only
// the best answer of the group, which is what pass@k rewards. verl divides
// that by the group's std by default (norm_adv_by_std_in_grpo); SPEC-RL.md
// takes the plain difference, as here.
func passK(_ Config, r []float64, members []int, _ float64, a []float64) {
	best := members[0]
	for _, i := range members[1:] {
		if r[i] > r[best] {
			best = i
		}
	}
	second := math.Inf(-1)
	for _, i := range members {
		if i != best {
			second = math.Max(second, r[i])
		}
	}
	a[best] = r[best] - second
}

// groupAdvantages gives each response one advantage from its group, by
// score, on all its tokens; R_t is the response's reward after any KL in
// the reward. A group of one response, or one whose rewards are all equal,
// gets exactly 0.
func groupAdvantages(score groupScore) advantageFunc {
	return func(cfg Config, b *Batch, adv, ret []float64) {
		r := make([]float64, b.B)
		kl := rewardKL(cfg, b)
		for i := range b.B {
			r[i] = b.Rewards[i]
			for t := range b.L {
				if p := i*b.L + t; b.Mask[p] != 0 {
					r[i] -= kl(p)
				}
			}
		}
		a := make([]float64, b.B)
		for _, members := range groupMembers(b.Groups) {
			if len(members) < 2 {
				continue // no comparison, no signal
			}
			sum := 0.0
			equal := true
			for _, i := range members {
				sum += r[i]
				equal = equal && r[i] == r[members[0]]
			}
			if equal {
				continue // exactly 0, not the rounding error of r − mean
			}
			score(cfg, r, members, sum, a)
		}
		for i := range b.B {
			for t := range b.L {
				if p := i*b.L + t; b.Mask[p] != 0 {
					adv[p] = a[i]
					ret[p] = r[i]
				}
			}
		}
	}
}

// whiten replaces the valid entries of x by (x − mean)/(std + eps), mean and
// unbiased std over the valid entries; with fewer than two valid entries, or
// no spread and eps = 0, they become 0.
func whiten(x []float64, mask []float32, eps float64) {
	n, sum := 0, 0.0
	for p, m := range mask {
		if m != 0 {
			n++
			sum += x[p]
		}
	}
	if n == 0 {
		return
	}
	mean := sum / float64(n)
	ss := 0.0
	for p, m := range mask {
		if m != 0 {
			ss += (x[p] - mean) * (x[p] - mean)
		}
	}
	std := 0.0
	if n > 1 {
		std = math.Sqrt(ss / float64(n-1))
	}
	for p, m := range mask {
		if m == 0 {
			continue
		}
		if std+eps == 0 {
			x[p] = 0
		} else {
			x[p] = (x[p] - mean) / (std + eps)
		}
	}
}

func toFloat32(x []float64) []float32 {
	y := make([]float32, len(x))
	for i, v := range x {
		y[i] = float32(v)
	}
	return y
}
