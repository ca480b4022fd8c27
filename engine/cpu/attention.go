package cpu

import (
	"math"

	"github.com/moerl/moerl/engine"
	"github.com/moerl/moerl/engine/cpu/gemm"
)

// Attention runs per (sequence, head), in blocks of attnBlock queries: the
// block's scores against every key it may see come from one Sgemm, the
// softmax runs row by row, and Sgemm weighs the values. Sgemm's
// register-tiled kernels do the products an order of magnitude faster than
// a Go loop of dot products, which is worth the block of scores (at most
// attnBlock×seq floats per goroutine) and the masked upper triangle of each
// block that it also computes.
const attnBlock = 64

// attnKeyBlock is how many keys one Sgemm sums into an output at a time in
// the product with V; longer rows add one such partial sum after another.
// Sgemm's own k blocking depends on k, so without a fixed block the sum of
// query i would be grouped by where its block of queries ends, which
// depends on the sequence length; with it, query i's output is the same
// bits whether it is computed in a forward of any length or by
// AttentionDecode, which is what makes sampling exactly on-policy. 256 is
// every gemm path's kc block, so up to 256 keys are one pass as before.
const attnKeyBlock = 256

// Attention is causal softmax attention with scale 1/sqrt(headDim); lse
// receives each query's log-sum-exp of scores for the backward. Query i's
// output depends only on q_i and keys and values 0..i: not on the sequence
// length, the batch or GOMAXPROCS, and AttentionDecode gives the same bits.
func (*Backend) Attention(out, lse, q, k, v *engine.Tensor, batch, seq, heads, headDim int) {
	const op = "Attention"
	n := batch * seq * heads * headDim
	os, ls := f32(op, "out", out, n), f32(op, "lse", lse, batch*heads*seq)
	qs, ks, vs := f32(op, "q", q, n), f32(op, "k", k, n), f32(op, "v", v, n)
	scale := float32(1 / math.Sqrt(float64(headDim)))
	stride := heads * headDim
	bq := min(attnBlock, seq)
	parallelFor(batch*heads, grain(2*headDim*seq*seq), func(lo, hi int) {
		s := getScratch(bq*seq, 0, 0)
		defer putScratch(s)
		for bh := lo; bh < hi; bh++ {
			b, h := bh/heads, bh%heads
			base := b*seq*stride + h*headDim
			for i0 := 0; i0 < seq; i0 += bq {
				i1 := min(i0+bq, seq)
				rows, keys := i1-i0, i1
				sc := s.f[:rows*keys]
				attnScores(sc, qs[base+i0*stride:], ks[base:], rows, keys, headDim, stride, scale)
				for r := range rows {
					row := sc[r*keys : (r+1)*keys]
					i := i0 + r
					ls[bh*seq+i] = softmaxInPlace(row[:i+1])
					clear(row[i+1:])
				}
				attnValues(os[base+i0*stride:], sc, vs[base:], rows, keys, headDim, stride)
			}
		}
	})
}

// attnScores computes the rows×keys scores scale·q_r·k_j of consecutive
// queries q (row stride stride) against keys k.
func attnScores(sc, q, k []float32, rows, keys, headDim, stride int, scale float32) {
	gemm.Sgemm(false, true, rows, keys, headDim, scale, q, stride, k, stride, 0, sc, keys)
}

// attnValues computes out_r = Σ_j p[r][j]·v_j over keys values (row stride
// stride) in blocks of attnKeyBlock keys, each block's sum added to the
// sum of the blocks before it.
func attnValues(out, p, v []float32, rows, keys, headDim, stride int) {
	for j0 := 0; j0 < keys; j0 += attnKeyBlock {
		n := min(attnKeyBlock, keys-j0)
		beta := float32(1)
		if j0 == 0 {
			beta = 0
		}
		gemm.Sgemm(false, false, rows, headDim, n, 1, p[j0:], keys, v[j0*stride:], stride, beta, out, stride)
	}
}

// softmaxInPlace replaces a non-empty x by softmax(x), the sum in float64,
// and returns log Σ exp(x).
func softmaxInPlace(x []float32) float32 {
	m := maxOfVec(x)
	l := expSum(x, x, m)
	scaleVec(x, float32(1/l))
	return m + float32(math.Log(l))
}

// AttentionBackward accumulates dq, dk and dv. Per (sequence, head) and
// block of queries it recomputes the probabilities p = exp(s − lse) and,
// with D = dout·out and ds = p·(dout·v − D)·scale,
//
//	dq += ds·K,  dk += dsᵀ·Q,  dv += pᵀ·dout,
//
// the sums as Sgemm products. One goroutine owns a (sequence, head), so dk
// and dv add the query blocks in order.
func (*Backend) AttentionBackward(dq, dk, dv, dout, q, k, v, out, lse *engine.Tensor, batch, seq, heads, headDim int) {
	const op = "AttentionBackward"
	n := batch * seq * heads * headDim
	dqs, dks, dvs := f32(op, "dq", dq, n), f32(op, "dk", dk, n), f32(op, "dv", dv, n)
	dos, os := f32(op, "dout", dout, n), f32(op, "out", out, n)
	qs, ks, vs := f32(op, "q", q, n), f32(op, "k", k, n), f32(op, "v", v, n)
	ls := f32(op, "lse", lse, batch*heads*seq)
	scale := float32(1 / math.Sqrt(float64(headDim)))
	stride := heads * headDim
	bq := min(attnBlock, seq)
	parallelFor(batch*heads, grain(5*headDim*seq*seq), func(lo, hi int) {
		s := getScratch(2*bq*seq, 0, 0)
		defer putScratch(s)
		for bh := lo; bh < hi; bh++ {
			b, h := bh/heads, bh%heads
			base := b*seq*stride + h*headDim
			for i0 := 0; i0 < seq; i0 += bq {
				i1 := min(i0+bq, seq)
				rows, keys := i1-i0, i1
				p, ds := s.f[:rows*keys], s.f[rows*keys:2*rows*keys]
				qb, dob := qs[base+i0*stride:], dos[base+i0*stride:]
				gemm.Sgemm(false, true, rows, keys, headDim, scale, qb, stride, ks[base:], stride, 0, p, keys)
				gemm.Sgemm(false, true, rows, keys, headDim, 1, dob, stride, vs[base:], stride, 0, ds, keys)
				for r := range rows {
					i := i0 + r
					at := base + i*stride
					d := dot(dos[at:at+headDim], os[at:at+headDim])
					l := ls[bh*seq+i]
					pr, dr := p[r*keys:(r+1)*keys], ds[r*keys:(r+1)*keys]
					pr, dr = pr[:i+1], dr[:i+1]
					expSum(pr, pr, l)
					for j, e := range pr {
						dr[j] = e * (dr[j] - d) * scale
					}
					clear(p[r*keys+i+1 : (r+1)*keys])
					clear(ds[r*keys+i+1 : (r+1)*keys])
				}
				gemm.Sgemm(false, false, rows, headDim, keys, 1, ds, keys, ks[base:], stride, 1, dqs[base+i0*stride:], stride)
				gemm.Sgemm(true, false, keys, headDim, rows, 1, ds, keys, qb, stride, 1, dks[base:], stride)
				gemm.Sgemm(true, false, keys, headDim, rows, 1, p, keys, dob, stride, 1, dvs[base:], stride)
			}
		}
	})
}

// AttentionDecode attends each sequence's new query to its first lens[b]
// cached keys and values; a sequence of length 0 gets a zero output.
//
// It computes what Attention computes for the last query of a sequence of
// lens[b] tokens, in the same order, so its output is bitwise Attention's:
// the log-probs recorded while sampling equal the ones a training forward
// recomputes, exactly. Every score is the same Sgemm element (a sum over
// the head in one order, whichever operand is A and which B, since each
// product is commutative), the softmax is the same function of the same row,
// and the values are weighed by the same Sgemm products in the same blocks
// of keys. Each goroutine takes whole sequences.
func (*Backend) AttentionDecode(out, q, kc, vc, lens *engine.Tensor, batch, maxSeq, heads, headDim int) {
	const op = "AttentionDecode"
	n := batch * heads * headDim
	os, qs := f32(op, "out", out, n), f32(op, "q", q, n)
	cn := batch * maxSeq * heads * headDim
	ks, vs := f32(op, "kc", kc, cn), f32(op, "vc", vc, cn)
	ln := i32(op, "lens", lens, batch)
	for _, l := range ln {
		checkIndex(op, "length", l, maxSeq+1)
	}
	scale := float32(1 / math.Sqrt(float64(headDim)))
	width := heads * headDim
	parallelFor(batch, grain(2*width*maxSeq), func(lo, hi int) {
		s := getScratch(attnKeyBlock*heads*heads+heads*maxSeq, 0, 0)
		defer putScratch(s)
		all, scores := s.f[:attnKeyBlock*heads*heads], s.f[attnKeyBlock*heads*heads:]
		for b := lo; b < hi; b++ {
			keys := int(ln[b])
			ob := os[b*width : (b+1)*width]
			if keys == 0 {
				clear(ob)
				continue
			}
			cache := b * maxSeq * width
			k, v := ks[cache:cache+keys*width], vs[cache:cache+keys*width]
			// Every head's scores from one product per block of keys: the
			// cache's rows, keys×heads of headDim, read in place, against
			// the heads queries. Row j·heads+h, column h is head h's score
			// for key j; the other columns are waste (heads times the
			// products), which costs less than a product per head that
			// packs its strided keys.
			for j0 := 0; j0 < keys; j0 += attnKeyBlock {
				nj := min(attnKeyBlock, keys-j0)
				gemm.Sgemm(false, true, nj*heads, heads, headDim, scale, k[j0*width:], headDim,
					qs[b*width:(b+1)*width], headDim, 0, all, heads)
				for h := range heads {
					row := scores[h*keys+j0 : h*keys+j0+nj]
					for j := range row {
						row[j] = all[(j*heads+h)*heads+h]
					}
				}
			}
			for h := range heads {
				sc := scores[h*keys : (h+1)*keys]
				softmaxInPlace(sc)
				attnValues(ob[h*headDim:(h+1)*headDim], sc, v[h*headDim:], 1, keys, headDim, width)
			}
		}
	})
}
