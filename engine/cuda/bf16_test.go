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
