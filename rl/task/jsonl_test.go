package task

import (
	"bytes"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite testdata/tasks/golden.jsonl")

// goldenPath holds a few problems of every task and difficulty, so that an
// accidental change to a generator (which would silently change every
// dataset and seed) fails a test.
var goldenPath = filepath.Join("..", "..", "testdata", "tasks", "golden.jsonl")

func goldenSet() []Problem {
	var ps []Problem
	for _, name := range Names() {
		tk, _ := Get(name)
		ps = append(ps, GenerateSet(tk, 2024, 12, allDifficulties(tk))...)
	}
	return ps
}

func TestGolden(t *testing.T) {
	var buf bytes.Buffer
	if err := WriteJSONL(&buf, goldenSet()); err != nil {
		t.Fatal(err)
	}
	if *update {
		if err := os.WriteFile(goldenPath, buf.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(goldenPath)
	if err != nil {
		t.Fatalf("%v (run go test -run Golden -update to create it)", err)
	}
	if !bytes.Equal(buf.Bytes(), want) {
		t.Errorf("generated problems differ from %s; if the change is intended, run go test -run Golden -update", goldenPath)
	}
	ps, err := ReadJSONL(bytes.NewReader(want))
	if err != nil {
		t.Fatal(err)
	}
	if !slices.EqualFunc(ps, goldenSet(), problemsEqual) {
		t.Error("golden file does not read back to the generated set")
	}
}

func TestJSONLRoundTrip(t *testing.T) {
	ps := goldenSet()
	ps[0].Meta = map[string]any{"source": "test", "n": 3.0}
	var buf bytes.Buffer
	if err := WriteJSONL(&buf, ps); err != nil {
		t.Fatal(err)
	}
	// Blank lines are skipped.
	data := "\n" + strings.Replace(buf.String(), "\n", "\n\n  \n", 3)
	got, err := ReadJSONL(strings.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	if !slices.EqualFunc(got, ps, problemsEqual) {
		t.Fatal("problems changed in a round trip")
	}
	if got[0].Meta["source"] != "test" || got[0].Meta["n"] != 3.0 {
		t.Errorf("meta = %v", got[0].Meta)
	}
	if got, err := ReadJSONL(strings.NewReader("")); err != nil || len(got) != 0 {
		t.Errorf("empty input: %v, %v", got, err)
	}
}

func TestReadJSONLFillsID(t *testing.T) {
	ps, err := ReadJSONL(strings.NewReader(`{"task":"add","prompt":"add 1+2=?","answer":"3"}`))
	if err != nil {
		t.Fatal(err)
	}
	if ps[0].ID != problemID("add", "add 1+2=?") {
		t.Errorf("ID = %q", ps[0].ID)
	}
}

func TestReadJSONLErrors(t *testing.T) {
	good := `{"task":"add","id":"x","prompt":"add 1+2=?","cot":"1+2=3","answer":"3"}`
	tests := []struct {
		name, data, want string
	}{
		{"unknown task", good + "\n" + `{"task":"sudoku","prompt":"x","answer":"1"}`, `line 2: unknown task "sudoku" (known: add, countdown, kk, mul)`},
		{"uppercase prompt", `{"task":"add","prompt":"ADD 1+2=?","answer":"3"}`, "line 1: problem add-"},
		{"alphabet in prompt", `{"task":"add","prompt":"add 1+2=?!","answer":"3"}`, "prompt: character '!' at byte 9 is outside the alphabet"},
		{"alphabet in cot", `{"task":"add","prompt":"add 1+2=?","cot":"<b>","answer":"3"}`, "cot: character '<'"},
		{"wrong answer", good + "\n\n" + `{"task":"add","prompt":"add 1+2=?","answer":"4"}`, "line 3: problem add-"},
		{"missing answer", `{"task":"add","prompt":"add 1+2=?"}`, "stored answer does not verify: empty answer"},
		{"bad prompt", `{"task":"add","prompt":"add 1+=?","answer":"3"}`, "bad prompt"},
		{"unknown field", `{"task":"add","prompt":"add 1+2=?","answer":"3","extra":1}`, `line 1: decode problem: json: unknown field "extra"`},
		{"bad json", good + "\n{\"task\":", "line 2: decode problem"},
		{"wrong type", `{"task":"add","difficulty":"3","prompt":"add 1+2=?","answer":"3"}`, "line 1: decode problem"},
		{"two values", good + " " + good, "line 1: text after the JSON object"},
		{"not an object", `[1,2]`, "line 1: decode problem"},
		{"too long", good + "\n" + strings.Repeat(" ", maxLineBytes+10), "line 2: longer than"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ReadJSONL(strings.NewReader(tc.data))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("ReadJSONL error = %v, want one containing %q", err, tc.want)
			}
		})
	}
}

type failingWriter struct{}

func (failingWriter) Write([]byte) (int, error) { return 0, errors.New("disk full") }

func TestWriteJSONLError(t *testing.T) {
	err := WriteJSONL(failingWriter{}, goldenSet())
	if err == nil || !strings.Contains(err.Error(), "disk full") {
		t.Errorf("WriteJSONL error = %v", err)
	}
	bad := []Problem{{Task: "add", ID: "x", Meta: map[string]any{"f": func() {}}}}
	if err := WriteJSONL(&bytes.Buffer{}, bad); err == nil || !strings.Contains(err.Error(), "problem 0 (x)") {
		t.Errorf("WriteJSONL of an unencodable meta: %v", err)
	}
}
