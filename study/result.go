package study

import (
	"fmt"
	"slices"
	"sort"

	"github.com/moerl/moerl/rl/eval"
)

// Result is study.json: every number of the study, pooled with its
// interval and per replicate.
type Result struct {
	Config     Config `json:"config"`
	Replicates int    `json:"replicates"`
	Problems   int    `json:"problems"`
	N          int    `json:"n"`
	Ks         []int  `json:"ks"`
	// Intervals says how every interval was made.
	Intervals string   `json:"intervals"`
	Bins      []string `json:"bins"`
	// Views are the analyses over all problems ("all") and per bin.
	Views    map[string]*ViewResult `json:"views"`
	Findings []Finding              `json:"findings"`
	// PerReplicate holds every model's plain report in every replicate.
	PerReplicate map[string][]eval.Report `json:"per_replicate"`
	Device       string                   `json:"device"`
	Seconds      float64                  `json:"seconds"`
	StageSeconds map[string]float64       `json:"stage_seconds"`
}

// ViewResult is the analysis of a set of problems.
type ViewResult struct {
	Problems int                     `json:"problems"`
	Models   map[string]*ModelResult `json:"models"`
	// VsBase compares each model made from the base with the base, at
	// every k of Result.Ks.
	VsBase map[string]*Comparison `json:"vs_base"`
	// DeltaSE is pass@n(base) − pass@1(algorithm) for each algorithm;
	// Spread is its largest minus its smallest (finding 4).
	DeltaSE map[string]eval.Interval `json:"delta_se"`
	Spread  eval.Interval            `json:"delta_se_spread"`
	// Pairs are the differences between two models the findings compare
	// directly ("pass@1 dapo − grpo").
	Pairs map[string]eval.Interval `json:"pairs,omitempty"`
}

// ModelResult is one model's metrics, pooled over replicates.
type ModelResult struct {
	PassAtK map[int]eval.Interval `json:"pass_at_k"`
	MajAtK  map[int]eval.Interval `json:"maj_at_k"`
	// Unsolved is the share of problems no sample solved (pass@n = 0);
	// Always the share every sample solved (pass@k = 1 at every k): the
	// floor and the ceiling of the evaluation.
	Unsolved eval.Interval `json:"unsolved"`
	Always   eval.Interval `json:"always"`
	// BaseLogLik is the mean log-likelihood per token of the model's
	// samples under its replicate's base model (sharpening, 2504.13837).
	BaseLogLik *eval.Interval `json:"base_loglik,omitempty"`
}

// Comparison is a model against the base model of its replicate.
type Comparison struct {
	// PassDiff and MajDiff are model − base at each k.
	PassDiff map[int]eval.Interval `json:"pass_diff"`
	MajDiff  map[int]eval.Interval `json:"maj_diff"`
	// Crossover is the smallest k from which on the base's pass@k is
	// above the model's at every larger k (0: none up to n), with the
	// bootstrap's interval of it; NoCrossover is the share of draws with
	// none.
	Crossover   int     `json:"crossover"`
	CrossoverLo int     `json:"crossover_lo"`
	CrossoverHi int     `json:"crossover_hi"`
	NoCrossover float64 `json:"no_crossover"`
	// Overlap is the solved sets at n samples: shares of problems solved
	// by the base only, the model only, both, neither (pooled), and per
	// replicate the counts.
	Overlap        Overlap          `json:"overlap"`
	OverlapCounts  []map[string]int `json:"overlap_counts"`
	ModelOnly      map[string]int   `json:"model_only"` // problem ID → replicates in which only the model solved it
	ModelOnlyByBin map[string]int   `json:"model_only_by_bin"`
}

// Overlap holds the four shares of the solved-set comparison.
type Overlap struct {
	BaseOnly  eval.Interval `json:"base_only"`
	ModelOnly eval.Interval `json:"model_only"`
	Both      eval.Interval `json:"both"`
	Neither   eval.Interval `json:"neither"`
}

// Finding is one of SPEC-RL.md's findings, decided by an interval.
type Finding struct {
	ID    int    `json:"id"`
	Claim string `json:"claim"`
	// Tests are the claim's parts: each a statistic, its interval, the
	// prediction, and its verdict.
	Tests   []Test       `json:"tests"`
	Verdict eval.Verdict `json:"verdict"`
}

// Test is one decided statistic.
type Test struct {
	Statistic  string        `json:"statistic"`
	Interval   eval.Interval `json:"interval"`
	Prediction string        `json:"prediction"` // "> 0", "< 0" or "within ±δ"
	Verdict    eval.Verdict  `json:"verdict"`
}

// decide is a test of a directional prediction.
func decide(stat string, iv eval.Interval, sign int) Test {
	p := "> 0"
	if sign < 0 {
		p = "< 0"
	}
	return Test{Statistic: stat, Interval: iv, Prediction: p, Verdict: eval.Decide(iv, sign)}
}

// equivalent is a test that a difference is negligible: reproduced when
// the whole interval lies within ±delta, contradicted when it lies wholly
// outside, else inconclusive.
func equivalent(stat string, iv eval.Interval, delta float64) Test {
	v := eval.Inconclusive
	switch {
	case iv.Lo >= -delta && iv.Hi <= delta:
		v = eval.Reproduced
	case iv.Lo > delta || iv.Hi < -delta:
		v = eval.Contradicted
	}
	return Test{Statistic: stat, Interval: iv, Prediction: fmt.Sprintf("within ±%g", delta), Verdict: v}
}

// combine is the verdict of a claim made of several tests: reproduced
// when every part is, contradicted when any part is, else inconclusive.
func combine(tests []Test) eval.Verdict {
	all := true
	for _, t := range tests {
		if t.Verdict == eval.Contradicted {
			return eval.Contradicted
		}
		all = all && t.Verdict == eval.Reproduced
	}
	if all {
		return eval.Reproduced
	}
	return eval.Inconclusive
}

// analyze computes the study's statistics from the loaded evaluations.
func analyze(c Config, p *Plan, d *data) (*Result, error) {
	b := eval.Bootstrap{Resamples: c.Stats.Resamples, Level: c.Stats.Level, Seed: c.Stats.Seed}
	ks := eval.Ks(d.n)
	res := &Result{Config: c, Replicates: c.Replicates, Problems: len(d.ids), N: d.n, Ks: ks, Bins: d.binNames,
		Views: map[string]*ViewResult{}, PerReplicate: map[string][]eval.Report{},
		Intervals: fmt.Sprintf("%.0f%% percentile intervals of a hierarchical bootstrap (%d resamples of the %d replicates, then of the problems within each; "+
			"differences paired by replicate and problem)", 100*c.Stats.Level, c.Stats.Resamples, c.Replicates)}
	models := modelNames(p)
	rlModels := slices.DeleteFunc(slices.Clone(models), func(m string) bool { return m == "base" || m == "teacher" })

	all := make([]int, len(d.ids))
	for i := range all {
		all[i] = i
	}
	subsets := map[string][]int{"all": all}
	for i, bin := range d.bins {
		subsets[bin] = append(subsets[bin], i)
	}
	for name, members := range subsets {
		v := newView(d, name, members, c.Replicates, b)
		vr := &ViewResult{Problems: len(members), Models: map[string]*ModelResult{}, VsBase: map[string]*Comparison{}}
		for _, m := range models {
			mr := &ModelResult{PassAtK: map[int]eval.Interval{}, MajAtK: map[int]eval.Interval{}}
			for _, k := range ks {
				mr.PassAtK[k] = v.mean(m, passAt(k))
				mr.MajAtK[k] = v.mean(m, majAt(k))
			}
			mr.Unsolved, mr.Always = v.mean(m, unsolved), v.mean(m, always)
			if hasScores(d, m) {
				iv := v.mean(m, scorerLogLik)
				mr.BaseLogLik = &iv
			}
			vr.Models[m] = mr
		}
		for _, m := range rlModels {
			vr.VsBase[m] = v.compare(m, ks)
		}
		vr.Spread, vr.DeltaSE = v.spread(c.Algos, d.n)
		fs := findings(c, vr, v, d.n)
		if name == "all" {
			res.Findings = fs
		}
		res.Views[name] = vr
	}
	return res, nil
}

func hasScores(d *data, model string) bool {
	for _, row := range d.models[model] {
		for _, p := range row {
			if p.ScorerLogLik != nil {
				return true
			}
		}
	}
	return false
}

// modelNames lists the plan's models once each, in plan order.
func modelNames(p *Plan) []string {
	var out []string
	for _, m := range p.Models {
		if !slices.Contains(out, m.Name) {
			out = append(out, m.Name)
		}
	}
	return out
}

// compare is a model against the base: differences at every k, the
// crossover, and the solved-set overlap.
func (v *view) compare(model string, ks []int) *Comparison {
	cmp := &Comparison{PassDiff: map[int]eval.Interval{}, MajDiff: map[int]eval.Interval{}, ModelOnly: map[string]int{}, ModelOnlyByBin: map[string]int{}}
	for _, k := range ks {
		cmp.PassDiff[k] = v.diff(model, passAt(k), "base", passAt(k))
		cmp.MajDiff[k] = v.diff(model, majAt(k), "base", majAt(k))
	}
	point, perDraw := v.curveDiffs(model, "base", ks)
	if k, ok := eval.Crossover(ks, point); ok {
		cmp.Crossover = k
	}
	cmp.CrossoverLo, cmp.CrossoverHi, cmp.NoCrossover = crossoverInterval(ks, perDraw, v.b.Level)
	sets := map[string][2]bool{"base_only": {true, false}, "model_only": {false, true}, "both": {true, true}, "neither": {false, false}}
	ivs := map[string]eval.Interval{}
	base, mod := v.values("base", solved), v.values(model, solved)
	for name, want := range sets {
		x := make([][]float64, len(base))
		for r := range base {
			x[r] = make([]float64, len(base[r]))
			for j := range base[r] {
				x[r][j] = indicator((base[r][j] == 1) == want[0] && (mod[r][j] == 1) == want[1])
			}
		}
		ivs[name] = v.interval(x, v.draws)
	}
	cmp.Overlap = Overlap{BaseOnly: ivs["base_only"], ModelOnly: ivs["model_only"], Both: ivs["both"], Neither: ivs["neither"]}
	for r := range base {
		counts := map[string]int{}
		for j := range base[r] {
			bs, ms := base[r][j] == 1, mod[r][j] == 1
			switch {
			case bs && ms:
				counts["both"]++
			case bs:
				counts["base_only"]++
			case ms:
				counts["model_only"]++
				id := v.d.ids[v.members[j]]
				cmp.ModelOnly[id]++
				cmp.ModelOnlyByBin[v.d.bins[v.members[j]]]++
			default:
				counts["neither"]++
			}
		}
		cmp.OverlapCounts = append(cmp.OverlapCounts, counts)
	}
	return cmp
}

// crossoverInterval is the percentile interval of the crossover k over the
// draws, a draw without one counting as beyond n (reported as 0 when the
// bound falls there), and the share of draws without one.
func crossoverInterval(ks []int, perDraw [][]float64, level float64) (lo, hi int, none float64) {
	const beyond = 1 << 30
	var xs []int
	for _, curve := range perDraw {
		k, ok := eval.Crossover(ks, curve)
		if !ok {
			k = beyond
			none++
		}
		xs = append(xs, k)
	}
	if len(xs) == 0 {
		return 0, 0, 1
	}
	sort.Ints(xs)
	q := func(p float64) int {
		i := int(p * float64(len(xs)-1))
		if xs[i] == beyond {
			return 0
		}
		return xs[i]
	}
	a := (1 - level) / 2
	return q(a), q(1 - a), none / float64(len(xs))
}
