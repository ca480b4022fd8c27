// Package eval computes the evaluation metrics of moerl's RL experiments
// from n sampled answers per problem: unbiased pass@k, maj@k (majority vote),
// mean@k, their means over problems and difficulty bins, and the
// sampling-efficiency gap ΔSE between a base and an RL model.
package eval

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
)

// PassAtK is the unbiased estimator of pass@k (Chen et al. 2021) from n
// samples of which c are correct: 1 − C(n−c, k)/C(n, k), which is 1 when
// n − c < k. The ratio is the product Π_{i=n−c+1..n} (1 − k/i), here
// evaluated as a sum of log1p terms (over whichever of c or k is the shorter
// product) and expm1, so that a pass@k near 0 keeps its relative precision
// for n in the thousands. Invalid arguments (n < 1, c outside [0, n], k
// outside [1, n]) give NaN.
func PassAtK(n, c, k int) float64 {
	if n < 1 || c < 0 || c > n || k < 1 || k > n {
		return math.NaN()
	}
	if n-c < k {
		return 1
	}
	logRatio := 0.0
	if c <= k {
		for i := n - c + 1; i <= n; i++ {
			logRatio += math.Log1p(-float64(k) / float64(i))
		}
	} else {
		// The same ratio as Π_{j=0..k−1} (n−c−j)/(n−j).
		for j := range k {
			logRatio += math.Log1p(-float64(c) / float64(n-j))
		}
	}
	return -math.Expm1(logRatio)
}

// MeanAtK is the mean correctness of the first k samples, the estimate of
// pass@1 from k samples. k outside [1, len(correct)] gives NaN.
func MeanAtK(correct []bool, k int) float64 {
	if k < 1 || k > len(correct) {
		return math.NaN()
	}
	hits := 0
	for _, c := range correct[:k] {
		if c {
			hits++
		}
	}
	return float64(hits) / float64(k)
}

// Ks returns 1, 2, 4, … up to n, with n itself last when it is not a power
// of two; nil for n < 1.
func Ks(n int) []int {
	var ks []int
	for k := 1; k > 0 && k <= n; k *= 2 {
		ks = append(ks, k)
	}
	if len(ks) > 0 && ks[len(ks)-1] != n {
		ks = append(ks, n)
	}
	return ks
}

// MajSubsets says how maj@k averages over subsets of k samples when a
// problem has n > k.
type MajSubsets struct {
	// Resamples is the number of random k-subsets to average over; 0 means
	// the ⌊n/k⌋ disjoint subsets of consecutive samples (the default). The
	// random subsets are drawn without replacement within a subset, since
	// drawing with replacement would let one sample vote twice.
	Resamples int
	// Seed seeds the random subsets.
	Seed uint64
}

// String says which subsets were used, for reports.
func (s MajSubsets) String() string {
	if s.Resamples == 0 {
		return "disjoint consecutive subsets"
	}
	return fmt.Sprintf("%d random subsets (seed %d)", s.Resamples, s.Seed)
}

// MajAtK is maj@k for one problem: the most frequent answer among k samples
// wins, ties going to the answer seen first, and scores 1 if it is correct.
// A sample votes only if its answer is non-empty and valid[j] is true (valid
// may be nil: every non-empty answer votes); malformed answers are thus
// marked invalid or left empty. A subset in which nobody votes scores 0. The
// winner's correctness is that of its first sample. With n > k samples the
// score is averaged over subsets as s says.
func MajAtK(answers []string, valid, correct []bool, k int, s MajSubsets) (float64, error) {
	n := len(answers)
	if len(correct) != n || (valid != nil && len(valid) != n) {
		return 0, fmt.Errorf("maj@%d: %d answers, %d validity flags, %d correctness flags", k, n, len(valid), len(correct))
	}
	if k < 1 || k > n {
		return 0, fmt.Errorf("maj@%d: k must be in [1, %d], the number of samples", k, n)
	}
	if s.Resamples < 0 {
		return 0, fmt.Errorf("maj@%d: %d resamples", k, s.Resamples)
	}
	type tally struct{ count, first int }
	votes := func(idx []int) float64 {
		tallies := make(map[string]*tally)
		var order []string // answers in the order first seen
		for _, j := range idx {
			a := answers[j]
			if a == "" || (valid != nil && !valid[j]) {
				continue
			}
			if t, ok := tallies[a]; ok {
				t.count++
			} else {
				tallies[a] = &tally{count: 1, first: j}
				order = append(order, a)
			}
		}
		best, bestCount := -1, 0
		for _, a := range order {
			// Strictly more votes to overtake: ties stay with the first seen.
			if t := tallies[a]; t.count > bestCount {
				best, bestCount = t.first, t.count
			}
		}
		if best >= 0 && correct[best] {
			return 1
		}
		return 0
	}
	total := 0.0
	if s.Resamples == 0 {
		m := n / k
		idx := make([]int, k)
		for sub := range m {
			for i := range idx {
				idx[i] = sub*k + i
			}
			total += votes(idx)
		}
		return total / float64(m), nil
	}
	rng := rand.New(rand.NewPCG(s.Seed, 0x6d616a4b))
	perm := make([]int, n)
	for i := range perm {
		perm[i] = i
	}
	idx := make([]int, k)
	for range s.Resamples {
		// A partial Fisher–Yates shuffle of any arrangement draws a uniform
		// k-subset; sorting keeps "seen first" meaning sample order.
		for i := range k {
			j := i + rng.IntN(n-i)
			perm[i], perm[j] = perm[j], perm[i]
		}
		copy(idx, perm[:k])
		slices.Sort(idx)
		total += votes(idx)
	}
	return total / float64(s.Resamples), nil
}
