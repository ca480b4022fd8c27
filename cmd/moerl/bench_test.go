package main

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/moerl/moerl/bench"
	"github.com/moerl/moerl/engine/cuda"
)

// TestBenchJSONWithoutGPU: where CUDA cannot run, bench --device cuda
// --json still prints its JSON, with the reason as "error", and fails.
func TestBenchJSONWithoutGPU(t *testing.T) {
	if cuda.Available() == nil {
		t.Skip("CUDA is available here")
	}
	code, out, _ := moerl(t, "bench", "--device", "cuda", "--json", "--config", "moe-tiny")
	var doc struct {
		Error     string
		Workloads []bench.Result
	}
	if err := json.Unmarshal([]byte(out), &doc); err != nil {
		t.Fatalf("bench --json printed %q: %v", out, err)
	}
	if code == 0 || !strings.Contains(doc.Error, "CUDA unavailable") || doc.Workloads == nil || len(doc.Workloads) != 0 {
		t.Errorf("exit %d, JSON %s", code, out)
	}
}
