package study

import (
	"fmt"
	"maps"
	"math"
	"path/filepath"
	"slices"

	"github.com/moerl/moerl/rl/eval"
	"github.com/moerl/moerl/run"
)

// data holds every model's per-problem results: data[model][r][i] is
// replicate r's (0-based) result on problem i; a model shared by all
// replicates (the teacher) has one row.
type data struct {
	models   map[string][][]run.ProblemResult
	ids      []string // problem IDs, the same for every model
	bins     []string // problem i's bin
	n        int      // samples per problem
	binNames []string // sorted
}

// load reads every model's evaluation and checks that all of them were
// evaluated on the same problems, in the same order, with the same n.
func load(p *Plan, outputs map[string]string) (*data, error) {
	d := &data{models: map[string][][]run.ProblemResult{}}
	for _, m := range p.Models {
		out, err := run.ReadEval(filepath.Dir(outputs[m.EvalStage]))
		if err != nil {
			return nil, fmt.Errorf("%s: %w", m.EvalStage, err)
		}
		if d.ids == nil {
			for _, pr := range out.Problems {
				d.ids = append(d.ids, pr.ID)
				d.bins = append(d.bins, pr.Bin)
			}
			d.n = out.Report.N
		}
		if len(out.Problems) != len(d.ids) {
			return nil, fmt.Errorf("%s: %d problems, others have %d", m.EvalStage, len(out.Problems), len(d.ids))
		}
		for i, pr := range out.Problems {
			if pr.ID != d.ids[i] || pr.N != d.n {
				return nil, fmt.Errorf("%s: problem %d is %s with n=%d, others have %s with n=%d", m.EvalStage, i, pr.ID, pr.N, d.ids[i], d.n)
			}
		}
		r := max(m.Replicate-1, 0)
		rows := d.models[m.Name]
		for len(rows) <= r {
			rows = append(rows, nil)
		}
		rows[r] = out.Problems
		d.models[m.Name] = rows
	}
	seen := map[string]bool{}
	for _, b := range d.bins {
		seen[b] = true
	}
	d.binNames = slices.Sorted(maps.Keys(seen))
	return d, nil
}

// metric is a per-problem value of a model.
type metric func(run.ProblemResult) float64

func passAt(k int) metric { return func(p run.ProblemResult) float64 { return p.PassAtK(k) } }
func majAt(k int) metric  { return func(p run.ProblemResult) float64 { return p.MajAtK(k) } }

// unsolved is 1 for a problem no sample solved (pass@n = 0), always for
// one every sample solved (pass@k = 1 at every k): the floor and the
// ceiling, where no k can show a difference.
func unsolved(p run.ProblemResult) float64 { return indicator(p.Correct == 0) }
func always(p run.ProblemResult) float64   { return indicator(p.Correct == p.N) }
func solved(p run.ProblemResult) float64   { return indicator(p.Correct > 0) }

func indicator(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// scorerLogLik is the mean log-likelihood per token of the problem's
// scored samples under the replicate's base model (NaN when unscored).
func scorerLogLik(p run.ProblemResult) float64 {
	if p.ScorerLogLik == nil {
		return math.NaN()
	}
	return *p.ScorerLogLik
}

// view is the analysis of one subset of problems (all, or a bin): the
// bootstrap draws over replicates and those problems, shared by every
// statistic so that differences and curves are paired.
type view struct {
	d       *data
	name    string // "all" or the bin
	members []int  // problem indices
	reps    int
	draws   []eval.Draw
	shared  []eval.Draw // draws for a model with one row (problems only)
	b       eval.Bootstrap
}

func newView(d *data, name string, members []int, reps int, b eval.Bootstrap) *view {
	return &view{d: d, name: name, members: members, reps: reps, b: b,
		draws: b.Draws(reps, len(members)), shared: b.Draws(1, len(members))}
}

// values is v[r][j] = f(model's replicate r on problem members[j]).
func (v *view) values(model string, f metric) [][]float64 {
	rows := v.d.models[model]
	out := make([][]float64, len(rows))
	for r, row := range rows {
		out[r] = make([]float64, len(v.members))
		for j, i := range v.members {
			out[r][j] = f(row[i])
		}
	}
	return out
}

func (v *view) drawsFor(x [][]float64) []eval.Draw {
	if len(x) == 1 {
		return v.shared
	}
	return v.draws
}

// mean is a model's metric with its interval.
func (v *view) mean(model string, f metric) eval.Interval {
	x := v.values(model, f)
	return v.interval(x, v.drawsFor(x))
}

func (v *view) interval(x [][]float64, draws []eval.Draw) eval.Interval {
	stats := make([]float64, len(draws))
	for i, d := range draws {
		stats[i] = d.Mean(x)
	}
	return v.b.Interval(eval.Estimate(x), stats)
}

// diff is model a's metric minus model b's, paired by replicate and
// problem.
func (v *view) diff(a string, fa metric, b string, fb metric) eval.Interval {
	return v.interval(subtract(v.values(a, fa), v.values(b, fb)), v.draws)
}

func subtract(x, y [][]float64) [][]float64 {
	out := make([][]float64, len(x))
	for r := range x {
		out[r] = make([]float64, len(x[r]))
		for j := range x[r] {
			out[r][j] = x[r][j] - y[r][j]
		}
	}
	return out
}

// curveDiffs computes, for every draw, the mean difference a − b of
// pass@k at each k: the rows of the crossover's bootstrap.
func (v *view) curveDiffs(a, b string, ks []int) (point []float64, perDraw [][]float64) {
	xs := make([][][]float64, len(ks))
	for j, k := range ks {
		xs[j] = subtract(v.values(a, passAt(k)), v.values(b, passAt(k)))
		point = append(point, eval.Estimate(xs[j]))
	}
	perDraw = make([][]float64, len(v.draws))
	for i, d := range v.draws {
		perDraw[i] = make([]float64, len(ks))
		for j := range ks {
			perDraw[i][j] = d.Mean(xs[j])
		}
	}
	return point, perDraw
}

// spread is the statistic of finding 4: the largest minus the smallest
// ΔSE = pass@n(base) − pass@1(algorithm) over the algorithms, per draw.
func (v *view) spread(algos []string, n int) (eval.Interval, map[string]eval.Interval) {
	base := v.values("base", passAt(n))
	per := map[string]eval.Interval{}
	xs := make([][][]float64, len(algos))
	for i, a := range algos {
		xs[i] = subtract(base, v.values(a, passAt(1)))
		per[a] = v.interval(xs[i], v.draws)
	}
	spreadOf := func(mean func(x [][]float64) float64) float64 {
		lo, hi := math.Inf(1), math.Inf(-1)
		for _, x := range xs {
			m := mean(x)
			lo, hi = min(lo, m), max(hi, m)
		}
		return hi - lo
	}
	stats := make([]float64, len(v.draws))
	for i, d := range v.draws {
		stats[i] = spreadOf(d.Mean)
	}
	return v.b.Interval(spreadOf(eval.Estimate), stats), per
}
