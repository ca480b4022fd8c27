package cuda

import (
	"math"
	"math/rand/v2"
	"testing"

	"github.com/moerl/moerl/engine"
	"github.com/moerl/moerl/engine/cpu"
)

// castInputs are floats of every kind a bf16 Cast must round: normal
// values across magnitudes, exact ties either way, subnormals, ±0, ±Inf,
// NaNs with payloads, and values that round past the largest finite bf16.
func castInputs(n int) []float32 {
	r := rand.New(rand.NewPCG(7, 8))
	x := []float32{0, float32(math.Copysign(0, -1)), 1 + 0x1p-8, 1 + 3*0x1p-8, -(1 + 0x1p-8), math.MaxFloat32,
		-math.MaxFloat32, float32(math.Inf(1)), float32(math.Inf(-1)), math.Float32frombits(0x7f800001),
		math.Float32frombits(0xffc12345), math.Float32frombits(0x00018000), math.Float32frombits(0x00000001)}
	for len(x) < n/2 {
		x = append(x, float32(r.NormFloat64()*math.Pow(10, float64(r.IntN(20)-10))))
	}
	for len(x) < n {
		x = append(x, math.Float32frombits(r.Uint32()))
	}
	return x
}

// castMatchesCPU: a Cast to bf16 and back on be gives the CPU's bits on
// every input, into views at odd element offsets that leave their
// neighbours alone; Zero and Copy of bf16 views do the same.
func castMatchesCPU(t *testing.T, be engine.Backend) {
	const n = 3001
	x := castInputs(n)
	want := make([]float32, n)
	ref := cpu.New()
	rb := ref.New(engine.BF16, n)
	ref.Cast(rb, &engine.Tensor{Shape: []int{n}, DType: engine.F32, F: x}, n)
	ref.Cast(&engine.Tensor{Shape: []int{n}, DType: engine.F32, F: want}, rb, n)

	src := be.NewF32(n)
	be.Upload(src, x)
	h := be.New(engine.BF16, n+2) // the cast lands at elements [1, n+1)
	back := be.NewF32(n + 2)
	be.Cast(h.View(1, n), src, n)
	hc := be.New(engine.BF16, n+2)
	be.Copy(hc, h)
	be.Cast(back, hc, n+2)
	got := make([]float32, n+2)
	be.Download(got, back)
	if err := be.Sync(); err != nil {
		t.Fatal(err)
	}
	if got[0] != 0 || got[n+1] != 0 {
		t.Errorf("the cast into a view wrote its neighbours: %v, %v", got[0], got[n+1])
	}
	for i := range n {
		if g, w := math.Float32bits(got[1+i]), math.Float32bits(want[i]); g != w {
			t.Fatalf("Cast of %v (%#08x): %s gives %#08x, the CPU %#08x", x[i], math.Float32bits(x[i]), be.Name(), g, w)
		}
	}

	// Zero of an odd-length view at an odd offset clears just that.
	be.Zero(hc.View(3, 5))
	be.Cast(back, hc, n+2)
	be.Download(got, back)
	if err := be.Sync(); err != nil {
		t.Fatal(err)
	}
	for i := range n + 2 {
		w := float32(0)
		if i >= 1 && i <= n && (i < 3 || i >= 8) {
			w = want[i-1]
		}
		if math.Float32bits(got[i]) != math.Float32bits(w) && !(math.IsNaN(float64(got[i])) && math.IsNaN(float64(w))) {
			t.Fatalf("after Zero of bf16 elements [3, 8): element %d is %v, want %v", i, got[i], w)
		}
	}
	for _, tt := range []*engine.Tensor{src, h, back, hc} {
		be.Free(tt)
	}
}

// TestCast runs the bf16 casts on the GPU.
func TestCast(t *testing.T) { castMatchesCPU(t, gpuBackend(t)) }

// weights16MatchRounded: in every GEMM precision, the grouped products
// with bf16 weights give the bits of the same products with the fp32
// weights rounded to bf16 first (in bf16 mode: of the fp32 weights
// themselves, which staging rounds alike), so a sampler that reads a
// bf16 copy computes what a training forward on the fp32 weights does.
func weights16MatchRounded(t *testing.T, be *Backend) {
	r := rand.New(rand.NewPCG(3, 4))
	offsets := []int32{0, 37, 37, 120, 165, 170}
	const groups, rows, n, k = 5, 170, 70, 33
	vec := func(n int) []float32 {
		v := make([]float32, n)
		for i := range v {
			v[i] = float32(r.NormFloat64())
		}
		return v
	}
	x, w1, w3 := vec(rows*k), vec(groups*k*n), vec(groups*k*n)
	up := func(v []float32) *engine.Tensor { t := be.NewF32(len(v)); be.Upload(t, v); return t }
	round := func(v []float32) []float32 {
		out := make([]float32, len(v))
		for i, f := range v {
			out[i] = engine.BF16Float(engine.BF16Bits(f))
		}
		return out
	}
	to16 := func(t32 *engine.Tensor) *engine.Tensor {
		t := be.New(engine.BF16, t32.Len())
		be.Cast(t, t32, t32.Len())
		return t
	}
	off := be.NewI32(len(offsets))
	be.UploadI32(off, offsets)
	xt, w1t, w3t := up(x), up(w1), up(w3)
	w1r, w3r := up(round(w1)), up(round(w3))
	w1h, w3h := to16(w1t), to16(w3t)
	out := func() []*engine.Tensor {
		return []*engine.Tensor{be.NewF32(rows * n), be.NewF32(rows * n), be.NewF32(rows * n)}
	}
	host := func(ts []*engine.Tensor) []float32 {
		var all []float32
		for _, t := range ts {
			h := make([]float32, t.Len())
			be.Download(h, t)
			all = append(all, h...)
		}
		return all
	}
	was := be.GEMMPrecision()
	defer be.SetGEMMPrecision(was)
	for _, p := range []GEMMPrecision{GEMMFP32, GEMMTF32, GEMMBF16} {
		if err := be.SetGEMMPrecision(p); err != nil {
			t.Fatal(err)
		}
		refW1, refW3 := w1r, w3r
		if p == GEMMBF16 {
			refW1, refW3 = w1t, w3t // staging rounds them to the same bf16 values
		}
		a, b := out(), out()
		be.GemmGroupedSwiGLU(rows, n, k, xt, nil, w1h, w3h, k*n, a[0], a[1], a[2], off, groups)
		be.GemmGroupedSwiGLU(rows, n, k, xt, nil, refW1, refW3, k*n, b[0], b[1], b[2], off, groups)
		be.GemmGrouped(false, rows, n, k, xt, w1h, k*n, 0, a[0], off, groups)
		be.GemmGrouped(false, rows, n, k, xt, refW1, k*n, 0, b[0], off, groups)
		ga, gb := host(a), host(b)
		if err := be.Sync(); err != nil {
			t.Fatal(err)
		}
		for i := range ga {
			if math.Float32bits(ga[i]) != math.Float32bits(gb[i]) {
				t.Fatalf("%v: output %d with bf16 weights is %v, with the rounded fp32 weights %v", p, i, ga[i], gb[i])
			}
		}
	}
}

// TestGroupedBF16Weights runs weights16MatchRounded on the GPU.
func TestGroupedBF16Weights(t *testing.T) { weights16MatchRounded(t, gpuBackend(t)) }

// storage16MatchesF32: in bf16 mode, each grouped op given bf16 operands
// (the tensors moe keeps in bf16 there: the experts' weights, their
// SwiGLU output, dy, dgate, dup) computes the bits it computes on the
// float32 tensors, and writes a bf16 output as the float32 one rounded to
// nearest even; the kernels with those operands (the _a16, _w16, _b16,
// _s16, _d16 and combine_bwd_d16 ones) against the float32 kernels; and
// the _g16 kernels, which keep the gate and up values in bf16, against
// float32 ones fed those values rounded.
func storage16MatchesF32(t *testing.T, be *Backend) {
	was := be.GEMMPrecision()
	defer be.SetGEMMPrecision(was)
	if err := be.SetGEMMPrecision(GEMMBF16); err != nil {
		t.Fatal(err)
	}
	r := rand.New(rand.NewPCG(5, 6))
	const groups, rows, n, k = 5, 170, 70, 33
	vec := func(n int) *engine.Tensor {
		v := make([]float32, n)
		for i := range v {
			v[i] = float32(r.NormFloat64())
		}
		t := be.NewF32(n)
		be.Upload(t, v)
		return t
	}
	to16 := func(t32 *engine.Tensor) *engine.Tensor {
		h := be.New(engine.BF16, t32.Len())
		be.Cast(h, t32, t32.Len())
		return h
	}
	// host downloads t; a float32 t rounded to bf16 when round is set.
	host := func(t *engine.Tensor, round bool) []float32 {
		if round && t.DType == engine.F32 {
			t = to16(t)
		}
		if t.DType == engine.BF16 {
			w := be.NewF32(t.Len())
			be.Cast(w, t, t.Len())
			t = w
		}
		h := make([]float32, t.Len())
		be.Download(h, t)
		return h
	}
	off := be.NewI32(6)
	be.UploadI32(off, []int32{0, 37, 37, 120, 165, 170})
	perm := be.NewI32(rows)
	idx := make([]int32, rows)
	for i := range idx {
		idx[i] = int32(r.IntN(rows / 2))
	}
	be.UploadI32(perm, idx)
	x, xn, w1, w3, w2 := vec(rows*k), vec(rows*n), vec(groups*k*n), vec(groups*k*n), vec(groups*n*k)
	g, u, dy, xk := vec(rows*n), vec(rows*n), vec(rows*k), vec(rows/2*k)
	inv := be.NewI32(rows)
	p := r.Perm(rows)
	slots := make([]int32, rows)
	for i, v := range p {
		slots[i] = int32(v)
	}
	be.UploadI32(inv, slots)
	dout, wts, yk := vec(rows/2*k), vec(rows), vec(rows*k)
	// op16 is t in bf16 for a narrow run, else t.
	op16 := func(t *engine.Tensor, narrow bool) *engine.Tensor {
		if narrow {
			return to16(t)
		}
		return t
	}
	// out is a float32 output, or a bf16 one in a narrow run.
	out := func(n int, narrow bool) *engine.Tensor {
		if narrow {
			return be.New(engine.BF16, n)
		}
		return be.NewF32(n)
	}
	swiglu := func(narrow bool, a, aRows, b1, b3 *engine.Tensor) []float32 {
		gg, uu, s := be.NewF32(rows*n), be.NewF32(rows*n), out(rows*n, narrow)
		be.GemmGroupedSwiGLU(rows, n, k, a, aRows, b1, b3, k*n, gg, uu, s, off, groups)
		return append(append(host(gg, false), host(uu, false)...), host(s, true)...)
	}
	grouped := func(narrow, transB bool, bm *engine.Tensor, beta float32) []float32 {
		c := be.NewF32(rows * k)
		be.Copy(c, x)
		be.GemmGrouped(transB, rows, k, n, op16(xn, narrow), op16(bm, narrow), n*k, beta, c, off, groups)
		return host(c, false)
	}
	groupedT := func(m, w int, a, aRows, bm *engine.Tensor) []float32 {
		c := be.NewF32(groups * m * w)
		be.Zero(c)
		be.GemmGroupedT(rows, m, w, a, aRows, bm, c, off, groups)
		return host(c, false)
	}

	for _, tc := range []struct {
		name string
		// run computes with bf16 operands (narrow) or float32 ones and
		// returns the outputs, a float32 one rounded where the narrow
		// run's is bf16.
		run func(narrow bool) []float32
	}{
		{"GemmGroupedSwiGLU w16 s16, gathered A", func(narrow bool) []float32 {
			return swiglu(narrow, xk, perm, op16(w1, narrow), op16(w3, narrow))
		}},
		{"GemmGroupedSwiGLU w16 s16", func(narrow bool) []float32 { return swiglu(narrow, x, nil, op16(w1, narrow), op16(w3, narrow)) }},
		{"GemmGroupedSwiGLU w16 s16, no g or u", func(narrow bool) []float32 {
			s := out(rows*n, narrow)
			be.GemmGroupedSwiGLU(rows, n, k, x, nil, op16(w1, narrow), op16(w3, narrow), k*n, nil, nil, s, off, groups)
			return host(s, true)
		}},
		{"GemmGrouped a16 w16", func(narrow bool) []float32 { return grouped(narrow, false, w2, 0) }},
		{"GemmGrouped a16 w16, transposed B, beta 1", func(narrow bool) []float32 { return grouped(narrow, true, w1, 1) }},
		{"GemmGroupedT a16", func(narrow bool) []float32 { return groupedT(n, k, op16(xn, narrow), nil, dy) }},
		{"GemmGroupedT b16, gathered A", func(narrow bool) []float32 { return groupedT(k, n, xk, perm, op16(xn, narrow)) }},
		{"GemmGroupedT a16 b16", func(narrow bool) []float32 {
			return groupedT(n, k, op16(xn, narrow), nil, op16(dy, narrow))
		}},
		{"GemmGroupedSwiGLU w16 g16 s16", func(narrow bool) []float32 {
			gg, uu, s := out(rows*n, narrow), out(rows*n, narrow), out(rows*n, narrow)
			be.GemmGroupedSwiGLU(rows, n, k, xk, perm, op16(w1, narrow), op16(w3, narrow), k*n, gg, uu, s, off, groups)
			return append(append(host(gg, true), host(uu, true)...), host(s, true)...)
		}},
		{"GemmGroupedSwiGLUBackward a16 w16 g16 d16", func(narrow bool) []float32 {
			// The float32 run reads g and u rounded as the bf16 one stores them.
			gr, ur := be.NewF32(rows*n), be.NewF32(rows*n)
			be.Cast(gr, to16(g), rows*n)
			be.Cast(ur, to16(u), rows*n)
			gg, uu, dg, du := op16(gr, narrow), op16(ur, narrow), out(rows*n, narrow), out(rows*n, narrow)
			be.GemmGroupedSwiGLUBackward(rows, n, k, op16(dy, narrow), op16(w2, narrow), n*k, gg, uu, nil, dg, du, off, groups)
			return append(host(dg, true), host(du, true)...)
		}},
		{"GemmGroupedSwiGLUBackward a16 w16 d16, no ds", func(narrow bool) []float32 {
			ds, dg, du := be.NewF32(rows*n), out(rows*n, narrow), out(rows*n, narrow)
			if narrow {
				ds = nil
			}
			d := op16(dy, narrow)
			be.GemmGroupedSwiGLUBackward(rows, n, k, d, op16(w2, narrow), n*k, g, u, ds, dg, du, off, groups)
			return append(host(dg, true), host(du, true)...)
		}},
		{"CombineBackward d16", func(narrow bool) []float32 {
			d, dw := out(rows*k, narrow), be.NewF32(rows)
			be.Zero(d)
			be.Zero(dw)
			be.CombineBackward(d, dw, dout, yk, wts, inv, rows/2, 2, k)
			return append(host(d, true), host(dw, false)...)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, want := tc.run(true), tc.run(false)
			if err := be.Sync(); err != nil {
				t.Fatal(err)
			}
			for i := range want {
				if math.Float32bits(got[i]) != math.Float32bits(want[i]) {
					t.Fatalf("output %d with bf16 operands is %v, with float32 ones %v", i, got[i], want[i])
				}
			}
		})
	}
}

// TestGroupedBF16Storage runs storage16MatchesF32 on the GPU.
func TestGroupedBF16Storage(t *testing.T) { storage16MatchesF32(t, gpuBackend(t)) }
