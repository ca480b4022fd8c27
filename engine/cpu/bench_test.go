package cpu

import (
	"fmt"
	"testing"
)

// The benchmarks use moe-micro's shapes: batch 32 × seq 64 (2048 rows),
// d_model 128 as 4 heads of 32, 4 experts top-2, vocab 64;
// BenchmarkAttentionDecode has shapes of its own.

func BenchmarkAttention(b *testing.B) {
	const batch, seq, heads, hd = 32, 64, 4, 32
	be, r := New(), newRand(1)
	n := batch * seq * heads * hd
	q, k, v, dout := tf(randVec(r, n, 1)), tf(randVec(r, n, 1)), tf(randVec(r, n, 1)), tf(randVec(r, n, 1))
	out, lse := tf(zeros(n)), tf(zeros(batch*heads*seq))
	dq, dk, dv := tf(zeros(n)), tf(zeros(n)), tf(zeros(n))
	benchSIMDPaths(b, func(b *testing.B) {
		b.Run("forward", func(b *testing.B) {
			for b.Loop() {
				be.Attention(out, lse, q, k, v, batch, seq, heads, hd)
			}
		})
		b.Run("backward", func(b *testing.B) {
			for b.Loop() {
				be.AttentionBackward(dq, dk, dv, dout, q, k, v, out, lse, batch, seq, heads, hd)
			}
		})
		b.Run("forward+backward", func(b *testing.B) {
			for b.Loop() {
				be.Attention(out, lse, q, k, v, batch, seq, heads, hd)
				be.AttentionBackward(dq, dk, dv, dout, q, k, v, out, lse, batch, seq, heads, hd)
			}
		})
	})
}

// BenchmarkAttentionDecode decodes against caches filled to length len:
// moe-micro's generate workload (64 sequences, 4 heads of 32, 8 + up to
// 56 positions), moe-tiny's (256 sequences, 4 heads of 64, 32 + up to 128)
// and a long cache.
func BenchmarkAttentionDecode(b *testing.B) {
	for _, s := range []struct{ batch, maxSeq, len, heads, hd int }{
		{64, 64, 36, 4, 32}, {256, 160, 96, 4, 64}, {256, 160, 160, 4, 32}, {16, 512, 500, 8, 64},
	} {
		b.Run(fmt.Sprintf("%d×%d(len %d)×%d×%d", s.batch, s.maxSeq, s.len, s.heads, s.hd), func(b *testing.B) {
			be, r := New(), newRand(2)
			n := s.batch * s.maxSeq * s.heads * s.hd
			kc, vc := tf(randVec(r, n, 1)), tf(randVec(r, n, 1))
			q, out := tf(randVec(r, s.batch*s.heads*s.hd, 1)), tf(zeros(s.batch*s.heads*s.hd))
			lens := make([]int32, s.batch)
			for i := range lens {
				lens[i] = int32(s.len)
			}
			lt := ti(lens)
			for b.Loop() {
				be.AttentionDecode(out, q, kc, vc, lt, s.batch, s.maxSeq, s.heads, s.hd)
			}
		})
	}
}

func BenchmarkRMSNorm(b *testing.B) {
	const rows, dim = 2048, 128
	be, r := New(), newRand(3)
	x, w, dout := tf(randVec(r, rows*dim, 1)), tf(randVec(r, dim, 1)), tf(randVec(r, rows*dim, 1))
	out, rstd, dx, dw := tf(zeros(rows*dim)), tf(zeros(rows)), tf(zeros(rows*dim)), tf(zeros(dim))
	b.Run("forward", func(b *testing.B) {
		for b.Loop() {
			be.RMSNorm(out, rstd, x, w, rows, dim, 1e-6)
		}
	})
	b.Run("backward", func(b *testing.B) {
		for b.Loop() {
			be.RMSNormBackward(dx, dw, dout, x, w, rstd, rows, dim)
		}
	})
}

func BenchmarkRouterTopK(b *testing.B) {
	const rows, nExp, k = 2048, 4, 2
	be, r := New(), newRand(4)
	logits, dw := tf(randVec(r, rows*nExp, 2)), tf(randVec(r, rows*k, 1))
	w, e, p, dl := tf(zeros(rows*k)), ti(make([]int32, rows*k)), tf(zeros(rows*nExp)), tf(zeros(rows*nExp))
	b.Run("forward", func(b *testing.B) {
		for b.Loop() {
			be.RouterTopK(w, e, p, logits, rows, nExp, k)
		}
	})
	b.Run("backward", func(b *testing.B) {
		for b.Loop() {
			be.RouterTopKBackward(dl, dw, w, e, p, rows, nExp, k)
		}
	})
}

func BenchmarkTokenLogProbs(b *testing.B) {
	const rows, vocab = 2048, 64
	be, r := New(), newRand(5)
	logits, targets, dlogp := tf(randVec(r, rows*vocab, 3)), ti(randInts(r, rows, vocab)), tf(randVec(r, rows, 1))
	logp, lse, dl, ent := tf(zeros(rows)), tf(zeros(rows)), tf(zeros(rows*vocab)), tf(zeros(rows))
	benchSIMDPaths(b, func(b *testing.B) {
		b.Run("forward", func(b *testing.B) {
			for b.Loop() {
				be.TokenLogProbs(logp, lse, logits, targets, rows, vocab)
			}
		})
		b.Run("backward", func(b *testing.B) {
			for b.Loop() {
				be.TokenLogProbsBackward(dl, dlogp, logits, lse, targets, rows, vocab)
			}
		})
		b.Run("entropy", func(b *testing.B) {
			for b.Loop() {
				be.Entropy(ent, logits, lse, rows, vocab)
			}
		})
		b.Run("fused", func(b *testing.B) {
			for b.Loop() {
				be.TokenLogProbsFused(logp, lse, dl, logits, targets, dlogp, rows, vocab)
			}
		})
	})
}

// benchSIMDPaths runs f under every SIMD path this CPU supports, so that
// one run compares the vector kernels with the Go loops.
func benchSIMDPaths(b *testing.B, f func(b *testing.B)) {
	for _, p := range simdAvailable {
		b.Run(p.name, func(b *testing.B) { withSIMDPath(p, func() { f(b) }) })
	}
}

func BenchmarkSwiGLU(b *testing.B) {
	const n = 2048 * 2 * 256 // tokens × top-k × expert hidden
	be, r := New(), newRand(6)
	gate, up, dout := tf(randVec(r, n, 3)), tf(randVec(r, n, 1)), tf(randVec(r, n, 1))
	out, dgate, dup := tf(zeros(n)), tf(zeros(n)), tf(zeros(n))
	benchSIMDPaths(b, func(b *testing.B) {
		b.Run("forward", func(b *testing.B) {
			for b.Loop() {
				be.SwiGLU(out, gate, up, n)
			}
		})
		b.Run("backward", func(b *testing.B) {
			for b.Loop() {
				be.SwiGLUBackward(dgate, dup, dout, gate, up, n)
			}
		})
	})
}

// BenchmarkSoftmaxRows runs the attention forward's softmax alone: the
// causal rows of lengths 1..64 of a 64×64 block of scores (which Sgemm
// has just written, so it is in L1), for 32×4 (sequence, head) pairs.
func BenchmarkSoftmaxRows(b *testing.B) {
	const pairs, seq = 32 * 4, 64
	src := randVec(newRand(7), seq*seq, 3)
	x := make([]float32, len(src))
	benchSIMDPaths(b, func(b *testing.B) {
		for b.Loop() {
			for range pairs {
				copy(x, src)
				for i := range seq {
					softmaxInPlace(x[i*seq : i*seq+i+1])
				}
			}
		}
	})
}

// BenchmarkExp times the exponential alone over 1M elements.
func BenchmarkExp(b *testing.B) {
	const n = 1 << 20
	x, dst := randVec(newRand(8), n, 20), make([]float32, n)
	benchSIMDPaths(b, func(b *testing.B) {
		for b.Loop() {
			expSum(dst, x, 0)
		}
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/n, "ns/elem")
	})
}
