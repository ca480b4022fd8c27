package report

import (
	"bytes"
	"encoding/xml"
	"errors"
	"io"
	"math"
	"slices"
	"strings"
	"testing"

	"gonum.org/v1/plot"
)

// checkXML parses doc to the end and returns how many elements of each
// name it holds; it fails the test on malformed XML.
func checkXML(t *testing.T, doc []byte) map[string]int {
	t.Helper()
	d := xml.NewDecoder(bytes.NewReader(doc))
	d.Strict = true
	d.Entity = xml.HTMLEntity
	count := map[string]int{}
	depth := 0
	for {
		tok, err := d.Token()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("not well-formed XML: %v", err)
		}
		switch e := tok.(type) {
		case xml.StartElement:
			count[e.Name.Local]++
			depth++
		case xml.EndElement:
			depth--
		}
	}
	if depth != 0 {
		t.Fatalf("unclosed elements: depth %d at the end", depth)
	}
	return count
}

func ramp(n int, f func(float64) float64) (x, y []float64) {
	for i := 1; i <= n; i++ {
		x = append(x, float64(i))
		y = append(y, f(float64(i)))
	}
	return x, y
}

func TestCurvesSVG(t *testing.T) {
	x, y := ramp(50, func(v float64) float64 { return 1 - math.Exp(-v/10) })
	_, y2 := ramp(50, func(v float64) float64 { return 0.5 + 0.01*v })
	lo, hi := make([]float64, len(y)), make([]float64, len(y))
	for i := range y {
		lo[i], hi[i] = y[i]-0.1, y[i]+0.1
	}
	y2[10] = math.NaN() // a gap
	svg, err := CurvesSVG(CurvePlot{
		Title: "Mean reward <&>", XLabel: "step", YLabel: "reward",
		Series: []Series{{Name: "grpo & co", X: x, Y: y, Lo: lo, Hi: hi}, {Name: "ppo", X: x, Y: y2, Dashed: true}, {X: x, Y: y2, Faint: true}},
	})
	if err != nil {
		t.Fatal(err)
	}
	n := checkXML(t, svg)
	if n["svg"] != 1 || n["text"] < 8 || n["path"] < 10 {
		t.Errorf("elements %v: want one svg, its texts and paths", n)
	}
	for _, want := range []string{"Mean reward &lt;&amp;&gt;", "grpo &amp; co", ">ppo<", "fill-opacity:0.18"} {
		if !bytes.Contains(svg, []byte(want)) {
			t.Errorf("SVG lacks %q", want)
		}
	}
	// the unnamed faint series has no legend entry: two legend texts only
	if c := bytes.Count(svg, []byte(">ppo<")); c != 1 {
		t.Errorf("ppo named %d times", c)
	}

	ks := []float64{1, 2, 4, 8, 16, 32, 64, 128, 256}
	svg, err = CurvesSVG(CurvePlot{Title: "pass@k", XLabel: "k", YLabel: "pass@k", LogX: true, YMin: 0, YMax: 1,
		Series: []Series{{Name: "base", X: ks, Y: []float64{.1, .2, .3, .4, .5, .6, .7, .8, .9}, Marks: true}}})
	if err != nil {
		t.Fatal(err)
	}
	checkXML(t, svg)
	for _, k := range []string{">1<", ">2<", ">16<", ">256<"} {
		if !bytes.Contains(svg, []byte(k)) {
			t.Errorf("log2 axis lacks tick %s", k)
		}
	}
}

func TestCurvesSVGErrors(t *testing.T) {
	cases := []struct {
		name string
		p    CurvePlot
		want string
	}{
		{"no series", CurvePlot{}, "no finite point"},
		{"all NaN", CurvePlot{Series: []Series{{X: []float64{1, 2}, Y: []float64{math.NaN(), math.NaN()}}}}, "no finite point"},
		{"lengths", CurvePlot{Series: []Series{{Name: "a", X: []float64{1, 2}, Y: []float64{1}}}}, `series "a": 2 x values, 1 y values`},
		{"band lengths", CurvePlot{Series: []Series{{Name: "a", X: []float64{1}, Y: []float64{1}, Lo: []float64{}, Hi: []float64{1}}}}, "0 lo"},
		{"infinite", CurvePlot{Series: []Series{{Name: "a", X: []float64{1, 2}, Y: []float64{1, math.Inf(1)}}}}, "infinite"},
		{"log of zero", CurvePlot{LogX: true, Series: []Series{{Name: "a", X: []float64{0, 1}, Y: []float64{1, 1}}}}, "x = 0 on a log axis"},
		{"size", CurvePlot{Width: 10, Series: []Series{{X: []float64{1}, Y: []float64{1}}}}, "figure size"},
	}
	for _, c := range cases {
		if _, err := CurvesSVG(c.p); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: error %v, want %q", c.name, err, c.want)
		}
	}
}

func TestBarsSVG(t *testing.T) {
	p := BarPlot{
		Title: "Solved sets at n = 256", YLabel: "problems",
		Categories: []string{"base only", "RL only", "both", "neither"},
		Series: []BarSeries{
			{Name: "grpo", Values: []float64{10, 3, 40, 11}, Lo: []float64{7, 1, 35, 9}, Hi: []float64{13, 5, 45, 14}},
			{Name: "ppo", Values: []float64{8, 5, 42, 9}, Lo: []float64{6, math.NaN(), 38, 7}, Hi: []float64{11, math.NaN(), 46, 12}},
		},
	}
	svg, err := BarsSVG(p)
	if err != nil {
		t.Fatal(err)
	}
	checkXML(t, svg)
	for _, want := range []string{"base only", "RL only", "neither", ">grpo<", ">ppo<", "Solved sets"} {
		if !bytes.Contains(svg, []byte(want)) {
			t.Errorf("bar SVG lacks %q", want)
		}
	}
	bad := []struct {
		name string
		p    BarPlot
		want string
	}{
		{"empty", BarPlot{}, "no categories"},
		{"count", BarPlot{Categories: []string{"a", "b"}, Series: []BarSeries{{Name: "s", Values: []float64{1}}}}, "1 values for 2 categories"},
		{"NaN", BarPlot{Categories: []string{"a"}, Series: []BarSeries{{Name: "s", Values: []float64{math.NaN()}}}}, "value NaN"},
		{"interval", BarPlot{Categories: []string{"a"}, Series: []BarSeries{{Name: "s", Values: []float64{1}, Lo: []float64{0}, Hi: []float64{}}}}, "0 hi"},
	}
	for _, c := range bad {
		if _, err := BarsSVG(c.p); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: error %v, want %q", c.name, err, c.want)
		}
	}
}

func TestMovingAverage(t *testing.T) {
	cases := []struct {
		y    []float64
		n    int
		want []float64
	}{
		{[]float64{1, 2, 3}, 0, []float64{1, 2, 3}},
		{[]float64{1, 2, 3}, 1, []float64{1, 2, 3}},
		{[]float64{1, 2, 3, 4, 5}, 3, []float64{1.5, 2, 3, 4, 4.5}},
		{[]float64{1, 2, 3, 4}, 2, []float64{1, 1.5, 2.5, 3.5}},
		{[]float64{1, nan, 3}, 3, []float64{1, 2, 3}},
		{[]float64{nan, nan, nan, 4}, 3, []float64{nan, nan, 4, 4}},
		{[]float64{2, 4}, 100, []float64{3, 3}},
		{nil, 5, nil},
	}
	for _, c := range cases {
		if got := MovingAverage(c.y, c.n); !sameFloats(got, c.want) {
			t.Errorf("MovingAverage(%v, %d) = %v, want %v", c.y, c.n, got, c.want)
		}
	}
}

func TestTicks(t *testing.T) {
	labels := func(ts []plot.Tick) []string {
		var out []string
		for _, tk := range ts {
			if tk.Label != "" {
				out = append(out, tk.Label)
			}
		}
		return out
	}
	cases := []struct {
		name   string
		ticks  []plot.Tick
		labels []string
	}{
		{"unit range", numTicks{}.Ticks(0, 1), []string{"0", "0.2", "0.4", "0.6", "0.8", "1"}},
		{"steps 1..3", numTicks{minStep: 1}.Ticks(1, 3), []string{"1", "2", "3"}},
		{"steps 1..12", numTicks{minStep: 1}.Ticks(1, 12), []string{"2", "4", "6", "8", "10", "12"}},
		{"steps 0..10 skip 2.5", numTicks{minStep: 1}.Ticks(0, 10), []string{"0", "2", "4", "6", "8", "10"}},
		{"throughput", numTicks{}.Ticks(59000, 111000), []string{"60k", "70k", "80k", "90k", "100k", "110k"}},
		{"learning rate", numTicks{}.Ticks(0, 0.003), []string{"0", "5e-4", "1e-3", "1.5e-3", "2e-3", "2.5e-3", "3e-3"}},
		{"flat", numTicks{}.Ticks(2, 2), []string{"2"}},
		{"log2 1..256", log2Ticks{}.Ticks(1, 256), []string{"1", "2", "4", "8", "16", "32", "64", "128", "256"}},
		{"log2 thinned", log2Ticks{}.Ticks(1, 1<<20), []string{"1", "4", "16", "64", "256", "1024", "4096", "16.38k", "65.54k", "262.1k", "1.049M"}},
	}
	for _, c := range cases {
		if got := labels(c.ticks); !slices.Equal(got, c.labels) {
			t.Errorf("%s: labels %v, want %v", c.name, got, c.labels)
		}
	}
}

// TestFlatSeriesRange: a constant series (with the float noise of a
// moving average) gets a readable range, not one of 1e-19.
func TestFlatSeriesRange(t *testing.T) {
	y := MovingAverage([]float64{0.003, 0.003, 0.003, 0.003, 0.003, 0.003, 0.003}, 3)
	pl, _, err := curvesPlot(CurvePlot{Series: []Series{{X: []float64{1, 2, 3, 4, 5, 6, 7}, Y: y}}})
	if err != nil {
		t.Fatal(err)
	}
	if d := pl.Y.Max - pl.Y.Min; d < 5e-4 || d > 1e-3 {
		t.Errorf("y range %g..%g for a constant 0.003", pl.Y.Min, pl.Y.Max)
	}
}
