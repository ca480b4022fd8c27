package eval

import (
	"cmp"
	"fmt"
	"math"
	"slices"
)

// Vote is one answer class of a problem's samples: a canonical answer and
// how many well-formed samples gave it.
type Vote struct {
	Answer  string `json:"answer"`
	Count   int    `json:"count"`
	Correct bool   `json:"correct"`
}

// Tally is the compact record of one problem's n samples from which pass@k
// and maj@k follow: how many samples were correct and how the well-formed
// ones voted. Samples that do not vote (malformed, or with an empty answer)
// number N minus the votes' counts.
type Tally struct {
	ID  string `json:"id"`
	Bin string `json:"bin,omitempty"`
	// N is the number of samples, voting or not.
	N int `json:"n"`
	// Correct is the number of correct samples.
	Correct int `json:"correct"`
	// Votes are the answer classes, most voted first (ties by answer).
	Votes []Vote `json:"votes"`
}

// TallyOf counts a problem's samples. A sample votes when its answer is
// non-empty and it is valid (Valid nil: every non-empty answer is); the
// answers must be canonical (task.Canonical), so that samples with the same
// answer share a verdict: an answer that is correct in one voting sample
// and wrong in another is an error.
func TallyOf(p ProblemSamples) (Tally, error) {
	n := len(p.Correct)
	if len(p.Answers) != n || (p.Valid != nil && len(p.Valid) != n) {
		return Tally{}, fmt.Errorf("tally %q: %d answers, %d validity flags, %d correctness flags", p.ID, len(p.Answers), len(p.Valid), n)
	}
	t := Tally{ID: p.ID, Bin: p.Bin, N: n}
	index := make(map[string]int) // answer → index in t.Votes
	first := make(map[string]int) // answer → its first voting sample
	for j, a := range p.Answers {
		if p.Correct[j] {
			t.Correct++
		}
		if a == "" || (p.Valid != nil && !p.Valid[j]) {
			continue
		}
		i, ok := index[a]
		if !ok {
			index[a], first[a] = len(t.Votes), j
			t.Votes = append(t.Votes, Vote{Answer: a, Count: 1, Correct: p.Correct[j]})
			continue
		}
		if t.Votes[i].Correct != p.Correct[j] {
			return Tally{}, fmt.Errorf("tally %q: answer %q is %s in sample %d but %s in sample %d; maj@k needs canonical answers",
				p.ID, clipAnswer(a), verdictWord(t.Votes[i].Correct), first[a], verdictWord(p.Correct[j]), j)
		}
		t.Votes[i].Count++
	}
	slices.SortFunc(t.Votes, func(a, b Vote) int {
		if c := cmp.Compare(b.Count, a.Count); c != 0 {
			return c
		}
		return cmp.Compare(a.Answer, b.Answer)
	})
	return t, nil
}

func verdictWord(correct bool) string {
	if correct {
		return "correct"
	}
	return "wrong"
}

func clipAnswer(s string) string {
	if len(s) > 40 {
		return s[:40] + "..."
	}
	return s
}

// Check reports whether the tally is consistent: counts positive and
// adding up to at most N, Correct within [0, N].
func (t Tally) Check() error {
	sum := 0
	for _, v := range t.Votes {
		if v.Count <= 0 {
			return fmt.Errorf("tally %q: answer %q has count %d", t.ID, clipAnswer(v.Answer), v.Count)
		}
		sum += v.Count
	}
	if t.N < 1 || sum > t.N || t.Correct < 0 || t.Correct > t.N {
		return fmt.Errorf("tally %q: n %d, %d votes, %d correct", t.ID, t.N, sum, t.Correct)
	}
	return nil
}

// Invalid is the number of samples that do not vote.
func (t Tally) Invalid() int {
	n := t.N
	for _, v := range t.Votes {
		n -= v.Count
	}
	return n
}

// PassAtK is the unbiased pass@k of the problem (see PassAtK).
func (t Tally) PassAtK(k int) float64 { return PassAtK(t.N, t.Correct, k) }

// MajAtK is the exact maj@k of the problem: the expectation, over all
// C(N, k) subsets of k samples, of the score of the subset's majority
// vote. The score is 1 if the most voted answer is correct; if t answers
// tie for the most votes it is the share of them that are correct (ties
// split uniformly); a subset in which nobody votes scores 0. This is the
// definition of SPEC-RL ("maj@k, exactly"), and it depends only on the
// vote counts, not on the order of the samples.
//
// It is computed by dynamic programming over the answer classes with
// hypergeometric probabilities (see majority.go), in float64 without
// binomial coefficients, so it is stable for N in the thousands: tests
// check it against every subset for small N and against exact rational
// arithmetic at N = 1024, to 1e-14. k outside [1, N], or an inconsistent
// tally (see Check), gives NaN.
func (t Tally) MajAtK(k int) float64 { return t.MajAtKs([]int{k})[0] }

// MajAtKs is MajAtK at each of ks, sharing the set-up.
func (t Tally) MajAtKs(ks []int) []float64 {
	v, _ := t.majAtKs(ks)
	return v
}

// majAtKs returns maj@k at each of ks and a bound on the error from the
// probability the computation dropped as negligible.
func (t Tally) majAtKs(ks []int) (values, dropped []float64) {
	values, dropped = make([]float64, len(ks)), make([]float64, len(ks))
	valid := t.Check() == nil
	anyCorrect := false
	for _, v := range t.Votes {
		anyCorrect = anyCorrect || v.Correct
	}
	var cases []*majCase
	for i, k := range ks {
		switch {
		case !valid || k < 1 || k > t.N:
			values[i] = math.NaN()
		case !anyCorrect:
			values[i] = 0
		case k == t.N || k == 1:
			values[i] = t.majAll(k)
		default:
			if cases == nil {
				s := scratchPool.Get().(*majScratch)
				defer scratchPool.Put(s)
				cases = t.cases(s)
			}
			for _, c := range cases {
				s, d := c.share(k)
				values[i] += s
				dropped[i] += d
			}
			values[i] = min(values[i], 1)
		}
	}
	return values, dropped
}

// cases returns the computation of each correct class's share of maj@k.
func (t Tally) cases(s *majScratch) []*majCase {
	counts := make([]int, len(t.Votes))
	for i, v := range t.Votes {
		counts[i] = v.Count
	}
	slices.SortFunc(counts, func(a, b int) int { return cmp.Compare(b, a) })
	var cs []*majCase
	for _, v := range t.Votes {
		if !v.Correct {
			continue
		}
		// The others are every class but this one, still in descending
		// order: drop one copy of its count.
		others := make([]int, 0, len(counts))
		removed := false
		for _, c := range counts {
			if c == v.Count && !removed {
				removed = true
				continue
			}
			others = append(others, c)
		}
		cs = append(cs, newMajCase(others, v.Count, t.N, s))
	}
	return cs
}

// majAll is maj@k for the two cases that need no subsets: k = N (the one
// subset is all samples) and k = 1 (each voting sample is its own
// majority).
func (t Tally) majAll(k int) float64 {
	if k == 1 {
		c := 0
		for _, v := range t.Votes {
			if v.Correct {
				c += v.Count
			}
		}
		return float64(c) / float64(t.N)
	}
	top, tied, right := 0, 0, 0
	for _, v := range t.Votes {
		switch {
		case v.Count > top:
			top, tied, right = v.Count, 1, 0
		case v.Count == top:
			tied++
		default:
			continue
		}
		if v.Correct {
			right++
		}
	}
	if tied == 0 {
		return 0
	}
	return float64(right) / float64(tied)
}
