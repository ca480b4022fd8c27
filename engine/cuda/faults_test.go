package cuda

// Failures injected into the fake driver in the middle of real work: a
// kernel launch or a cuBLAS call that fails at its n-th call. The error
// must stop a training run at the step it happened in, through the run
// layer's own loop (run.RunPretrain, what `moerl pretrain` runs), and must
// come out of the Sync that follows a generate call, naming the call that
// failed; no device work may reach the driver after it.

import (
	"encoding/binary"
	"math"
	"strings"
	"testing"

	"github.com/moerl/moerl/engine"
	"github.com/moerl/moerl/moe"
	"github.com/moerl/moerl/run"
)

// CUresult codes the injected faults use.
const (
	cudaErrorLaunchFailed       = 719 // CUDA_ERROR_LAUNCH_FAILED
	blasStatusExecutionFailed   = 13  // CUBLAS_STATUS_EXECUTION_FAILED
	blasStatusExecutionFailedNm = "CUBLAS_STATUS_EXECUTION_FAILED"
)

// faultBackend is a backend on the fake driver with a fake cuBLAS that
// checks and counts GEMMs without computing them, and balanced routing (see
// fakeRouting). The caller closes it: after a sticky fault Close reports the
// lost context, as the real driver would.
func faultBackend(t testing.TB) (*Backend, *fakeDriver, *fakeBlas) {
	t.Helper()
	f := newFakeDriver()
	fb := &fakeBlas{drv: f, noCompute: true}
	b, err := newBackend(f, fb, "", 0)
	if err != nil {
		t.Fatal(err)
	}
	fakeRouting(f)
	return b, f, fb
}

// fakeRouting stands in for the two kernels whose results the host reads
// back in a training step, since the fake runs no kernel: dispatch_offsets
// writes balanced expert runs (expert e gets the assignments [e·n/E,
// (e+1)·n/E)), as a trained router roughly does, so that the model runs
// every expert's GEMMs; sumsq_final writes 1, a finite gradient norm.
func fakeRouting(f *fakeDriver) {
	f.hooks["dispatch_offsets"] = func(args []uint64) {
		n, nE, dst := int(int32(args[1])), int(int32(args[2])), uintptr(args[3])
		out := f.resolve(dst, uint64(nE+1)*4)
		for e := 0; e <= nE; e++ {
			binary.LittleEndian.PutUint32(out[4*e:], uint32(e*n/nE))
		}
	}
	f.hooks["sumsq_final"] = func(args []uint64) {
		binary.LittleEndian.PutUint64(f.resolve(uintptr(args[2]), 8), math.Float64bits(1))
	}
}

// tinyModel is a model small enough for the fake: 2 layers, 4 experts,
// the default tokenizer's vocabulary.
func tinyModel() moe.Config {
	cfg, _ := moe.Preset("moe-micro")
	cfg.DModel, cfg.Heads, cfg.ExpertHidden, cfg.MaxSeq = 32, 2, 32, 16
	return cfg
}

// TestLaunchFailureStopsTraining: an rmsnorm_fwd launch in the middle of
// step 2 fails with a sticky CUDA_ERROR_LAUNCH_FAILED. The pretraining run
// stops at step 2 with the launch named, and nothing reaches the driver
// after the failure.
func TestLaunchFailureStopsTraining(t *testing.T) {
	tc := moe.DefaultTrain
	tc.Steps, tc.Batch, tc.SeqLen, tc.Warmup = 1, 2, 16, 1
	s := run.Pretrain{Model: tinyModel(), Train: tc, Corpus: run.Corpus{Synthetic: "copy", Docs: 64, Seed: 1}}
	// One clean step counts the launches of a step.
	b1, f1, _ := faultBackend(t)
	if _, err := run.RunPretrain(run.NewEnv(b1), t.TempDir(), s, run.Fresh); err != nil {
		t.Fatal(err)
	}
	perStep := f1.launched()["rmsnorm_fwd"]
	b1.Close()

	b, f, _ := faultBackend(t)
	f.inject("rmsnorm_fwd", perStep+perStep/2, cudaErrorLaunchFailed, "CUDA_ERROR_LAUNCH_FAILED", true)
	s.Train.Steps = 5
	_, err := run.RunPretrain(run.NewEnv(b), t.TempDir(), s, run.Fresh)
	t.Logf("the run's error: %v", err)
	for _, want := range []string{"pretrain step 2:", "cuLaunchKernel rmsnorm_fwd (grid", "CUDA_ERROR_LAUNCH_FAILED"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("RunPretrain = %v, want an error containing %q", err, want)
		}
	}
	if len(f.afterFailure) != 0 {
		t.Errorf("%d driver calls after the failure (first %s); the backend should drop work until Sync",
			len(f.afterFailure), f.afterFailure[0])
	}
	if err := b.Close(); err == nil || !strings.Contains(err.Error(), "CUDA_ERROR_LAUNCH_FAILED") {
		t.Errorf("Close after a lost context = %v, want the sticky error", err)
	}
}

// TestGemmFailureStopsGenerate: a cuBLAS GEMM fails in the middle of a
// generate call (the 40th: in decode step 2 of this model). Generate returns
// in-range tokens and finite log-probs (the downloads after the failure give
// zeros), the Sync after it — what `moerl generate` and `moerl eval` call —
// returns the error naming cublasGemmEx, no work reaches the driver in
// between, Generate returns the error (it syncs before it returns), and the
// backend then generates again (the fault was not sticky).
func TestGemmFailureStopsGenerate(t *testing.T) {
	t.Setenv("MOERL_CUDA_GRAPHS", "0") // every GEMM a call of its own (TestGraphFailureStopsGenerate: in a graph)
	b, f, _ := faultBackend(t)
	defer b.Close()
	m, err := moe.New(tinyModel(), b, 1)
	if err != nil {
		t.Fatal(err)
	}
	gen := func() []moe.Sequence {
		t.Helper()
		seqs, err := m.Generate([][]int32{{1, 5, 6}, {1, 7}}, 2, moe.SampleOptions{Temperature: 1, MaxNew: 6},
			engine.NewRNG(1, engine.StreamSample))
		if err != nil {
			t.Fatal(err)
		}
		return seqs
	}
	gen()
	if err := b.Sync(); err != nil {
		t.Fatalf("a clean generate: %v", err)
	}
	f.inject("cublasGemmEx", 40, blasStatusExecutionFailed, blasStatusExecutionFailedNm, false)
	_, err = m.Generate([][]int32{{1, 5, 6}, {1, 7}}, 2, moe.SampleOptions{Temperature: 1, MaxNew: 6},
		engine.NewRNG(1, engine.StreamSample))
	if len(f.afterFailure) != 0 {
		t.Errorf("%d driver calls after the failure: %v", len(f.afterFailure), f.afterFailure)
	}
	// Generate syncs before it returns: the fault is its error.
	for _, want := range []string{"generate: cublasGemmEx(op", blasStatusExecutionFailedNm} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Generate after a failed GEMM = %v, want an error containing %q", err, want)
		}
	}
	if err := b.Sync(); err != nil {
		t.Errorf("the error was reported once; Sync after it: %v", err)
	}
	f.faults = nil
	gen()
	if err := b.Sync(); err != nil {
		t.Errorf("generate after the reported error: %v", err)
	}
}

// TestGraphFailureStopsGenerate: Generate records each decode step shape as
// a CUDA graph and replays it; a replay that fails (the second launch of a
// later call) is Generate's error, naming cuGraphLaunch, and the model
// generates again after it. (TestGraphsOnEmulator checks that replays
// sample what direct steps sample.)
func TestGraphFailureStopsGenerate(t *testing.T) {
	b, f, _ := faultBackend(t)
	defer b.Close()
	m, err := moe.New(tinyModel(), b, 1)
	if err != nil {
		t.Fatal(err)
	}
	gen := func() error {
		// 1 + 3 blocks of 4 tokens: the first block runs directly, the
		// second is recorded, the third replays it.
		_, err := m.Generate([][]int32{{1, 5, 6}, {1, 7}}, 2, moe.SampleOptions{Temperature: 1, MaxNew: 13, BlockSteps: 4},
			engine.NewRNG(1, engine.StreamSample))
		return err
	}
	if err := gen(); err != nil {
		t.Fatal(err)
	}
	if f.graphLaunches == 0 {
		t.Fatalf("a 13-token generate replayed no graph")
	}
	f.inject("cuGraphLaunch", 2, 719, "CUDA_ERROR_LAUNCH_FAILED", false)
	err = gen()
	for _, want := range []string{"generate: ", "cuGraphLaunch", "CUDA_ERROR_LAUNCH_FAILED"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Generate after a failed graph launch = %v, want an error containing %q", err, want)
		}
	}
	f.faults = nil
	if err := gen(); err != nil {
		t.Errorf("generate after the reported error: %v", err)
	}
}

// TestGraphsFreed: the graphs a model records live as long as the
// workspaces whose tensors they use. A sampler that grows closes its decode
// graphs, FreeSampler and Acts.Free close the rest, so none is left on the
// driver.
func TestGraphsFreed(t *testing.T) {
	b, f, _ := faultBackend(t)
	defer b.Close()
	m, err := moe.New(tinyModel(), b, 1)
	if err != nil {
		t.Fatal(err)
	}
	live := func() int {
		f.mu.Lock()
		defer f.mu.Unlock()
		return len(f.graphs)
	}
	gen := func(prompts int) {
		t.Helper()
		ps := make([][]int32, prompts)
		for i := range ps {
			ps[i] = []int32{1, int32(5 + i)}
		}
		o := moe.SampleOptions{Temperature: 1, MaxNew: 13, BlockSteps: 4} // the second block is recorded
		if _, err := m.Generate(ps, 2, o, engine.NewRNG(1, engine.StreamSample)); err != nil {
			t.Fatal(err)
		}
	}
	gen(2)
	if live() == 0 {
		t.Fatal("a 13-token generate recorded no graph")
	}
	gen(4) // twice the rows: the workspaces grow, the old graphs go
	after := live()
	gen(4)
	if live() != after {
		t.Errorf("the same shape again: %d graphs live, then %d", after, live())
	}
	m.FreeSampler()
	if n := live(); n != 0 {
		t.Errorf("after FreeSampler, %d graphs live", n)
	}

	acts := m.NewActs(2, 8)
	tc := moe.DefaultTrain
	tc.Batch, tc.SeqLen, tc.Steps = 2, 8, 3
	docs := [][]int32{{1, 2, 3, 4, 5, 6, 7, 8, 9}, {9, 8, 7, 6, 5, 4, 3, 2, 1}}
	for i := range tc.Steps {
		if _, err := m.TrainStep(acts, moe.NewBatch(docs, 8, 0), tc, i); err != nil {
			t.Fatal(err)
		}
	}
	if n := live(); n != 2 {
		t.Errorf("after 3 training steps, %d graphs live, want 2 (forward and backward)", n)
	}
	acts.Free(b)
	if n := live(); n != 0 {
		t.Errorf("after Acts.Free, %d graphs live", n)
	}
	if err := b.Sync(); err != nil {
		t.Fatal(err)
	}
}
