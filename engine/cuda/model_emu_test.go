package cuda

import (
	"math"
	"math/rand/v2"
	"os"
	"slices"
	"testing"

	"github.com/moerl/moerl/engine"
	"github.com/moerl/moerl/engine/cpu"
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

func emuModelConfig(dense bool) moe.Config {
	return moe.Config{Vocab: tokenizer.Default().VocabSize(), DModel: 32, Layers: 2, Heads: 2, Experts: 3, TopK: 2,
		ExpertHidden: 24, DenseFFN: dense, MaxSeq: 16, RopeTheta: 10000, NormEps: 1e-6, InitStd: 0.1, AuxLossCoef: 0.01}
}

func relDiff(a, b []float32) float64 {
	var d, n float64
	for i := range a {
		if math.IsNaN(float64(a[i])) {
			return math.Inf(1)
		}
		d += (float64(a[i]) - float64(b[i])) * (float64(a[i]) - float64(b[i]))
		n += float64(b[i]) * float64(b[i])
	}
	return math.Sqrt(d / math.Max(n, 1e-30))
}

// TestModelOnEmulator runs the whole model through the CUDA backend's
// launchers and kernels on the emulator and compares it with the CPU
// backend: forward log-probs, every parameter's gradient, three training
// steps, and sampling (reproducible, log-probs equal to a CPU forward's).
func TestModelOnEmulator(t *testing.T) {
	gpu := emulatedBackend(t)
	for _, dense := range []bool{false, true} {
		cfg := emuModelConfig(dense)
		mc, _ := moe.New(cfg, cpu.New(), 3)
		mg, err := moe.New(cfg, gpu, 3)
		if err != nil {
			t.Fatal(err)
		}
		B, T := 2, cfg.MaxSeq
		r := rand.New(rand.NewPCG(11, 12))
		ids, targets, c := make([]int32, B*T), make([]int32, B*T), make([]float32, B*T)
		for i := range ids {
			ids[i], targets[i], c[i] = int32(r.IntN(cfg.Vocab)), int32(r.IntN(cfg.Vocab)), float32(r.NormFloat64())
		}
		pass := func(m *moe.Model) ([]float32, []float32) {
			a := m.NewActs(B, T)
			defer a.Free(m.Backend())
			m.ZeroGrad()
			lp := slices.Clone(m.Forward(a, ids, targets, moe.ForwardOptions{Entropy: true}))
			m.Backward(a, c)
			return lp, m.HostGrads()
		}
		lc, gc := pass(mc)
		lg, gg := pass(mg)
		if err := gpu.Sync(); err != nil {
			t.Fatal(err)
		}
		if e := relDiff(lg, lc); e > 1e-5 {
			t.Errorf("dense=%v: log-probs rel. error %.2g (bound 1e-5)", dense, e)
		}
		for _, p := range mc.ParamList() {
			if e := relDiff(gg[p.Off:p.Off+p.Len()], gc[p.Off:p.Off+p.Len()]); e > 1e-4 {
				t.Errorf("dense=%v: gradient of %s rel. error %.2g (bound 1e-4)", dense, p.Name, e)
			}
		}
	}

	// Three training steps from the same weights and batches.
	cfg := emuModelConfig(false)
	docs, _ := moe.Synthetic("copy", 64, 1)
	corpus, _ := moe.EncodeCorpus(docs, tokenizer.Default())
	tc := moe.DefaultTrain
	tc.Steps, tc.Batch, tc.SeqLen, tc.Warmup = 3, 2, cfg.MaxSeq, 1
	losses := func(be engine.Backend) []float64 {
		m, _ := moe.New(cfg, be, 5)
		a := m.NewActs(tc.Batch, tc.SeqLen)
		data := engine.NewRNG(1, engine.StreamData)
		var out []float64
		for s := range tc.Steps {
			st, err := m.TrainStep(a, corpus.Batch(data, tc.Batch, tc.SeqLen), tc, s)
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, st.Loss)
		}
		return out
	}
	lc, lg := losses(cpu.New()), losses(gpu)
	for s := range lc {
		if d := math.Abs(lg[s]-lc[s]) / lc[s]; !(d < 1e-4) {
			t.Errorf("training step %d: loss %.6f emulated, %.6f CPU", s+1, lg[s], lc[s])
		}
	}

	// Sampling: one seed, the same tokens twice; recorded log-probs match
	// a CPU forward of the same weights on those tokens.
	mg, _ := moe.New(cfg, gpu, 6)
	mc, _ := moe.New(cfg, cpu.New(), 6)
	prompts := [][]int32{{tokenizer.BOS, 10, 11}, {tokenizer.BOS, 12}}
	o := moe.SampleOptions{Temperature: 1, MaxNew: 6}
	s1, err := mg.Generate(prompts, 2, o, engine.NewRNG(3, engine.StreamSample))
	if err != nil {
		t.Fatal(err)
	}
	s2, _ := mg.Generate(prompts, 2, o, engine.NewRNG(3, engine.StreamSample))
	T := cfg.MaxSeq
	a := mc.NewActs(len(s1), T)
	ids, targets := make([]int32, len(s1)*T), make([]int32, len(s1)*T)
	for i, q := range s1 {
		if !slices.Equal(q.Tokens, s2[i].Tokens) {
			t.Errorf("sequence %d differs between two runs with one seed", i)
		}
		full := append(slices.Clone(prompts[q.Prompt]), q.Tokens...)
		for j := 0; j+1 < len(full); j++ {
			ids[i*T+j], targets[i*T+j] = full[j], full[j+1]
		}
	}
	lp := mc.Forward(a, ids, targets, moe.ForwardOptions{})
	for i, q := range s1 {
		pl := len(prompts[q.Prompt])
		for j, v := range q.LogProbs {
			if d := math.Abs(float64(v - lp[i*T+pl-1+j])); d > 1e-4 {
				t.Errorf("sequence %d token %d: log-prob %g emulated, %g on the CPU", i, j, v, lp[i*T+pl-1+j])
			}
		}
	}
}

// TestRLStepOnEmulator runs one GRPO step and one PPO step (critic
// included) of the RL trainer on the emulated CUDA backend: the loop runs,
// its numbers are finite, and the trainer's log-probs equal the sampler's.
func TestRLStepOnEmulator(t *testing.T) {
	gpu := emulatedBackend(t)
	cfg := emuModelConfig(false)
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
		if st.LogpGap > 1e-4 || math.IsNaN(st.Loss) || math.IsNaN(st.Entropy) || math.IsNaN(st.GradNorm) {
			t.Errorf("%s: log-prob gap %g, loss %g, entropy %g, grad norm %g", preset, st.LogpGap, st.Loss, st.Entropy, st.GradNorm)
		}
	}
}
