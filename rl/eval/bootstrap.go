package eval

import (
	"math"
	"math/rand/v2"
	"slices"
)

// Bootstrap configures the hierarchical bootstrap by which a study decides
// its findings (SPEC-RL, "How a study decides a finding"): replicates
// (independent pretraining and RL seeds) are resampled with replacement,
// then problems with replacement within each drawn replicate, and a
// metric's interval is the percentile interval of its value over the
// draws. One set of draws (Draws) serves every metric, every k and every
// model, so that a difference between two models evaluated on the same
// problems is computed draw by draw: a paired comparison.
type Bootstrap struct {
	// Resamples is the number of draws; 0 means 2000, the least SPEC-RL
	// allows for a study.
	Resamples int
	// Level is the intervals' coverage; 0 means 0.95.
	Level float64
	// Seed determines the draws.
	Seed uint64
}

// DefaultResamples and DefaultLevel are what the zero Bootstrap uses.
const (
	DefaultResamples = 2000
	DefaultLevel     = 0.95
)

// bootStream is the PCG stream of the draws, fixed so that the seed alone
// determines them.
const bootStream = 0x626f6f7473747270

func (b Bootstrap) resamples() int {
	if b.Resamples <= 0 {
		return DefaultResamples
	}
	return b.Resamples
}

func (b Bootstrap) level() float64 {
	if b.Level <= 0 || b.Level >= 1 {
		return DefaultLevel
	}
	return b.Level
}

// Draw is one hierarchical resample: Reps are the replicates drawn (as
// many as there are, with replacement), and Problems[j] the problems drawn
// (as many as there are, with replacement) within the j-th drawn replicate.
type Draw struct {
	Reps     []int
	Problems [][]int
}

// Draws returns b's draws for reps replicates of problems problems each,
// the same for the same arguments and seed. It returns nil unless both
// counts are positive.
func (b Bootstrap) Draws(reps, problems int) []Draw {
	if reps < 1 || problems < 1 {
		return nil
	}
	rng := rand.New(rand.NewPCG(b.Seed, bootStream))
	out := make([]Draw, b.resamples())
	for i := range out {
		d := Draw{Reps: make([]int, reps), Problems: make([][]int, reps)}
		idx := make([]int, reps*problems)
		for j := range d.Reps {
			d.Reps[j] = rng.IntN(reps)
			d.Problems[j] = idx[j*problems : (j+1)*problems : (j+1)*problems]
			for p := range d.Problems[j] {
				d.Problems[j][p] = rng.IntN(problems)
			}
		}
		out[i] = d
	}
	return out
}

// Mean is the draw's value of a metric: v[r][i] is the metric on problem i
// in replicate r, and the value is the mean over the drawn replicates of
// the mean over the problems drawn within each. v must have the shape the
// draws were made for (every v[r] as long as Problems[j]); otherwise Mean
// is NaN.
func (d Draw) Mean(v [][]float64) float64 {
	if len(d.Reps) == 0 {
		return math.NaN()
	}
	total := 0.0
	for j, r := range d.Reps {
		if r >= len(v) || len(v[r]) != len(d.Problems[j]) {
			return math.NaN()
		}
		row, s := v[r], 0.0
		for _, i := range d.Problems[j] {
			s += row[i]
		}
		total += s / float64(len(row))
	}
	return total / float64(len(d.Reps))
}

// Estimate is the metric without resampling: the mean over replicates of
// the mean over problems of v[r][i]; NaN if v or a replicate is empty.
func Estimate(v [][]float64) float64 {
	if len(v) == 0 {
		return math.NaN()
	}
	total := 0.0
	for _, row := range v {
		if len(row) == 0 {
			return math.NaN()
		}
		s := 0.0
		for _, x := range row {
			s += x
		}
		total += s / float64(len(row))
	}
	return total / float64(len(v))
}

// Interval is an estimate with its bootstrap interval [Lo, Hi] of coverage
// Level.
type Interval struct {
	Est   float64 `json:"est"`
	Lo    float64 `json:"lo"`
	Hi    float64 `json:"hi"`
	Level float64 `json:"level"`
}

// Interval is the percentile interval of stats, the values of a metric
// over the draws, around the estimate est: Lo and Hi are the (1 − Level)/2
// and (1 + Level)/2 quantiles of stats, interpolated linearly between order
// statistics (Hyndman and Fan's type 7, numpy's default). A NaN among the
// stats, a draw where the metric is undefined, makes Lo and Hi NaN: leaving
// it out would narrow the interval without saying so. No stats gives NaN
// too.
func (b Bootstrap) Interval(est float64, stats []float64) Interval {
	level := b.level()
	iv := Interval{Est: est, Lo: math.NaN(), Hi: math.NaN(), Level: level}
	if len(stats) == 0 || slices.ContainsFunc(stats, math.IsNaN) {
		return iv
	}
	s := slices.Clone(stats)
	slices.Sort(s)
	iv.Lo, iv.Hi = quantile(s, (1-level)/2), quantile(s, (1+level)/2)
	return iv
}

// quantile is the type-7 quantile p of sorted s.
func quantile(s []float64, p float64) float64 {
	h := p * float64(len(s)-1)
	i := int(math.Floor(h))
	if i >= len(s)-1 {
		return s[len(s)-1]
	}
	return s[i] + (h-float64(i))*(s[i+1]-s[i])
}

// MeanInterval is the interval of the metric v (see Draw.Mean) over draws.
func (b Bootstrap) MeanInterval(draws []Draw, v [][]float64) Interval {
	stats := make([]float64, len(draws))
	for i, d := range draws {
		stats[i] = d.Mean(v)
	}
	return b.Interval(Estimate(v), stats)
}

// DiffInterval is the interval of the paired difference x − y of two
// models' metrics on the same replicates and problems: each draw takes the
// same replicates and problems for both.
func (b Bootstrap) DiffInterval(draws []Draw, x, y [][]float64) Interval {
	stats := make([]float64, len(draws))
	for i, d := range draws {
		stats[i] = d.Mean(x) - d.Mean(y)
	}
	return b.Interval(Estimate(x)-Estimate(y), stats)
}

// Verdict is what a study concludes about a predicted finding.
type Verdict string

// The verdicts of SPEC-RL.
const (
	// Reproduced: the interval of the predicted difference excludes 0 on
	// the predicted side.
	Reproduced Verdict = "reproduced"
	// Contradicted: the interval excludes 0 on the other side.
	Contradicted Verdict = "contradicted"
	// Inconclusive: the interval contains 0 (or is undefined).
	Inconclusive Verdict = "inconclusive"
)

// Decide judges a difference's interval against the predicted sign: +1
// predicts a difference above 0, −1 below; 0 predicts nothing and is always
// inconclusive. An interval that touches 0, or is NaN, is inconclusive.
func Decide(iv Interval, predicted int) Verdict {
	above, below := iv.Lo > 0, iv.Hi < 0
	switch {
	case predicted > 0 && above, predicted < 0 && below:
		return Reproduced
	case predicted > 0 && below, predicted < 0 && above:
		return Contradicted
	}
	return Inconclusive
}

// Crossover is the k at which the base model catches up with the RL model
// for good (2504.13837): diff[j] is RL − base at ks[j] (ascending), and the
// crossover is the smallest measured k from which on the difference is
// negative at every larger k measured, so that noise at small k makes no
// false crossover. A curve negative everywhere crosses at ks[0]. ok is
// false when the difference at the largest k is not negative (or NaN), and
// when ks is not strictly ascending or not as long as diff.
func Crossover(ks []int, diff []float64) (k int, ok bool) {
	if len(ks) != len(diff) || len(ks) == 0 {
		return 0, false
	}
	for j := 1; j < len(ks); j++ {
		if ks[j] <= ks[j-1] {
			return 0, false
		}
	}
	j := len(diff)
	for j > 0 && diff[j-1] < 0 {
		j--
	}
	if j == len(diff) {
		return 0, false
	}
	return ks[j], true
}

// CrossoverInterval is the percentile interval of the crossover k over
// bootstrap draws: diffs[b] is draw b's curve RL − base at ks (see
// Crossover). A draw with no crossover counts as crossing beyond the
// largest k, and none is the share of such draws. lo and hi are order
// statistics of the draws' crossovers (nearest rank, so always a measured
// k) at (1 − level)/2 and (1 + level)/2; an end that falls among the draws
// with no crossover is 0. level 0 means 0.95. No draws give 0, 0, NaN.
func CrossoverInterval(ks []int, diffs [][]float64, level float64) (lo, hi int, none float64) {
	if len(diffs) == 0 {
		return 0, 0, math.NaN()
	}
	level = Bootstrap{Level: level}.level()
	// math.MaxInt stands for "no crossover", after every k.
	cs := make([]int, len(diffs))
	missing := 0
	for i, d := range diffs {
		k, ok := Crossover(ks, d)
		if !ok {
			k = math.MaxInt
			missing++
		}
		cs[i] = k
	}
	slices.Sort(cs)
	rank := func(p float64) int {
		// Nearest rank: the ⌈p·B⌉-th smallest, 1-based.
		r := int(math.Ceil(p * float64(len(cs))))
		k := cs[min(max(r, 1), len(cs))-1]
		if k == math.MaxInt {
			return 0
		}
		return k
	}
	return rank((1 - level) / 2), rank((1 + level) / 2), float64(missing) / float64(len(cs))
}
