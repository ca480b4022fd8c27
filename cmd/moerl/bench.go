package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"runtime/pprof"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/moerl/moerl/bench"
	"github.com/moerl/moerl/engine/cuda"
)

// gemmSwitch is a backend whose GEMMs may run in TF32 or bf16 (cuda.Backend).
type gemmSwitch interface {
	SetGEMMPrecision(p cuda.GEMMPrecision) error
	GEMMPrecision() cuda.GEMMPrecision
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
	bf16 := fs.Bool("bf16", false, "GEMM products in bfloat16 on the tensor cores (inputs rounded to bf16, sums and storage fp32), as the peer's bf16 autocast does to a matmul; true or false (also MOERL_BF16=1)")
	blockSteps := fs.Int("block-steps", 0, "generate: decode steps per host round trip, ≥ 0 (0: the backend's default, 8 on a GPU, 1 on the CPU); the samples are the same for every value")
	profile := fs.String("cpuprofile", "", "write a Go CPU profile of the run to this file")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	tf32Set, bf16Set := false, false
	fs.Visit(func(f *flag.Flag) {
		tf32Set = tf32Set || f.Name == "tf32"
		bf16Set = bf16Set || f.Name == "bf16"
	})
	if *bf16 && tf32Set && *tf32 {
		return usagef("--bf16 and --tf32 ask for two GEMM precisions: give one")
	}
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
	if *blockSteps < 0 {
		return usagef("--block-steps %d: want 0 (the backend's default) or more", *blockSteps)
	}
	var names []string
	for _, c := range strings.Split(*configs, ",") {
		if _, ok := bench.Shapes[c]; !ok {
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
	printJSON := func(results []bench.Result, failure error) {
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
			printJSON([]bench.Result{}, err) // a summary reading it learns why there is nothing
		}
		return err
	}
	sw, ok := be.(gemmSwitch)
	if !ok && *bf16 {
		return usagef("--bf16: the %s backend computes in float32; bf16 GEMMs need --device cuda", be.Name())
	}
	if ok && (tf32Set || bf16Set) {
		p := sw.GEMMPrecision()
		switch {
		case *bf16:
			p = cuda.GEMMBF16
		case tf32Set && *tf32:
			p = cuda.GEMMTF32
		case tf32Set:
			p = cuda.GEMMFP32
		case p == cuda.GEMMBF16:
			// --bf16=false against MOERL_BF16=1: TF32, the default on
			// every GPU moerl's PTX (compute capability 8.0) runs on.
			p = cuda.GEMMTF32
		}
		if err := sw.SetGEMMPrecision(p); err != nil {
			return err
		}
	}
	// A workload that fails is recorded with its error and the next one
	// runs: one GPU run then reports every number it can.
	var results []bench.Result
	failed := 0
	for _, name := range names {
		for _, w := range wl {
			r := bench.Run(be, name, w, bench.Options{Warmup: *warm, Steps: *steps, BlockSteps: *blockSteps})
			r.Device, r.GEMM = be.Device(), "fp32"
			if sw, ok := be.(gemmSwitch); ok {
				r.GEMM = strings.ToLower(sw.GEMMPrecision().String())
			}
			results = append(results, r)
			if r.Error != "" {
				failed++
				fmt.Fprintf(stderr, "%s %s: FAILED: %s\n", name, w, r.Error)
			} else {
				fmt.Fprintf(stderr, "%s %s: %s tok/s\n", name, w, fmtRate(r.TokensPerS))
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
	fmt.Fprintln(tw, "workload\tconfig\tshape\ttokens/s\tms/step\tmodel GFLOP/s\tgen share\tGPU waits\tpeak mem\tdevice")
	for _, r := range results {
		if r.Error != "" {
			fmt.Fprintf(tw, "%s\t%s\t%s\tFAILED: %s\t\t\t\t\t\t%s\n", r.Workload, r.Config, r.Shape, r.Error, r.Device)
			continue
		}
		ms, gf, gs, ws, pm := "", "", "", "", ""
		if r.MsPerStep > 0 {
			ms = fmt.Sprintf("%.1f", r.MsPerStep)
		}
		if r.GFLOPs > 0 {
			gf = fmt.Sprintf("%.1f", r.GFLOPs)
		}
		if r.GenShare > 0 {
			gs = fmt.Sprintf("%.0f%%", 100*r.GenShare)
		}
		if r.WaitShare > 0 {
			ws = fmt.Sprintf("%.0f%%", 100*r.WaitShare)
		}
		if r.PeakMemBytes > 0 {
			pm = fmt.Sprintf("%.2f GiB", float64(r.PeakMemBytes)/(1<<30))
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", r.Workload, r.Config, r.Shape, fmtRate(r.TokensPerS), ms, gf, gs, ws, pm, r.Device)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	return failure
}
