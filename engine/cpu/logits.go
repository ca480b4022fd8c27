package cpu

import "github.com/moerl/moerl/engine"

// TokenLogProbs computes lse = log Σ exp(logits) (the sum in float64) and
// logp = logits[target] − lse per row.
func (*Backend) TokenLogProbs(logp, lse, logits, targets *engine.Tensor, rows, vocab int) {
	const op = "TokenLogProbs"
	lps, lses := f32(op, "logp", logp, rows), f32(op, "lse", lse, rows)
	xs, ts := f32(op, "logits", logits, rows*vocab), targetsOf(op, targets, rows, vocab)
	parallelFor(rows, grain(24*vocab), func(lo, hi int) {
		for r := lo; r < hi; r++ {
			lps[r], lses[r] = logProbRow(xs[r*vocab:(r+1)*vocab], ts[r])
		}
	})
}

// TokenLogProbsBackward accumulates dlogits += dlogp·(onehot(target) − p)
// with p = exp(logits − lse).
func (*Backend) TokenLogProbsBackward(dlogits, dlogp, logits, lse, targets *engine.Tensor, rows, vocab int) {
	const op = "TokenLogProbsBackward"
	dxs, xs := f32(op, "dlogits", dlogits, rows*vocab), f32(op, "logits", logits, rows*vocab)
	dlps, lses := f32(op, "dlogp", dlogp, rows), f32(op, "lse", lse, rows)
	ts := targetsOf(op, targets, rows, vocab)
	parallelFor(rows, grain(24*vocab), func(lo, hi int) {
		s := getScratch(vocab, 0, 0)
		defer putScratch(s)
		for r := lo; r < hi; r++ {
			logProbGradRow(dxs[r*vocab:(r+1)*vocab], s.f, xs[r*vocab:(r+1)*vocab], dlps[r], lses[r], ts[r])
		}
	})
}

// TokenLogProbsFused runs the two rows above on each row in turn, the
// gradient into a cleared row, so its bits are those of TokenLogProbs
// followed by TokenLogProbsBackward into zeroed dlogits; the row is still
// in cache for the second pass.
func (*Backend) TokenLogProbsFused(logp, lse, dlogits, logits, targets, dlogp *engine.Tensor, rows, vocab int) {
	const op = "TokenLogProbsFused"
	lps, lses := f32(op, "logp", logp, rows), f32(op, "lse", lse, rows)
	dxs, xs := f32(op, "dlogits", dlogits, rows*vocab), f32(op, "logits", logits, rows*vocab)
	ts, dlps := targetsOf(op, targets, rows, vocab), f32(op, "dlogp", dlogp, rows)
	parallelFor(rows, grain(48*vocab), func(lo, hi int) {
		s := getScratch(vocab, 0, 0)
		defer putScratch(s)
		for r := lo; r < hi; r++ {
			x, dx := xs[r*vocab:(r+1)*vocab], dxs[r*vocab:(r+1)*vocab]
			lps[r], lses[r] = logProbRow(x, ts[r])
			clear(dx)
			logProbGradRow(dx, s.f, x, dlps[r], lses[r], ts[r])
		}
	})
}

// targetsOf returns the rows targets, panicking at one outside [0, vocab).
func targetsOf(op string, targets *engine.Tensor, rows, vocab int) []int32 {
	ts := i32(op, "targets", targets, rows)
	for _, t := range ts {
		checkIndex(op, "target", t, vocab)
	}
	return ts
}

// logProbRow is one row of TokenLogProbs: logp and lse.
func logProbRow(x []float32, t int32) (logp, lse float32) {
	l := logSumExp(x)
	return x[t] - l, l
}

// logProbGradRow is one row of TokenLogProbsBackward: dx += g·(onehot(t) −
// exp(x − l)), with e scratch of len(x) for the exponentials.
func logProbGradRow(dx, e, x []float32, g, l float32, t int32) {
	dx = dx[:len(x)]
	expSum(e, x, l)
	for i, v := range e[:len(x)] {
		dx[i] -= g * v
	}
	dx[t] += g
}

// Entropy computes Σ p·(lse − logits) with p = exp(logits − lse) per row,
// in float64; every term is non-negative, so nothing cancels.
func (*Backend) Entropy(ent, logits, lse *engine.Tensor, rows, vocab int) {
	const op = "Entropy"
	es, xs, lses := f32(op, "ent", ent, rows), f32(op, "logits", logits, rows*vocab), f32(op, "lse", lse, rows)
	parallelFor(rows, grain(26*vocab), func(lo, hi int) {
		s := getScratch(vocab, 0, 0)
		defer putScratch(s)
		e := s.f
		for r := lo; r < hi; r++ {
			l := lses[r]
			x := xs[r*vocab : (r+1)*vocab]
			expSum(e, x, l)
			var h float64
			for i, v := range x {
				h += float64(e[i]) * float64(l-v)
			}
			es[r] = float32(h)
		}
	})
}

// SoftmaxBackward accumulates dlogits += probs⊙(dprobs − Σ probs⊙dprobs)
// per row of n, the sum in float64.
func (*Backend) SoftmaxBackward(dlogits, dprobs, probs *engine.Tensor, rows, n int) {
	const op = "SoftmaxBackward"
	dls, dps, ps := f32(op, "dlogits", dlogits, rows*n), f32(op, "dprobs", dprobs, rows*n), f32(op, "probs", probs, rows*n)
	parallelFor(rows, grain(5*n), func(lo, hi int) {
		for r := lo; r < hi; r++ {
			p, dp, dl := ps[r*n:(r+1)*n], dps[r*n:(r+1)*n], dls[r*n:(r+1)*n]
			dp, dl = dp[:len(p)], dl[:len(p)]
			var s float64
			for i, v := range p {
				s += float64(v) * float64(dp[i])
			}
			for i, v := range p {
				dl[i] += float32(float64(v) * (float64(dp[i]) - s))
			}
		}
	})
}
