package eval_test

import (
	"math"
	"testing"

	"github.com/moerl/moerl/rl/eval"
	"github.com/moerl/moerl/rl/task"
)

// samplesOf scores answers to p as an evaluation does: each answer is
// verified and voted in its canonical form.
func samplesOf(t *testing.T, p task.Problem, answers []string) eval.ProblemSamples {
	t.Helper()
	tk, err := task.Get(p.Task)
	if err != nil {
		t.Fatal(err)
	}
	s := eval.ProblemSamples{ID: p.ID}
	for _, a := range answers {
		ok, _ := tk.Verify(p, a)
		s.Answers = append(s.Answers, tk.Canonical(p, a))
		s.Valid = append(s.Valid, true)
		s.Correct = append(s.Correct, ok)
	}
	return s
}

// TestMajAtKCanonical is the cases: answers that mean the same but
// are written differently must vote together.
func TestMajAtKCanonical(t *testing.T) {
	kk := task.Problem{Task: "kk", ID: "kk", Prompt: "kk a: b is a knave. b: a and b are knaves.", Answer: "a knight,b knave"}
	cd := task.Problem{Task: "countdown", ID: "cd", Prompt: "countdown 25 5 4 to 80", Answer: "(25-5)*4"}
	tests := []struct {
		name    string
		p       task.Problem
		answers []string
		k       int
		want    float64
	}{
		// 3 of 5 correct, written two ways; two copies of one wrong answer,
		// seen first. The vote of the raw texts was a 2–2 tie that the
		// first-seen rule gave to the wrong answer: maj@5 was 0.
		{"kk any order", kk, []string{"a knave,b knight", "a knave,b knight", "a knight,b knave", "a knight,b knave", "b knave,a knight"}, 5, 1},
		// Two different correct expressions against one wrong answer.
		{"countdown two solutions", cd, []string{"25-5*4", "(25-5)*4", "4*(25-5)"}, 3, 1},
		// Wrong expressions of one value vote together, and outvote two
		// different correct ones.
		{"countdown one wrong value", cd, []string{"(25-5)*4", "4*(25-5)", "25-5*4", "25-4*5", "(25-4*5)"}, 5, 0},
		// A wrong expression that reaches the target with the wrong numbers
		// is not a solution, and does not join them.
		{"countdown target with wrong numbers", cd, []string{"(25-5)*4", "25*4-20", "20*4", "4*20"}, 4, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := samplesOf(t, tc.p, tc.answers)
			tl, err := eval.TallyOf(s)
			if err != nil {
				t.Fatal(err)
			}
			if got := tl.MajAtK(tc.k); math.Abs(got-tc.want) > 1e-15 {
				t.Errorf("maj@%d = %v, want %v (votes %+v)", tc.k, got, tc.want, tl.Votes)
			}
			r, err := eval.Summarize([]eval.ProblemSamples{s}, []int{tc.k})
			if err != nil {
				t.Fatal(err)
			}
			if got := r.MajAtK[tc.k]; math.Abs(got-tc.want) > 1e-15 {
				t.Errorf("Summarize: maj@%d = %v, want %v", tc.k, got, tc.want)
			}
		})
	}
}
