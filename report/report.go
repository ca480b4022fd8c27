// Package report reads moerl run folders and draws what they hold: the
// per-step metrics of training and RL, and pass@k and maj@k of evaluated
// models, several runs overlaid in each plot so that two algorithms compare
// at a glance.
//
// A run folder holds metrics.jsonl (one JSON object per step), run.json
// (the resolved settings) and, for an evaluated model, eval.json (an
// rl/eval Report); a study folder holds several run folders. Load finds
// the runs, HTML draws a self-contained page (SVG plots inlined, no
// external resources, no script), Markdown a summary with a table per run,
// and Write writes both atomically.
//
// The plots are drawn with gonum.org/v1/plot. CurvesSVG and BarsSVG draw
// other figures in the same look, for studies.
package report

import (
	"cmp"
	"fmt"
	"maps"
	"math"
	"slices"
)

// Options configures a report.
type Options struct {
	// Smooth is the width, in steps, of a centred moving average drawn over
	// each per-step curve, the raw values staying as a faint line beneath;
	// 0 or 1 draws the raw values only. Summary tables always use the raw
	// values.
	Smooth int
	// Title heads the page; "" means "moerl report".
	Title string
}

func (o Options) title() string {
	if o.Title == "" {
		return "moerl report"
	}
	return o.Title
}

// maxPoints bounds the points of one curve: a longer log is averaged in
// consecutive buckets, which keeps a 100,000-step run's page a few MB.
const maxPoints = 2000

// MovingAverage returns the centred moving average of y over a window of
// n points (n/2 before and (n−1)/2 after each point, fewer at the ends),
// ignoring NaN; a point whose window holds no number stays NaN. n ≤ 1
// returns a copy of y.
func MovingAverage(y []float64, n int) []float64 {
	out := slices.Clone(y)
	if n <= 1 {
		return out
	}
	// prefix sums of the numbers and of their count
	sum := make([]float64, len(y)+1)
	cnt := make([]int, len(y)+1)
	for i, v := range y {
		sum[i+1], cnt[i+1] = sum[i], cnt[i]
		if !math.IsNaN(v) {
			sum[i+1] += v
			cnt[i+1]++
		}
	}
	for i := range y {
		lo, hi := max(0, i-n/2), min(len(y), i+(n-1)/2+1)
		if c := cnt[hi] - cnt[lo]; c > 0 {
			out[i] = (sum[hi] - sum[lo]) / float64(c)
		} else {
			out[i] = math.NaN()
		}
	}
	return out
}

// thin averages each of cols over the same consecutive buckets so that at
// most maxPoints remain (NaN ignored).
func thin(cols ...[]float64) [][]float64 {
	n := len(cols[0])
	if n <= maxPoints {
		return cols
	}
	out := make([][]float64, len(cols))
	for c, col := range cols {
		out[c] = make([]float64, maxPoints)
		for b := range maxPoints {
			lo, hi := b*n/maxPoints, (b+1)*n/maxPoints
			s, k := 0.0, 0
			for _, v := range col[lo:hi] {
				if !math.IsNaN(v) {
					s += v
					k++
				}
			}
			out[c][b] = math.NaN()
			if k > 0 {
				out[c][b] = s / float64(k)
			}
		}
	}
	return out
}

// figure is one plot of the page.
type figure struct {
	title string
	svg   []byte
}

type section struct {
	title   string
	figures []figure
}

// view is a part of the page: a title, its runs, its sections of plots.
type view struct {
	title    string
	part     part // "" for the evaluation
	runs     []*Run
	sections []section
}

// page is everything HTML and Markdown render.
type page struct {
	opt   Options
	runs  []*Run
	color map[*Run]int
	views []view
	// other lists, per part, the fields outside the catalog.
	other map[part][]string
	draw  bool // render the figures' SVG
}

// build lays the page out; draw renders its figures (Markdown needs none).
func build(runs []*Run, opt Options, draw bool) (*page, error) {
	if len(runs) == 0 {
		return nil, fmt.Errorf("no runs")
	}
	if opt.Smooth < 0 {
		return nil, fmt.Errorf("smoothing window %d: want ≥ 0", opt.Smooth)
	}
	pg := &page{opt: opt, runs: runs, color: map[*Run]int{}, other: map[part][]string{}, draw: draw}
	for i, r := range runs {
		pg.color[r] = i
	}
	var evaluated []*Run
	for _, r := range runs {
		if r.Eval != nil && len(r.Eval.PassAtK) > 0 {
			evaluated = append(evaluated, r)
		}
	}
	if len(evaluated) > 0 { // the headline first
		v, err := pg.evalView(evaluated)
		if err != nil {
			return nil, err
		}
		pg.views = append(pg.views, v)
	}
	for _, p := range []part{partRL, partLM, partRM} {
		var rs []*Run
		for _, r := range runs {
			if r.Metrics != nil && len(r.Metrics.Steps) > 0 && r.part() == p {
				rs = append(rs, r)
			}
		}
		if len(rs) == 0 {
			continue
		}
		v, err := pg.metricsView(p, rs)
		if err != nil {
			return nil, err
		}
		pg.views = append(pg.views, v)
	}
	return pg, nil
}

// metricsView draws every field the runs of part p logged: the catalog's
// in its order and sections, then the others under "Other metrics".
func (pg *page) metricsView(p part, rs []*Run) (view, error) {
	v := view{title: partTitles[p], part: p, runs: rs}
	add := func(sec string, f figure) {
		for i := range v.sections {
			if v.sections[i].title == sec {
				v.sections[i].figures = append(v.sections[i].figures, f)
				return
			}
		}
		v.sections = append(v.sections, section{title: sec, figures: []figure{f}})
	}
	var fields []string
	seen := map[string]bool{}
	for _, r := range rs {
		for _, f := range r.Metrics.Fields {
			if !seen[f] {
				seen[f] = true
				fields = append(fields, f)
			}
		}
	}
	var infos []metricInfo
	for _, mi := range catalog[p] {
		if seen[mi.field] {
			infos = append(infos, mi)
		}
	}
	for _, f := range fields {
		if _, known := lookup(p, f); !known {
			pg.other[p] = append(pg.other[p], f)
			infos = append(infos, metricInfo{field: f, section: "Other metrics", title: f, unit: f})
		}
	}
	for _, mi := range infos {
		cp := CurvePlot{Title: mi.title, XLabel: partXLabels[p], YLabel: mi.unit, IntegerX: true}
		if mi.rate {
			cp.YMin, cp.YMax = 0, 1
		}
		for _, r := range rs {
			if !r.Metrics.Has(mi.field) {
				continue
			}
			cp.Series = append(cp.Series, pg.series(r, mi)...)
		}
		if len(cp.Series) == 0 || !pg.draw {
			continue
		}
		svg, err := CurvesSVG(cp)
		if err != nil {
			return v, fmt.Errorf("plot %s: %w", mi.field, err)
		}
		add(mi.section, figure{mi.title, svg})
	}
	return v, nil
}

// series is one run's curve of a field: raw, or faint raw under its moving
// average.
func (pg *page) series(r *Run, mi metricInfo) []Series {
	m := r.Metrics
	y := m.Values[mi.field]
	col := Color(pg.color[r])
	var out []Series
	if k := pg.opt.Smooth; k > 1 {
		t := thin(m.Steps, y)
		out = append(out, Series{X: t[0], Y: t[1], Color: col, Faint: true})
		y = MovingAverage(y, k)
	}
	t := thin(m.Steps, y)
	return append(out, Series{Name: r.Name, Color: col, X: t[0], Y: t[1]})
}

// evalView draws pass@k and maj@k of the evaluated runs, overall and per
// difficulty bin.
func (pg *page) evalView(rs []*Run) (view, error) {
	v := view{title: "Evaluation", runs: rs}
	type metric struct {
		name string
		get  func(*EvalReport) map[int]float64
	}
	metrics := []metric{
		{"pass@k", func(e *EvalReport) map[int]float64 { return e.PassAtK }},
		{"maj@k", func(e *EvalReport) map[int]float64 { return e.MajAtK }},
	}
	curve := func(title, ylabel string, get func(*EvalReport) map[int]float64, rep func(*Run) *EvalReport) ([]byte, error) {
		cp := CurvePlot{Title: title, XLabel: "k (samples per problem)", YLabel: ylabel, LogX: true, YMin: 0, YMax: 1}
		for _, r := range rs {
			e := rep(r)
			if e == nil || len(get(e)) == 0 {
				continue
			}
			m := get(e)
			ks := slices.Sorted(maps.Keys(m))
			s := Series{Name: r.Name, Color: Color(pg.color[r]), Marks: true}
			for _, k := range ks {
				s.X = append(s.X, float64(k))
				s.Y = append(s.Y, m[k])
			}
			cp.Series = append(cp.Series, s)
		}
		if len(cp.Series) == 0 || !pg.draw {
			return nil, nil
		}
		return CurvesSVG(cp)
	}
	overall := section{title: "All problems"}
	for _, m := range metrics {
		svg, err := curve(m.name+describe(rs), m.name, m.get, func(r *Run) *EvalReport { return r.Eval })
		if err != nil {
			return v, fmt.Errorf("plot %s: %w", m.name, err)
		}
		if svg != nil {
			overall.figures = append(overall.figures, figure{m.name, svg})
		}
	}
	v.sections = append(v.sections, overall)
	bins := map[string]bool{}
	for _, r := range rs {
		for b := range r.Eval.Bins {
			bins[b] = true
		}
	}
	if len(bins) > 0 {
		perBin := section{title: "pass@k per difficulty bin"}
		for _, b := range slices.SortedFunc(maps.Keys(bins), cmp.Compare) {
			rep := func(r *Run) *EvalReport {
				if e, ok := r.Eval.Bins[b]; ok {
					return &e
				}
				return nil
			}
			title := "pass@k, bin " + b + binSize(rs, b)
			svg, err := curve(title, "pass@k", metrics[0].get, rep)
			if err != nil {
				return v, fmt.Errorf("plot pass@k of bin %s: %w", b, err)
			}
			if svg != nil {
				perBin.figures = append(perBin.figures, figure{title, svg})
			}
		}
		v.sections = append(v.sections, perBin)
	}
	return v, nil
}

// describe is " (P problems, n = N)" when every run was evaluated alike.
func describe(rs []*Run) string {
	p, n := rs[0].Eval.Problems, rs[0].Eval.N
	for _, r := range rs[1:] {
		if r.Eval.Problems != p || r.Eval.N != n {
			return ""
		}
	}
	if p == 0 || n == 0 {
		return ""
	}
	return fmt.Sprintf(" (%d problems, n = %d)", p, n)
}

// binSize is " (P problems)" when every run has bin b of the same size.
func binSize(rs []*Run, b string) string {
	p := -1
	for _, r := range rs {
		e, ok := r.Eval.Bins[b]
		if !ok || p >= 0 && e.Problems != p {
			return ""
		}
		p = e.Problems
	}
	if p <= 0 {
		return ""
	}
	return fmt.Sprintf(" (%d problems)", p)
}

// stats are a field's first, last, smallest and largest finite values.
type stats struct {
	first, last, min, max float64
	ok                    bool
}

func statsOf(y []float64) stats {
	var s stats
	for _, v := range y {
		if !finite(v) {
			continue
		}
		if !s.ok {
			s = stats{first: v, min: v, max: v, ok: true}
		}
		s.last = v
		s.min = math.Min(s.min, v)
		s.max = math.Max(s.max, v)
	}
	return s
}

// summaryFields are the fields of a run's summary table: the catalog's
// main ones it logged.
func summaryFields(r *Run) []metricInfo {
	var out []metricInfo
	for _, mi := range catalog[r.part()] {
		if mi.main && r.Metrics.Has(mi.field) {
			out = append(out, mi)
		}
	}
	return out
}

// fmtNum prints a table value in four significant digits.
func fmtNum(v float64) string {
	if !finite(v) {
		return "–"
	}
	a := math.Abs(v)
	switch {
	case a != 0 && (a < 1e-3 || a >= 1e9):
		return fmt.Sprintf("%.3e", v)
	case a >= 1e4:
		return fmt.Sprintf("%.0f", v) // 12345 tokens/s, not 1.234e+04
	}
	return fmt.Sprintf("%.4g", v)
}

func (r *Run) steps() int {
	if r.Metrics == nil {
		return 0
	}
	return len(r.Metrics.Steps)
}

func (r *Run) stageName() string {
	if r.Stage == "" {
		return "unknown"
	}
	return r.Stage
}

// evalKs are the k of pass@k over all the runs, ascending.
func evalKs(rs []*Run, get func(*EvalReport) map[int]float64) []int {
	set := map[int]bool{}
	for _, r := range rs {
		if r.Eval != nil {
			for k := range get(r.Eval) {
				set[k] = true
			}
		}
	}
	return slices.Sorted(maps.Keys(set))
}

// notes gathers what the parsers tolerated.
func (pg *page) notes() []string {
	var out []string
	for _, r := range pg.runs {
		if r.Metrics != nil {
			out = append(out, r.Metrics.Notes...)
			if len(r.Metrics.Other) > 0 {
				out = append(out, fmt.Sprintf("%s: fields with no numbers, not plotted: %v", r.Name, r.Metrics.Other))
			}
		}
	}
	return out
}
