package study

import (
	"fmt"
	"path/filepath"

	"github.com/moerl/moerl/report"
	"github.com/moerl/moerl/rl/eval"
	"github.com/moerl/moerl/run"
)

// Plot files of a study, beside study.md.
const (
	PassPlotFile       = "pass_at_k.svg"
	AlgoPlotFile       = "pass_at_k_algorithms.svg"
	DiffPlotFile       = "pass_at_k_difference.svg"
	OverlapPlotFile    = "solved_sets.svg"
	binPlotFilePattern = "pass_at_k_%s.svg"
)

// series is one model's pass@k curve with its interval band.
func (r *Result) series(view, model string, color int) report.Series {
	mr := r.Views[view].Models[model]
	s := report.Series{Name: model, Color: report.Color(color)}
	for _, k := range r.Ks {
		x := mr.PassAtK[k]
		s.X, s.Y, s.Lo, s.Hi = append(s.X, float64(k)), append(s.Y, x.Est), append(s.Lo, x.Lo), append(s.Hi, x.Hi)
	}
	return s
}

// writePlots draws the study's figures: pass@k of the base, the main RL
// model, the KL arms and the student with interval bands (overall and per
// bin), every algorithm's pass@k, the RL − base difference with its band,
// and the solved-set overlap with error bars.
func (r *Result) writePlots(out string) error {
	c := r.Config
	// Colours by position in each figure, the base always first, so that
	// no two curves of one figure share one.
	colors := map[string]int{}
	write := func(name string, svg []byte, err error) error {
		if err != nil {
			return fmt.Errorf("plot %s: %w", name, err)
		}
		return run.WriteFileAtomic(filepath.Join(out, name), svg)
	}
	main := []string{"base", c.Main, klName(c.KL[0]), klName(c.KL[1]), "student"}
	for _, view := range r.viewOrder() {
		p := report.CurvePlot{Title: fmt.Sprintf("pass@k, %s: %d problems × %d replicates", view, r.Views[view].Problems, r.Replicates),
			XLabel: "k (samples)", YLabel: fmt.Sprintf("pass@k, %.0f%% interval", 100*c.Stats.Level), LogX: true, YMin: 0, YMax: 1, Width: 560, Height: 340}
		for i, m := range main {
			if _, ok := r.Views[view].Models[m]; ok {
				p.Series = append(p.Series, r.series(view, m, i))
				colors[m] = i
			}
		}
		name := PassPlotFile
		if view != "all" {
			name = fmt.Sprintf(binPlotFilePattern, view)
		}
		svg, err := report.CurvesSVG(p)
		if err := write(name, svg, err); err != nil {
			return err
		}
	}

	algos := report.CurvePlot{Title: "pass@k of every algorithm at one budget",
		XLabel: "k (samples)", YLabel: fmt.Sprintf("pass@k, %.0f%% interval", 100*c.Stats.Level), LogX: true, YMin: 0, YMax: 1, Width: 560, Height: 340}
	algos.Series = append(algos.Series, r.series("all", "base", 0))
	for i, a := range c.Algos {
		algos.Series = append(algos.Series, r.series("all", a, i+1))
	}
	svg, err := report.CurvesSVG(algos)
	if err := write(AlgoPlotFile, svg, err); err != nil {
		return err
	}

	diff := report.CurvePlot{Title: "pass@k(model) − pass@k(base)",
		XLabel: "k (samples)", YLabel: fmt.Sprintf("difference, %.0f%% interval", 100*c.Stats.Level), LogX: true, Width: 560, Height: 340}
	for _, m := range main[1:] {
		cmp, ok := r.Views["all"].VsBase[m]
		if !ok {
			continue
		}
		s := report.Series{Name: m, Color: report.Color(colors[m])}
		for _, k := range r.Ks {
			x := cmp.PassDiff[k]
			s.X, s.Y, s.Lo, s.Hi = append(s.X, float64(k)), append(s.Y, x.Est), append(s.Lo, x.Lo), append(s.Hi, x.Hi)
		}
		diff.Series = append(diff.Series, s)
	}
	zero := report.Series{Name: "no difference", X: []float64{1, float64(r.N)}, Y: []float64{0, 0}, Dashed: true, Faint: true}
	diff.Series = append(diff.Series, zero)
	svg, err = report.CurvesSVG(diff)
	if err := write(DiffPlotFile, svg, err); err != nil {
		return err
	}

	bars := report.BarPlot{Title: fmt.Sprintf("solved at n = %d, against the base", r.N),
		YLabel: "share of problems", Categories: []string{"base only", "model only", "both", "neither"}, Width: 640, Height: 320}
	for _, m := range main[1:] {
		cmp, ok := r.Views["all"].VsBase[m]
		if !ok {
			continue
		}
		o := cmp.Overlap
		ivs := []eval.Interval{o.BaseOnly, o.ModelOnly, o.Both, o.Neither}
		bs := report.BarSeries{Name: m, Color: report.Color(colors[m])}
		for _, x := range ivs {
			bs.Values, bs.Lo, bs.Hi = append(bs.Values, x.Est), append(bs.Lo, x.Lo), append(bs.Hi, x.Hi)
		}
		bars.Series = append(bars.Series, bs)
	}
	svg, err = report.BarsSVG(bars)
	return write(OverlapPlotFile, svg, err)
}
