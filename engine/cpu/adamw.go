package cpu

import (
	"math"

	"github.com/moerl/moerl/engine"
)

// AdamW updates p in place, with decoupled weight decay applied to the
// parameter as it was before this step, for the first nDecay parameters:
//
//	g = gradScale·g,  m = β₁m + (1−β₁)g,  v = β₂v + (1−β₂)g²,
//	p = p − lr·(wd·p + m̂/(√v̂ + eps)),  m̂ = m/(1−β₁^step),  v̂ = v/(1−β₂^step).
//
// step is 1-based. The scaled gradient is rounded to float32 before it is
// used, so a step with gradScale s equals Scale(g, s) followed by a step
// with gradScale 1, bit for bit.
func (*Backend) AdamW(p, g, m, v *engine.Tensor, n, nDecay int, gradScale, lr, beta1, beta2, eps, weightDecay float32, step int) {
	const op = "AdamW"
	if step < 1 {
		panic("cpu: AdamW: step must be ≥ 1")
	}
	if nDecay < 0 || nDecay > n {
		panic("cpu: AdamW: nDecay must lie in [0, n]")
	}
	ps, gs := f32(op, "p", p, n), f32(op, "g", g, n)
	ms, vs := f32(op, "m", m, n), f32(op, "v", v, n)
	c1 := float32(1 / (1 - math.Pow(float64(beta1), float64(step))))
	c2 := float32(1 / (1 - math.Pow(float64(beta2), float64(step))))
	parallelFor(n, grain(16), func(lo, hi int) {
		pp, gg, mm, vv := ps[lo:hi], gs[lo:hi], ms[lo:hi], vs[lo:hi]
		gg, mm, vv = gg[:len(pp)], mm[:len(pp)], vv[:len(pp)]
		for i, gi := range gg {
			gi = float32(gi * gradScale)
			mi := beta1*mm[i] + (1-beta1)*gi
			vi := beta2*vv[i] + (1-beta2)*gi*gi
			mm[i], vv[i] = mi, vi
			u := mi * c1 / (float32(math.Sqrt(float64(vi*c2))) + eps)
			wd := weightDecay
			if lo+i >= nDecay {
				wd = 0
			}
			pp[i] -= lr * (wd*pp[i] + u)
		}
	})
}
