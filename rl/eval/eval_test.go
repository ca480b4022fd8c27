package eval

import (
	"bytes"
	"encoding/json"
	"math"
	"math/big"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
)

// exactPassAtK is 1 − C(n−c, k)/C(n, k) in exact integer arithmetic,
// rounded to float64 once.
func exactPassAtK(n, c, k int) float64 {
	if n-c < k {
		return 1
	}
	num, den := big.NewInt(1), big.NewInt(1)
	for j := range k {
		num.Mul(num, big.NewInt(int64(n-c-j)))
		den.Mul(den, big.NewInt(int64(n-j)))
	}
	r := new(big.Rat).SetFrac(new(big.Int).Sub(den, num), den)
	f, _ := r.Float64()
	return f
}

func TestPassAtKExact(t *testing.T) {
	ns := []int{1, 2, 3, 7, 16, 100, 256, 1000, 4096}
	cases := 0
	for _, n := range ns {
		cs := []int{0, 1, 2, n / 3, n / 2, n - 2, n - 1, n}
		for _, c := range cs {
			if c < 0 || c > n {
				continue
			}
			for _, k := range append(Ks(n), n/3, n-1) {
				if k < 1 || k > n {
					continue
				}
				got, want := PassAtK(n, c, k), exactPassAtK(n, c, k)
				if math.Abs(got-want) > 1e-13*want || (want == 0) != (got == 0) {
					t.Errorf("PassAtK(%d, %d, %d) = %.17g, exact %.17g", n, c, k, got, want)
				}
				cases++
			}
		}
	}
	if cases < 300 {
		t.Errorf("only %d cases checked", cases)
	}
}

func TestPassAtKProperties(t *testing.T) {
	tests := []struct {
		n, c, k int
		want    float64
	}{
		{10, 3, 1, 0.3},
		{4, 2, 2, 1 - 1.0/6}, // C(2,2)/C(4,2) = 1/6
		{5, 1, 5, 1},
		{5, 0, 3, 0},
		{5, 3, 3, 1}, // n − c = 2 < 3
		{0, 0, 1, math.NaN()}, {5, 6, 1, math.NaN()}, {5, 1, 0, math.NaN()}, {5, 1, 6, math.NaN()}, {5, -1, 1, math.NaN()},
	}
	for _, tc := range tests {
		got := PassAtK(tc.n, tc.c, tc.k)
		if math.IsNaN(tc.want) != math.IsNaN(got) || math.Abs(got-tc.want) > 1e-15 {
			t.Errorf("PassAtK(%d, %d, %d) = %v, want %v", tc.n, tc.c, tc.k, got, tc.want)
		}
	}
	for _, n := range []int{1, 5, 64, 300, 4096} {
		for c := 0; c <= n; c += 1 + n/37 {
			if got := PassAtK(n, c, 1); math.Abs(got-float64(c)/float64(n)) > 1e-14 {
				t.Errorf("pass@1 n=%d c=%d: %v, want c/n", n, c, got)
			}
			prev := 0.0
			for k := 1; k <= n; k += 1 + k/3 {
				p := PassAtK(n, c, k)
				if p < prev {
					t.Errorf("n=%d c=%d: pass@%d = %v below the previous %v", n, c, k, p, prev)
				}
				prev = p
			}
		}
	}
}

func TestKs(t *testing.T) {
	tests := map[int][]int{0: nil, 1: {1}, 2: {1, 2}, 8: {1, 2, 4, 8}, 12: {1, 2, 4, 8, 12}, 256: {1, 2, 4, 8, 16, 32, 64, 128, 256}}
	for n, want := range tests {
		if got := Ks(n); !slices.Equal(got, want) {
			t.Errorf("Ks(%d) = %v, want %v", n, got, want)
		}
	}
}

func TestMajAtK(t *testing.T) {
	T, F := true, false
	tests := []struct {
		name    string
		answers []string
		valid   []bool
		correct []bool
		k       int
		want    float64
	}{
		{"plain majority", []string{"1", "2", "2"}, nil, []bool{T, F, F}, 3, 0},
		{"tie splits", []string{"1", "2", "2", "1"}, nil, []bool{T, F, F, T}, 4, 0.5},
		{"tie, other order", []string{"2", "1", "1", "2"}, nil, []bool{F, T, T, F}, 4, 0.5},
		{"invalid do not vote", []string{"7", "9", "9", "9"}, []bool{T, F, F, T}, []bool{T, F, F, F}, 4, 0.5},
		{"empty do not vote", []string{"", "", "3"}, nil, []bool{F, F, T}, 3, 1},
		{"nobody votes", []string{"", "x"}, []bool{T, F}, []bool{F, F}, 2, 0},
		// All 6 pairs: the 3 with a tie a against b (1/2 each), the 3
		// others b.
		{"every pair", []string{"a", "b", "b", "b"}, nil, []bool{T, F, F, F}, 2, 0.25},
		// C(5,2) = 10 pairs: 3 aa (1), 6 ab (1/2), 1 bb (0).
		{"pairs of five", []string{"a", "a", "b", "a", "b"}, nil, []bool{T, T, F, T, F}, 2, 0.6},
		{"k = 1 is mean of voting correct", []string{"a", "", "c", "d"}, nil, []bool{T, T, F, T}, 1, 0.5},
	}
	for _, tc := range tests {
		tl, err := TallyOf(ProblemSamples{ID: tc.name, Answers: tc.answers, Valid: tc.valid, Correct: tc.correct})
		if err != nil {
			t.Fatal(err)
		}
		if got := tl.MajAtK(tc.k); math.Abs(got-tc.want) > 1e-15 {
			t.Errorf("%s: MajAtK = %v; want %v", tc.name, got, tc.want)
		}
	}
	correct := []bool{true, false, true, false, true, false, false, true}
	if got := MeanAtK(correct, 4); got != 0.5 {
		t.Errorf("mean@4 = %v", got)
	}
	if got := MeanAtK(correct, 9); !math.IsNaN(got) {
		t.Errorf("mean@9 of 8 = %v, want NaN", got)
	}
}

func sampleProblems() []ProblemSamples {
	return []ProblemSamples{
		// 1 of 4 correct; the majority "x" is wrong.
		{ID: "p1", Bin: "easy", Answers: []string{"x", "x", "y", "x"}, Correct: []bool{false, false, true, false}},
		// 4 of 4 correct.
		{ID: "p2", Bin: "easy", Answers: []string{"5", "5", "5", "5"}, Correct: []bool{true, true, true, true}},
		// None correct, two malformed.
		{ID: "p3", Bin: "hard", Answers: []string{"", "q", "r", ""}, Valid: []bool{false, true, true, false}, Correct: []bool{false, false, false, false}},
	}
}

func TestSummarize(t *testing.T) {
	r, err := Summarize(sampleProblems(), nil)
	if err != nil {
		t.Fatal(err)
	}
	near := func(name string, got, want float64) {
		t.Helper()
		if math.Abs(got-want) > 1e-12 {
			t.Errorf("%s = %v, want %v", name, got, want)
		}
	}
	if r.Problems != 3 || r.N != 4 || len(r.PassAtK) != 3 {
		t.Fatalf("report %+v", r)
	}
	near("pass@1", r.PassAtK[1], (0.25+1+0)/3)
	near("pass@2", r.PassAtK[2], (0.5+1+0)/3)
	near("pass@4", r.PassAtK[4], 2.0/3)
	// maj@1: subsets of 1 → p1 1/4, p2 1, p3 0. maj@2: p1's 6 pairs are 3
	// (x,x) → 0 and 3 (x,y) → tie, 1/2: 0.25; maj@4: p1 x wins → 0.
	near("maj@1", r.MajAtK[1], (0.25+1)/3)
	near("maj@2", r.MajAtK[2], (0.25+1)/3)
	near("maj@4", r.MajAtK[4], 1.0/3)
	near("mean@2", r.MeanAtK[2], 1.0/3)
	near("mean@4", r.MeanAtK[4], (0.25+1)/3)

	if len(r.Bins) != 2 || r.Bins["easy"].Problems != 2 || r.Bins["hard"].Problems != 1 {
		t.Fatalf("bins %+v", r.Bins)
	}
	near("easy pass@1", r.Bins["easy"].PassAtK[1], (0.25+1)/2)
	near("hard pass@4", r.Bins["hard"].PassAtK[4], 0)
	if r.Bins["easy"].Bins != nil {
		t.Error("bin reports should not nest bins")
	}

	// JSON keys as the lead's tools expect.
	js, _ := json.Marshal(r)
	for _, key := range []string{`"pass_at_k":{"1":`, `"maj_at_k":`, `"mean_at_k":`, `"bins":{"easy":`} {
		if !bytes.Contains(js, []byte(key)) {
			t.Errorf("JSON %s lacks %s", js, key)
		}
	}
	var back Report
	if err := json.Unmarshal(js, &back); err != nil || back.PassAtK[2] != r.PassAtK[2] {
		t.Errorf("JSON round trip: %v, %v", err, back.PassAtK)
	}

	var buf bytes.Buffer
	if err := r.Table(&buf); err != nil {
		t.Fatal(err)
	}
	out := buf.String()
	for _, want := range []string{"all: 3 problems, n=4, maj@k exact: all k-subsets, ties split", "pass@k", "maj@k", "0.4167", "bin easy:", "bin hard:"} {
		if !strings.Contains(out, want) {
			t.Errorf("table lacks %q:\n%s", want, out)
		}
	}
	if strings.Index(out, "bin easy") > strings.Index(out, "bin hard") {
		t.Error("bins not in name order")
	}
}

func TestSummarizeOptions(t *testing.T) {
	ps := sampleProblems()
	r, err := Options{Ks: []int{3, 1, 3}}.Summarize(ps)
	if err != nil {
		t.Fatal(err)
	}
	if len(r.PassAtK) != 2 || r.MajSubsets != MajExact {
		t.Errorf("report %+v", r)
	}
	// Exact maj@k depends on neither the problems' order nor the samples'.
	slices.Reverse(ps)
	for i := range ps {
		slices.Reverse(ps[i].Answers)
		slices.Reverse(ps[i].Valid)
		slices.Reverse(ps[i].Correct)
	}
	r2, _ := Options{Ks: []int{1, 3}}.Summarize(ps)
	if r2.MajAtK[3] != r.MajAtK[3] {
		t.Errorf("maj@3 depends on order: %v vs %v", r.MajAtK[3], r2.MajAtK[3])
	}

	errs := []struct {
		name string
		ps   []ProblemSamples
		ks   []int
		want string
	}{
		{"none", nil, nil, "no problems"},
		{"k too big", sampleProblems(), []int{5}, "k must be in [1, 4]"},
		{"k zero", sampleProblems(), []int{0, 1}, "k must be"},
		{"empty ks", sampleProblems(), []int{}, "no k"},
		{"no samples", []ProblemSamples{{ID: "e"}}, nil, "no samples"},
		{"ragged", []ProblemSamples{{ID: "r", Answers: []string{"a"}, Correct: []bool{true, false}}}, nil, "1 answers"},
		{"not canonical", []ProblemSamples{{ID: "c", Answers: []string{"a", "a"}, Correct: []bool{true, false}}}, nil, `answer "a" is correct in sample 0 but wrong in sample 1`},
	}
	for _, e := range errs {
		_, err := Summarize(e.ps, e.ks)
		if err == nil || !strings.Contains(err.Error(), e.want) {
			t.Errorf("%s: error %v, want one containing %q", e.name, err, e.want)
		}
	}
}

func TestDeltaSEAndSolved(t *testing.T) {
	base := Report{N: 8, PassAtK: map[int]float64{1: 0.2, 8: 0.7}}
	rl := Report{N: 8, PassAtK: map[int]float64{1: 0.35, 8: 0.6}}
	d, err := DeltaSE(base, rl)
	if err != nil || math.Abs(d-0.35) > 1e-15 {
		t.Errorf("ΔSE = %v, %v; want 0.35", d, err)
	}
	if _, err := DeltaSE(Report{N: 4, PassAtK: map[int]float64{1: 0}}, rl); err == nil {
		t.Error("base without pass@n: no error")
	}
	if _, err := DeltaSE(base, Report{PassAtK: map[int]float64{8: 1}}); err == nil {
		t.Error("RL without pass@1: no error")
	}
	if got := SolvedIDs(sampleProblems()); !slices.Equal(got, []string{"p1", "p2"}) {
		t.Errorf("SolvedIDs = %v", got)
	}
}

// TestSummarizeLarge runs n = 256 samples on many problems, checking that
// pass@k rises with k and that pass@1 equals mean@n.
func TestSummarizeLarge(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	ps := make([]ProblemSamples, 40)
	for i := range ps {
		p := rng.Float64() * rng.Float64()
		ps[i] = ProblemSamples{ID: string(rune('A' + i)), Answers: make([]string, 256), Correct: make([]bool, 256)}
		for j := range 256 {
			if rng.Float64() < p {
				ps[i].Answers[j], ps[i].Correct[j] = "42", true
			} else {
				ps[i].Answers[j] = string(rune('a' + rng.IntN(5)))
			}
		}
	}
	r, err := Summarize(ps, nil)
	if err != nil {
		t.Fatal(err)
	}
	ks := Ks(256)
	for j := 1; j < len(ks); j++ {
		if r.PassAtK[ks[j]] < r.PassAtK[ks[j-1]] {
			t.Errorf("pass@%d < pass@%d", ks[j], ks[j-1])
		}
	}
	if math.Abs(r.PassAtK[1]-r.MeanAtK[256]) > 1e-12 {
		t.Errorf("pass@1 %v ≠ mean@n %v", r.PassAtK[1], r.MeanAtK[256])
	}
}
