package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"

	"github.com/moerl/moerl/engine"
	"github.com/moerl/moerl/moe"
	"github.com/moerl/moerl/rl"
	"github.com/moerl/moerl/rl/eval"
	"github.com/moerl/moerl/rl/reward"
	"github.com/moerl/moerl/rl/task"
)

func runEval(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("eval", `Measure pass@k, maj@k and mean@k (k = 1, 2, 4, …, n), overall and per
difficulty bin: sample n responses per problem from a checkpoint (--ckpt),
or score given responses (--responses, a JSONL file of {"id", "response"}
lines, n per problem). maj@k averages over the n/k disjoint subsets of the
samples, in order.`, stderr)
	ckpt := fs.String("ckpt", "", "model checkpoint to sample from")
	responses := fs.String("responses", "", "JSONL of given responses to score instead of sampling")
	pf := addProblemFlags(fs, 32)
	n := fs.Int("n", 64, "samples per problem")
	temp := fs.Float64("temperature", 1, "sampling temperature")
	maxNew := fs.Int("max-new", 48, "new tokens per sample at most")
	seed := fs.Uint64("seed", 1, "sampling seed")
	asJSON := fs.Bool("json", false, "print the report as JSON (pass_at_k, maj_at_k, mean_at_k, bins)")
	out := fs.String("out", "", "also write the report JSON to this file")
	device := fs.String("device", "auto", "compute device: auto, cpu or cuda")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if (*ckpt == "") == (*responses == "") {
		return usagef("give exactly one of --ckpt (sample) and --responses (score)")
	}
	if *n <= 0 || *maxNew <= 0 || *temp < 0 {
		return usagef("--n and --max-new must be positive and --temperature ≥ 0")
	}
	problems, err := pf.load()
	if err != nil {
		return err
	}
	var rep eval.Report
	if *responses != "" {
		samples, err := scoreResponses(problems, *responses)
		if err != nil {
			return err
		}
		if rep, err = eval.Summarize(samples, eval.Ks(minSamples(samples))); err != nil {
			return err
		}
	} else {
		be, err := openBackend(*device, stderr)
		if err != nil {
			return err
		}
		m, tok, _, err := moe.LoadCheckpoint(*ckpt, be)
		if err != nil {
			return err
		}
		bar := newProgress(stderr, "eval", len(problems))
		rep, _, err = rl.Evaluate(m, tok, problems, rl.EvalOptions{N: *n, Temperature: *temp, MaxNew: *maxNew,
			Progress: func(done, _ int) { bar.update(done, "") }}, engine.NewRNG(*seed, engine.StreamEval))
		bar.finish()
		if err != nil {
			return err
		}
	}
	js, _ := json.MarshalIndent(rep, "", "  ")
	if *out != "" {
		if err := os.WriteFile(*out, append(js, '\n'), 0o644); err != nil {
			return fmt.Errorf("write report: %w", err)
		}
	}
	if *asJSON {
		fmt.Fprintf(stdout, "%s\n", js)
		return nil
	}
	return rep.Table(stdout)
}

func minSamples(s []eval.ProblemSamples) int {
	n := -1
	for _, p := range s {
		if n < 0 || len(p.Answers) < n {
			n = len(p.Answers)
		}
	}
	return max(n, 1)
}

// givenResponse is one line of a --responses file: the problem's id (or its
// 0-based index in the problems) and the response text.
type givenResponse struct {
	ID       string `json:"id"`
	Index    *int   `json:"index"`
	Response string `json:"response"`
}

// readResponses reads a JSONL file of givenResponse; errors name the line.
func readResponses(path string) ([]givenResponse, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read responses: %w", err)
	}
	rs, err := parseResponses(data)
	if err != nil {
		return nil, fmt.Errorf("responses %s %w", path, err)
	}
	return rs, nil
}

// parseResponses parses JSONL lines of givenResponse (blank lines skipped,
// unknown fields rejected); an error starts with the line number.
func parseResponses(data []byte) ([]givenResponse, error) {
	var out []givenResponse
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 1<<16), 1<<24)
	for line := 1; sc.Scan(); line++ {
		b := bytes.TrimSpace(sc.Bytes())
		if len(b) == 0 {
			continue
		}
		var r givenResponse
		dec := json.NewDecoder(bytes.NewReader(b))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&r); err != nil {
			return nil, fmt.Errorf("line %d: %v", line, err)
		}
		if dec.More() {
			return nil, fmt.Errorf("line %d: more than one JSON value", line)
		}
		if r.ID == "" && r.Index == nil {
			return nil, fmt.Errorf("line %d: needs an \"id\" or an \"index\"", line)
		}
		out = append(out, r)
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	return out, nil
}

// matchProblem finds the problem a response answers.
func matchProblem(problems []task.Problem, byID map[string]int, r givenResponse) (int, error) {
	if r.Index != nil {
		if *r.Index < 0 || *r.Index >= len(problems) {
			return 0, fmt.Errorf("index %d outside the %d problems", *r.Index, len(problems))
		}
		return *r.Index, nil
	}
	i, ok := byID[r.ID]
	if !ok {
		return 0, fmt.Errorf("no problem has id %q", r.ID)
	}
	return i, nil
}

func scoreResponses(problems []task.Problem, path string) ([]eval.ProblemSamples, error) {
	rs, err := readResponses(path)
	if err != nil {
		return nil, err
	}
	byID := map[string]int{}
	for i, p := range problems {
		byID[p.ID] = i
	}
	samples := make([]eval.ProblemSamples, len(problems))
	for i, p := range problems {
		samples[i] = eval.ProblemSamples{ID: p.ID, Bin: p.Bin}
	}
	for j, r := range rs {
		i, err := matchProblem(problems, byID, r)
		if err != nil {
			return nil, fmt.Errorf("response %d: %w", j+1, err)
		}
		t, err := task.Get(problems[i].Task)
		if err != nil {
			return nil, err
		}
		res := reward.Score(t, problems[i], r.Response, reward.Default)
		s := &samples[i]
		s.Answers, s.Valid, s.Correct = append(s.Answers, res.Answer), append(s.Valid, res.WellFormed), append(s.Correct, res.Correct)
	}
	var kept []eval.ProblemSamples
	for _, s := range samples {
		if len(s.Answers) > 0 {
			kept = append(kept, s)
		}
	}
	if len(kept) == 0 {
		return nil, fmt.Errorf("responses %s: no response matches a problem", path)
	}
	return kept, nil
}
