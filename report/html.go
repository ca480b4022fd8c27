package report

import (
	"bytes"
	"encoding/json"
	"fmt"
	"html"
	"image/color"
	"strings"
)

// css is the page's whole style: no fonts or files to load.
const css = `
body { font-family: 'Liberation Sans', Arial, Helvetica, sans-serif; margin: 24px; color: #222; background: #fff; }
h1 { font-size: 22px; margin: 0 0 4px; }
h2 { font-size: 18px; margin: 28px 0 6px; border-bottom: 1px solid #ddd; padding-bottom: 3px; }
h3 { font-size: 14px; margin: 16px 0 4px; color: #444; }
p.meta { color: #666; font-size: 13px; margin: 0 0 12px; }
.grid { display: grid; grid-template-columns: repeat(auto-fill, minmax(520px, 1fr)); gap: 8px 16px; }
figure { margin: 0; }
figure svg { width: 100%; height: auto; display: block; }
table { border-collapse: collapse; font-size: 13px; margin: 6px 0 14px; }
th, td { border: 1px solid #ddd; padding: 3px 8px; }
th { background: #f4f4f4; text-align: left; }
td.n { text-align: right; font-variant-numeric: tabular-nums; }
span.sw { display: inline-block; width: 12px; height: 12px; margin-right: 6px; vertical-align: -1px; border-radius: 2px; }
pre { background: #f7f7f7; padding: 8px; font-size: 12px; overflow-x: auto; }
details { margin: 4px 0; }
ul.notes { font-size: 13px; color: #555; }
`

// HTML renders runs as one self-contained page: a table of the runs, the
// evaluated runs' pass@k and maj@k (overall and per difficulty bin), a
// section of plots per kind of run (RL, pretraining and fine-tuning,
// reward model) with the runs of that kind overlaid, a summary table per
// run, and each run's settings. The
// plots are inline SVG; the page loads nothing and runs no script. It is
// also well-formed XML.
func HTML(runs []*Run, opt Options) ([]byte, error) {
	pg, err := build(runs, opt, true)
	if err != nil {
		return nil, err
	}
	return pg.html(), nil
}

func (pg *page) html() []byte {
	runs, opt := pg.runs, pg.opt
	var b bytes.Buffer
	e := html.EscapeString
	fmt.Fprintf(&b, "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\"/>\n<title>%s</title>\n<style>%s</style>\n</head>\n<body>\n", e(opt.title()), css)
	fmt.Fprintf(&b, "<h1>%s</h1>\n", e(opt.title()))
	smooth := "raw values"
	if opt.Smooth > 1 {
		smooth = fmt.Sprintf("moving average over %d steps (faint: raw values)", opt.Smooth)
	}
	fmt.Fprintf(&b, "<p class=\"meta\">%d run(s); per-step curves: %s.</p>\n", len(runs), e(smooth))

	b.WriteString("<table class=\"runs\">\n<tr><th>run</th><th>stage</th><th>steps</th><th>evaluated</th><th>folder</th></tr>\n")
	for _, r := range runs {
		ev := "no"
		if r.Eval != nil {
			ev = fmt.Sprintf("%d problems, n = %d", r.Eval.Problems, r.Eval.N)
		}
		fmt.Fprintf(&b, "<tr><td><span class=\"sw\" style=\"background:%s\"></span>%s</td><td>%s</td><td class=\"n\">%d</td><td>%s</td><td>%s</td></tr>\n",
			hexColor(Color(pg.color[r])), e(r.Name), e(r.stageName()), r.steps(), e(ev), e(r.Dir))
	}
	b.WriteString("</table>\n")

	for _, v := range pg.views {
		fmt.Fprintf(&b, "<h2>%s</h2>\n", e(v.title))
		for _, s := range v.sections {
			if len(s.figures) == 0 {
				continue
			}
			fmt.Fprintf(&b, "<h3>%s</h3>\n<div class=\"grid\">\n", e(s.title))
			for _, f := range s.figures {
				fmt.Fprintf(&b, "<figure aria-label=\"%s\">\n%s</figure>\n", e(f.title), inlineSVG(f.svg))
			}
			b.WriteString("</div>\n")
		}
	}

	b.WriteString("<h2>Summary</h2>\n")
	for _, r := range runs {
		if r.steps() == 0 {
			continue
		}
		fmt.Fprintf(&b, "<h3>%s (%s, %d steps)</h3>\n", e(r.Name), e(r.stageName()), r.steps())
		b.WriteString("<table>\n<tr><th>metric</th><th>unit</th><th>first</th><th>last</th><th>min</th><th>max</th></tr>\n")
		for _, mi := range summaryFields(r) {
			s := statsOf(r.Metrics.Values[mi.field])
			fmt.Fprintf(&b, "<tr><td>%s</td><td>%s</td><td class=\"n\">%s</td><td class=\"n\">%s</td><td class=\"n\">%s</td><td class=\"n\">%s</td></tr>\n",
				e(mi.field), e(mi.unit), fmtNum(s.first), fmtNum(s.last), fmtNum(s.min), fmtNum(s.max))
		}
		b.WriteString("</table>\n")
	}
	var evaluated []*Run
	for _, r := range runs {
		if r.Eval != nil {
			evaluated = append(evaluated, r)
		}
	}
	for _, m := range []struct {
		name string
		get  func(*EvalReport) map[int]float64
	}{{"pass@k", func(e *EvalReport) map[int]float64 { return e.PassAtK }}, {"maj@k", func(e *EvalReport) map[int]float64 { return e.MajAtK }}} {
		ks := evalKs(evaluated, m.get)
		if len(ks) == 0 {
			continue
		}
		fmt.Fprintf(&b, "<h3>%s</h3>\n<table>\n<tr><th>k</th>", m.name)
		for _, r := range evaluated {
			fmt.Fprintf(&b, "<th>%s</th>", e(r.Name))
		}
		b.WriteString("</tr>\n")
		for _, k := range ks {
			fmt.Fprintf(&b, "<tr><td class=\"n\">%d</td>", k)
			for _, r := range evaluated {
				fmt.Fprintf(&b, "<td class=\"n\">%s</td>", evalCell(m.get(r.Eval), k))
			}
			b.WriteString("</tr>\n")
		}
		b.WriteString("</table>\n")
	}

	b.WriteString("<h2>Settings</h2>\n")
	for _, r := range runs {
		if r.Settings == nil {
			continue
		}
		var pretty bytes.Buffer
		if json.Indent(&pretty, r.Settings, "", "  ") != nil {
			pretty.Reset()
			pretty.Write(r.Settings)
		}
		fmt.Fprintf(&b, "<details><summary>%s: %s</summary>\n<pre>%s</pre>\n</details>\n", e(r.Name), e(r.Dir+"/"+SettingsFile), e(pretty.String()))
	}
	if notes := pg.notes(); len(notes) > 0 {
		b.WriteString("<h2>Notes</h2>\n<ul class=\"notes\">\n")
		for _, n := range notes {
			fmt.Fprintf(&b, "<li>%s</li>\n", e(n))
		}
		b.WriteString("</ul>\n")
	}
	b.WriteString("</body>\n</html>\n")
	return b.Bytes()
}

// inlineSVG drops the XML declaration and generator comment of a
// standalone SVG, which have no place inside HTML.
func inlineSVG(svg []byte) string {
	s := string(svg)
	if i := strings.Index(s, "<svg"); i >= 0 {
		s = s[i:]
	}
	return s
}

func hexColor(c color.Color) string {
	n := color.NRGBAModel.Convert(c).(color.NRGBA)
	return fmt.Sprintf("#%02x%02x%02x", n.R, n.G, n.B)
}

func evalCell(m map[int]float64, k int) string {
	v, ok := m[k]
	if !ok {
		return "–"
	}
	return fmt.Sprintf("%.4f", v)
}
