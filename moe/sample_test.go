package moe_test

import (
	"testing"

	"github.com/moerl/moerl/engine"
	"github.com/moerl/moerl/engine/cpu"
	"github.com/moerl/moerl/moe"
	"github.com/moerl/moerl/moe/parity"
)

// TestSampledLogProbsMatchForward: the log-probs recorded while sampling
// equal the ones a training forward recomputes on the same tokens (the
// ratio is 1 before any update), to float rounding, at temperature 1 and
// below.
func TestSampledLogProbsMatchForward(t *testing.T) {
	cfg := parity.SmallConfig(false)
	cfg.MaxSeq = 24
	m, err := moe.New(cfg, cpu.New(), 5)
	if err != nil {
		t.Fatal(err)
	}
	prompts := [][]int32{{1, 5, 6}, {1, 7}, {1, 9, 9, 9, 4}}
	const G = 3
	for _, temp := range []float64{1, 0.7} {
		seqs, err := m.Generate(prompts, G, moe.SampleOptions{Temperature: temp, MaxNew: 10, Stop: []int32{2}},
			engine.NewRNG(9, engine.StreamSample))
		if err != nil {
			t.Fatal(err)
		}
		if len(seqs) != len(prompts)*G {
			t.Fatalf("got %d sequences, want %d", len(seqs), len(prompts)*G)
		}
		if worst := parity.LogProbGap(m, prompts, seqs, temp); worst > 1e-5 {
			t.Errorf("temperature %g: recorded and recomputed log-probs differ by up to %g", temp, worst)
		}
	}
}
