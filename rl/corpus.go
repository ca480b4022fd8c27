package rl

import (
	"fmt"
	"math/rand/v2"
	"strings"

	"github.com/moerl/moerl/rl/task"
)

// Mix is the recipe of a base model's pretraining text for a task: shares
// of documents that are problems with their full, correct chain of thought;
// with a slip that makes the answer wrong (the model learns to make such
// slips sometimes); with a partial one
// (the chain cut short, then the answer); and plain problem statements (the
// task's language without solutions). Shares are normalised to sum to 1.
type Mix struct {
	Full    float64 `json:"full" help:"share of documents with the full, correct chain of thought"`
	Noisy   float64 `json:"noisy" help:"share with a slip that makes the answer wrong"`
	Partial float64 `json:"partial" help:"share with the chain cut short before the answer"`
	Plain   float64 `json:"plain" help:"share of problem statements alone"`
}

// DefaultMix gives a base model whose pass@1 sits well below its pass@k:
// it has seen correct solutions most of the time and slips often enough
// that sampling many times finds a right answer it does not rank first.
var DefaultMix = Mix{Full: 0.6, Noisy: 0.3, Partial: 0.05, Plain: 0.05}

// Validate rejects negative or all-zero shares.
func (m Mix) Validate() error {
	if m.Full < 0 || m.Noisy < 0 || m.Partial < 0 || m.Plain < 0 || m.Full+m.Noisy+m.Partial+m.Plain <= 0 {
		return fmt.Errorf("pretraining mix %+v: shares must be ≥ 0 and not all 0", m)
	}
	return nil
}

// TaskCorpus writes n pretraining documents for a task at the given
// difficulties following the mix, deterministic from seed. Each document is
// a prompt followed by its response in the R1-Zero template (or the prompt
// alone, for plain text). weights, if not empty, gives each difficulty's
// share (a rarely seen difficulty is one with a small weight); empty means
// equal shares.
func TaskCorpus(t task.Task, n int, difficulties []int, weights []float64, mix Mix, seed uint64) ([]string, error) {
	if err := mix.Validate(); err != nil {
		return nil, err
	}
	if len(difficulties) == 0 {
		return nil, fmt.Errorf("task corpus: no difficulties")
	}
	var cum []float64 // cumulative weights, when given
	if len(weights) > 0 {
		if len(weights) != len(difficulties) {
			return nil, fmt.Errorf("task corpus: %d weights for %d difficulties", len(weights), len(difficulties))
		}
		var sum float64
		for _, w := range weights {
			if !(w >= 0) {
				return nil, fmt.Errorf("task corpus: weight %v is not ≥ 0", w)
			}
			sum += w
			cum = append(cum, sum)
		}
		if !(sum > 0) {
			return nil, fmt.Errorf("task corpus: the weights sum to 0")
		}
	}
	pick := func(rng *rand.Rand) int {
		if cum == nil {
			return difficulties[rng.IntN(len(difficulties))]
		}
		u := rng.Float64() * cum[len(cum)-1]
		i := 0
		for i < len(cum)-1 && u >= cum[i] {
			i++
		}
		return difficulties[i]
	}
	rng := rand.New(rand.NewPCG(seed, 0x636f72707573))
	total := mix.Full + mix.Noisy + mix.Partial + mix.Plain
	docs := make([]string, n)
	for i := range docs {
		p := t.Generate(rng, pick(rng))
		u := rng.Float64() * total
		switch {
		case u < mix.Full:
			docs[i] = p.Prompt + p.Response()
		case u < mix.Full+mix.Noisy:
			docs[i] = p.Prompt + Corrupt(p, rng).Response()
		case u < mix.Full+mix.Noisy+mix.Partial:
			q := p
			q.CoT = q.CoT[:rng.IntN(len(q.CoT)+1)]
			docs[i] = p.Prompt + q.Response()
		default:
			docs[i] = p.Prompt
		}
	}
	return docs, nil
}

// Corrupt returns p with a slip that makes its answer wrong: one digit of
// the answer changed (and, half the time, one digit of the chain of thought
// too), or, for answers without digits (knights and knaves), one person's
// role swapped.
func Corrupt(p task.Problem, rng *rand.Rand) task.Problem {
	q := p
	if ans, ok := changeDigit(p.Answer, rng); ok {
		q.Answer = ans
		if rng.IntN(2) == 0 {
			q.CoT, _ = changeDigit(p.CoT, rng)
		}
		return q
	}
	people := strings.Split(p.Answer, ",")
	j := rng.IntN(len(people))
	switch {
	case strings.HasSuffix(people[j], "knight"):
		people[j] = strings.TrimSuffix(people[j], "knight") + "knave"
	case strings.HasSuffix(people[j], "knave"):
		people[j] = strings.TrimSuffix(people[j], "knave") + "knight"
	}
	q.Answer = strings.Join(people, ",")
	return q
}

// changeDigit replaces one digit of s, chosen at random, by another digit.
func changeDigit(s string, rng *rand.Rand) (string, bool) {
	var at []int
	for i := range len(s) {
		if s[i] >= '0' && s[i] <= '9' {
			at = append(at, i)
		}
	}
	if len(at) == 0 {
		return s, false
	}
	b := []byte(s)
	i := at[rng.IntN(len(at))]
	b[i] = byte('0' + (int(b[i]-'0')+1+rng.IntN(9))%10)
	return string(b), true
}
