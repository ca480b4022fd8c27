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
// training steps, and sampling.
func TestModelOnEmulator(t *testing.T) {
	gpu := emulatedBackend(t)
	cfg := paritytest.SmallConfig(false)
	paritytest.Model(t, gpu, cfg)
	paritytest.Training(t, gpu, cfg, 2, 3, 1e-4)
	paritytest.Sampling(t, gpu, cfg)
}

// TestOnPolicyOnEmulator: sampling on the emulated CUDA backend records the
// log-probs that its training forward recomputes, bit for bit (the decode
// attention kernel follows attn_fwd's order).
func TestOnPolicyOnEmulator(t *testing.T) {
	paritytest.OnPolicy(t, emulatedBackend(t), paritytest.SmallConfig(false))
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

// TestGraphsOnEmulator: Generate's decode steps replayed as CUDA graphs
// sample the same tokens with the same log-probs, bit for bit, as the same
// steps launched op by op (MOERL_CUDA_GRAPHS=0), over several calls that
// reuse the recorded shapes and one that compacts the batch.
func TestGraphsOnEmulator(t *testing.T) {
	lib := os.Getenv("MOERL_EMU_LIB")
	if lib == "" {
		t.Skip("MOERL_EMU_LIB is not set; make kernels-emu-gotest runs this test")
	}
	cfg := paritytest.SmallConfig(false)
	run := func(graphs bool) ([][]moe.Sequence, int) {
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
		var out [][]moe.Sequence
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
			out = append(out, seqs)
		}
		if f.emuErr != nil {
			t.Fatal(f.emuErr)
		}
		return out, f.graphLaunches
	}
	withGraphs, launches := run(true)
	direct, none := run(false)
	if launches == 0 || none != 0 {
		t.Fatalf("graph launches: %d with graphs, %d with MOERL_CUDA_GRAPHS=0", launches, none)
	}
	for c := range withGraphs {
		for s := range withGraphs[c] {
			g, d := withGraphs[c][s], direct[c][s]
			if !slices.Equal(g.Tokens, d.Tokens) || !slices.Equal(g.LogProbs, d.LogProbs) {
				t.Errorf("call %d sequence %d: graphs sampled %v %v, direct %v %v", c, s, g.Tokens, g.LogProbs, d.Tokens, d.LogProbs)
			}
		}
	}
	t.Logf("%d decode steps replayed as graphs", launches)
}
