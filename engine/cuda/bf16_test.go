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
