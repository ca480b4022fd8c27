package main

import (
	"bytes"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/moerl/moerl/engine/cpu"
	"github.com/moerl/moerl/moe"
)

// poison writes a copy of checkpoint src with one weight of tensor set to
// NaN.
func poison(t *testing.T, src, dst, tensor string) {
	t.Helper()
	m, tok, st, err := moe.LoadCheckpoint(src, cpu.New())
	if err != nil {
		t.Fatal(err)
	}
	w := m.HostParams()
	for _, p := range m.ParamList() {
		if p.Name == tensor {
			w[p.Off+3] = float32(math.NaN())
		}
	}
	m.Backend().Upload(m.Params, w)
	if err := m.SaveCheckpoint(dst, tok, st, true); err != nil {
		t.Fatal(err)
	}
}

// TestNonFiniteStops: a NaN weight stops fine-tuning at step 1 with the
// tensor and its layer named, and the output folder keeps no checkpoint of
// it; a learning rate that makes the forward pass overflow stops the run
// at the step it happens, keeping the last good checkpoint, or with
// --skip-nonfinite skips and counts the batches until ten in a row fail.
func TestNonFiniteStops(t *testing.T) {
	dir := t.TempDir()
	base := filepath.Join(dir, "base")
	tiny := []string{"--synthetic", "copy", "--docs", "100", "--batch", "4", "--seq-len", "32", "--device", "cpu"}
	if code, _, stderr := moerl(t, append([]string{"pretrain", "--d-model", "32", "--expert-hidden", "32", "--layers", "1",
		"--steps", "2", "--out", base}, tiny...)...); code != 0 {
		t.Fatal(stderr)
	}
	bad := filepath.Join(dir, "nan.ck")
	poison(t, filepath.Join(base, "model.ck"), bad, "layer0.w1")
	out := filepath.Join(dir, "sft")
	code, _, stderr := moerl(t, append([]string{"sft", "--init", bad, "--steps", "3", "--out", out}, tiny...)...)
	if code != 1 || !strings.Contains(stderr, "sft step 1") || !strings.Contains(stderr, "layer0.w1 (layer 0)") {
		t.Errorf("NaN weight: exit %d, %q; want the step, the tensor and its layer", code, stderr)
	}
	if _, err := os.Stat(filepath.Join(out, "model.ck")); err == nil {
		t.Error("a checkpoint was written from NaN weights")
	}

	// lr 1e35: step 1 is finite, step 2's forward pass overflows.
	blow := append([]string{"sft", "--init", filepath.Join(base, "model.ck"), "--lr", "1e35", "--min-lr", "1e35", "--warmup", "0",
		"--steps", "14", "--save-every", "1"}, tiny...)
	out = filepath.Join(dir, "blow")
	code, _, stderr = moerl(t, append(blow, "--out", out)...)
	if code != 1 || !strings.Contains(stderr, "sft step 2") || !strings.Contains(stderr, "the last checkpoint, step 1, is kept") {
		t.Errorf("overflow: exit %d, %q; want a stop at step 2 keeping step 1", code, stderr)
	}
	if _, _, st, err := moe.LoadCheckpoint(filepath.Join(out, "model.ck"), cpu.New()); err != nil || st.Step != 1 {
		t.Errorf("the kept checkpoint: step %d, %v", st.Step, err)
	}
	out = filepath.Join(dir, "skip")
	code, _, stderr = moerl(t, append(blow, "--out", out, "--skip-nonfinite")...)
	if code != 1 || !strings.Contains(stderr, "10 batches in a row") {
		t.Errorf("--skip-nonfinite: exit %d, %q; want a stop after ten skipped batches", code, stderr)
	}
	m, _ := os.ReadFile(filepath.Join(out, "metrics.jsonl"))
	if n := bytes.Count(m, []byte(`"skipped"`)); n != 10 {
		t.Errorf("metrics record %d skipped batches, want 10", n)
	}
}
