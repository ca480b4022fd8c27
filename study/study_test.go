package study

import (
	"bytes"
	"fmt"
	"math"
	"strings"
	"testing"

	"github.com/moerl/moerl/rl/eval"
	"github.com/moerl/moerl/run"
)

func TestDecisionRules(t *testing.T) {
	iv := func(lo, hi float64) eval.Interval {
		return eval.Interval{Est: (lo + hi) / 2, Lo: lo, Hi: hi, Level: 0.95}
	}
	cases := []struct {
		name string
		test Test
		want eval.Verdict
	}{
		{"above 0, predicted above", decide("x", iv(0.1, 0.3), +1), eval.Reproduced},
		{"above 0, predicted below", decide("x", iv(0.1, 0.3), -1), eval.Contradicted},
		{"straddles 0", decide("x", iv(-0.1, 0.3), +1), eval.Inconclusive},
		{"inside the margin", equivalent("x", iv(-0.01, 0.015), 0.02), eval.Reproduced},
		{"wholly above the margin", equivalent("x", iv(0.03, 0.1), 0.02), eval.Contradicted},
		{"wholly below the margin", equivalent("x", iv(-0.1, -0.03), 0.02), eval.Contradicted},
		{"across the margin", equivalent("x", iv(0.01, 0.05), 0.02), eval.Inconclusive},
	}
	for _, c := range cases {
		if c.test.Verdict != c.want {
			t.Errorf("%s: %s, want %s", c.name, c.test.Verdict, c.want)
		}
	}
	r, x := Test{Verdict: eval.Reproduced}, Test{Verdict: eval.Contradicted}
	i := Test{Verdict: eval.Inconclusive}
	for _, c := range []struct {
		tests []Test
		want  eval.Verdict
	}{{[]Test{r, r}, eval.Reproduced}, {[]Test{r, i}, eval.Inconclusive}, {[]Test{r, x}, eval.Contradicted}, {[]Test{i, x}, eval.Contradicted}} {
		if got := combine(c.tests); got != c.want {
			t.Errorf("combine %v = %s, want %s", c.tests, got, c.want)
		}
	}
}

// tally makes a problem's result: n samples, c correct, the wrong ones
// spread over two answers.
func tally(id, bin string, n, c int) run.ProblemResult {
	t := eval.Tally{ID: id, Bin: bin, N: n, Correct: c}
	if c > 0 {
		t.Votes = append(t.Votes, eval.Vote{Answer: "right", Count: c, Correct: true})
	}
	if w := n - c; w > 0 {
		t.Votes = append(t.Votes, eval.Vote{Answer: "wrong1", Count: (w + 1) / 2}, eval.Vote{Answer: "wrong2", Count: w / 2})
		if w/2 == 0 {
			t.Votes = t.Votes[:len(t.Votes)-1]
		}
	}
	return run.ProblemResult{Tally: t}
}

// TestAnalyzeKnownCase builds evaluations whose answers are known: the RL
// model solves every base-solved problem more often (sharpening) but loses
// the problems the base solves rarely, and one problem only it solves. The
// analysis must find pass@1 up, pass@n down, the overlap counts exactly,
// and decide findings 1 and 2 as reproduced.
func TestAnalyzeKnownCase(t *testing.T) {
	const n, problems, reps = 16, 40, 3
	c := Default()
	c.Replicates, c.Algos, c.Main = reps, []string{"grpo"}, "grpo"
	c.Stats.Resamples = 500
	p := &Plan{}
	d := &data{models: map[string][][]run.ProblemResult{}, n: n}
	for i := range problems {
		bin := "digits4"
		if i%2 == 1 {
			bin = "digits5"
		}
		d.ids, d.bins = append(d.ids, fmt.Sprintf("p%02d", i)), append(d.bins, bin)
	}
	d.binNames = []string{"digits4", "digits5"}
	models := []string{"base", "grpo", klName(c.KL[0]), klName(c.KL[1]), "student"}
	for _, m := range models {
		for r := 1; r <= reps; r++ {
			p.Models = append(p.Models, Model{Name: m, Replicate: r})
		}
		rows := make([][]run.ProblemResult, reps)
		for r := range rows {
			for i, id := range d.ids {
				var correct int
				switch {
				case i < 20: // solved often by the base, more often after RL
					correct = 4 // a wrong answer gets 6 votes: the base's majority is wrong
					if m != "base" {
						correct = 12
					}
				case i < 30: // solved rarely by the base, lost by RL
					correct = 1
					if m != "base" {
						correct = 0
					}
				case i == 30: // only RL solves it
					if m != "base" {
						correct = 2
					}
				}
				rows[r] = append(rows[r], tally(id, d.bins[i], n, correct))
			}
		}
		d.models[m] = rows
	}
	res, err := analyze(c, p, d)
	if err != nil {
		t.Fatal(err)
	}
	all := res.Views["all"]
	cmp := all.VsBase["grpo"]
	wantPass1 := (20*(12.0-4)/16 + 10*(0-1.0)/16 + 2.0/16) / problems
	if got := cmp.PassDiff[1].Est; math.Abs(got-wantPass1) > 1e-12 {
		t.Errorf("Δpass@1 = %v, want %v", got, wantPass1)
	}
	if got, want := cmp.PassDiff[n].Est, (1.0-10)/problems; math.Abs(got-want) > 1e-12 {
		t.Errorf("Δpass@n = %v, want %v", got, want)
	}
	for _, counts := range cmp.OverlapCounts {
		if counts["both"] != 20 || counts["base_only"] != 10 || counts["model_only"] != 1 || counts["neither"] != 9 {
			t.Errorf("overlap counts %v, want both 20, base only 10, model only 1, neither 9", counts)
		}
	}
	if cmp.ModelOnly["p30"] != reps {
		t.Errorf("model-only problems %v, want p30 in every replicate", cmp.ModelOnly)
	}
	if cmp.Crossover == 0 || cmp.Crossover > n {
		t.Errorf("crossover %d: the base is ahead at n, so there is one", cmp.Crossover)
	}
	if got := all.Models["base"].Unsolved.Est; math.Abs(got-10.0/problems) > 1e-12 {
		t.Errorf("base unsolved share %v, want %v", got, 10.0/problems)
	}
	if got := cmp.MajDiff[n].Est; math.Abs(got-20.0/problems) > 1e-12 {
		t.Errorf("Δmaj@n = %v, want %v (the RL model's majority turns right on the 20 sharpened problems)", got, 20.0/problems)
	}
	if res.Findings[0].Verdict != eval.Reproduced || res.Findings[1].Verdict != eval.Reproduced {
		t.Errorf("findings 1 and 2: %s, %s; want reproduced", res.Findings[0].Verdict, res.Findings[1].Verdict)
	}
	if res.Findings[4].Tests[0].Verdict != eval.Reproduced { // the KL arms are identical
		t.Errorf("finding 5's pass@1 equivalence: %s", res.Findings[4].Tests[0].Verdict)
	}
	var md bytes.Buffer
	if err := res.WriteMarkdown(&md); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"## Verdicts", "| 1 |", "**reproduced**", "## Solved sets", "`p30` (3)", "## Saturation"} {
		if !strings.Contains(md.String(), want) {
			t.Errorf("study.md lacks %q", want)
		}
	}
	if err := res.writePlots(t.TempDir()); err != nil {
		t.Fatal(err)
	}
}
