package cpu

import "github.com/moerl/moerl/engine"

// EntropyBackward accumulates dlogits += dent·(−p⊙(log p + H)) per row,
// with log p = logits − lse and H = ent from Entropy: the chain of
// H = −Σ p log p through the softmax, ∂H/∂x_i = −p_i·(log p_i + H)
// (the Σ p_j·∂log p_j/∂x_i term vanishes since Σ ∂p_j/∂x_i = 0). Each term
// is computed in float64 from the float32 inputs.
func (*Backend) EntropyBackward(dlogits, dent, logits, lse, ent *engine.Tensor, rows, vocab int) {
	const op = "EntropyBackward"
	dxs, xs := f32(op, "dlogits", dlogits, rows*vocab), f32(op, "logits", logits, rows*vocab)
	dents, lses, es := f32(op, "dent", dent, rows), f32(op, "lse", lse, rows), f32(op, "ent", ent, rows)
	parallelFor(rows, grain(26*vocab), func(lo, hi int) {
		s := getScratch(vocab, 0, 0)
		defer putScratch(s)
		p := s.f
		for r := lo; r < hi; r++ {
			g := float64(dents[r])
			if g == 0 {
				continue
			}
			x, dx := xs[r*vocab:(r+1)*vocab], dxs[r*vocab:(r+1)*vocab]
			dx = dx[:len(x)]
			l, h := lses[r], float64(es[r])
			expSum(p, x, l)
			for i, v := range x {
				dx[i] += float32(-g * float64(p[i]) * (float64(v-l) + h))
			}
		}
	})
}
