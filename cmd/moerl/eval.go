package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

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
or score given responses (--responses, a JSONL file of {"id" or "index",
"response"} lines; every problem needs at least one). maj@k is exact: the
mean over every k-subset of a problem's samples, answers compared in their
task's canonical form, ties split.`, stderr)
	ckpt := fs.String("ckpt", "", "model checkpoint file to sample from")
	responses := fs.String("responses", "", `JSONL file of given responses to score instead of sampling, one {"id" or "index", "response"} per line`)
	pf := addProblemFlags(fs, 32)
	n := fs.Int("n", 64, "samples per problem when sampling (--ckpt); at least 1")
	temp := fs.Float64("temperature", 1, "sampling temperature, ≥ 0: 1 samples the model's own distribution, 0 is greedy (2504.13837 evaluates at 0.6)")
	topK := fs.Int("top-k", 0, "sample among the k most likely tokens only, k ≥ 0; 0: no cut")
	topP := fs.Float64("top-p", 1, "nucleus sampling: sample among the fewest most likely tokens whose probabilities sum to at least p, in [0, 1]; 0 or 1: no cut (2504.13837 uses 0.95)")
	maxNew := fs.Int("max-new", 48, "new tokens per sample at most (tokens, at least 1)")
	seed := fs.Uint64("seed", 1, "sampling seed, any unsigned integer: the same seed, checkpoint and flags give the same samples")
	asJSON := fs.Bool("json", false, "print the report as JSON (pass_at_k, maj_at_k, mean_at_k, bins) instead of a table")
	out := fs.String("out", "", "also write the report JSON to this file (path)")
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
	if *topK < 0 {
		return usagef("--top-k must be ≥ 0 (0: no cut), got %d", *topK)
	}
	if !(*topP >= 0 && *topP <= 1) {
		return usagef("--top-p must be in [0, 1] (0 or 1: no cut), got %v", *topP)
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
		m, tok, _, err := moe.LoadFrozen(*ckpt, be)
		if err != nil {
			return err
		}
		bar := newProgress(stderr, "eval", len(problems))
		rep, _, err = rl.Evaluate(m, tok, problems, rl.EvalOptions{N: *n, Temperature: *temp, TopK: *topK, TopP: *topP, MaxNew: *maxNew,
			Progress: func(done, _ int) { bar.update(done, "") }}, engine.NewRNG(*seed, engine.StreamEval))
		bar.finish()
		if err != nil {
			return err
		}
		// A device backend reports a failure of the sampling at its Sync
		// (see engine.Backend): no report is written without it.
		if err := be.Sync(); err != nil {
			return fmt.Errorf("eval: %w", err)
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
			var te *json.UnmarshalTypeError
			if errors.As(err, &te) {
				return nil, fmt.Errorf("line %d: %q is a %s, want a %s", line, te.Field, te.Value, te.Type)
			}
			return nil, fmt.Errorf("line %d: %v", line, strings.TrimPrefix(err.Error(), "json: "))
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

// problemIndex finds problems by id. A duplicated id names more than one
// problem, so a response cannot be matched by it.
type problemIndex struct {
	problems []task.Problem
	byID     map[string]int
	dup      map[string][2]int // a duplicated id's first two problems
}

func indexProblems(problems []task.Problem) problemIndex {
	x := problemIndex{problems: problems, byID: map[string]int{}, dup: map[string][2]int{}}
	for i, p := range problems {
		first, seen := x.byID[p.ID]
		if !seen {
			x.byID[p.ID] = i
			continue
		}
		if _, ok := x.dup[p.ID]; !ok {
			x.dup[p.ID] = [2]int{first, i}
		}
	}
	return x
}

// match finds the problem a response answers.
func (x problemIndex) match(r givenResponse) (int, error) {
	if r.Index != nil {
		if *r.Index < 0 || *r.Index >= len(x.problems) {
			return 0, fmt.Errorf("index %d outside the %d problems", *r.Index, len(x.problems))
		}
		return *r.Index, nil
	}
	if d, ok := x.dup[r.ID]; ok {
		return 0, fmt.Errorf("id %q names problems %d and %d (and maybe more); give an \"index\" instead", r.ID, d[0], d[1])
	}
	i, ok := x.byID[r.ID]
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
	samples, err := scoreGiven(problems, rs)
	if err != nil {
		return nil, fmt.Errorf("responses %s: %w", path, err)
	}
	return samples, nil
}

// scoreGiven scores each response against its problem, answers in their
// task's canonical form. Every problem must have a response: one left out
// would change the denominator of every metric without a word.
func scoreGiven(problems []task.Problem, rs []givenResponse) ([]eval.ProblemSamples, error) {
	x := indexProblems(problems)
	samples := make([]eval.ProblemSamples, len(problems))
	tasks := make([]task.Task, len(problems))
	for i, p := range problems {
		samples[i] = eval.ProblemSamples{ID: p.ID, Bin: p.Bin}
		t, err := task.Get(p.Task)
		if err != nil {
			return nil, fmt.Errorf("problem %d (id %s): %w", i, p.ID, err)
		}
		tasks[i] = t
	}
	for j, r := range rs {
		i, err := x.match(r)
		if err != nil {
			return nil, fmt.Errorf("response %d: %w", j+1, err)
		}
		res := reward.Score(tasks[i], problems[i], r.Response, reward.Default)
		s := &samples[i]
		s.Answers = append(s.Answers, rl.CanonicalAnswer(tasks[i], problems[i], res))
		s.Valid = append(s.Valid, res.WellFormed)
		s.Correct = append(s.Correct, res.Correct)
	}
	var missing []int
	for i, s := range samples {
		if len(s.Answers) == 0 {
			missing = append(missing, i)
		}
	}
	if len(missing) > 0 {
		i := missing[0]
		msg := fmt.Sprintf("problem %d (id %s) has no responses", i, problems[i].ID)
		if d, ok := x.dup[problems[i].ID]; ok {
			msg += fmt.Sprintf(" (problems %d and %d share its id: answer them by \"index\")", d[0], d[1])
		}
		if len(missing) > 1 {
			msg += fmt.Sprintf(", nor have %d other problems", len(missing)-1)
		}
		return nil, errors.New(msg + "; every problem needs at least one")
	}
	return samples, nil
}
