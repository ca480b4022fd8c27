package study

import (
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"

	"github.com/moerl/moerl/rl/eval"
)

// iv prints an interval as "0.412 [0.380, 0.445]".
func iv(x eval.Interval) string {
	return fmt.Sprintf("%.3f [%.3f, %.3f]", x.Est, x.Lo, x.Hi)
}

// signed prints a difference's interval with signs.
func signed(x eval.Interval) string {
	return fmt.Sprintf("%+.3f [%+.3f, %+.3f]", x.Est, x.Lo, x.Hi)
}

// tableKs are the k shown in the markdown tables: 1, then every other
// power of 4, and n.
func tableKs(n int) []int {
	var ks []int
	for k := 1; k < n; k *= 4 {
		ks = append(ks, k)
	}
	return append(ks, n)
}

// WriteMarkdown writes study.md: the setup, the verdicts, the tables with
// intervals, and a few lines of reading generated from the numbers.
func (r *Result) WriteMarkdown(w io.Writer) error {
	var b strings.Builder
	c := r.Config
	all := r.Views["all"]
	fmt.Fprintf(&b, "# moerl study: does RL widen what a model can solve, or only sharpen it?\n\n")
	fmt.Fprintf(&b, "Task `%s`, %d replicates (each its own pretraining and RL seed), %d problems (%s), n = %d samples per problem and model, temperature %g",
		c.Recipe.Task, r.Replicates, r.Problems, binList(r), r.N, c.Recipe.Eval.Temperature)
	if c.Recipe.Eval.TopP > 0 && c.Recipe.Eval.TopP < 1 {
		fmt.Fprintf(&b, ", top-p %g", c.Recipe.Eval.TopP)
	}
	fmt.Fprintf(&b, ". Every model of a replicate is evaluated on the same problems with the same random draws. Intervals: %s. Device %s, %.0f s.\n\n",
		r.Intervals, r.Device, r.Seconds)
	fmt.Fprintf(&b, "RL budget: %d steps × %d responses per step for every algorithm (ppo: 8× the prompts at one response each).\n\n",
		c.Recipe.RL.Steps, c.Recipe.RL.Prompts*8)

	fmt.Fprintf(&b, "## Verdicts\n\n| # | claim | verdict | decided by |\n|---|---|---|---|\n")
	for _, f := range r.Findings {
		var parts []string
		for _, t := range f.Tests {
			parts = append(parts, fmt.Sprintf("%s = %s (predicted %s: %s)", t.Statistic, signed(t.Interval), t.Prediction, t.Verdict))
		}
		if len(parts) == 0 {
			parts = []string{"not measured in this study"}
		}
		fmt.Fprintf(&b, "| %d | %s | **%s** | %s |\n", f.ID, f.Claim, f.Verdict, strings.Join(parts, "; "))
	}

	fmt.Fprintf(&b, "\n## Saturation\n\nShare of problems no sample solved (pass@%d = 0) and that every sample solved (pass@k = 1 at every k); where most problems sit at either end no k can show a difference.\n\n", r.N)
	views := r.viewOrder()
	fmt.Fprintf(&b, "| model |")
	for _, vn := range views {
		fmt.Fprintf(&b, " unsolved, %s |", vn)
	}
	for _, vn := range views {
		fmt.Fprintf(&b, " always, %s |", vn)
	}
	fmt.Fprintf(&b, "\n|---|%s\n", strings.Repeat("---|", 2*len(views)))
	for _, m := range r.modelOrder() {
		fmt.Fprintf(&b, "| %s |", m)
		for _, vn := range views {
			fmt.Fprintf(&b, " %s |", iv(r.Views[vn].Models[m].Unsolved))
		}
		for _, vn := range views {
			fmt.Fprintf(&b, " %s |", iv(r.Views[vn].Models[m].Always))
		}
		b.WriteByte('\n')
	}

	ks := tableKs(r.N)
	fmt.Fprintf(&b, "\n## pass@k (all problems)\n\n| model |")
	for _, k := range ks {
		fmt.Fprintf(&b, " pass@%d |", k)
	}
	fmt.Fprintf(&b, "\n|---|%s\n", strings.Repeat("---|", len(ks)))
	for _, m := range r.modelOrder() {
		fmt.Fprintf(&b, "| %s |", m)
		for _, k := range ks {
			fmt.Fprintf(&b, " %s |", iv(all.Models[m].PassAtK[k]))
		}
		b.WriteByte('\n')
	}
	fmt.Fprintf(&b, "\n## maj@k (exact over all k-subsets, ties split)\n\n| model |")
	for _, k := range ks {
		fmt.Fprintf(&b, " maj@%d |", k)
	}
	fmt.Fprintf(&b, "\n|---|%s\n", strings.Repeat("---|", len(ks)))
	for _, m := range r.modelOrder() {
		fmt.Fprintf(&b, "| %s |", m)
		for _, k := range ks {
			fmt.Fprintf(&b, " %s |", iv(all.Models[m].MajAtK[k]))
		}
		b.WriteByte('\n')
	}

	for _, vn := range r.viewOrder() {
		v := r.Views[vn]
		fmt.Fprintf(&b, "\n## Model − base, %s (%d problems)\n\n| model |", vn, v.Problems)
		for _, k := range ks {
			fmt.Fprintf(&b, " Δpass@%d |", k)
		}
		fmt.Fprintf(&b, " crossover k |\n|---|%s---|\n", strings.Repeat("---|", len(ks)))
		for _, m := range r.modelOrder() {
			cmp, ok := v.VsBase[m]
			if !ok {
				continue
			}
			fmt.Fprintf(&b, "| %s |", m)
			for _, k := range ks {
				fmt.Fprintf(&b, " %s |", signed(cmp.PassDiff[k]))
			}
			fmt.Fprintf(&b, " %s |\n", crossoverText(cmp))
		}
	}

	fmt.Fprintf(&b, "\n## Solved sets at n = %d (all problems)\n\nShares of problems solved by at least one sample of the base only, of the model only, of both, of neither; then the counts per replicate.\n\n", r.N)
	fmt.Fprintf(&b, "| model | base only | model only | both | neither | counts per replicate (base only / model only / both / neither) |\n|---|---|---|---|---|---|\n")
	for _, m := range r.modelOrder() {
		cmp, ok := all.VsBase[m]
		if !ok {
			continue
		}
		var counts []string
		for _, c := range cmp.OverlapCounts {
			counts = append(counts, fmt.Sprintf("%d/%d/%d/%d", c["base_only"], c["model_only"], c["both"], c["neither"]))
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s |\n", m, iv(cmp.Overlap.BaseOnly), iv(cmp.Overlap.ModelOnly),
			iv(cmp.Overlap.Both), iv(cmp.Overlap.Neither), strings.Join(counts, ", "))
	}
	if mo := all.VsBase[c.Main].ModelOnly; len(mo) > 0 {
		fmt.Fprintf(&b, "\nProblems only %s solved (replicates in which it did): ", c.Main)
		var items []string
		for _, id := range slices.Sorted(maps.Keys(mo)) {
			items = append(items, fmt.Sprintf("`%s` (%d)", id, mo[id]))
		}
		fmt.Fprintf(&b, "%s.\n", strings.Join(items, ", "))
	}

	fmt.Fprintf(&b, "\n## Sharpening\n\nMean log-likelihood per token of each model's samples under its replicate's base model (2504.13837's measure): higher than the base's own means RL samples what the base already found likely.\n\n| model | log-likelihood under the base |\n|---|---|\n")
	for _, m := range r.modelOrder() {
		if ll := all.Models[m].BaseLogLik; ll != nil {
			fmt.Fprintf(&b, "| %s | %s |\n", m, iv(*ll))
		}
	}

	fmt.Fprintf(&b, "\n## Algorithms at one budget\n\n| algorithm | pass@1 | pass@%d | ΔSE = pass@%d(base) − pass@1 |\n|---|---|---|---|\n", r.N, r.N)
	for _, a := range c.Algos {
		fmt.Fprintf(&b, "| %s | %s | %s | %s |\n", a, iv(all.Models[a].PassAtK[1]), iv(all.Models[a].PassAtK[r.N]), iv(all.DeltaSE[a]))
	}
	fmt.Fprintf(&b, "\nSpread of ΔSE (largest − smallest): %s.\n", iv(all.Spread))

	fmt.Fprintf(&b, "\n## Reading\n\n")
	for _, line := range r.reading() {
		fmt.Fprintf(&b, "- %s\n", line)
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func binList(r *Result) string {
	var parts []string
	for _, bn := range r.Bins {
		parts = append(parts, fmt.Sprintf("%s: %d", bn, r.Views[bn].Problems))
	}
	return strings.Join(parts, ", ")
}

// modelOrder is base first, then the RL models, the KL arms, the student
// and the teacher.
func (r *Result) modelOrder() []string {
	c := r.Config
	out := []string{"base"}
	out = append(out, c.Algos...)
	for _, k := range c.KL {
		out = append(out, klName(k))
	}
	out = append(out, "student", "teacher")
	return slices.DeleteFunc(out, func(m string) bool { _, ok := r.Views["all"].Models[m]; return !ok })
}

// viewOrder is all problems first, then the bins.
func (r *Result) viewOrder() []string { return append([]string{"all"}, r.Bins...) }

func crossoverText(c *Comparison) string {
	lo, hi := fmt.Sprint(c.CrossoverLo), fmt.Sprint(c.CrossoverHi)
	if c.CrossoverLo == 0 {
		lo = "none"
	}
	if c.CrossoverHi == 0 {
		hi = "none"
	}
	k := "none"
	if c.Crossover > 0 {
		k = fmt.Sprint(c.Crossover)
	}
	return fmt.Sprintf("%s [%s, %s]; none in %.0f%% of draws", k, lo, hi, 100*c.NoCrossover)
}

// reading is a few plain sentences from the numbers, each claiming no more
// than its interval shows.
func (r *Result) reading() []string {
	c := r.Config
	all := r.Views["all"]
	main := all.VsBase[c.Main]
	var out []string
	out = append(out, fmt.Sprintf("%s changes pass@1 by %s and pass@%d by %s against the base model.",
		c.Main, signed(main.PassDiff[1]), r.N, signed(main.PassDiff[r.N])))
	if main.Crossover > 0 {
		out = append(out, fmt.Sprintf("From k = %d on the base model is ahead (crossover interval %s).", main.Crossover, crossoverText(main)))
	} else {
		out = append(out, fmt.Sprintf("The base model does not pass %s at any k measured (crossover: %s).", c.Main, crossoverText(main)))
	}
	out = append(out, fmt.Sprintf("At n = %d, %s of the problems are solved by %s only and %s by the base only.",
		r.N, iv(main.Overlap.ModelOnly), c.Main, iv(main.Overlap.BaseOnly)))
	for _, f := range r.Findings {
		out = append(out, fmt.Sprintf("Finding %d (%s): %s.", f.ID, f.Claim, f.Verdict))
	}
	return out
}
