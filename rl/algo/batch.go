package algo

import (
	"errors"
	"fmt"
)

// Batch is B sampled responses, each padded to L tokens. Per-token slices
// have length B·L, row i holding response i; per-response slices have
// length B. A function reads only the fields its Config needs and says which
// are missing.
type Batch struct {
	B, L int

	// NewLogp is l_it, the log-prob under the policy being trained; policy
	// gradients are taken with respect to it.
	NewLogp []float32
	// OldLogp is l°_it, the log-prob under the policy that sampled: the
	// log-probs recorded while sampling, or, with a rollout correction
	// (Config.UsesRolloutCorrection), the trainer's recomputation of them
	// before the update.
	OldLogp []float32
	// RolloutLogp is l^roll_it, the log-prob recorded while sampling; read
	// only with a rollout correction, whose weights are exp(l° − l^roll).
	RolloutLogp []float32
	// RefLogp is l^ref_it, the log-prob under the frozen reference policy;
	// needed when the KL to the reference is in the reward or the loss.
	RefLogp []float32
	// Mask is 1 on the response tokens that count and 0 on padding.
	Mask []float32
	// OldValues is the critic's V_t at sampling time, for gae.
	OldValues []float32
	// Advantages is Â_it as returned by ComputeAdvantages, for PolicyLoss.
	Advantages []float32
	// Entropy is H_it, the entropy in nats of the trained policy's
	// next-token distribution where token t of response i was predicted,
	// from the same forward pass as NewLogp; needed by the entropy bonus.
	Entropy []float32

	// Rewards is r_i, the scalar reward of each response after shaping.
	Rewards []float64
	// Groups is the group id of each response: responses to the same prompt
	// share one.
	Groups []int
	// Lengths is |o_i|, the number of generated tokens of each response.
	Lengths []int
	// Truncated says which responses hit the generation budget unfinished;
	// needed for overlong filtering.
	Truncated []bool
}

// checkShape checks B, L and the mask, which every function needs.
func (b *Batch) checkShape() error {
	if b == nil {
		return errors.New("batch is nil")
	}
	if b.B <= 0 || b.L <= 0 {
		return fmt.Errorf("batch shape %d×%d: both must be positive", b.B, b.L)
	}
	if err := checkLen("mask", len(b.Mask), b.B*b.L); err != nil {
		return err
	}
	for p, m := range b.Mask {
		if m != 0 && m != 1 {
			return fmt.Errorf("mask[%d] = %v: mask entries must be 0 or 1", p, m)
		}
	}
	return nil
}

func checkLen(name string, got, want int) error {
	if got != want {
		return fmt.Errorf("batch %s has length %d, want %d", name, got, want)
	}
	return nil
}

// LossMask returns the mask of the tokens that enter the loss: Mask, with
// the rows of truncated responses zeroed when the Config filters overlong
// responses. Use it for the value loss too.
func LossMask(cfg Config, b *Batch) ([]float32, error) {
	if err := b.checkShape(); err != nil {
		return nil, err
	}
	m := make([]float32, len(b.Mask))
	copy(m, b.Mask)
	if !cfg.OverlongFilter {
		return m, nil
	}
	if err := checkLen("truncated", len(b.Truncated), b.B); err != nil {
		return nil, fmt.Errorf("overlong filtering: %w", err)
	}
	for i, tr := range b.Truncated {
		if tr {
			clear(m[i*b.L : (i+1)*b.L])
		}
	}
	return m, nil
}

// groupMembers returns the indices of the responses of each group, groups in
// order of first appearance, members in batch order.
func groupMembers(groups []int) [][]int {
	at := make(map[int]int)
	var members [][]int
	for i, g := range groups {
		k, ok := at[g]
		if !ok {
			k = len(members)
			at[g] = k
			members = append(members, nil)
		}
		members[k] = append(members[k], i)
	}
	return members
}
