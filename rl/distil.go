package rl

import (
	"fmt"

	"github.com/moerl/moerl/engine"
	"github.com/moerl/moerl/moe"
	"github.com/moerl/moerl/moe/tokenizer"
	"github.com/moerl/moerl/rl/reward"
	"github.com/moerl/moerl/rl/task"
)

// DistilCorpus samples G responses per problem from a teacher and keeps
// the verified-correct ones (rejection sampling), as documents prompt +
// response for supervised fine-tuning of a student. It returns the
// documents and the share of samples kept.
func DistilCorpus(teacher *moe.Model, tok *tokenizer.Tokenizer, problems []task.Problem, G int,
	o moe.SampleOptions, rng *engine.RNG) ([]string, float64, error) {
	var docs []string
	total := 0
	const chunk = 64 // problems per rollout: bounds the decode batch
	for lo := 0; lo < len(problems); lo += chunk {
		hi := min(lo+chunk, len(problems))
		r, err := Sample(teacher, tok, problems[lo:hi], G, o, reward.Default, rng)
		if err != nil {
			return nil, 0, fmt.Errorf("distil: %w", err)
		}
		for i, res := range r.Results {
			total++
			if res.Correct {
				docs = append(docs, r.Problems[r.Seqs[i].Prompt].Prompt+r.Texts[i])
			}
		}
	}
	if len(docs) == 0 {
		return nil, 0, fmt.Errorf("distil: the teacher solved none of %d samples", total)
	}
	return docs, float64(len(docs)) / float64(total), nil
}
