// Package eval computes the evaluation metrics of moerl's RL experiments
// from n sampled answers per problem: unbiased pass@k, exact maj@k
// (majority vote over every k-subset, see Tally.MajAtK), mean@k, their
// means over problems and difficulty bins, and the sampling-efficiency gap
// ΔSE between a base and an RL model; and the statistics a study decides
// its findings with: hierarchical bootstrap intervals over replicates and
// problems, verdicts, and the crossover k (see Bootstrap).
package eval

import "math"

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
