package cuda

import (
	"testing"

	"github.com/moerl/moerl/engine"
	"github.com/moerl/moerl/engine/cpu"
)

// TestMisuseContract holds both backends to engine.Backend's contract on
// the same broken calls: each panics at the call, with a message that
// starts with the backend's name and the op ("cpu: Gemm: …", "cuda: Gemm:
// …"), and afterwards the backend still works and Sync reports nothing.
func TestMisuseContract(t *testing.T) {
	gpu, _, _ := newFake(t, true)
	for _, be := range []engine.Backend{cpu.New(), gpu} {
		t.Run(be.Name(), func(t *testing.T) {
			x, y, z, w := be.NewF32(16), be.NewF32(16), be.NewF32(8), be.NewF32(4)
			ids := be.NewI32(4)
			for _, tc := range []struct {
				op   string
				call func()
			}{
				{"Add", func() { be.Add(x, x, 17) }},
				{"Add", func() { be.Add(x, x, -1) }},
				{"Scale", func() { be.Scale(ids, 4, 2) }},
				{"RoPE", func() { be.RoPE(x, ids, 1, 1, 3, 1e4) }},
				{"RouterTopK", func() { be.RouterTopK(x, ids, x, x, 1, 4, 5) }},
				{"RouterDispatch", func() { be.RouterDispatch(ids, ids, x, ids, 2, 4, 2) }},
				{"GemmGrouped", func() { be.GemmGrouped(false, 2, 2, 2, x, x, 4, 0, x, x, 2) }},
				{"GemmGroupedT", func() { be.GemmGroupedT(2, 2, 2, x, nil, x, x, ids, -1) }},
				{"GemmGroupedSwiGLU", func() { be.GemmGroupedSwiGLU(2, 2, 2, x, nil, x, x, 4, x, x, ids, x, 2) }},
				{"GemmGroupedSwiGLUBackward", func() { be.GemmGroupedSwiGLUBackward(2, 2, 2, x, x, 4, x, x, x, ids, x, x, 2) }},
				{"RouterLoad", func() { be.RouterLoad(x, x, ids, 2, 0) }},
				{"TokenLogProbsFused", func() { be.TokenLogProbsFused(x, x, x, x, ids, x, 2, 9) }},
				{"TokenLogProbsFused", func() { be.TokenLogProbsFused(x, x, x, x, x, x, 2, 4) }},
				{"Sample", func() { be.Sample(ids, x, x, x, 1, 4, -1, 0, 1) }},
				{"AdamW", func() { be.AdamW(x, x, x, x, 4, 4, 1, 1e-3, 0.9, 0.95, 1e-8, 0, 0) }},
				{"Gemm", func() { be.Gemm(false, false, 2, 2, 2, 1, x, 0, 1, x, 0, 2, 0, x, 0, 2) }},
				{"Gemm", func() { be.Gemm(false, false, 4, 5, 1, 1, x, 0, 1, x, 0, 5, 0, x, 0, 5) }},
				{"Upload", func() { be.Upload(x, []float32{1, 2, 3}) }},
				{"DownloadI32", func() { be.DownloadI32(make([]int32, 5), ids) }},
				{"Copy", func() { be.Copy(ids, x) }},
				{"Cast", func() { be.Cast(x, x, 16) }},
				{"Cast", func() { be.Cast(be.New(engine.BF16, 8), x, 16) }},
				// out over x; sum one element past x's start (only sum = x exactly is allowed); dim 0.
				{"ResidualRMSNorm", func() { be.ResidualRMSNorm(y.View(0, 8), x.View(0, 8), y.View(8, 2), x.View(0, 8), z, w, 2, 4, 1e-5) }},
				{"ResidualRMSNorm", func() { be.ResidualRMSNorm(x.View(1, 8), y.View(0, 8), y.View(8, 2), x.View(0, 8), z, w, 2, 4, 1e-5) }},
				{"ResidualRMSNorm", func() { be.ResidualRMSNorm(x, y, w, z, z, w, 2, 0, 1e-5) }},
			} {
				mustPanic(t, be.Name()+": "+tc.op, tc.call)
			}
			be.Upload(x, make([]float32, 16))
			be.Add(x, x, 16)
			got := make([]float32, 16)
			be.Download(got, x)
			if err := be.Sync(); err != nil {
				t.Errorf("Sync after the panics: %v", err)
			}
		})
	}
}
