package rl

import (
	"fmt"

	"github.com/moerl/moerl/engine"
	"github.com/moerl/moerl/moe"
	"github.com/moerl/moerl/moe/tokenizer"
	"github.com/moerl/moerl/rl/reward"
	"github.com/moerl/moerl/rl/task"
)

// Rollout is one batch of sampled responses: G per problem, scored.
type Rollout struct {
	Problems []task.Problem
	G        int
	Prompts  [][]int32       // per problem: <bos> and the prompt's tokens
	Seqs     []moe.Sequence  // P·G; sequence i answers problem i/G
	Texts    []string        // decoded responses, without the final <eos>
	Results  []reward.Result // rule-based scores
}

// EncodePrompt is the model's input for a problem: <bos> then its prompt.
func EncodePrompt(tok *tokenizer.Tokenizer, p task.Problem) ([]int32, error) {
	ids, err := tok.Encode(p.Prompt)
	if err != nil {
		return nil, fmt.Errorf("problem %s: %w", p.ID, err)
	}
	return append([]int32{tokenizer.BOS}, ids...), nil
}

// DecodeResponse is the text of generated tokens without the final <eos>;
// tokens outside the tokenizer (a model's vocabulary may be larger) show
// as U+FFFD, which no verifier accepts.
func DecodeResponse(tok *tokenizer.Tokenizer, ids []int32) string {
	if n := len(ids); n > 0 && ids[n-1] == tokenizer.EOS {
		ids = ids[:n-1]
	}
	return tok.DecodeLossy(ids)
}

// Sample draws G responses per problem and scores them with the problems'
// tasks under scheme.
func Sample(m *moe.Model, tok *tokenizer.Tokenizer, problems []task.Problem, G int,
	o moe.SampleOptions, scheme reward.Scheme, rng *engine.RNG) (*Rollout, error) {
	r := &Rollout{Problems: problems, G: G}
	for _, p := range problems {
		ids, err := EncodePrompt(tok, p)
		if err != nil {
			return nil, err
		}
		r.Prompts = append(r.Prompts, ids)
	}
	o.Stop = []int32{tokenizer.EOS}
	seqs, err := m.Generate(r.Prompts, G, o, rng)
	if err != nil {
		return nil, fmt.Errorf("rollout: %w", err)
	}
	r.Seqs = seqs
	tasks := map[string]task.Task{}
	for _, s := range seqs {
		p := problems[s.Prompt]
		t, ok := tasks[p.Task]
		if !ok {
			if t, err = task.Get(p.Task); err != nil {
				return nil, err
			}
			tasks[p.Task] = t
		}
		text := DecodeResponse(tok, s.Tokens)
		r.Texts = append(r.Texts, text)
		res := reward.Score(t, p, text, scheme)
		if s.Truncated && res.WellFormed {
			// A response cut at the budget never closed with <eos>: it is
			// not a finished answer, whatever its text so far.
			res = reward.Result{Reward: scheme.Malformed, Answer: res.Answer, Reason: "malformed: truncated at the length limit"}
		}
		r.Results = append(r.Results, res)
	}
	return r, nil
}
