package algo

import (
	"math"
	"slices"
	"testing"
)

func TestOverlongPenalty(t *testing.T) {
	// DAPO's setting: L_max = 20480, L_cache = 4096.
	tests := []struct {
		length int
		want   float64
	}{
		{0, 0}, {16384, 0}, {16385, -1.0 / 4096}, {18432, -0.5}, {20480, -1}, {20481, -1}, {99999, -1},
	}
	for _, tc := range tests {
		if got := OverlongPenalty(tc.length, 20480, 4096); math.Abs(got-tc.want) > 1e-15 {
			t.Errorf("OverlongPenalty(%d) = %v, want %v", tc.length, got, tc.want)
		}
	}
	if got := OverlongPenalty(10, 10, 0); got != 0 {
		t.Errorf("no cache, at the limit: %v", got)
	}
	if got := OverlongPenalty(11, 10, 0); got != -1 {
		t.Errorf("no cache, over the limit: %v", got)
	}
}

func TestLengthPenalty(t *testing.T) {
	// Group 0: lengths 10, 20, 30 (λ = 0.5, 0, −0.5); group 1 all equal.
	lengths := []int{10, 20, 30, 10, 30, 5, 5}
	correct := []bool{true, true, true, false, false, true, false}
	groups := []int{0, 0, 0, 0, 0, 1, 1}
	got, err := LengthPenalty(lengths, correct, groups, 2)
	if err != nil {
		t.Fatal(err)
	}
	want := []float64{1, 0, -1, 0, -1, 0, 0}
	if !slices.Equal(got, want) {
		t.Errorf("LengthPenalty = %v, want %v", got, want)
	}
	if _, err := LengthPenalty(lengths, correct[:2], groups, 1); err == nil {
		t.Error("mismatched lengths: no error")
	}
}

func TestShapeRewards(t *testing.T) {
	cfg, _ := Preset("dapo") // L_max = budget 100, L_cache = 20
	rewards := []float64{1, -1, 1}
	got, err := ShapeRewards(cfg, rewards, []int{80, 90, 100}, nil, nil, 100)
	if err != nil {
		t.Fatal(err)
	}
	if want := []float64{1, -1.5, 0}; !slices.Equal(got, want) {
		t.Errorf("dapo shaping = %v, want %v", got, want)
	}
	if rewards[1] != -1 {
		t.Error("ShapeRewards modified its input")
	}
	if _, err := ShapeRewards(cfg, rewards, []int{80, 90, 100}, nil, nil, 0); err == nil {
		t.Error("no budget and no max_len: no error")
	}

	omd, _ := Preset("omd")
	got, err = ShapeRewards(omd, []float64{1, 0}, []int{10, 20}, []bool{true, false}, []int{4, 4}, 100)
	if err != nil {
		t.Fatal(err)
	}
	if want := []float64{1.5, -0.5}; !slices.Equal(got, want) {
		t.Errorf("omd shaping = %v, want %v", got, want)
	}
	if _, err := ShapeRewards(omd, []float64{1, 0}, []int{10}, nil, nil, 100); err == nil {
		t.Error("missing lengths: no error")
	}
	grpo, _ := Preset("grpo")
	if got, _ := ShapeRewards(grpo, []float64{0.1}, nil, nil, nil, 0); !slices.Equal(got, []float64{0.1}) {
		t.Errorf("grpo shapes nothing, got %v", got)
	}
}

// TestKeepGroups: a group is kept when some but not all of its responses
// are correct (DAPO eq. 11), whatever their rewards.
func TestKeepGroups(t *testing.T) {
	tests := []struct {
		name    string
		correct []bool
		groups  []int
		want    []bool
	}{
		{"mixed groups kept, all-wrong and all-right dropped",
			[]bool{true, false, false, true, true, false, false, true},
			[]int{3, 3, 3, 8, 8, 9, 9, 2},
			[]bool{true, true, true, false, false, false, false, false}},
		{"interleaved groups", []bool{true, false, false, false}, []int{0, 1, 0, 1}, []bool{true, false, true, false}},
		{"a group of one is dropped", []bool{true}, []int{4}, []bool{false}},
	}
	for _, tc := range tests {
		keep, err := KeepGroups(tc.correct, tc.groups)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(keep, tc.want) {
			t.Errorf("%s: KeepGroups = %v, want %v", tc.name, keep, tc.want)
		}
	}
	if _, err := KeepGroups([]bool{true}, nil); err == nil {
		t.Error("mismatched lengths: no error")
	}
}

// TestKeepGroupsIgnoresShapedRewards is the case seen on a hard bin:
// overlong shaping made the rewards of groups with no correct answer
// differ, and the old filter (on shaped rewards) kept them. Filtering on
// correctness drops them.
func TestKeepGroupsIgnoresShapedRewards(t *testing.T) {
	cfg, _ := Preset("dapo")
	const budget = 20
	lengths := []int{5, 19, 20, 12, 20, 20}
	raw := []float64{-1, -1, -1, -1, -1, -1} // every answer wrong (±1 reward)
	correct := make([]bool, len(raw))
	groups := []int{0, 0, 0, 1, 1, 1}
	shaped, err := ShapeRewards(cfg, raw, lengths, correct, groups, budget)
	if err != nil {
		t.Fatal(err)
	}
	if zero, _, _ := ZeroSpreadGroups(shaped, groups); zero != 0 {
		t.Fatalf("shaped rewards %v: want every group's rewards to differ", shaped)
	}
	keep, err := KeepGroups(correct, groups)
	if err != nil {
		t.Fatal(err)
	}
	if slices.Contains(keep, true) {
		t.Errorf("groups with no correct answer kept: shaped %v, keep %v", shaped, keep)
	}
}

func TestZeroSpreadGroups(t *testing.T) {
	zero, counted, err := ZeroSpreadGroups([]float64{1, 1, 0, 1, -1, -1, 5}, []int{3, 3, 3, 8, 8, 9, 2})
	if err != nil {
		t.Fatal(err)
	}
	// Groups 3 and 8 vary; 9 and 2 have one response each and are not
	// counted.
	if zero != 0 || counted != 2 {
		t.Errorf("zero %d of %d, want 0 of 2", zero, counted)
	}
	zero, counted, _ = ZeroSpreadGroups([]float64{0, 0, 1, 1, 2, 3}, []int{0, 0, 1, 1, 2, 2})
	if zero != 2 || counted != 3 {
		t.Errorf("zero %d of %d, want 2 of 3", zero, counted)
	}
	if _, _, err := ZeroSpreadGroups([]float64{1}, nil); err == nil {
		t.Error("mismatched lengths: no error")
	}
}

func TestLossMask(t *testing.T) {
	cfg, _ := Preset("dapo")
	b := &Batch{B: 2, L: 2, Mask: []float32{1, 1, 1, 0}, Truncated: []bool{true, false}}
	m, err := LossMask(cfg, b)
	if err != nil || !slices.Equal(m, b.Mask) {
		t.Errorf("without filtering: %v, %v", m, err)
	}
	cfg.OverlongFilter = true
	m, err = LossMask(cfg, b)
	if err != nil || !slices.Equal(m, []float32{0, 0, 1, 0}) || b.Mask[0] != 1 {
		t.Errorf("with filtering: %v, %v (input %v)", m, err, b.Mask)
	}
}
