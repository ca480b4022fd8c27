package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"runtime/pprof"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/moerl/moerl/engine"
	"github.com/moerl/moerl/engine/cuda"
	"github.com/moerl/moerl/moe"
	"github.com/moerl/moerl/moe/tokenizer"
	"github.com/moerl/moerl/rl"
)

// benchResult is one workload's measurement, or the error that stopped it.
type benchResult struct {
	Workload   string  `json:"workload"`
	Config     string  `json:"config"`
	Device     string  `json:"device"`
	GEMM       string  `json:"gemm"` // "fp32" or "tf32": how float32 GEMMs ran
	TokensPerS float64 `json:"tokens_per_s"`
	MsPerStep  float64 `json:"ms_per_step,omitempty"`
	GFLOPs     float64 `json:"model_gflop_per_s,omitempty"`
	SPerStep   float64 `json:"s_per_step,omitempty"` // rl-step
	GenShare   float64 `json:"gen_share,omitempty"`  // rl-step: share of the step spent sampling
	// PeakMemBytes is the most device memory the workload held (the model
	// included), on a backend that counts it (cuda).
	PeakMemBytes int64  `json:"peak_mem_bytes,omitempty"`
	Shape        string `json:"shape"`
	Error        string `json:"error,omitempty"` // the workload failed: no numbers
}

// memCounter is a backend that counts its device memory (cuda.Backend).
type memCounter interface {
	MemStats() cuda.MemStats
	ResetPeak()
}

// tf32Switch is a backend whose float32 GEMMs may run in TF32 (cuda.Backend).
type tf32Switch interface {
	SetTF32(on bool) error
	TF32() bool
}

// benchShape is a workload's size for a model preset: BENCH.md's GPU
// workloads for moe-tiny and moe-small; for moe-micro the CPU peer's
// (peers/torch_cpu_bench.py: train 32×64, generate 64 prompts of 8 + 56).
type benchShape struct{ trainB, trainT, genPrompts, genPromptLen, genNew int }

var benchShapes = map[string]benchShape{
	"moe-micro": {32, 64, 64, 8, 56},
	"moe-tiny":  {64, 256, 256, 32, 128},
	"moe-small": {32, 512, 256, 32, 128},
}

func runBench(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("bench", `Measure BENCH.md's workloads on random tokens:
  train     forward, backward and AdamW on B×T tokens (tokens/s counts B×(T−1)
            predicted tokens, as the peer does)
  generate  KV-cache sampling at temperature 1, no early stop (new tokens/s,
            the median of three runs)
  rl-step   one GRPO step: 32 prompts × 8 samples of up to 128 new tokens
            (fewer where the context is shorter), reference log-probs, one
            update; s/step and the share spent generating (optional: not in
            the default --workloads)`, stderr)
	configs := fs.String("config", "moe-micro", "comma-separated model presets")
	workloads := fs.String("workloads", "train,generate", "comma-separated workloads")
	steps := fs.Int("steps", 10, "timed train steps")
	warm := fs.Int("warmup", 3, "untimed train steps first")
	asJSON := fs.Bool("json", false, "print one JSON object with a workloads list")
	device := fs.String("device", "auto", "compute device: auto, cpu or cuda")
	tf32 := fs.Bool("tf32", true, "float32 GEMMs in TF32 on GPUs that have it (compute capability 8.0 and later), as the PyTorch peer's allow_tf32; false: full float32 (also MOERL_TF32=0)")
	profile := fs.String("cpuprofile", "", "write a Go CPU profile of the run to this file")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	tf32Set := false
	fs.Visit(func(f *flag.Flag) { tf32Set = tf32Set || f.Name == "tf32" })
	if *profile != "" {
		f, err := os.Create(*profile)
		if err != nil {
			return fmt.Errorf("cpu profile: %w", err)
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return fmt.Errorf("cpu profile: %w", err)
		}
		defer pprof.StopCPUProfile()
	}
	if *steps <= 0 || *warm < 0 {
		return usagef("--steps must be positive and --warmup ≥ 0")
	}
	var names []string
	for _, c := range strings.Split(*configs, ",") {
		if _, ok := benchShapes[c]; !ok {
			return usagef("--config %q: want one of moe-micro, moe-tiny, moe-small", c)
		}
		names = append(names, c)
	}
	var wl []string
	for _, w := range strings.Split(*workloads, ",") {
		if w != "train" && w != "generate" && w != "rl-step" {
			return usagef("--workloads %q: want train, generate or rl-step", w)
		}
		wl = append(wl, w)
	}
	printJSON := func(results []benchResult, failure error) {
		doc := map[string]any{"workloads": results, "date": time.Now().UTC().Format(time.RFC3339)}
		if failure != nil {
			doc["error"] = failure.Error()
		}
		out, _ := json.MarshalIndent(doc, "", "  ")
		fmt.Fprintf(stdout, "%s\n", out)
	}
	be, err := openBackend(*device, stderr)
	if err != nil {
		if *asJSON {
			printJSON([]benchResult{}, err) // a summary reading it learns why there is nothing
		}
		return err
	}
	if sw, ok := be.(tf32Switch); ok && tf32Set {
		if err := sw.SetTF32(*tf32); err != nil {
			return err
		}
	}
	// A workload that fails is recorded with its error and the next one
	// runs: one GPU run then reports every number it can.
	var results []benchResult
	failed := 0
	for _, name := range names {
		cfg, _ := moe.Preset(name)
		sh := benchShapes[name]
		m, merr := moe.New(cfg, be, 1)
		for _, w := range wl {
			r := benchResult{Workload: w, Error: fmt.Sprintf("model: %v", merr)}
			if merr == nil {
				r = measure(be, w, func() (benchResult, error) {
					switch w {
					case "train":
						return benchTrain(m, sh, *warm, *steps)
					case "generate":
						return benchGenerate(m, sh)
					}
					return benchRLStep(m)
				})
			}
			r.Config, r.Device, r.GEMM = name, be.Device(), "fp32"
			if sw, ok := be.(tf32Switch); ok && sw.TF32() {
				r.GEMM = "tf32"
			}
			results = append(results, r)
			if r.Error != "" {
				failed++
				fmt.Fprintf(stderr, "%s %s: FAILED: %s\n", name, w, r.Error)
			} else {
				fmt.Fprintf(stderr, "%s %s: %s tok/s\n", name, w, fmtRate(r.TokensPerS))
			}
		}
		if merr == nil {
			for _, t := range []*engine.Tensor{m.Params, m.Grads, m.M, m.V} {
				be.Free(t)
			}
		}
	}
	var failure error
	if failed > 0 {
		failure = fmt.Errorf("bench: %d of %d workloads failed", failed, len(results))
	}
	if *asJSON {
		printJSON(results, failure)
		return failure
	}
	tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "workload\tconfig\tshape\ttokens/s\tms/step\tmodel GFLOP/s\tgen share\tpeak mem\tdevice")
	for _, r := range results {
		if r.Error != "" {
			fmt.Fprintf(tw, "%s\t%s\t%s\tFAILED: %s\t\t\t\t\t%s\n", r.Workload, r.Config, r.Shape, r.Error, r.Device)
			continue
		}
		ms, gf, gs, pm := "", "", "", ""
		if r.MsPerStep > 0 {
			ms = fmt.Sprintf("%.1f", r.MsPerStep)
		}
		if r.GFLOPs > 0 {
			gf = fmt.Sprintf("%.1f", r.GFLOPs)
		}
		if r.GenShare > 0 {
			gs = fmt.Sprintf("%.0f%%", 100*r.GenShare)
		}
		if r.PeakMemBytes > 0 {
			pm = fmt.Sprintf("%.2f GiB", float64(r.PeakMemBytes)/(1<<30))
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", r.Workload, r.Config, r.Shape, fmtRate(r.TokensPerS), ms, gf, gs, pm, r.Device)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	return failure
}

// measure runs one workload and makes its outcome a result: its numbers
// and peak memory, or the error (or panic) that stopped it. It syncs the
// backend after the workload, so that a device error shows up in this
// workload's result and is cleared before the next one.
func measure(be engine.Backend, workload string, run func() (benchResult, error)) (r benchResult) {
	mc, counts := be.(memCounter)
	if counts {
		mc.ResetPeak()
	}
	defer func() {
		if p := recover(); p != nil {
			be.Sync()
			r = benchResult{Workload: workload, Error: fmt.Sprintf("panic: %v", p)}
		}
	}()
	r, err := run()
	if serr := be.Sync(); err == nil {
		err = serr
	}
	if err != nil {
		return benchResult{Workload: workload, Error: err.Error()}
	}
	if counts {
		r.PeakMemBytes = mc.MemStats().Peak
	}
	return r
}

func randomTokens(rng *rand.Rand, n, vocab int) []int32 {
	t := make([]int32, n)
	for i := range t {
		t[i] = int32(rng.IntN(vocab))
	}
	return t
}

func benchTrain(m *moe.Model, sh benchShape, warm, steps int) (benchResult, error) {
	B, T := sh.trainB, sh.trainT
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
			return benchResult{}, err
		}
	}
	if err := m.Backend().Sync(); err != nil {
		return benchResult{}, err
	}
	t0 := time.Now()
	for i := range steps {
		if _, err := m.TrainStep(acts, b, tc, warm+i); err != nil {
			return benchResult{}, err
		}
	}
	if err := m.Backend().Sync(); err != nil {
		return benchResult{}, err
	}
	dt := time.Since(t0).Seconds() / float64(steps)
	tokens := float64(B * (T - 1))
	return benchResult{Workload: "train", TokensPerS: tokens / dt, MsPerStep: dt * 1e3,
		GFLOPs: tokens * m.Cfg.FLOPsPerToken(T) / dt / 1e9, Shape: fmt.Sprintf("%d×%d", B, T)}, nil
}

func benchGenerate(m *moe.Model, sh benchShape) (benchResult, error) {
	rng := rand.New(rand.NewPCG(3, 4))
	prompts := make([][]int32, sh.genPrompts)
	for i := range prompts {
		prompts[i] = randomTokens(rng, sh.genPromptLen, m.Cfg.Vocab)
	}
	o := moe.SampleOptions{Temperature: 1, MaxNew: sh.genNew}
	// One short untimed run warms caches and allocators.
	if _, err := m.Generate(prompts[:min(8, len(prompts))], 1, moe.SampleOptions{Temperature: 1, MaxNew: 4},
		engine.NewRNG(1, engine.StreamSample)); err != nil {
		return benchResult{}, err
	}
	// The median of three timed runs: one run of the CPU workload lasts
	// tens of milliseconds, where a scheduler hiccup shows.
	var rates []float64
	for range 3 {
		t0 := time.Now()
		seqs, err := m.Generate(prompts, 1, o, engine.NewRNG(1, engine.StreamSample))
		if err != nil {
			return benchResult{}, err
		}
		if err := m.Backend().Sync(); err != nil {
			return benchResult{}, err
		}
		n := 0
		for _, s := range seqs {
			n += len(s.Tokens)
		}
		rates = append(rates, float64(n)/time.Since(t0).Seconds())
	}
	slices.Sort(rates)
	return benchResult{Workload: "generate", TokensPerS: rates[1],
		Shape: fmt.Sprintf("%d prompts×%d+%d", sh.genPrompts, sh.genPromptLen, sh.genNew)}, nil
}

// benchRLStep times one GRPO step (after one untimed step): 32 prompts × 8
// samples, the reference's log-probs and one update. Its tokens/s counts the
// generated tokens per second of the whole step.
func benchRLStep(m *moe.Model) (benchResult, error) {
	cfg, err := rl.DefaultConfig("grpo")
	if err != nil {
		return benchResult{}, err
	}
	const prompt = 16 // "add" prompts are up to 16 tokens with <bos>
	cfg.Prompts, cfg.Algo.GroupSize, cfg.Steps = 32, 8, 2
	cfg.MaxNew = min(128, m.Cfg.MaxSeq-prompt)
	if cfg.MaxNew <= 0 {
		return benchResult{}, fmt.Errorf("context %d is too short for rl-step", m.Cfg.MaxSeq)
	}
	ref, err := moe.New(m.Cfg, m.Backend(), 1)
	if err != nil {
		return benchResult{}, err
	}
	defer func() {
		for _, t := range []*engine.Tensor{ref.Params, ref.Grads, ref.M, ref.V} {
			m.Backend().Free(t)
		}
	}()
	tr, err := rl.NewTrainer(cfg, m, ref, tokenizer.Default())
	if err != nil {
		return benchResult{}, err
	}
	if _, err := tr.TrainStep(); err != nil {
		return benchResult{}, err
	}
	st, err := tr.TrainStep()
	if err != nil {
		return benchResult{}, err
	}
	step := st.GenSeconds + st.UpdateSeconds
	tokens := st.LenMean * float64(cfg.Prompts*cfg.Algo.GroupSize)
	return benchResult{Workload: "rl-step", TokensPerS: tokens / step, MsPerStep: step * 1e3, SPerStep: step,
		GenShare: st.GenSeconds / step, Shape: fmt.Sprintf("32×8, ≤%d new", cfg.MaxNew)}, nil
}
