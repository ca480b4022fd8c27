package cuda

import (
	"math"
	"os"
	"slices"
	"testing"

	"github.com/moerl/moerl/engine"
	"github.com/moerl/moerl/internal/paritytest"
	"github.com/moerl/moerl/moe"
	"github.com/moerl/moerl/moe/tokenizer"
	"github.com/moerl/moerl/rl"
)

// emulatedBackend is the CUDA backend on the fake driver with every launch
// run by the kernel emulator (kernels/emu), or a skip where the emulator
// library is not built (make kernels-emu-gotest builds it).
func emulatedBackend(t *testing.T) *Backend {
	t.Helper()
	lib := os.Getenv("MOERL_EMU_LIB")
	if lib == "" {
		t.Skip("MOERL_EMU_LIB is not set; make kernels-emu-gotest runs this test")
	}
	f := newFakeDriver()
	f.useEmulator(t, lib)
	be, err := newBackend(f, nil, "emulator: fallback GEMM kernel", 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if f.emuErr != nil {
			t.Errorf("%v", f.emuErr)
		}
		be.Close()
	})
	return be
}

// TestModelOnEmulator runs the whole model through the CUDA backend's
// launchers and kernels on the emulator and compares it with the CPU
// backend: forward log-probs and every gradient (MoE and dense), three
// training steps, and sampling; and the three training steps again with
// the GEMM products in bf16, whose losses stay within bf16's rounding of
// the CPU's.
func TestModelOnEmulator(t *testing.T) {
	gpu := emulatedBackend(t)
	cfg := paritytest.SmallConfig(false)
	paritytest.Model(t, gpu, cfg)
	paritytest.Training(t, gpu, cfg, 2, 3, 1e-4)
	paritytest.Sampling(t, gpu, cfg)
	t.Run("bf16", func(t *testing.T) {
		if err := gpu.SetGEMMPrecision(GEMMBF16); err != nil {
			t.Fatal(err)
		}
		defer gpu.SetGEMMPrecision(GEMMFP32)
		paritytest.Training(t, gpu, cfg, 2, 3, 5e-3)
	})
}

// TestOnPolicyOnEmulator: sampling on the emulated CUDA backend records the
// log-probs that its training forward recomputes, bit for bit (the decode
// attention kernel follows attn_fwd's order, and our GEMM kernels, in
// every precision, sum each output in an order of its own row), with the fallback
// GEMM kernel in float32, TF32 and bf16.
func TestOnPolicyOnEmulator(t *testing.T) {
	be := emulatedBackend(t)
	for _, p := range []GEMMPrecision{GEMMFP32, GEMMTF32, GEMMBF16} { // the tensor-core twins of the GEMM kernels too
		t.Run(p.String(), func(t *testing.T) {
			if err := be.SetGEMMPrecision(p); err != nil {
				t.Fatal(err)
			}
			paritytest.OnPolicy(t, be, paritytest.SmallConfig(false))
		})
	}
}

// TestRLStepOnEmulator runs one GRPO step and one PPO step (critic
// included) of the RL trainer on the emulated CUDA backend: the loop runs,
// its numbers are finite, and the trainer's log-probs are the sampler's bits.
func TestRLStepOnEmulator(t *testing.T) {
	gpu := emulatedBackend(t)
	cfg := paritytest.SmallConfig(false)
	cfg.MaxSeq = 24
	for _, preset := range []string{"grpo", "ppo"} {
		rc, _ := rl.DefaultConfig(preset)
		rc.Steps, rc.Prompts, rc.MaxNew, rc.Difficulties = 1, 2, 6, []int{2}
		rc.Algo.GroupSize = min(rc.Algo.GroupSize, 2)
		policy, _ := moe.New(cfg, gpu, 1)
		ref, _ := moe.New(cfg, gpu, 1)
		tr, err := rl.NewTrainer(rc, policy, ref, tokenizer.Default())
		if err != nil {
			t.Fatal(err)
		}
		st, err := tr.TrainStep()
		if err != nil {
			t.Fatal(err)
		}
		if err := gpu.Sync(); err != nil {
			t.Fatal(err)
		}
		if st.LogpGap != 0 || math.IsNaN(st.Loss) || math.IsNaN(st.Entropy) || math.IsNaN(st.GradNorm) {
			t.Errorf("%s: log-prob gap %g, loss %g, entropy %g, grad norm %g", preset, st.LogpGap, st.Loss, st.Entropy, st.GradNorm)
		}
	}
}

// TestGraphsOnEmulator: work replayed as CUDA graphs computes, bit for bit,
// what the same work launched op by op (MOERL_CUDA_GRAPHS=0) computes:
// Generate's decode steps, over calls that reuse the recorded shapes and one
// that compacts the batch, and training steps, whose forward and backward
// are replayed from the third step on.
func TestGraphsOnEmulator(t *testing.T) {
	lib := os.Getenv("MOERL_EMU_LIB")
	if lib == "" {
		t.Skip("MOERL_EMU_LIB is not set; make kernels-emu-gotest runs this test")
	}
	cfg := paritytest.SmallConfig(false)
	type result struct {
		seqs    [][]moe.Sequence
		losses  []float64
		weights []float32
		graphs  int
	}
	run := func(graphs bool) result {
		if !graphs {
			t.Setenv("MOERL_CUDA_GRAPHS", "0")
		}
		f := newFakeDriver()
		f.useEmulator(t, lib)
		be, err := newBackend(f, nil, "emulator", 0)
		if err != nil {
			t.Fatal(err)
		}
		defer be.Close()
		m, err := moe.New(cfg, be, 7)
		if err != nil {
			t.Fatal(err)
		}
		var r result
		for call, o := range []moe.SampleOptions{
			{Temperature: 1, MaxNew: 5},
			{Temperature: 1, MaxNew: 5},
			{Temperature: 0.7, TopK: 5, MaxNew: 5, MaxNewPer: []int{5, 1, 1, 1, 1, 1, 1, 1}}, // compacts after step 1
		} {
			seqs, err := m.Generate([][]int32{{1, 2}, {3}, {4, 5, 6}, {7}, {8}, {9}, {10}, {11}}, 2, o,
				engine.NewRNG(uint64(call), engine.StreamSample))
			if err != nil {
				t.Fatal(err)
			}
			r.seqs = append(r.seqs, seqs)
		}
		const B, T = 2, 8
		docs := [][]int32{{1, 2, 3, 4, 5, 6, 7, 8, 9}, {9, 8, 7, 6, 5, 4, 3, 2, 1}}
		acts := m.NewActs(B, T)
		defer acts.Free(be)
		tc := moe.DefaultTrain
		tc.Batch, tc.SeqLen, tc.Steps = B, T, 4
		for i := range tc.Steps {
			st, err := m.TrainStep(acts, moe.NewBatch(docs, T, 0), tc, i)
			if err != nil {
				t.Fatal(err)
			}
			r.losses = append(r.losses, st.Loss, st.AuxLoss, st.GradNorm)
		}
		r.weights = make([]float32, m.Params.Len())
		be.Download(r.weights, m.Params)
		if err := be.Sync(); err != nil {
			t.Fatal(err)
		}
		if f.emuErr != nil {
			t.Fatal(f.emuErr)
		}
		r.graphs = f.graphLaunches
		return r
	}
	g, d := run(true), run(false)
	if g.graphs == 0 || d.graphs != 0 {
		t.Fatalf("graph launches: %d with graphs, %d with MOERL_CUDA_GRAPHS=0", g.graphs, d.graphs)
	}
	for c := range g.seqs {
		for s := range g.seqs[c] {
			a, b := g.seqs[c][s], d.seqs[c][s]
			if !slices.Equal(a.Tokens, b.Tokens) || !slices.Equal(a.LogProbs, b.LogProbs) {
				t.Errorf("call %d sequence %d: graphs sampled %v %v, direct %v %v", c, s, a.Tokens, a.LogProbs, b.Tokens, b.LogProbs)
			}
		}
	}
	if !slices.Equal(g.losses, d.losses) {
		t.Errorf("training with graphs: loss, aux loss, grad norm per step %v; direct %v", g.losses, d.losses)
	}
	if !slices.Equal(g.weights, d.weights) {
		t.Errorf("the weights after 4 training steps differ with graphs")
	}
	t.Logf("%d graph launches (decode steps, training forwards and backwards)", g.graphs)
}
