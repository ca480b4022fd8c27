package cpu

import (
	"fmt"
	"math"
	"slices"
	"testing"

	"github.com/moerl/moerl/engine"
	"github.com/moerl/moerl/engine/cpu/gemm"
)

func TestEmbedding(t *testing.T) {
	b := New()
	r := newRand(4)
	const vocab, rows, dim = 7, 12, 5
	table := randVec(r, vocab*dim, 1)
	ids := randInts(r, rows, vocab)
	ids[3] = ids[0] // a repeated id sums both rows
	out := tf(make([]float32, rows*dim))
	b.Embedding(out, tf(table), ti(ids), rows, dim)
	want := refGather(f64s(table), ids, dim)
	checkClose(t, "Embedding", out.F, want, 0)

	c := randVec(r, rows*dim, 1)
	dtable := make([]float32, vocab*dim)
	backward := func() { b.EmbeddingBackward(wrap(dtable), tf(c), ti(ids), rows, dim) }
	backward()
	x := f64s(table)
	checkGrad(t, "EmbeddingBackward", dtable, x, func() float64 { return linear(c, refGather(x, ids, dim)) })
	checkAccumulates(t, "EmbeddingBackward", backward, dtable)
}

// TestResidualRMSNorm: the fused op gives, bit for bit, what Add and then
// RMSNorm give, out of place and in place over x or over r, at sizes that
// split the rows among goroutines.
func TestResidualRMSNorm(t *testing.T) {
	b := New()
	for _, sz := range []struct{ rows, dim int }{{6, 16}, {7, 13}, {700, 96}} {
		r := newRand(uint64(31 + sz.dim))
		rows, dim, n := sz.rows, sz.dim, sz.rows*sz.dim
		x, res, w := randVec(r, n, 2), randVec(r, n, 1), randVec(r, dim, 0.5)
		wantSum := slices.Clone(x)
		b.Add(wrap(wantSum), tf(res), n)
		wantOut, wantR := make([]float32, n), make([]float32, rows)
		b.RMSNorm(wrap(wantOut), wrap(wantR), tf(wantSum), tf(w), rows, dim, 1e-5)
		for _, alias := range []string{"none", "x", "r"} {
			xs, rs := slices.Clone(x), slices.Clone(res)
			sum := make([]float32, n)
			switch alias {
			case "x":
				sum = xs
			case "r":
				sum = rs
			}
			out, rstd := make([]float32, n), make([]float32, rows)
			b.ResidualRMSNorm(wrap(sum), wrap(out), wrap(rstd), wrap(xs), wrap(rs), tf(w), rows, dim, 1e-5)
			name := fmt.Sprintf("ResidualRMSNorm %d×%d, sum over %s", rows, dim, alias)
			if !slices.Equal(bits([][]float32{sum, out, rstd}), bits([][]float32{wantSum, wantOut, wantR})) {
				t.Errorf("%s: not the bits of Add and RMSNorm", name)
			}
		}
	}
}

func TestRMSNorm(t *testing.T) {
	b := New()
	for _, dim := range []int{16, 13} {
		r := newRand(uint64(5 + dim))
		const rows, eps = 6, 1e-5
		x := randVec(r, rows*dim, 2)
		w := randVec(r, dim, 0.5)
		for i := range w {
			w[i]++
		}
		out, rstd := make([]float32, rows*dim), make([]float32, rows)
		b.RMSNorm(wrap(out), wrap(rstd), tf(x), tf(w), rows, dim, eps)
		wantOut, wantR := refRMSNorm(f64s(x), f64s(w), rows, dim, eps)
		checkClose(t, fmt.Sprintf("RMSNorm dim=%d out", dim), out, wantOut, fwdTol)
		checkClose(t, fmt.Sprintf("RMSNorm dim=%d rstd", dim), rstd, wantR, fwdTol)

		c := randVec(r, rows*dim, 1)
		dx, dw := make([]float32, rows*dim), make([]float32, dim)
		backward := func() { b.RMSNormBackward(wrap(dx), wrap(dw), tf(c), tf(x), tf(w), wrap(rstd), rows, dim) }
		backward()
		x64, w64 := f64s(x), f64s(w)
		loss := func() float64 { o, _ := refRMSNorm(x64, w64, rows, dim, eps); return linear(c, o) }
		checkGrad(t, fmt.Sprintf("RMSNorm dim=%d dx", dim), dx, x64, loss)
		checkGrad(t, fmt.Sprintf("RMSNorm dim=%d dw", dim), dw, w64, loss)
		checkAccumulates(t, "RMSNormBackward", backward, dx, dw)
	}
}

func TestRoPE(t *testing.T) {
	b := New()
	for _, tc := range []struct {
		rows, heads, hd int
		theta           float32
	}{{3, 2, 8, 10000}, {4, 3, 6, 100}, {2, 1, 2, 10}} {
		name := fmt.Sprintf("RoPE %d×%d×%d θ=%v", tc.rows, tc.heads, tc.hd, tc.theta)
		r := newRand(uint64(tc.hd))
		n := tc.rows * tc.heads * tc.hd
		x := randVec(r, n, 1)
		pos := randInts(r, tc.rows, 300)
		got := slices.Clone(x)
		b.RoPE(wrap(got), ti(pos), tc.rows, tc.heads, tc.hd, tc.theta)
		checkClose(t, name, got, refRoPE(f64s(x), pos, tc.rows, tc.heads, tc.hd, float64(tc.theta)), fwdTol)

		// The backward is the transpose of the rotation, so it undoes RoPE.
		b.RoPEBackward(wrap(got), ti(pos), tc.rows, tc.heads, tc.hd, tc.theta)
		checkClose(t, name+" then backward", got, f64s(x), fwdTol)

		c := randVec(r, n, 1)
		dx := slices.Clone(c)
		b.RoPEBackward(wrap(dx), ti(pos), tc.rows, tc.heads, tc.hd, tc.theta)
		x64 := f64s(x)
		checkGrad(t, name, dx, x64, func() float64 {
			return linear(c, refRoPE(x64, pos, tc.rows, tc.heads, tc.hd, float64(tc.theta)))
		})
	}
}

// attentionShapes include sequences longer than one and two query blocks
// (attnBlock).
var attentionShapes = []struct{ batch, seq, heads, hd int }{
	{2, 5, 2, 4}, {1, 7, 3, 8}, {2, 4, 1, 10}, {1, 2*attnBlock + 2, 1, 4},
}

func TestAttention(t *testing.T) {
	b := New()
	for _, s := range attentionShapes {
		name := fmt.Sprintf("Attention %d×%d×%d×%d", s.batch, s.seq, s.heads, s.hd)
		r := newRand(uint64(s.seq))
		n := s.batch * s.seq * s.heads * s.hd
		q, k, v := randVec(r, n, 1.5), randVec(r, n, 1.5), randVec(r, n, 1)
		out, lse := make([]float32, n), make([]float32, s.batch*s.heads*s.seq)
		b.Attention(wrap(out), wrap(lse), tf(q), tf(k), tf(v), s.batch, s.seq, s.heads, s.hd)
		q64, k64, v64 := f64s(q), f64s(k), f64s(v)
		wantOut, wantLse := refAttention(q64, k64, v64, s.batch, s.seq, s.heads, s.hd)
		checkClose(t, name+" out", out, wantOut, fwdTol)
		checkClose(t, name+" lse", lse, wantLse, fwdTol)

		c := randVec(r, n, 1)
		dq, dk, dv := make([]float32, n), make([]float32, n), make([]float32, n)
		backward := func() {
			b.AttentionBackward(wrap(dq), wrap(dk), wrap(dv), tf(c), tf(q), tf(k), tf(v), wrap(out), wrap(lse),
				s.batch, s.seq, s.heads, s.hd)
		}
		backward()
		loss := func() float64 {
			o, _ := refAttention(q64, k64, v64, s.batch, s.seq, s.heads, s.hd)
			return linear(c, o)
		}
		checkGrad(t, name+" dq", dq, q64, loss)
		checkGrad(t, name+" dk", dk, k64, loss)
		checkGrad(t, name+" dv", dv, v64, loss)
		checkAccumulates(t, name+" backward", backward, dq, dk, dv)
	}
}

// forEachPath runs f under every combination of this CPU's gemm and SIMD
// paths: an identity of bits must hold on each.
func forEachPath(t *testing.T, f func(t *testing.T)) {
	defer gemm.SetPath(gemm.Path())
	for _, g := range gemm.Paths() {
		t.Run("gemm="+g, func(t *testing.T) {
			if err := gemm.SetPath(g); err != nil {
				t.Fatal(err)
			}
			forEachSIMDPath(t, func(t *testing.T, p *simdPath) { withSIMDPath(p, func() { f(t) }) })
		})
	}
}

// TestAttentionPrefix: a query's output and log-sum-exp depend on its
// sequence's tokens up to it, and nothing else: a longer sequence, a batch
// of other sequences or another block of queries (attnBlock) gives the same
// bits, past attnKeyBlock keys too.
func TestAttentionPrefix(t *testing.T) {
	const heads, hd, long = 2, 8, attnKeyBlock + 2*attnBlock + 5
	r := newRand(12)
	stride := heads * hd
	q, k, v := randVec(r, long*stride, 1.5), randVec(r, long*stride, 1.5), randVec(r, long*stride, 1)
	run := func(batch, seq int) ([]float32, []float32) {
		// The sequence under test is the batch's last, the others random.
		n := batch * seq * stride
		qb, kb, vb := randVec(r, n, 1.5), randVec(r, n, 1.5), randVec(r, n, 1)
		at := (batch - 1) * seq * stride
		copy(qb[at:], q[:seq*stride])
		copy(kb[at:], k[:seq*stride])
		copy(vb[at:], v[:seq*stride])
		out, lse := make([]float32, n), make([]float32, batch*heads*seq)
		New().Attention(wrap(out), wrap(lse), tf(qb), tf(kb), tf(vb), batch, seq, heads, hd)
		ls := make([]float32, heads*seq) // the sequence's lse, query-major
		for h := range heads {
			for i := range seq {
				ls[i*heads+h] = lse[((batch-1)*heads+h)*seq+i]
			}
		}
		return out[at:], ls
	}
	forEachPath(t, func(t *testing.T) {
		wantOut, wantLse := run(1, long)
		for _, c := range []struct{ batch, seq int }{{1, 1}, {3, 7}, {2, attnBlock + 1}, {1, attnKeyBlock - 1}, {2, attnKeyBlock + 1}} {
			out, lse := run(c.batch, c.seq)
			if !bitsEqual(out, wantOut[:c.seq*stride]) || !bitsEqual(lse, wantLse[:c.seq*heads]) {
				t.Errorf("batch %d × seq %d: the first %d queries differ from a sequence of %d", c.batch, c.seq, c.seq, long)
			}
		}
	})
}

// TestAttentionDecode checks that attending one query to a cache prefix of
// length L gives the bits of row L−1 of full causal attention over the
// cache, past attnKeyBlock keys too.
func TestAttentionDecode(t *testing.T) {
	const batch, maxSeq, heads, hd = 7, attnKeyBlock + attnBlock + 3, 2, 8
	r := newRand(8)
	n := batch * maxSeq * heads * hd
	q, kc, vc := randVec(r, n, 1.5), randVec(r, n, 1.5), randVec(r, n, 1)
	lens := []int32{maxSeq, 4, 1, 0, 7, attnKeyBlock, attnKeyBlock + 1}
	stride := heads * hd
	qd := make([]float32, batch*stride)
	for i, l := range lens {
		at := (i*maxSeq + max(int(l)-1, 0)) * stride
		copy(qd[i*stride:(i+1)*stride], q[at:at+stride])
	}
	forEachPath(t, func(t *testing.T) {
		b := New()
		full, lse := make([]float32, n), make([]float32, batch*heads*maxSeq)
		b.Attention(wrap(full), wrap(lse), tf(q), tf(kc), tf(vc), batch, maxSeq, heads, hd)
		out := randVec(r, batch*stride, 1)
		b.AttentionDecode(wrap(out), tf(qd), tf(kc), tf(vc), ti(lens), batch, maxSeq, heads, hd)
		for i, l := range lens {
			want := make([]float32, stride) // an empty cache attends to nothing
			if l > 0 {
				at := (i*maxSeq + int(l) - 1) * stride
				want = full[at : at+stride]
			}
			if j := firstDiff(out[i*stride:(i+1)*stride], want); j >= 0 {
				t.Errorf("sequence %d (length %d), element %d: decode %v, attention %v", i, l, j, out[i*stride+j], want[j])
			}
		}
	})
	// And both are attention: against the float64 reference.
	full, lse := make([]float32, n), make([]float32, batch*heads*maxSeq)
	New().Attention(wrap(full), wrap(lse), tf(q), tf(kc), tf(vc), batch, maxSeq, heads, hd)
	want, _ := refAttention(f64s(q), f64s(kc), f64s(vc), batch, maxSeq, heads, hd)
	checkClose(t, "attention over the cache", full, want, fwdTol)
}

// bitsEqual reports whether a and b hold the same float32 bit patterns.
func bitsEqual(a, b []float32) bool { return len(a) == len(b) && firstDiff(a, b) < 0 }

// firstDiff is the first index where a and b hold different float32 bit
// patterns, or -1.
func firstDiff(a, b []float32) int {
	for i := range min(len(a), len(b)) {
		if math.Float32bits(a[i]) != math.Float32bits(b[i]) {
			return i
		}
	}
	return -1
}

func TestSwiGLU(t *testing.T) {
	b := New()
	r := newRand(9)
	const n = 37
	g, u := randVec(r, n, 5), randVec(r, n, 1)
	out := make([]float32, n)
	b.SwiGLU(wrap(out), tf(g), tf(u), n)
	g64, u64 := f64s(g), f64s(u)
	checkClose(t, "SwiGLU", out, refSwiGLU(g64, u64), fwdTol)

	c := randVec(r, n, 1)
	dg, du := make([]float32, n), make([]float32, n)
	backward := func() { b.SwiGLUBackward(wrap(dg), wrap(du), tf(c), tf(g), tf(u), n) }
	backward()
	loss := func() float64 { return linear(c, refSwiGLU(g64, u64)) }
	checkGrad(t, "SwiGLU dgate", dg, g64, loss)
	checkGrad(t, "SwiGLU dup", du, u64, loss)
	checkAccumulates(t, "SwiGLUBackward", backward, dg, du)
}

// separatedLogits gives every row distinct logits at least 0.3 apart, so
// that no finite-difference step changes the top-k choice.
func separatedLogits(seed uint64, rows, n int) []float32 {
	r := newRand(seed)
	x := make([]float32, rows*n)
	for row := range rows {
		for i, p := range r.Perm(n) {
			x[row*n+i] = float32(p)*0.4 - 1 + float32(r.Float64()*0.1)
		}
	}
	return x
}

func TestRouterTopK(t *testing.T) {
	b := New()
	const rows, nExperts = 5, 6
	for k := 1; k <= 3; k++ {
		name := fmt.Sprintf("RouterTopK k=%d", k)
		logits := separatedLogits(uint64(k), rows, nExperts)
		w, e, p := make([]float32, rows*k), make([]int32, rows*k), make([]float32, rows*nExperts)
		b.RouterTopK(wrap(w), wrapI(e), wrap(p), tf(logits), rows, nExperts, k)
		x64 := f64s(logits)
		wantW, wantE, wantP := refRouter(x64, rows, nExperts, k)
		checkClose(t, name+" probs", p, wantP, fwdTol)
		checkClose(t, name+" weights", w, wantW, fwdTol)
		if !slices.Equal(e, wantE) {
			t.Errorf("%s experts %v, want %v", name, e, wantE)
		}

		c := randVec(newRand(uint64(k)), rows*k, 1)
		dl := make([]float32, rows*nExperts)
		backward := func() { b.RouterTopKBackward(wrap(dl), tf(c), wrap(w), wrapI(e), wrap(p), rows, nExperts, k) }
		backward()
		checkGrad(t, name+" dlogits", dl, x64, func() float64 {
			w, _, _ := refRouter(x64, rows, nExperts, k)
			return linear(c, w)
		})
		checkAccumulates(t, name+" backward", backward, dl)
	}
}

func TestRouterTopKTies(t *testing.T) {
	b := New()
	logits := []float32{1, 3, 3, 0, 3}
	w, e, p := make([]float32, 3), make([]int32, 3), make([]float32, 5)
	b.RouterTopK(wrap(w), wrapI(e), wrap(p), tf(logits), 1, 5, 3)
	if want := []int32{1, 2, 4}; !slices.Equal(e, want) {
		t.Errorf("tied experts %v, want %v (lower index first)", e, want)
	}
	checkClose(t, "tied weights", w, []float64{1.0 / 3, 1.0 / 3, 1.0 / 3}, 1e-6)
}

func TestSoftmaxBackward(t *testing.T) {
	b := New()
	r := newRand(10)
	const rows, n = 3, 7
	x := randVec(r, rows*n, 3)
	x64 := f64s(x)
	p := make([]float32, rows*n)
	for i, v := range refSoftmax(x64, rows, n) {
		p[i] = float32(v)
	}
	c := randVec(r, rows*n, 1)
	dl := make([]float32, rows*n)
	backward := func() { b.SoftmaxBackward(wrap(dl), tf(c), wrap(p), rows, n) }
	backward()
	checkGrad(t, "SoftmaxBackward", dl, x64, func() float64 { return linear(c, refSoftmax(x64, rows, n)) })
	checkAccumulates(t, "SoftmaxBackward", backward, dl)
}

func TestTokenLogProbs(t *testing.T) {
	b := New()
	r := newRand(11)
	const rows, vocab = 4, 11
	logits := randVec(r, rows*vocab, 4)
	targets := randInts(r, rows, vocab)
	logp, lse := make([]float32, rows), make([]float32, rows)
	b.TokenLogProbs(wrap(logp), wrap(lse), tf(logits), ti(targets), rows, vocab)
	x64 := f64s(logits)
	wantLogp, wantLse := refLogProbs(x64, targets, vocab)
	checkClose(t, "TokenLogProbs logp", logp, wantLogp, fwdTol)
	checkClose(t, "TokenLogProbs lse", lse, wantLse, fwdTol)

	ent := make([]float32, rows)
	b.Entropy(wrap(ent), tf(logits), wrap(lse), rows, vocab)
	checkClose(t, "Entropy", ent, refEntropy(x64, rows, vocab), fwdTol)

	c := randVec(r, rows, 1)
	dl := make([]float32, rows*vocab)
	backward := func() { b.TokenLogProbsBackward(wrap(dl), tf(c), tf(logits), wrap(lse), ti(targets), rows, vocab) }
	backward()
	checkGrad(t, "TokenLogProbs dlogits", dl, x64, func() float64 {
		lp, _ := refLogProbs(x64, targets, vocab)
		return linear(c, lp)
	})
	checkAccumulates(t, "TokenLogProbsBackward", backward, dl)
}

// TestTokenLogProbsFused: the fused op's log-probs, lse and gradient are
// bit for bit TokenLogProbs and TokenLogProbsBackward into zeroed dlogits,
// whatever dlogits held before (it overwrites), the gradient is the
// finite differences' and a zero dlogp (a masked token) gives +0, not −0.
func TestTokenLogProbsFused(t *testing.T) {
	b := New()
	r := newRand(13)
	const rows, vocab = 5, 13
	logits := randVec(r, rows*vocab, 4)
	logits[2*vocab+3] = -200 // its exponential underflows to 0
	targets := randInts(r, rows, vocab)
	c := randVec(r, rows, 1)
	c[1] = 0
	lp, lse, dl := make([]float32, rows), make([]float32, rows), make([]float32, rows*vocab)
	b.TokenLogProbs(wrap(lp), wrap(lse), tf(logits), ti(targets), rows, vocab)
	b.TokenLogProbsBackward(wrap(dl), tf(c), tf(logits), wrap(lse), ti(targets), rows, vocab)

	flp, flse, fdl := make([]float32, rows), make([]float32, rows), make([]float32, rows*vocab)
	for i := range fdl {
		fdl[i] = float32(math.NaN())
	}
	b.TokenLogProbsFused(wrap(flp), wrap(flse), wrap(fdl), tf(logits), ti(targets), tf(c), rows, vocab)
	for _, p := range []struct {
		name      string
		got, want []float32
	}{{"logp", flp, lp}, {"lse", flse, lse}, {"dlogits", fdl, dl}} {
		for i := range p.want {
			if math.Float32bits(p.got[i]) != math.Float32bits(p.want[i]) {
				t.Fatalf("TokenLogProbsFused %s[%d] = %v, the two ops give %v", p.name, i, p.got[i], p.want[i])
			}
		}
	}
	for i := range vocab {
		if v := fdl[vocab+i]; v != 0 || math.Signbit(float64(v)) {
			t.Fatalf("dlogits[%d] = %v for a zero dlogp, want +0", vocab+i, v)
		}
	}
	x64 := f64s(logits)
	checkGrad(t, "TokenLogProbsFused dlogits", fdl, x64, func() float64 {
		lp, _ := refLogProbs(x64, targets, vocab)
		return linear(c, lp)
	})
}

func TestAdamW(t *testing.T) {
	b := New()
	r := newRand(12)
	const n, nDecay = 50, 37
	const lr, b1, b2, eps, wd = 1e-2, 0.9, 0.95, 1e-8, 0.1
	p := randVec(r, n, 1)
	m, v := make([]float32, n), make([]float32, n)
	p64, m64, v64 := f64s(p), make([]float64, n), make([]float64, n)
	for step := 1; step <= 3; step++ {
		g := randVec(r, n, 1)
		scale := float32(1) / float32(step) // a clip scale on steps 2 and 3
		b.AdamW(wrap(p), tf(g), wrap(m), wrap(v), n, nDecay, scale, lr, b1, b2, eps, wd, step)
		for i := range n {
			gi := float64(g[i]) * float64(scale)
			m64[i] = b1*m64[i] + (1-b1)*gi
			v64[i] = b2*v64[i] + (1-b2)*gi*gi
			mh := m64[i] / (1 - math.Pow(b1, float64(step)))
			vh := v64[i] / (1 - math.Pow(b2, float64(step)))
			decay := wd
			if i >= nDecay {
				decay = 0
			}
			p64[i] -= lr * (decay*p64[i] + mh/(math.Sqrt(vh)+eps))
		}
	}
	checkClose(t, "AdamW p", p, p64, 1e-6)
	checkClose(t, "AdamW m", m, m64, 1e-6)
	checkClose(t, "AdamW v", v, v64, 1e-6)
}

// TestAdamWOneCall checks that one AdamW call over a model's parameters,
// with the clip scale and the decay boundary as arguments, gives bit for
// bit what Scale and one call per decay group gave before.
func TestAdamWOneCall(t *testing.T) {
	b := New()
	r := newRand(13)
	const n, nDecay = 1000, 700
	const scale, lr, b1, b2, eps, wd = 0.37, 3e-3, 0.9, 0.95, 1e-8, 0.1
	p := randVec(r, n, 1)
	m, v := randVec(r, n, 0.1), make([]float32, n)
	for i := range v {
		v[i] = float32(r.Float64())
	}
	g := randVec(r, n, 1)
	one := [][]float32{append([]float32(nil), p...), append([]float32(nil), m...), append([]float32(nil), v...)}
	two := [][]float32{append([]float32(nil), p...), append([]float32(nil), m...), append([]float32(nil), v...)}
	b.AdamW(wrap(one[0]), tf(g), wrap(one[1]), wrap(one[2]), n, nDecay, scale, lr, b1, b2, eps, wd, 5)

	gs := append([]float32(nil), g...)
	b.Scale(wrap(gs), n, scale)
	view := func(x []float32, lo, hi int) *engine.Tensor { return wrap(x[lo:hi]) }
	b.AdamW(view(two[0], 0, nDecay), view(gs, 0, nDecay), view(two[1], 0, nDecay), view(two[2], 0, nDecay),
		nDecay, nDecay, 1, lr, b1, b2, eps, wd, 5)
	b.AdamW(view(two[0], nDecay, n), view(gs, nDecay, n), view(two[1], nDecay, n), view(two[2], nDecay, n),
		n-nDecay, 0, 1, lr, b1, b2, eps, wd, 5)
	for k, name := range []string{"p", "m", "v"} {
		for i := range n {
			if math.Float32bits(one[k][i]) != math.Float32bits(two[k][i]) {
				t.Fatalf("%s[%d]: one call %v, two calls %v", name, i, one[k][i], two[k][i])
			}
		}
	}
}
