package report

import (
	"math"
	"slices"
	"strings"
	"testing"
)

// nan stands for a missing value in the expected columns.
var nan = math.NaN()

func sameFloats(a, b []float64) bool {
	return slices.EqualFunc(a, b, func(x, y float64) bool { return x == y || math.IsNaN(x) && math.IsNaN(y) })
}

func TestParseMetrics(t *testing.T) {
	cases := []struct {
		name   string
		in     string
		steps  []float64
		fields []string
		values map[string][]float64
		other  []string
		note   string // in a note, when one is expected
	}{
		{
			name:   "pretrain lines",
			in:     `{"step":1,"loss":4.2,"lr":0.001}` + "\n" + `{"step":2,"loss":3.5,"lr":0.002}` + "\n",
			steps:  []float64{1, 2},
			fields: []string{"loss", "lr"},
			values: map[string][]float64{"loss": {4.2, 3.5}, "lr": {0.001, 0.002}},
		},
		{
			name:   "blank lines and CRLF are skipped, no final newline",
			in:     "\n{\"step\":1,\"a\":1}\r\n\n   \n{\"step\":2,\"a\":2}",
			steps:  []float64{1, 2},
			fields: []string{"a"},
			values: map[string][]float64{"a": {1, 2}},
		},
		{
			name:   "a field missing from a line, a field appearing late",
			in:     `{"step":1,"a":1}` + "\n" + `{"step":2}` + "\n" + `{"step":3,"a":3,"routing_disagreement":0.1}` + "\n",
			steps:  []float64{1, 2, 3},
			fields: []string{"a", "routing_disagreement"},
			values: map[string][]float64{"a": {1, nan, 3}, "routing_disagreement": {nan, nan, 0.1}},
		},
		{
			name:   "booleans are 1 and 0, null is missing",
			in:     `{"step":1,"short_batch":true,"x":null}` + "\n" + `{"step":2,"short_batch":false,"x":2}` + "\n",
			steps:  []float64{1, 2},
			fields: []string{"short_batch", "x"},
			values: map[string][]float64{"short_batch": {1, 0}, "x": {nan, 2}},
		},
		{
			name:   "strings, arrays and objects are listed, not plotted",
			in:     `{"step":1,"algo":"grpo","load":[0.5,0.5],"m":{"a":1},"v":1}` + "\n" + `{"step":2,"algo":"grpo","v":"n/a"}` + "\n",
			steps:  []float64{1, 2},
			fields: []string{"v"},
			values: map[string][]float64{"v": {1, nan}},
			other:  []string{"algo", "load", "m"},
		},
		{
			name:   "no step: line numbers",
			in:     `{"loss":1}` + "\n" + `{"loss":0.5}` + "\n",
			steps:  []float64{1, 2},
			fields: []string{"loss"},
			values: map[string][]float64{"loss": {1, 0.5}},
		},
		{
			name:   "a resumed log repeats steps: the later line wins",
			in:     `{"step":1,"a":1}` + "\n" + `{"step":2,"a":2}` + "\n" + `{"step":3,"a":3}` + "\n" + `{"step":2,"a":20}` + "\n" + `{"step":3,"a":30}` + "\n" + `{"step":4,"a":40}` + "\n",
			steps:  []float64{1, 2, 3, 4},
			fields: []string{"a"},
			values: map[string][]float64{"a": {1, 20, 30, 40}},
			note:   "2 lines repeat an earlier step",
		},
		{
			name:   "out of order: sorted",
			in:     `{"step":2,"a":2}` + "\n" + `{"step":1,"a":1}` + "\n",
			steps:  []float64{1, 2},
			fields: []string{"a"},
			values: map[string][]float64{"a": {1, 2}},
			note:   "out of order",
		},
		{
			name:   "an unfinished last line is ignored",
			in:     `{"step":1,"a":1}` + "\n" + `{"step":2,"a":`,
			steps:  []float64{1},
			fields: []string{"a"},
			values: map[string][]float64{"a": {1}},
			note:   "m.jsonl:2: unfinished last line",
		},
		{
			name:   "empty file",
			in:     "",
			values: map[string][]float64{},
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			m, err := ParseMetrics(strings.NewReader(c.in), "m.jsonl")
			if err != nil {
				t.Fatal(err)
			}
			if !sameFloats(m.Steps, c.steps) {
				t.Errorf("steps %v, want %v", m.Steps, c.steps)
			}
			if !slices.Equal(m.Fields, c.fields) {
				t.Errorf("fields %v, want %v", m.Fields, c.fields)
			}
			for k, want := range c.values {
				if !sameFloats(m.Values[k], want) {
					t.Errorf("%s = %v, want %v", k, m.Values[k], want)
				}
			}
			if len(m.Values) != len(c.values) {
				t.Errorf("columns %v, want %d", m.Values, len(c.values))
			}
			if !slices.Equal(m.Other, c.other) {
				t.Errorf("other %v, want %v", m.Other, c.other)
			}
			notes := strings.Join(m.Notes, "\n")
			if c.note == "" && notes != "" || !strings.Contains(notes, c.note) {
				t.Errorf("notes %q, want %q", notes, c.note)
			}
		})
	}
}

func TestParseMetricsErrors(t *testing.T) {
	good := `{"step":1,"loss":1}` + "\n"
	cases := []struct {
		name, in, want string
	}{
		{"not JSON", good + "loss=1\n", "m.jsonl:2: not JSON"},
		{"not an object", good + "[1,2]\n", "m.jsonl:2: not a JSON object"},
		{"a bare number", good + "3\n", "m.jsonl:2: not a JSON object"},
		{"two objects on a line", good + `{"step":2}{"step":3}` + "\n", "m.jsonl:2: more than one JSON value"},
		{"truncated object mid-file", `{"step":1,"loss":` + "\n" + good, "m.jsonl:1: "},
		{"trailing comma", good + `{"step":2,}` + "\n", "m.jsonl:2: "},
		{"a field twice", good + `{"step":2,"loss":1,"loss":2}` + "\n", `m.jsonl:2: field "loss" given twice`},
		{"number out of range", good + `{"step":2,"loss":1e400}` + "\n", `m.jsonl:2: field "loss": number 1e400 out of range`},
		{"step not a number", good + `{"step":"2"}` + "\n", `m.jsonl:2: "step" is not a number`},
		{"step null", `{"step":null}` + "\n", `m.jsonl:1: "step" is not a number`},
		{"step missing after lines with one", good + `{"loss":1}` + "\n", `m.jsonl:2: line has no "step"`},
		{"step appearing after lines without", `{"loss":1}` + "\n" + good, `m.jsonl:2: line has a "step"`},
		{"bad last line with a newline", good + "{oops\n", "m.jsonl:2: "},
		{"a bad line before an unfinished one", "oops\n" + `{"step":2`, "m.jsonl:1: not JSON"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := ParseMetrics(strings.NewReader(c.in), "m.jsonl")
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Errorf("error %v, want %q", err, c.want)
			}
		})
	}
}

func TestReadMetricsNamesFile(t *testing.T) {
	if _, err := ReadMetrics("testdata/nonexistent/metrics.jsonl"); err == nil || !strings.Contains(err.Error(), "testdata/nonexistent/metrics.jsonl") {
		t.Errorf("error %v does not name the file", err)
	}
}

// FuzzParseMetrics: any input parses or fails cleanly, and what parses is
// consistent: steps strictly increasing, one value per step in every
// column, no infinite value, every column listed once.
func FuzzParseMetrics(f *testing.F) {
	for _, s := range []string{
		`{"step":1,"loss":4.2,"lr":0.001}` + "\n" + `{"step":2,"loss":3.5}` + "\n",
		`{"step":1,"reward_mean":0,"accuracy":0,"len_max":40,"short_batch":true,"algo":"grpo","x":null}`,
		`{"a":1}` + "\n\n" + `{"a":[1,{"b":2}]}` + "\n" + `{"a":`,
		`{"step":3,"a":1}` + "\n" + `{"step":1,"a":2}` + "\n" + `{"step":3,"a":3}`,
		`{"step":1e308,"a":-1e308}`, `{"step":-0,"a":1E-400}`, "{}\n{}\n", `{"":1,"\u00e9":2}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := ParseMetrics(strings.NewReader(string(data)), "fuzz")
		if err != nil {
			if !strings.HasPrefix(err.Error(), "fuzz:") {
				t.Fatalf("error %q does not name the file", err)
			}
			return
		}
		for i := 1; i < len(m.Steps); i++ {
			if !(m.Steps[i] > m.Steps[i-1]) {
				t.Fatalf("steps not increasing: %v", m.Steps)
			}
		}
		if len(m.Fields) != len(m.Values) {
			t.Fatalf("fields %v, columns %d", m.Fields, len(m.Values))
		}
		seen := map[string]bool{}
		for _, k := range m.Fields {
			if seen[k] || k == "step" {
				t.Fatalf("field %q listed twice or is step", k)
			}
			seen[k] = true
			col, ok := m.Values[k]
			if !ok || len(col) != len(m.Steps) {
				t.Fatalf("column %q: %d values for %d steps", k, len(col), len(m.Steps))
			}
			for _, v := range col {
				if math.IsInf(v, 0) {
					t.Fatalf("column %q holds %v", k, v)
				}
			}
		}
		for _, k := range m.Other {
			if seen[k] {
				t.Fatalf("field %q both numeric and other", k)
			}
		}
		// whatever parses can be drawn
		runs := []*Run{{Name: "fuzz", Dir: "fuzz", Metrics: m}}
		runs[0].Stage = stageOf(runs[0])
		if _, err := HTML(runs, Options{Smooth: 2}); err != nil {
			t.Fatalf("page of parsed metrics: %v", err)
		}
	})
}
