package cuda

import (
	"math"
	"os"
	"reflect"
	"slices"
	"strings"
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
	be, _ := emulated(t, emulatorLib(t))
	return be
}

// emulatorLib is the emulator library's path, or a skip.
func emulatorLib(t *testing.T) string {
	t.Helper()
	lib := os.Getenv("MOERL_EMU_LIB")
	if lib == "" {
		t.Skip("MOERL_EMU_LIB is not set; make kernels-emu-gotest runs this test")
	}
	return lib
}

// emulated is a fresh emulated CUDA backend and its fake driver, closed
// when the test ends, which then fails if the emulator reported an error.
func emulated(t *testing.T, lib string) (*Backend, *fakeDriver) {
	t.Helper()
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
	return be, f
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
// its numbers are finite, and the trainer's log-probs are the sampler's
// bits; and the GRPO step again in bf16 mode, whose workspaces (views of
// the trainer's, bf16 tensors among them) hold the bf16 storage.
func TestRLStepOnEmulator(t *testing.T) {
	gpu := emulatedBackend(t)
	cfg := paritytest.SmallConfig(false)
	cfg.MaxSeq = 24
	for _, name := range []string{"grpo", "ppo", "grpo in bf16"} {
		preset, bf16 := strings.CutSuffix(name, " in bf16")
		if bf16 {
			if err := gpu.SetGEMMPrecision(GEMMBF16); err != nil {
				t.Fatal(err)
			}
			defer gpu.SetGEMMPrecision(GEMMFP32)
		}
		rc, _ := rl.DefaultConfig(preset)
		rc.Steps, rc.Prompts, rc.MaxNew, rc.Difficulties = 1, 2, 6, []int{2}
		rc.Algo.GroupSize = min(rc.Algo.GroupSize, 2)
		policy, _ := moe.New(cfg, gpu, 1)
		ref, _ := moe.New(cfg, gpu, 1)
		ref.Freeze() // as moerl rl loads it
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
			t.Errorf("%s: log-prob gap %g, loss %g, entropy %g, grad norm %g", name, st.LogpGap, st.Loss, st.Entropy, st.GradNorm)
		}
	}
}

// emulatedRun is what TestGraphsOnEmulator and TestBF16StorageOnEmulator
// compare: three Generate calls (the last compacts the batch), four
// training steps, and the weights after them.
type emulatedRun struct {
	seqs     [][]moe.Sequence
	losses   []float64
	weights  []float32
	graphs   int
	launched map[string]int // kernel launches by name, graphs' kernels as recorded
}

// runEmulated runs that work on a fresh emulated CUDA backend, handed to
// the model through wrap (which may set the backend up and return it, or
// a wrapper of it).
func runEmulated(t *testing.T, lib string, wrap func(*Backend) engine.Backend) emulatedRun {
	t.Helper()
	cfg := paritytest.SmallConfig(false)
	cb, f := emulated(t, lib)
	be := wrap(cb)
	m, err := moe.New(cfg, be, 7)
	if err != nil {
		t.Fatal(err)
	}
	var r emulatedRun
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
	r.graphs, r.launched = f.graphLaunches, f.launched()
	return r
}

// sameRuns reports where b differs from a, bit for bit.
func sameRuns(t *testing.T, what string, a, b emulatedRun) {
	t.Helper()
	for c := range a.seqs {
		for s := range a.seqs[c] {
			x, y := a.seqs[c][s], b.seqs[c][s]
			if !slices.Equal(x.Tokens, y.Tokens) || !slices.Equal(x.LogProbs, y.LogProbs) {
				t.Errorf("call %d sequence %d: %s sampled %v %v, else %v %v", c, s, what, x.Tokens, x.LogProbs, y.Tokens, y.LogProbs)
			}
		}
	}
	if !slices.Equal(a.losses, b.losses) {
		t.Errorf("training %s: loss, aux loss, grad norm per step %v; else %v", what, a.losses, b.losses)
	}
	if !slices.Equal(a.weights, b.weights) {
		t.Errorf("the weights after 4 training steps differ %s", what)
	}
}

// TestGraphsOnEmulator: work replayed as CUDA graphs computes, bit for bit,
// what the same work launched op by op (MOERL_CUDA_GRAPHS=0) computes:
// Generate's decode steps, over calls that reuse the recorded shapes and one
// that compacts the batch, and training steps, whose forward and backward
// are replayed from the third step on.
func TestGraphsOnEmulator(t *testing.T) {
	lib := emulatorLib(t)
	plain := func(b *Backend) engine.Backend { return b }
	g := runEmulated(t, lib, plain)
	t.Setenv("MOERL_CUDA_GRAPHS", "0")
	d := runEmulated(t, lib, plain)
	if g.graphs == 0 || d.graphs != 0 {
		t.Fatalf("graph launches: %d with graphs, %d with MOERL_CUDA_GRAPHS=0", g.graphs, d.graphs)
	}
	sameRuns(t, "with graphs", g, d)
	t.Logf("%d graph launches (decode steps, training forwards and backwards)", g.graphs)
}

// wideInputs is a CUDA backend that does not offer engine.GEMMInput's
// narrow storage: its models keep every activation, and the weights their
// experts' products read, in float32.
type wideInputs struct{ *Backend }

func (wideInputs) GEMMInputDType() engine.DType { return engine.F32 }

// wideActivations is a CUDA backend that keeps engine.GEMMInput's narrow
// storage but not engine.ActivationStorage's: the experts' gate and up
// values stay float32.
type wideActivations struct{ *Backend }

func (wideActivations) ActivationDType() engine.DType { return engine.F32 }

// TestBF16StorageOnEmulator: in bf16 mode, the tensors kept in bf16
// because only bf16 GEMMs read them (the experts' SwiGLU output, the
// gradients dy, dgate and dup, and the copy of the weights the experts'
// products read in sampling and in training) change no bit of sampling or
// training against keeping them in float32. Keeping the experts' gate and
// up values in bf16 too changes no sample and no forward (the first
// step's loss), and moves the training that follows by no more than
// bf16's rounding.
func TestBF16StorageOnEmulator(t *testing.T) {
	lib := emulatorLib(t)
	bf16 := func(wrap func(*Backend) engine.Backend) func(*Backend) engine.Backend {
		return func(b *Backend) engine.Backend {
			if err := b.SetGEMMPrecision(GEMMBF16); err != nil {
				t.Fatal(err)
			}
			return wrap(b)
		}
	}
	full := runEmulated(t, lib, bf16(func(b *Backend) engine.Backend { return b }))
	gemmOnly := runEmulated(t, lib, bf16(func(b *Backend) engine.Backend { return wideActivations{b} }))
	wide := runEmulated(t, lib, bf16(func(b *Backend) engine.Backend { return wideInputs{b} }))
	sameRuns(t, "with bf16 storage of what only GEMMs read", gemmOnly, wide)
	for _, k := range []string{"sgemm_grouped_swiglu_w16_s16_bf16", "sgemm_grouped_a16_w16_bf16",
		"sgemm_grouped_t_a16_b16_bf16", "sgemm_grouped_t_b16_bf16", "sgemm_grouped_swiglu_bwd_a16_w16_d16_bf16",
		"sgemm_grouped_swiglu_w16_g16_s16_bf16", "sgemm_grouped_swiglu_bwd_a16_w16_g16_d16_bf16", "combine_bwd_d16"} {
		if full.launched[k]+gemmOnly.launched[k] == 0 {
			t.Errorf("the bf16-storage runs never launched %s", k)
		}
	}

	if !reflect.DeepEqual(full.seqs, gemmOnly.seqs) {
		t.Errorf("bf16 gate and up values change the samples")
	}
	if full.losses[0] != gemmOnly.losses[0] {
		t.Errorf("bf16 gate and up values change the first forward's loss: %v, else %v", full.losses[0], gemmOnly.losses[0])
	}
	for i := range full.losses {
		if d := math.Abs(full.losses[i] - gemmOnly.losses[i]); d > 1e-2*math.Abs(gemmOnly.losses[i])+1e-6 {
			t.Errorf("training value %d (loss, aux loss, grad norm per step) with bf16 gate and up values is %v, else %v",
				i, full.losses[i], gemmOnly.losses[i])
		}
	}
	var num, den float64
	for i, w := range gemmOnly.weights {
		d := float64(full.weights[i] - w)
		num, den = num+d*d, den+float64(w)*float64(w)
	}
	if rel := math.Sqrt(num / den); rel == 0 || rel > 1e-3 {
		t.Errorf("weights after 4 steps with bf16 gate and up values: relative difference %.3g, want in (0, 1e-3]", rel)
	} else {
		t.Logf("weights after 4 steps with bf16 gate and up values: relative difference %.3g", rel)
	}
}

// TestPrecisionSwitchOnEmulator: a model's sampler, whose workspaces hold
// bf16 tensors in bf16 mode and float32 ones outside it, follows a change
// of the GEMM precision between calls: each call samples what a fresh
// model samples in that precision.
func TestPrecisionSwitchOnEmulator(t *testing.T) {
	be := emulatedBackend(t)
	cfg := paritytest.SmallConfig(false)
	m, err := moe.New(cfg, be, 7)
	if err != nil {
		t.Fatal(err)
	}
	gen := func(m *moe.Model) []moe.Sequence {
		seqs, err := m.Generate([][]int32{{1, 2}, {3}, {4, 5, 6}}, 2, moe.SampleOptions{Temperature: 1, MaxNew: 4},
			engine.NewRNG(3, engine.StreamSample))
		if err != nil {
			t.Fatal(err)
		}
		return seqs
	}
	defer be.SetGEMMPrecision(GEMMFP32)
	for _, p := range []GEMMPrecision{GEMMBF16, GEMMFP32, GEMMBF16, GEMMFP32} {
		if err := be.SetGEMMPrecision(p); err != nil {
			t.Fatal(err)
		}
		fresh, _ := moe.New(cfg, be, 7)
		if got, want := gen(m), gen(fresh); !reflect.DeepEqual(got, want) {
			t.Errorf("%v: the model's sampler, made in the other precision, samples %v; a fresh model %v", p, got, want)
		}
		fresh.Free()
	}
}
