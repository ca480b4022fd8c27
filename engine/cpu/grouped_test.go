package cpu

import (
	"math"
	"slices"
	"testing"

	"github.com/moerl/moerl/engine"
)

// TestGemmGrouped checks the grouped products against a float64 reference
// of their definitions, with empty groups among full ones, both layouts of
// B, and beta 0 over NaN (which must not leak) and beta 1.
func TestGemmGrouped(t *testing.T) {
	b := New()
	for _, tc := range []struct {
		name    string
		offsets []int32
		n, k    int
		transB  bool
		beta    float32
	}{
		{"three groups", []int32{0, 3, 7, 12}, 5, 4, false, 0},
		{"empty first and last", []int32{0, 0, 9, 9}, 3, 6, false, 1},
		{"transposed B", []int32{0, 4, 4, 10}, 7, 3, true, 0},
		{"transposed B, accumulate", []int32{0, 1, 2, 5}, 2, 5, true, 1},
		{"one row per group", []int32{0, 1, 2, 3}, 65, 17, false, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newRand(uint64(len(tc.name)))
			G := len(tc.offsets) - 1
			rows := int(tc.offsets[G])
			n, k := tc.n, tc.k
			a, bw := randVec(r, rows*k, 1), randVec(r, G*k*n, 1)
			c0 := randVec(r, rows*n, 1)
			if tc.beta == 0 {
				for i := range c0 {
					c0[i] = float32(math.NaN())
				}
			}
			c := append([]float32(nil), c0...)
			b.GemmGrouped(tc.transB, rows, n, k, tf(a), tf(bw), k*n, tc.beta, wrap(c), ti(tc.offsets), G)
			for g := range G {
				for i := int(tc.offsets[g]); i < int(tc.offsets[g+1]); i++ {
					for j := range n {
						var want float64
						for p := range k {
							w := bw[g*k*n+p*n+j]
							if tc.transB {
								w = bw[g*k*n+j*k+p]
							}
							want += float64(a[i*k+p]) * float64(w)
						}
						if tc.beta != 0 {
							want += float64(c0[i*n+j])
						}
						if got := float64(c[i*n+j]); math.Abs(got-want) > 1e-5*(1+math.Abs(want)) {
							t.Fatalf("C[%d,%d] (group %d) = %g, want %g", i, j, g, got, want)
						}
					}
				}
			}

			// GemmGroupedT with the same groups: C_g += A_gᵀ·B_g, A rows×k, B rows×n.
			bt := randVec(r, rows*n, 1)
			ct0 := randVec(r, G*k*n, 1)
			ct := append([]float32(nil), ct0...)
			b.GemmGroupedT(rows, k, n, tf(a), nil, tf(bt), wrap(ct), ti(tc.offsets), G)
			for g := range G {
				for p := range k {
					for j := range n {
						want := float64(ct0[g*k*n+p*n+j])
						for i := int(tc.offsets[g]); i < int(tc.offsets[g+1]); i++ {
							want += float64(a[i*k+p]) * float64(bt[i*n+j])
						}
						if got := float64(ct[g*k*n+p*n+j]); math.Abs(got-want) > 1e-5*(1+math.Abs(want)) {
							t.Fatalf("C_%d[%d,%d] = %g, want %g", g, p, j, got, want)
						}
					}
				}
			}
		})
	}
}

// TestRouterLoad checks the slot counts and the probability sums.
func TestRouterLoad(t *testing.T) {
	b := New()
	const rows, nE = 5, 3
	probs := randVec(newRand(3), rows*nE, 1)
	load := make([]float32, 2*nE)
	b.RouterLoad(wrap(load), tf(probs), ti([]int32{0, 4, 4, 10}), rows, nE)
	for e, want := range []float32{4, 0, 6} {
		if load[e] != want {
			t.Errorf("load[%d] = %g slots, want %g", e, load[e], want)
		}
		var sum float64
		for r := range rows {
			sum += float64(probs[r*nE+e])
		}
		if load[nE+e] != float32(sum) {
			t.Errorf("load[%d] = %g, want Σ probs = %g", nE+e, load[nE+e], float32(sum))
		}
	}
}

// TestGemmGroupedGathered: the grouped products that read A through row
// indices give the bits of Gather followed by the same product on the
// gathered copy.
func TestGemmGroupedGathered(t *testing.T) {
	b := New()
	r := newRand(21)
	offsets := []int32{0, 5, 5, 12, 20}
	const G, rows, tokens, n, k = 4, 20, 9, 7, 6
	x := randVec(r, tokens*k, 1)
	perm := make([]int32, rows)
	for i := range perm {
		perm[i] = int32(r.IntN(tokens))
	}
	xp := make([]float32, rows*k)
	b.Gather(wrap(xp), tf(x), ti(perm), rows, k)
	b1, b3, dy := randVec(r, G*k*n, 1), randVec(r, G*k*n, 1), randVec(r, rows*n, 1)

	out := func() [3][]float32 {
		return [3][]float32{make([]float32, rows*n), make([]float32, rows*n), make([]float32, rows*n)}
	}
	want, got := out(), out()
	b.GemmGroupedSwiGLU(rows, n, k, tf(xp), nil, tf(b1), tf(b3), k*n, wrap(want[0]), wrap(want[1]), wrap(want[2]), ti(offsets), G)
	b.GemmGroupedSwiGLU(rows, n, k, tf(x), ti(perm), tf(b1), tf(b3), k*n, wrap(got[0]), wrap(got[1]), wrap(got[2]), ti(offsets), G)
	for i := range want {
		if !slices.Equal(got[i], want[i]) {
			t.Fatalf("GemmGroupedSwiGLU through aRows: output %d differs from the gathered copy's", i)
		}
	}
	wt, gt := make([]float32, G*k*n), make([]float32, G*k*n)
	b.GemmGroupedT(rows, k, n, tf(xp), nil, tf(dy), wrap(wt), ti(offsets), G)
	b.GemmGroupedT(rows, k, n, tf(x), ti(perm), tf(dy), wrap(gt), ti(offsets), G)
	if !slices.Equal(gt, wt) {
		t.Fatal("GemmGroupedT through aRows differs from the gathered copy's")
	}
	perm[3] = tokens
	mustPanic(t, "cpu: GemmGroupedT: aRows entry 9 out of range [0, 9)", func() {
		b.GemmGroupedT(rows, k, n, tf(x), ti(perm), tf(dy), wrap(gt), ti(offsets), G)
	})
}

// TestGemmGroupedBF16Weights: bf16 weights give the bits of their exact
// float32 widening.
func TestGemmGroupedBF16Weights(t *testing.T) {
	b := New()
	r := newRand(22)
	offsets := []int32{0, 5, 5, 12}
	const G, rows, n, k = 3, 12, 6, 5
	x := randVec(r, rows*k, 1)
	w := randVec(r, G*k*n, 1)
	w16 := engine.HostBF16(len(w))
	b.Cast(w16, tf(w), len(w))
	wide := make([]float32, len(w))
	b.Cast(wrap(wide), w16, len(w))
	got, want := make([]float32, rows*n), make([]float32, rows*n)
	b.GemmGrouped(false, rows, n, k, tf(x), w16, k*n, 0, wrap(got), ti(offsets), G)
	b.GemmGrouped(false, rows, n, k, tf(x), tf(wide), k*n, 0, wrap(want), ti(offsets), G)
	if !slices.Equal(got, want) {
		t.Fatal("GemmGrouped with bf16 weights differs from its widened weights")
	}
	sw := func(w1, w3 *engine.Tensor) []float32 {
		g, u, s := make([]float32, rows*n), make([]float32, rows*n), make([]float32, rows*n)
		b.GemmGroupedSwiGLU(rows, n, k, tf(x), nil, w1, w3, k*n, wrap(g), wrap(u), wrap(s), ti(offsets), G)
		return append(append(g, u...), s...)
	}
	if !slices.Equal(sw(w16, w16), sw(tf(wide), tf(wide))) {
		t.Fatal("GemmGroupedSwiGLU with bf16 weights differs from its widened weights")
	}
}

// TestGroupedBF16Operands: each grouped op given bf16 operands (the
// tensors a workspace keeps in bf16 where GEMMs round to it) gives the
// bits of the op on their float32 widening, and writes a bf16 output as
// the float32 one rounded to nearest even.
func TestGroupedBF16Operands(t *testing.T) {
	b := New()
	r := newRand(23)
	offsets := ti([]int32{0, 5, 5, 12})
	const G, rows, n, k = 3, 12, 6, 5
	to16 := func(v []float32) *engine.Tensor {
		h := engine.HostBF16(len(v))
		b.Cast(h, tf(v), len(v))
		return h
	}
	wide := func(h *engine.Tensor) []float32 {
		v := make([]float32, h.Len())
		b.Cast(wrap(v), h, len(v))
		return v
	}
	round := func(v []float32) []float32 { return wide(to16(v)) }
	x, w, y := randVec(r, rows*k, 1), randVec(r, G*k*n, 1), randVec(r, rows*n, 1)
	g, u := randVec(r, rows*n, 1), randVec(r, rows*n, 1)
	const toks = rows / 2 // CombineBackward's tokens, k = 2
	dout, wts := randVec(r, toks*n, 1), randVec(r, rows, 1)
	for _, tc := range []struct {
		name string
		// run computes with bf16 operands (narrow) or with their widening
		// and returns the outputs, rounded where the narrow run's are bf16.
		run func(narrow bool) []float32
	}{
		{"GemmGrouped bf16 A", func(narrow bool) []float32 {
			out, a := make([]float32, rows*n), tf(round(x))
			if narrow {
				a = to16(x)
			}
			b.GemmGrouped(false, rows, n, k, a, tf(w), k*n, 0, wrap(out), offsets, G)
			return out
		}},
		{"GemmGroupedT bf16 A and B", func(narrow bool) []float32 {
			out, a, bm := make([]float32, G*k*n), tf(round(x)), tf(round(y))
			if narrow {
				a, bm = to16(x), to16(y)
			}
			b.GemmGroupedT(rows, k, n, a, nil, bm, wrap(out), offsets, G)
			return out
		}},
		{"GemmGroupedSwiGLU bf16 s", func(narrow bool) []float32 {
			gg, uu, s := make([]float32, rows*n), make([]float32, rows*n), make([]float32, rows*n)
			if !narrow {
				b.GemmGroupedSwiGLU(rows, n, k, tf(x), nil, tf(w), tf(w), k*n, wrap(gg), wrap(uu), wrap(s), offsets, G)
				return append(append(gg, uu...), round(s)...)
			}
			s16 := engine.HostBF16(rows * n)
			b.GemmGroupedSwiGLU(rows, n, k, tf(x), nil, tf(w), tf(w), k*n, wrap(gg), wrap(uu), s16, offsets, G)
			return append(append(gg, uu...), wide(s16)...)
		}},
		{"GemmGroupedSwiGLU bf16 g, u and s", func(narrow bool) []float32 {
			gg, uu, s := make([]float32, rows*n), make([]float32, rows*n), make([]float32, rows*n)
			if !narrow {
				b.GemmGroupedSwiGLU(rows, n, k, tf(x), nil, tf(w), tf(w), k*n, wrap(gg), wrap(uu), wrap(s), offsets, G)
				return append(append(round(gg), round(uu)...), round(s)...)
			}
			g16, u16, s16 := engine.HostBF16(rows*n), engine.HostBF16(rows*n), engine.HostBF16(rows*n)
			b.GemmGroupedSwiGLU(rows, n, k, tf(x), nil, tf(w), tf(w), k*n, g16, u16, s16, offsets, G)
			return append(append(wide(g16), wide(u16)...), wide(s16)...)
		}},
		{"GemmGroupedSwiGLUBackward bf16 g and u", func(narrow bool) []float32 {
			dg, du := make([]float32, rows*n), make([]float32, rows*n)
			gt, ut := tf(round(g)), tf(round(u))
			if narrow {
				gt, ut = to16(g), to16(u)
			}
			b.GemmGroupedSwiGLUBackward(rows, n, k, tf(x), tf(w), k*n, gt, ut, nil, wrap(dg), wrap(du), offsets, G)
			return append(dg, du...)
		}},
		{"GemmGroupedSwiGLUBackward bf16 dy, dg, du, no ds", func(narrow bool) []float32 {
			dg, du := make([]float32, rows*n), make([]float32, rows*n)
			if !narrow {
				b.GemmGroupedSwiGLUBackward(rows, n, k, tf(round(x)), tf(w), k*n, tf(g), tf(u), wrap(make([]float32, rows*n)),
					wrap(dg), wrap(du), offsets, G)
				return append(round(dg), round(du)...)
			}
			dg16, du16 := engine.HostBF16(rows*n), engine.HostBF16(rows*n)
			b.GemmGroupedSwiGLUBackward(rows, n, k, to16(x), tf(w), k*n, tf(g), tf(u), nil, dg16, du16, offsets, G)
			return append(wide(dg16), wide(du16)...)
		}},
		{"CombineBackward bf16 dy", func(narrow bool) []float32 {
			inv := ti([]int32{3, 0, 7, 1, 2, 11, 4, 5, 10, 6, 9, 8})
			dw := make([]float32, rows)
			if !narrow {
				dy := make([]float32, rows*n)
				b.CombineBackward(wrap(dy), wrap(dw), tf(dout), tf(y), tf(wts), inv, toks, 2, n)
				return append(round(dy), dw...)
			}
			dy16 := engine.HostBF16(rows * n)
			b.CombineBackward(dy16, wrap(dw), tf(dout), tf(y), tf(wts), inv, toks, 2, n)
			return append(wide(dy16), dw...)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, want := tc.run(true), tc.run(false)
			if !slices.Equal(got, want) {
				t.Fatalf("bf16 operands give\n%v\nthe float32 ones\n%v", got, want)
			}
		})
	}
}
