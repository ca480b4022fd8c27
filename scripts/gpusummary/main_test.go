package main

import (
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const cudaLog = `=== RUN   TestEveryKernelLaunches
--- PASS: TestEveryKernelLaunches (0.20s)
=== RUN   TestOpsMatchCPU
=== RUN   TestOpsMatchCPU/Gemm
    cuda_test.go:250: Gemm: c: rel err 1.00e-07 (bound 1e-05)
    --- PASS: TestOpsMatchCPU/Gemm (0.01s)
=== RUN   TestOpsMatchCPU/Add
    cuda_test.go:247: Add: y: ‖gpu−cpu‖/‖cpu‖ = 0.1, bound 1e-05
    --- FAIL: TestOpsMatchCPU/Add (0.01s)
--- FAIL: TestOpsMatchCPU (0.02s)
=== RUN   TestOnEmulator
    cuda_test.go:560: MOERL_EMU_LIB is not set; make -f kernels/ptx.mk kernels-emu-gotest runs this test
--- SKIP: TestOnEmulator (0.00s)
FAIL
`

const peerJSON = `{"torch": "2.11.0", "gpu": "NVIDIA H200", "transformers": "5.17.0",
 "train/moe-tiny/fp32/eager": {"params": 1, "ms_per_step": 46.8, "tok_per_s": 350000, "warmup_s": 3, "peak_mem_bytes": 3221225472},
 "train/moe-tiny/bf16/eager": {"params": 1, "ms_per_step": 42.7, "tok_per_s": 384000, "warmup_s": 3, "peak_mem_bytes": 1073741824},
 "gen/moe-tiny": {"batch": 256, "new_tokens": 128, "s": 1, "gen_tok_per_s": 32400},
 "train/moe-small/fp32/eager": "RuntimeError('CUDA out of memory')",
 "gen/moe-small": {"batch": 256, "new_tokens": 128, "s": 3, "gen_tok_per_s": 9900}}`

const benchTiny = `{"date": "x", "workloads": [
 {"workload": "train", "config": "moe-tiny", "device": "H200", "gemm": "tf32", "tokens_per_s": 700000, "ms_per_step": 23.4, "wait_share": 0.93, "peak_mem_bytes": 2147483648, "shape": "64×256"},
 {"workload": "generate", "config": "moe-tiny", "device": "H200", "gemm": "tf32", "tokens_per_s": 64800, "shape": "256"},
 {"workload": "rl-step", "config": "moe-tiny", "device": "H200", "gemm": "tf32", "tokens_per_s": 0, "shape": "32×8", "error": "cuLaunchKernel sample_rows (grid 1×1×1, block 256×1×1, smem 0): CUDA_ERROR_LAUNCH_FAILED"}]}`

// runDir writes a work folder and summarises it.
func runDir(t *testing.T, require bool, steps string, files map[string]string) (*Summary, string) {
	t.Helper()
	work, out := t.TempDir(), t.TempDir()
	for name, body := range files {
		if err := os.WriteFile(filepath.Join(work, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	steps = strings.ReplaceAll(steps, "WORK", work)
	if err := os.WriteFile(filepath.Join(work, "steps.tsv"), []byte(steps), 0o644); err != nil {
		t.Fatal(err)
	}
	s, err := collect(work, require, "NVIDIA H200, 580.65, 143771 MiB", 560)
	if err != nil {
		t.Fatal(err)
	}
	if err := write(s, out); err != nil {
		t.Fatal(err)
	}
	md, err := os.ReadFile(filepath.Join(out, "summary.md"))
	if err != nil {
		t.Fatal(err)
	}
	var back Summary
	js, _ := os.ReadFile(filepath.Join(out, "summary.json"))
	if err := json.Unmarshal(js, &back); err != nil {
		t.Fatalf("summary.json: %v", err)
	}
	if _, err := os.Stat(filepath.Join(out, "moerl_bench.json")); err != nil {
		t.Error(err)
	}
	return &back, string(md)
}

// TestSummaryOfAFailedGPURun: counts, the side-by-side table, the failing
// workload and the failed test all come out, and the verdict is FAIL.
func TestSummaryOfAFailedGPURun(t *testing.T) {
	steps := "bench moe-tiny\tbench\t1\t40\tWORK/bench-moe-tiny.log\t150\n" +
		"peer\tpeer\t0\t80\tWORK/peer.log\t150\n" +
		"cuda.test\ttest\t1\t30\tWORK/cuda.log\t150\n" +
		"moe.test\ttest\t124\t150\tWORK/moe.log\t150\n" +
		"pretrain moe-tiny\trun\tskip\t0\t\t0\tno time left in the 560 s budget\n"
	s, md := runDir(t, true, steps, map[string]string{
		"bench-moe-tiny.json": benchTiny, "torch_moe_bench.json": peerJSON, "cuda.log": cudaLog,
		"bf16-moe.json":      `{"workloads": [{"workload": "train", "config": "moe-tiny", "gemm": "bf16", "tokens_per_s": 1200000, "ms_per_step": 13.6, "peak_mem_bytes": 1610612736}]}`,
		"moe.log":            "=== RUN   TestCUDATrainingCurveMatchesCPU\npanic: test timed out after 2m20s\n",
		"bench-moe-tiny.log": "moe-tiny rl-step: FAILED\n",
	})
	if s.Verdict != "FAIL" {
		t.Errorf("verdict %s, want FAIL", s.Verdict)
	}
	c := s.Steps[2].Tests
	if c == nil || c.Pass != 2 || c.Fail != 2 || c.Skip != 1 || len(c.Failed) != 2 ||
		len(c.Skipped) != 1 || !strings.HasPrefix(c.Skipped[0], "TestOnEmulator: MOERL_EMU_LIB is not set") {
		t.Errorf("cuda.test counts: %+v", c)
	}
	if st := s.Steps[3]; st.Status != "timeout" || st.Tests.Panic != "test timed out after 2m20s" {
		t.Errorf("moe.test: %+v %+v", st, st.Tests)
	}
	rows := map[string]BenchRow{}
	for _, r := range s.Bench {
		rows[r.Config+" "+r.Workload] = r
	}
	if len(s.Bench) != 6 {
		t.Errorf("%d bench rows, want BENCH.md's 6: %+v", len(s.Bench), s.Bench)
	}
	tr := rows["moe-tiny train"]
	if tr.Moerl != 700000 || tr.PeerFP32 != 350000 || tr.PeerBF16 != 384000 || tr.RatioFP32 != 46.8/23.4 || tr.MoerlPeakMem != 1<<31 ||
		tr.PeerFP32PeakMem != 3<<30 || tr.PeerBF16PeakMem != 1<<30 {
		t.Errorf("moe-tiny train row: %+v", tr)
	}
	if g := rows["moe-tiny generate"]; g.RatioFP32 != 2 {
		t.Errorf("moe-tiny generate row: %+v", g)
	}
	if r := rows["moe-tiny rl-step"]; !strings.Contains(r.MoerlError, "CUDA_ERROR_LAUNCH_FAILED") || r.PeerError != "no peer workload" {
		t.Errorf("moe-tiny rl-step row: %+v", r)
	}
	if r := rows["moe-small train"]; r.MoerlError != "not measured" || !strings.Contains(r.PeerError, "out of memory") {
		t.Errorf("moe-small train row: %+v", r)
	}
	for _, want := range []string{
		"# moerl GPU run, ", ": FAIL", "| cuda.test | **fail (exit 1)** | 30 s | 2 / 2 / 1 |",
		"| moe-tiny | train | 700.0 k | 23.4 | tf32 | 0.93 | 2.00 GiB (peer 3.00 GiB ✔) | 350.0 k | 384.0 k | 2.00× | 1.82× |",
		"- cuda.test: TestOpsMatchCPU/Add", "## Log of moe.test (its end)", "no time left in the 560 s budget",
		"| moe-tiny | train | 1.20 M | 13.6 | bf16 |  | 1.50 GiB (peer 1.00 GiB ✘) | 384.0 k | 3.14× |",
		"| moe-tiny | generate | 64.8 k | ", // no peer memory for generate in this peer JSON: moerl's alone
	} {
		if !strings.Contains(md, want) {
			t.Errorf("summary.md lacks %q:\n%s", want, md)
		}
	}
}

// TestSummaryVerdicts: PASS needs CUDA required and everything run and
// passed; without a GPU a clean run is NO GPU, never PASS.
func TestSummaryVerdicts(t *testing.T) {
	ok := "=== RUN   TestA\n--- PASS: TestA (0.00s)\nPASS\n"
	skipped := "=== RUN   TestA\n    cuda_test.go:38: CUDA unavailable: libcuda.so.1 not found\n--- SKIP: TestA (0.00s)\nPASS\n"
	for _, tc := range []struct {
		require bool
		steps   string
		log     string
		want    string
	}{
		{true, "cuda.test\ttest\t0\t3\tWORK/t.log\t150\n", ok, "PASS"},
		{true, "cuda.test\ttest\t0\t3\tWORK/t.log\t150\npeer\tpeer\tskip\t0\t\t0\tno time left\n", ok, "FAIL"},
		{true, "cuda.test\ttest\t0\t3\tWORK/t.log\t150\nvariant\textra\tskip\t0\t\t0\tno time left\n", ok, "PASS"},
		{true, "cuda.test\ttest\t0\t3\tWORK/t.log\t150\nvariant\textra\t124\t40\tWORK/v.log\t40\n", ok, "PASS"},
		{true, "cuda.test\ttest\t0\t3\tWORK/t.log\t150\nvariant\textra\t1\t4\tWORK/v.log\t40\n", ok, "FAIL"},
		{true, "cuda.test\ttest\t0\t3\tWORK/t.log\t150\n", "no results at all\n", "FAIL"},
		{false, "cuda.test\ttest\t0\t3\tWORK/t.log\t150\npeer\tpeer\tskip\t0\t\t0\tno NVIDIA device\n", skipped, "NO GPU"},
		{false, "cuda.test\ttest\t2\t3\tWORK/t.log\t150\n", skipped, "FAIL"},
	} {
		s, md := runDir(t, tc.require, tc.steps, map[string]string{"t.log": tc.log})
		if s.Verdict != tc.want {
			t.Errorf("require %v, steps %q: verdict %s, want %s", tc.require, tc.steps, s.Verdict, tc.want)
		}
		if !tc.require && !strings.Contains(md, "proves nothing about the GPU") {
			t.Errorf("a run without CUDA required does not say it proves nothing:\n%s", md)
		}
	}
}

// TestSummaryBadInputs: an unreadable bench or peer JSON is reported in the
// summary, not a crash; a malformed steps.tsv is an error.
func TestSummaryBadInputs(t *testing.T) {
	s, md := runDir(t, true, "bench moe-tiny\tbench\t0\t1\tWORK/b.log\t150\n",
		map[string]string{"bench-moe-tiny.json": "{not json", "torch_moe_bench.json": "[1, 2"})
	if s.Verdict != "FAIL" || !strings.Contains(md, "read the peer's JSON") || !strings.Contains(s.Bench[0].MoerlError, "bench-moe-tiny.json") {
		t.Errorf("verdict %s\n%s", s.Verdict, md)
	}
	work := t.TempDir()
	os.WriteFile(filepath.Join(work, "steps.tsv"), []byte("only\ttwo\n"), 0o644)
	if _, err := collect(work, true, "", 0); err == nil {
		t.Error("a malformed steps.tsv was accepted")
	}
}

const ncuCSV = `==PROF== Connected to process 1234 (/tmp/bin/moerl)
==PROF== Profiling "rmsnorm_fwd": 0%....50%....100% - 1 pass
"ID","Process ID","Process Name","Host Name","Kernel Name","Context","Stream","Block Size","Grid Size","Device","CC","Section Name","Metric Name","Metric Unit","Metric Value"
"0","1234","moerl","127.0.0.1","rmsnorm_fwd","1","13","(256, 1, 1)","(2048, 1, 1)","0","9.0","Command line profiler metrics","gpu__time_duration.sum","usecond","4.32"
"1","1234","moerl","127.0.0.1","sgemm_grouped_tf32","1","13","(256, 1, 1)","(8, 264, 1)","0","9.0","Command line profiler metrics","gpu__time_duration.sum","msecond","1.25"
"2","1234","moerl","127.0.0.1","void cutlass::Kernel2<cutlass_80_tensorop_s1688gemm>(Params)","1","13","(128, 1, 1)","(4, 2, 1)","0","9.0","Command line profiler metrics","gpu__time_duration.sum","nsecond","1,500"
"3","1234","moerl","127.0.0.1","rmsnorm_fwd","1","13","(256, 1, 1)","(2048, 1, 1)","0","9.0","Command line profiler metrics","gpu__time_duration.sum","usecond","5.68"
`

// TestProfile: ncu's CSV becomes GPU time per kernel, units and
// thousands separators read, a templated name cut at its arguments.
func TestProfile(t *testing.T) {
	p, err := readProfile(strings.NewReader(ncuCSV))
	if err != nil {
		t.Fatal(err)
	}
	if len(p.Kernels) != 3 || math.Abs(p.TotalUs-(4.32+1250+1.5+5.68)) > 1e-9 {
		t.Fatalf("profile %+v", p)
	}
	if k := p.Kernels[0]; k.Name != "sgemm_grouped_tf32" || k.Launches != 1 || k.Us != 1250 {
		t.Errorf("largest: %+v", k)
	}
	if k := p.Kernels[1]; k.Name != "rmsnorm_fwd" || k.Launches != 2 || math.Abs(k.Us-10) > 1e-9 {
		t.Errorf("second: %+v", k)
	}
	if k := p.Kernels[2]; k.Name != "void cutlass::Kernel2" || k.Us != 1.5 {
		t.Errorf("third: %+v", k)
	}
	for _, bad := range []string{"", "no header\n", ncuCSV[:strings.Index(ncuCSV, `"0"`)] + `"0","1","m","h","k","1","1","b","g","0","9","s","gpu__time_duration.sum","hour","1"` + "\n"} {
		if _, err := readProfile(strings.NewReader(bad)); err == nil {
			t.Errorf("readProfile(%q): no error", bad)
		}
	}
	_, md := runDir(t, false, "profile moe-tiny train (ncu)\trun\t0\t40\tWORK/ncu.log\t90\n", map[string]string{"ncu.csv": ncuCSV})
	for _, want := range []string{"## GPU time by kernel (ncu, moe-tiny training)", "| sgemm_grouped_tf32 | 1 | 1250.0 | 99.1% |"} {
		if !strings.Contains(md, want) {
			t.Errorf("summary.md lacks %q:\n%s", want, md)
		}
	}
}

// FuzzProfile: no input makes readProfile panic, and what it returns adds up.
func FuzzProfile(f *testing.F) {
	f.Add(ncuCSV)
	f.Add(`"Kernel Name","Metric Name","Metric Unit","Metric Value"` + "\n" + `"k","gpu__time_duration.sum","ns","1,2,3"`)
	f.Fuzz(func(t *testing.T, in string) {
		p, err := readProfile(strings.NewReader(in))
		if err != nil {
			return
		}
		var sum float64
		for _, k := range p.Kernels {
			sum += k.Us
		}
		if math.Abs(sum-p.TotalUs) > 1e-6*math.Max(1, math.Abs(p.TotalUs)) && !math.IsNaN(sum) && !math.IsInf(sum, 0) {
			t.Fatalf("kernels sum to %v, total %v", sum, p.TotalUs)
		}
	})
}
