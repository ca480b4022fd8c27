package eval_test

import (
	"fmt"

	"github.com/moerl/moerl/rl/eval"
)

// pass@k from n = 10 samples of which c = 3 are correct.
func ExamplePassAtK() {
	for _, k := range []int{1, 2, 5, 8} {
		fmt.Printf("pass@%d = %.4f\n", k, eval.PassAtK(10, 3, k))
	}
	// Output:
	// pass@1 = 0.3000
	// pass@2 = 0.5333
	// pass@5 = 0.9167
	// pass@8 = 1.0000
}

// maj@k of a problem with 6 samples: 3 give the right answer, 2 the same
// wrong one, 1 is malformed and does not vote.
func ExampleTally_MajAtK() {
	t := eval.Tally{ID: "kk-1", N: 6, Correct: 3, Votes: []eval.Vote{
		{Answer: "a knave,b knave", Count: 3, Correct: true},
		{Answer: "a knight,b knave", Count: 2, Correct: false},
	}}
	for _, k := range []int{1, 2, 4, 6} {
		fmt.Printf("maj@%d = %.4f\n", k, t.MajAtK(k))
	}
	// Output:
	// maj@1 = 0.5000
	// maj@2 = 0.6000
	// maj@4 = 0.7000
	// maj@6 = 1.0000
}

// A paired bootstrap comparison of two models on the same 3 replicates of 4
// problems: the draws are shared, so the difference is taken draw by draw.
func ExampleBootstrap_DiffInterval() {
	base := [][]float64{{0.1, 0.2, 0.3, 0.4}, {0.2, 0.2, 0.3, 0.3}, {0.1, 0.3, 0.2, 0.4}}
	rl := [][]float64{{0.3, 0.4, 0.4, 0.5}, {0.3, 0.4, 0.5, 0.4}, {0.2, 0.5, 0.4, 0.6}}
	b := eval.Bootstrap{Seed: 1} // 2000 draws, 95%
	draws := b.Draws(3, 4)
	iv := b.DiffInterval(draws, rl, base)
	fmt.Printf("RL − base = %.3f, %.0f%% interval [%.2f, %.2f]: %s\n", iv.Est, 100*iv.Level, iv.Lo, iv.Hi, eval.Decide(iv, +1))
	// Output:
	// RL − base = 0.158, 95% interval [0.13, 0.18]: reproduced
}
