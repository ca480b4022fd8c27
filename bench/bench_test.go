package bench

import (
	"errors"
	"strings"
	"testing"

	"github.com/moerl/moerl/engine/cpu"
)

// TestMeasureRecordsFailures: a workload that fails, or panics, is a
// result with its error and no numbers, and the next one runs.
func TestMeasureRecordsFailures(t *testing.T) {
	be := cpu.New()
	for _, tc := range []struct {
		run  func() (Result, error)
		want string
	}{
		{func() (Result, error) {
			return Result{TokensPerS: 5}, errors.New("cuLaunchKernel x: CUDA_ERROR_LAUNCH_FAILED")
		}, "CUDA_ERROR_LAUNCH_FAILED"},
		{func() (Result, error) { panic("cpu: Gemm: broken") }, "panic: cpu: Gemm: broken"},
		{func() (Result, error) { return Result{Workload: "train", TokensPerS: 7}, nil }, ""},
	} {
		r := Measure(be, "train", tc.run)
		if !strings.Contains(r.Error, tc.want) || (tc.want == "") != (r.Error == "") || r.Workload != "train" || (tc.want != "" && r.TokensPerS != 0) {
			t.Errorf("Measure: %+v, want error %q", r, tc.want)
		}
	}
}

// TestRun measures moe-micro's training once on the CPU (the command's
// TestBenchJSON runs every workload): the result has its numbers and no
// error; an unknown preset is an error naming it.
func TestRun(t *testing.T) {
	for _, w := range []string{"train"} {
		r := Run(cpu.New(), "moe-micro", w, Options{Steps: 1})
		if r.Error != "" || !(r.TokensPerS > 0) || r.Config != "moe-micro" {
			t.Errorf("%s: %+v", w, r)
		}
	}
	if r := Run(cpu.New(), "moe-huge", "train", Options{Steps: 1}); !strings.Contains(r.Error, "moe-huge") {
		t.Errorf("unknown preset: %+v", r)
	}
}
