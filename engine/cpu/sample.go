package cpu

import (
	"cmp"
	"fmt"
	"math"
	"slices"

	"github.com/moerl/moerl/engine"
)

// Sample draws one token per row. Temperature 0 takes the argmax (lowest id
// on ties) and reports its log-probability under softmax(logits). Otherwise,
// with z = logits/temperature and tokens ranked by z (ties: lower id first):
// keep the topK best (0: all), then the shortest prefix of those whose
// probability, renormalised over the topK, reaches topP (topP ≥ 1: all);
// then walk the kept tokens in id order, accumulating their probabilities,
// and take the first whose cumulative sum exceeds u[r] times the kept total.
// logp is log softmax(z) of the token, untruncated.
func (*Backend) Sample(tokens, logp, logits, u *engine.Tensor, rows, vocab int, temperature float32, topK int, topP float32) {
	const op = "Sample"
	if !(temperature >= 0) || math.IsInf(float64(temperature), 1) {
		panic(fmt.Sprintf("cpu: %s: temperature %v", op, temperature))
	}
	ts, lps := i32(op, "tokens", tokens, rows), f32(op, "logp", logp, rows)
	xs, us := f32(op, "logits", logits, rows*vocab), f32(op, "u", u, rows)
	if vocab < 1 {
		if rows > 0 {
			panic(fmt.Sprintf("cpu: %s: vocabulary of %d", op, vocab))
		}
		return
	}
	truncate := (topK > 0 && topK < vocab) || topP < 1
	parallelFor(rows, grain(40*vocab), func(lo, hi int) {
		s := getScratch(vocab, vocab, vocab)
		defer putScratch(s)
		z, e, idx := s.f, s.f64, s.i
		for r := lo; r < hi; r++ {
			x := xs[r*vocab : (r+1)*vocab]
			if temperature == 0 {
				t := argmax(x)
				ts[r], lps[r] = int32(t), x[t]-logSumExp(x)
				continue
			}
			for i, v := range x {
				z[i] = v / temperature
			}
			m := maxOf(z)
			for i, v := range z {
				e[i] = float64(exp32(v - m))
			}
			if truncate {
				keepTop(e, z, idx, topK, topP)
			}
			var total float64
			for _, v := range e {
				total += v
			}
			target := float64(us[r]) * total
			tok, last := -1, 0
			var cum float64
			for i, v := range e {
				if v > 0 {
					last = i
					cum += v
					if cum > target {
						tok = i
						break
					}
				}
			}
			if tok < 0 { // rounding left the cumulative sum short of target
				tok = last
			}
			ts[r], lps[r] = int32(tok), z[tok]-logSumExp(z)
		}
	})
}

// keepTop zeroes the weights e of every token outside the top-k / top-p set,
// ranking by z (higher first, lower id on ties). idx is scratch.
func keepTop(e []float64, z []float32, idx []int32, topK int, topP float32) {
	for i := range idx {
		idx[i] = int32(i)
	}
	slices.SortFunc(idx, func(a, b int32) int {
		if z[a] != z[b] {
			if z[a] > z[b] {
				return -1
			}
			return 1
		}
		return cmp.Compare(a, b)
	})
	keep := len(idx)
	if topK > 0 && topK < keep {
		keep = topK
	}
	if topP < 1 {
		var sum float64
		for _, i := range idx[:keep] {
			sum += e[i]
		}
		target := float64(topP) * sum
		var cum float64
		for j, i := range idx[:keep] {
			cum += e[i]
			if cum >= target {
				keep = j + 1
				break
			}
		}
	}
	for _, i := range idx[keep:] {
		e[i] = 0
	}
}
