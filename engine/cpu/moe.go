package cpu

import (
	"fmt"

	"github.com/moerl/moerl/engine"
)

// swigluGrain is the elements per chunk of the SwiGLU loops. Each element
// is independent, so any chunking gives the same result; on the vector
// paths a chunk this size takes a few microseconds, which hides the
// hand-off between goroutines (4096 was 15% slower), and a million
// elements still make 64 chunks to balance.
const swigluGrain = 16384

// SwiGLU computes out = silu(gate)·up with silu(g) = g·σ(g).
func (*Backend) SwiGLU(out, gate, up *engine.Tensor, n int) {
	os, gs, us := f32("SwiGLU", "out", out, n), f32("SwiGLU", "gate", gate, n), f32("SwiGLU", "up", up, n)
	parallelFor(n, swigluGrain, func(lo, hi int) {
		swiglu(os[lo:hi], gs[lo:hi], us[lo:hi])
	})
}

// SwiGLUBackward accumulates dgate += dout·up·σ(g)·(1 + g·(1 − σ(g))) and
// dup += dout·g·σ(g).
func (*Backend) SwiGLUBackward(dgate, dup, dout, gate, up *engine.Tensor, n int) {
	const op = "SwiGLUBackward"
	dgs, dus, dos := f32(op, "dgate", dgate, n), f32(op, "dup", dup, n), f32(op, "dout", dout, n)
	gs, us := f32(op, "gate", gate, n), f32(op, "up", up, n)
	parallelFor(n, swigluGrain, func(lo, hi int) {
		swigluBackward(dgs[lo:hi], dus[lo:hi], dos[lo:hi], gs[lo:hi], us[lo:hi])
	})
}

// RouterTopK saves softmax(logits) in probs (the sum in float64), picks the
// k most probable experts per row in decreasing order (ties: lower index)
// and writes their probabilities renormalised to sum 1.
func (*Backend) RouterTopK(weights, experts, probs, logits *engine.Tensor, rows, nExperts, k int) {
	const op = "RouterTopK"
	checkTopK(op, nExperts, k)
	ws, es := f32(op, "weights", weights, rows*k), i32(op, "experts", experts, rows*k)
	ps, ls := f32(op, "probs", probs, rows*nExperts), f32(op, "logits", logits, rows*nExperts)
	parallelFor(rows, grain(nExperts*(24+k)), func(lo, hi int) {
		for r := lo; r < hi; r++ {
			x, p := ls[r*nExperts:(r+1)*nExperts], ps[r*nExperts:(r+1)*nExperts]
			p = p[:len(x)]
			m := maxOf(x)
			var sum float64
			for i, v := range x {
				e := exp32(v - m)
				p[i] = e
				sum += float64(e)
			}
			inv := 1 / sum
			for i, e := range p {
				p[i] = float32(float64(e) * inv)
			}
			w, ex := ws[r*k:(r+1)*k], es[r*k:(r+1)*k]
			var sel float64
			for j := range w {
				best := -1
				for i, v := range p {
					if (best < 0 || v > p[best]) && !chosen(ex[:j], i) {
						best = i
					}
				}
				ex[j] = int32(best)
				w[j] = p[best]
				sel += float64(p[best])
			}
			for j, v := range w {
				w[j] = float32(float64(v) / sel)
			}
		}
	})
}

func chosen(ex []int32, i int) bool {
	for _, e := range ex {
		if int(e) == i {
			return true
		}
	}
	return false
}

func checkTopK(op string, nExperts, k int) {
	if k < 1 || k > nExperts {
		panic(fmt.Sprintf("cpu: %s: top-%d of %d experts", op, k, nExperts))
	}
}

// RouterTopKBackward accumulates dlogits. With S the selected experts'
// probability sum and w_j = p_{e_j}/S, the gradient of the selected
// probabilities is (dw_j − Σ_l dw_l·w_l)/S; the softmax then gives
// dlogit_i = p_i·(dp_i − Σ_m p_m·dp_m).
func (*Backend) RouterTopKBackward(dlogits, dweights, weights, experts, probs *engine.Tensor, rows, nExperts, k int) {
	const op = "RouterTopKBackward"
	checkTopK(op, nExperts, k)
	dls, ps := f32(op, "dlogits", dlogits, rows*nExperts), f32(op, "probs", probs, rows*nExperts)
	dws, ws := f32(op, "dweights", dweights, rows*k), f32(op, "weights", weights, rows*k)
	es := i32(op, "experts", experts, rows*k)
	for _, e := range es {
		checkIndex(op, "expert", e, nExperts)
	}
	parallelFor(rows, grain(nExperts*4+k*8), func(lo, hi int) {
		s := getScratch(0, k, 0)
		defer putScratch(s)
		dp := s.f64
		for r := lo; r < hi; r++ {
			p, dl := ps[r*nExperts:(r+1)*nExperts], dls[r*nExperts:(r+1)*nExperts]
			dl = dl[:len(p)]
			dw, w, ex := dws[r*k:(r+1)*k], ws[r*k:(r+1)*k], es[r*k:(r+1)*k]
			dw, w = dw[:len(ex)], w[:len(ex)]
			var sel, a float64
			for j, e := range ex {
				sel += float64(p[e])
				a += float64(dw[j]) * float64(w[j])
			}
			var b float64
			for j, e := range ex {
				dp[j] = (float64(dw[j]) - a) / sel
				b += float64(p[e]) * dp[j]
			}
			for i, v := range p {
				g := -b
				for j, e := range ex {
					if int(e) == i {
						g += dp[j]
					}
				}
				dl[i] += float32(float64(v) * g)
			}
		}
	})
}

// RouterReplay overwrites, in each row with replay[r·k] ≥ 0, the experts
// with the replayed ones and the weights with their probabilities divided
// by their sum, summed in float64 in replay order as RouterTopK sums its
// choice. A replayed id out of range or repeated within its row is a
// programming error: the trainer replays what a forward chose.
func (*Backend) RouterReplay(weights, experts, probs, replay *engine.Tensor, rows, nExperts, k int) {
	const op = "RouterReplay"
	checkTopK(op, nExperts, k)
	ws, es := f32(op, "weights", weights, rows*k), i32(op, "experts", experts, rows*k)
	ps, rs := f32(op, "probs", probs, rows*nExperts), i32(op, "replay", replay, rows*k)
	for r := range rows {
		row := rs[r*k : (r+1)*k]
		if row[0] < 0 {
			continue
		}
		for j, e := range row {
			checkIndex(op, "replayed expert", e, nExperts)
			if chosen(row[:j], int(e)) {
				panic(fmt.Sprintf("cpu: %s: row %d replays expert %d twice", op, r, e))
			}
		}
	}
	parallelFor(rows, grain(4*k), func(lo, hi int) {
		for r := lo; r < hi; r++ {
			row := rs[r*k : (r+1)*k]
			if row[0] < 0 {
				continue
			}
			p, w, ex := ps[r*nExperts:(r+1)*nExperts], ws[r*k:(r+1)*k], es[r*k:(r+1)*k]
			var sel float64
			for _, e := range row {
				sel += float64(p[e])
			}
			for j, e := range row {
				ex[j] = e
				w[j] = float32(float64(p[e]) / sel)
			}
		}
	})
}

// RouterDispatch counting-sorts the rows·k (token, slot) assignments by
// expert, stably, on the calling goroutine (it is a few thousand integers).
func (*Backend) RouterDispatch(perm, inv, offsets, experts *engine.Tensor, rows, nExperts, k int) {
	const op = "RouterDispatch"
	n := rows * k
	ps, is, es := i32(op, "perm", perm, n), i32(op, "inv", inv, n), i32(op, "experts", experts, n)
	off := i32(op, "offsets", offsets, nExperts+1)
	clear(off)
	for _, e := range es {
		checkIndex(op, "expert", e, nExperts)
		off[e+1]++
	}
	for e := range nExperts {
		off[e+1] += off[e]
	}
	s := getScratch(0, 0, nExperts)
	defer putScratch(s)
	next := s.i
	copy(next, off[:nExperts])
	for a, e := range es {
		slot := next[e]
		next[e]++
		ps[slot] = int32(a / k)
		is[a] = slot
	}
}

// RouterLoad writes each expert's slot count and the column sums of probs.
func (*Backend) RouterLoad(load, probs, offsets *engine.Tensor, rows, nExperts int) {
	const op = "RouterLoad"
	if rows < 0 || nExperts < 1 {
		panic(fmt.Sprintf("cpu: %s: rows %d must not be negative and nExperts %d must be positive", op, rows, nExperts))
	}
	ls, ps := f32(op, "load", load, 2*nExperts), f32(op, "probs", probs, rows*nExperts)
	off := groupOffsets(op, offsets, nExperts, -1)
	for e := range nExperts {
		ls[e] = float32(off[e+1] - off[e])
		var sum float64
		for r := range rows {
			sum += float64(ps[r*nExperts+e])
		}
		ls[nExperts+e] = float32(sum)
	}
}

// groupOffsets returns the groups+1 offsets of a grouped op, checked to
// rise from 0 (to rows, unless rows is negative).
func groupOffsets(op string, offsets *engine.Tensor, groups, rows int) []int32 {
	off := i32(op, "offsets", offsets, groups+1)
	if off[0] != 0 || (rows >= 0 && int(off[groups]) != rows) {
		panic(fmt.Sprintf("cpu: %s: offsets run from %d to %d, want 0 to %d", op, off[0], off[groups], rows))
	}
	for g := range groups {
		if off[g+1] < off[g] {
			panic(fmt.Sprintf("cpu: %s: offsets fall from %d to %d at group %d", op, off[g], off[g+1], g))
		}
	}
	return off
}

// Gather copies out[s] = x[perm[s]] for n rows of dim floats.
func (*Backend) Gather(out, x, perm *engine.Tensor, n, dim int) {
	os, ps := f32("Gather", "out", out, n*dim), i32("Gather", "perm", perm, n)
	xs := x.F
	xrows := len(xs) / max(dim, 1)
	for _, p := range ps {
		checkIndex("Gather", "perm entry", p, xrows)
	}
	parallelFor(n, grain(dim), func(lo, hi int) {
		for s := lo; s < hi; s++ {
			t := int(ps[s])
			copy(os[s*dim:(s+1)*dim], xs[t*dim:(t+1)*dim])
		}
	})
}

// GatherBackward accumulates dx[t] += Σ_j dout[inv[t·k+j]], j in order.
func (*Backend) GatherBackward(dx, dout, inv *engine.Tensor, rows, k, dim int) {
	const op = "GatherBackward"
	dxs, is := f32(op, "dx", dx, rows*dim), i32(op, "inv", inv, rows*k)
	dos := f32(op, "dout", dout, rows*k*dim)
	for _, s := range is {
		checkIndex(op, "inv entry", s, rows*k)
	}
	parallelFor(rows, grain(k*dim), func(lo, hi int) {
		for t := lo; t < hi; t++ {
			d := dxs[t*dim : (t+1)*dim]
			for _, s := range is[t*k : (t+1)*k] {
				addTo(d, dos[int(s)*dim:(int(s)+1)*dim])
			}
		}
	})
}

// Combine accumulates out[t] += Σ_j weights[t·k+j]·y[inv[t·k+j]], j in order.
func (*Backend) Combine(out, y, weights, inv *engine.Tensor, rows, k, dim int) {
	const op = "Combine"
	os, ws, is := f32(op, "out", out, rows*dim), f32(op, "weights", weights, rows*k), i32(op, "inv", inv, rows*k)
	ys := f32(op, "y", y, rows*k*dim)
	for _, s := range is {
		checkIndex(op, "inv entry", s, rows*k)
	}
	parallelFor(rows, grain(2*k*dim), func(lo, hi int) {
		for t := lo; t < hi; t++ {
			o := os[t*dim : (t+1)*dim]
			for j, s := range is[t*k : (t+1)*k] {
				axpy(ws[t*k+j], ys[int(s)*dim:(int(s)+1)*dim], o)
			}
		}
	})
}

// CombineBackward accumulates dy[inv[t·k+j]] += weights[t·k+j]·dout[t] and
// dweights[t·k+j] += dout[t]·y[inv[t·k+j]]. inv must be a permutation (as
// RouterDispatch makes it), so every row of dy has one writer. A bf16 dy
// gets the float sums rounded, as Cast rounds.
func (b *Backend) CombineBackward(dy, dweights, dout, y, weights, inv *engine.Tensor, rows, k, dim int) {
	const op = "CombineBackward"
	defer b.widened(true, &dy)()
	n := rows * k
	dys, ys := f32(op, "dy", dy, n*dim), f32(op, "y", y, n*dim)
	dws, ws, is := f32(op, "dweights", dweights, n), f32(op, "weights", weights, n), i32(op, "inv", inv, n)
	dos := f32(op, "dout", dout, rows*dim)
	for _, s := range is {
		checkIndex(op, "inv entry", s, n)
	}
	parallelFor(rows, grain(4*k*dim), func(lo, hi int) {
		for t := lo; t < hi; t++ {
			d := dos[t*dim : (t+1)*dim]
			for j, s := range is[t*k : (t+1)*k] {
				a := t*k + j
				row := int(s) * dim
				axpy(ws[a], d, dys[row:row+dim])
				dws[a] += dot(d, ys[row:row+dim])
			}
		}
	})
}

// ScatterRows copies dst[idx[r]] = src[r] for rows rows of dim floats. The
// indices must be distinct, so that every row of dst has one writer.
func (*Backend) ScatterRows(dst, src, idx *engine.Tensor, rows, dim int) {
	const op = "ScatterRows"
	ss, is := f32(op, "src", src, rows*dim), i32(op, "idx", idx, rows)
	ds := dst.F
	drows := len(ds) / max(dim, 1)
	for _, i := range is {
		checkIndex(op, "index", i, drows)
	}
	parallelFor(rows, grain(dim), func(lo, hi int) {
		for r := lo; r < hi; r++ {
			d := int(is[r]) * dim
			copy(ds[d:d+dim], ss[r*dim:(r+1)*dim])
		}
	})
}
