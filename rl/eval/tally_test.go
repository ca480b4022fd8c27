package eval

import (
	"math"
	"math/big"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// bruteMaj is maj@k by enumerating every k-subset of the samples: label[j]
// is sample j's class (−1: no vote) and correct[c] whether class c is
// right.
func bruteMaj(label []int, correct []bool, k int) float64 {
	n := len(label)
	counts := make([]int, len(correct))
	idx := make([]int, k)
	for i := range idx {
		idx[i] = i
	}
	sum, subsets := 0.0, 0
	for {
		clear(counts)
		for _, j := range idx {
			if label[j] >= 0 {
				counts[label[j]]++
			}
		}
		top := 0
		if len(counts) > 0 {
			top = slices.Max(counts)
		}
		if top > 0 {
			tied, right := 0, 0
			for c, v := range counts {
				if v == top {
					tied++
					if correct[c] {
						right++
					}
				}
			}
			sum += float64(right) / float64(tied)
		}
		subsets++
		// Next combination in lexicographic order.
		i := k - 1
		for i >= 0 && idx[i] == n-k+i {
			i--
		}
		if i < 0 {
			break
		}
		idx[i]++
		for j := i + 1; j < k; j++ {
			idx[j] = idx[j-1] + 1
		}
	}
	return sum / float64(subsets)
}

// randomSamples draws a problem's samples: classes of random sizes, some
// right, some samples invalid.
func randomSamples(rng *rand.Rand, n int) (ProblemSamples, []int, []bool) {
	classes := 1 + rng.IntN(6)
	if rng.IntN(3) == 0 { // many small classes: many ties
		classes = 1 + rng.IntN(n)
	}
	correct := make([]bool, classes)
	switch rng.IntN(4) {
	case 0: // none right
	case 1: // two right classes (a task without canonical answers)
		correct[0] = true
		correct[classes-1] = true
	default:
		correct[rng.IntN(classes)] = true
	}
	weights := make([]float64, classes)
	for i := range weights {
		weights[i] = rng.Float64() + 0.05
	}
	pInvalid := 0.3 * rng.Float64()
	p := ProblemSamples{ID: "r", Answers: make([]string, n), Valid: make([]bool, n), Correct: make([]bool, n)}
	label := make([]int, n)
	for j := range n {
		if rng.Float64() < pInvalid {
			label[j] = -1
			if rng.IntN(2) == 0 {
				p.Answers[j] = "junk" // has text but does not vote
			}
			continue
		}
		u := rng.Float64() * sum(weights)
		c := 0
		for c < classes-1 && u >= weights[c] {
			u -= weights[c]
			c++
		}
		label[j] = c
		p.Answers[j], p.Valid[j], p.Correct[j] = "a"+strconv.Itoa(c), true, correct[c]
	}
	return p, label, correct
}

func sum(xs []float64) float64 {
	s := 0.0
	for _, x := range xs {
		s += x
	}
	return s
}

func TestMajAtKBruteForce(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	cases := 0
	for range 400 {
		n := 1 + rng.IntN(14)
		p, label, correct := randomSamples(rng, n)
		tl, err := TallyOf(p)
		if err != nil {
			t.Fatal(err)
		}
		for k := 1; k <= n; k++ {
			got, want := tl.MajAtK(k), bruteMaj(label, correct, k)
			if all := tl.MajAtKs([]int{k, 1, n}); all[0] != got {
				t.Fatalf("MajAtKs = %v, MajAtK = %v", all[0], got)
			}
			if math.Abs(got-want) > 1e-12 {
				t.Fatalf("n=%d k=%d votes %+v invalid %d: maj = %.17g, brute force %.17g", n, k, tl.Votes, tl.Invalid(), got, want)
			}
			cases++
		}
	}
	t.Logf("%d cases", cases)
}

// exactTwoClasses is maj@k in exact rationals when a correct class of c
// samples and a wrong one of n − c share all votes: the correct one wins
// with more than k/2 draws and ties at k/2.
func exactTwoClasses(n, c, k int) float64 {
	num := new(big.Rat)
	for x := max(0, k-(n-c)); x <= min(c, k); x++ {
		w := new(big.Int).Mul(new(big.Int).Binomial(int64(c), int64(x)), new(big.Int).Binomial(int64(n-c), int64(k-x)))
		r := new(big.Rat).SetInt(w)
		switch {
		case 2*x > k:
			num.Add(num, r)
		case 2*x == k:
			num.Add(num, r.Quo(r, big.NewRat(2, 1)))
		}
	}
	f, _ := num.Quo(num, new(big.Rat).SetInt(new(big.Int).Binomial(int64(n), int64(k)))).Float64()
	return f
}

// TestMajAtKLargeN checks n = 1024 against exact rational arithmetic,
// where binomial coefficients reach 10^306.
func TestMajAtKLargeN(t *testing.T) {
	const n = 1024
	for _, c := range []int{1, 400, 512, 513, 1023} {
		tl := Tally{ID: "two", N: n, Correct: c, Votes: []Vote{{"right", c, true}, {"wrong", n - c, false}}}
		for _, k := range append(Ks(n), 3, 511) {
			got, want := tl.MajAtK(k), exactTwoClasses(n, c, k)
			if math.Abs(got-want) > 1e-14 {
				t.Errorf("c=%d k=%d: maj = %.17g, exact %.17g", c, k, got, want)
			}
		}
	}
}

// TestMajAtKTieGroups checks the closed form for classes that can only
// tie (tieGroup) against the class-by-class program, at sizes past brute
// force: many small classes, the correct one among them.
func TestMajAtKTieGroups(t *testing.T) {
	rng := rand.New(rand.NewPCG(4, 4))
	for range 12 {
		n := 50 + rng.IntN(150)
		tl := Tally{ID: "g", N: n}
		left := n - rng.IntN(n/5)
		for left > 0 {
			c := min(left, 1+rng.IntN(4))
			tl.Votes = append(tl.Votes, Vote{"a" + strconv.Itoa(len(tl.Votes)), c, rng.IntN(8) == 0})
			left -= c
		}
		ks := []int{2, 3, 5, 8, n / 4, n / 2, n - 3}
		grouped := tl.MajAtKs(ks)
		groupTies = false
		plain := tl.MajAtKs(ks)
		groupTies = true
		for i := range ks {
			if math.Abs(grouped[i]-plain[i]) > 1e-13 {
				t.Errorf("n=%d k=%d: grouped %.17g, class by class %.17g", n, ks[i], grouped[i], plain[i])
			}
		}
	}
}

// TestMajAtKSymmetric checks n = 1024 cases with hundreds of tied classes
// against symmetry: when every class, the correct one among them, has the
// same count, each is as likely to win, so maj@k is the chance that
// someone votes divided by the number of classes.
func TestMajAtKSymmetric(t *testing.T) {
	const n = 1024
	for _, tc := range []struct{ classes, size int }{{1000, 1}, {500, 2}, {200, 5}, {30, 30}} {
		tl := Tally{ID: "sym", N: n, Correct: tc.size, Votes: []Vote{{"right", tc.size, true}}}
		for i := 1; i < tc.classes; i++ {
			tl.Votes = append(tl.Votes, Vote{"w" + strconv.Itoa(i), tc.size, false})
		}
		invalid := tl.Invalid()
		ks := []int{2, 16, 256, 1000}
		for i, got := range tl.MajAtKs(ks) {
			// P(someone votes) = 1 − C(invalid, k)/C(n, k) = pass@k with
			// the voters as the "correct" samples.
			want := PassAtK(n, n-invalid, ks[i]) / float64(tc.classes)
			if math.Abs(got-want) > 1e-12 {
				t.Errorf("%d classes of %d, k=%d: maj = %.17g, want %.17g", tc.classes, tc.size, ks[i], got, want)
			}
		}
	}
}

// TestMajAtKDropped checks on realistic tallies that the mass the dynamic
// program drops as negligible stays far below the 1e-12 it promises.
func TestMajAtKDropped(t *testing.T) {
	worst := 0.0
	for _, tl := range realisticTallies(20, 1024) {
		ks := Ks(tl.N)
		vs, ds := tl.majAtKs(ks)
		for i, v := range vs {
			if v < 0 || v > 1 || math.IsNaN(v) {
				t.Fatalf("%s k=%d: maj %v", tl.ID, ks[i], v)
			}
			worst = max(worst, ds[i])
		}
	}
	if worst > 1e-14 {
		t.Errorf("dropped mass up to %g", worst)
	}
	t.Logf("dropped mass at most %g", worst)
}

func TestMajAtKProperties(t *testing.T) {
	rng := rand.New(rand.NewPCG(9, 9))
	for range 50 {
		p, _, _ := randomSamples(rng, 64)
		tl, _ := TallyOf(p)
		// maj@1 is the share of samples that vote correctly, and maj@n the
		// vote of all samples.
		right := 0
		for _, v := range tl.Votes {
			if v.Correct {
				right += v.Count
			}
		}
		if got := tl.MajAtK(1); math.Abs(got-float64(right)/64) > 1e-15 {
			t.Errorf("maj@1 = %v, want %v", got, float64(right)/64)
		}
		if got := tl.MajAtK(64); got != tl.majAll(64) {
			t.Errorf("maj@64 = %v, vote of all %v", got, tl.majAll(64))
		}
		// The dynamic program at k = n − 1 agrees with the average over the
		// n subsets that leave one sample out.
		loo := 0.0
		for j := range 64 {
			q := ProblemSamples{ID: "loo", Answers: slices.Delete(slices.Clone(p.Answers), j, j+1),
				Valid: slices.Delete(slices.Clone(p.Valid), j, j+1), Correct: slices.Delete(slices.Clone(p.Correct), j, j+1)}
			tq, _ := TallyOf(q)
			loo += tq.MajAtK(63) / 64
		}
		if got := tl.MajAtK(63); math.Abs(got-loo) > 1e-12 {
			t.Errorf("maj@63 = %v, leave-one-out mean %v", got, loo)
		}
	}
	tl := Tally{N: 4, Votes: []Vote{{"a", 2, true}}}
	for _, k := range []int{0, 5} {
		if got := tl.MajAtK(k); !math.IsNaN(got) {
			t.Errorf("maj@%d of 4 = %v, want NaN", k, got)
		}
	}
	if got := (Tally{N: 2, Votes: []Vote{{"a", 3, true}}}).MajAtK(1); !math.IsNaN(got) {
		t.Errorf("inconsistent tally: maj = %v, want NaN", got)
	}
}

func TestTallyOf(t *testing.T) {
	p := ProblemSamples{ID: "p", Bin: "b",
		Answers: []string{"x", "y", "", "x", "z", "y", "x"},
		Valid:   []bool{true, true, false, true, false, true, true},
		Correct: []bool{false, true, false, false, false, true, false}}
	tl, err := TallyOf(p)
	if err != nil {
		t.Fatal(err)
	}
	want := Tally{ID: "p", Bin: "b", N: 7, Correct: 2, Votes: []Vote{{"x", 3, false}, {"y", 2, true}}}
	if tl.ID != want.ID || tl.Bin != want.Bin || tl.N != want.N || tl.Correct != want.Correct || !slices.Equal(tl.Votes, want.Votes) {
		t.Errorf("TallyOf = %+v, want %+v", tl, want)
	}
	if tl.Invalid() != 2 || tl.PassAtK(1) != 2.0/7 {
		t.Errorf("invalid %d, pass@1 %v", tl.Invalid(), tl.PassAtK(1))
	}
	p.Correct[3] = true
	if _, err := TallyOf(p); err == nil || !strings.Contains(err.Error(), `answer "x" is wrong in sample 0 but correct in sample 3`) {
		t.Errorf("mixed verdicts: error %v", err)
	}
	if _, err := TallyOf(ProblemSamples{ID: "q", Answers: []string{"a"}, Correct: []bool{true, false}}); err == nil {
		t.Error("ragged samples: no error")
	}
}

// realisticTallies draws problems like an evaluation of a small model:
// about a quarter never right, some nearly always, the rest in between;
// 2–20% of samples malformed; wrong answers spread over 10–50 classes with
// Zipf-like sizes.
func realisticTallies(problems, n int) []Tally {
	rng := rand.New(rand.NewPCG(2504, 13837))
	out := make([]Tally, problems)
	for i := range out {
		var pc float64
		switch u := rng.Float64(); {
		case u < 0.25:
			pc = 0
		case u < 0.4:
			pc = 0.9 + 0.1*rng.Float64()
		default:
			pc = rng.Float64() * 0.9
		}
		pInvalid := 0.02 + 0.18*rng.Float64()
		classes := 10 + rng.IntN(41)
		s := 0.8 + 0.7*rng.Float64()
		cum := make([]float64, classes)
		total := 0.0
		for j := range cum {
			total += math.Pow(float64(j+1), -s)
			cum[j] = total
		}
		counts := make([]int, classes)
		right, invalid := 0, 0
		for range n {
			switch u := rng.Float64(); {
			case u < pInvalid:
				invalid++
			case u < pInvalid+pc*(1-pInvalid):
				right++
			default:
				j, _ := slices.BinarySearch(cum, rng.Float64()*total)
				counts[min(j, classes-1)]++
			}
		}
		t := Tally{ID: "p" + strconv.Itoa(i), N: n, Correct: right}
		if right > 0 {
			t.Votes = append(t.Votes, Vote{"right", right, true})
		}
		for j, c := range counts {
			if c > 0 {
				t.Votes = append(t.Votes, Vote{"w" + strconv.Itoa(j), c, false})
			}
		}
		out[i] = t
	}
	return out
}

// weakTallies draws problems like an evaluation of a weak model on hard
// problems: few right answers (0–30 of n), the wrong ones spread thin over
// hundreds of values, so most classes have one or two votes.
func weakTallies(problems, n int) []Tally {
	rng := rand.New(rand.NewPCG(7, 8))
	out := make([]Tally, problems)
	for i := range out {
		right := rng.IntN(31)
		values := 100 + rng.IntN(2000)
		counts := map[int]int{}
		invalid := rng.IntN(n / 4)
		for range n - right - invalid {
			counts[rng.IntN(values)]++
		}
		t := Tally{ID: "w" + strconv.Itoa(i), N: n, Correct: right}
		if right > 0 {
			t.Votes = append(t.Votes, Vote{"right", right, true})
		}
		for v, c := range counts {
			t.Votes = append(t.Votes, Vote{strconv.Itoa(v), c, false})
		}
		out[i] = t
	}
	return out
}

// BenchmarkMajAtKWeak is BenchmarkMajAtKs for a weak model (see
// weakTallies), where hundreds of classes can tie.
func BenchmarkMajAtKWeak(b *testing.B) {
	tallies := weakTallies(200, 1024)
	ks := Ks(1024)
	for b.Loop() {
		for _, t := range tallies {
			t.MajAtKs(ks)
		}
	}
}

// BenchmarkMajAtK is the cost of a study's maj@k table: 200 problems with
// n = 1024 samples each, at k = 1, 2, 4, …, 1024.
func BenchmarkMajAtK(b *testing.B) {
	tallies := realisticTallies(200, 1024)
	ks := Ks(1024)
	for b.Loop() {
		for _, t := range tallies {
			for _, k := range ks {
				t.MajAtK(k)
			}
		}
	}
}

// BenchmarkMajAtKs is the same table computed as Summarize does, one call
// per problem for all k.
func BenchmarkMajAtKs(b *testing.B) {
	tallies := realisticTallies(200, 1024)
	ks := Ks(1024)
	for b.Loop() {
		for _, t := range tallies {
			t.MajAtKs(ks)
		}
	}
}
