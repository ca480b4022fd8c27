package cpu

import (
	"math"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/moerl/moerl/engine"
)

func TestExp32(t *testing.T) {
	worst := 0
	check := func(x float32) {
		got, want := exp32(x), float32(math.Exp(float64(x)))
		d := int(math.Float32bits(got)) - int(math.Float32bits(want))
		if d < 0 {
			d = -d
		}
		if d > worst {
			worst = d
		}
		if d > 2 {
			t.Fatalf("exp32(%v) = %v, want %v (%d ulp)", x, got, want, d)
		}
	}
	for x := float32(-100); x <= 100; x += 1.0 / 1024 {
		check(x)
	}
	r := newRand(41)
	for range 200000 {
		check(float32(r.Float64()*20 - 10))
	}
	t.Logf("worst error %d ulp", worst)
	for _, tc := range []struct{ x, want float32 }{
		{float32(math.Inf(1)), float32(math.Inf(1))}, {float32(math.Inf(-1)), 0}, {0, 1}, {200, float32(math.Inf(1))},
	} {
		if got := exp32(tc.x); got != tc.want {
			t.Errorf("exp32(%v) = %v, want %v", tc.x, got, tc.want)
		}
	}
	if got := exp32(float32(math.NaN())); !math.IsNaN(float64(got)) {
		t.Errorf("exp32(NaN) = %v", got)
	}
}

func TestParallelFor(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(0))
	for _, procs := range []int{1, 3} {
		runtime.GOMAXPROCS(procs)
		for _, tc := range []struct{ n, grain int }{{0, 4}, {1, 4}, {10, 3}, {1000, 7}, {5, 0}} {
			hits := make([]atomic.Int32, tc.n)
			parallelFor(tc.n, tc.grain, func(lo, hi int) {
				if g := max(tc.grain, 1); lo%g != 0 || (hi-lo != g && hi != tc.n) {
					t.Errorf("n=%d grain=%d: chunk [%d, %d) not on the grain", tc.n, tc.grain, lo, hi)
				}
				for i := lo; i < hi; i++ {
					hits[i].Add(1)
				}
			})
			for i := range hits {
				if h := hits[i].Load(); h != 1 {
					t.Fatalf("procs=%d n=%d grain=%d: index %d visited %d times", procs, tc.n, tc.grain, i, h)
				}
			}
		}
	}
}

func TestBackendBasics(t *testing.T) {
	b := New()
	if b.Name() != "cpu" {
		t.Errorf("Name() = %q", b.Name())
	}
	if d := b.Device(); !strings.Contains(d, "cores") {
		t.Errorf("Device() = %q, want a core count", d)
	}
	x := b.NewF32(2, 3)
	b.Upload(x, []float32{1, 2, 3, 4, 5, 6})
	y := b.NewF32(6)
	b.Copy(y, x)
	got := make([]float32, 6)
	b.Download(got, y)
	if got[5] != 6 {
		t.Errorf("round trip through Upload, Copy, Download gave %v", got)
	}
	b.Zero(y)
	b.Download(got, y)
	if got[5] != 0 {
		t.Errorf("Zero left %v", got)
	}
	ids := b.NewI32(2)
	b.UploadI32(ids, []int32{7, 8})
	gi := make([]int32, 2)
	b.DownloadI32(gi, ids)
	if gi[1] != 8 {
		t.Errorf("int round trip gave %v", gi)
	}
	// A bf16 tensor: Cast rounds to nearest even on the way down, widens
	// exactly on the way back; Copy and Zero take it too.
	h := b.New(engine.BF16, 6)
	b.Upload(x, []float32{1, 1 + 0x1p-8, 1 + 3*0x1p-8, -2.5, 1e-3, 3e38})
	b.Cast(h, x, 6)
	h2 := b.New(engine.BF16, 6)
	b.Copy(h2, h)
	b.Cast(y, h2, 6)
	b.Download(got, y)
	for i, w := range []float32{1, 1, 1 + 0x1p-6, -2.5, engine.BF16Float(engine.BF16Bits(1e-3)), engine.BF16Float(engine.BF16Bits(3e38))} {
		if got[i] != w {
			t.Errorf("Cast to bf16 and back: element %d is %v, want %v", i, got[i], w)
		}
	}
	b.Zero(h2)
	if h2.BF[2] != 0 {
		t.Errorf("Zero left bf16 bits %#x", h2.BF[2])
	}
	if err := b.Sync(); err != nil {
		t.Errorf("Sync: %v", err)
	}
	b.Free(x)
	if x.F != nil {
		t.Error("Free kept the buffer")
	}
}

// TestMisusePanics checks that a buffer shorter than its shape, or an index
// out of range, stops with a message naming the op.
func TestMisusePanics(t *testing.T) {
	b := New()
	f := func(n int) *engine.Tensor { return engine.HostF32(n) }
	i := func(v ...int32) *engine.Tensor { return ti(v) }
	for _, tc := range []struct {
		want string
		run  func()
	}{
		{"cpu: Add: x", func() { b.Add(f(10), f(5), 10) }},
		{"cpu: Upload", func() { b.Upload(f(3), make([]float32, 4)) }},
		{"cpu: Copy", func() { b.Copy(f(3), f(4)) }},
		{"cpu: Copy", func() { b.Copy(engine.HostBF16(3), f(3)) }},
		{"cpu: Cast: from f32[3]@host to f32[3]@host", func() { b.Cast(f(3), f(3), 3) }},
		{"cpu: Cast: dst", func() { b.Cast(engine.HostBF16(2), f(3), 3) }},
		{"cpu: Gemm: C", func() { b.Gemm(false, false, 2, 2, 2, 1, f(4), 0, 2, f(4), 0, 2, 0, f(3), 0, 2) }},
		{"cpu: Gemm: A row stride", func() { b.Gemm(false, false, 2, 2, 2, 1, f(4), 0, 1, f(4), 0, 2, 0, f(4), 0, 2) }},
		{"cpu: GemmBatched: B", func() { b.GemmBatched(false, false, 2, 2, 2, 1, f(8), 0, 2, 4, f(7), 0, 2, 4, 0, f(8), 0, 2, 4, 2) }},
		{"cpu: Embedding: id 5 out of range", func() { b.Embedding(f(4), f(10), i(0, 5), 2, 2) }},
		{"cpu: RMSNorm: w", func() { b.RMSNorm(f(8), f(2), f(8), f(3), 2, 4, 1e-5) }},
		{"cpu: ResidualRMSNorm: r", func() { b.ResidualRMSNorm(f(8), f(8), f(2), f(8), f(7), f(4), 2, 4, 1e-5) }},
		{"cpu: ResidualRMSNorm: dim must be positive", func() { b.ResidualRMSNorm(f(8), f(8), f(2), f(8), f(8), f(4), 2, 0, 1e-5) }},
		{"cpu: ResidualRMSNorm: sum overlaps x", func() { y := f(9); b.ResidualRMSNorm(y.View(1, 8), f(8), f(2), y.View(0, 8), f(8), f(4), 2, 4, 1e-5) }},
		{"cpu: ResidualRMSNorm: out overlaps r", func() { y := f(8); b.ResidualRMSNorm(f(8), y, f(2), f(8), y, f(4), 2, 4, 1e-5) }},
		{"cpu: ResidualRMSNorm: rstd overlaps w", func() { y := f(4); b.ResidualRMSNorm(f(8), f(8), y.View(2, 2), f(8), f(8), y, 2, 4, 1e-5) }},
		{"cpu: RoPE: odd", func() { b.RoPE(f(6), i(0, 1), 2, 1, 3, 10) }},
		{"cpu: Attention: lse", func() { b.Attention(f(16), f(3), f(16), f(16), f(16), 1, 2, 2, 4) }},
		{"cpu: AttentionDecode: length 5", func() { b.AttentionDecode(f(4), f(4), f(16), f(16), i(5), 1, 4, 1, 4) }},
		{"cpu: RouterTopK: top-3 of 2", func() { b.RouterTopK(f(3), i(0, 0, 0), f(2), f(2), 1, 2, 3) }},
		{"cpu: RouterDispatch: offsets", func() { b.RouterDispatch(i(0, 0), i(0, 0), i(0, 0), i(0, 1), 1, 2, 2) }},
		{"cpu: GemmGrouped: offsets fall", func() { b.GemmGrouped(false, 2, 2, 2, f(4), f(8), 4, 0, f(4), i(0, 3, 2), 2) }},
		{"cpu: GemmGroupedT: offsets run from 0 to 1, want 0 to 2", func() { b.GemmGroupedT(2, 2, 2, f(4), nil, f(4), f(8), i(0, 1, 1), 2) }},
		{"cpu: RouterLoad: load", func() { b.RouterLoad(f(3), f(4), i(0, 1, 2), 2, 2) }},
		{"cpu: Combine: inv entry", func() { b.Combine(f(2), f(4), f(2), i(0, 2), 1, 2, 2) }},
		{"cpu: TokenLogProbs: target -1", func() { b.TokenLogProbs(f(1), f(1), f(4), i(-1), 1, 4) }},
		{"cpu: TokenLogProbsFused: target 4", func() { b.TokenLogProbsFused(f(1), f(1), f(4), f(4), i(4), f(1), 1, 4) }},
		{"cpu: TokenLogProbsFused: dlogits", func() { b.TokenLogProbsFused(f(1), f(1), f(3), f(4), i(0), f(1), 1, 4) }},
		{"cpu: Sample: temperature", func() { b.Sample(i(0), f(1), f(4), f(1), 1, 4, -1, 0, 1) }},
		{"cpu: AdamW: step", func() { b.AdamW(f(2), f(2), f(2), f(2), 2, 2, 1, 1, 0.9, 0.99, 1e-8, 0, 0) }},
		{"cpu: AdamW: nDecay", func() { b.AdamW(f(2), f(2), f(2), f(2), 2, 3, 1, 1, 0.9, 0.99, 1e-8, 0, 1) }},
	} {
		mustPanic(t, tc.want, tc.run)
	}
}
