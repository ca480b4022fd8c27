package run

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

type settings struct {
	Steps int     `json:"steps"`
	LR    float64 `json:"lr"`
	Inner struct {
		Name string `json:"name"`
	} `json:"inner"`
}

// TestOpenModes walks a folder through every case Open distinguishes: a
// new run, the same run again (refused fresh, continued, reused when
// done), another run (refused with the differences named, or moved aside
// in Reuse mode), and a changed input.
func TestOpenModes(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "run")
	input := filepath.Join(t.TempDir(), "init.ck")
	os.WriteFile(input, []byte("weights v1"), 0o644)
	s := settings{Steps: 10, LR: 0.1}
	in := map[string]string{"init": input}

	f, err := Open(dir, "sft", s, in, Fresh)
	if err != nil || f.State != New {
		t.Fatalf("new folder: %v, state %v", err, f.State)
	}
	if err := f.Progress(4, 10, 0); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(dir, "sft", s, in, Fresh); err == nil || !strings.Contains(err.Error(), "--resume") {
		t.Errorf("fresh open of an existing run: %v, want a refusal that mentions --resume", err)
	}
	f, err = Open(dir, "sft", s, in, Resume)
	if err != nil || f.State != Partial || f.Rec.Step != 4 {
		t.Fatalf("resume: %v, state %v step %d; want partial at 4", err, f.State, f.Rec.Step)
	}
	if err := f.Finish(map[string]int{"x": 1}); err != nil {
		t.Fatal(err)
	}
	f, err = Open(dir, "sft", s, in, Reuse)
	if err != nil || f.State != Done {
		t.Fatalf("reuse of a finished run: %v, state %v", err, f.State)
	}

	other := s
	other.LR = 0.2
	other.Inner.Name = "x"
	_, err = Open(dir, "sft", other, in, Resume)
	if err == nil || !strings.Contains(err.Error(), "lr: 0.1 → 0.2") || !strings.Contains(err.Error(), `inner.name: "" → "x"`) {
		t.Errorf("resume with other settings: %v, want the differing fields named", err)
	}
	os.WriteFile(input, []byte("weights v2"), 0o644)
	_, err = Open(dir, "sft", s, in, Resume)
	if err == nil || !strings.Contains(err.Error(), "input init") {
		t.Errorf("resume with a changed input: %v, want the input named", err)
	}
	f, err = Open(dir, "sft", s, in, Reuse)
	if err != nil || f.State != New || f.Replaced == "" {
		t.Fatalf("reuse with a changed input: %v, state %v, replaced %q", err, f.State, f.Replaced)
	}
	old, err := ReadRecord(f.Replaced)
	if err != nil || old.Status != StatusDone {
		t.Errorf("the earlier run was not kept aside: %v %+v", err, old)
	}
}

// TestOpenRefusesForeignFolder: a folder with a checkpoint but no run.json
// (made by hand, or by an older moerl) is never written into.
func TestOpenRefusesForeignFolder(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "model.ck"), []byte("x"), 0o644)
	if _, err := Open(dir, "pretrain", settings{}, nil, Resume); err == nil || !strings.Contains(err.Error(), "no run.json") {
		t.Errorf("foreign folder: %v", err)
	}
	data, _ := os.ReadFile(filepath.Join(dir, "model.ck"))
	if string(data) != "x" {
		t.Error("the foreign checkpoint was changed")
	}
}

// TestMetricsResume: metrics lines past the step a run resumes from are
// cut, earlier ones kept; a run from step 0 starts a new file.
func TestMetricsResume(t *testing.T) {
	dir := t.TempDir()
	f := &Folder{Dir: dir}
	m, err := f.Metrics(0)
	if err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= 5; i++ {
		m.Write(map[string]int{"step": i})
	}
	m.Close()
	if m, err = f.Metrics(3); err != nil {
		t.Fatal(err)
	}
	m.Write(map[string]int{"step": 4})
	m.Close()
	data, _ := os.ReadFile(filepath.Join(dir, MetricsFile))
	var steps []int
	for _, line := range strings.Split(strings.TrimSpace(string(data)), "\n") {
		var s struct{ Step int }
		json.Unmarshal([]byte(line), &s)
		steps = append(steps, s.Step)
	}
	if len(steps) != 4 || steps[3] != 4 || steps[2] != 3 {
		t.Errorf("metrics after resume at 3: steps %v, want 1 2 3 4", steps)
	}
}

// TestWriteFailureKeepsFiles: a metrics file on a full disk (/dev/full)
// reports the error with the path, and an atomic write that fails leaves
// the previous file intact.
func TestWriteFailureKeepsFiles(t *testing.T) {
	if _, err := os.Stat("/dev/full"); err != nil {
		t.Skip("no /dev/full")
	}
	dir := t.TempDir()
	os.Symlink("/dev/full", filepath.Join(dir, MetricsFile))
	f := &Folder{Dir: dir}
	if _, err := f.Metrics(1); err == nil || !strings.Contains(err.Error(), "not a regular file") {
		t.Errorf("resuming metrics that are a device: %v", err)
	}
	full, err := os.OpenFile("/dev/full", os.O_WRONLY, 0)
	if err != nil {
		t.Skip(err)
	}
	m := newMetricsWriter(filepath.Join(dir, MetricsFile), full)
	err = m.Write(map[string]int{"step": 1})
	m.Close()
	if err == nil || !strings.Contains(err.Error(), "no space left") || !strings.Contains(err.Error(), MetricsFile) {
		t.Errorf("write to a full disk: %v", err)
	}
	path := filepath.Join(dir, "result.json")
	os.WriteFile(path, []byte("finished"), 0o644)
	if err := WriteFileAtomic(filepath.Join(dir, "missing", "result.json"), []byte("new")); err == nil {
		t.Error("a write into a missing folder did not fail")
	}
	data, _ := os.ReadFile(path)
	if string(data) != "finished" {
		t.Error("the finished file changed")
	}
}
