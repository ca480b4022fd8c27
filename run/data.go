package run

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"strings"

	"github.com/moerl/moerl/moe"
	"github.com/moerl/moerl/moe/tokenizer"
	"github.com/moerl/moerl/rl"
	"github.com/moerl/moerl/rl/task"
)

// Corpus says what text a language-modelling stage trains on: a file (one
// document per line), a built-in toy corpus, or a reasoning task's problems
// written with a mix of full, noisy, partial and no solutions.
type Corpus struct {
	File      string `json:"file,omitempty" help:"text file, one document per line"`
	Synthetic string `json:"synthetic,omitempty" help:"built-in toy corpus: reverse or copy"`
	Task      string `json:"task,omitempty" help:"reasoning task whose problems and solutions to write"`
	// Difficulties are the task's difficulties to draw from, each with the
	// share Weights gives (equal shares when Weights is empty).
	Difficulties []int     `json:"difficulties,omitempty" help:"task difficulties to draw problems from; empty: the task's training bins"`
	Weights      []float64 `json:"weights,omitempty" help:"share of each difficulty, in the order of difficulties; empty: equal"`
	Docs         int       `json:"docs,omitempty" help:"documents to generate for a task or a toy corpus"`
	Mix          rl.Mix    `json:"mix"`
	Seed         uint64    `json:"seed,omitempty" help:"seed of the generated documents"`
}

// Validate names the first problem with the corpus settings.
func (c Corpus) Validate() error {
	given := 0
	for _, s := range []string{c.File, c.Synthetic, c.Task} {
		if s != "" {
			given++
		}
	}
	if given != 1 {
		return errors.New("corpus: give exactly one of a file, a synthetic kind, or a task")
	}
	if c.File != "" {
		return nil
	}
	if c.Docs <= 0 {
		return fmt.Errorf("corpus: docs must be positive, got %d", c.Docs)
	}
	if c.Synthetic != "" {
		if !slices.Contains(moe.SyntheticKinds, c.Synthetic) {
			return fmt.Errorf("corpus: synthetic %q: want one of %s", c.Synthetic, strings.Join(moe.SyntheticKinds, ", "))
		}
		return nil
	}
	t, err := task.Get(c.Task)
	if err != nil {
		return fmt.Errorf("corpus: %w", err)
	}
	for _, d := range c.Difficulties {
		if err := task.CheckDifficulty(t, d); err != nil {
			return fmt.Errorf("corpus: %w", err)
		}
	}
	if len(c.Weights) > 0 {
		if len(c.Weights) != len(c.Difficulties) {
			return fmt.Errorf("corpus: %d weights for %d difficulties", len(c.Weights), len(c.Difficulties))
		}
		var sum float64
		for _, w := range c.Weights {
			if !(w >= 0) {
				return fmt.Errorf("corpus: weight %v is not ≥ 0", w)
			}
			sum += w
		}
		if !(sum > 0) {
			return errors.New("corpus: the weights sum to 0")
		}
	}
	return c.Mix.Validate()
}

// inputs are the files the corpus reads, for the run's key.
func (c Corpus) inputs() map[string]string {
	if c.File != "" {
		return map[string]string{"corpus": c.File}
	}
	return nil
}

// Documents returns the corpus text, one document per element.
func (c Corpus) Documents() ([]string, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	switch {
	case c.File != "":
		return nil, errors.New("corpus: a file corpus is read with Load")
	case c.Synthetic != "":
		return moe.Synthetic(c.Synthetic, c.Docs, c.Seed)
	}
	t, _ := task.Get(c.Task)
	diffs := c.Difficulties
	if len(diffs) == 0 {
		diffs, _ = t.Difficulties()
	}
	return rl.TaskCorpus(t, c.Docs, diffs, c.Weights, c.Mix, c.Seed)
}

// Load tokenizes the corpus.
func (c Corpus) Load(tok *tokenizer.Tokenizer) (*moe.Corpus, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	if c.File != "" {
		return moe.ReadCorpus(c.File, tok)
	}
	docs, err := c.Documents()
	if err != nil {
		return nil, err
	}
	return moe.EncodeCorpus(docs, tok)
}

// Problems says which problems a stage samples or is evaluated on: a JSONL
// file of problems (as `moerl problems` writes them), or problems generated
// from a task, Count per difficulty, each difficulty from its own seed so
// that adding a bin leaves the others' problems as they were.
type Problems struct {
	File         string `json:"file,omitempty" help:"JSONL file of problems (as written by 'moerl problems'); else generated from the task"`
	Task         string `json:"task,omitempty" help:"task of the generated problems"`
	Difficulties []int  `json:"difficulties,omitempty" help:"difficulties of the generated problems; empty: the task's training bins"`
	Count        int    `json:"count,omitempty" help:"problems generated per difficulty"`
	Seed         uint64 `json:"seed,omitempty" help:"seed of the generated problems (keep it apart from training seeds)"`
}

// Validate names the first problem with the settings.
func (p Problems) Validate() error {
	if p.File != "" {
		return nil
	}
	t, err := task.Get(p.Task)
	if err != nil {
		return fmt.Errorf("problems: %w", err)
	}
	if p.Count <= 0 {
		return fmt.Errorf("problems: count must be positive, got %d", p.Count)
	}
	for _, d := range p.Difficulties {
		if err := task.CheckDifficulty(t, d); err != nil {
			return fmt.Errorf("problems: %w", err)
		}
	}
	return nil
}

func (p Problems) inputs() map[string]string {
	if p.File != "" {
		return map[string]string{"problems": p.File}
	}
	return nil
}

// Load reads or generates the problems.
func (p Problems) Load() ([]task.Problem, error) {
	if err := p.Validate(); err != nil {
		return nil, err
	}
	if p.File != "" {
		f, err := os.Open(p.File)
		if err != nil {
			return nil, fmt.Errorf("read problems: %w", err)
		}
		defer f.Close()
		ps, err := task.ReadJSONL(f)
		if err != nil {
			return nil, fmt.Errorf("problems %s: %w", p.File, err)
		}
		if len(ps) == 0 {
			return nil, fmt.Errorf("problems %s: no problems", p.File)
		}
		return ps, nil
	}
	t, _ := task.Get(p.Task)
	diffs := p.Difficulties
	if len(diffs) == 0 {
		diffs, _ = t.Difficulties()
	}
	var ps []task.Problem
	for _, d := range diffs {
		ps = append(ps, task.GenerateSet(t, p.Seed+uint64(d), p.Count, []int{d})...)
	}
	return ps, nil
}

// shuffled returns a seeded permutation of problems (used where a stage
// should not see them in bin order).
func shuffled(ps []task.Problem, seed uint64) []task.Problem {
	out := slices.Clone(ps)
	rng := rand.New(rand.NewPCG(seed, 0x73687566))
	rng.Shuffle(len(out), func(i, j int) { out[i], out[j] = out[j], out[i] })
	return out
}
