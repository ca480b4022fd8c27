package rl

import (
	"math"
	"testing"

	"github.com/moerl/moerl/engine"
	"github.com/moerl/moerl/moe"
	"github.com/moerl/moerl/moe/tokenizer"
	"github.com/moerl/moerl/rl/reward"
	"github.com/moerl/moerl/rl/task"
)

// TestLogLikelihoodMatchesSampling scores a model's own samples: the mean
// log-probability per token must equal the mean of the log-probs recorded
// while sampling at temperature 1.
func TestLogLikelihoodMatchesSampling(t *testing.T) {
	p, _, tok := tinyModel(t)
	tk, _ := task.Get("add")
	problems := task.GenerateSet(tk, 5, 4, []int{2})
	r, err := Sample(p, tok, problems, 3, moe.SampleOptions{Temperature: 1, MaxNew: 12}, reward.Default, engine.NewRNG(1, engine.StreamSample))
	if err != nil {
		t.Fatal(err)
	}
	var prompts, responses [][]int32
	for _, s := range r.Seqs {
		prompts = append(prompts, r.Prompts[s.Prompt])
		responses = append(responses, s.Tokens)
	}
	got, err := LogLikelihood(p, prompts, responses)
	if err != nil {
		t.Fatal(err)
	}
	for i, s := range r.Seqs {
		var want float64
		for _, lp := range s.LogProbs {
			want += float64(lp)
		}
		want /= float64(len(s.LogProbs))
		if math.Abs(got[i]-want) > 1e-5 {
			t.Errorf("sequence %d: log-likelihood %v, sampled log-probs average %v", i, got[i], want)
		}
	}
	if _, err := LogLikelihood(p, prompts, responses[:1]); err == nil {
		t.Error("mismatched lengths: no error")
	}
	empty, _ := LogLikelihood(p, [][]int32{{tokenizer.BOS}}, [][]int32{{}})
	if !math.IsNaN(empty[0]) {
		t.Errorf("empty response scored %v, want NaN", empty[0])
	}
}
