package cpu

import (
	"fmt"
	"math"
	"os"
	"slices"
	"strings"
	"testing"
)

// forEachSIMDPath runs f on every path this CPU supports, the Go one last.
func forEachSIMDPath(t *testing.T, f func(t *testing.T, p *simdPath)) {
	t.Helper()
	for _, p := range simdAvailable {
		t.Run(p.name, func(t *testing.T) { f(t, p) })
	}
}

// withSIMDPath makes p the active path while f runs.
func withSIMDPath(p *simdPath, f func()) {
	old := simdActive.Load()
	simdActive.Store(p)
	defer simdActive.Store(old)
	f()
}

// ulps is the distance between a and b in units in the last place,
// counting across zero; it is 0 for two NaNs and huge for one.
func ulps(a, b float32) int64 {
	if a != a || b != b {
		if a != a && b != b {
			return 0
		}
		return math.MaxInt64
	}
	key := func(x float32) int64 {
		b := int64(math.Float32bits(x))
		if b&0x80000000 != 0 {
			return -(b & 0x7fffffff)
		}
		return b
	}
	d := key(a) - key(b)
	if d < 0 {
		d = -d
	}
	return d
}

// expWant is e^x correctly rounded to float32 (float64 math.Exp is within
// an ulp of float64, far below float32 rounding).
func expWant(x float32) float32 { return float32(math.Exp(float64(x))) }

// TestVectorExp checks each path's exponential against math.Exp on a grid
// of every 2⁻¹² over [−105, 90] (results from 0 through the subnormals to
// overflow), on every float32 of short ranges, and on the special values,
// and checks the float64 sum expSum returns.
func TestVectorExp(t *testing.T) {
	var xs []float32
	for x := -105.0; x <= 90; x += 1.0 / 4096 {
		xs = append(xs, float32(x))
	}
	// Every float32 in ranges near the ends of the reduction interval, near
	// the subnormal and overflow thresholds, and near 0 and 1.
	for _, lim := range [][2]float32{{0.34, 0.35}, {-0.35, -0.34}, {-87.5, -87.2}, {88.6, 88.8}, {0.999, 1.001}, {1e-7, 1.01e-7}} {
		for x := lim[0]; x <= lim[1]; x = math.Nextafter32(x, lim[1]+1) {
			xs = append(xs, x)
		}
	}
	inf := float32(math.Inf(1))
	specials := []float32{0, float32(math.Copysign(0, -1)), inf, -inf, float32(math.NaN()), math.MaxFloat32, -math.MaxFloat32,
		88.72283, 88.72284, -103.97, -103.98, -87.33654, -1e-45, 1e-45, 1e30, -1e30}
	xs = append(xs, specials...)
	dst := make([]float32, len(xs))
	var vectorBits []uint32
	forEachSIMDPath(t, func(t *testing.T, p *simdPath) {
		sum := p.expSum(dst, xs, 0)
		if p != simdGo {
			// The vector paths differ only in width and in how they
			// scale by 2ⁿ, which rounds once either way.
			if vectorBits == nil {
				vectorBits = bits([][]float32{dst})
			} else if !slices.Equal(bits([][]float32{dst}), vectorBits) {
				t.Errorf("results differ from the first vector path's")
			}
		}
		var worst, worstScalar int64
		var worstX float32
		var want float64
		for i, x := range xs {
			got := dst[i]
			if d := ulps(got, expWant(x)); d > worst {
				worst, worstX = d, x
			}
			worstScalar = max(worstScalar, ulps(got, exp32(x)))
			if !math.IsNaN(float64(got)) {
				want += float64(got)
			}
		}
		t.Logf("%d inputs: worst %d ulp from math.Exp (at %v), %d ulp from exp32", len(xs), worst, worstX, worstScalar)
		if worst > 2 || worstScalar > 2 {
			t.Errorf("worst error %d ulp at %v (want ≤ 2), %d ulp from exp32", worst, worstX, worstScalar)
		}
		for i, x := range specials {
			got, w := dst[len(xs)-len(specials)+i], expWant(x)
			exactCase := x == 0 || math.IsInf(float64(x), 0) || x != x || w == 0 || math.IsInf(float64(w), 0)
			if exactCase && ulps(got, w) != 0 {
				t.Errorf("exp(%v) = %v, want %v", x, got, w)
			}
		}
		if !math.IsNaN(sum) { // the NaN input makes it NaN
			t.Errorf("sum with a NaN term = %v, want NaN", sum)
		}
		finite := xs[:len(xs)-len(specials)]
		s := p.expSum(dst, finite, 0)
		if math.Abs(s-want)/want > 1e-12 {
			t.Errorf("sum %v, want %v", s, want)
		}
		if s2 := p.sumExp(finite, 0); s2 != s {
			t.Errorf("sumExp %v, expSum %v", s2, s)
		}
	})
}

// TestSIMDKernelsTails checks every kernel at every length through three
// registers' worth, with the shift applied, against the Go path, and that
// no kernel writes past the end of its slices.
func TestSIMDKernelsTails(t *testing.T) {
	const guard = 12345.5
	r := newRand(42)
	forEachSIMDPath(t, func(t *testing.T, p *simdPath) {
		for n := 0; n <= 50; n++ {
			x := randVec(r, n+8, 4)
			mk := func(v []float32) []float32 {
				b := make([]float32, n+8)
				copy(b, v)
				for i := n; i < len(b); i++ {
					b[i] = guard
				}
				return b[:n]
			}
			guarded := func(name string, b []float32) {
				for _, v := range b[n : n+8] {
					if v != guard {
						t.Fatalf("n=%d: %s wrote past the end", n, name)
					}
				}
			}
			xn := mk(x[:n])
			shift := float32(0.7)

			dst := mk(nil)
			s := p.expSum(dst, xn, shift)
			ref := make([]float32, n)
			sref := expSumGo(ref, xn, shift)
			guarded("expSum", dst[:n+8])
			for i := range ref {
				if ulps(dst[i], ref[i]) > 2 {
					t.Fatalf("n=%d: expSum[%d] = %v, want %v", n, i, dst[i], ref[i])
				}
			}
			if math.Abs(s-sref) > 1e-6*sref || p.sumExp(xn, shift) != s {
				t.Fatalf("n=%d: sums %v and %v, want %v", n, s, p.sumExp(xn, shift), sref)
			}
			if n > 0 {
				if got, want := p.maxOf(xn), maxOf(xn); got != want {
					t.Fatalf("n=%d: maxOf = %v, want %v", n, got, want)
				}
				neg := mk(nil)
				for i := range neg {
					neg[i] = -1 - float32(i) // the tail's lanes must not win
				}
				if got := p.maxOf(neg); got != -1 {
					t.Fatalf("n=%d: maxOf of negatives = %v, want -1", n, got)
				}
			}

			sc := mk(xn)
			p.scale(sc, 1.5)
			guarded("scale", sc[:n+8])
			for i, v := range xn {
				if sc[i] != v*1.5 {
					t.Fatalf("n=%d: scale[%d] = %v, want %v", n, i, sc[i], v*1.5)
				}
			}

			up, dout := mk(randVec(r, n, 1)), mk(randVec(r, n, 1))
			out := mk(nil)
			p.swiglu(out, xn, up)
			guarded("swiglu", out[:n+8])
			want := make([]float32, n)
			swigluGo(want, xn, up)
			for i := range want {
				if ulps(out[i], want[i]) > 4 {
					t.Fatalf("n=%d: swiglu[%d] = %v, want %v", n, i, out[i], want[i])
				}
			}
			dg, du := mk(randVec(r, n, 1)), mk(randVec(r, n, 1))
			dgw, duw := append([]float32(nil), dg...), append([]float32(nil), du...)
			p.swigluBackward(dg, du, dout, xn, up)
			guarded("swigluBackward dgate", dg[:n+8])
			guarded("swigluBackward dup", du[:n+8])
			swigluBackwardGo(dgw, duw, dout, xn, up)
			for i := range dgw {
				// Both sides accumulate into a value of order 1, so compare
				// against its scale, not the ulp of a cancelled sum.
				if math.Abs(float64(dg[i]-dgw[i])) > 1e-6 || math.Abs(float64(du[i]-duw[i])) > 1e-6 {
					t.Fatalf("n=%d: swigluBackward[%d] = %v, %v; want %v, %v", n, i, dg[i], du[i], dgw[i], duw[i])
				}
			}
		}
	})
}

// TestSwiGLUExtremes runs both SwiGLU kernels where e^(−gate) overflows,
// underflows or is NaN.
func TestSwiGLUExtremes(t *testing.T) {
	inf := float32(math.Inf(1))
	gate := []float32{-200, -90, -88, -50, -1e-30, 0, 1e-30, 50, 88, 90, 200, inf, -inf, float32(math.NaN()), 3, -3, 1, 2}
	n := len(gate)
	up, dout := make([]float32, n), make([]float32, n)
	for i := range up {
		up[i], dout[i] = 1.5, -0.5
	}
	want, dgw, duw := make([]float32, n), make([]float32, n), make([]float32, n)
	swigluGo(want, gate, up)
	swigluBackwardGo(dgw, duw, dout, gate, up)
	forEachSIMDPath(t, func(t *testing.T, p *simdPath) {
		out, dg, du := make([]float32, n), make([]float32, n), make([]float32, n)
		p.swiglu(out, gate, up)
		p.swigluBackward(dg, du, dout, gate, up)
		for i, g := range gate {
			for _, c := range []struct {
				name      string
				got, want float32
			}{{"out", out[i], want[i]}, {"dgate", dg[i], dgw[i]}, {"dup", du[i], duw[i]}} {
				if ulps(c.got, c.want) > 4 {
					t.Errorf("gate %v: %s = %v, want %v", g, c.name, c.got, c.want)
				}
			}
		}
	})
}

// TestSIMDPathsAgree runs the ops built on the kernels on every path and
// bounds how far a vector path's results are from the Go path's: the
// documented bound for callers comparing paths.
func TestSIMDPathsAgree(t *testing.T) {
	r := newRand(7)
	const batch, seq, heads, hd = 2, 40, 2, 16
	n := batch * seq * heads * hd
	q, k, v, dout := randVec(r, n, 1), randVec(r, n, 1), randVec(r, n, 1), randVec(r, n, 1)
	const rows, vocab = 37, 70
	logits, targets, dlogp := randVec(r, rows*vocab, 4), randInts(r, rows, vocab), randVec(r, rows, 1)
	const m = 1000
	gate, up, dsw := randVec(r, m, 5), randVec(r, m, 1), randVec(r, m, 1)
	run := func() [][]float32 {
		b := New()
		out, lse := zeros(n), zeros(batch*heads*seq)
		dq, dk, dv := zeros(n), zeros(n), zeros(n)
		b.Attention(wrap(out), wrap(lse), tf(q), tf(k), tf(v), batch, seq, heads, hd)
		b.AttentionBackward(wrap(dq), wrap(dk), wrap(dv), tf(dout), tf(q), tf(k), tf(v), wrap(out), wrap(lse), batch, seq, heads, hd)
		dec := zeros(batch * heads * hd)
		b.AttentionDecode(wrap(dec), tf(q[:batch*heads*hd]), tf(k), tf(v), ti([]int32{seq, seq / 2}), batch, seq, heads, hd)
		lp, tl, ent, dl := zeros(rows), zeros(rows), zeros(rows), zeros(rows*vocab)
		b.TokenLogProbs(wrap(lp), wrap(tl), tf(logits), ti(targets), rows, vocab)
		b.TokenLogProbsBackward(wrap(dl), tf(dlogp), tf(logits), wrap(tl), ti(targets), rows, vocab)
		b.Entropy(wrap(ent), tf(logits), wrap(tl), rows, vocab)
		sw, dg, du := zeros(m), zeros(m), zeros(m)
		b.SwiGLU(wrap(sw), tf(gate), tf(up), m)
		b.SwiGLUBackward(wrap(dg), wrap(du), tf(dsw), tf(gate), tf(up), m)
		return [][]float32{out, lse, dq, dk, dv, dec, lp, tl, ent, dl, sw, dg, du}
	}
	names := []string{"attention out", "attention lse", "dq", "dk", "dv", "decode out", "logp", "lse", "entropy", "dlogits", "swiglu", "dgate", "dup"}
	var ref [][]float32
	withSIMDPath(simdGo, func() { ref = run() })
	forEachSIMDPath(t, func(t *testing.T, p *simdPath) {
		var got [][]float32
		withSIMDPath(p, func() { got = run() })
		for i, g := range got {
			// The bound is relative to the output's size, because
			// gradients mix terms of both signs.
			e := relErr(g, f64s(ref[i]))
			if e > 1e-6 {
				t.Errorf("%s: relative difference %.2g from the go path > 1e-6", names[i], e)
			}
			if testing.Verbose() {
				t.Logf("%s: %.2g", names[i], e)
			}
		}
	})
}

func ExampleSIMDPaths() {
	fmt.Println(SIMDPaths()[len(SIMDPaths())-1])
	// Output: go
}

func TestSetSIMDPath(t *testing.T) {
	defer SetSIMDPath(SIMDPath())
	for _, name := range SIMDPaths() {
		if err := SetSIMDPath(name); err != nil || SIMDPath() != name {
			t.Errorf("SetSIMDPath(%q) = %v, path now %q", name, err, SIMDPath())
		}
	}
	before := SIMDPath()
	err := SetSIMDPath("sse9")
	if err == nil || !strings.Contains(err.Error(), `"sse9"`) {
		t.Errorf("SetSIMDPath(sse9) = %v, want an error naming the path", err)
	}
	if SIMDPath() != before {
		t.Errorf("a failed SetSIMDPath changed the path to %q", SIMDPath())
	}
	if os.Getenv("MOERL_SIMD") == "" && SIMDEnvErr() != nil {
		t.Errorf("SIMDEnvErr() = %v with MOERL_SIMD unset", SIMDEnvErr())
	}
}
