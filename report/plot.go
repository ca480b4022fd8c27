package report

import (
	"bytes"
	"errors"
	"fmt"
	"image/color"
	"math"
	"strconv"
	"strings"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/font"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgsvg"
)

// Default figure size in points (1/72 inch): two figures side by side fit
// a 1200-pixel-wide page.
const (
	DefaultWidth  = 400.0
	DefaultHeight = 250.0
)

// palette is Matplotlib's "tab10", whose colours stay distinct for most
// colour-blind readers; series past the tenth cycle it with dashes.
var palette = []color.NRGBA{
	{0x1f, 0x77, 0xb4, 0xff}, {0xd6, 0x27, 0x28, 0xff}, {0x2c, 0xa0, 0x2c, 0xff},
	{0xff, 0x7f, 0x0e, 0xff}, {0x94, 0x67, 0xbd, 0xff}, {0x8c, 0x56, 0x4b, 0xff},
	{0xe3, 0x77, 0xc2, 0xff}, {0x7f, 0x7f, 0x7f, 0xff}, {0xbc, 0xbd, 0x22, 0xff},
	{0x17, 0xbe, 0xcf, 0xff},
}

// Color is the i-th colour of the palette every figure uses (cycling), so a
// caller can give one model the same colour in several figures.
func Color(i int) color.Color {
	return palette[((i%len(palette))+len(palette))%len(palette)]
}

// Series is one curve of a CurvePlot.
type Series struct {
	// Name is the legend entry; an empty Name draws the curve without one.
	Name string
	// X and Y are the points, in order of drawing; they must have the same
	// length. A NaN in Y (or X) leaves a gap in the line.
	X, Y []float64
	// Lo and Hi, when both are non-nil, bound a shaded interval around the
	// curve (a confidence interval, ± one standard deviation), one value per
	// point; they must have the length of X. NaN leaves a gap in the band.
	Lo, Hi []float64
	// Color is the curve's colour; nil takes Color(i) for the i-th series.
	Color color.Color
	// Dashed draws a dashed line (for a reference curve, or to tell series
	// apart in greyscale).
	Dashed bool
	// Marks draws a dot at every point, for curves of a few points such as
	// pass@k.
	Marks bool
	// Faint draws a thin, light line with no legend entry, for the raw values
	// under a smoothed curve.
	Faint bool
}

// CurvePlot is a line chart of one or more series against a shared x axis.
type CurvePlot struct {
	// Title is drawn above the axes; XLabel and YLabel name the axes and
	// should carry the unit ("tokens", "nats/token").
	Title, XLabel, YLabel string
	Series                []Series
	// IntegerX keeps x ticks on whole numbers (steps, counts).
	IntegerX bool
	// LogX draws x on a base-2 log scale with ticks at powers of two (as
	// pass@k plots k = 1, 2, 4, …); every x must then be positive.
	LogX bool
	// YMin and YMax, when YMin < YMax, fix the y range (0 and 1 for a rate);
	// otherwise the range fits the data.
	YMin, YMax float64
	// Width and Height are the figure's size in points; 0 means
	// DefaultWidth and DefaultHeight.
	Width, Height float64
}

// BarSeries is one model (or condition) of a BarPlot: a bar in each
// category.
type BarSeries struct {
	// Name is the legend entry.
	Name string
	// Values holds one bar height per category.
	Values []float64
	// Lo and Hi, when both are non-nil, are the ends of each bar's error bar
	// (absolute values, not offsets: an interval [Lo[i], Hi[i]] around
	// Values[i]). NaN draws no error bar for that bar.
	Lo, Hi []float64
	// Color is the bars' colour; nil takes Color(i) for the i-th series.
	Color color.Color
}

// BarPlot is a grouped bar chart: for each category, one bar per series,
// side by side. The study draws its solved-set overlap with it: categories
// "base only", "RL only", "both", "neither"; a series per model; the
// bootstrap interval of each count as its error bar.
type BarPlot struct {
	// Title is drawn above the axes; YLabel names the value axis with its
	// unit ("problems").
	Title, YLabel string
	// Categories are the groups along the x axis, left to right.
	Categories []string
	Series     []BarSeries
	// Width and Height are the figure's size in points; 0 means
	// DefaultWidth and DefaultHeight.
	Width, Height float64
}

// theme fonts: Liberation Sans (shipped with gonum/plot, metric-compatible
// with Arial) for measuring text; the SVG names Arial and sans-serif as
// fallbacks for viewers that lack it.
var (
	titleFont = font.Font{Typeface: "Liberation", Variant: "Sans", Size: 11}
	labelFont = font.Font{Typeface: "Liberation", Variant: "Sans", Size: 9.5}
	tickFont  = font.Font{Typeface: "Liberation", Variant: "Sans", Size: 8.5}
)

// newPlot is a plot in the package's look: sans-serif text, light grid,
// no top or right frame.
func newPlot(title, xlabel, ylabel string) *plot.Plot {
	p := plot.New()
	p.Title.Text = title
	p.Title.TextStyle.Font = titleFont
	p.Title.Padding = 6
	for _, a := range []*plot.Axis{&p.X, &p.Y} {
		a.Label.TextStyle.Font = labelFont
		a.Tick.Label.Font = tickFont
		a.Color = color.Gray{0x60}
		a.Tick.Color = color.Gray{0x60}
		a.Tick.Length = 3
		a.Padding = 2
	}
	p.X.Label.Text = xlabel
	p.Y.Label.Text = ylabel
	p.X.Label.Padding = 2
	p.Y.Label.Padding = 2
	p.Y.Tick.Marker = numTicks{}
	p.X.Tick.Marker = numTicks{}
	return p
}

// grid is a light grid at the major ticks; bar charts take no vertical
// lines.
func grid(vertical bool) *plotter.Grid {
	g := plotter.NewGrid()
	g.Vertical.Color = color.Gray{0xe6}
	g.Horizontal.Color = color.Gray{0xe6}
	g.Vertical.Width = 0.5
	g.Horizontal.Width = 0.5
	if !vertical {
		g.Vertical.Color = nil
	}
	return g
}

// legendEntry is a legend line: a name and how its series is drawn.
type legendEntry struct {
	name  string
	thumb plot.Thumbnailer
}

// render draws p on a canvas of w×h points with the legend entries in a
// column to the right of the axes, so that no legend hides a curve.
func render(p *plot.Plot, entries []legendEntry, w, h float64) ([]byte, error) {
	if w == 0 {
		w = DefaultWidth
	}
	if h == 0 {
		h = DefaultHeight
	}
	if w < 100 || h < 80 || w > 10000 || h > 10000 {
		return nil, fmt.Errorf("figure size %gx%g points: want 100..10000 by 80..10000", w, h)
	}
	c := vgsvg.New(vg.Length(w), vg.Length(h))
	dc := draw.New(c)
	dc.SetColor(color.White)
	dc.Fill(dc.Rectangle.Path())
	leg := plot.NewLegend()
	leg.TextStyle.Font = labelFont
	leg.Top, leg.Left = true, true
	leg.ThumbnailWidth = 16
	leg.Padding = 2
	for _, e := range entries {
		leg.Add(e.name, e.thumb)
	}
	plotC, legC := draw.Crop(dc, 0, 0, 0, -2), dc
	if len(entries) > 0 {
		lw := min(leg.Rectangle(dc).Size().X+8, vg.Length(w)*0.4)
		top := p.Title.TextStyle.Rectangle(p.Title.Text).Size().Y + p.Title.Padding + 6
		plotC = draw.Crop(dc, 0, -lw, 0, -2)
		legC = draw.Crop(dc, vg.Length(w)-lw+4, 0, 0, -top)
	}
	if err := drawSafely(func() {
		p.Draw(plotC)
		if len(entries) > 0 {
			leg.Draw(legC)
		}
	}); err != nil {
		return nil, fmt.Errorf("drawing %q: %w", p.Title.Text, err)
	}
	var buf bytes.Buffer
	if _, err := c.WriteTo(&buf); err != nil {
		return nil, err
	}
	return fixFonts(buf.Bytes()), nil
}

// drawSafely runs f, turning a panic into an error: gonum/plot panics on
// some degenerate inputs, and a report must not crash its caller.
func drawSafely(f func()) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("%v", r)
		}
	}()
	f()
	return nil
}

// fixFonts gives the SVG's font family fallbacks: vgsvg names only the
// font it measured with, which few systems have installed.
func fixFonts(svg []byte) []byte {
	return bytes.ReplaceAll(svg, []byte("font-family:Liberation Sans;"),
		[]byte("font-family:'Liberation Sans',Arial,Helvetica,sans-serif;"))
}

// CurvesSVG draws p as a standalone SVG document: every series as a line
// (with its shaded Lo–Hi band under it, if given), a legend to the right of
// the axes, a light grid. It fails when p has no drawable point, when a
// series' slices differ in length, when a value is infinite, or when LogX
// meets an x ≤ 0.
func CurvesSVG(p CurvePlot) ([]byte, error) {
	pl, entries, err := curvesPlot(p)
	if err != nil {
		return nil, err
	}
	return render(pl, entries, p.Width, p.Height)
}

func curvesPlot(p CurvePlot) (*plot.Plot, []legendEntry, error) {
	pl := newPlot(p.Title, p.XLabel, p.YLabel)
	pl.Add(grid(true))
	if p.LogX {
		pl.X.Scale = plot.LogScale{}
		pl.X.Tick.Marker = log2Ticks{}
	} else if p.IntegerX {
		pl.X.Tick.Marker = numTicks{minStep: 1}
	}
	var entries []legendEntry
	drawn := 0
	for i, s := range p.Series {
		if len(s.Y) != len(s.X) {
			return nil, nil, fmt.Errorf("series %q: %d x values, %d y values", s.Name, len(s.X), len(s.Y))
		}
		band := s.Lo != nil && s.Hi != nil
		if band && (len(s.Lo) != len(s.X) || len(s.Hi) != len(s.X)) {
			return nil, nil, fmt.Errorf("series %q: %d x values, %d lo and %d hi", s.Name, len(s.X), len(s.Lo), len(s.Hi))
		}
		for j := range s.X {
			vals := []float64{s.X[j], s.Y[j]}
			if band {
				vals = append(vals, s.Lo[j], s.Hi[j])
			}
			for _, v := range vals {
				if math.IsInf(v, 0) {
					return nil, nil, fmt.Errorf("series %q: point %d is infinite", s.Name, j)
				}
			}
			if p.LogX && s.X[j] <= 0 {
				return nil, nil, fmt.Errorf("series %q: x = %g on a log axis", s.Name, s.X[j])
			}
		}
		col := s.Color
		if col == nil {
			col = Color(i)
		}
		style := draw.LineStyle{Color: col, Width: 1.4}
		if s.Dashed || (s.Color == nil && i >= len(palette)) {
			style.Dashes = []vg.Length{4, 2}
		}
		if s.Faint {
			style.Color = fade(col, 0.3)
			style.Width = 0.6
		}
		if band {
			for _, seg := range segments(s.X, s.Lo, s.Hi) {
				ring := make(plotter.XYs, 0, 2*len(seg))
				for _, j := range seg {
					ring = append(ring, plotter.XY{X: s.X[j], Y: s.Lo[j]})
				}
				for k := len(seg) - 1; k >= 0; k-- {
					ring = append(ring, plotter.XY{X: s.X[seg[k]], Y: s.Hi[seg[k]]})
				}
				poly, err := plotter.NewPolygon(ring)
				if err != nil {
					return nil, nil, fmt.Errorf("series %q band: %w", s.Name, err)
				}
				poly.Color = fade(col, 0.18)
				poly.LineStyle.Width = 0
				pl.Add(poly)
			}
		}
		for _, seg := range segments(s.X, s.Y) {
			xys := make(plotter.XYs, len(seg))
			for k, j := range seg {
				xys[k] = plotter.XY{X: s.X[j], Y: s.Y[j]}
			}
			line, err := plotter.NewLine(xys)
			if err != nil {
				return nil, nil, fmt.Errorf("series %q: %w", s.Name, err)
			}
			line.LineStyle = style
			pl.Add(line)
			if s.Marks {
				sc, err := plotter.NewScatter(xys)
				if err != nil {
					return nil, nil, fmt.Errorf("series %q: %w", s.Name, err)
				}
				sc.GlyphStyle = draw.GlyphStyle{Color: style.Color, Radius: 2, Shape: draw.CircleGlyph{}}
				pl.Add(sc)
			}
			drawn += len(seg)
		}
		if s.Name != "" && !s.Faint {
			thumb := &plotter.Line{LineStyle: style}
			thumb.LineStyle.Width = 2
			entries = append(entries, legendEntry{s.Name, thumb})
		}
	}
	if drawn == 0 {
		return nil, nil, errors.New("no finite point to draw")
	}
	if p.LogX && pl.X.Min == pl.X.Max {
		// one k: gonum/plot would widen the range by ±1, to 0 on a log axis
		pl.X.Min, pl.X.Max = pl.X.Min/2, pl.X.Max*2
	}
	if p.YMin < p.YMax {
		pl.Y.Min, pl.Y.Max = p.YMin, p.YMax
	} else {
		flat(&pl.Y)
		pad(&pl.Y)
	}
	return pl, entries, nil
}

// flat gives a constant series (a fixed learning rate, give or take the
// rounding of a moving average) a range of ±10% around its value, instead
// of a range of 1e-19 whose ticks all read the same.
func flat(a *plot.Axis) {
	mid := (a.Min + a.Max) / 2
	if a.Max-a.Min > 1e-9*math.Max(math.Abs(a.Min), math.Abs(a.Max)) {
		return
	}
	d := 0.1 * math.Abs(mid)
	if d == 0 {
		d = 1
	}
	a.Min, a.Max = mid-d, mid+d
}

// pad widens an axis' range by 4% at each end that is not zero, so no
// curve or error bar runs along the frame.
func pad(a *plot.Axis) {
	d := 0.04 * (a.Max - a.Min)
	if d == 0 {
		d = 0.04 * math.Max(math.Abs(a.Max), 1)
	}
	if a.Min != 0 {
		a.Min -= d
	}
	if a.Max != 0 {
		a.Max += d
	}
}

// segments splits the indices of the points into runs where every one of
// vals is finite: each run is drawn as its own line, so a missing value
// leaves a gap instead of a misleading straight join.
func segments(vals ...[]float64) [][]int {
	var out [][]int
	var cur []int
	for j := range vals[0] {
		ok := true
		for _, v := range vals {
			if math.IsNaN(v[j]) || math.IsInf(v[j], 0) {
				ok = false
			}
		}
		if ok {
			cur = append(cur, j)
			continue
		}
		if len(cur) > 0 {
			out = append(out, cur)
		}
		cur = nil
	}
	if len(cur) > 0 {
		out = append(out, cur)
	}
	return out
}

// fade is c at opacity a.
func fade(c color.Color, a float64) color.Color {
	n := color.NRGBAModel.Convert(c).(color.NRGBA)
	n.A = uint8(math.Round(float64(n.A) * a))
	return n
}

// BarsSVG draws p as a standalone SVG document: a group of bars per
// category, one bar per series in the series' order, with error bars where
// Lo and Hi are given. It fails when a series has a value per category
// missing or extra, when a value is not finite, or when there is nothing
// to draw.
func BarsSVG(p BarPlot) ([]byte, error) {
	if len(p.Categories) == 0 || len(p.Series) == 0 {
		return nil, errors.New("bar plot: no categories or no series")
	}
	pl := newPlot(p.Title, "", p.YLabel)
	pl.Add(grid(false))
	w := p.Width
	if w == 0 {
		w = DefaultWidth
	}
	// bars share ~70% of a category's width; room for the legend is ~30%
	// of the figure.
	barW := vg.Length(0.7 * 0.62 * w / float64(len(p.Categories)*len(p.Series)))
	var entries []legendEntry
	for i, s := range p.Series {
		if len(s.Values) != len(p.Categories) {
			return nil, fmt.Errorf("bar series %q: %d values for %d categories", s.Name, len(s.Values), len(p.Categories))
		}
		band := s.Lo != nil && s.Hi != nil
		if band && (len(s.Lo) != len(s.Values) || len(s.Hi) != len(s.Values)) {
			return nil, fmt.Errorf("bar series %q: %d values, %d lo and %d hi", s.Name, len(s.Values), len(s.Lo), len(s.Hi))
		}
		for j, v := range s.Values {
			if math.IsNaN(v) || math.IsInf(v, 0) {
				return nil, fmt.Errorf("bar series %q, %s: value %g", s.Name, p.Categories[j], v)
			}
			if band && (math.IsInf(s.Lo[j], 0) || math.IsInf(s.Hi[j], 0)) {
				return nil, fmt.Errorf("bar series %q, %s: infinite interval", s.Name, p.Categories[j])
			}
		}
		col := s.Color
		if col == nil {
			col = Color(i)
		}
		bars, err := plotter.NewBarChart(plotter.Values(s.Values), barW)
		if err != nil {
			return nil, fmt.Errorf("bar series %q: %w", s.Name, err)
		}
		bars.Color = col
		bars.LineStyle.Width = 0
		off := (float64(i) - float64(len(p.Series)-1)/2) * float64(barW)
		bars.Offset = vg.Length(off)
		pl.Add(bars)
		if band {
			var eb errBars
			for j := range s.Values {
				if math.IsNaN(s.Lo[j]) || math.IsNaN(s.Hi[j]) {
					continue
				}
				// centred on the interval, not the bar, so an interval that
				// does not contain its bar's value is still drawn as given
				mid, half := (s.Lo[j]+s.Hi[j])/2, math.Abs(s.Hi[j]-s.Lo[j])/2
				eb.xys = append(eb.xys, plotter.XY{X: float64(j), Y: mid})
				eb.errs = append(eb.errs, [2]float64{half, half})
			}
			if len(eb.xys) > 0 {
				e, err := plotter.NewYErrorBars(eb)
				if err != nil {
					return nil, fmt.Errorf("bar series %q: %w", s.Name, err)
				}
				e.LineStyle = draw.LineStyle{Color: color.Gray{0x20}, Width: 0.8}
				e.CapWidth = barW / 2
				pl.Add(offsetPlotter{e, vg.Length(off)})
			}
		}
		entries = append(entries, legendEntry{s.Name, bars})
	}
	pl.NominalX(p.Categories...)
	// each category owns a unit-wide slot, so the grid spans the axes
	pl.X.Min, pl.X.Max = -0.5, float64(len(p.Categories))-0.5
	pl.X.Padding, pl.Y.Padding = 0, 0
	pl.X.Tick.Label.Font = labelFont
	// always show the zero line of the bars
	pl.Y.Min = math.Min(pl.Y.Min, 0)
	flat(&pl.Y)
	pad(&pl.Y)
	return render(pl, entries, p.Width, p.Height)
}

// errBars holds error bars as the plotter.YErrorBars constructor takes
// them: offsets below and above each value.
type errBars struct {
	xys  plotter.XYs
	errs [][2]float64
}

func (e errBars) Len() int                        { return len(e.xys) }
func (e errBars) XY(i int) (float64, float64)     { return e.xys[i].X, e.xys[i].Y }
func (e errBars) YError(i int) (float64, float64) { return e.errs[i][0], e.errs[i][1] }

// offsetPlotter shifts a plotter sideways by a fixed length, to put error
// bars over the bars of a grouped bar chart (which BarChart shifts by its
// Offset).
type offsetPlotter struct {
	*plotter.YErrorBars
	off vg.Length
}

func (o offsetPlotter) Plot(c draw.Canvas, p *plot.Plot) {
	c.Min.X += o.off
	c.Max.X += o.off
	o.YErrorBars.Plot(c, p)
}

// numTicks puts up to seven labelled ticks at round values (1, 2, 2.5 or 5
// times a power of ten, and whole multiples of minStep when it is set)
// inside the range, as many as fit; gonum/plot's default labels only two
// or three.
type numTicks struct{ minStep float64 }

func (t numTicks) Ticks(lo, hi float64) []plot.Tick {
	if !(hi > lo) || math.IsInf(hi-lo, 0) {
		return []plot.Tick{{Value: lo, Label: shortNum(lo)}}
	}
	count := func(step float64) float64 { return math.Floor(hi/step+1e-9) - math.Ceil(lo/step-1e-9) + 1 }
	mag := math.Pow(10, math.Floor(math.Log10((hi-lo)/6)))
	step := math.NaN()
	for _, m := range []float64{1, 2, 2.5, 5, 10, 20, 25, 50, 100} {
		c := m * mag
		if t.minStep > 0 && (c < t.minStep || math.Abs(c/t.minStep-math.Round(c/t.minStep)) > 1e-9) {
			continue
		}
		if count(c) <= 7 {
			step = c
			break
		}
	}
	if math.IsNaN(step) {
		step = math.Max(t.minStep, 100*mag)
	}
	if !(step > 0) || math.IsInf(step, 0) { // a range below float64's resolution
		return []plot.Tick{{Value: lo, Label: shortNum(lo)}}
	}
	var ts []plot.Tick
	tiny := math.Max(math.Abs(lo), math.Abs(hi)) < 0.01
	for i := math.Ceil(lo/step - 1e-9); i*step <= hi+step*1e-9; i++ {
		v := i * step
		if math.Abs(v) < step*1e-9 {
			v = 0
		}
		// 3 × 0.0005 is 0.0015000000000000002: round the float noise off
		v, _ = strconv.ParseFloat(strconv.FormatFloat(v, 'g', 12, 64), 64)
		label := shortNum(v)
		if tiny && v != 0 {
			label = strings.Replace(strconv.FormatFloat(v, 'e', -1, 64), "e-0", "e-", 1)
		}
		ts = append(ts, plot.Tick{Value: v, Label: label})
	}
	return ts
}

// shortNum formats a tick value in at most four significant digits, with
// k and M for large round numbers.
func shortNum(v float64) string {
	a := math.Abs(v)
	switch {
	case v == 0:
		return "0"
	case a >= 1e6 && a < 1e12:
		return strconv.FormatFloat(v/1e6, 'g', 4, 64) + "M"
	case a >= 1e4 && a < 1e6:
		return strconv.FormatFloat(v/1e3, 'g', 4, 64) + "k"
	case a < 1e-3 || a >= 1e12:
		return strings.Replace(strconv.FormatFloat(v, 'e', 1, 64), "e-0", "e-", 1)
	}
	return strconv.FormatFloat(v, 'g', 4, 64)
}

// log2Ticks puts major ticks at the powers of two inside the range,
// thinning their labels when there are more than about ten.
type log2Ticks struct{}

func (log2Ticks) Ticks(lo, hi float64) []plot.Tick {
	if lo <= 0 || hi <= 0 {
		return nil
	}
	e0, e1 := int(math.Ceil(math.Log2(lo)-1e-9)), int(math.Floor(math.Log2(hi)+1e-9))
	step := 1
	for (e1-e0)/step > 10 {
		step *= 2
	}
	var ts []plot.Tick
	for e := e0; e <= e1; e++ {
		v := math.Exp2(float64(e))
		t := plot.Tick{Value: v}
		if (e-e0)%step == 0 {
			t.Label = shortNum(v)
		}
		ts = append(ts, t)
	}
	return ts
}
