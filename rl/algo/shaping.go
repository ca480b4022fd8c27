package algo

import (
	"fmt"
	"slices"
)

// OverlongPenalty is DAPO's soft overlong punishment for a response of
// length tokens: 0 up to maxLen − cache, then falling linearly to −1 at
// maxLen, and −1 beyond.
func OverlongPenalty(length, maxLen, cache int) float64 {
	switch soft := maxLen - cache; {
	case length <= soft:
		return 0
	case length <= maxLen:
		return float64(soft-length) / float64(cache)
	}
	return -1
}

// LengthPenalty returns Kimi k1.5's length reward for each response, weighted
// by weight: within a group, λ_i = 0.5 − (len_i − min)/(max − min), and a
// response gets w·λ_i if correct and w·min(0, λ_i) if not; 0 when every
// response of the group has the same length.
func LengthPenalty(lengths []int, correct []bool, groups []int, weight float64) ([]float64, error) {
	if len(correct) != len(lengths) || len(groups) != len(lengths) {
		return nil, fmt.Errorf("length penalty: lengths, correct and groups have lengths %d, %d, %d; want equal",
			len(lengths), len(correct), len(groups))
	}
	out := make([]float64, len(lengths))
	for _, members := range groupMembers(groups) {
		lo, hi := lengths[members[0]], lengths[members[0]]
		for _, i := range members {
			lo, hi = min(lo, lengths[i]), max(hi, lengths[i])
		}
		if hi == lo {
			continue
		}
		for _, i := range members {
			lambda := 0.5 - float64(lengths[i]-lo)/float64(hi-lo)
			if !correct[i] {
				lambda = min(0, lambda)
			}
			out[i] = weight * lambda
		}
	}
	return out, nil
}

// ShapeRewards returns rewards plus the shaping cfg asks for: DAPO's overlong
// penalty when OverlongShaping is set (L_max and L_cache resolved against the
// generation budget by OverlongLimits) and Kimi's length reward when
// LengthPenalty > 0 (which reads correct and groups; they may be nil
// otherwise).
func ShapeRewards(cfg Config, rewards []float64, lengths []int, correct []bool, groups []int, budget int) ([]float64, error) {
	out := slices.Clone(rewards)
	if (cfg.OverlongShaping || cfg.LengthPenalty > 0) && len(lengths) != len(rewards) {
		return nil, fmt.Errorf("shape rewards: %d lengths for %d rewards", len(lengths), len(rewards))
	}
	if cfg.OverlongShaping {
		maxLen, cache := cfg.OverlongLimits(budget)
		if maxLen <= 0 || cache < 0 || cache >= maxLen {
			return nil, fmt.Errorf("shape rewards: overlong limits L_max=%d, L_cache=%d (budget %d) are not 0 ≤ L_cache < L_max", maxLen, cache, budget)
		}
		for i, n := range lengths {
			out[i] += OverlongPenalty(n, maxLen, cache)
		}
	}
	if cfg.LengthPenalty > 0 {
		pen, err := LengthPenalty(lengths, correct, groups, cfg.LengthPenalty)
		if err != nil {
			return nil, fmt.Errorf("shape rewards: %w", err)
		}
		for i, p := range pen {
			out[i] += p
		}
	}
	return out, nil
}

// KeepGroups is DAPO's dynamic-sampling filter: it reports, for each
// response, whether its group is kept, that is whether some but not all of
// the group's responses are correct (DAPO eq. 11, 0 < |{o_i correct}| < G;
// verl's filter_groups with metric acc, as the DAPO recipe runs it). It
// filters on correctness, not on the shaped reward: overlong shaping or a
// length reward can make the rewards of a group with no correct answer
// differ, and such a group teaches only length. A group of one response is
// dropped.
func KeepGroups(correct []bool, groups []int) ([]bool, error) {
	if len(groups) != len(correct) {
		return nil, fmt.Errorf("keep groups: %d groups for %d responses", len(groups), len(correct))
	}
	keep := make([]bool, len(correct))
	for _, members := range groupMembers(groups) {
		n := 0
		for _, i := range members {
			if correct[i] {
				n++
			}
		}
		for _, i := range members {
			keep[i] = n > 0 && n < len(members)
		}
	}
	return keep, nil
}

// ZeroSpreadGroups counts the groups of two or more responses whose rewards
// are all equal: under a group baseline their advantages are all 0, so
// they carry no policy gradient.
func ZeroSpreadGroups(rewards []float64, groups []int) (zero, counted int, err error) {
	if len(groups) != len(rewards) {
		return 0, 0, fmt.Errorf("zero-spread groups: %d groups for %d rewards", len(groups), len(rewards))
	}
	for _, members := range groupMembers(groups) {
		if len(members) < 2 {
			continue
		}
		counted++
		same := true
		for _, i := range members {
			same = same && rewards[i] == rewards[members[0]]
		}
		if same {
			zero++
		}
	}
	return zero, counted, nil
}
