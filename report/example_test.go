package report_test

import (
	"fmt"
	"os"

	"github.com/moerl/moerl/report"
)

// A study's pass@k figure: the base model and an RL model, each with the
// 95% bootstrap interval of its pass@k as a band, k on a log2 axis.
func ExampleCurvesSVG() {
	ks := []float64{1, 2, 4, 8, 16, 32, 64, 128, 256}
	svg, err := report.CurvesSVG(report.CurvePlot{
		Title:  "add: pass@k, 192 problems",
		XLabel: "k (samples per problem)",
		YLabel: "pass@k",
		LogX:   true,
		YMin:   0, YMax: 1,
		Series: []report.Series{
			{
				Name: "base", Marks: true, X: ks,
				Y:  []float64{.25, .38, .50, .58, .62, .65, .66, .66, .67},
				Lo: []float64{.22, .35, .47, .55, .59, .62, .63, .63, .64},
				Hi: []float64{.28, .41, .53, .61, .65, .68, .69, .69, .70},
			},
			{
				Name: "grpo", Marks: true, X: ks,
				Y: []float64{.44, .52, .56, .59, .61, .62, .64, .65, .65},
			},
		},
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	_ = os.WriteFile(os.DevNull, svg, 0o644) // a study writes it next to study.json
}

// A study's solved-set overlap: for each model, how many problems only the
// base model solves at n samples, only the RL model, both, neither; the
// bootstrap interval of each count as error bars.
func ExampleBarsSVG() {
	svg, err := report.BarsSVG(report.BarPlot{
		Title:      "Solved sets at n = 256",
		YLabel:     "problems",
		Categories: []string{"base only", "RL only", "both", "neither"},
		Series: []report.BarSeries{
			{Name: "grpo", Values: []float64{12, 3, 110, 67}, Lo: []float64{8, 1, 101, 60}, Hi: []float64{16, 6, 118, 74}},
			{Name: "ppo", Values: []float64{9, 5, 113, 65}, Lo: []float64{6, 2, 105, 58}, Hi: []float64{13, 8, 121, 72}},
		},
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(len(svg) > 0)
	// Output: true
}
