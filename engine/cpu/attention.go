package cpu

import (
	"math"

	"github.com/moerl/moerl/engine"
	"github.com/moerl/moerl/engine/cpu/gemm"
)

// Attention runs per (sequence, head), in blocks of attnBlock queries: the
// block's scores against every key it may see come from one Sgemm, the
// softmax runs row by row, and a second Sgemm weighs the values. Sgemm's
// register-tiled kernels do the products an order of magnitude faster than
// a Go loop of dot products, which is worth the block of scores (at most
// attnBlock×seq floats per goroutine) and the masked upper triangle of each
// block that it also computes.
const attnBlock = 64

// Attention is causal softmax attention with scale 1/sqrt(headDim); lse
// receives each query's log-sum-exp of scores for the backward.
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
				gemm.Sgemm(false, true, rows, keys, headDim, scale, qs[base+i0*stride:], stride, ks[base:], stride, 0, sc, keys)
				for r := range rows {
					row := sc[r*keys : (r+1)*keys]
					i := i0 + r
					ls[bh*seq+i] = softmaxInPlace(row[:i+1])
					clear(row[i+1:])
				}
				gemm.Sgemm(false, false, rows, headDim, keys, 1, sc, keys, vs[base:], stride, 0, os[base+i0*stride:], stride)
			}
		}
	})
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
// One query is a matrix-vector product, which Sgemm does no faster than Go
// loops; what matters is reading the cache once, in order, so each
// goroutine takes whole sequences and walks their positions with every head
// at once.
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
		s := getScratch(heads*maxSeq, 0, 0)
		defer putScratch(s)
		for b := lo; b < hi; b++ {
			keys := int(ln[b])
			qb, ob := qs[b*width:(b+1)*width], os[b*width:(b+1)*width]
			cache := b * maxSeq * width
			decodeSequence(ob, qb, ks[cache:cache+keys*width], vs[cache:cache+keys*width], s.f[:heads*keys], heads, keys, scale)
		}
	})
}

// decodeSequence attends the heads of one query (q, out: heads×headDim) to
// keys positions of a cache (k, v: keys×heads×headDim); scores is scratch of
// heads×keys. It reads the cache in blocks of four positions.
func decodeSequence(out, q, k, v, scores []float32, heads, keys int, scale float32) {
	width := len(q)
	hd := width / heads
	if keys == 0 {
		clear(out)
		return
	}
	// Scalar loops keep too few cache misses in flight to stream the cache
	// from memory; a pass that only loads one float per cache line pulls
	// this sequence's keys and values into L2 several times faster.
	scores[0] = touch(k) + touch(v) // a use, so the loads stay
	j := 0
	for ; j+4 <= keys; j += 4 {
		rows := k[j*width : (j+4)*width]
		for h := 0; h < heads; h++ {
			c := h * hd
			s0, s1, s2, s3 := dot4(q[c:c+hd], rows[c:c+hd], rows[width+c:width+c+hd], rows[2*width+c:2*width+c+hd], rows[3*width+c:3*width+c+hd])
			sc := scores[h*keys+j : h*keys+j+4]
			sc[0], sc[1], sc[2], sc[3] = s0*scale, s1*scale, s2*scale, s3*scale
		}
	}
	for ; j < keys; j++ {
		row := k[j*width : (j+1)*width]
		for h := 0; h < heads; h++ {
			scores[h*keys+j] = dot(q[h*hd:(h+1)*hd], row[h*hd:(h+1)*hd]) * scale
		}
	}
	for h := 0; h < heads; h++ {
		softmaxInPlace(scores[h*keys : (h+1)*keys])
	}
	clear(out)
	j = 0
	for ; j+4 <= keys; j += 4 {
		rows := v[j*width : (j+4)*width]
		for h := 0; h < heads; h++ {
			c := h * hd
			p := scores[h*keys+j : h*keys+j+4]
			axpy4(out[c:c+hd], p[0], rows[c:c+hd], p[1], rows[width+c:width+c+hd], p[2], rows[2*width+c:2*width+c+hd], p[3], rows[3*width+c:3*width+c+hd])
		}
	}
	for ; j < keys; j++ {
		row := v[j*width : (j+1)*width]
		for h := 0; h < heads; h++ {
			axpy(scores[h*keys+j], row[h*hd:(h+1)*hd], out[h*hd:(h+1)*hd])
		}
	}
}

// touch loads one float of every 64-byte cache line of x and returns a sum
// of them that callers store, so that the loads are not optimised away.
func touch(x []float32) float32 {
	var s0, s1 float32
	i := 0
	for ; i+32 <= len(x); i += 32 {
		s0 += x[i]
		s1 += x[i+16]
	}
	for ; i < len(x); i += 16 {
		s0 += x[i]
	}
	return s0 + s1
}
