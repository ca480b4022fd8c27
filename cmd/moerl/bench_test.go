package main

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/moerl/moerl/engine/cpu"
	"github.com/moerl/moerl/engine/cuda"
)

// TestBenchMeasureRecordsFailures: a workload that fails, or panics, is a
// result with its error and no numbers, and the next one runs.
func TestBenchMeasureRecordsFailures(t *testing.T) {
	be := cpu.New()
	for _, tc := range []struct {
		run  func() (benchResult, error)
		want string
	}{
		{func() (benchResult, error) {
			return benchResult{TokensPerS: 5}, errors.New("cuLaunchKernel x: CUDA_ERROR_LAUNCH_FAILED")
		}, "CUDA_ERROR_LAUNCH_FAILED"},
		{func() (benchResult, error) { panic("cpu: Gemm: broken") }, "panic: cpu: Gemm: broken"},
		{func() (benchResult, error) { return benchResult{Workload: "train", TokensPerS: 7}, nil }, ""},
	} {
		r := measure(be, "train", tc.run)
		if !strings.Contains(r.Error, tc.want) || (tc.want == "") != (r.Error == "") || r.Workload != "train" || (tc.want != "" && r.TokensPerS != 0) {
			t.Errorf("measure: %+v, want error %q", r, tc.want)
		}
	}
}

// TestBenchJSONWithoutGPU: where CUDA cannot run, bench --device cuda
// --json still prints its JSON, with the reason as "error", and fails.
func TestBenchJSONWithoutGPU(t *testing.T) {
	if cuda.Available() == nil {
		t.Skip("CUDA is available here")
	}
	code, out, _ := moerl(t, "bench", "--device", "cuda", "--json", "--config", "moe-tiny")
	var doc struct {
		Error     string
		Workloads []benchResult
	}
	if err := json.Unmarshal([]byte(out), &doc); err != nil {
		t.Fatalf("bench --json printed %q: %v", out, err)
	}
	if code == 0 || !strings.Contains(doc.Error, "CUDA unavailable") || doc.Workloads == nil || len(doc.Workloads) != 0 {
		t.Errorf("exit %d, JSON %s", code, out)
	}
}
