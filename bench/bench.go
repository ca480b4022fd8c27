// Package bench measures BENCH.md's workloads on a backend: training
// steps, generation and a whole GRPO step of a model preset, each timed
// after a warm-up and synced so that a device error lands in its result.
package bench

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"time"

	"github.com/moerl/moerl/engine"
	"github.com/moerl/moerl/engine/cuda"
	"github.com/moerl/moerl/moe"
	"github.com/moerl/moerl/moe/tokenizer"
	"github.com/moerl/moerl/rl"
)

// Result is one workload's measurement, or the error that stopped it.
type Result struct {
	Workload   string  `json:"workload"`
	Config     string  `json:"config"`
	Device     string  `json:"device"`
	GEMM       string  `json:"gemm"` // "fp32", "tf32" or "bf16": what the GEMMs multiplied in
	TokensPerS float64 `json:"tokens_per_s"`
	MsPerStep  float64 `json:"ms_per_step,omitempty"`
	GFLOPs     float64 `json:"model_gflop_per_s,omitempty"`
	SPerStep   float64 `json:"s_per_step,omitempty"` // rl-step
	GenShare   float64 `json:"gen_share,omitempty"`  // rl-step: share of the step spent sampling
	// WaitShare is the share of the timed wall time the host spent waiting
	// for the device (cuda): near 1 the device is the bound, near 0 the
	// host (its launches, copies and bookkeeping) is.
	WaitShare float64 `json:"wait_share,omitempty"`
	// PeakMemBytes is the most device memory the workload held (the model
	// included), on a backend that counts it (cuda).
	PeakMemBytes int64  `json:"peak_mem_bytes,omitempty"`
	Shape        string `json:"shape"`
	// BlockSteps is the decode steps per host round trip (generate, rl-step).
	BlockSteps int    `json:"block_steps,omitempty"`
	Error      string `json:"error,omitempty"` // the workload failed: no numbers
}

// Waiter is a backend that counts the time the host waits for its device
// (cuda.Backend).
type Waiter interface {
	WaitTime() time.Duration
}

// waited is be's WaitTime, or 0 where it does not count one.
func waited(be engine.Backend) time.Duration {
	if w, ok := be.(Waiter); ok {
		return w.WaitTime()
	}
	return 0
}

// MemCounter is a backend that counts its device memory (cuda.Backend).
type MemCounter interface {
	MemStats() cuda.MemStats
	ResetPeak()
}

// Shape is a workload's size for a model preset: BENCH.md's GPU
// workloads for moe-tiny and moe-small; for moe-micro the CPU peer's
// (peers/torch_cpu_bench.py: train 32×64, generate 64 prompts of 8 + 56).
type Shape struct{ TrainB, TrainT, GenPrompts, GenPromptLen, GenNew int }

var Shapes = map[string]Shape{
	"moe-micro": {32, 64, 64, 8, 56},
	"moe-tiny":  {64, 256, 256, 32, 128},
	"moe-small": {32, 512, 256, 32, 128},
}

// Measure runs one workload and makes its outcome a result: its numbers
// and peak memory, or the error (or panic) that stopped it. It syncs the
// backend after the workload, so that a device error shows up in this
// workload's result and is cleared before the next one.
func Measure(be engine.Backend, workload string, run func() (Result, error)) (r Result) {
	mc, counts := be.(MemCounter)
	if counts {
		mc.ResetPeak()
	}
	defer func() {
		if p := recover(); p != nil {
			be.Sync()
			r = Result{Workload: workload, Error: fmt.Sprintf("panic: %v", p)}
		}
	}()
	r, err := run()
	if serr := be.Sync(); err == nil {
		err = serr
	}
	if err != nil {
		return Result{Workload: workload, Error: err.Error()}
	}
	if counts {
		r.PeakMemBytes = mc.MemStats().Peak
	}
	return r
}

// randomTokens draws n token ids.
func randomTokens(rng *rand.Rand, n, vocab int) []int32 {
	t := make([]int32, n)
	for i := range t {
		t[i] = int32(rng.IntN(vocab))
	}
	return t
}

// Train times training steps of random tokens (after warm untimed ones).
func Train(m *moe.Model, sh Shape, warm, steps int) (Result, error) {
	B, T := sh.TrainB, sh.TrainT
	rng := rand.New(rand.NewPCG(1, 2))
	docs := make([][]int32, B)
	for i := range docs {
		docs[i] = randomTokens(rng, T, m.Cfg.Vocab)
	}
	// T tokens per row give T−1 predictions, as in the peer's x[:, :-1].
	b := moe.NewBatch(docs, T, 0)
	acts := m.NewActs(B, T)
	defer acts.Free(m.Backend())
	tc := moe.DefaultTrain
	tc.Batch, tc.SeqLen, tc.Steps = B, T, warm+steps
	for i := range warm {
		if _, err := m.TrainStep(acts, b, tc, i); err != nil {
			return Result{}, err
		}
	}
	if err := m.Backend().Sync(); err != nil {
		return Result{}, err
	}
	t0, w0 := time.Now(), waited(m.Backend())
	for i := range steps {
		if _, err := m.TrainStep(acts, b, tc, warm+i); err != nil {
			return Result{}, err
		}
	}
	if err := m.Backend().Sync(); err != nil {
		return Result{}, err
	}
	wall := time.Since(t0)
	dt := wall.Seconds() / float64(steps)
	tokens := float64(B * (T - 1))
	return Result{Workload: "train", TokensPerS: tokens / dt, MsPerStep: dt * 1e3,
		GFLOPs: tokens * m.Cfg.FLOPsPerToken(T) / dt / 1e9, Shape: fmt.Sprintf("%d×%d", B, T),
		WaitShare: float64(waited(m.Backend())-w0) / float64(wall)}, nil
}

// Generate times sampling with a KV cache, the median of three runs, in
// blocks of blockSteps decode steps (0: the backend's default).
func Generate(m *moe.Model, sh Shape, blockSteps int) (Result, error) {
	rng := rand.New(rand.NewPCG(3, 4))
	prompts := make([][]int32, sh.GenPrompts)
	for i := range prompts {
		prompts[i] = randomTokens(rng, sh.GenPromptLen, m.Cfg.Vocab)
	}
	o := moe.SampleOptions{Temperature: 1, MaxNew: sh.GenNew, BlockSteps: blockSteps}
	// Untimed runs first warm caches and allocators: one short run, or,
	// on a backend that records graphs, two of the timed workload, the
	// first running each decode block directly and the second recording
	// it, so that the timed runs replay.
	warm := [][][]int32{prompts[:min(8, len(prompts))]}
	wo := moe.SampleOptions{Temperature: 1, MaxNew: 4, BlockSteps: blockSteps}
	if _, ok := m.Backend().(engine.Capturer); ok {
		warm, wo = [][][]int32{prompts, prompts}, o
	}
	for _, ps := range warm {
		if _, err := m.Generate(ps, 1, wo, engine.NewRNG(1, engine.StreamSample)); err != nil {
			return Result{}, err
		}
	}
	// The median of three timed runs: one run of the CPU workload lasts
	// tens of milliseconds, where a scheduler hiccup shows.
	var rates []float64
	var wall, wait time.Duration
	for range 3 {
		t0, w0 := time.Now(), waited(m.Backend())
		seqs, err := m.Generate(prompts, 1, o, engine.NewRNG(1, engine.StreamSample))
		if err != nil {
			return Result{}, err
		}
		if err := m.Backend().Sync(); err != nil {
			return Result{}, err
		}
		n := 0
		for _, s := range seqs {
			n += len(s.Tokens)
		}
		dt := time.Since(t0)
		wall, wait = wall+dt, wait+waited(m.Backend())-w0
		rates = append(rates, float64(n)/dt.Seconds())
	}
	slices.Sort(rates)
	return Result{Workload: "generate", TokensPerS: rates[1],
		Shape:     fmt.Sprintf("%d prompts×%d+%d", sh.GenPrompts, sh.GenPromptLen, sh.GenNew),
		WaitShare: float64(wait) / float64(wall)}, nil
}

// RLStep times one GRPO step (after one untimed step): 32 prompts × 8
// samples, the reference's log-probs and one update. Its tokens/s counts the
// generated tokens per second of the whole step.
func RLStep(m *moe.Model) (Result, error) {
	cfg, err := rl.DefaultConfig("grpo")
	if err != nil {
		return Result{}, err
	}
	const prompt = 16 // "add" prompts are up to 16 tokens with <bos>
	cfg.Prompts, cfg.Algo.GroupSize, cfg.Steps = 32, 8, 2
	cfg.MaxNew = min(128, m.Cfg.MaxSeq-prompt)
	if cfg.MaxNew <= 0 {
		return Result{}, fmt.Errorf("context %d is too short for rl-step", m.Cfg.MaxSeq)
	}
	ref, err := moe.New(m.Cfg, m.Backend(), 1)
	if err != nil {
		return Result{}, err
	}
	ref.Freeze() // the reference only scores, as in moerl rl
	defer ref.Free()
	tr, err := rl.NewTrainer(cfg, m, ref, tokenizer.Default())
	if err != nil {
		return Result{}, err
	}
	if _, err := tr.TrainStep(); err != nil {
		return Result{}, err
	}
	st, err := tr.TrainStep()
	if err != nil {
		return Result{}, err
	}
	step := st.GenSeconds + st.UpdateSeconds
	tokens := st.LenMean * float64(cfg.Prompts*cfg.Algo.GroupSize)
	return Result{Workload: "rl-step", TokensPerS: tokens / step, MsPerStep: step * 1e3, SPerStep: step,
		GenShare: st.GenSeconds / step, Shape: fmt.Sprintf("32×8, ≤%d new", cfg.MaxNew)}, nil
}

// Options are a run's settings: untimed and timed training steps, and the
// decode steps per host round trip of the generate workload (0: the
// backend's default, which rl-step always uses).
type Options struct {
	Warmup, Steps, BlockSteps int
}

// Run builds a model of the named preset on be and measures one workload
// ("train", "generate" or "rl-step"), returning its result or the error
// that stopped it; the model's memory is freed after.
func Run(be engine.Backend, preset, workload string, o Options) Result {
	cfg, err := moe.Preset(preset)
	if err != nil {
		return Result{Workload: workload, Config: preset, Error: err.Error()}
	}
	m, err := moe.New(cfg, be, 1)
	if err != nil {
		return Result{Workload: workload, Config: preset, Error: fmt.Sprintf("model: %v", err)}
	}
	defer m.Free()
	if workload == "generate" {
		m.Freeze() // a sampler needs no gradients or moments (the peer's has none); before Measure counts the peak
	}
	sh := Shapes[preset]
	r := Measure(be, workload, func() (Result, error) {
		switch workload {
		case "train":
			return Train(m, sh, o.Warmup, o.Steps)
		case "generate":
			return Generate(m, sh, o.BlockSteps)
		}
		return RLStep(m) // the trainer's rollouts decode in the backend's default blocks
	})
	r.Config = preset
	if workload != "train" {
		r.BlockSteps = o.BlockSteps
		if r.BlockSteps == 0 || workload == "rl-step" {
			r.BlockSteps = 1
			if _, ok := be.(engine.Capturer); ok {
				r.BlockSteps = moe.DefaultBlockSteps
			}
		}
	}
	return r
}
