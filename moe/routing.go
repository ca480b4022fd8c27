package moe

import (
	"fmt"
	"math"
	"slices"
)

// RoutingStats describe the router over a set of tokens of one forward
// pass, per layer and then averaged over layers (SPEC-RL.md, "MoE routing
// in RL"). All are 0 for a dense model.
type RoutingStats struct {
	// Disagreement is the share of (token, layer) pairs, among those given
	// a recorded choice, whose recorded top-k expert set (the rollout's)
	// differs from the set this forward's router ranks first.
	Disagreement float64
	// Compared counts the (token, layer) pairs Disagreement is over.
	Compared int
	// LoadEntropy is the entropy, in nats, of the share of the tokens'
	// k·tokens assignments each expert received (the experts the forward
	// used: the replayed ones under routing replay), log E when balanced.
	LoadEntropy float64
	// LoadMax is the share of the assignments the most loaded expert
	// received, 1/E when balanced, 1 when one expert takes every token.
	LoadMax float64
	// Margin is the mean gap p_(k) − p_(k+1) between the k-th and the
	// (k+1)-th largest router probability (p_(k+1) = 0 when k = E): how
	// far a token is from changing its top-k set.
	Margin float64
}

// MeasureRouting computes RoutingStats over the tokens (indices into the
// a.B·a.T tokens) of the last Forward on a. recorded, when not nil, holds
// for each of those tokens the expert ids chosen elsewhere (the rollout's
// Sequence.Routing at that position: Layers·TopK ids, [l·TopK + j]), or nil
// for a token with none; Disagreement compares them with the router's own
// top-k of this forward, which under routing replay is not what it used.
func (m *Model) MeasureRouting(a *Acts, tokens []int, recorded [][]int32) (RoutingStats, error) {
	c := m.Cfg
	var st RoutingStats
	if c.DenseFFN || len(tokens) == 0 {
		return st, nil
	}
	if recorded != nil && len(recorded) != len(tokens) {
		return st, fmt.Errorf("measure routing: %d recorded choices for %d tokens", len(recorded), len(tokens))
	}
	L, E, K, N := c.Layers, c.Experts, c.TopK, a.N
	probs, experts := make([]float32, N*E), make([]int32, N*K)
	load := make([]float64, E)
	var differ int
	own, rec := make([]int32, K), make([]int32, K)
	order := make([]int, E)
	for l := range L {
		s := &a.layers[l]
		m.be.Download(probs, s.probs)
		m.be.DownloadI32(experts, s.experts)
		clear(load)
		for i, n := range tokens {
			if n < 0 || n >= N {
				return RoutingStats{}, fmt.Errorf("measure routing: token %d outside the forward's %d", n, N)
			}
			p := probs[n*E : (n+1)*E]
			for _, e := range experts[n*K : (n+1)*K] {
				load[e]++
			}
			// The router's ranking: decreasing probability, ties to the
			// lower index, as RouterTopK chooses.
			for e := range order {
				order[e] = e
			}
			slices.SortStableFunc(order, func(x, y int) int {
				switch {
				case p[x] > p[y]:
					return -1
				case p[x] < p[y]:
					return 1
				}
				return 0
			})
			next := 0.0
			if K < E {
				next = float64(p[order[K]])
			}
			st.Margin += float64(p[order[K-1]]) - next
			if recorded == nil || recorded[i] == nil {
				continue
			}
			if len(recorded[i]) != L*K {
				return RoutingStats{}, fmt.Errorf("measure routing: token %d has %d recorded ids, want %d layers × top-%d", n, len(recorded[i]), L, K)
			}
			for j := range K {
				own[j] = int32(order[j])
			}
			copy(rec, recorded[i][l*K:(l+1)*K])
			slices.Sort(own)
			slices.Sort(rec)
			st.Compared++
			if !slices.Equal(own, rec) {
				differ++
			}
		}
		total := float64(len(tokens) * K)
		var h, mx float64
		for _, v := range load {
			if v > 0 {
				q := v / total
				h -= q * math.Log(q)
				mx = math.Max(mx, q)
			}
		}
		st.LoadEntropy += h / float64(L)
		st.LoadMax += mx / float64(L)
	}
	st.Margin /= float64(L * len(tokens))
	if st.Compared > 0 {
		st.Disagreement = float64(differ) / float64(st.Compared)
	}
	return st, nil
}
