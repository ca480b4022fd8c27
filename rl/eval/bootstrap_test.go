package eval

import (
	"math"
	"math/rand/v2"
	"reflect"
	"testing"
)

func TestDrawsDeterministic(t *testing.T) {
	b := Bootstrap{Resamples: 50, Seed: 7}
	d1, d2 := b.Draws(3, 20), b.Draws(3, 20)
	if !reflect.DeepEqual(d1, d2) {
		t.Fatal("same seed, different draws")
	}
	if reflect.DeepEqual(d1, Bootstrap{Resamples: 50, Seed: 8}.Draws(3, 20)) {
		t.Fatal("different seeds, same draws")
	}
	if len(d1) != 50 {
		t.Fatalf("%d draws", len(d1))
	}
	for _, d := range d1 {
		if len(d.Reps) != 3 || len(d.Problems) != 3 {
			t.Fatalf("draw shape %d reps, %d problem lists", len(d.Reps), len(d.Problems))
		}
		for j, r := range d.Reps {
			if r < 0 || r >= 3 || len(d.Problems[j]) != 20 {
				t.Fatalf("replicate %d, %d problems", r, len(d.Problems[j]))
			}
			for _, i := range d.Problems[j] {
				if i < 0 || i >= 20 {
					t.Fatalf("problem index %d", i)
				}
			}
		}
	}
	if got := len(Bootstrap{}.Draws(1, 1)); got != DefaultResamples {
		t.Errorf("zero Bootstrap: %d draws, want %d", got, DefaultResamples)
	}
	if (Bootstrap{}).Draws(0, 5) != nil || (Bootstrap{}).Draws(2, 0) != nil {
		t.Error("draws for nothing")
	}
}

func TestDrawMean(t *testing.T) {
	v := [][]float64{{1, 2, 3}, {10, 20, 30}}
	d := Draw{Reps: []int{1, 1}, Problems: [][]int{{0, 0, 2}, {1, 1, 1}}}
	// (10+10+30)/3 = 50/3 and 20; their mean.
	if got, want := d.Mean(v), (50.0/3+20)/2; math.Abs(got-want) > 1e-12 {
		t.Errorf("Mean = %v, want %v", got, want)
	}
	if got := Estimate(v); got != 11 {
		t.Errorf("Estimate = %v, want 11", got)
	}
	if got := d.Mean([][]float64{{1, 2, 3}}); !math.IsNaN(got) {
		t.Errorf("Mean of a missing replicate = %v, want NaN", got)
	}
	if got := d.Mean([][]float64{{1}, {1, 2}}); !math.IsNaN(got) {
		t.Errorf("Mean of a short replicate = %v, want NaN", got)
	}
	if !math.IsNaN(Estimate(nil)) || !math.IsNaN(Estimate([][]float64{{}})) {
		t.Error("Estimate of nothing is not NaN")
	}
}

func TestIntervalKnown(t *testing.T) {
	b := Bootstrap{Seed: 1}
	// Zero variance: every draw gives the same mean.
	flat := [][]float64{{0.3, 0.3, 0.3, 0.3}, {0.3, 0.3, 0.3, 0.3}}
	iv := b.MeanInterval(b.Draws(2, 4), flat)
	if iv.Lo != iv.Hi || math.Abs(iv.Lo-0.3) > 1e-15 || iv.Level != 0.95 {
		t.Errorf("zero-variance interval %+v", iv)
	}
	// Replicates constant inside, 0 and 1: a draw's mean is the share of
	// its two replicates that are the second, 0, 1/2 or 1 with chances 1/4,
	// 1/2, 1/4: the 95% interval is [0, 1] and the 40% one [1/2, 1/2].
	reps := [][]float64{{0, 0, 0}, {1, 1, 1}}
	draws := b.Draws(2, 3)
	if iv := b.MeanInterval(draws, reps); iv.Lo != 0 || iv.Hi != 1 || iv.Est != 0.5 {
		t.Errorf("95%% interval of two replicates %+v, want [0, 1] around 0.5", iv)
	}
	if iv := (Bootstrap{Level: 0.4}).MeanInterval(draws, reps); iv.Lo != 0.5 || iv.Hi != 0.5 {
		t.Errorf("40%% interval of two replicates %+v, want [0.5, 0.5]", iv)
	}
	// A paired difference of identical models is exactly 0 in every draw.
	if iv := b.DiffInterval(draws, reps, reps); iv.Lo != 0 || iv.Hi != 0 || iv.Est != 0 {
		t.Errorf("difference of a model with itself %+v", iv)
	}
	// Percentiles of 0..100 interpolate to 2.5 and 97.5.
	stats := make([]float64, 101)
	for i := range stats {
		stats[100-i] = float64(i)
	}
	if iv := b.Interval(50, stats); math.Abs(iv.Lo-2.5) > 1e-12 || math.Abs(iv.Hi-97.5) > 1e-12 {
		t.Errorf("interval of 0..100: %+v", iv)
	}
	stats[40] = math.NaN()
	if iv := b.Interval(50, stats); !math.IsNaN(iv.Lo) || !math.IsNaN(iv.Hi) || iv.Est != 50 {
		t.Errorf("a NaN stat gave %+v, want NaN bounds", iv)
	}
	if iv := b.Interval(1, nil); !math.IsNaN(iv.Lo) {
		t.Errorf("no stats gave %+v", iv)
	}
}

// TestIntervalCoverage draws many data sets of 40 problems from a normal
// distribution: the 95% percentile interval of their mean must cover the
// true mean about 95% of the time (the percentile bootstrap runs a little
// short at this size, ~93%).
func TestIntervalCoverage(t *testing.T) {
	const trials, problems, mu = 300, 40, 0.7
	rng := rand.New(rand.NewPCG(11, 12))
	covered := 0
	for trial := range trials {
		v := [][]float64{make([]float64, problems)}
		for i := range v[0] {
			v[0][i] = mu + rng.NormFloat64()
		}
		b := Bootstrap{Resamples: 500, Seed: uint64(trial)}
		if iv := b.MeanInterval(b.Draws(1, problems), v); iv.Lo <= mu && mu <= iv.Hi {
			covered++
		}
	}
	if rate := float64(covered) / trials; rate < 0.90 || rate > 0.98 {
		t.Errorf("coverage %.3f, want about 0.95", rate)
	} else {
		t.Logf("coverage %.3f", rate)
	}
}

func TestDecide(t *testing.T) {
	nan := math.NaN()
	tests := []struct {
		lo, hi    float64
		predicted int
		want      Verdict
	}{
		{0.01, 0.2, 1, Reproduced},
		{0.01, 0.2, -1, Contradicted},
		{-0.2, -0.01, -1, Reproduced},
		{-0.2, -0.01, 1, Contradicted},
		{-0.1, 0.2, 1, Inconclusive},
		{0, 0.2, 1, Inconclusive}, // touches 0
		{0.01, 0.2, 0, Inconclusive},
		{nan, nan, 1, Inconclusive},
	}
	for _, tc := range tests {
		if got := Decide(Interval{Lo: tc.lo, Hi: tc.hi}, tc.predicted); got != tc.want {
			t.Errorf("Decide([%v, %v], %d) = %s, want %s", tc.lo, tc.hi, tc.predicted, got, tc.want)
		}
	}
}

func TestCrossover(t *testing.T) {
	ks := []int{1, 2, 4, 8, 16, 32}
	nan := math.NaN()
	tests := []struct {
		name string
		ks   []int
		diff []float64
		k    int
		ok   bool
	}{
		{"noise at small k", ks, []float64{0.1, -0.01, 0.05, 0.02, -0.03, -0.1}, 16, true},
		{"clean", ks, []float64{0.2, 0.1, 0.05, -0.01, -0.05, -0.1}, 8, true},
		{"never above", ks, []float64{-0.2, -0.1, -0.05, -0.01, -0.05, -0.1}, 1, true},
		{"back above at the end", ks, []float64{0.2, 0.1, -0.05, -0.01, -0.05, 0.01}, 0, false},
		{"zero at the end", ks, []float64{0.2, 0.1, -0.05, -0.01, -0.05, 0}, 0, false},
		{"NaN at the end", ks, []float64{0.2, 0.1, -0.05, -0.01, -0.05, nan}, 0, false},
		{"NaN before", ks, []float64{0.2, 0.1, nan, -0.01, -0.05, -0.1}, 8, true},
		{"lengths differ", ks, []float64{-1}, 0, false},
		{"not ascending", []int{1, 4, 2}, []float64{1, -1, -1}, 0, false},
		{"empty", nil, nil, 0, false},
	}
	for _, tc := range tests {
		k, ok := Crossover(tc.ks, tc.diff)
		if k != tc.k || ok != tc.ok {
			t.Errorf("%s: Crossover = %d, %v; want %d, %v", tc.name, k, ok, tc.k, tc.ok)
		}
	}

	ks = []int{1, 2, 4, 8}
	var diffs [][]float64
	for range 50 {
		diffs = append(diffs, []float64{1, -1, -1, -1}) // crosses at 2
	}
	lo, hi, none := CrossoverInterval(ks, diffs, 0)
	if lo != 2 || hi != 2 || none != 0 {
		t.Errorf("all cross at 2: [%d, %d], none %v", lo, hi, none)
	}
	for range 50 {
		diffs = append(diffs, []float64{1, 1, 1, 1}) // no crossover
	}
	lo, hi, none = CrossoverInterval(ks, diffs, 0.9)
	if lo != 2 || hi != 0 || none != 0.5 {
		t.Errorf("half cross at 2: [%d, %d], none %v; want [2, 0 (none)], 0.5", lo, hi, none)
	}
	for range 100 {
		diffs = append(diffs, []float64{1, 1, 1, -1}) // crosses at 8
	}
	// 50 at 2, 100 at 8, 50 none: the 5% point is 2, the 95% one none.
	if lo, hi, none = CrossoverInterval(ks, diffs, 0.9); lo != 2 || hi != 0 || none != 0.25 {
		t.Errorf("mixed: [%d, %d], none %v", lo, hi, none)
	}
	// 50 at 8 then 50 none: the 25% point is 8, the 75% one none.
	if lo, hi, none = CrossoverInterval(ks, diffs[50:150], 0.5); lo != 8 || hi != 0 || none != 0.5 {
		t.Errorf("none or 8: [%d, %d], none %v; want [8, 0 (none)], 0.5", lo, hi, none)
	}
	if _, _, none := CrossoverInterval(ks, nil, 0); !math.IsNaN(none) {
		t.Errorf("no draws: none = %v", none)
	}
}
