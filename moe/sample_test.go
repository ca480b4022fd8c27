package moe_test

import (
	"testing"

	"github.com/moerl/moerl/engine/cpu"
	"github.com/moerl/moerl/internal/paritytest"
)

// TestSampledLogProbsMatchForward: the log-probs recorded while sampling
// are the bits a training forward recomputes on the same tokens (the ratio
// is exactly 1 before any update), at temperature 1, below it and greedy,
// with MoE layers and dense.
func TestSampledLogProbsMatchForward(t *testing.T) {
	cfg := paritytest.SmallConfig(false)
	cfg.MaxSeq = 24
	paritytest.OnPolicy(t, cpu.New(), cfg)
}
