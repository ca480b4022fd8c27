package rl

import (
	"fmt"

	"github.com/moerl/moerl/engine"
	"github.com/moerl/moerl/moe"
	"github.com/moerl/moerl/moe/tokenizer"
	"github.com/moerl/moerl/rl/eval"
	"github.com/moerl/moerl/rl/reward"
	"github.com/moerl/moerl/rl/task"
)

// EvalOptions controls sampling for evaluation. Yue et al. (2504.13837)
// evaluate at temperature 0.6 and top-p 0.95.
type EvalOptions struct {
	N           int     // samples per problem
	Temperature float64 // 1 samples the model's own distribution; 0 is greedy
	TopK        int     // sample among the k most likely tokens; 0: no cut
	TopP        float64 // nucleus: the fewest tokens with this much mass; 0 or 1: no cut
	MaxNew      int     // new tokens per sample at most
	Batch       int     // sequences decoded together at most (memory bound); 0: 2048
	// Progress, if set, is called after each chunk with problems done.
	Progress func(done, total int)
	// Sampled, if set, is called with every sample's tokens: the problem's
	// index, the sample's index among the problem's (in order), the prompt
	// (with its <bos>) and the response; the slices must not be kept past
	// the call unless copied.
	Sampled func(problem, sample int, prompt, response []int32)
}

// SampleProblems draws opts.N responses to every problem and records each
// one's parsed answer, in its task's canonical form (task.Task.Canonical,
// so that answers that mean the same vote together in maj@k), whether it
// is well-formed and whether it is correct.
func SampleProblems(m *moe.Model, tok *tokenizer.Tokenizer, problems []task.Problem, opts EvalOptions, rng *engine.RNG) ([]eval.ProblemSamples, error) {
	if opts.N <= 0 || opts.MaxNew <= 0 {
		return nil, fmt.Errorf("evaluate: samples per problem and max new tokens must be positive")
	}
	batch := opts.Batch
	if batch <= 0 {
		batch = 2048
	}
	// Decode whole problems per call (their samples share a prefill) and
	// split a problem's samples into several calls only when N > batch.
	perCall := max(1, batch/opts.N)
	samplesPerCall := min(opts.N, batch)
	out := make([]eval.ProblemSamples, len(problems))
	tasks := make([]task.Task, len(problems))
	for i, p := range problems {
		out[i] = eval.ProblemSamples{ID: p.ID, Bin: p.Bin}
		t, err := task.Get(p.Task)
		if err != nil {
			return nil, fmt.Errorf("evaluate: problem %d (%s): %w", i, p.ID, err)
		}
		tasks[i] = t
	}
	so := moe.SampleOptions{Temperature: opts.Temperature, TopK: opts.TopK, TopP: opts.TopP, MaxNew: opts.MaxNew}
	for lo := 0; lo < len(problems); lo += perCall {
		hi := min(lo+perCall, len(problems))
		for done := 0; done < opts.N; done += samplesPerCall {
			g := min(samplesPerCall, opts.N-done)
			r, err := Sample(m, tok, problems[lo:hi], g, so, reward.Default, rng)
			if err != nil {
				return nil, err
			}
			for j, s := range r.Seqs {
				i := lo + s.Prompt
				ps := &out[i]
				res := r.Results[j]
				ps.Answers = append(ps.Answers, CanonicalAnswer(tasks[i], problems[i], res))
				ps.Valid = append(ps.Valid, res.WellFormed)
				ps.Correct = append(ps.Correct, res.Correct)
				if opts.Sampled != nil {
					opts.Sampled(i, len(ps.Correct)-1, r.Prompts[s.Prompt], s.Tokens)
				}
			}
		}
		if opts.Progress != nil {
			opts.Progress(hi, len(problems))
		}
	}
	return out, nil
}

// CanonicalAnswer is the answer a scored response votes with in maj@k: the
// task's canonical form of a well-formed response's answer, and "" (no
// vote) for a malformed one.
func CanonicalAnswer(t task.Task, p task.Problem, res reward.Result) string {
	if !res.WellFormed || res.Answer == "" {
		return ""
	}
	return t.Canonical(p, res.Answer)
}

// Evaluate samples and summarises pass@k, maj@k and mean@k for
// k = 1, 2, 4, …, N, overall and per difficulty bin.
func Evaluate(m *moe.Model, tok *tokenizer.Tokenizer, problems []task.Problem, opts EvalOptions, rng *engine.RNG) (eval.Report, []eval.ProblemSamples, error) {
	samples, err := SampleProblems(m, tok, problems, opts, rng)
	if err != nil {
		return eval.Report{}, nil, err
	}
	rep, err := eval.Summarize(samples, eval.Ks(opts.N))
	return rep, samples, err
}
