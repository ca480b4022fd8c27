package study

import (
	"fmt"
	"maps"
	"slices"

	"github.com/moerl/moerl/rl/eval"
)

// The five findings of SPEC-RL.md, each decided by its intervals over all
// problems:
//
//  1. RL raises pass@1 and maj@n over the base model (DeepSeek-Math
//     §5.2.2): both differences > 0.
//  2. At large k the base model catches up with and passes the RL model
//     (2504.13837): pass@n(RL) − pass@n(base) < 0. The crossover k and the
//     solved-set overlap are reported beside it.
//  3. Distillation from a stronger teacher raises pass@k at every k: the
//     student − base difference > 0 at every k (contradicted if < 0 at
//     some k).
//  4. The algorithms differ little in ΔSE: the spread (largest − smallest
//     ΔSE) within ±δ; and DAPO has a higher pass@1 and a lower pass@n than
//     GRPO (each > 0 and < 0), when both are in the study.
//  5. KL 0.001 keeps pass@1 but lowers pass@128 against KL 0: the pass@1
//     difference within ±δ, the pass@min(128, n) difference < 0.
func findings(c Config, v *ViewResult, view *view, n int) []Finding {
	delta := c.Stats.Equivalence
	main := v.VsBase[c.Main]
	// pair is model a − model b at pass@k, paired by replicate and
	// problem, kept in the view's table of pairwise differences.
	pair := func(a, b string, k int) eval.Interval {
		iv := view.diff(a, passAt(k), b, passAt(k))
		if v.Pairs == nil {
			v.Pairs = map[string]eval.Interval{}
		}
		v.Pairs[fmt.Sprintf("pass@%d %s − %s", k, a, b)] = iv
		return iv
	}
	var out []Finding

	f1 := Finding{ID: 1, Claim: fmt.Sprintf("RL (%s) raises pass@1 and maj@%d over the base model", c.Main, n),
		Tests: []Test{
			decide(fmt.Sprintf("pass@1(%s) − pass@1(base)", c.Main), main.PassDiff[1], +1),
			decide(fmt.Sprintf("maj@%d(%s) − maj@%d(base)", n, c.Main, n), main.MajDiff[n], +1),
		}}
	out = append(out, f1)

	f2 := Finding{ID: 2, Claim: fmt.Sprintf("at large k the base model passes the RL model (%s): pass@%d(RL) < pass@%d(base)", c.Main, n, n),
		Tests: []Test{decide(fmt.Sprintf("pass@%d(%s) − pass@%d(base)", n, c.Main, n), main.PassDiff[n], -1)}}
	out = append(out, f2)

	f3 := Finding{ID: 3, Claim: "distillation from a stronger teacher raises pass@k at every k"}
	if st, ok := v.VsBase["student"]; ok {
		for _, k := range slices.Sorted(maps.Keys(st.PassDiff)) {
			f3.Tests = append(f3.Tests, decide(fmt.Sprintf("pass@%d(student) − pass@%d(base)", k, k), st.PassDiff[k], +1))
		}
	}
	out = append(out, f3)

	f4 := Finding{ID: 4, Claim: fmt.Sprintf("the algorithms differ little in ΔSE (spread within ±%g); DAPO has a higher pass@1 and a lower pass@%d than GRPO", delta, n),
		Tests: []Test{equivalent("max − min of ΔSE over the algorithms", v.Spread, delta)}}
	if slices.Contains(c.Algos, "dapo") && slices.Contains(c.Algos, "grpo") {
		f4.Tests = append(f4.Tests,
			decide("pass@1(dapo) − pass@1(grpo)", pair("dapo", "grpo", 1), +1),
			decide(fmt.Sprintf("pass@%d(dapo) − pass@%d(grpo)", n, n), pair("dapo", "grpo", n), -1))
	}
	out = append(out, f4)

	k128 := min(128, n)
	hi, lo := klName(c.KL[0]), klName(c.KL[1])
	f5 := Finding{ID: 5, Claim: fmt.Sprintf("KL %g keeps pass@1 but lowers pass@%d against KL %g", c.KL[0], k128, c.KL[1])}
	f5.Tests = []Test{
		equivalent(fmt.Sprintf("pass@1(%s) − pass@1(%s)", hi, lo), pair(hi, lo, 1), delta),
		decide(fmt.Sprintf("pass@%d(%s) − pass@%d(%s)", k128, hi, k128, lo), pair(hi, lo, k128), -1),
	}
	out = append(out, f5)
	for i := range out {
		if len(out[i].Tests) == 0 {
			out[i].Verdict = eval.Inconclusive
			continue
		}
		out[i].Verdict = combine(out[i].Tests)
	}
	return out
}
