package moe_test

import (
	"os"
	"testing"

	"github.com/moerl/moerl/engine/cuda"
	"github.com/moerl/moerl/internal/paritytest"
	"github.com/moerl/moerl/moe"
)

// cudaBackend opens the GPU with TF32 off (so float32 GEMMs match the CPU's
// to rounding: the bounds below are for that mode), or skips the test where
// CUDA cannot run; with MOERL_REQUIRE_CUDA=1 (the GPU machine's run.sh sets
// it) it fails instead, so that a machine without a usable driver cannot
// look green.
func cudaBackend(t *testing.T) *cuda.Backend {
	t.Helper()
	be, err := cuda.New()
	if err != nil {
		if os.Getenv("MOERL_REQUIRE_CUDA") == "1" {
			t.Fatalf("MOERL_REQUIRE_CUDA=1 but %v", err)
		}
		t.Skip(err.Error()) // "CUDA unavailable: ..."
	}
	t.Cleanup(func() { be.Close() })
	if err := be.SetTF32(false); err != nil {
		t.Fatal(err)
	}
	return be
}

// TestCUDAModelMatchesCPU: the whole model's forward and every gradient on
// the GPU agree with the CPU backend's (MoE and dense FFN).
func TestCUDAModelMatchesCPU(t *testing.T) {
	cfg := paritytest.SmallConfig(false)
	cfg.MaxSeq = 32
	paritytest.Model(t, cudaBackend(t), cfg)
}

// TestCUDATrainingCurveMatchesCPU trains moe-tiny for 50 steps on both
// backends from the same weights and batches: the loss curves agree within
// 1% at every step.
func TestCUDATrainingCurveMatchesCPU(t *testing.T) {
	gpu := cudaBackend(t)
	cfg, _ := moe.Preset("moe-tiny")
	cfg.MaxSeq = 64
	paritytest.Training(t, gpu, cfg, 8, 50, 0.01)
}

// TestCUDATrainingCurveTF32 is the training-curve test in the mode the GPU
// trains in by default: TF32 GEMMs (inputs rounded to 10 mantissa bits,
// about 1e-3 relative per product) keep the curve within 2% of the CPU's.
func TestCUDATrainingCurveTF32(t *testing.T) {
	gpu := cudaBackend(t)
	if !gpu.HasCublas() {
		t.Skip("no cuBLAS: the fallback GEMM has no TF32 mode")
	}
	if err := gpu.SetTF32(true); err != nil {
		t.Fatal(err)
	}
	cfg, _ := moe.Preset("moe-tiny")
	cfg.MaxSeq = 64
	paritytest.Training(t, gpu, cfg, 8, 50, 0.02)
}

// TestCUDASamplingReproducible: one seed gives the same tokens twice, and
// the log-probs recorded on the GPU match a CPU forward on those tokens.
func TestCUDASamplingReproducible(t *testing.T) {
	cfg := paritytest.SmallConfig(false)
	cfg.MaxSeq = 32
	paritytest.Sampling(t, cudaBackend(t), cfg)
}
