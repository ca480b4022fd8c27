package cpu

import (
	"math"
	"runtime"
	"slices"
	"testing"
)

// bits flattens outputs into their bit patterns for exact comparison.
func bits(fs [][]float32, is ...[]int32) []uint32 {
	var out []uint32
	for _, f := range fs {
		for _, v := range f {
			out = append(out, math.Float32bits(v))
		}
	}
	for _, s := range is {
		for _, v := range s {
			out = append(out, uint32(v))
		}
	}
	return out
}

func zeros(n int) []float32 { return make([]float32, n) }

// determinismCases run every op at sizes that split into many chunks and
// return all that it wrote.
var determinismCases = []struct {
	name string
	run  func(b *Backend) []uint32
}{
	{"Gemm", func(b *Backend) []uint32 {
		r := newRand(101)
		c := randVec(r, 64*48, 1)
		b.Gemm(false, true, 64, 48, 40, 1, tf(randVec(r, 64*40, 1)), 0, 40, tf(randVec(r, 48*40, 1)), 0, 40, 0.5, wrap(c), 0, 48)
		return bits([][]float32{c})
	}},
	{"GemmBatched", func(b *Backend) []uint32 {
		r := newRand(102)
		c := zeros(8 * 256)
		b.GemmBatched(true, false, 16, 16, 16, 1, tf(randVec(r, 8*256, 1)), 0, 16, 256, tf(randVec(r, 8*256, 1)), 0, 16, 256,
			0, wrap(c), 0, 16, 256, 8)
		return bits([][]float32{c})
	}},
	{"Add Scale SumSquares", func(b *Backend) []uint32 {
		r := newRand(103)
		const n = 100003
		y := randVec(r, n, 1)
		b.Add(wrap(y), tf(randVec(r, n, 1)), n)
		b.Scale(wrap(y), n, 0.3)
		ss := math.Float64bits(b.SumSquares(wrap(y), n))
		return append(bits([][]float32{y}), uint32(ss), uint32(ss>>32))
	}},
	{"Embedding", func(b *Backend) []uint32 {
		r := newRand(104)
		const rows, dim, vocab = 2048, 128, 64
		ids := randInts(r, rows, vocab)
		out, dt := zeros(rows*dim), randVec(r, vocab*dim, 1)
		b.Embedding(wrap(out), tf(randVec(r, vocab*dim, 1)), ti(ids), rows, dim)
		b.EmbeddingBackward(wrap(dt), tf(randVec(r, rows*dim, 1)), ti(ids), rows, dim)
		return bits([][]float32{out, dt})
	}},
	{"RMSNorm", func(b *Backend) []uint32 {
		r := newRand(105)
		const rows, dim = 2048, 128
		x, w := randVec(r, rows*dim, 2), randVec(r, dim, 1)
		out, rstd, dx, dw := zeros(rows*dim), zeros(rows), randVec(r, rows*dim, 1), randVec(r, dim, 1)
		b.RMSNorm(wrap(out), wrap(rstd), tf(x), tf(w), rows, dim, 1e-6)
		b.RMSNormBackward(wrap(dx), wrap(dw), tf(randVec(r, rows*dim, 1)), tf(x), tf(w), wrap(rstd), rows, dim)
		return bits([][]float32{out, rstd, dx, dw})
	}},
	{"ResidualRMSNorm", func(b *Backend) []uint32 {
		r := newRand(120)
		const rows, dim = 2048, 128
		x, res, w := randVec(r, rows*dim, 2), randVec(r, rows*dim, 1), randVec(r, dim, 1)
		sum, out, rstd := zeros(rows*dim), zeros(rows*dim), zeros(rows)
		b.ResidualRMSNorm(wrap(sum), wrap(out), wrap(rstd), tf(x), tf(res), tf(w), rows, dim, 1e-6)
		return bits([][]float32{sum, out, rstd})
	}},
	{"RoPE", func(b *Backend) []uint32 {
		r := newRand(106)
		const rows, heads, hd = 512, 4, 32
		x, g := randVec(r, rows*heads*hd, 1), randVec(r, rows*heads*hd, 1)
		pos := randInts(r, rows, 64)
		b.RoPE(wrap(x), ti(pos), rows, heads, hd, 10000)
		b.RoPEBackward(wrap(g), ti(pos), rows, heads, hd, 10000)
		return bits([][]float32{x, g})
	}},
	{"Attention", func(b *Backend) []uint32 {
		r := newRand(107)
		const batch, seq, heads, hd = 4, 64, 4, 32
		n := batch * seq * heads * hd
		q, k, v := randVec(r, n, 1), randVec(r, n, 1), randVec(r, n, 1)
		out, lse := zeros(n), zeros(batch*heads*seq)
		dq, dk, dv := randVec(r, n, 1), randVec(r, n, 1), randVec(r, n, 1)
		b.Attention(wrap(out), wrap(lse), tf(q), tf(k), tf(v), batch, seq, heads, hd)
		b.AttentionBackward(wrap(dq), wrap(dk), wrap(dv), tf(randVec(r, n, 1)), tf(q), tf(k), tf(v), wrap(out), wrap(lse),
			batch, seq, heads, hd)
		return bits([][]float32{out, lse, dq, dk, dv})
	}},
	{"AttentionDecode", func(b *Backend) []uint32 {
		r := newRand(108)
		const batch, maxSeq, heads, hd = 64, 80, 4, 32
		n := batch * maxSeq * heads * hd
		out := zeros(batch * heads * hd)
		b.AttentionDecode(wrap(out), tf(randVec(r, batch*heads*hd, 1)), tf(randVec(r, n, 1)), tf(randVec(r, n, 1)),
			ti(randInts(r, batch, maxSeq+1)), batch, maxSeq, heads, hd)
		return bits([][]float32{out})
	}},
	{"SwiGLU", func(b *Backend) []uint32 {
		r := newRand(109)
		const n = 100003
		g, u := randVec(r, n, 4), randVec(r, n, 1)
		out, dg, du := zeros(n), randVec(r, n, 1), randVec(r, n, 1)
		b.SwiGLU(wrap(out), tf(g), tf(u), n)
		b.SwiGLUBackward(wrap(dg), wrap(du), tf(randVec(r, n, 1)), tf(g), tf(u), n)
		return bits([][]float32{out, dg, du})
	}},
	{"Router and MoE", func(b *Backend) []uint32 {
		r := newRand(110)
		const rows, nExp, k, dim = 2048, 4, 2, 128
		w, e, p := zeros(rows*k), make([]int32, rows*k), zeros(rows*nExp)
		b.RouterTopK(wrap(w), wrapI(e), wrap(p), tf(randVec(r, rows*nExp, 2)), rows, nExp, k)
		dl, dp := randVec(r, rows*nExp, 1), zeros(rows*nExp)
		b.RouterTopKBackward(wrap(dl), tf(randVec(r, rows*k, 1)), wrap(w), wrapI(e), wrap(p), rows, nExp, k)
		b.SoftmaxBackward(wrap(dp), tf(randVec(r, rows*nExp, 1)), wrap(p), rows, nExp)
		perm, inv, offs := make([]int32, rows*k), make([]int32, rows*k), make([]int32, nExp+1)
		b.RouterDispatch(wrapI(perm), wrapI(inv), wrapI(offs), wrapI(e), rows, nExp, k)
		x := randVec(r, rows*dim, 1)
		xs, out, dx := zeros(rows*k*dim), randVec(r, rows*dim, 1), randVec(r, rows*dim, 1)
		b.Gather(wrap(xs), tf(x), wrapI(perm), rows*k, dim)
		b.GatherBackward(wrap(dx), tf(randVec(r, rows*k*dim, 1)), wrapI(inv), rows, k, dim)
		b.Combine(wrap(out), wrap(xs), wrap(w), wrapI(inv), rows, k, dim)
		dy, dw := randVec(r, rows*k*dim, 1), randVec(r, rows*k, 1)
		b.CombineBackward(wrap(dy), wrap(dw), tf(randVec(r, rows*dim, 1)), wrap(xs), wrap(w), wrapI(inv), rows, k, dim)
		cache := zeros(2 * rows * dim)
		b.ScatterRows(wrap(cache), wrap(x), wrapI(inv[:rows]), rows, dim)
		return bits([][]float32{w, p, dl, dp, xs, out, dx, dy, dw, cache}, e, perm, inv, offs)
	}},
	{"TokenLogProbs", func(b *Backend) []uint32 {
		r := newRand(111)
		const rows, vocab = 2048, 64
		x, tg := randVec(r, rows*vocab, 5), randInts(r, rows, vocab)
		lp, lse, ent, dl := zeros(rows), zeros(rows), zeros(rows), randVec(r, rows*vocab, 1)
		b.TokenLogProbs(wrap(lp), wrap(lse), tf(x), ti(tg), rows, vocab)
		b.TokenLogProbsBackward(wrap(dl), tf(randVec(r, rows, 1)), tf(x), wrap(lse), ti(tg), rows, vocab)
		b.Entropy(wrap(ent), tf(x), wrap(lse), rows, vocab)
		flp, flse, fdl := zeros(rows), zeros(rows), zeros(rows*vocab)
		b.TokenLogProbsFused(wrap(flp), wrap(flse), wrap(fdl), tf(x), ti(tg), tf(randVec(r, rows, 1)), rows, vocab)
		return bits([][]float32{lp, lse, ent, dl, flp, flse, fdl})
	}},
	{"AdamW", func(b *Backend) []uint32 {
		r := newRand(112)
		const n = 100003
		p, m, v := randVec(r, n, 1), randVec(r, n, 0.1), randVec(r, n, 0.1)
		for i := range v {
			v[i] *= v[i]
		}
		b.AdamW(wrap(p), tf(randVec(r, n, 1)), wrap(m), wrap(v), n, n/2, 0.5, 1e-3, 0.9, 0.95, 1e-8, 0.1, 7)
		return bits([][]float32{p, m, v})
	}},
	{"Sample", func(b *Backend) []uint32 {
		r := newRand(113)
		const rows, vocab = 256, 64
		x, u := tf(randVec(r, rows*vocab, 3)), tf(randVec(r, rows, 0.5))
		for i := range u.F {
			u.F[i] += 0.5
		}
		var out []uint32
		for _, temp := range []float32{0, 0.8} {
			tok, lp := make([]int32, rows), zeros(rows)
			b.Sample(wrapI(tok), wrap(lp), x, u, rows, vocab, temp, 10, 0.9)
			out = append(out, bits([][]float32{lp}, tok)...)
		}
		return out
	}},
}

// TestDeterminism checks that every op gives bitwise identical results
// whatever the number of threads, on every SIMD path, and that the AVX2
// and AVX-512 paths give the same bits as each other (they evaluate the
// same operations lane by lane and sum in the same order).
func TestDeterminism(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(0))
	b := New()
	vectorBits := make(map[string][]uint32)
	var vectorPath string
	for _, p := range simdAvailable {
		withSIMDPath(p, func() {
			for _, tc := range determinismCases {
				runtime.GOMAXPROCS(1)
				want := tc.run(b)
				for _, procs := range []int{2, 7} {
					runtime.GOMAXPROCS(procs)
					if got := tc.run(b); !slices.Equal(got, want) {
						t.Errorf("%s path %s: GOMAXPROCS=%d differs from GOMAXPROCS=1", p.name, tc.name, procs)
					}
				}
				if p == simdGo {
					continue
				}
				if prev, ok := vectorBits[tc.name]; !ok {
					vectorBits[tc.name] = want
				} else if !slices.Equal(prev, want) {
					t.Errorf("%s: path %s differs from path %s", tc.name, p.name, vectorPath)
				}
			}
		})
		if p != simdGo && vectorPath == "" {
			vectorPath = p.name
		}
	}
}
