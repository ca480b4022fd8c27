package report

import (
	"bytes"
	"fmt"
	"strings"
)

// Markdown renders the summary of runs: a table of the runs, pass@k and
// maj@k of the evaluated runs side by side, then for each run with metrics
// a table of the first, last, smallest and largest value of its main
// metrics, and what the parsers tolerated.
func Markdown(runs []*Run, opt Options) ([]byte, error) {
	pg, err := build(runs, opt, false)
	if err != nil {
		return nil, err
	}
	return pg.markdown(), nil
}

func (pg *page) markdown() []byte {
	runs, opt := pg.runs, pg.opt
	var b bytes.Buffer
	fmt.Fprintf(&b, "# %s\n\n", mdEscape(opt.title()))
	b.WriteString("| run | stage | steps | evaluated | folder |\n|---|---|--:|---|---|\n")
	for _, r := range runs {
		ev := "no"
		if r.Eval != nil {
			ev = fmt.Sprintf("%d problems, n = %d", r.Eval.Problems, r.Eval.N)
		}
		fmt.Fprintf(&b, "| %s | %s | %d | %s | %s |\n", mdEscape(r.Name), mdEscape(r.stageName()), r.steps(), ev, mdEscape(r.Dir))
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
		fmt.Fprintf(&b, "\n## %s%s\n\n| k |", m.name, describe(evaluated))
		for _, r := range evaluated {
			fmt.Fprintf(&b, " %s |", mdEscape(r.Name))
		}
		b.WriteString("\n|--:|")
		for range evaluated {
			b.WriteString("--:|")
		}
		b.WriteString("\n")
		for _, k := range ks {
			fmt.Fprintf(&b, "| %d |", k)
			for _, r := range evaluated {
				fmt.Fprintf(&b, " %s |", evalCell(m.get(r.Eval), k))
			}
			b.WriteString("\n")
		}
	}
	for _, p := range []part{partRL, partLM, partRM} {
		header := false
		for _, r := range runs {
			if r.steps() == 0 || r.part() != p {
				continue
			}
			if !header {
				fmt.Fprintf(&b, "\n## %s\n", partTitles[p])
				header = true
			}
			fmt.Fprintf(&b, "\n### %s (%s, %d steps)\n\n", mdEscape(r.Name), mdEscape(r.stageName()), r.steps())
			b.WriteString("| metric | unit | first | last | min | max |\n|---|---|--:|--:|--:|--:|\n")
			for _, mi := range summaryFields(r) {
				s := statsOf(r.Metrics.Values[mi.field])
				fmt.Fprintf(&b, "| `%s` | %s | %s | %s | %s | %s |\n", mi.field, mdEscape(mi.unit), fmtNum(s.first), fmtNum(s.last), fmtNum(s.min), fmtNum(s.max))
			}
		}
		if other := pg.other[p]; len(other) > 0 {
			fmt.Fprintf(&b, "\nOther metrics (plotted in the HTML page): %s\n", mdEscape(strings.Join(other, ", ")))
		}
	}
	if notes := pg.notes(); len(notes) > 0 {
		b.WriteString("\n## Notes\n\n")
		for _, n := range notes {
			fmt.Fprintf(&b, "- %s\n", mdEscape(n))
		}
	}
	return b.Bytes()
}

// mdEscape keeps a name from breaking a table row or turning into markup.
func mdEscape(s string) string {
	return strings.NewReplacer("|", `\|`, "\n", " ", "*", `\*`, "_", `\_`, "`", "\\`").Replace(s)
}
