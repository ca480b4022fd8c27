package run

import (
	"encoding/json"
	"fmt"
	"math"
	"os"
	"slices"

	"github.com/moerl/moerl/engine"
	"github.com/moerl/moerl/moe"
	"github.com/moerl/moerl/rl"
	"github.com/moerl/moerl/rl/eval"
)

// Eval samples N responses to each of Problems from a model (input
// "model") and measures pass@k, maj@k and mean@k. With a scorer (input
// "scorer", usually the base model) it also scores the first Scored
// samples of each problem under the scorer: the sharpening measure.
type Eval struct {
	Problems    Problems `json:"problems"`
	N           int      `json:"n"`
	Temperature float64  `json:"temperature"`
	TopP        float64  `json:"top_p,omitempty"`
	TopK        int      `json:"top_k,omitempty"`
	MaxNew      int      `json:"max_new"`
	Seed        uint64   `json:"seed"`
	Scored      int      `json:"scored,omitempty"`
}

// Validate names the first bad setting.
func (s Eval) Validate() error {
	switch {
	case s.N <= 0 || s.MaxNew <= 0:
		return fmt.Errorf("eval: n and max_new must be positive, got %d and %d", s.N, s.MaxNew)
	case !(s.Temperature >= 0) || s.TopK < 0 || !(s.TopP >= 0 && s.TopP <= 1):
		return fmt.Errorf("eval: need temperature ≥ 0, top_k ≥ 0 and top_p in [0, 1]")
	case s.Scored < 0 || s.Scored > s.N:
		return fmt.Errorf("eval: scored must be in [0, n=%d], got %d", s.N, s.Scored)
	}
	return s.Problems.Validate()
}

// The files of an eval stage's folder.
const (
	ReportFile = "eval.json"     // the eval.Report
	TallyFile  = "problems.json" // per problem: the Tally and the scores
)

// ProblemResult is one problem's outcome in an eval stage: its tally of
// answers and, with a scorer, the mean log-likelihood per token of the
// scored samples under the scorer (NaN, written as null, without one).
type ProblemResult struct {
	eval.Tally
	ScorerLogLik *float64 `json:"scorer_loglik,omitempty"`
}

// EvalOutput is what an eval stage's folder holds, read back.
type EvalOutput struct {
	Report   eval.Report
	Problems []ProblemResult
}

// ReadEval reads an eval stage's results from its folder.
func ReadEval(dir string) (*EvalOutput, error) {
	var out EvalOutput
	for name, v := range map[string]any{ReportFile: &out.Report, TallyFile: &out.Problems} {
		data, err := os.ReadFile(dir + "/" + name)
		if err != nil {
			return nil, fmt.Errorf("eval results: %w", err)
		}
		if err := json.Unmarshal(data, v); err != nil {
			return nil, fmt.Errorf("eval results %s/%s: %w", dir, name, err)
		}
	}
	return &out, nil
}

// RunEval evaluates the model checkpoint in dir and returns the report's path.
func RunEval(env *Env, dir, model, scorer string, s Eval, mode Mode) (string, error) {
	if err := s.Validate(); err != nil {
		return "", err
	}
	inputs := map[string]string{"model": model}
	if scorer != "" {
		inputs["scorer"] = scorer
	}
	for k, v := range s.Problems.inputs() {
		inputs[k] = v
	}
	f, err := Open(dir, "eval", s, inputs, mode)
	if err != nil {
		return "", err
	}
	path := f.Path(ReportFile)
	if f.State == Done {
		return path, nil
	}
	f.SetDevice(env.Backend.Device())
	rep, results, err := evaluate(env, model, scorer, s)
	if err != nil {
		f.Stopped(StatusFailed, err)
		return "", err
	}
	for name, v := range map[string]any{TallyFile: results, ReportFile: rep} {
		data, err := json.MarshalIndent(v, "", " ")
		if err != nil {
			return "", fmt.Errorf("eval: %w", err)
		}
		if err := WriteFileAtomic(f.Path(name), append(data, '\n')); err != nil {
			f.Stopped(StatusFailed, err)
			return "", err
		}
	}
	summary := map[string]float64{"pass@1": rep.PassAtK[1], fmt.Sprintf("pass@%d", rep.N): rep.PassAtK[rep.N]}
	if err := f.Finish(summary); err != nil {
		return "", err
	}
	return path, nil
}

func evaluate(env *Env, model, scorer string, s Eval) (eval.Report, []ProblemResult, error) {
	problems, err := s.Problems.Load()
	if err != nil {
		return eval.Report{}, nil, err
	}
	m, _, _, err := moe.LoadFrozen(model, env.Backend)
	if err != nil {
		return eval.Report{}, nil, err
	}
	label := "eval"
	// The first Scored samples of each problem, for the scorer.
	var prompts, responses [][]int32
	var owner []int
	o := rl.EvalOptions{N: s.N, Temperature: s.Temperature, TopP: s.TopP, TopK: s.TopK, MaxNew: s.MaxNew,
		Progress: func(done, total int) { env.Log.Progress(label, done, total, "") },
		Sampled: func(problem, sample int, prompt, response []int32) {
			if scorer != "" && sample < s.Scored {
				prompts = append(prompts, slices.Clone(prompt))
				responses = append(responses, slices.Clone(response))
				owner = append(owner, problem)
			}
		}}
	// Every model draws from the same stream, so two models are compared on
	// the same random numbers as well as the same problems.
	rep, samples, err := rl.Evaluate(m, env.Tok, problems, o, engine.NewRNG(s.Seed, engine.StreamEval))
	env.Log.EndProgress(label)
	if err != nil {
		return eval.Report{}, nil, err
	}
	results := make([]ProblemResult, len(samples))
	for i, ps := range samples {
		if results[i].Tally, err = eval.TallyOf(ps); err != nil {
			return eval.Report{}, nil, err
		}
	}
	if scorer == "" || s.Scored == 0 {
		return rep, results, nil
	}
	sm, _, _, err := moe.LoadFrozen(scorer, env.Backend)
	if err != nil {
		return eval.Report{}, nil, fmt.Errorf("scorer: %w", err)
	}
	ll, err := rl.LogLikelihood(sm, prompts, responses)
	if err != nil {
		return eval.Report{}, nil, err
	}
	sum, cnt := make([]float64, len(samples)), make([]int, len(samples))
	for j, v := range ll {
		if !math.IsNaN(v) {
			sum[owner[j]] += v
			cnt[owner[j]]++
		}
	}
	for i := range results {
		if cnt[i] > 0 {
			v := sum[i] / float64(cnt[i])
			results[i].ScorerLogLik = &v
		}
	}
	return rep, results, nil
}
