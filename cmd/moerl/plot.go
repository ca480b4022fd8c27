package main

import (
	"fmt"
	"io"
	"math"
	"slices"
	"strings"
)

// curve is one line of a pass@k plot.
type curve struct {
	name   string
	color  string
	points map[int]float64
}

// writePassAtKSVG draws pass@k against k (log₂ axis) for each curve as a
// standalone SVG.
func writePassAtKSVG(w io.Writer, title string, curves []curve) error {
	const W, H, left, right, top, bottom = 640, 400, 60, 20, 40, 50
	var ks []int
	for _, c := range curves {
		for k := range c.points {
			if !slices.Contains(ks, k) {
				ks = append(ks, k)
			}
		}
	}
	slices.Sort(ks)
	if len(ks) == 0 {
		return fmt.Errorf("plot: no points")
	}
	maxLog := math.Max(1, math.Log2(float64(ks[len(ks)-1])))
	x := func(k int) float64 { return left + (W-left-right)*math.Log2(float64(k))/maxLog }
	y := func(v float64) float64 { return top + (H-top-bottom)*(1-v) }
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="sans-serif" font-size="12">`+"\n", W, H, W, H)
	fmt.Fprintf(&b, `<rect width="%d" height="%d" fill="white"/>`+"\n", W, H)
	fmt.Fprintf(&b, `<text x="%d" y="22" font-size="15" text-anchor="middle">%s</text>`+"\n", W/2, escapeXML(title))
	for i := 0; i <= 10; i += 2 {
		v := float64(i) / 10
		fmt.Fprintf(&b, `<line x1="%d" x2="%d" y1="%.1f" y2="%.1f" stroke="#ddd"/><text x="%d" y="%.1f" text-anchor="end">%.1f</text>`+"\n",
			left, W-right, y(v), y(v), left-6, y(v)+4, v)
	}
	for _, k := range ks {
		fmt.Fprintf(&b, `<line x1="%.1f" x2="%.1f" y1="%d" y2="%d" stroke="#eee"/><text x="%.1f" y="%d" text-anchor="middle">%d</text>`+"\n",
			x(k), x(k), top, H-bottom, x(k), H-bottom+16, k)
	}
	fmt.Fprintf(&b, `<text x="%d" y="%d" text-anchor="middle">k (samples per problem)</text>`+"\n", (W+left)/2, H-12)
	fmt.Fprintf(&b, `<text x="16" y="%d" text-anchor="middle" transform="rotate(-90 16 %d)">pass@k</text>`+"\n", H/2, H/2)
	for i, c := range curves {
		var pts []string
		for _, k := range ks {
			if v, ok := c.points[k]; ok {
				pts = append(pts, fmt.Sprintf("%.1f,%.1f", x(k), y(v)))
			}
		}
		fmt.Fprintf(&b, `<polyline fill="none" stroke="%s" stroke-width="2" points="%s"/>`+"\n", c.color, strings.Join(pts, " "))
		for _, p := range pts {
			xy := strings.Split(p, ",")
			fmt.Fprintf(&b, `<circle cx="%s" cy="%s" r="3" fill="%s"/>`+"\n", xy[0], xy[1], c.color)
		}
		ly := H - bottom - 20 - 18*(len(curves)-1-i)
		fmt.Fprintf(&b, `<line x1="%d" x2="%d" y1="%d" y2="%d" stroke="%s" stroke-width="2"/><text x="%d" y="%d">%s</text>`+"\n",
			W-right-150, W-right-126, ly, ly, c.color, W-right-120, ly+4, escapeXML(c.name))
	}
	b.WriteString("</svg>\n")
	_, err := io.WriteString(w, b.String())
	return err
}

func escapeXML(s string) string {
	return strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;", `"`, "&quot;").Replace(s)
}
