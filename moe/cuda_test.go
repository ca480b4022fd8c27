package moe_test

import (
	"testing"

	"github.com/moerl/moerl/engine/cuda"
	"github.com/moerl/moerl/internal/paritytest"
	"github.com/moerl/moerl/moe"
)

// cudaBackend opens the GPU with TF32 off (so float32 GEMMs match the CPU's
// to rounding), or skips the test where CUDA cannot run.
func cudaBackend(t *testing.T) *cuda.Backend {
	t.Helper()
	be, err := cuda.New()
	if err != nil {
		t.Skipf("CUDA unavailable: %v", err)
	}
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

// TestCUDASamplingReproducible: one seed gives the same tokens twice, and
// the log-probs recorded on the GPU match a CPU forward on those tokens.
func TestCUDASamplingReproducible(t *testing.T) {
	cfg := paritytest.SmallConfig(false)
	cfg.MaxSeq = 32
	paritytest.Sampling(t, cudaBackend(t), cfg)
}
