package reward

import (
	"strings"
	"testing"
)

func TestControlApply(t *testing.T) {
	correct := Result{Reward: Default.Correct, Correct: true, WellFormed: true}
	wrong := Result{Reward: Default.Wrong, WellFormed: true}
	malformed := Result{Reward: Default.Malformed}
	type out struct {
		reward   float64
		rewarded bool
	}
	tests := []struct {
		c                         Control
		heads                     bool
		correct, wrong, malformed out
	}{
		{NoControl, false, out{1, true}, out{0.1, false}, out{0, false}},
		{NoControl, true, out{1, true}, out{0.1, false}, out{0, false}},
		{Random, true, out{1, true}, out{1, true}, out{1, true}},
		{Random, false, out{0, false}, out{0, false}, out{0, false}},
		{FormatOnly, false, out{1, true}, out{1, true}, out{0, false}},
		{Inverted, false, out{0.1, false}, out{1, true}, out{0, false}},
	}
	for _, tc := range tests {
		for _, r := range []struct {
			name string
			res  Result
			want out
		}{{"correct", correct, tc.correct}, {"wrong", wrong, tc.wrong}, {"malformed", malformed, tc.malformed}} {
			rew, ok := tc.c.Apply(r.res, Default, tc.heads)
			if rew != r.want.reward || ok != r.want.rewarded {
				t.Errorf("%s (heads %v) on a %s response: %v, %v; want %v, %v", tc.c, tc.heads, r.name, rew, ok, r.want.reward, r.want.rewarded)
			}
		}
	}
	// Under DAPO's ±1 an inverted correct answer earns −1.
	if rew, _ := Inverted.Apply(correct, PM1, false); rew != -1 {
		t.Errorf("inverted correct under pm1: %v, want -1", rew)
	}
}

func TestParseControl(t *testing.T) {
	for _, name := range ControlNames() {
		c, err := ParseControl(name)
		if err != nil || string(c) != name {
			t.Errorf("ParseControl(%q) = %q, %v", name, c, err)
		}
	}
	if c, err := ParseControl(""); err != nil || c != NoControl {
		t.Errorf("ParseControl(\"\") = %q, %v; want none", c, err)
	}
	if _, err := ParseControl("shuffled"); err == nil || !strings.Contains(err.Error(), "none, random, format-only, inverted") {
		t.Errorf("ParseControl(shuffled): %v", err)
	}
}

// TestCoin: the coin is a function of its arguments (so a resumed run
// tosses the same ones), fair, and different across seeds, steps, rounds
// and responses.
func TestCoin(t *testing.T) {
	const n = 20000
	heads := 0
	for i := range n {
		if Coin(1, 3, 0, i) {
			heads++
		}
		if Coin(1, 3, 0, i) != Coin(1, 3, 0, i) {
			t.Fatal("the same coin landed differently")
		}
	}
	if f := float64(heads) / n; f < 0.48 || f > 0.52 {
		t.Errorf("%d heads of %d: not a fair coin", heads, n)
	}
	for _, other := range []func(i int) bool{
		func(i int) bool { return Coin(2, 3, 0, i) },
		func(i int) bool { return Coin(1, 4, 0, i) },
		func(i int) bool { return Coin(1, 3, 1, i) },
		func(i int) bool { return Coin(1, 3, 0, i+1) },
	} {
		same := 0
		for i := range 1000 {
			if other(i) == Coin(1, 3, 0, i) {
				same++
			}
		}
		if same < 400 || same > 600 {
			t.Errorf("coins agree %d times in 1000 with a changed argument: not independent", same)
		}
	}
}
